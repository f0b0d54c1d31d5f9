//! `gotalk list` and `gotalk describe`: what a server offers, from its
//! listing operation (`gotalk.list`, see docs/services.md); and the
//! schema-driven explanation `gotalk request` gives when the server
//! refuses an input.

use std::time::Duration;

use bytes::Bytes;
use clap::Args;
use gotalk_peer::{Config, Error, Peer, RequestOptions, service::LISTING_OPERATION};
use serde_json::{Map, Value};

use crate::{
    addr::{Address, TrustArgs},
    client::{connect_with, describe as describe_error, exit_code, write_stdout},
    exit, http_client, ops, schema_check,
    text::{OptDuration, parse_optional_duration},
};

pub(crate) const LIST_HELP: &str = "\
Asks the server for its listing (the `gotalk.list` operation: a server offers it by
registering gotalk_peer::service::Listing; `gotalk serve` does) and prints one line per
operation: name, kind (single, stream, notification), input -> output, and the error type
(`!`, marked typed when it travels as a JSON envelope), then its description.
--json prints the listing as received. Works over every address `request` takes.
Exit codes: 0 printed; 1 the server offers no listing; 2 connection error or invalid usage.";

pub(crate) const DESCRIBE_HELP: &str = "\
Prints one operation of the server's listing: kind, description, and the JSON Schema of its
input, output and error, followed by the definitions they refer to.
Exit codes: 0 printed; 1 no listing, or no such operation in it; 2 connection error.";

/// Arguments of `gotalk list`.
#[derive(Args)]
pub(crate) struct ListArgs {
    /// Server address: host:port, tls://host:port, unix:PATH, ws://…, wss://… or http://…
    addr: Address,
    /// Print the listing's JSON as received (pretty-printed)
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    common: Common,
}

/// Arguments of `gotalk describe`.
#[derive(Args)]
pub(crate) struct DescribeArgs {
    /// Server address: host:port, tls://host:port, unix:PATH, ws://…, wss://… or http://…
    addr: Address,
    /// Operation name
    op: String,
    #[command(flatten)]
    common: Common,
}

#[derive(Args)]
struct Common {
    /// Give up after this long ("off" waits forever)
    #[arg(long, default_value = "10s", value_parser = parse_optional_duration, value_name = "DURATION")]
    timeout: OptDuration,
    /// Print every frame in and out to stderr
    #[arg(long)]
    trace: bool,
    #[command(flatten)]
    trust: TrustArgs,
    #[command(flatten)]
    runtime: crate::RuntimeArgs,
}

impl ListArgs {
    pub(crate) fn threads(&self) -> Option<u16> {
        self.common.runtime.threads
    }
}

impl DescribeArgs {
    pub(crate) fn threads(&self) -> Option<u16> {
        self.common.runtime.threads
    }
}

/// The largest listing accepted: 16 MiB, the default payload limit.
const MAX_LISTING: u32 = 16 * 1024 * 1024;

/// Why no listing was read.
pub(crate) enum NoListing {
    /// The server answered `gotalk.list` with an error result: it offers none.
    NotOffered(String),
    /// The listing is not the JSON expected.
    Invalid(String),
    /// The call failed; the message was printed; exit with this code.
    Failed(u8),
}

/// Reads the listing over an open connection.
pub(crate) async fn listing_over(
    peer: &Peer,
    timeout: Option<Duration>,
) -> Result<Value, NoListing> {
    let options = RequestOptions {
        timeout,
        max_attempts: Some(1),
        ..RequestOptions::default()
    };
    match peer
        .request_with(LISTING_OPERATION, Bytes::new(), options)
        .await
    {
        Ok(bytes) => parse_listing(&bytes),
        Err(Error::Remote(e)) => Err(NoListing::NotOffered(e.message())),
        Err(e) => {
            eprintln!("gotalk: {}", describe_error(&e));
            Err(NoListing::Failed(exit_code(&e).max(exit::TROUBLE)))
        }
    }
}

