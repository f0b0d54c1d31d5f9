//! The code a `#[service]` trait turns into. Everything it calls is public
//! API of `gotalk_peer` (`Handlers::json`, `buffer`, `stream`,
//! `notification`, `json_notification`, the `Caller` trait) plus small
//! helpers in `gotalk_peer::service::__private`: a typed service costs what
//! the same handlers written by hand cost.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::{ReturnType, TraitItem, Type, spanned::Spanned};

use crate::model::{Method, Payload, Service};

/// The path of the helpers, as the user's crate sees them.
fn private() -> TokenStream {
    quote!(::gotalk_peer::service::__private)
}

pub(crate) fn service(service: &Service) -> TokenStream {
    let item = trait_item(service);
    let server = server(service);
    let client = client(service);
    quote! {
        #item
        #server
        #client
    }
}

/// The trait, each `async fn` turned into a `fn` returning a `Send` future
/// (so handlers can run on any task); impls still write `async fn`.
fn trait_item(service: &Service) -> TokenStream {
    let mut item = service.item.clone();
    item.supertraits
        .push(syn::parse_quote!(::core::marker::Send));
    item.supertraits
        .push(syn::parse_quote!(::core::marker::Sync));
    item.supertraits.push(syn::parse_quote!('static));
    if item.colon_token.is_none() {
        item.colon_token = Some(Default::default());
    }
    for trait_item in &mut item.items {
        if let TraitItem::Fn(f) = trait_item {
            f.sig.asyncness = None;
            let output: Type = match &f.sig.output {
                ReturnType::Default => syn::parse_quote!(()),
                ReturnType::Type(_, ty) => (**ty).clone(),
            };
            f.sig.output = syn::parse_quote! {
                -> impl ::core::future::Future<Output = #output> + ::core::marker::Send
            };
        }
    }
    quote!(#item)
}

/// `fn(E) -> HandlerError` for the error type `E`, chosen at compile time:
/// `Into<HandlerError>` first, else the typed (JSON) encoding.
fn error_encoder(error: &Type) -> TokenStream {
    let p = private();
    // Spanned at the type, so an error type that fits neither way is
    // reported where it is written.
    quote_spanned! {error.span()=> {
        #[allow(unused_imports)]
        use #p::{PlainError as _, TypedError as _};
        (&#p::ErrorKind::<#error>::new()).encoder()
    }}
}

/// `fn(&[u8]) -> Option<E>`: the typed error in an error result, if any.
fn error_decoder(error: &Type) -> TokenStream {
    let p = private();
    quote_spanned! {error.span()=> {
        #[allow(unused_imports)]
        use #p::{PlainError as _, TypedError as _};
        (&#p::ErrorKind::<#error>::new()).decoder()
    }}
}

fn server(service: &Service) -> TokenStream {
    let p = private();
    let vis = &service.item.vis;
    let trait_ident = &service.item.ident;
    let server = format_ident!("{}Server", trait_ident);
    let registrations = service.methods.iter().map(register);
    let description = description(service);
    let doc = format!(
        "Serves a [`{trait_ident}`] implementation: [`register`](Self::register) adds its \
         operations to a `Handlers`."
    );
    quote! {
        #[doc = #doc]
        #vis struct #server<S: ?::core::marker::Sized> {
            service: ::std::sync::Arc<S>,
        }

        impl<S: ?::core::marker::Sized> ::core::clone::Clone for #server<S> {
            fn clone(&self) -> Self {
                Self { service: ::std::sync::Arc::clone(&self.service) }
            }
        }

        impl<S: ?::core::marker::Sized> ::core::fmt::Debug for #server<S> {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.write_str(::core::stringify!(#server))
            }
        }

        impl<S: #trait_ident> #server<S> {
            /// Serves `service`.
            #vis fn new(service: S) -> Self {
                Self { service: ::std::sync::Arc::new(service) }
            }
        }

        impl<S: #trait_ident + ?::core::marker::Sized> #server<S> {
            /// Serves a shared `service`.
            #vis fn from_arc(service: ::std::sync::Arc<S>) -> Self {
                Self { service }
            }

            /// Adds the service's operations to `handlers` (replacing
            /// handlers registered under the same names).
            #vis fn register(&self, handlers: ::gotalk_peer::Handlers) -> ::gotalk_peer::Handlers {
                let handlers = handlers;
                #(#registrations)*
                handlers
            }

            /// The service's operations alone.
            #vis fn into_handlers(self) -> ::gotalk_peer::Handlers {
                self.register(::gotalk_peer::Handlers::new())
            }

            /// What the service offers: names, kinds and types of its
            /// operations, for a [`Listing`](::gotalk_peer::service::Listing).
            #vis fn description() -> #p::ServiceDescription {
                #description
            }
        }
    }
}

