//! The dashboard at `/ui/`: a few plain ES modules and a stylesheet, embedded in the binary (no build step, works
//! offline), served without authentication — they hold no data; the page asks for the cluster's token and sends it
//! with every API request it makes, like any other client — under a Content-Security-Policy that allows only this
//! server's own scripts, styles and API.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};

/// Each asset: its name under `/ui/`, media type and content.
const ASSETS: &[(&str, &str, &str)] = &[
    ("index.html", "text/html; charset=utf-8", include_str!("../ui/index.html")),
    ("main.js", "text/javascript; charset=utf-8", include_str!("../ui/main.js")),
    ("app.js", "text/javascript; charset=utf-8", include_str!("../ui/app.js")),
    ("api.js", "text/javascript; charset=utf-8", include_str!("../ui/api.js")),
    ("style.css", "text/css; charset=utf-8", include_str!("../ui/style.css")),
    ("favicon.svg", "image/svg+xml", include_str!("../ui/favicon.svg")),
];

/// What the page may load and talk to: this server only; no inline script, no framing, no plugins.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                      connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// `GET /ui`: to `/ui/`, so the modules' relative paths resolve.
pub async fn root() -> Redirect {
    Redirect::permanent("/ui/")
}

/// `GET /ui/`.
pub async fn index() -> Response {
    asset("index.html")
}

/// `GET /ui/{file}`.
pub async fn file(Path(name): Path<String>) -> Response {
    asset(&name)
}

/// Whether `path` is the dashboard's (served to anyone: the assets are public, the data behind the token), or the
/// icon a browser asks the server's root for (`/favicon.ico`, answered 404 whoever asks: the page names its own).
#[must_use]
pub fn is_ui(path: &str) -> bool {
    path == "/ui" || path.starts_with("/ui/") || path == "/favicon.ico"
}

fn asset(name: &str) -> Response {
    let Some((_, media_type, body)) = ASSETS.iter().find(|(n, _, _)| *n == name) else {
        return (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "no such file in the dashboard\n",
        )
            .into_response();
    };
    let mut response = (*body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(media_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_module_the_page_imports_is_served() {
        let mut imported = vec!["main.js".to_owned(), "style.css".to_owned()];
        for (_, _, body) in ASSETS {
            for line in body.lines() {
                if let Some(rest) = line
                    .trim()
                    .strip_prefix("} from \"./")
                    .or_else(|| line.trim().strip_prefix("import { start } from \"./"))
                {
                    imported.push(rest.trim_end_matches("\";").to_owned());
                }
            }
        }
        for name in imported {
            assert!(ASSETS.iter().any(|(n, _, _)| *n == name), "{name} is imported but not served");
        }
        assert!(!is_ui("/uix") && is_ui("/ui") && is_ui("/ui/app.js"));
    }
}
