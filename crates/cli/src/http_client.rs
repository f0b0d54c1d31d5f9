//! `gotalk request http://HOST:PORT/MOUNT/ OP PAYLOAD`: one call to the HTTP
//! endpoint of `gotalk serve --http` (gotalk-peer's `http` module), with
//! hyper's client.
//!
//! The statuses map back to what a gotalk call gives: 200 a result, 422 an
//! error result (401 and 403 too: an `Authorize` refusal, an error result
//! over gotalk), 404 an unknown operation (an error result over gotalk too),
//! 503 with `Retry-After` a retry result, retried up to `--max-attempts`.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Request, StatusCode, header};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};

use crate::{exit, text::escape_text};

/// What one call came to.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum HttpOutcome {
    /// `200`: the result.
    Result(Bytes),
    /// `422`, `401`, `403` or `404`: the error result's text.
    ErrorResult(Bytes),
    /// `503` on the last attempt: the retry result's text.
    RetryExhausted { attempts: u32, message: Bytes },
}

/// Why a call failed other than with an error result (exit code 2).
#[derive(Debug)]
pub(crate) enum HttpCallError {
    /// The request could not be sent or its answer read.
    Transport(String),
    /// A status the endpoint does not answer calls with (413, 403, 500, …).
    Status { status: StatusCode, body: Bytes },
    /// The result is over `--max-payload`.
    TooLarge { limit: u32 },
}

impl std::fmt::Display for HttpCallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Transport(e) => write!(f, "HTTP request failed: {e}"),
            Self::Status { status, body } => {
                write!(f, "HTTP {status}: {}", escape_text(body.trim_ascii_end()))
            }
            Self::TooLarge { limit } => {
                write!(
                    f,
                    "the result exceeds the {limit}-byte limit (--max-payload)"
                )
            }
        }
    }
}

impl std::error::Error for HttpCallError {}

/// The URL of `op` under the endpoint `base` (`http://HOST:PORT/MOUNT/`).
pub(crate) fn call_url(base: &str, op: &str) -> String {
    let slash = if base.ends_with('/') { "" } else { "/" };
    format!("{base}{slash}call/{}", encode_path(op))
}

/// Percent-encodes what may not stand in a path as is (`/` stays: the
/// server takes the rest of the path as the name).
fn encode_path(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for &b in name.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/!$&'()*+,;=:@".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Calls `op` at the endpoint `base`, retrying on `503` as asked by
/// `Retry-After` up to `max_attempts` attempts. With `trace`, prints each
/// request and status line to stderr.
pub(crate) async fn call(
    base: &str,
    op: &str,
    payload: Bytes,
    max_attempts: u32,
    max_payload: u32,
    trace: bool,
) -> Result<HttpOutcome, HttpCallError> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let url = call_url(base, op);
    let mut attempts = 0;
    loop {
        attempts += 1;
        let request = Request::post(&url)
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .body(Full::new(payload.clone()))
            .map_err(|e| HttpCallError::Transport(e.to_string()))?;
        if trace {
            eprintln!("-> POST {url} ({} bytes)", payload.len());
        }
        let response = client
            .request(request)
            .await
            .map_err(|e| HttpCallError::Transport(error_chain(&e)))?;
        let status = response.status();
        if trace {
            eprintln!("<- {status}");
        }
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let body = Limited::new(response.into_body(), max_payload as usize)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    HttpCallError::TooLarge { limit: max_payload }
                } else {
                    HttpCallError::Transport(e.to_string())
                }
            })?
            .to_bytes();
        match status {
            StatusCode::OK => return Ok(HttpOutcome::Result(body)),
            StatusCode::UNPROCESSABLE_ENTITY
            | StatusCode::UNAUTHORIZED
            | StatusCode::FORBIDDEN
            | StatusCode::NOT_FOUND => {
                return Ok(HttpOutcome::ErrorResult(body));
            }
            StatusCode::SERVICE_UNAVAILABLE if attempts < max_attempts => {
                let wait = Duration::from_secs(retry_after.unwrap_or(1));
                if trace {
                    eprintln!("   retrying in {wait:?}");
                }
                tokio::time::sleep(wait).await;
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                return Ok(HttpOutcome::RetryExhausted {
                    attempts,
                    message: body,
                });
            }
            status => return Err(HttpCallError::Status { status, body }),
        }
    }
}

/// An error and its sources, on one line (hyper's own message is terse).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The exit code and stderr line for an outcome other than a result.
pub(crate) fn report(outcome: &Result<HttpOutcome, HttpCallError>) -> Option<u8> {
    match outcome {
        Ok(HttpOutcome::Result(_)) => None,
        Ok(HttpOutcome::ErrorResult(text)) => {
            eprintln!(
                "gotalk: error result: {}",
                escape_text(text.trim_ascii_end())
            );
            Some(exit::FAILED)
        }
        Ok(HttpOutcome::RetryExhausted { attempts, message }) => {
            eprintln!(
                "gotalk: still asked to retry after {attempts} attempt(s): {}",
                escape_text(message)
            );
            Some(exit::FAILED)
        }
        Err(e) => {
            eprintln!("gotalk: {e}");
            Some(exit::TROUBLE)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_urls() {
        assert_eq!(
            call_url("http://h:1/gotalk/", "echo"),
            "http://h:1/gotalk/call/echo"
        );
        assert_eq!(
            call_url("http://h:1/api", "a b"),
            "http://h:1/api/call/a%20b"
        );
        assert_eq!(call_url("http://h:1/", "x/y%"), "http://h:1/call/x/y%25");
    }
}
