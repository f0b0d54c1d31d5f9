//! What a service offers, and the listing operation any client can call
//! to read it (name and JSON shape in `docs/services.md`).

use std::{borrow::Cow, sync::Arc};

use serde_json::{Map, Value, json};

use crate::{HandlerError, Handlers};

/// The name of the listing operation [`Listing::register`] adds.
pub const LISTING_OPERATION: &str = "gotalk.list";

/// The version of the listing's JSON shape, its `"version"` field.
pub const LISTING_VERSION: u32 = 1;

/// A JSON Schema of a type, made by a shared generator so that types used
/// by several operations are defined once (feature `schema`).
#[cfg(feature = "schema")]
pub type SchemaFn = fn(&mut schemars::SchemaGenerator) -> schemars::Schema;

/// How an operation is called.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OperationKind {
    /// One request, one result.
    Single,
    /// A stream request, a streamed result, or both.
    Stream,
    /// A one-way message.
    Notification,
}

impl OperationKind {
    /// `"single"`, `"stream"` or `"notification"`, as in the listing.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Single => "single",
            Self::Stream => "stream",
            Self::Notification => "notification",
        }
    }
}

/// An operation's input or output.
#[derive(Clone, Debug)]
pub struct PayloadDescription {
    type_name: Cow<'static, str>,
    raw: bool,
    stream: bool,
    #[cfg(feature = "schema")]
    schema: Option<SchemaFn>,
}

impl PayloadDescription {
    /// A payload of the Rust type named `type_name`: raw bytes (`raw`) or
    /// JSON, one value or a stream of them (`stream`).
    pub fn new(type_name: impl Into<Cow<'static, str>>, raw: bool, stream: bool) -> Self {
        Self {
            type_name: type_name.into(),
            raw,
            stream,
            #[cfg(feature = "schema")]
            schema: None,
        }
    }

    /// The JSON Schema of `T` describes this payload.
    #[cfg(feature = "schema")]
    pub fn with_schema<T: schemars::JsonSchema + ?Sized>(mut self) -> Self {
        self.schema = Some(|generator| generator.subschema_for::<T>());
        self
    }

    /// The Rust type's name, as written in the service.
    pub fn type_name(&self) -> &str {
        &self.type_name
    }

    /// True for raw bytes, false for JSON.
    pub fn is_raw(&self) -> bool {
        self.raw
    }

    /// True for a stream of parts.
    pub fn is_stream(&self) -> bool {
        self.stream
    }

    fn to_json(&self, schemas: &mut Schemas) -> Value {
        #[cfg_attr(not(feature = "schema"), allow(unused_mut))]
        let mut v = json!({
            "type": self.type_name,
            "encoding": if self.raw { "buffer" } else { "json" },
            "stream": self.stream,
        });
        #[cfg(feature = "schema")]
        if let Some(schema) = self.schema {
            v["schema"] = schemas.make(schema);
        }
        let _ = schemas;
        v
    }
}

/// An operation's error type.
#[derive(Clone, Debug)]
pub struct ErrorDescription {
    type_name: Cow<'static, str>,
    typed: bool,
    #[cfg(feature = "schema")]
    schema: Option<SchemaFn>,
}

impl ErrorDescription {
    /// An error of the Rust type named `type_name`, sent as a typed error
    /// (`typed`, the JSON envelope of `docs/services.md`) or as text.
    pub fn new(type_name: impl Into<Cow<'static, str>>, typed: bool) -> Self {
        Self {
            type_name: type_name.into(),
            typed,
            #[cfg(feature = "schema")]
            schema: None,
        }
    }

    /// The JSON Schema of the typed error (the envelope's `error` field).
    #[cfg(feature = "schema")]
    pub fn with_schema_fn(mut self, schema: Option<SchemaFn>) -> Self {
        self.schema = schema;
        self
    }

    /// The Rust type's name.
    pub fn type_name(&self) -> &str {
        &self.type_name
    }

    /// True when the error travels as a typed error.
    pub fn is_typed(&self) -> bool {
        self.typed
    }

    fn to_json(&self, schemas: &mut Schemas) -> Value {
        #[cfg_attr(not(feature = "schema"), allow(unused_mut))]
        let mut v = json!({ "type": self.type_name, "typed": self.typed });
        #[cfg(feature = "schema")]
        if let Some(schema) = self.schema {
            v["schema"] = schemas.make(schema);
        }
        let _ = schemas;
        v
    }
}

/// One operation or notification of a service.
#[derive(Clone, Debug)]
pub struct OperationDescription {
    name: Cow<'static, str>,
    kind: OperationKind,
    method: Cow<'static, str>,
    doc: Cow<'static, str>,
    input: Option<PayloadDescription>,
    output: Option<PayloadDescription>,
    error: Option<ErrorDescription>,
}

