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
