//! Typed streams: request parts a service method reads ([`Incoming`]),
//! result parts it returns ([`Outgoing`]), and their client-side ends
//! ([`PartWriter`], [`PartReader`]).

use std::{
    fmt,
    pin::Pin,
    task::{Context as TaskContext, Poll},
};

use bytes::Bytes;
use futures::{Stream, StreamExt, stream::BoxStream};

use super::CallError;
use crate::{Error, HandlerError, RequestParts, ResultStream, StreamWriter};

/// The parts of a stream request, decoded: what a `#[service]` method
/// taking `Incoming<T>` reads. `T = Bytes` gives each part as sent; any
/// other `T` is one JSON value per part.
///
/// A part that does not decode, or a connection lost mid-stream, yields an
/// `Err` (a [`HandlerError`] to return, or to map to the method's error).
pub struct Incoming<T> {
    parts: RequestParts,
    decode: fn(Bytes) -> Result<T, HandlerError>,
}

impl<T> Incoming<T> {
    #[doc(hidden)]
    pub fn new(parts: RequestParts, decode: fn(Bytes) -> Result<T, HandlerError>) -> Self {
        Self { parts, decode }
    }
}

impl<T> Stream for Incoming<T> {
    type Item = Result<T, HandlerError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        let decode = self.decode;
        self.parts
            .poll_next_unpin(cx)
            .map(|part| part.map(|part| part.map_err(HandlerError::from).and_then(decode)))
    }
}

impl<T> fmt::Debug for Incoming<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Incoming")
    }
}

/// The result parts a `#[service]` method streams back: each `Ok` item is
/// one result part (JSON, or as is for `T = Bytes`); an `Err` item ends the
/// stream with an error result, as the method's error would.
///
/// ```
/// use gotalk_peer::service::Outgoing;
/// let countdown: Outgoing<u32> = Outgoing::iter([3, 2, 1]);
/// # let _ = countdown;
/// ```
pub struct Outgoing<T, E = HandlerError> {
    items: BoxStream<'static, Result<T, E>>,
}

impl<T: Send + 'static, E: Send + 'static> Outgoing<T, E> {
    /// The items of `stream`.
    pub fn new(stream: impl Stream<Item = Result<T, E>> + Send + 'static) -> Self {
        Self {
            items: stream.boxed(),
        }
    }

    /// The items of `iter`, all `Ok`.
    pub fn iter<I>(iter: I) -> Self
    where
        I: IntoIterator<Item = T>,
        I::IntoIter: Send + 'static,
    {
        Self::new(futures::stream::iter(iter.into_iter().map(Ok)))
    }

    /// An error result with no part before it.
    pub fn fail(error: E) -> Self {
        Self::new(futures::stream::once(async move { Err(error) }))
    }
}

impl<T, E> Stream for Outgoing<T, E> {
    type Item = Result<T, E>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        self.items.poll_next_unpin(cx)
    }
}

impl<T, E> fmt::Debug for Outgoing<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Outgoing")
    }
}

/// Sends the parts of a typed stream request (the client side of an
/// `Incoming<T>`). Dropping it without [`end`](Self::end) still ends the
/// stream on the wire.
pub struct PartWriter<T> {
    writer: StreamWriter,
    encode: fn(&T) -> Result<Bytes, Error>,
}

impl<T> PartWriter<T> {
    #[doc(hidden)]
    pub fn new(writer: StreamWriter, encode: fn(&T) -> Result<Bytes, Error>) -> Self {
        Self { writer, encode }
    }

    /// Sends one part.
    pub async fn send(&mut self, item: &T) -> Result<(), Error> {
        let bytes = (self.encode)(item)?;
        self.writer.send(bytes).await
    }

    /// Ends the request stream.
    pub async fn end(self) -> Result<(), Error> {
        self.writer.end().await
    }
}

impl<T> fmt::Debug for PartWriter<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PartWriter")
            .field("id", &self.writer.id())
            .finish()
    }
}

/// The result of a typed stream request: its parts decoded, as a
/// `futures::Stream`, ending with `Err` when the service answers with an
/// error (its typed error as [`CallError::Service`]). Dropping it cancels
/// the request.
pub struct PartReader<T, E> {
    results: ResultStream,
    decode: fn(Bytes) -> Result<T, Error>,
    decode_error: fn(&[u8]) -> Option<E>,
}

/// The largest result [`PartReader::single`] collects: 16 MiB, the default
/// payload limit.
const SINGLE_LIMIT: usize = 16 * 1024 * 1024;

impl<T, E> PartReader<T, E> {
    #[doc(hidden)]
    pub fn new(
        results: ResultStream,
        decode: fn(Bytes) -> Result<T, Error>,
        decode_error: fn(&[u8]) -> Option<E>,
    ) -> Self {
        Self {
            results,
            decode,
            decode_error,
        }
    }

    /// The whole result as one value, for an operation whose result is
    /// single: its parts (one, usually) joined, up to 16 MiB.
    pub async fn single(self) -> Result<T, CallError<E>> {
        let decode_error = self.decode_error;
        let bytes = self
            .results
            .collect_bytes(SINGLE_LIMIT)
            .await
            .map_err(|e| CallError::from_error(e, decode_error))?;
        Ok((self.decode)(bytes)?)
    }
}

impl<T, E> Stream for PartReader<T, E> {
    type Item = Result<T, CallError<E>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        let (decode, decode_error) = (self.decode, self.decode_error);
        self.results.poll_next_unpin(cx).map(|part| {
            part.map(|part| match part {
                Ok(bytes) => decode(bytes).map_err(CallError::Call),
                Err(e) => Err(CallError::from_error(e, decode_error)),
            })
        })
    }
}

impl<T, E> fmt::Debug for PartReader<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PartReader")
            .field("results", &self.results)
            .finish()
    }
}
