//! Reading what a type in a method's signature means: raw bytes, a stream,
//! a `Result`, the handler's `Context`. Types are recognised by the last
//! segment of their path, as written (a macro sees no type information):
//! `Bytes` and `bytes::Bytes` are raw bytes, `Incoming<T>` and
//! `gotalk_peer::service::Incoming<T>` a stream of request parts.

use syn::{GenericArgument, PathArguments, Type, TypePath};

/// The last segment of a plain path type (no qualified self).
fn last_segment(ty: &Type) -> Option<&syn::PathSegment> {
    match ty {
        Type::Path(TypePath { qself: None, path }) => path.segments.last(),
        Type::Group(g) => last_segment(&g.elem),
        Type::Paren(p) => last_segment(&p.elem),
        _ => None,
    }
}

/// The type arguments of `ty`'s last segment, when its name is `name`.
fn args_of<'a>(ty: &'a Type, name: &str) -> Option<Vec<&'a Type>> {
    let segment = last_segment(ty)?;
    if segment.ident != name {
        return None;
    }
    match &segment.arguments {
        PathArguments::None => Some(Vec::new()),
        PathArguments::AngleBracketed(args) => Some(
            args.args
                .iter()
                .filter_map(|a| match a {
                    GenericArgument::Type(t) => Some(t),
                    _ => None,
                })
                .collect(),
        ),
        PathArguments::Parenthesized(_) => None,
    }
}

/// `Bytes`: a raw payload, sent as is.
pub(crate) fn is_bytes(ty: &Type) -> bool {
    args_of(ty, "Bytes").is_some_and(|a| a.is_empty())
}

/// `Context`: the handler's context.
pub(crate) fn is_context(ty: &Type) -> bool {
    args_of(ty, "Context").is_some_and(|a| a.is_empty())
}

/// `()`.
pub(crate) fn is_unit(ty: &Type) -> bool {
    matches!(ty, Type::Tuple(t) if t.elems.is_empty())
}

/// `Incoming<T>`: the item type of a stream of request parts.
pub(crate) fn incoming(ty: &Type) -> Option<Result<&Type, ()>> {
    let args = args_of(ty, "Incoming")?;
    Some(match args.as_slice() {
        [item] => Ok(*item),
        _ => Err(()),
    })
}

/// `Outgoing<T>` or `Outgoing<T, E>`: a stream of results and its error.
pub(crate) fn outgoing(ty: &Type) -> Option<Result<(&Type, Option<&Type>), ()>> {
    let args = args_of(ty, "Outgoing")?;
    Some(match args.as_slice() {
        [item] => Ok((*item, None)),
        [item, error] => Ok((*item, Some(*error))),
        _ => Err(()),
    })
}

/// `Result<T, E>`, written with both arguments.
pub(crate) fn result(ty: &Type) -> Option<Result<(&Type, &Type), ()>> {
    let args = args_of(ty, "Result")?;
    Some(match args.as_slice() {
        [ok, error] => Ok((*ok, *error)),
        _ => Err(()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ty(s: &str) -> Type {
        syn::parse_str(s).unwrap()
    }

    #[test]
    fn recognises_types_by_their_last_segment() {
        assert!(is_bytes(&ty("bytes::Bytes")));
        assert!(!is_bytes(&ty("Vec<u8>")));
        assert!(is_context(&ty("gotalk_peer::Context")));
        assert!(is_unit(&ty("()")));
        assert!(matches!(incoming(&ty("Incoming<Msg>")), Some(Ok(_))));
        assert!(matches!(incoming(&ty("Incoming")), Some(Err(()))));
        assert!(matches!(
            outgoing(&ty("service::Outgoing<Msg, E>")),
            Some(Ok((_, Some(_))))
        ));
        assert!(matches!(result(&ty("std::io::Result<u8>")), Some(Err(()))));
        assert!(result(&ty("Option<u8>")).is_none());
    }
}
