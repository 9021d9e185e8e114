//! Parsing and expansion of `select!`. The expansion evaluates every arm's channel and value
//! in source order (as Go does on entering a select), builds one case object per arm on the
//! stack, runs `goro::chan::__private::select`, and matches on the arm it chose.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{braced, parenthesized, token, Expr, Ident, Pat, Token};

enum Kind {
    Recv(Expr),
    Send(Expr, Expr),
}

struct Arm {
    kind: Kind,
    pat: Option<Pat>,
    body: Expr,
}

enum Fallback {
    Default(Expr),
    Timeout(Expr, Expr),
}

pub(crate) struct Select {
    arms: Vec<Arm>,
    fallback: Option<Fallback>,
}

fn parse_body(input: ParseStream) -> syn::Result<Expr> {
    if input.peek(token::Brace) {
        let content;
        let brace = braced!(content in input);
        let stmts = content.call(syn::Block::parse_within)?;
        let body = Expr::Block(syn::ExprBlock {
            attrs: Vec::new(),
            label: None,
            block: syn::Block {
                brace_token: brace,
                stmts,
            },
        });
        if input.peek(Token![,]) {
            input.parse::<Token![,]>()?;
        }
        Ok(body)
    } else {
        let body: Expr = input.parse()?;
        if !input.is_empty() {
            input.parse::<Token![,]>()?;
        }
        Ok(body)
    }
}

impl Parse for Select {
    fn parse(input: ParseStream) -> syn::Result<Select> {
        let mut arms = Vec::new();
        let mut fallback: Option<Fallback> = None;
        while !input.is_empty() {
            let kw: Ident = input.parse()?;
            let name = kw.to_string();
            let args: Option<Punctuated<Expr, Token![,]>> = if input.peek(token::Paren) {
                let content;
                parenthesized!(content in input);
                Some(content.parse_terminated(Expr::parse, Token![,])?)
            } else {
                None
            };
            let pat = if input.peek(Token![->]) {
                input.parse::<Token![->]>()?;
                Some(Pat::parse_single(input)?)
            } else {
                None
            };
            input.parse::<Token![=>]>()?;
            let body = parse_body(input)?;
            let args: Vec<Expr> = args.map(|a| a.into_iter().collect()).unwrap_or_default();
            let no_pat = |what: &str| -> syn::Result<()> {
                match &pat {
                    Some(p) => Err(syn::Error::new_spanned(
                        p,
                        format!("`{what}` arms take no `-> pattern`"),
                    )),
                    None => Ok(()),
                }
            };
            let set_fallback = |f: Fallback, slot: &mut Option<Fallback>| -> syn::Result<()> {
                if slot.is_some() {
                    return Err(syn::Error::new(
                        kw.span(),
                        "select! takes at most one of `default`, `default(timeout)` and `after(duration)`",
                    ));
                }
                *slot = Some(f);
                Ok(())
            };
            match (name.as_str(), args.len()) {
                ("recv", 1) => arms.push(Arm {
                    kind: Kind::Recv(args[0].clone()),
                    pat,
                    body,
                }),
                ("send", 2) => arms.push(Arm {
                    kind: Kind::Send(args[0].clone(), args[1].clone()),
                    pat,
                    body,
                }),
                ("default", 0) => {
                    no_pat("default")?;
                    set_fallback(Fallback::Default(body), &mut fallback)?;
                }
                ("default", 1) | ("after", 1) => {
                    no_pat(&name)?;
                    set_fallback(Fallback::Timeout(args[0].clone(), body), &mut fallback)?;
                }
                ("recv", _) => return Err(syn::Error::new(kw.span(), "expected `recv(receiver)`")),
                ("send", _) => {
                    return Err(syn::Error::new(kw.span(), "expected `send(sender, value)`"))
                }
                ("after", _) => {
                    return Err(syn::Error::new(kw.span(), "expected `after(duration)`"))
                }
                ("default", _) => {
                    return Err(syn::Error::new(
                        kw.span(),
                        "expected `default` or `default(timeout)`",
                    ))
                }
                _ => {
                    return Err(syn::Error::new(
                        kw.span(),
                        "expected `recv(..)`, `send(..)`, `default`, `default(..)` or `after(..)`",
                    ))
                }
            }
        }
        if arms.is_empty() && fallback.is_none() {
            return Err(syn::Error::new(
                Span::call_site(),
                "select! needs at least one arm (Go's empty `select {}` blocks forever; park instead)",
            ));
        }
        Ok(Select { arms, fallback })
    }
}

impl Select {
    pub(crate) fn expand(self) -> TokenStream {
        let site = Span::mixed_site();
        let p = quote!(::goro::chan::__private);
        let mut lets = Vec::new();
        let mut refs = Vec::new();
        let mut match_arms = Vec::new();
        for (i, arm) in self.arms.iter().enumerate() {
            let ch = format_ident!("__goro_ch{}", i, span = site);
            let case = format_ident!("__goro_case{}", i, span = site);
            match &arm.kind {
                Kind::Recv(r) => lets.push(quote! {
                    let #ch = &(#r);
                    let mut #case = #p::RecvCase::new(#ch);
                }),
                Kind::Send(s, v) => lets.push(quote! {
                    let #ch = &(#s);
                    let mut #case = #p::SendCase::new(#ch, #v);
                }),
            }
            refs.push(quote!(&mut #case as &mut dyn #p::Case));
            let pat = match &arm.pat {
                Some(pat) => quote!(#pat),
                None => quote!(_),
            };
            let body = &arm.body;
            match_arms.push(quote_spanned! {site=>
                #i => {
                    #[allow(unused_variables)]
                    let #pat = #case.into_result();
                    #body
                }
            });
        }
        let n = self.arms.len();
        let (mode, fallback_body) = match &self.fallback {
            None => (quote!(#p::Mode::Block), quote!(::core::unreachable!())),
            Some(Fallback::Default(body)) => (quote!(#p::Mode::NonBlocking), quote!(#body)),
            Some(Fallback::Timeout(d, body)) => (quote!(#p::Mode::timeout(#d)), quote!(#body)),
        };
        let chosen = format_ident!("__goro_chosen", span = site);
        quote! {{
            #(#lets)*
            let #chosen = #p::select(&mut [#(#refs),*], #mode);
            match #chosen {
                #(#match_arms)*
                _ => {
                    let _ = #n;
                    #fallback_body
                }
            }
        }}
    }
}
