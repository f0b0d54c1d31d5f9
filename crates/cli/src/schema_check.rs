//! Checks a JSON value against a JSON Schema: the subset schemars writes
//! (draft 2020-12: `$ref` into `$defs`, `type`, `properties`, `required`,
//! `additionalProperties`, `items`, `prefixItems`, `enum`, `const`,
//! `oneOf`/`anyOf`/`allOf`/`not`, numeric and length bounds). Keywords it
//! does not know are ignored, so an unknown schema passes rather than
//! refusing input the server would take; the server stays the judge.
//!
//! Written here rather than taken from the `jsonschema` crate: that crate
//! brings a regex engine, an HTTP client for remote references and some
//! fifty dependencies to check the handful of keywords a listing holds.

use serde_json::{Map, Value};

/// How deep `$ref`s may nest while checking one value: a schema that
/// refers to itself without consuming input would otherwise never end.
const MAX_DEPTH: usize = 128;

/// Why a value does not match: where (a JSON pointer) and what.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Mismatch {
    pub(crate) at: String,
    pub(crate) problem: String,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let at = if self.at.is_empty() { "/" } else { &self.at };
        write!(f, "at {at}: {}", self.problem)
    }
}

/// Checks `value` against `schema`, resolving `$ref`s in `defs`.
pub(crate) fn check(
    schema: &Value,
    defs: &Map<String, Value>,
    value: &Value,
) -> Result<(), Mismatch> {
    Checker { defs }.check(schema, value, "", 0)
}

struct Checker<'a> {
    defs: &'a Map<String, Value>,
}

fn type_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn has_type(value: &Value, ty: &str) -> bool {
    let actual = type_of(value);
    actual == ty
        || (ty == "number" && actual == "integer")
        || (ty == "integer" && value.as_f64().is_some_and(|f| f.fract() == 0.0))
}

/// A short rendering of `value` for messages.
fn show(value: &Value) -> String {
    let s = value.to_string();
    if s.chars().count() > 40 {
        format!("{}…", s.chars().take(40).collect::<String>())
    } else {
        s
    }
}

