//! `gotalk gen ts`: TypeScript from a server's listing (`gotalk.list`): the
//! JSON Schemas of its types as type declarations, and a typed client
//! module on gotalk.js (`client(conn).chat.send({...}): Promise<Ack>`,
//! streams as async iterators, typed errors as `ServiceError`).
//!
//! The listing is the single source: it is what any server (Rust or not)
//! can offer at run time, and what `gotalk list` and `request --check` read
//! too. Derives such as ts-rs or specta would give TypeScript only from
//! Rust source at build time, and a second description of the same types
//! to keep in step with the schemas.

use std::{collections::BTreeMap, fmt::Write as _, path::PathBuf};

use clap::Args;
use serde_json::{Map, Value};

use crate::{
    addr::{Address, TrustArgs},
    exit,
    text::{OptDuration, parse_optional_duration},
};

pub(crate) const GEN_TS_HELP: &str = "\
Reads the listing of the server at ADDR (or the file given with --listing, as printed by
`gotalk list --json`) and writes two files into --out: NAME.d.ts, the type declarations (one
type per schema definition, and the Client interface), and NAME.js, the client module. Use
it on a gotalk.js connection:
  import { connect } from './gotalk.js';
  import { client } from './api.js';
  const api = client(connect());
  const ack = await api.chat.send({ room: 'lobby', text: 'hi' });
Operations named `group.method` are grouped (`api.group.method`); other names become
methods of the client itself (`stream-echo`: `api.streamEcho`).
Exit codes: 0 written; 1 the server offers no listing; 2 connection, I/O or usage error.";

/// Arguments of `gotalk gen ts`.
#[derive(Args)]
pub(crate) struct TsArgs {
    /// Server address (any address `request` takes); or give --listing
    #[arg(required_unless_present = "listing", conflicts_with = "listing")]
    addr: Option<Address>,
    /// A listing's JSON, read from this file instead of asking a server
    #[arg(long, value_name = "FILE")]
    listing: Option<PathBuf>,
    /// Directory to write NAME.d.ts and NAME.js into
    #[arg(long, value_name = "DIR", default_value = ".")]
    out: PathBuf,
    /// Base name of the files
    #[arg(long, default_value = "api", value_parser = parse_name)]
    name: String,
    /// How the client module imports gotalk.js
    #[arg(long, value_name = "PATH", default_value = "./gotalk.js")]
    gotalk_js: String,
    /// Give up after this long ("off" waits forever)
    #[arg(long, default_value = "10s", value_parser = parse_optional_duration, value_name = "DURATION")]
    timeout: OptDuration,
    #[command(flatten)]
    trust: TrustArgs,
    #[command(flatten)]
    pub(crate) runtime: crate::RuntimeArgs,
}

fn parse_name(s: &str) -> Result<String, String> {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        Ok(s.to_owned())
    } else {
        Err("letters, digits, - and _ only".into())
    }
}

/// `gotalk gen ts`.
pub(crate) async fn run(args: TsArgs) -> u8 {
    let listing = match (&args.listing, &args.addr) {
        (Some(file), _) => match std::fs::read(file) {
            Ok(bytes) => match serde_json::from_slice::<Value>(&bytes) {
                Ok(v) if v["operations"].is_array() => v,
                Ok(_) => {
                    eprintln!("gotalk: {} has no \"operations\" array", file.display());
                    return exit::TROUBLE;
                }
                Err(e) => {
                    eprintln!("gotalk: {} is not JSON: {e}", file.display());
                    return exit::TROUBLE;
                }
            },
            Err(e) => {
                eprintln!("gotalk: cannot read {}: {e}", file.display());
                return exit::TROUBLE;
            }
        },
        (None, Some(addr)) => {
            match crate::services::fetch_for(addr, &args.trust, args.timeout.0).await {
                Ok(v) => v,
                Err(code) => return code,
            }
        }
        (None, None) => unreachable!("clap requires one"),
    };
    let generated = match generate(&listing, &args.gotalk_js) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("gotalk: cannot generate TypeScript: {e}");
            return exit::TROUBLE;
        }
    };
    for (ext, text) in [("d.ts", &generated.declarations), ("js", &generated.module)] {
        let path = args.out.join(format!("{}.{ext}", args.name));
        if let Err(e) = std::fs::write(&path, text) {
            eprintln!("gotalk: cannot write {}: {e}", path.display());
            return exit::TROUBLE;
        }
        eprintln!("wrote {}", path.display());
    }
    exit::OK
}

