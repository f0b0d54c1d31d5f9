//! Typed services: one Rust trait gives the handlers, a typed client, and
//! a description for the listing any client can ask for.
//!
//! The wire stays gotalk: operation names are strings, payloads JSON (or
//! raw bytes), so the Go package, gotalk.js and `gotalk request` call a
//! typed service as they call any other. The types live on top.
//!
//! # The attribute
//!
//! `#[gotalk_peer::service]` (feature `macros`) on a trait whose methods
//! are `async fn(&self, ...)`:
//!
//! ```
//! # #[cfg(feature = "macros")] mod m {
//! use bytes::Bytes;
//! use gotalk_peer::{Context, HandlerError, service::{Incoming, Outgoing}};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! pub struct Message { pub room: String, pub text: String }
//! #[derive(Serialize, Deserialize)]
//! pub struct Ack { pub id: u64 }
//! #[derive(Debug, Serialize, Deserialize, thiserror::Error)]
//! pub enum ChatError {
//!     #[error("no room called {0:?}")]
//!     NoSuchRoom(String),
//! }
//!
//! #[gotalk_peer::service(prefix = "chat")]
//! pub trait Chat {
//!     /// `chat.send`: JSON in, JSON out, a typed error.
//!     async fn send(&self, message: Message) -> Result<Ack, ChatError>;
//!     /// `chat.who`: no input; the handler's context first.
//!     async fn who(&self, ctx: Context) -> Vec<String>;
//!     /// `ping`: the whole name set by hand, raw bytes in and out.
//!     #[op(name = "ping")]
//!     async fn ping(&self, payload: Bytes) -> Bytes;
//!     /// `chat.upload`: a stream of request parts, one result.
//!     async fn upload(&self, lines: Incoming<String>) -> Result<u64, HandlerError>;
//!     /// `chat.watch`: one request, a stream of results.
//!     async fn watch(&self, room: String) -> Outgoing<Message>;
//!     /// `chat.typing`: a notification.
//!     #[notification]
//!     async fn typing(&self, who: String);
//! }
//! # }
//! ```
//!
//! | In the signature | On the wire |
//! |---|---|
//! | `ctx: Context` first (optional) | the handler's [`Context`](crate::Context): `ctx.peer()` calls back the requester |
//! | one input `T: Deserialize` | a JSON payload; none at all: an empty payload (or `null`) |
//! | `Bytes` (in or out) | the payload as is (a buffer operation) |
//! | `Incoming<T>` | a stream request, one `T` per part |
//! | `-> T` | a result that cannot fail (but for the call itself) |
//! | `-> Result<T, E>` | an error result when `E`: as text if `E: Into<HandlerError>`, else a typed error (below) |
//! | `-> Outgoing<T, E>` | a streamed result, one part per item; an `Err` item ends it with an error result |
//! | `#[notification]`, `-> ()` | a notification |
//! | `#[op(name = "x")]` | the whole name, with no prefix (to describe an existing service exactly) |
//!
//! Arguments of the attribute: `prefix = "chat"` names operations
//! `chat.method` (without it, `method`); `schema` puts the JSON Schemas
//! of the types in the description (feature `schema`; every JSON type
//! must then implement `schemars::JsonSchema`).
//!
//! It generates, beside the trait (whose methods become `fn`s returning
//! `Send` futures; implement them with `async fn`):
//!
//! - `ChatServer<S>`: `ChatServer::new(imp).register(handlers)` adds the
//!   operations to [`Handlers`](crate::Handlers) through its public API
//!   (`json`, `buffer`, `stream`, `notification`), exactly as the same
//!   handlers written by hand; `ChatServer::<S>::description()` describes
//!   them for a [`Listing`].
//! - `ChatClient<C: Caller>`: one method per operation, taking `&T` (or
//!   `impl Into<Bytes>`) and returning the declared type. Methods that
//!   return `Result<T, E>` give `Result<T, CallError<E>>`, the others
//!   `Result<T, Error>`; stream methods give a [`PartWriter`] and a
//!   [`PartReader`]. [`Caller`] is implemented by
//!   [`Peer`](crate::Peer), [`ReconnectingPeer`](crate::ReconnectingPeer)
//!   and references to them: inside a handler, `ChatClient::new(ctx.peer())`
//!   calls the requester back.
//!
//! # Typed errors
//!
//! An error type that is not `Into<HandlerError>` but is `Serialize +
//! DeserializeOwned + Display` travels as a typed error: the error result's
//! payload is the JSON object
//!
//! ```text
//! {"message": "no room called \"x\"", "error": {"NoSuchRoom": "x"}}
//! ```
//!
//! with `message` its `Display` text and `error` the value as serde writes
//! it. A typed client gives it back as [`CallError::Service`]; a client
//! that knows nothing of it (Go, gotalk.js, `gotalk request`) shows the
//! payload as its error text, which reads as a sentence in JSON. Which way
//! an error type goes is chosen at compile time (an error type that is both
//! goes as text); the listing says which (`"typed"`).
//!
//! # The listing
//!
//! [`Listing`] registers [`LISTING_OPERATION`] (`gotalk.list`), whose
//! result describes the operations of the services added to it: name,
//! kind, input, output and error types, and JSON Schemas with the `schema`
//! feature. `docs/services.md` has its JSON shape.

/// The guide's examples (`docs/services.md`), compiled and run as doctests.
#[cfg(all(doctest, feature = "macros", feature = "schema"))]
#[doc = include_str!("../../../../docs/services.md")]
struct ServicesGuide;

mod caller;
mod describe;
mod parts;
mod typed_error;

#[doc(hidden)]
pub mod __private;

pub use caller::Caller;
#[cfg(feature = "schema")]
pub use describe::SchemaFn;
pub use describe::{
    ErrorDescription, LISTING_OPERATION, LISTING_VERSION, Listing, OperationDescription,
    OperationKind, PayloadDescription, ServiceDescription,
};
pub use parts::{Incoming, Outgoing, PartReader, PartWriter};
#[cfg(feature = "schema")]
pub use schemars;
pub use typed_error::CallError;
