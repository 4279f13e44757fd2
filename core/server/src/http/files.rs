//! `[[static]]` routes: files of a directory under a URL prefix, with
//! content types by extension. Paths are decoded once and checked segment
//! by segment: `..`, `.`-hidden names, backslashes and NUL (encoded or not)
//! are 404, so nothing outside the directory is reachable.

use super::{ApiError, Body};
use crate::pipeline::StaticDir;
use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION};
use http::{Response, StatusCode};
use http_body_util::Full;
use std::path::PathBuf;

/// The static route serving `path`, if any (longest prefix first).
pub fn find<'a>(statics: &'a [StaticDir], path: &str) -> Option<&'a StaticDir> {
    statics.iter().find(|s| {
        path.strip_prefix(&s.path)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    })
}

/// Serves `path` (a URL path under `route.path`) from the route's directory.
pub async fn serve(route: &StaticDir, path: &str, head: bool) -> Result<Response<Body>, ApiError> {
    let rest = path.get(route.path.len()..).unwrap_or("");
    if rest.is_empty() {
        // `/app` → `/app/`, so relative links in the page resolve inside it.
        let mut resp = Response::new(Body::Left(Full::new(Bytes::new())));
        *resp.status_mut() = StatusCode::MOVED_PERMANENTLY;
        if let Ok(v) = format!("{}/", route.path).parse() {
            resp.headers_mut().insert(LOCATION, v);
        }
        return Ok(resp);
    }
    let not_found = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no file at {path}"),
        )
    };
    let file = resolve(route, rest).ok_or_else(not_found)?;
    let bytes = match tokio::fs::read(&file).await {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(not_found()),
        // A directory without an index, or unreadable.
        Err(_) => return Err(not_found()),
    };
    let len = bytes.len();
    let body = Body::Left(Full::new(if head {
        Bytes::new()
    } else {
        Bytes::from(bytes)
    }));
    let mut resp = Response::new(body);
    let headers = resp.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        http::HeaderValue::from_static(content_type(&file)),
    );
    headers.insert(CACHE_CONTROL, http::HeaderValue::from_static("no-cache"));
    headers.insert(http::header::CONTENT_LENGTH, len.into());
    headers.insert(
        "x-content-type-options",
        http::HeaderValue::from_static("nosniff"),
    );
    Ok(resp)
}

/// The file for the part of the URL path after the prefix, or `None` when
/// any segment could leave the directory or is hidden.
fn resolve(route: &StaticDir, rest: &str) -> Option<PathBuf> {
    let decoded = percent_encoding::percent_decode_str(rest)
        .decode_utf8()
        .ok()?;
    let mut file = route.dir.clone();
    for seg in decoded.split('/').filter(|s| !s.is_empty()) {
        if seg.starts_with('.') || seg.contains(['\\', '\0', ':']) {
            return None;
        }
        file.push(seg);
    }
    if decoded.ends_with('/') || file == route.dir || file.is_dir() {
        file.push(&route.index);
    }
    Some(file)
}

/// Content type by extension; unknown ones are served as bytes.
fn content_type(file: &std::path::Path) -> &'static str {
    let ext = file
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json" | "map") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("webp") => "image/webp",
        Some("ico") => "image/x-icon",
        Some("txt" | "md") => "text/plain; charset=utf-8",
        Some("wasm") => "application/wasm",
        Some("woff2") => "font/woff2",
        Some("woff") => "font/woff",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traversal_and_hidden_names_resolve_to_nothing() {
        let route = StaticDir {
            path: "/app".into(),
            dir: PathBuf::from("/srv/www"),
            index: "index.html".into(),
        };
        for bad in [
            "/../etc/passwd",
            "/%2e%2e/etc/passwd",
            "/a/%2E%2E/%2e%2e/x",
            "/.git/config",
            "/a\\..\\b",
            "/%00",
            "/a/..%2f..%2fx",
            "/%c0%ae%c0%ae/x",
        ] {
            assert_eq!(resolve(&route, bad), None, "{bad}");
        }
        assert_eq!(
            resolve(&route, "/js/app.js"),
            Some(PathBuf::from("/srv/www/js/app.js"))
        );
        assert_eq!(
            resolve(&route, "/"),
            Some(PathBuf::from("/srv/www/index.html"))
        );
        assert_eq!(
            resolve(&route, "/a%20b.txt"),
            Some(PathBuf::from("/srv/www/a b.txt"))
        );
        assert_eq!(
            content_type(std::path::Path::new("x.MJS")),
            "text/javascript; charset=utf-8"
        );
        assert!(find(std::slice::from_ref(&route), "/application").is_none());
        assert!(find(std::slice::from_ref(&route), "/app/x").is_some());
    }
}
