//! The browser client, embedded and served under the WebSocket mount.

use std::{io::Write, sync::LazyLock};

use axum::{
    body::Body,
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    response::Response,
};
use bytes::Bytes;
use flate2::{Compression, write::GzEncoder};

/// The browser client (`gotalk.js`, an ES module), as served.
pub const GOTALK_JS: &str = include_str!("../../../js/gotalk.js");

/// Content type the client is served with.
const CONTENT_TYPE: &str = "text/javascript; charset=utf-8";

/// Browsers revalidate on every load (a 304 costs one round trip) so a new
/// server version is never hidden behind a stale cached client.
const CACHE_CONTROL: &str = "no-cache";

/// FNV-1a, 64 bits: stable across builds and Rust versions, computed at
/// compile time. Only used to tell versions of the file apart.
const fn fnv1a64(data: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < data.len() {
        hash ^= data[i] as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    hash
}

const JS_HASH: u64 = fnv1a64(GOTALK_JS.as_bytes());

struct Asset {
    etag: HeaderValue,
    etag_gzip: HeaderValue,
    gzip: Bytes,
}

static ASSET: LazyLock<Asset> = LazyLock::new(|| {
    let mut enc = GzEncoder::new(Vec::with_capacity(GOTALK_JS.len() / 3), Compression::best());
    enc.write_all(GOTALK_JS.as_bytes())
        .expect("writing to a Vec cannot fail");
    let gzip = enc.finish().expect("writing to a Vec cannot fail");
    let hex = format!("{JS_HASH:016x}");
    Asset {
        etag: HeaderValue::from_str(&format!("\"{hex}\"")).expect("hex is a valid header"),
        etag_gzip: HeaderValue::from_str(&format!("\"{hex}-gz\"")).expect("hex is a valid header"),
        gzip: Bytes::from(gzip),
    }
});

/// The entity tag of the uncompressed client, quotes included.
pub fn etag() -> &'static str {
    ASSET.etag.to_str().expect("ASCII")
}

/// True when `path` (of a request under the mount) asks for the client.
pub(crate) fn is_js_path(path: &str) -> bool {
    path.ends_with("/gotalk.js")
}

/// Whether `Accept-Encoding` allows gzip (RFC 9110 §12.5.3: `gzip`,
/// `x-gzip` or `*` with a non-zero quality).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    let mut gzip = None;
    let mut star = None;
    for value in headers.get_all(header::ACCEPT_ENCODING) {
        let Ok(value) = value.to_str() else { continue };
        for item in value.split(',') {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim();
            let q = parts
                .filter_map(|p| {
                    let (k, v) = p.split_once('=')?;
                    k.trim()
                        .eq_ignore_ascii_case("q")
                        .then(|| v.trim().parse::<f32>().ok())?
                })
                .next()
                .unwrap_or(1.0);
            if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
                gzip = Some(q > 0.0);
            } else if coding == "*" {
                star = Some(q > 0.0);
            }
        }
    }
    gzip.or(star).unwrap_or(false)
}

/// Whether `If-None-Match` names one of our tags (weak comparison).
fn not_modified(headers: &HeaderMap, asset: &Asset) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim())
        .any(|tag| {
            let tag = tag.strip_prefix("W/").unwrap_or(tag);
            tag == "*" || tag == asset.etag || tag == asset.etag_gzip
        })
}

/// Serves the client for a GET or HEAD request.
pub(crate) fn serve(method: &Method, headers: &HeaderMap) -> Response {
    let asset = &*ASSET;
    if method != Method::GET && method != Method::HEAD {
        return Response::builder()
            .status(StatusCode::METHOD_NOT_ALLOWED)
            .header(header::ALLOW, "GET, HEAD")
            .body(Body::empty())
            .expect("static response");
    }
    let gzip = accepts_gzip(headers);
    let etag = if gzip { &asset.etag_gzip } else { &asset.etag };
    let builder = Response::builder()
        .header(header::ETAG, etag.clone())
        .header(header::CACHE_CONTROL, CACHE_CONTROL)
        .header(header::VARY, "Accept-Encoding");
    if not_modified(headers, asset) {
        return builder
            .status(StatusCode::NOT_MODIFIED)
            .body(Body::empty())
            .expect("static response");
    }
    let body = if gzip {
        asset.gzip.clone()
    } else {
        Bytes::from_static(GOTALK_JS.as_bytes())
    };
    let builder = builder
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, CONTENT_TYPE)
        .header(header::CONTENT_LENGTH, body.len());
    let builder = if gzip {
        builder.header(header::CONTENT_ENCODING, "gzip")
    } else {
        builder
    };
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        Body::from(body)
    };
    builder.body(body).expect("static response")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn accept_encoding_rules() {
        assert!(!accepts_gzip(&headers(&[])));
        assert!(accepts_gzip(&headers(&[(
            "accept-encoding",
            "gzip, deflate, br"
        )])));
        assert!(accepts_gzip(&headers(&[(
            "accept-encoding",
            "br;q=1.0, GZIP;q=0.5"
        )])));
        assert!(!accepts_gzip(&headers(&[("accept-encoding", "gzip;q=0")])));
        assert!(!accepts_gzip(&headers(&[("accept-encoding", "identity")])));
        assert!(accepts_gzip(&headers(&[("accept-encoding", "*")])));
        assert!(!accepts_gzip(&headers(&[(
            "accept-encoding",
            "*, gzip;q=0"
        )])));
        assert!(accepts_gzip(&headers(&[("accept-encoding", "x-gzip")])));
    }

    #[test]
    fn if_none_match_rules() {
        let asset = &*ASSET;
        let tag = asset.etag.to_str().unwrap().to_owned();
        let mut h = HeaderMap::new();
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_str(&tag).unwrap());
        assert!(not_modified(&h, asset));
        h.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_str(&format!("\"other\", W/{tag}")).unwrap(),
        );
        assert!(not_modified(&h, asset));
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"other\""));
        assert!(!not_modified(&h, asset));
    }

    #[test]
    fn js_paths() {
        assert!(is_js_path("/gotalk/gotalk.js"));
        assert!(is_js_path("/gotalk/v1.2/gotalk.js"));
        assert!(!is_js_path("/gotalk/xgotalk.js"));
        assert!(!is_js_path("/gotalk/gotalk.js.map"));
    }

    #[test]
    fn gzip_round_trips() {
        use std::io::Read;
        let mut out = String::new();
        flate2::read::GzDecoder::new(&ASSET.gzip[..])
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, GOTALK_JS);
        assert!(ASSET.gzip.len() < GOTALK_JS.len());
    }
}