/// `service.method(ctx, input).await`, with the arguments the method takes.
fn call(method: &Method) -> TokenStream {
    let ident = &method.ident;
    let owner = &method.owner;
    let ctx = method.context.then(|| quote!(ctx,));
    let input = method.input.as_ref().map(|_| quote!(input));
    quote!(<S as #owner>::#ident(&*service, #ctx #input).await)
}

/// The method's outcome as `Result<T, HandlerError>`.
fn outcome(method: &Method) -> TokenStream {
    let call = call(method);
    match (&method.error, method.returns_result) {
        (Some(error), true) => {
            let encoder = error_encoder(error);
            quote!(#call.map_err(#encoder))
        }
        _ => quote!(::core::result::Result::<_, ::gotalk_peer::HandlerError>::Ok(#call)),
    }
}

fn ctx_name(method: &Method) -> TokenStream {
    if method.context {
        quote!(ctx)
    } else {
        quote!(_ctx)
    }
}

/// `handlers.json` (or another registration), spanned at the method: a
/// type that does not fit the registration's bounds is reported there.
fn head(method: &Method, function: &str) -> TokenStream {
    let function = syn::Ident::new(function, method.ident.span());
    quote_spanned!(method.ident.span()=> handlers.#function)
}

/// `handlers = handlers.json(...)` (or `buffer`, `stream`, `notification`).
fn register(method: &Method) -> TokenStream {
    let p = private();
    let (json_notification, notification) = (
        head(method, "json_notification"),
        head(method, "notification"),
    );
    let name = &method.name;
    let ctx = ctx_name(method);
    let registration = if method.notification {
        let call = call(method);
        match &method.input {
            Some(input) if !input.raw => {
                let ty = &input.ty;
                quote! {
                    #json_notification(#name, move |#ctx: ::gotalk_peer::Context, input: #ty| {
                        let service = ::std::sync::Arc::clone(&service);
                        async move { #call }
                    })
                }
            }
            Some(_) => quote! {
                #notification(#name, move |#ctx: ::gotalk_peer::Context, input: #p::Bytes| {
                    let service = ::std::sync::Arc::clone(&service);
                    async move { #call }
                })
            },
            None => quote! {
                #notification(#name, move |#ctx: ::gotalk_peer::Context, _payload: #p::Bytes| {
                    let service = ::std::sync::Arc::clone(&service);
                    async move { #call }
                })
            },
        }
    } else if method.streams() {
        stream_registration(method)
    } else {
        single_registration(method)
    };
    quote! {
        let handlers = {
            let service = ::std::sync::Arc::clone(&self.service);
            #registration
        };
    }
}

fn single_registration(method: &Method) -> TokenStream {
    let p = private();
    let name = &method.name;
    let ctx = ctx_name(method);
    let outcome = outcome(method);
    let output = method.output.as_ref().expect("requests have an output");
    let input_raw = method.input.as_ref().is_some_and(|i| i.raw);
    if !input_raw && !output.raw {
        // JSON (or nothing) in, JSON out: `Handlers::json` as by hand.
        let (param, ty) = match &method.input {
            Some(input) => (quote!(input), input.ty.clone()),
            None => (quote!(_input), syn::parse_quote!(())),
        };
        let json = head(method, "json");
        return quote! {
            #json(#name, move |#ctx: ::gotalk_peer::Context, #param: #ty| {
                let service = ::std::sync::Arc::clone(&service);
                async move { #outcome }
            })
        };
    }
    let (param, decode) = match &method.input {
        Some(input) if input.raw => (quote!(input), quote!()),
        Some(input) => {
            let ty = &input.ty;
            (
                quote!(payload),
                quote!(let input = #p::decode_json::<#ty>(payload)?;),
            )
        }
        None => (quote!(_payload), quote!()),
    };
    let encode = if output.raw {
        quote!(::core::result::Result::<#p::Bytes, ::gotalk_peer::HandlerError>::Ok(output))
    } else {
        let ty = &output.ty;
        quote!(#p::encode_json::<#ty>(&output))
    };
    let buffer = head(method, "buffer");
    quote! {
        #buffer(#name, move |#ctx: ::gotalk_peer::Context, #param: #p::Bytes| {
            let service = ::std::sync::Arc::clone(&service);
            async move {
                #decode
                let output = #outcome?;
                #encode
            }
        })
    }
}

/// The server-side codec functions of a payload.
fn server_codec(payload: &Payload) -> (TokenStream, TokenStream) {
    let p = private();
    let ty = &payload.ty;
    if payload.raw {
        (quote!(#p::decode_raw), quote!(#p::encode_raw))
    } else {
        (
            quote!(#p::decode_json::<#ty>),
            quote!(#p::encode_json::<#ty>),
        )
    }
}

fn stream_registration(method: &Method) -> TokenStream {
    let p = private();
    let name = &method.name;
    let ctx = ctx_name(method);
    let output = method.output.as_ref().expect("requests have an output");
    let input = match &method.input {
        Some(input) if input.stream => {
            let (decode, _) = server_codec(input);
            quote!(let input = #p::Incoming::new(parts, #decode);)
        }
        Some(input) => {
            let (decode, _) = server_codec(input);
            quote!(let input = #decode(#p::whole_input(parts).await?)?;)
        }
        None => quote!(::core::mem::drop(parts);),
    };
    let (_, encode) = server_codec(output);
    let send = if output.stream {
        let call = call(method);
        let error = method
            .error
            .as_ref()
            .expect("a result stream has an error type");
        let encoder = error_encoder(error);
        quote!(#p::send_stream(#call, &mut results, #encode, #encoder).await)
    } else {
        let outcome = outcome(method);
        quote! {
            let output = #outcome?;
            results.send(#encode(&output)?).await?;
            ::core::result::Result::<(), ::gotalk_peer::HandlerError>::Ok(())
        }
    };
    let stream = head(method, "stream");
    quote! {
        #stream(#name, move |#ctx: ::gotalk_peer::Context, parts: ::gotalk_peer::RequestParts, mut results: ::gotalk_peer::ResultSender| {
            let service = ::std::sync::Arc::clone(&service);
            async move {
                #input
                #send
            }
        })
    }
}

/// The client-side codec functions of a payload.
fn client_codec(payload: &Payload) -> (TokenStream, TokenStream) {
    let p = private();
    let ty = &payload.ty;
    if payload.raw {
        (quote!(#p::client_encode_raw), quote!(#p::client_decode_raw))
    } else {
        (
            quote!(#p::client_encode_json::<#ty>),
            quote!(#p::client_decode_json::<#ty>),
        )
    }
}

fn client(service: &Service) -> TokenStream {
    let p = private();
    let vis = &service.item.vis;
    let trait_ident = &service.item.ident;
    let client = format_ident!("{}Client", trait_ident);
    let methods = service.methods.iter().map(|m| client_method(m, vis));
    let doc = format!(
        "Calls a [`{trait_ident}`] service over a [`Caller`](::gotalk_peer::service::Caller): \
         a `Peer`, a `ReconnectingPeer`, or `ctx.peer()` inside a handler (a call back to the \
         requester)."
    );
    quote! {
        #[doc = #doc]
        #[derive(Clone, Debug)]
        #vis struct #client<C> {
            caller: C,
        }

        impl<C: #p::Caller> #client<C> {
            /// A client calling over `caller`.
            #vis fn new(caller: C) -> Self {
                Self { caller }
            }

            /// What the calls go over.
            #vis fn caller(&self) -> &C {
                &self.caller
            }

            /// Gives back what the calls went over.
            #vis fn into_caller(self) -> C {
                self.caller
            }

            #(#methods)*
        }
    }
}

fn client_method(method: &Method, vis: &syn::Visibility) -> TokenStream {
    let p = private();
    let ident = &method.ident;
    let name = &method.name;
    let doc = if method.doc.is_empty() {
        format!("Calls `{name}`.")
    } else {
        format!("Calls `{name}`: {}", method.doc)
    };
    let input_stream = method.input.as_ref().is_some_and(|i| i.stream);
    let (param, payload) = match &method.input {
        Some(input) if input.stream => (quote!(), quote!()),
        Some(input) if input.raw => (
            quote!(input: impl ::core::convert::Into<#p::Bytes>),
            quote!(::core::convert::Into::<#p::Bytes>::into(input)),
        ),
        Some(input) => {
            let ty = &input.ty;
            (
                quote!(input: &#ty),
                quote!(#p::client_encode_json::<#ty>(input)?),
            )
        }
        None => (quote!(), quote!(#p::Bytes::new())),
    };
    if method.notification {
        return quote! {
            #[doc = #doc]
            #vis async fn #ident(&self, #param) -> ::core::result::Result<(), ::gotalk_peer::Error> {
                #p::Caller::notify(&self.caller, #name, #payload).await
            }
        };
    }
    let output = method.output.as_ref().expect("requests have an output");
    let out_ty = &output.ty;
    let (_, decode) = client_codec(output);
    let error_ty: Type = method
        .error
        .clone()
        .unwrap_or_else(|| syn::parse_quote!(::core::convert::Infallible));
    let decoder = error_decoder(&error_ty);
    if input_stream || output.stream {
        let reader = quote!(#p::PartReader::<#out_ty, #error_ty>::new(results, #decode, #decoder));
        if input_stream {
            let input = method.input.as_ref().expect("checked");
            let in_ty = &input.ty;
            let (encode, _) = client_codec(input);
            return quote! {
                #[doc = #doc]
                #vis async fn #ident(&self) -> ::core::result::Result<(#p::PartWriter<#in_ty>, #p::PartReader<#out_ty, #error_ty>), ::gotalk_peer::Error> {
                    let (writer, results) = #p::Caller::stream_request(&self.caller, #name).await?;
                    ::core::result::Result::Ok((#p::PartWriter::new(writer, #encode), #reader))
                }
            };
        }
        return quote! {
            #[doc = #doc]
            #vis async fn #ident(&self, #param) -> ::core::result::Result<#p::PartReader<#out_ty, #error_ty>, ::gotalk_peer::Error> {
                let payload = #payload;
                let (mut writer, results) = #p::Caller::stream_request(&self.caller, #name).await?;
                writer.send(payload).await?;
                writer.end().await?;
                ::core::result::Result::Ok(#reader)
            }
        };
    }
    if method.returns_result {
        quote! {
            #[doc = #doc]
            #vis async fn #ident(&self, #param) -> ::core::result::Result<#out_ty, #p::CallError<#error_ty>> {
                let payload = #payload;
                let result = #p::Caller::request(&self.caller, #name, payload)
                    .await
                    .map_err(|e| #p::CallError::from_error(e, #decoder))?;
                ::core::result::Result::Ok(#decode(result)?)
            }
        }
    } else {
        quote! {
            #[doc = #doc]
            #vis async fn #ident(&self, #param) -> ::core::result::Result<#out_ty, ::gotalk_peer::Error> {
                let payload = #payload;
                let result = #p::Caller::request(&self.caller, #name, payload).await?;
                #decode(result)
            }
        }
    }
}

/// `Vec < u8 >` as `Vec<u8>`: a type as a person writes it.
fn type_name(ty: &Type) -> String {
    let mut s = quote!(#ty).to_string();
    for (from, to) in [
        (" < ", "<"),
        ("< ", "<"),
        (" >", ">"),
        (" , ", ", "),
        (" :: ", "::"),
        (":: ", "::"),
        ("& ", "&"),
        ("( )", "()"),
    ] {
        s = s.replace(from, to);
    }
    // The default error of `Outgoing<T>`, named as users write it.
    s.strip_prefix("::gotalk_peer::")
        .map_or(s.clone(), str::to_owned)
}

fn payload_description(payload: &Payload, schema: bool) -> TokenStream {
    let p = private();
    let raw = payload.raw;
    let stream = payload.stream;
    let name = type_name(&payload.ty);
    let ty = &payload.ty;
    let with_schema = (schema && !raw).then(|| quote!(.with_schema::<#ty>()));
    quote!(#p::PayloadDescription::new(#name, #raw, #stream) #with_schema)
}

fn description(service: &Service) -> TokenStream {
    let p = private();
    let trait_name = service.item.ident.to_string();
    let operations = service.methods.iter().map(|m| {
        let name = &m.name;
        let method = m.ident.to_string();
        let doc = &m.doc;
        let kind = if m.notification {
            quote!(#p::OperationKind::Notification)
        } else if m.streams() {
            quote!(#p::OperationKind::Stream)
        } else {
            quote!(#p::OperationKind::Single)
        };
        let input = m.input.as_ref().map(|i| {
            let d = payload_description(i, service.schema);
            quote!(.input(#d))
        });
        let output = m.output.as_ref().map(|o| {
            let d = payload_description(o, service.schema);
            quote!(.output(#d))
        });
        let error = m.error.as_ref().map(|e| {
            let type_name = type_name(e);
            let schema = service.schema.then(|| {
                quote_spanned! {e.span()=>
                    .with_schema_fn({
                        #[allow(unused_imports)]
                        use #p::{PlainErrorSchema as _, TypedErrorSchema as _};
                        (&#p::ErrorKind::<#e>::new()).schema_fn()
                    })
                }
            });
            let typed = quote_spanned! {e.span()=> {
                #[allow(unused_imports)]
                use #p::{PlainError as _, TypedError as _};
                (&#p::ErrorKind::<#e>::new()).is_typed()
            }};
            quote!(.error(#p::ErrorDescription::new(#type_name, #typed) #schema))
        });
        quote! {
            .operation(
                #p::OperationDescription::new(#name, #kind, #method, #doc)
                    #input #output #error
            )
        }
    });
    quote! {
        #p::ServiceDescription::new(#trait_name) #(#operations)*
    }
}
