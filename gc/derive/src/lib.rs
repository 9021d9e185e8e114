//! `#[derive(Trace)]` for goro-gc: visits every field once, except `#[gc(skip)]` ones.
//!
//! Generated code names the trait through whichever of `goro-gc` or `goro` the user depends
//! on (`goro::gc::Trace`), found in their `Cargo.toml`. Generic parameters get a `Trace` bound.
//! A skipped field is never visited: a `Gc` hidden in one counts as held from outside the
//! heap, so its object stays alive (a cycle through it leaks; nothing is freed early).
#![deny(clippy::undocumented_unsafe_blocks)]

use proc_macro::TokenStream;
use proc_macro2::TokenStream as TokenStream2;
use quote::{format_ident, quote};
use syn::{parse_macro_input, Data, DeriveInput, Fields};

fn crate_path() -> TokenStream2 {
    use proc_macro_crate::{crate_name, FoundCrate};
    match crate_name("goro-gc") {
        Ok(FoundCrate::Itself) => return quote!(::goro_gc),
        Ok(FoundCrate::Name(n)) => {
            let id = format_ident!("{}", n);
            return quote!(::#id);
        }
        Err(_) => {}
    }
    match crate_name("goro") {
        Ok(FoundCrate::Itself) => quote!(::goro::gc),
        Ok(FoundCrate::Name(n)) => {
            let id = format_ident!("{}", n);
            quote!(::#id::gc)
        }
        Err(_) => quote!(::goro::gc),
    }
}

fn skipped(attrs: &[syn::Attribute]) -> syn::Result<bool> {
    let mut skip = false;
    for a in attrs {
        if a.path().is_ident("gc") {
            a.parse_nested_meta(|m| {
                if m.path.is_ident("skip") {
                    skip = true;
                    Ok(())
                } else {
                    Err(m.error("unknown gc attribute; expected `skip`"))
                }
            })?;
        }
    }
    Ok(skip)
}

/// Binds a variant's (or struct's) fields by reference and visits the unskipped ones.
fn arm(path: TokenStream2, fields: &Fields, krate: &TokenStream2) -> syn::Result<TokenStream2> {
    let mut pats = Vec::new();
    let mut visits = Vec::new();
    for (i, f) in fields.iter().enumerate() {
        let bind = format_ident!("__f{}", i);
        let skip = skipped(&f.attrs)?;
        match &f.ident {
            Some(name) => {
                if skip {
                    pats.push(quote!(#name: _));
                } else {
                    pats.push(quote!(#name: #bind));
                }
            }
            None => {
                if skip {
                    pats.push(quote!(_));
                } else {
                    pats.push(quote!(#bind));
                }
            }
        }
        if !skip {
            visits.push(quote!(#krate::Trace::trace(#bind, __tracer);));
        }
    }
    let pat = match fields {
        Fields::Named(_) => quote!(#path { #(#pats,)* }),
        Fields::Unnamed(_) => quote!(#path ( #(#pats,)* )),
        Fields::Unit => quote!(#path),
    };
    Ok(quote!(#pat => { #(#visits)* }))
}

/// Derives `Trace`: every field is visited once; `#[gc(skip)]` fields are not.
#[proc_macro_derive(Trace, attributes(gc))]
pub fn derive_trace(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    match expand(input) {
        Ok(t) => t.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

fn expand(mut input: DeriveInput) -> syn::Result<TokenStream2> {
    let krate = crate_path();
    for p in input.generics.type_params_mut() {
        p.bounds.push(syn::parse_quote!(#krate::Trace));
    }
    let name = &input.ident;
    let arms = match &input.data {
        Data::Struct(s) => vec![arm(quote!(Self), &s.fields, &krate)?],
        Data::Enum(e) => e
            .variants
            .iter()
            .map(|v| {
                let id = &v.ident;
                arm(quote!(Self::#id), &v.fields, &krate)
            })
            .collect::<syn::Result<_>>()?,
        Data::Union(u) => return Err(syn::Error::new_spanned(
            u.union_token,
            "Trace cannot be derived for unions (the collector cannot know which field is live)",
        )),
    };
    let (impl_g, ty_g, where_c) = input.generics.split_for_impl();
    Ok(quote! {
        // SAFETY: generated: every field not marked `#[gc(skip)]` is visited exactly once
        // through its own `Trace`, and nothing else is read.
        unsafe impl #impl_g #krate::Trace for #name #ty_g #where_c {
            #[allow(unused_variables)]
            fn trace(&self, __tracer: &mut #krate::Tracer) {
                #[allow(unreachable_patterns)]
                match self {
                    #(#arms)*
                    _ => {}
                }
            }
        }
    })
}