fn escape_pointer(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

impl Checker<'_> {
    fn fail(at: &str, problem: String) -> Result<(), Mismatch> {
        Err(Mismatch {
            at: at.to_owned(),
            problem,
        })
    }

    fn check(&self, schema: &Value, value: &Value, at: &str, depth: usize) -> Result<(), Mismatch> {
        if depth > MAX_DEPTH {
            return Self::fail(
                at,
                "the schema nests deeper than this checker follows".into(),
            );
        }
        let schema = match schema {
            Value::Bool(true) => return Ok(()),
            Value::Bool(false) => return Self::fail(at, "no value is allowed here".into()),
            Value::Object(o) => o,
            _ => return Ok(()),
        };
        if let Some(Value::String(reference)) = schema.get("$ref") {
            let name = reference
                .strip_prefix("#/$defs/")
                .or_else(|| reference.strip_prefix("#/definitions/"));
            match name.and_then(|n| self.defs.get(n)) {
                Some(target) => self.check(target, value, at, depth + 1)?,
                None => {
                    return Self::fail(
                        at,
                        format!(
                            "the schema refers to {reference}, which the listing does not define"
                        ),
                    );
                }
            }
        }
        self.check_type(schema, value, at)?;
        if let Some(Value::Array(options)) = schema.get("enum")
            && !options.contains(value)
        {
            let options: Vec<String> = options.iter().map(show).collect();
            return Self::fail(
                at,
                format!(
                    "expected one of {}, got {}",
                    options.join(", "),
                    show(value)
                ),
            );
        }
        if let Some(expected) = schema.get("const")
            && expected != value
        {
            return Self::fail(
                at,
                format!("expected {}, got {}", show(expected), show(value)),
            );
        }
        self.check_combinators(schema, value, at, depth)?;
        match value {
            Value::Object(object) => self.check_object(schema, object, at, depth),
            Value::Array(items) => self.check_array(schema, items, at, depth),
            Value::Number(_) => Self::check_number(schema, value, at),
            Value::String(s) => Self::check_string(schema, s, at),
            _ => Ok(()),
        }
    }

    fn check_type(
        &self,
        schema: &Map<String, Value>,
        value: &Value,
        at: &str,
    ) -> Result<(), Mismatch> {
        let allowed: Vec<&str> = match schema.get("type") {
            Some(Value::String(t)) => vec![t.as_str()],
            Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
            _ => return Ok(()),
        };
        if allowed.iter().any(|t| has_type(value, t)) {
            return Ok(());
        }
        Self::fail(
            at,
            format!(
                "expected {}, got {} {}",
                allowed.join(" or "),
                type_of(value),
                show(value)
            ),
        )
    }

    fn check_combinators(
        &self,
        schema: &Map<String, Value>,
        value: &Value,
        at: &str,
        depth: usize,
    ) -> Result<(), Mismatch> {
        if let Some(Value::Array(all)) = schema.get("allOf") {
            for s in all {
                self.check(s, value, at, depth + 1)?;
            }
        }
        for (keyword, exactly_one) in [("anyOf", false), ("oneOf", true)] {
            let Some(Value::Array(options)) = schema.get(keyword) else {
                continue;
            };
            let mut first_miss = None;
            let mut matched = 0;
            for s in options {
                match self.check(s, value, at, depth + 1) {
                    Ok(()) => matched += 1,
                    Err(e) => {
                        first_miss.get_or_insert(e);
                    }
                }
            }
            if matched == 0 {
                let why = first_miss.map_or_else(String::new, |m| format!(" (the first: {m})"));
                return Self::fail(
                    at,
                    format!(
                        "{} matches none of the {} alternatives{why}",
                        show(value),
                        options.len()
                    ),
                );
            }
            if exactly_one && matched > 1 {
                return Self::fail(
                    at,
                    format!(
                        "{} matches {matched} alternatives where one is allowed",
                        show(value)
                    ),
                );
            }
        }
        if let Some(not) = schema.get("not")
            && self.check(not, value, at, depth + 1).is_ok()
        {
            return Self::fail(at, format!("{} is not allowed here", show(value)));
        }
        Ok(())
    }

    fn check_object(
        &self,
        schema: &Map<String, Value>,
        object: &Map<String, Value>,
        at: &str,
        depth: usize,
    ) -> Result<(), Mismatch> {
        if let Some(Value::Array(required)) = schema.get("required") {
            for name in required.iter().filter_map(Value::as_str) {
                if !object.contains_key(name) {
                    return Self::fail(at, format!("missing field {name:?}"));
                }
            }
        }
        let properties = schema.get("properties").and_then(Value::as_object);
        for (key, field) in object {
            let here = format!("{at}/{}", escape_pointer(key));
            match properties.and_then(|p| p.get(key)) {
                Some(s) => self.check(s, field, &here, depth + 1)?,
                None => match schema.get("additionalProperties") {
                    Some(Value::Bool(false)) => {
                        let known: Vec<&str> = properties
                            .map(|p| p.keys().map(String::as_str).collect())
                            .unwrap_or_default();
                        return Self::fail(
                            at,
                            format!(
                                "unknown field {key:?} (expected {})",
                                if known.is_empty() {
                                    "none".to_owned()
                                } else {
                                    known.join(", ")
                                }
                            ),
                        );
                    }
                    Some(s @ Value::Object(_)) => self.check(s, field, &here, depth + 1)?,
                    _ => {}
                },
            }
        }
        Ok(())
    }

    fn check_array(
        &self,
        schema: &Map<String, Value>,
        items: &[Value],
        at: &str,
        depth: usize,
    ) -> Result<(), Mismatch> {
        let len = items.len() as u64;
        if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
            && len < min
        {
            return Self::fail(at, format!("expected at least {min} items, got {len}"));
        }
        if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
            && len > max
        {
            return Self::fail(at, format!("expected at most {max} items, got {len}"));
        }
        let prefix = schema
            .get("prefixItems")
            .and_then(Value::as_array)
            .map_or(&[][..], Vec::as_slice);
        for (i, item) in items.iter().enumerate() {
            let here = format!("{at}/{i}");
            match prefix.get(i) {
                Some(s) => self.check(s, item, &here, depth + 1)?,
                None => {
                    if let Some(s) = schema.get("items") {
                        self.check(s, item, &here, depth + 1)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn check_number(schema: &Map<String, Value>, value: &Value, at: &str) -> Result<(), Mismatch> {
        let Some(n) = value.as_f64() else {
            return Ok(());
        };
        let bound = |k: &str| schema.get(k).and_then(Value::as_f64);
        if let Some(min) = bound("minimum")
            && n < min
        {
            return Self::fail(at, format!("expected at least {min}, got {}", show(value)));
        }
        if let Some(max) = bound("maximum")
            && n > max
        {
            return Self::fail(at, format!("expected at most {max}, got {}", show(value)));
        }
        if let Some(min) = bound("exclusiveMinimum")
            && n <= min
        {
            return Self::fail(at, format!("expected more than {min}, got {}", show(value)));
        }
        if let Some(max) = bound("exclusiveMaximum")
            && n >= max
        {
            return Self::fail(at, format!("expected less than {max}, got {}", show(value)));
        }
        Ok(())
    }

    fn check_string(schema: &Map<String, Value>, s: &str, at: &str) -> Result<(), Mismatch> {
        let len = s.chars().count() as u64;
        if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
            && len < min
        {
            return Self::fail(at, format!("expected at least {min} characters, got {len}"));
        }
        if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
            && len > max
        {
            return Self::fail(at, format!("expected at most {max} characters, got {len}"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn defs() -> Map<String, Value> {
        json!({
            "Message": {
                "type": "object",
                "properties": {
                    "room": {"type": "string"},
                    "text": {"type": "string", "maxLength": 5},
                    "tags": {"type": "array", "items": {"$ref": "#/$defs/Tag"}},
                    "count": {"type": "integer", "format": "uint32", "minimum": 0},
                    "reply": {"anyOf": [{"$ref": "#/$defs/Message"}, {"type": "null"}]}
                },
                "required": ["room", "text"],
                "additionalProperties": false
            },
            "Tag": {"type": "string", "enum": ["a", "b"]},
            "Pair": {"type": "array", "prefixItems": [{"type": "string"}, {"type": "number"}], "minItems": 2, "maxItems": 2},
            "Kind": {"oneOf": [{"const": "x"}, {"type": "object", "properties": {"y": {"type": "boolean"}}, "required": ["y"]}]},
            "Loop": {"$ref": "#/$defs/Loop"}
        })
        .as_object()
        .unwrap()
        .clone()
    }

    fn check_as(name: &str, value: Value) -> Result<(), String> {
        let schema = json!({"$ref": format!("#/$defs/{name}")});
        check(&schema, &defs(), &value).map_err(|m| m.to_string())
    }

    #[test]
    fn accepts_what_the_schema_allows() {
        let ok = json!({"room": "a", "text": "hi", "tags": ["a", "b"], "count": 3,
                        "reply": {"room": "b", "text": "yo", "reply": null}});
        assert_eq!(check_as("Message", ok), Ok(()));
        assert_eq!(check_as("Pair", json!(["x", 1.5])), Ok(()));
        assert_eq!(check_as("Kind", json!("x")), Ok(()));
        assert_eq!(check_as("Kind", json!({"y": true})), Ok(()));
        assert_eq!(check(&json!(true), &defs(), &json!(1)), Ok(()));
        // Unknown keywords are ignored.
        assert_eq!(
            check(&json!({"pattern": "^a$"}), &defs(), &json!("b")),
            Ok(())
        );
    }

    #[test]
    fn says_where_and_why_a_value_does_not_match() {
        let cases = [
            (
                "Message",
                json!({"room": 3, "text": "hi"}),
                "at /room: expected string, got integer 3",
            ),
            (
                "Message",
                json!({"room": "a"}),
                "at /: missing field \"text\"",
            ),
            (
                "Message",
                json!({"room": "a", "text": "hi", "colour": 1}),
                "at /: unknown field \"colour\" (expected count, reply, room, tags, text)",
            ),
            (
                "Message",
                json!({"room": "a", "text": "toolong"}),
                "at /text: expected at most 5 characters, got 7",
            ),
            (
                "Message",
                json!({"room": "a", "text": "", "tags": ["c"]}),
                "at /tags/0: expected one of \"a\", \"b\", got \"c\"",
            ),
            (
                "Message",
                json!({"room": "a", "text": "", "count": -1}),
                "at /count: expected at least 0, got -1",
            ),
            (
                "Message",
                json!({"room": "a", "text": "", "count": 1.5}),
                "at /count: expected integer, got number 1.5",
            ),
            ("Message", json!([]), "at /: expected object, got array []"),
            (
                "Pair",
                json!(["x"]),
                "at /: expected at least 2 items, got 1",
            ),
            (
                "Pair",
                json!([1, 1]),
                "at /0: expected string, got integer 1",
            ),
            (
                "Kind",
                json!({"y": 1}),
                "at /: {\"y\":1} matches none of the 2 alternatives (the first: at /: expected \"x\", got {\"y\":1})",
            ),
            (
                "Nope",
                json!(1),
                "at /: the schema refers to #/$defs/Nope, which the listing does not define",
            ),
            (
                "Loop",
                json!(1),
                "at /: the schema nests deeper than this checker follows",
            ),
        ];
        for (name, value, expected) in cases {
            assert_eq!(
                check_as(name, value.clone()),
                Err(expected.to_owned()),
                "{name} {value}"
            );
        }
    }
}
