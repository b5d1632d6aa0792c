//! `key = value` attribute arguments, with errors that name the accepted keys.

use proc_macro2::{Span, TokenStream};
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::{Expr, ExprLit, Lit, MetaNameValue, Token};

/// One parsed argument.
pub(crate) struct Arg {
    pub(crate) key: String,
    pub(crate) value: Lit,
    pub(crate) span: Span,
}

/// Parses `a = "x", b = 3, c = true`, rejecting keys not in `known`.
pub(crate) fn parse(args: TokenStream, known: &[&str], what: &str) -> syn::Result<Vec<Arg>> {
    let pairs = Punctuated::<MetaNameValue, Token![,]>::parse_terminated.parse2(args)?;
    let mut out: Vec<Arg> = Vec::new();
    for pair in pairs {
        let key = pair
            .path
            .get_ident()
            .map(ToString::to_string)
            .ok_or_else(|| syn::Error::new_spanned(&pair.path, "expected a plain key"))?;
        if !known.contains(&key.as_str()) {
            return Err(syn::Error::new_spanned(
                &pair.path,
                format!("unknown {what} attribute key `{key}`; expected one of: {}", known.join(", ")),
            ));
        }
        if out.iter().any(|a| a.key == key) {
            return Err(syn::Error::new_spanned(&pair.path, format!("`{key}` is given twice")));
        }
        let Expr::Lit(ExprLit { lit, .. }) = pair.value else {
            return Err(syn::Error::new_spanned(&pair.value, format!("`{key}` takes a literal value")));
        };
        out.push(Arg { key, value: lit, span: pair.path.get_ident().map_or_else(Span::call_site, |i| i.span()) });
    }
    Ok(out)
}

pub(crate) fn string(arg: &Arg) -> syn::Result<String> {
    match &arg.value {
        Lit::Str(s) if !s.value().is_empty() => Ok(s.value()),
        other => Err(syn::Error::new_spanned(other, format!("`{}` takes a non-empty string", arg.key))),
    }
}

pub(crate) fn integer(arg: &Arg) -> syn::Result<u64> {
    match &arg.value {
        Lit::Int(i) => {
            let n: u64 = i.base10_parse()?;
            if n == 0 {
                return Err(syn::Error::new_spanned(i, format!("`{}` must be greater than zero", arg.key)));
            }
            Ok(n)
        }
        other => Err(syn::Error::new_spanned(other, format!("`{}` takes a whole number", arg.key))),
    }
}

pub(crate) fn boolean(arg: &Arg) -> syn::Result<bool> {
    match &arg.value {
        Lit::Bool(b) => Ok(b.value),
        other => Err(syn::Error::new_spanned(other, format!("`{}` takes `true` or `false`", arg.key))),
    }
}

/// The path the generated code names Tributary by: `crate = "..."` (for a renamed dependency
/// or a re-export), else `::tributary`.
pub(crate) fn krate(args: &[Arg]) -> syn::Result<TokenStream> {
    match args.iter().find(|a| a.key == "crate") {
        None => Ok(quote::quote! { ::tributary }),
        Some(arg) => {
            let path = string(arg)?;
            let parsed: syn::Path = syn::parse_str(&path).map_err(|_| {
                syn::Error::new_spanned(
                    &arg.value,
                    format!("`crate` takes a path such as \"my_tributary\", not `{path}`"),
                )
            })?;
            Ok(quote::quote! { #parsed })
        }
    }
}

/// `tokens` with every span set to `span`: the crate path inside a `quote_spanned!`, so that
/// errors there point where the rest of the expression does.
pub(crate) fn respanned(tokens: &TokenStream, span: Span) -> TokenStream {
    tokens
        .clone()
        .into_iter()
        .map(|mut tree| {
            if let proc_macro2::TokenTree::Group(g) = &tree {
                let mut group = proc_macro2::Group::new(g.delimiter(), respanned(&g.stream(), span));
                group.set_span(span);
                tree = proc_macro2::TokenTree::Group(group);
            } else {
                tree.set_span(span);
            }
            tree
        })
        .collect()
}
