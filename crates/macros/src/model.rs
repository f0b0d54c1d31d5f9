//! What a `#[service]` trait says, checked: every method's operation name,
//! kind, input, output and error. Misuse is a compile error pointing at the
//! offending part of the signature.

use proc_macro2::TokenStream;
use syn::{
    Attribute, Error, FnArg, Ident, ItemTrait, LitStr, Pat, ReturnType, Signature, TraitItem,
    TraitItemFn, Type, parse::Parser, spanned::Spanned,
};

use crate::types;

/// The parsed service.
pub(crate) struct Service {
    /// The trait as written, minus our attributes on its methods.
    pub(crate) item: ItemTrait,
    pub(crate) methods: Vec<Method>,
    /// `schema`: descriptions carry JSON Schemas.
    pub(crate) schema: bool,
}

/// One operation or notification.
pub(crate) struct Method {
    /// The trait's name.
    pub(crate) owner: Ident,
    pub(crate) ident: Ident,
    /// The name on the wire.
    pub(crate) name: String,
    pub(crate) doc: String,
    pub(crate) notification: bool,
    /// The method takes a `Context` before its input.
    pub(crate) context: bool,
    pub(crate) input: Option<Payload>,
    /// `None` for notifications.
    pub(crate) output: Option<Payload>,
    /// The error type of a fallible method (`Result<T, E>`, `Outgoing<T, E>`).
    pub(crate) error: Option<Type>,
    /// The method returns `Result<T, E>` (rather than `T`, or a stream).
    pub(crate) returns_result: bool,
}

/// An input or output: its type (the item type, for a stream), whether it
/// is raw bytes, and whether it is a stream.
pub(crate) struct Payload {
    pub(crate) ty: Type,
    pub(crate) raw: bool,
    pub(crate) stream: bool,
}

impl Payload {
    fn new(ty: &Type, stream: bool) -> Self {
        Self {
            ty: ty.clone(),
            raw: types::is_bytes(ty),
            stream,
        }
    }
}

/// Collects every error instead of stopping at the first.
#[derive(Default)]
struct Errors(Option<Error>);

impl Errors {
    fn push(&mut self, e: Error) {
        match &mut self.0 {
            Some(all) => all.combine(e),
            None => self.0 = Some(e),
        }
    }
    fn finish(self) -> Result<(), Error> {
        self.0.map_or(Ok(()), Err)
    }
}

impl Service {
    pub(crate) fn parse(args: TokenStream, item: TokenStream) -> Result<Self, Error> {
        let mut prefix = None;
        let mut schema = false;
        let parser = syn::meta::parser(|meta| {
            if meta.path.is_ident("prefix") {
                let value: LitStr = meta.value()?.parse()?;
                if value.value().is_empty() {
                    return Err(Error::new(value.span(), "the prefix must not be empty"));
                }
                prefix = Some(value.value());
                Ok(())
            } else if meta.path.is_ident("schema") {
                schema = true;
                Ok(())
            } else {
                Err(meta
                    .error("unknown #[service] argument: expected `prefix = \"...\"` or `schema`"))
            }
        });
        parser.parse2(args)?;
        let mut item: ItemTrait = syn::parse2(item)?;
        let mut errors = Errors::default();
        if !item.generics.params.is_empty() || item.generics.where_clause.is_some() {
            errors.push(Error::new(
                item.generics.span(),
                "a #[service] trait cannot be generic: its operations have fixed types",
            ));
        }
        let mut methods = Vec::new();
        let item_ident = item.ident.clone();
        for trait_item in &mut item.items {
            match trait_item {
                TraitItem::Fn(f) => match Method::parse(f, &item_ident, prefix.as_deref()) {
                    Ok(m) => methods.push(m),
                    Err(e) => errors.push(e),
                },
                other => errors.push(Error::new(
                    other.span(),
                    "a #[service] trait holds only `async fn` operations",
                )),
            }
        }
        let mut seen = std::collections::HashMap::new();
        for m in &methods {
            if let Some(first) = seen.insert(m.name.clone(), m.ident.clone()) {
                errors.push(Error::new(
                    m.ident.span(),
                    format!("`{first}` is already named {:?} on the wire", m.name),
                ));
            }
        }
        errors.finish()?;
        Ok(Self {
            item,
            methods,
            schema,
        })
    }
}

/// The text of `///` comments.
fn doc_of(attrs: &[Attribute]) -> String {
    let mut lines = Vec::new();
    for attr in attrs.iter().filter(|a| a.path().is_ident("doc")) {
        if let syn::Meta::NameValue(nv) = &attr.meta
            && let syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(s),
                ..
            }) = &nv.value
        {
            lines.push(s.value().trim().to_owned());
        }
    }
    lines.join("\n").trim().to_owned()
}