/// Reads the listing from an HTTP endpoint.
pub(crate) async fn listing_over_http(url: &str, trace: bool) -> Result<Value, NoListing> {
    match http_client::call(url, LISTING_OPERATION, Bytes::new(), 1, MAX_LISTING, trace).await {
        Ok(http_client::HttpOutcome::Result(bytes)) => parse_listing(&bytes),
        Ok(http_client::HttpOutcome::ErrorResult(text)) => Err(NoListing::NotOffered(
            String::from_utf8_lossy(&text).into_owned(),
        )),
        other => Err(NoListing::Failed(
            http_client::report(&other).unwrap_or(exit::TROUBLE),
        )),
    }
}

fn parse_listing(bytes: &[u8]) -> Result<Value, NoListing> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| NoListing::Invalid(format!("the listing is not JSON: {e}")))?;
    if !value["operations"].is_array() {
        return Err(NoListing::Invalid(
            "the listing has no \"operations\" array".into(),
        ));
    }
    Ok(value)
}

/// Connects (any address) and reads the listing.
async fn fetch(addr: &Address, common: &Common) -> Result<Value, NoListing> {
    fetch_with(addr, &common.trust, common.trace, common.timeout.0).await
}

/// Reads the listing for `gotalk gen ts`: the listing, or the exit code
/// after saying why not.
pub(crate) async fn fetch_for(
    addr: &Address,
    trust: &TrustArgs,
    timeout: Option<Duration>,
) -> Result<Value, u8> {
    fetch_with(addr, trust, false, timeout)
        .await
        .map_err(|why| report(addr, why))
}

async fn fetch_with(
    addr: &Address,
    trust: &TrustArgs,
    trace: bool,
    timeout: Option<Duration>,
) -> Result<Value, NoListing> {
    let work = async {
        if let Address::Http(url) = addr {
            return listing_over_http(url, trace).await;
        }
        let peer = connect_with(
            addr,
            trust,
            trace,
            ops::client_handlers(),
            Config::default(),
            timeout,
        )
        .await
        .map_err(NoListing::Failed)?;
        let listing = listing_over(&peer, timeout).await;
        peer.close().await;
        listing
    };
    match timeout {
        Some(limit) => tokio::time::timeout(limit, work).await.unwrap_or_else(|_| {
            eprintln!("gotalk: no listing within {limit:?} (--timeout)");
            Err(NoListing::Failed(exit::TROUBLE))
        }),
        None => work.await,
    }
}

/// Prints why there is no listing; the exit code.
fn report(addr: &Address, why: NoListing) -> u8 {
    match why {
        NoListing::NotOffered(text) => {
            eprintln!(
                "gotalk: {addr} offers no listing ({LISTING_OPERATION}: {text})\n  \
                 a Rust server offers one with gotalk_peer::service::Listing"
            );
            exit::FAILED
        }
        NoListing::Invalid(why) => {
            eprintln!("gotalk: {why}");
            exit::TROUBLE
        }
        NoListing::Failed(code) => code,
    }
}

/// `T`, `stream<T>`, `bytes`, or `()` for a payload description.
fn payload_text(p: &Value) -> String {
    if p.is_null() {
        return "()".into();
    }
    let ty = if p["encoding"] == "buffer" {
        "bytes".to_owned()
    } else {
        p["type"].as_str().unwrap_or("?").to_owned()
    };
    if p["stream"] == true {
        format!("stream<{ty}>")
    } else {
        ty
    }
}

/// One line of `gotalk list`.
fn operation_line(op: &Value, width: usize) -> String {
    let name = op["name"].as_str().unwrap_or("?");
    let kind = op["kind"].as_str().unwrap_or("?");
    let mut line = if kind == "notification" {
        format!("{name:width$}  {kind:12}  {}", payload_text(&op["input"]))
    } else {
        format!(
            "{name:width$}  {kind:12}  {} -> {}",
            payload_text(&op["input"]),
            payload_text(&op["output"])
        )
    };
    if let Some(error) = op["error"]["type"].as_str() {
        let typed = if op["error"]["typed"] == true {
            " (typed)"
        } else {
            ""
        };
        line.push_str(&format!("  ! {error}{typed}"));
    }
    if let Some(doc) = op["doc"]
        .as_str()
        .and_then(|d| d.lines().next())
        .filter(|d| !d.is_empty())
    {
        line.push_str(&format!("\n{:width$}  {doc}", ""));
    }
    line
}

