//! `gotalk serve --ws … --static DIR`: the files of a directory, served by
//! the WebSocket listener's HTTP server beside the endpoint, so that a page
//! and the endpoint it connects to are same-origin.
//!
//! Only files under the directory are served: the URL path is decoded and
//! split into segments, and `..`, `.`, hidden names (`.git`), backslashes and
//! NULs are refused; the file found is resolved (symbolic links followed)
//! and must still lie under the directory.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use axum::{
    Router,
    body::Body,
    extract::Request,
    http::{Method, StatusCode, header},
    response::Response,
};

/// Routes that serve the files under `root` (already canonical) for every
/// path they are given.
pub(crate) fn router(root: PathBuf) -> Router {
    let root = Arc::new(root);
    Router::new().fallback(move |req: Request| {
        let root = Arc::clone(&root);
        async move { serve(&root, req.method(), req.uri().path()).await }
    })
}

/// Checks `--static DIR`: an existing directory; returns its canonical path.
pub(crate) fn check_dir(dir: &Path) -> Result<PathBuf, String> {
    let canonical = dir
        .canonicalize()
        .map_err(|e| format!("cannot use --static {}: {e}", dir.display()))?;
    if !canonical.is_dir() {
        return Err(format!(
            "cannot use --static {}: not a directory",
            dir.display()
        ));
    }
    Ok(canonical)
}

async fn serve(root: &Path, method: &Method, path: &str) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return Response::builder()
            .status(StatusCode::METHOD_NOT_ALLOWED)
            .header(header::ALLOW, "GET, HEAD")
            .body(Body::empty())
            .expect("static response");
    }
    let Some(relative) = relative_path(path) else {
        return not_found();
    };
    let mut file = root.join(&relative);
    if tokio::fs::metadata(&file).await.is_ok_and(|m| m.is_dir()) {
        if !path.ends_with('/') {
            // Relative links in the index page resolve against the directory.
            return Response::builder()
                .status(StatusCode::MOVED_PERMANENTLY)
                .header(header::LOCATION, format!("{path}/"))
                .body(Body::empty())
                .expect("static response");
        }
        file.push("index.html");
    }
    // Symbolic links may point anywhere: what is served must lie under root.
    let Ok(resolved) = tokio::fs::canonicalize(&file).await else {
        return not_found();
    };
    if !resolved.starts_with(root) {
        return not_found();
    }
    let Ok(bytes) = tokio::fs::read(&resolved).await else {
        return not_found();
    };
    let builder = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type(&resolved))
        .header(header::CONTENT_LENGTH, bytes.len())
        .header(header::CACHE_CONTROL, "no-cache")
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        Body::from(bytes)
    };
    builder.body(body).expect("static response")
}

fn not_found() -> Response {
    Response::builder()
        .status(StatusCode::NOT_FOUND)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Body::from("not found\n"))
        .expect("static response")
}

/// The file path a URL path names under the root, or `None` when it is not
/// one that may be served.
fn relative_path(url_path: &str) -> Option<PathBuf> {
    let decoded = percent_decode(url_path)?;
    let mut out = PathBuf::new();
    for segment in decoded.split('/') {
        if segment.is_empty() {
            continue;
        }
        if segment.starts_with('.') || segment.contains(['\\', '\0']) {
            return None;
        }
        out.push(segment);
    }
    Some(out)
}

/// `%XX` escapes decoded; `None` for a malformed escape or non-UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The `Content-Type` of a file, by its extension.
fn content_type(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "txt" | "md" => "text/plain; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "ico" => "image/x-icon",
        "wasm" => "application/wasm",
        "woff2" => "font/woff2",
        "woff" => "font/woff",
        "xml" => "application/xml",
        "pdf" => "application/pdf",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_paths_under_the_root() {
        assert_eq!(relative_path("/"), Some(PathBuf::new()));
        assert_eq!(
            relative_path("/app/index.html"),
            Some(PathBuf::from("app/index.html"))
        );
        assert_eq!(relative_path("/a%20b.txt"), Some(PathBuf::from("a b.txt")));
        for bad in [
            "/../etc/passwd",
            "/a/../../x",
            "/%2e%2e/x",
            "/%2E%2E%2Fx",
            "/a/./b",
            "/.git/config",
            "/a%5c..%5cb",
            "/a%00b",
            "/%zz",
            "/%e2%28",
        ] {
            assert_eq!(relative_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn content_types() {
        assert_eq!(
            content_type(Path::new("x/INDEX.HTML")),
            "text/html; charset=utf-8"
        );
        assert_eq!(
            content_type(Path::new("app.mjs")),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(content_type(Path::new("a.wasm")), "application/wasm");
        assert_eq!(content_type(Path::new("noext")), "application/octet-stream");
    }
}