/// The two files.
pub(crate) struct Generated {
    pub(crate) declarations: String,
    pub(crate) module: String,
}

/// `chat.send` as (`Some("chat")`, `send`); `stream-echo` as (`None`, `streamEcho`).
fn js_path(name: &str) -> (Option<String>, String) {
    let (group, rest) = match name.split_once('.') {
        Some((g, r)) if !g.is_empty() && !r.is_empty() => (Some(identifier(g)), r),
        _ => (None, name),
    };
    (group, identifier(rest))
}

/// camelCase from any name: separators dropped, the next letter upper.
fn identifier(s: &str) -> String {
    let mut out = String::new();
    let mut upper = false;
    for c in s.chars() {
        if c.is_ascii_alphanumeric() || c == '_' || c == '$' {
            if upper && !out.is_empty() {
                out.push(c.to_ascii_uppercase());
            } else {
                out.push(c);
            }
            upper = false;
        } else {
            upper = true;
        }
    }
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// A definition's name as a TypeScript type name.
fn type_name(s: &str) -> String {
    crate::text::identifier(s, |_| false)
}

fn is_plain_key(k: &str) -> bool {
    !k.is_empty()
        && !k.starts_with(|c: char| c.is_ascii_digit())
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
}

/// A JSON Schema (the subset schemars writes) as a TypeScript type.
/// Anything it does not understand is `unknown`: never a wrong type.
fn ts_type(schema: &Value, depth: usize) -> String {
    if depth > 64 {
        return "unknown".into();
    }
    let Some(o) = schema.as_object() else {
        return if schema == &Value::Bool(false) {
            "never".into()
        } else {
            "unknown".into()
        };
    };
    if let Some(r) = o.get("$ref").and_then(Value::as_str) {
        return match r.strip_prefix("#/$defs/") {
            Some(name) => type_name(name),
            None => "unknown".into(),
        };
    }
    if let Some(c) = o.get("const") {
        return c.to_string();
    }
    if let Some(Value::Array(options)) = o.get("enum") {
        return union(options.iter().map(Value::to_string).collect());
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(Value::Array(options)) = o.get(key) {
            let base = without(o, key);
            let alternatives = union(options.iter().map(|s| ts_type(s, depth + 1)).collect());
            return if base.is_empty() {
                alternatives
            } else {
                format!(
                    "({}) & ({alternatives})",
                    ts_type(&Value::Object(base), depth + 1)
                )
            };
        }
    }
    if let Some(Value::Array(all)) = o.get("allOf") {
        let parts: Vec<String> = all
            .iter()
            .map(|s| format!("({})", ts_type(s, depth + 1)))
            .collect();
        return parts.join(" & ");
    }
    let types: Vec<&str> = match o.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ if o.contains_key("properties") => vec!["object"],
        _ => return "unknown".into(),
    };
    union(
        types
            .iter()
            .map(|t| match *t {
                "string" => "string".into(),
                "number" | "integer" => "number".into(),
                "boolean" => "boolean".into(),
                "null" => "null".into(),
                "array" => array_type(o, depth),
                "object" => object_type(o, depth),
                _ => "unknown".into(),
            })
            .collect(),
    )
}

fn without(o: &Map<String, Value>, key: &str) -> Map<String, Value> {
    let mut rest = o.clone();
    rest.remove(key);
    for ignored in [
        "description",
        "title",
        "$schema",
        "default",
        "examples",
        "format",
    ] {
        rest.remove(ignored);
    }
    rest
}

fn union(mut parts: Vec<String>) -> String {
    parts.dedup();
    match parts.len() {
        0 => "never".into(),
        1 => parts.remove(0),
        _ => parts.join(" | "),
    }
}

fn array_type(o: &Map<String, Value>, depth: usize) -> String {
    if let Some(Value::Array(prefix)) = o.get("prefixItems") {
        let items: Vec<String> = prefix.iter().map(|s| ts_type(s, depth + 1)).collect();
        return format!("[{}]", items.join(", "));
    }
    match o.get("items") {
        Some(items) => {
            let t = ts_type(items, depth + 1);
            if t.contains(' ') {
                format!("Array<{t}>")
            } else {
                format!("{t}[]")
            }
        }
        None => "unknown[]".into(),
    }
}