/// `gotalk list`.
pub(crate) async fn list(args: ListArgs) -> u8 {
    let listing = match fetch(&args.addr, &args.common).await {
        Ok(l) => l,
        Err(why) => return report(&args.addr, why),
    };
    let text = if args.json {
        format!(
            "{}\n",
            serde_json::to_string_pretty(&listing).unwrap_or_default()
        )
    } else {
        let ops = listing["operations"]
            .as_array()
            .map_or(&[][..], Vec::as_slice);
        let width = ops
            .iter()
            .filter_map(|o| o["name"].as_str())
            .map(str::len)
            .max()
            .unwrap_or(0);
        let mut out = String::new();
        for op in ops {
            out.push_str(&operation_line(op, width));
            out.push('\n');
        }
        out
    };
    print(&text)
}

fn print(text: &str) -> u8 {
    match write_stdout(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            eprintln!("gotalk: cannot write: {e}");
            exit::TROUBLE
        }
        _ => exit::OK,
    }
}

/// The names of the definitions `schema` refers to, and theirs, in order.
fn referenced(schema: &Value, defs: &Map<String, Value>, found: &mut Vec<String>) {
    match schema {
        Value::Object(o) => {
            if let Some(name) = o
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix("#/$defs/"))
                && !found.iter().any(|f| f == name)
            {
                found.push(name.to_owned());
                if let Some(def) = defs.get(name) {
                    referenced(def, defs, found);
                }
            }
            o.values().for_each(|v| referenced(v, defs, found));
        }
        Value::Array(a) => a.iter().for_each(|v| referenced(v, defs, found)),
        _ => {}
    }
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

/// `gotalk describe`.
pub(crate) async fn describe(args: DescribeArgs) -> u8 {
    let listing = match fetch(&args.addr, &args.common).await {
        Ok(l) => l,
        Err(why) => return report(&args.addr, why),
    };
    let Some(op) = find(&listing, &args.op) else {
        eprintln!(
            "gotalk: {} lists no operation {:?} (`gotalk list {}` shows them)",
            args.addr, args.op, args.addr
        );
        return exit::FAILED;
    };
    let empty = Map::new();
    let defs = listing["$defs"].as_object().unwrap_or(&empty);
    let mut out = format!(
        "{} ({})",
        op["name"].as_str().unwrap_or("?"),
        op["kind"].as_str().unwrap_or("?")
    );
    if let (Some(service), Some(method)) = (op["service"].as_str(), op["method"].as_str()) {
        out.push_str(&format!(", {service}::{method}"));
    }
    out.push('\n');
    if let Some(doc) = op["doc"].as_str().filter(|d| !d.is_empty()) {
        for line in doc.lines() {
            out.push_str(&format!("  {line}\n"));
        }
    }
    let mut refs = Vec::new();
    for (label, part) in [("input", &op["input"]), ("output", &op["output"])] {
        if label == "output" && op["kind"] == "notification" {
            continue;
        }
        out.push_str(&format!("{label}: {}", payload_text(part)));
        if part.is_null() {
            out.push_str(if label == "input" {
                " (empty payload)\n"
            } else {
                "\n"
            });
            continue;
        }
        out.push_str(if part["encoding"] == "buffer" {
            " (raw bytes)\n"
        } else {
            " (JSON)\n"
        });
        if let Some(schema) = part.get("schema") {
            out.push_str(&format!("{}\n", pretty(schema)));
            referenced(schema, defs, &mut refs);
        }
    }
    let error = &op["error"];
    if !error.is_null() {
        let ty = error["type"].as_str().unwrap_or("?");
        if error["typed"] == true {
            out.push_str(&format!(
                "error: {ty}, typed: the error result is {{\"message\": TEXT, \"error\": VALUE}}\n"
            ));
        } else {
            out.push_str(&format!("error: {ty}, as text\n"));
        }
        if let Some(schema) = error.get("schema") {
            out.push_str(&format!("{}\n", pretty(schema)));
            referenced(schema, defs, &mut refs);
        }
    }
    if !refs.is_empty() {
        out.push_str("definitions:\n");
        for name in refs {
            if let Some(def) = defs.get(&name) {
                out.push_str(&format!("{name}: {}\n", pretty(def)));
            }
        }
    }
    print(&out)
}

