//! The `#[service]` attribute of `gotalk-peer`: typed gotalk services from
//! one Rust trait.
//!
//! Use it as `#[gotalk_peer::service]` (feature `macros` of `gotalk-peer`):
//! the code it generates names items of `gotalk_peer::service`, so it does
//! not work on its own. The attribute and what it generates are documented
//! there, and in `docs/services.md` in the repository.

mod expand;
mod model;
mod types;

use proc_macro::TokenStream;

/// Turns a trait whose `async fn`s are operations into a gotalk service:
/// the trait (each method's future made `Send`), `{Trait}Server` to
/// register an implementation into `Handlers`, `{Trait}Client` to call it
/// over anything that implements `gotalk_peer::service::Caller`, and a
/// description for the listing.
///
/// Arguments: `prefix = "chat"` (operations are named `chat.method`),
/// `schema` (JSON Schemas in the description: every JSON type must
/// implement `schemars::JsonSchema`, and `gotalk-peer` needs its `schema`
/// feature). Per method: `#[op(name = "...")]` sets the whole name,
/// `#[notification]` makes it a notification. See
/// `gotalk_peer::service` for the signatures accepted.
#[proc_macro_attribute]
pub fn service(args: TokenStream, item: TokenStream) -> TokenStream {
    let expanded =
        model::Service::parse(args.into(), item.into()).map(|service| expand::service(&service));
    match expanded {
        Ok(tokens) => tokens.into(),
        Err(error) => error.to_compile_error().into(),
    }
}