fn object_type(o: &Map<String, Value>, depth: usize) -> String {
    let required: Vec<&str> = o
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut fields = Vec::new();
    if let Some(Value::Object(props)) = o.get("properties") {
        for (key, schema) in props {
            let name = if is_plain_key(key) {
                key.clone()
            } else {
                Value::String(key.clone()).to_string()
            };
            let optional = if required.contains(&key.as_str()) {
                ""
            } else {
                "?"
            };
            fields.push(format!("{name}{optional}: {}", ts_type(schema, depth + 1)));
        }
    }
    match o.get("additionalProperties") {
        Some(Value::Bool(false)) => {}
        // An index signature must admit the named fields too (TypeScript
        // refuses `{ name: string; [key: string]: number }`).
        Some(Value::Object(_)) if !fields.is_empty() => {
            fields.push("[key: string]: unknown".into())
        }
        Some(extra @ Value::Object(_)) => {
            fields.push(format!("[key: string]: {}", ts_type(extra, depth + 1)))
        }
        _ if fields.is_empty() => fields.push("[key: string]: unknown".into()),
        _ => {}
    }
    format!("{{ {} }}", fields.join("; "))
}

/// A payload description's TypeScript type: the schema's, `unknown` for
/// JSON without one, bytes for buffers (as sent, or as received).
fn payload_type(p: &Value, sending: bool) -> String {
    if p["encoding"] == "buffer" {
        return if sending {
            "PayloadInput".into()
        } else {
            "Uint8Array".into()
        };
    }
    p.get("schema")
        .map_or_else(|| "unknown".into(), |s| ts_type(s, 0))
}

fn doc_comment(out: &mut String, indent: &str, lines: &[String]) {
    let lines: Vec<&String> = lines.iter().filter(|l| !l.is_empty()).collect();
    if lines.is_empty() {
        return;
    }
    let _ = writeln!(out, "{indent}/**");
    for line in lines {
        for l in line.lines() {
            let _ = writeln!(out, "{indent} * {}", l.replace("*/", "*\\/"));
        }
    }
    let _ = writeln!(out, "{indent} */");
}

/// One generated client method: its declaration and its implementation.
struct Method {
    decl: String,
    code: String,
}

fn method(op: &Value) -> Result<(Option<String>, String, Method), String> {
    let name = op["name"].as_str().ok_or("an operation without a name")?;
    let (group, ident) = js_path(name);
    let kind = op["kind"].as_str().unwrap_or("single");
    let input = &op["input"];
    let output = &op["output"];
    let in_json = input["encoding"] == "json";
    let out_json = output["encoding"] == "json";
    let typed = op["error"]["typed"] == true;
    let name_lit = Value::String(name.to_owned()).to_string();
    let param = if input.is_null() {
        String::new()
    } else {
        format!("input: {}", payload_type(input, true))
    };
    let arg = if input.is_null() {
        "undefined"
    } else {
        "input"
    };
    let mut docs = vec![
        op["doc"].as_str().unwrap_or("").to_owned(),
        format!("`{name}` ({kind})."),
    ];
    if typed {
        let error = op["error"]
            .get("schema")
            .map_or_else(|| "unknown".into(), |s| ts_type(s, 0));
        docs.push(format!(
            "@throws {{ServiceError<{error}>}} the service's typed error"
        ));
    }
    let mut decl = String::new();
    doc_comment(&mut decl, "  ", &docs);
    let (signature, code) = if kind == "notification" {
        (
            format!("{ident}({param}): void;"),
            format!(
                "notification(c, {name_lit}, {}, {})",
                !input.is_null() && in_json,
                input.is_null()
            ),
        )
    } else if input["stream"] == true {
        let out = payload_type(output, false);
        (
            format!(
                "{ident}(): StreamCall<{}, {out}>;",
                payload_type(input, true)
            ),
            format!("streamIn(c, {name_lit}, {in_json}, {out_json}, {typed})"),
        )
    } else if output["stream"] == true {
        (
            format!(
                "{ident}({param}): AsyncIterableIterator<{}>;",
                payload_type(output, false)
            ),
            format!(
                "streamOut(c, {name_lit}, {in_json}, {out_json}, {typed}, {})",
                input.is_null()
            ),
        )
    } else {
        (
            format!(
                "{ident}({param}): Promise<{}>;",
                payload_type(output, false)
            ),
            format!(
                "single(c, {name_lit}, {}, {out_json}, {typed})",
                input.is_null() || in_json
            ),
        )
    };
    let _ = writeln!(decl, "  {signature}");
    let _ = arg;
    Ok((group, ident, Method { decl, code }))
}

