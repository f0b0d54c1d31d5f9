//! What the code `#[service]` generates calls. Not a public API: names
//! here may change in any release.

use std::{fmt, marker::PhantomData};

pub use bytes::Bytes;
use futures::StreamExt;
use serde::{Serialize, de::DeserializeOwned};

pub use super::{
    CallError, Caller, Incoming, Outgoing, PartReader, PartWriter,
    describe::{
        ErrorDescription, OperationDescription, OperationKind, PayloadDescription,
        ServiceDescription,
    },
};
use crate::{Error, HandlerError, RequestParts, ResultSender};

/// The largest single input a stream handler collects for a method that
/// takes one value: 16 MiB, the default payload limit.
const WHOLE_INPUT_LIMIT: usize = 16 * 1024 * 1024;

/// A JSON input, read as `Handlers::json` reads it.
pub fn decode_json<T: DeserializeOwned>(payload: Bytes) -> Result<T, HandlerError> {
    crate::handlers::json_input(&payload)
}

/// A raw input.
pub fn decode_raw(payload: Bytes) -> Result<Bytes, HandlerError> {
    Ok(payload)
}

/// A JSON result, written as `Handlers::json` writes it.
pub fn encode_json<T: Serialize>(value: &T) -> Result<Bytes, HandlerError> {
    crate::handlers::json_output(value)
}

/// A raw result.
pub fn encode_raw(value: &Bytes) -> Result<Bytes, HandlerError> {
    Ok(value.clone())
}

/// A JSON input sent by a client.
pub fn client_encode_json<T: Serialize>(value: &T) -> Result<Bytes, Error> {
    crate::peer::json_input(value)
}

/// A raw input sent by a client.
pub fn client_encode_raw(value: &Bytes) -> Result<Bytes, Error> {
    Ok(value.clone())
}

/// A JSON result read by a client.
pub fn client_decode_json<T: DeserializeOwned>(payload: Bytes) -> Result<T, Error> {
    crate::handlers::parse_json(&payload).map_err(Error::InvalidResult)
}

/// A raw result read by a client.
pub fn client_decode_raw(payload: Bytes) -> Result<Bytes, Error> {
    Ok(payload)
}

/// The parts of a request joined, for a stream handler whose method takes
/// one value (a single request arrives as one part).
pub async fn whole_input(mut parts: RequestParts) -> Result<Bytes, HandlerError> {
    let mut first: Option<Bytes> = None;
    let mut joined: Vec<u8> = Vec::new();
    while let Some(part) = parts.next().await {
        let part = part?;
        match &first {
            None => first = Some(part),
            Some(head) => {
                if joined.is_empty() {
                    joined.extend_from_slice(head);
                }
                if joined.len() + part.len() > WHOLE_INPUT_LIMIT {
                    return Err(HandlerError::new(format!(
                        "invalid input: more than {WHOLE_INPUT_LIMIT} bytes"
                    )));
                }
                joined.extend_from_slice(&part);
            }
        }
    }
    Ok(if joined.is_empty() {
        first.unwrap_or_default()
    } else {
        Bytes::from(joined)
    })
}

/// Sends every item of a method's result stream; an error item ends it
/// with an error result.
pub async fn send_stream<T, E>(
    mut items: Outgoing<T, E>,
    results: &mut ResultSender,
    encode: fn(&T) -> Result<Bytes, HandlerError>,
    encode_error: fn(E) -> HandlerError,
) -> Result<(), HandlerError> {
    while let Some(item) = items.next().await {
        match item {
            Ok(value) => results.send(encode(&value)?).await?,
            Err(e) => return Err(encode_error(e)),
        }
    }
    Ok(())
}

/// Chooses, at compile time, how an error type travels: errors that turn
/// into a [`HandlerError`] as its text ([`PlainError`], tried first), and
/// serde types with `Display` as a typed error ([`TypedError`]). The method
/// call `(&ErrorKind::<E>::new()).encoder()` finds `PlainError`'s impl on
/// `ErrorKind<E>` when it applies, else `TypedError`'s on `&ErrorKind<E>`
/// one auto-reference further (autoref specialisation): no trait objects,
/// no run-time test.
pub struct ErrorKind<E>(PhantomData<fn() -> E>);

impl<E> ErrorKind<E> {
    /// The marker for `E`.
    pub const fn new() -> Self {
        Self(PhantomData)
    }
}

impl<E> Default for ErrorKind<E> {
    fn default() -> Self {
        Self::new()
    }
}

/// An error sent as text: `E: Into<HandlerError>`.
pub trait PlainError<E> {
    /// Turns the error into the handler's error result.
    fn encoder(&self) -> fn(E) -> HandlerError;
    /// Finds the error in an error result: never, for plain errors.
    fn decoder(&self) -> fn(&[u8]) -> Option<E>;
    /// False.
    fn is_typed(&self) -> bool;
}

impl<E: Into<HandlerError>> PlainError<E> for ErrorKind<E> {
    fn encoder(&self) -> fn(E) -> HandlerError {
        Into::into
    }
    fn decoder(&self) -> fn(&[u8]) -> Option<E> {
        |_| None
    }
    fn is_typed(&self) -> bool {
        false
    }
}

/// An error sent as a typed error: serde both ways, and `Display` for the
/// envelope's `message`.
pub trait TypedError<E> {
    /// Turns the error into the handler's error result.
    fn encoder(&self) -> fn(E) -> HandlerError;
    /// Finds the error in an error result.
    fn decoder(&self) -> fn(&[u8]) -> Option<E>;
    /// True.
    fn is_typed(&self) -> bool;
}

impl<E: Serialize + DeserializeOwned + fmt::Display> TypedError<E> for &ErrorKind<E> {
    fn encoder(&self) -> fn(E) -> HandlerError {
        |e| super::typed_error::encode(&e)
    }
    fn decoder(&self) -> fn(&[u8]) -> Option<E> {
        super::typed_error::decode::<E>
    }
    fn is_typed(&self) -> bool {
        true
    }
}

/// No schema for a plain error: it is text.
#[cfg(feature = "schema")]
pub trait PlainErrorSchema {
    /// None.
    fn schema_fn(&self) -> Option<super::describe::SchemaFn>;
}

#[cfg(feature = "schema")]
impl<E: Into<HandlerError>> PlainErrorSchema for ErrorKind<E> {
    fn schema_fn(&self) -> Option<super::describe::SchemaFn> {
        None
    }
}

/// The schema of a typed error.
#[cfg(feature = "schema")]
pub trait TypedErrorSchema {
    /// The schema of the envelope's `error`.
    fn schema_fn(&self) -> Option<super::describe::SchemaFn>;
}

#[cfg(feature = "schema")]
impl<E: schemars::JsonSchema> TypedErrorSchema for &ErrorKind<E> {
    fn schema_fn(&self) -> Option<super::describe::SchemaFn> {
        Some(|generator| generator.subschema_for::<E>())
    }
}