impl OperationDescription {
    /// The operation called `name` on the wire, implemented by `method`.
    pub fn new(
        name: impl Into<Cow<'static, str>>,
        kind: OperationKind,
        method: impl Into<Cow<'static, str>>,
        doc: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            name: name.into(),
            kind,
            method: method.into(),
            doc: doc.into(),
            input: None,
            output: None,
            error: None,
        }
    }

    /// What it takes (none: no input, an empty payload).
    pub fn input(mut self, input: PayloadDescription) -> Self {
        self.input = Some(input);
        self
    }

    /// What it answers (none for a notification).
    pub fn output(mut self, output: PayloadDescription) -> Self {
        self.output = Some(output);
        self
    }

    /// How it fails (none: only as any call can).
    pub fn error(mut self, error: ErrorDescription) -> Self {
        self.error = Some(error);
        self
    }

    /// The name on the wire.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How it is called.
    pub fn kind(&self) -> OperationKind {
        self.kind
    }

    /// Its input, if it takes one.
    pub fn input_description(&self) -> Option<&PayloadDescription> {
        self.input.as_ref()
    }

    /// Its output, if it answers.
    pub fn output_description(&self) -> Option<&PayloadDescription> {
        self.output.as_ref()
    }

    /// Its error, if it has its own.
    pub fn error_description(&self) -> Option<&ErrorDescription> {
        self.error.as_ref()
    }

    fn to_json(&self, service: &str, schemas: &mut Schemas) -> Value {
        json!({
            "name": self.name,
            "kind": self.kind.as_str(),
            "service": service,
            "method": self.method,
            "doc": self.doc,
            "input": self.input.as_ref().map(|i| i.to_json(schemas)),
            "output": self.output.as_ref().map(|o| o.to_json(schemas)),
            "error": self.error.as_ref().map(|e| e.to_json(schemas)),
        })
    }
}

/// A service's operations, as `#[service]` generates it
/// (`{Trait}Server::description()`), or written by hand for handlers
/// registered without the macro.
#[derive(Clone, Debug)]
pub struct ServiceDescription {
    name: Cow<'static, str>,
    operations: Vec<OperationDescription>,
}

impl ServiceDescription {
    /// A service called `name` (the trait's name), with no operations yet.
    pub fn new(name: impl Into<Cow<'static, str>>) -> Self {
        Self {
            name: name.into(),
            operations: Vec::new(),
        }
    }

    /// Adds an operation.
    pub fn operation(mut self, operation: OperationDescription) -> Self {
        self.operations.push(operation);
        self
    }

    /// The service's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its operations, in declaration order.
    pub fn operations(&self) -> &[OperationDescription] {
        &self.operations
    }
}

/// Schemas made by one generator, so shared types are defined once.
struct Schemas {
    #[cfg(feature = "schema")]
    generator: schemars::SchemaGenerator,
}

impl Schemas {
    fn new() -> Self {
        Self {
            #[cfg(feature = "schema")]
            generator: schemars::generate::SchemaSettings::draft2020_12().into_generator(),
        }
    }

    #[cfg(feature = "schema")]
    fn make(&mut self, schema: SchemaFn) -> Value {
        schema(&mut self.generator).to_value()
    }

    fn definitions(&mut self) -> Map<String, Value> {
        #[cfg(feature = "schema")]
        return self.generator.take_definitions(true);
        #[cfg(not(feature = "schema"))]
        Map::new()
    }
}

/// The listing operation: [`LISTING_OPERATION`] answers with the
/// operations of the services added here, so a client can ask what a
/// server offers (`gotalk list`, `gotalk describe`, `gotalk gen ts`).
/// Opt-in: a server without it answers `unknown operation`.
///
/// ```
/// use gotalk_peer::{Handlers, service::{Listing, OperationDescription, OperationKind,
///     PayloadDescription, ServiceDescription}};
/// // A hand-registered operation, described by hand.
/// let echo = ServiceDescription::new("Echo").operation(
///     OperationDescription::new("echo", OperationKind::Single, "echo", "returns the payload")
///         .input(PayloadDescription::new("Bytes", true, false))
///         .output(PayloadDescription::new("Bytes", true, false)),
/// );
/// let listing = Listing::new().service(echo);
/// assert_eq!(listing.to_json()["operations"][0]["name"], "echo");
/// let handlers = listing.register(Handlers::new());
/// # let _ = handlers;
/// ```
#[derive(Clone, Debug, Default)]
pub struct Listing {
    services: Vec<ServiceDescription>,
}

impl Listing {
    /// An empty listing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a service's operations.
    pub fn service(mut self, service: ServiceDescription) -> Self {
        self.services.push(service);
        self
    }

    /// The services listed.
    pub fn services(&self) -> &[ServiceDescription] {
        &self.services
    }

    /// The listing's JSON: `{"version": 1, "operations": [...], "$defs":
    /// {...}}` (see `docs/services.md`).
    pub fn to_json(&self) -> Value {
        let mut schemas = Schemas::new();
        let operations: Vec<Value> = self
            .services
            .iter()
            .flat_map(|s| s.operations.iter().map(move |op| (s, op)))
            .map(|(s, op)| op.to_json(&s.name, &mut schemas))
            .collect();
        json!({
            "version": LISTING_VERSION,
            "operations": operations,
            "$defs": schemas.definitions(),
        })
    }

    /// Adds the listing operation to `handlers`: a JSON operation (served
    /// as `application/json` over HTTP) taking no input. Its JSON is made
    /// once, here; each call writes it out again.
    pub fn register(&self, handlers: Handlers) -> Handlers {
        let json = Arc::new(self.to_json());
        handlers.json(
            LISTING_OPERATION,
            move |_ctx, _input: serde::de::IgnoredAny| {
                let json = Shared(Arc::clone(&json));
                async move { Ok::<_, HandlerError>(json) }
            },
        )
    }
}

/// The listing's JSON, shared by every call.
struct Shared(Arc<Value>);

impl serde::Serialize for Shared {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}