/// Both files for `listing`; `gotalk_js` is the module path of gotalk.js.
pub(crate) fn generate(listing: &Value, gotalk_js: &str) -> Result<Generated, String> {
    let import = Value::String(gotalk_js.to_owned()).to_string();
    let mut d = String::new();
    let _ = writeln!(
        d,
        "// Generated by `gotalk gen ts` from a gotalk.list listing (version {}). Do not edit.",
        listing["version"]
    );
    let _ = writeln!(
        d,
        "import type {{ Connection, PayloadInput }} from {import};\n"
    );
    if let Some(defs) = listing["$defs"].as_object() {
        for (name, schema) in defs {
            let doc = schema["description"].as_str().unwrap_or("").to_owned();
            doc_comment(&mut d, "", &[doc]);
            let _ = writeln!(
                d,
                "export type {} = {};\n",
                type_name(name),
                ts_type(schema, 0)
            );
        }
    }
    d.push_str(DECLARATIONS_PRELUDE);
    let mut groups: BTreeMap<Option<String>, Vec<(String, Method)>> = BTreeMap::new();
    for op in listing["operations"].as_array().ok_or("no operations")? {
        if op["name"] == gotalk_peer::service::LISTING_OPERATION {
            continue;
        }
        let (group, ident, m) = method(op)?;
        groups.entry(group).or_default().push((ident, m));
    }
    let top: Vec<&String> = groups
        .get(&None)
        .map(|ms| ms.iter().map(|(i, _)| i).collect())
        .unwrap_or_default();
    for group in groups.keys().flatten() {
        if top.contains(&group) {
            return Err(format!(
                "the operation {group:?} and the group {group:?} would share one name"
            ));
        }
    }
    let _ = writeln!(
        d,
        "/** The server's operations, on one connection. */\nexport interface Client {{"
    );
    let mut m = String::new();
    let _ = writeln!(
        m,
        "// Generated by `gotalk gen ts` from a gotalk.list listing. Do not edit."
    );
    let _ = writeln!(m, "// Types: the .d.ts file beside this one.");
    let _ = writeln!(m, "import {{ GotalkError }} from {import};\n");
    m.push_str(MODULE_PRELUDE);
    let _ = writeln!(
        m,
        "/** The server's operations over `c`, a gotalk.js Connection. */\nexport function client(c) {{\n  return {{"
    );
    for (group, methods) in &groups {
        let indent = if group.is_some() { "    " } else { "  " };
        if let Some(g) = group {
            let _ = writeln!(d, "  {g}: {{");
            let _ = writeln!(m, "    {g}: {{");
        }
        for (ident, method) in methods {
            for line in method.decl.lines() {
                let _ = writeln!(d, "{}{}", &indent[2..], line);
            }
            let _ = writeln!(m, "  {indent}{ident}: {},", method.code);
        }
        if group.is_some() {
            let _ = writeln!(d, "  }};");
            let _ = writeln!(m, "    }},");
        }
    }
    let _ = writeln!(
        d,
        "}}\n\n/** The server's operations over `connection`. */\nexport function client(connection: Connection): Client;"
    );
    let _ = writeln!(m, "  }};\n}}");
    Ok(Generated {
        declarations: d,
        module: m,
    })
}

const DECLARATIONS_PRELUDE: &str = r#"/**
 * The service's own error, sent as a typed error (`{"message": ..., "error": ...}`).
 * Other failures reject with gotalk.js's errors (RemoteError, ClosedError, ...).
 */
export class ServiceError<E = unknown> extends Error {
  readonly isServiceError: true;
  /** The operation that failed. */
  readonly op: string;
  /** The error value, as the service's schema describes it. */
  readonly error: E;
}

/** A stream request: parts go in with `write`, the result comes out of `results` or `result`. */
export interface StreamCall<In, Out> {
  /** Sends one part; false when the request already finished. */
  write(part: In): boolean;
  /** Ends the request stream. */
  end(): void;
  /** The result parts, decoded (read this or `result`, not both). */
  results(): AsyncIterableIterator<Out>;
  /** The whole result, decoded (a single result). */
  result(): Promise<Out>;
}

"#;

const MODULE_PRELUDE: &str = r#"/** The service's own error, sent as a typed error (`{"message": ..., "error": ...}`). */
export class ServiceError extends GotalkError {
  constructor(op, message, error, cause) {
    super(message, { cause });
    this.name = 'ServiceError';
    this.op = op;
    this.error = error;
  }
  get isServiceError() {
    return true;
  }
}

const decoder = new TextDecoder();