fn find<'a>(listing: &'a Value, op: &str) -> Option<&'a Value> {
    listing["operations"]
        .as_array()?
        .iter()
        .find(|o| o["name"] == op)
}

/// Checks `payload` against the input schema `listing` gives `op`: `Ok`
/// when it matches or nothing can be said (no such operation, raw bytes,
/// no schema), else the reason, for a person.
pub(crate) fn check_input(listing: &Value, op: &str, payload: &[u8]) -> Result<(), String> {
    let Some(entry) = find(listing, op) else {
        return Ok(());
    };
    let input = &entry["input"];
    let Some(schema) = input.get("schema") else {
        return Ok(());
    };
    if input["encoding"] != "json" || input["stream"] == true {
        return Ok(());
    }
    let value: Value = if payload.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(payload).map_err(|e| format!("the input is not JSON: {e}"))?
    };
    let empty = Map::new();
    let defs = listing["$defs"].as_object().unwrap_or(&empty);
    schema_check::check(schema, defs, &value).map_err(|m| {
        format!(
            "the input does not match {op}'s {} schema: {m}",
            input["type"].as_str().unwrap_or("input")
        )
    })
}

/// After an error result: if the server lists `op` with an input schema
/// the payload breaks, how (for stderr). `None` otherwise.
pub(crate) fn explain(
    listing: Result<Value, NoListing>,
    addr: &Address,
    op: &str,
    payload: &[u8],
) -> Option<String> {
    let why = check_input(&listing.ok()?, op, payload).err()?;
    Some(format!(
        "gotalk: {why}\n  `gotalk describe {addr} {op}` shows the schema"
    ))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn listing() -> Value {
        json!({
            "version": 1,
            "operations": [
                {"name": "greet", "kind": "single", "doc": "Says hello.\nPolitely.",
                 "input": {"type": "GreetIn", "encoding": "json", "stream": false,
                           "schema": {"$ref": "#/$defs/GreetIn"}},
                 "output": {"type": "GreetOut", "encoding": "json", "stream": false},
                 "error": {"type": "GreetError", "typed": true}},
                {"name": "echo", "kind": "single", "doc": "",
                 "input": {"type": "Bytes", "encoding": "buffer", "stream": false},
                 "output": {"type": "Bytes", "encoding": "buffer", "stream": false}, "error": null},
                {"name": "up", "kind": "stream", "doc": "",
                 "input": {"type": "Bytes", "encoding": "buffer", "stream": true},
                 "output": {"type": "Line", "encoding": "json", "stream": true}, "error": null},
                {"name": "ping", "kind": "notification", "doc": "", "input": null, "output": null, "error": null}
            ],
            "$defs": {"GreetIn": {"type": "object", "properties": {"name": {"type": "string"}},
                                  "required": ["name"], "additionalProperties": false}}
        })
    }

    #[test]
    fn list_lines_show_kinds_types_and_errors() {
        let l = listing();
        let ops = l["operations"].as_array().unwrap();
        let lines: Vec<String> = ops.iter().map(|o| operation_line(o, 5)).collect();
        assert_eq!(
            lines,
            [
                "greet  single        GreetIn -> GreetOut  ! GreetError (typed)\n       Says hello.",
                "echo   single        bytes -> bytes",
                "up     stream        stream<bytes> -> stream<Line>",
                "ping   notification  ()",
            ]
        );
    }

    #[test]
    fn inputs_are_checked_against_the_listed_schema() {
        let l = listing();
        assert_eq!(check_input(&l, "greet", br#"{"name":"x"}"#), Ok(()));
        assert_eq!(
            check_input(&l, "greet", br#"{"nom":"x"}"#).unwrap_err(),
            "the input does not match greet's GreetIn schema: at /: missing field \"name\""
        );
        assert!(
            check_input(&l, "greet", b"{")
                .unwrap_err()
                .starts_with("the input is not JSON")
        );
        assert!(
            check_input(&l, "greet", b"").is_err(),
            "null is not a GreetIn"
        );
        // Nothing to say about raw bytes or operations not listed.
        assert_eq!(check_input(&l, "echo", b"{"), Ok(()));
        assert_eq!(check_input(&l, "nope", b"{"), Ok(()));
    }
}
