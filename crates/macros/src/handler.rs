//! `#[handler(topic = "...")]`: an `async fn(message[, context])` becomes a unit struct
//! implementing `tributary::Route`.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{FnArg, ItemFn, Pat, ReturnType};

use crate::attr;

const KEYS: &[&str] =
    &["topic", "group", "concurrency", "max_deliveries", "ordered", "retry_initial_ms", "retry_max_ms", "crate"];

pub(crate) fn expand(args: TokenStream, input: TokenStream) -> syn::Result<TokenStream> {
    let args = attr::parse(args, KEYS, "handler")?;
    let krate = attr::krate(&args)?;
    let func: ItemFn = syn::parse2(input)?;
    let sig = &func.sig;

    let topic = match args.iter().find(|a| a.key == "topic") {
        Some(a) => attr::string(a)?,
        None => {
            return Err(syn::Error::new_spanned(
                &sig.ident,
                "`#[handler]` needs the topic to consume: `#[handler(topic = \"orders\")]`",
            ))
        }
    };
    if sig.asyncness.is_none() {
        return Err(syn::Error::new_spanned(sig.fn_token, "`#[handler]` functions must be `async fn`"));
    }
    if !sig.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(&sig.generics, "`#[handler]` functions cannot be generic"));
    }
    if let ReturnType::Default = sig.output {
        return Err(syn::Error::new_spanned(
            &sig.ident,
            "`#[handler]` functions return `Result<(), E>` where `E: Into<HandlerError>`",
        ));
    }
    let mut typed = Vec::new();
    for input in &sig.inputs {
        match input {
            FnArg::Receiver(r) => return Err(syn::Error::new_spanned(r, "`#[handler]` functions cannot take `self`")),
            FnArg::Typed(t) => typed.push(t),
        }
    }
    let message_ty = match typed.as_slice() {
        [message] | [message, _] => &message.ty,
        [] => {
            return Err(syn::Error::new_spanned(
                &sig.ident,
                "a handler takes the message as its first argument: `async fn name(msg: MyMessage, ctx: Context)`",
            ))
        }
        [_, _, extra, ..] => {
            return Err(syn::Error::new_spanned(
                extra,
                "a handler takes at most two arguments: the message and the `Context`",
            ))
        }
    };
    for t in &typed {
        if !matches!(*t.pat, Pat::Ident(_) | Pat::Wild(_)) {
            return Err(syn::Error::new_spanned(&t.pat, "use a plain name for handler arguments"));
        }
    }

    let mut options = quote! { #krate::__private::RouteOptions::new() };
    let mut group = quote! { ::core::option::Option::None };
    let (mut retry_initial, mut retry_max) = (None, None);
    for a in &args {
        match a.key.as_str() {
            "group" => {
                let g = attr::string(a)?;
                group = quote! { ::core::option::Option::Some(#g) };
            }
            "concurrency" => {
                let n = attr::integer(a)? as usize;
                options = quote! { #options.concurrency(#n) };
            }
            "max_deliveries" => {
                let n = attr::integer(a)?;
                options = quote! { #options.max_deliveries(#n) };
            }
            "ordered" if attr::boolean(a)? => {
                options = quote! { #options.concurrency(1usize) };
            }
            "retry_initial_ms" => retry_initial = Some(attr::integer(a)?),
            "retry_max_ms" => retry_max = Some(attr::integer(a)?),
            _ => {}
        }
    }
    if retry_initial.is_some() || retry_max.is_some() {
        let initial = retry_initial.unwrap_or(200);
        let max = retry_max.unwrap_or(30_000).max(initial);
        options = quote! {
            #options.retry(#krate::__private::RetryPolicy::exponential(
                ::core::time::Duration::from_millis(#initial),
                ::core::time::Duration::from_millis(#max),
            ))
        };
    }
    if args.iter().any(|a| a.key == "ordered") && args.iter().any(|a| a.key == "concurrency") {
        let span = args.iter().find(|a| a.key == "ordered").map_or(sig.ident.span(), |a| a.span);
        return Err(syn::Error::new(span, "`ordered = true` already means `concurrency = 1`; give only one"));
    }

    let vis = &func.vis;
    let name = &sig.ident;
    let attrs = &func.attrs;
    let inputs = &sig.inputs;
    let output = &sig.output;
    let body = &func.block;
    let call = if typed.len() == 2 {
        quote! { #name::call(message, ctx).await }
    } else {
        quote! { { let _ = ctx; #name::call(message).await } }
    };
    let at_output = attr::respanned(&krate, output.span());
    let convert = quote_spanned! {output.span()=> #at_output::__private::into_handler_result(#call) };
    // Spanned on the message type, so "does not implement Deserialize" points at it.
    let at_message = attr::respanned(&krate, message_ty.span());
    let make_handler = quote_spanned! {message_ty.span()=>
        #at_message::__private::handler_fn(
            |message: #message_ty, ctx: #at_message::__private::Context| async move { #convert },
        )
    };
    let doc = format!("Handler of topic `{topic}`, generated by `#[tributary::handler]`.");
    Ok(quote! {
        #[doc = #doc]
        #[allow(non_camel_case_types)]
        #[derive(Debug, Clone, Copy, Default)]
        #vis struct #name;

        impl #name {
            /// The handler function as written.
            #(#attrs)*
            #vis async fn call(#inputs) #output #body
        }

        impl #krate::__private::Route for #name {
            fn topic(&self) -> &str {
                #topic
            }

            fn group(&self) -> ::core::option::Option<&str> {
                #group
            }

            fn options(&self) -> #krate::__private::RouteOptions {
                #options
            }

            fn handler(&self) -> ::std::sync::Arc<dyn #krate::__private::Handler> {
                ::std::sync::Arc::new(#make_handler)
            }
        }
    })
}