/** Rethrows `e`, as a ServiceError when it is an error result holding a typed error. */
function rethrow(op, typed, e) {
  if (typed && e && e.isRemoteError) {
    let value;
    try {
      value = JSON.parse(e.message);
    } catch {
      throw e;
    }
    if (value && typeof value === 'object' && typeof value.message === 'string' && 'error' in value) {
      throw new ServiceError(op, value.message, value.error, e);
    }
  }
  throw e;
}

const encode = (json, value) => (json ? JSON.stringify(value === undefined ? null : value) : value);
const decode = (json, bytes) => (json ? JSON.parse(decoder.decode(bytes) || 'null') : bytes);

function single(c, op, json, outJson, typed) {
  return (input) => {
    const call = json && outJson ? c.request(op, input ?? null) : c.bufferRequest(op, encode(json, input)).then((b) => decode(outJson, b));
    return call.catch((e) => rethrow(op, typed, e));
  };
}

async function* parts(req, op, outJson, typed) {
  try {
    for await (const chunk of req) yield decode(outJson, chunk);
  } catch (e) {
    rethrow(op, typed, e);
  }
}

function streamOut(c, op, json, outJson, typed, noInput) {
  return (input) => {
    const req = c.streamRequest(op);
    if (!noInput) req.write(encode(json, input));
    req.end();
    return parts(req, op, outJson, typed);
  };
}

function streamIn(c, op, json, outJson, typed) {
  return () => {
    const req = c.streamRequest(op);
    return {
      write: (part) => req.write(encode(json, part)),
      end: () => req.end(),
      results: () => parts(req, op, outJson, typed),
      result: () => req.result.then((b) => decode(outJson, b)).catch((e) => rethrow(op, typed, e)),
    };
  };
}

function notification(c, name, json, noInput) {
  return (input) => (json ? c.notify(name, input) : c.bufferNotify(name, noInput ? '' : input));
}

"#;

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn names_become_client_paths() {
        assert_eq!(js_path("chat.send"), (Some("chat".into()), "send".into()));
        assert_eq!(js_path("stream-echo"), (None, "streamEcho".into()));
        assert_eq!(js_path("a.b.c"), (Some("a".into()), "bC".into()));
        assert_eq!(js_path("9lives"), (None, "_9lives".into()));
    }

    #[test]
    fn schemas_become_types() {
        let cases = [
            (json!({"type": "string"}), "string"),
            (json!({"type": ["integer", "null"]}), "number | null"),
            (
                json!({"type": "array", "items": {"$ref": "#/$defs/Message"}}),
                "Message[]",
            ),
            (
                json!({"type": "array", "items": {"type": ["string", "null"]}}),
                "Array<string | null>",
            ),
            (
                json!({"type": "array", "prefixItems": [{"type": "string"}, {"type": "boolean"}]}),
                "[string, boolean]",
            ),
            (
                json!({"type": "object", "properties": {"id": {"type": "integer"}, "note": {"type": "string"}}, "required": ["id"]}),
                "{ id: number; note?: string }",
            ),
            (
                json!({"type": "object", "additionalProperties": {"type": "number"}}),
                "{ [key: string]: number }",
            ),
            (json!({"enum": ["a", "b"]}), "\"a\" | \"b\""),
            (
                json!({"oneOf": [{"const": "x"}, {"type": "object", "properties": {"Y": {"type": "string"}}, "required": ["Y"], "additionalProperties": false}]}),
                "\"x\" | { Y: string }",
            ),
            (
                json!({"anyOf": [{"$ref": "#/$defs/A"}, {"type": "null"}]}),
                "A | null",
            ),
            (
                json!({"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"], "additionalProperties": {"type": "number"}}),
                "{ id: string; [key: string]: unknown }",
            ),
            (json!(true), "unknown"),
            (json!({"$ref": "http://elsewhere"}), "unknown"),
            (
                json!({"type": "object", "properties": {"a-b": {"type": "string"}}, "required": ["a-b"]}),
                "{ \"a-b\": string }",
            ),
        ];
        for (schema, ts) in cases {
            assert_eq!(ts_type(&schema, 0), ts, "{schema}");
        }
    }

    #[test]
    fn a_group_and_an_operation_of_one_name_are_refused() {
        let listing = json!({"version": 1, "operations": [
            {"name": "chat", "kind": "single", "input": null, "output": {"encoding": "json"}, "error": null},
            {"name": "chat.send", "kind": "single", "input": null, "output": {"encoding": "json"}, "error": null}
        ]});
        assert!(generate(&listing, "./gotalk.js").is_err());
    }
}
