//! `#[goro::main]`: runs `fn main` as the main goroutine of a goro runtime.
#![deny(clippy::undocumented_unsafe_blocks)]

use proc_macro::TokenStream;
use quote::quote;
use syn::{parse_macro_input, ItemFn};

/// Turns `fn main() -> R { body }` into `fn main() -> R { goro::run(move || -> R { body }) }`.
/// Takes no arguments; use `goro::Builder` for settings.
#[proc_macro_attribute]
pub fn main(attr: TokenStream, item: TokenStream) -> TokenStream {
    if !attr.is_empty() {
        return syn::Error::new(
            proc_macro2::Span::call_site(),
            "#[goro::main] takes no arguments; use goro::Builder for runtime settings",
        )
        .to_compile_error()
        .into();
    }
    let f = parse_macro_input!(item as ItemFn);
    if f.sig.asyncness.is_some() || !f.sig.inputs.is_empty() {
        return syn::Error::new_spanned(&f.sig, "#[goro::main] needs a plain `fn main()`")
            .to_compile_error()
            .into();
    }
    let attrs = &f.attrs;
    let vis = &f.vis;
    let sig = &f.sig;
    let body = &f.block;
    let ret = match &sig.output {
        syn::ReturnType::Default => quote!(()),
        syn::ReturnType::Type(_, t) => quote!(#t),
    };
    quote!(
        #(#attrs)*
        #vis #sig {
            // A bad GOGC is named at start, not at the first allocation.
            ::goro::gc::init();
            ::goro::run(move || -> #ret #body)
        }
    )
    .into()
}

mod select;

/// `goro::select!`: waits on several channel operations at once (see `goro::chan`).
///
/// ```text
/// goro::select! {
///     recv(rx) -> v => ...,          // v: Result<T, RecvError>
///     send(tx, value) -> r => ...,   // r: Result<(), SendError<T>>
///     default => ...,                // or default(timeout) => ..., or after(duration) => ...
/// }
/// ```
#[proc_macro]
pub fn select(input: TokenStream) -> TokenStream {
    match syn::parse::<select::Select>(input) {
        Ok(s) => s.expand().into(),
        Err(e) => e.to_compile_error().into(),
    }
}