impl Method {
    fn parse(f: &mut TraitItemFn, owner: &Ident, prefix: Option<&str>) -> Result<Self, Error> {
        let mut name = None;
        let mut notification = false;
        let mut kept = Vec::new();
        for attr in f.attrs.drain(..) {
            if attr.path().is_ident("op") {
                attr.parse_nested_meta(|meta| {
                    if meta.path.is_ident("name") {
                        let value: LitStr = meta.value()?.parse()?;
                        if value.value().is_empty() || value.value().len() > 4095 {
                            return Err(Error::new(
                                value.span(),
                                "an operation name has 1 to 4095 bytes",
                            ));
                        }
                        name = Some(value.value());
                        Ok(())
                    } else {
                        Err(meta.error("unknown #[op] argument: expected `name = \"...\"`"))
                    }
                })?;
            } else if attr.path().is_ident("notification") {
                attr.meta.require_path_only()?;
                notification = true;
            } else {
                kept.push(attr);
            }
        }
        f.attrs = kept;
        let sig = &f.sig;
        if let Some(body) = &f.default {
            return Err(Error::new(
                body.span(),
                "a #[service] method has no default body: implement it in the impl",
            ));
        }
        check_shape(sig)?;
        let ident = sig.ident.clone();
        let name = name.unwrap_or_else(|| match prefix {
            Some(p) => format!("{p}.{ident}"),
            None => ident.to_string(),
        });
        let mut inputs = sig.inputs.iter().skip(1).peekable();
        let mut context = false;
        if let Some(FnArg::Typed(first)) = inputs.peek()
            && types::is_context(&first.ty)
        {
            context = true;
            inputs.next();
        }
        let input = match inputs.next() {
            None => None,
            Some(FnArg::Typed(arg)) => {
                if !matches!(&*arg.pat, Pat::Ident(_)) {
                    return Err(Error::new(
                        arg.pat.span(),
                        "name the input with an identifier (patterns are for the impl)",
                    ));
                }
                if types::is_context(&arg.ty) {
                    return Err(Error::new(arg.ty.span(), "the `Context` comes first"));
                }
                Some(match types::incoming(&arg.ty) {
                    Some(Ok(item)) => Payload::new(item, true),
                    Some(Err(())) => {
                        return Err(Error::new(arg.ty.span(), "write `Incoming<T>`"));
                    }
                    None => Payload::new(&arg.ty, false),
                })
            }
            Some(other) => return Err(Error::new(other.span(), "unexpected receiver")),
        };
        if let Some(extra) = inputs.next() {
            return Err(Error::new(
                extra.span(),
                "an operation takes one input (after an optional `ctx: Context`): \
                 put several values in one struct",
            ));
        }
        let output_ty: Type = match &sig.output {
            ReturnType::Default => syn::parse_quote!(()),
            ReturnType::Type(_, ty) => (**ty).clone(),
        };
        let method = if notification {
            if !types::is_unit(&output_ty) {
                return Err(Error::new(
                    sig.output.span(),
                    "a #[notification] returns nothing: notifications have no reply",
                ));
            }
            if input.as_ref().is_some_and(|i| i.stream) {
                return Err(Error::new(
                    sig.inputs.span(),
                    "a #[notification] cannot take a stream",
                ));
            }
            Self {
                owner: owner.clone(),
                ident,
                name,
                doc: doc_of(&f.attrs),
                notification,
                context,
                input,
                output: None,
                error: None,
                returns_result: false,
            }
        } else {
            let (output, error, returns_result) = match types::outgoing(&output_ty) {
                Some(Ok((item, error))) => (
                    Payload::new(item, true),
                    Some(
                        error
                            .cloned()
                            .unwrap_or_else(|| syn::parse_quote!(::gotalk_peer::HandlerError)),
                    ),
                    false,
                ),
                Some(Err(())) => {
                    return Err(Error::new(
                        output_ty.span(),
                        "write `Outgoing<T>` or `Outgoing<T, E>`",
                    ));
                }
                None => match types::result(&output_ty) {
                    Some(Ok((ok, error))) => {
                        if types::outgoing(ok).is_some() {
                            return Err(Error::new(
                                ok.span(),
                                "return `Outgoing<T, E>` itself: its items carry the errors",
                            ));
                        }
                        (Payload::new(ok, false), Some(error.clone()), true)
                    }
                    Some(Err(())) => {
                        return Err(Error::new(
                            output_ty.span(),
                            "write `Result<T, E>` with both types, so the client knows the error",
                        ));
                    }
                    None => (Payload::new(&output_ty, false), None, false),
                },
            };
            Self {
                owner: owner.clone(),
                ident,
                name,
                doc: doc_of(&f.attrs),
                notification,
                context,
                input,
                output: Some(output),
                error,
                returns_result,
            }
        };
        Ok(method)
    }

    /// True when the operation is served by a stream handler.
    pub(crate) fn streams(&self) -> bool {
        self.input.as_ref().is_some_and(|i| i.stream)
            || self.output.as_ref().is_some_and(|o| o.stream)
    }
}

/// `async fn name(&self, ...)`, nothing else.
fn check_shape(sig: &Signature) -> Result<(), Error> {
    if sig.asyncness.is_none() {
        return Err(Error::new(
            sig.fn_token.span(),
            "a #[service] method must be an `async fn`",
        ));
    }
    if let Some(c) = &sig.constness {
        return Err(Error::new(
            c.span(),
            "a #[service] method cannot be `const`",
        ));
    }
    if let Some(u) = &sig.unsafety {
        return Err(Error::new(
            u.span(),
            "a #[service] method cannot be `unsafe`",
        ));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        return Err(Error::new(
            sig.generics.span(),
            "a #[service] method cannot be generic: its types are the wire's",
        ));
    }
    if let Some(v) = &sig.variadic {
        return Err(Error::new(
            v.span(),
            "a #[service] method cannot be variadic",
        ));
    }
    match sig.inputs.first() {
        Some(FnArg::Receiver(r)) if r.reference.is_some() && r.mutability.is_none() => Ok(()),
        Some(FnArg::Receiver(r)) => Err(Error::new(
            r.span(),
            "a #[service] method takes `&self`: calls run concurrently",
        )),
        _ => Err(Error::new(
            sig.ident.span(),
            "a #[service] method takes `&self` first",
        )),
    }
}
