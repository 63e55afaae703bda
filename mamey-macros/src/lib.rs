//! Attribute macros for mamey. Use them through the crates that re-export
//! them: `#[mamey_messaging::message]`.
#![forbid(unsafe_code)]

use proc_macro::TokenStream;
use proc_macro2::Span;
use quote::quote;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{Data, DeriveInput, Ident, LitStr, Token, parse_macro_input};

/// Declares a message type: derives `Serialize` and `Deserialize` with
/// Convey's camelCase field names, and implements `Message` with its
/// namespace (and `Command` or `Event` when asked).
///
/// Options, comma-separated:
/// - `namespace = "orders"` (required): the namespace (exchange);
/// - `command` or `event`: also implement core's `Command` or `Event`
///   (`Event` needs `Clone`: derive it);
/// - `casing = "snake_case"`: keep Rust's field names on the wire, for
///   systems of mamey services only. Default: `"camelCase"`.
///
/// Unknown fields in incoming messages are ignored, as Convey's
/// System.Text.Json does.
///
/// See `mamey_messaging::message` for examples.
#[proc_macro_attribute]
pub fn message(attribute: TokenStream, item: TokenStream) -> TokenStream {
    let options = parse_macro_input!(attribute as Options);
    let input = parse_macro_input!(item as DeriveInput);
    expand(&options, &input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// What the attribute says.
struct Options {
    namespace: LitStr,
    kind: Option<Ident>,
    camel_case: bool,
}

impl Parse for Options {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut namespace = None;
        let mut kind: Option<Ident> = None;
        let mut camel_case = true;
        let items = Punctuated::<Item, Token![,]>::parse_terminated(input)?;
        for item in items {
            match item {
                Item::Flag(flag) if flag == "command" || flag == "event" => {
                    if let Some(earlier) = &kind {
                        return Err(syn::Error::new(
                            flag.span(),
                            format!(
                                "`{flag}` after `{earlier}`: a message is a command or an event, not both"
                            ),
                        ));
                    }
                    kind = Some(flag);
                }
                Item::Flag(flag) => {
                    return Err(syn::Error::new(
                        flag.span(),
                        format!(
                            "unknown option `{flag}`: expected `namespace = \"...\"`, `command`, `event` or `casing = \"...\"`"
                        ),
                    ));
                }
                Item::Value(key, value) if key == "namespace" => {
                    if value.value().is_empty() {
                        return Err(syn::Error::new(value.span(), "the namespace is empty"));
                    }
                    namespace = Some(value);
                }
                Item::Value(key, value) if key == "casing" => {
                    camel_case = match value.value().as_str() {
                        "camelCase" => true,
                        "snake_case" => false,
                        other => {
                            return Err(syn::Error::new(
                                value.span(),
                                format!(
                                    "casing `{other}`: expected \"camelCase\" (Convey's, the default) or \"snake_case\""
                                ),
                            ));
                        }
                    };
                }
                Item::Value(key, _) => {
                    return Err(syn::Error::new(
                        key.span(),
                        format!(
                            "unknown option `{key}`: expected `namespace`, `casing`, `command` or `event`"
                        ),
                    ));
                }
            }
        }
        let namespace = namespace.ok_or_else(|| {
            syn::Error::new(
                Span::call_site(),
                "a message needs its namespace: #[message(namespace = \"orders\")]",
            )
        })?;
        Ok(Self {
            namespace,
            kind,
            camel_case,
        })
    }
}

/// `key = "value"` or a bare flag.
enum Item {
    Value(Ident, LitStr),
    Flag(Ident),
}

impl Parse for Item {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let key: Ident = input.parse()?;
        if input.peek(Token![=]) {
            input.parse::<Token![=]>()?;
            Ok(Self::Value(key, input.parse()?))
        } else {
            Ok(Self::Flag(key))
        }
    }
}

fn expand(options: &Options, input: &DeriveInput) -> syn::Result<proc_macro2::TokenStream> {
    let casing = match (&input.data, options.camel_case) {
        (_, false) => quote!(),
        (Data::Struct(_), true) => quote!(#[serde(rename_all = "camelCase")]),
        (Data::Enum(_), true) => quote!(#[serde(rename_all_fields = "camelCase")]),
        (Data::Union(_), true) => {
            return Err(syn::Error::new_spanned(
                &input.ident,
                "a message is a struct or an enum, not a union",
            ));
        }
    };
    let name = &input.ident;
    let namespace = &options.namespace;
    let (impl_generics, type_generics, where_clause) = input.generics.split_for_impl();
    let kind = match options.kind.as_ref().map(ToString::to_string).as_deref() {
        Some("command") => quote! {
            impl #impl_generics ::mamey_messaging::__private::mamey_core::cqrs::Command
                for #name #type_generics #where_clause {}
        },
        Some("event") => quote! {
            impl #impl_generics ::mamey_messaging::__private::mamey_core::cqrs::Event
                for #name #type_generics #where_clause {}
        },
        _ => quote!(),
    };
    Ok(quote! {
        #[derive(
            ::mamey_messaging::__private::serde::Serialize,
            ::mamey_messaging::__private::serde::Deserialize
        )]
        #[serde(crate = "::mamey_messaging::__private::serde")]
        #casing
        #input

        impl #impl_generics ::mamey_messaging::Message for #name #type_generics #where_clause {
            const NAMESPACE: &'static str = #namespace;
        }

        #kind
    })
}
