//! [`TokenSource`]: where a WebSocket upgrade request carries its token.

use gotalk_peer::WebSocketInfo;

/// Where the hub looks for a token in a WebSocket upgrade request, in this
/// order: the `Authorization: Bearer <token>` header, a cookie, a query
/// parameter. Each place can be turned off.
///
/// The default looks at the header and at the query parameter `token`
/// (browsers cannot set headers on a WebSocket; note that a query string
/// may end up in access logs: a cookie, or the `auth` request, keep the
/// token out of them).
///
/// ```
/// use gotalk_hub::TokenSource;
/// let source = TokenSource::none().bearer(true).cookie("session");
/// # let _ = source;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSource {
    bearer: bool,
    cookie: Option<String>,
    query: Option<String>,
}

impl Default for TokenSource {
    fn default() -> Self {
        Self::none().bearer(true).query("token")
    }
}

impl TokenSource {
    /// Nowhere: tokens come only with the `auth` request.
    pub fn none() -> Self {
        Self {
            bearer: false,
            cookie: None,
            query: None,
        }
    }

    /// Whether to read `Authorization: Bearer <token>`.
    pub fn bearer(mut self, on: bool) -> Self {
        self.bearer = on;
        self
    }

    /// Reads the cookie `name`.
    pub fn cookie(mut self, name: impl Into<String>) -> Self {
        self.cookie = Some(name.into());
        self
    }

    /// Reads the query parameter `name` (percent-decoded).
    pub fn query(mut self, name: impl Into<String>) -> Self {
        self.query = Some(name.into());
        self
    }

    /// The token of an upgrade request, from the first place that has a
    /// non-empty one.
    pub fn token(&self, ws: &WebSocketInfo) -> Option<String> {
        let bearer = self
            .bearer
            .then(|| ws.header("authorization"))
            .flatten()
            .and_then(|v| {
                let (scheme, token) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .map(str::to_owned);
        let cookie = || {
            let name = self.cookie.as_deref()?;
            ws.cookie(name).map(str::to_owned)
        };
        let query = || {
            let name = self.query.as_deref()?;
            ws.query_param(name).map(percent_decode)
        };
        bearer
            .filter(|t| !t.is_empty())
            .or_else(|| cookie().filter(|t| !t.is_empty()))
            .or_else(|| query().filter(|t| !t.is_empty()))
    }
}

/// Decodes `%XX` escapes and `+` (a space, in query strings); a malformed
/// escape is kept as it is.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_decoded() {
        assert_eq!(percent_decode("a%2Eb.c"), "a.b.c");
        assert_eq!(percent_decode("a+b%20c"), "a b c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%41"), "A");
    }

    #[test]
    fn default_reads_the_header_and_the_token_parameter() {
        let d = TokenSource::default();
        assert!(d.bearer);
        assert_eq!(d.query.as_deref(), Some("token"));
        assert_eq!(d.cookie, None);
        assert_eq!(TokenSource::none().cookie("s").cookie.as_deref(), Some("s"));
    }
}
