//! WebSocket and HTTP options of `gotalk serve --ws` and `--http`: where to
//! listen, the mount path and the admitted origins.
//!
//! Everything WebSocket (the HTTP server, origin policy, capability
//! negotiation, message limits, the browser client) is gotalk-peer's
//! `WsListener`, served by the same server as the TCP listener (see
//! [`crate::server`]).

use std::path::PathBuf;

use gotalk_peer::{
    http::HttpConfig,
    ws::{OriginPolicy, WsConfig},
};

/// Where and how `gotalk serve --ws` listens.
#[derive(Clone, Debug)]
pub(crate) struct WsListen {
    /// `host:port` to bind.
    pub(crate) addr: String,
    /// The mount path: starts and ends with `/`.
    pub(crate) mount: String,
    /// Browser origins admitted besides same-origin pages.
    pub(crate) allow_origins: Vec<String>,
    /// `--static DIR` (canonical): files served beside the endpoint.
    pub(crate) static_dir: Option<PathBuf>,
}

impl WsListen {
    /// `host:port` on the default mount, same-origin policy.
    pub(crate) fn new(addr: impl Into<String>) -> Self {
        Self {
            addr: addr.into(),
            mount: DEFAULT_MOUNT.to_owned(),
            allow_origins: Vec::new(),
            static_dir: None,
        }
    }

    /// The URL form of the address to bind, for messages.
    pub(crate) fn describe(&self, tls: bool) -> String {
        format!("{}://{}{}", scheme(tls), self.addr, self.mount)
    }

    /// The listener's settings: mount path and origin policy.
    pub(crate) fn ws_config(&self) -> WsConfig {
        let origin = origin_policy(&self.allow_origins);
        WsConfig {
            mount: self.mount.clone(),
            origin,
            fallback: self.static_dir.clone().map(crate::static_files::router),
            ..WsConfig::default()
        }
    }
}

/// Same-origin pages, clients that send no `Origin`, and `allow_origins`.
fn origin_policy(allow_origins: &[String]) -> OriginPolicy {
    allow_origins
        .iter()
        .fold(OriginPolicy::same_origin(), |policy, origin| {
            policy.allow(origin)
        })
}

/// Where and how `gotalk serve --http` listens: the operations as plain
/// HTTP calls, `POST {mount}call/OP` and `POST {mount}notify/NAME`.
#[derive(Clone, Debug)]
pub(crate) struct HttpListen {
    /// `host:port` to bind.
    pub(crate) addr: String,
    /// The mount path (`--ws-path`): starts and ends with `/`.
    pub(crate) mount: String,
    /// Browser origins admitted besides same-origin pages
    /// (`--ws-allow-origin`, the same policy as WebSocket's).
    pub(crate) allow_origins: Vec<String>,
}

impl HttpListen {
    /// The URL form of the address to bind, for messages.
    pub(crate) fn describe(&self) -> String {
        format!("http://{}{}", self.addr, self.mount)
    }

    /// The endpoint's settings: mount path and origin policy.
    pub(crate) fn http_config(&self) -> HttpConfig {
        HttpConfig::default()
            .mount(self.mount.clone())
            .origin(origin_policy(&self.allow_origins))
    }
}

/// The default mount path, as gotalk's.
pub(crate) const DEFAULT_MOUNT: &str = "/gotalk/";

fn scheme(tls: bool) -> &'static str {
    if tls { "wss" } else { "ws" }
}

/// Checks a `--ws-path`: absolute, plain characters, and ending in `/` (one
/// is added when missing).
pub(crate) fn parse_mount(s: &str) -> Result<String, String> {
    if !s.starts_with('/') {
        return Err(format!("{s:?} must start with '/', as in /gotalk/"));
    }
    if s.contains("//") {
        return Err(format!("{s:?} has an empty path segment"));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "/-._~".contains(*c)))
    {
        return Err(format!(
            "{s:?} contains {c:?}: use letters, digits, '-', '.', '_', '~' and '/'"
        ));
    }
    Ok(if s.ends_with('/') {
        s.to_owned()
    } else {
        format!("{s}/")
    })
}

/// Checks a `--ws-allow-origin`: `scheme://host[:port]`, as browsers send it.
pub(crate) fn parse_origin(s: &str) -> Result<String, String> {
    match s.split_once("://") {
        Some((scheme, host))
            if !scheme.is_empty()
                && !host.is_empty()
                && !host.trim_end_matches('/').contains('/')
                && !s.contains(char::is_whitespace) =>
        {
            Ok(s.to_owned())
        }
        _ => Err(format!(
            "{s:?} is not an origin: write it as browsers send it, scheme://host[:port] \
             (e.g. https://app.example.com or http://localhost:3000)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts() {
        assert_eq!(parse_mount("/gotalk/").unwrap(), "/gotalk/");
        assert_eq!(parse_mount("/api/v1").unwrap(), "/api/v1/");
        assert_eq!(parse_mount("/").unwrap(), "/");
        for bad in ["gotalk/", "/a//b/", "/{x}/", "/*/", "/a b/", "/a?b/", ""] {
            assert!(parse_mount(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn origins() {
        assert!(parse_origin("https://app.example.com").is_ok());
        assert!(parse_origin("http://localhost:3000").is_ok());
        assert!(parse_origin("http://localhost:3000/").is_ok());
        for bad in ["app.example.com", "https://", "https://a/b", "://x"] {
            assert!(parse_origin(bad).is_err(), "{bad:?}");
        }
    }
}
