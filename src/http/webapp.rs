//! The web app (`web/`, built by Vite into `http.web_root`): its pages at `/`, `/watch/{id}`,
//! `/embed/{id}`, `/clip/{id}`, `/replay/{id}`, `/dashboard` and `/golive` all answer the app's `index.html`, which picks the page from
//! the path. Hashed assets under `/assets/` are cached for a year; `index.html` is revalidated
//! so a rebuilt app reaches browsers at once.
//!
//! Framing: `/watch/` and `/embed/` may be framed by any site (embedding is the point); the
//! streams page and the dashboard may not, so the dashboard cannot be clickjacked. Every page
//! carries a Content-Security-Policy that allows only this origin's scripts — nothing is
//! fetched from a CDN.

use std::path::PathBuf;

use actix_files::{Files, NamedFile};
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::DefaultHeaders;
use actix_web::{web, HttpRequest, HttpResponse};

/// Where the built app is.
#[derive(Debug, Clone)]
pub struct WebRoot(pub PathBuf);

impl WebRoot {
    /// Whether the app has been built there (`make web`).
    pub fn is_built(&self) -> bool {
        self.0.join("index.html").is_file()
    }
}

const ASSET_CACHE: &str = "public, max-age=31536000, immutable";
const PAGE_CACHE: &str = "no-cache";

/// The policy for a page; `frame_ancestors` is `*` or `'none'`.
fn content_security_policy(frame_ancestors: &str) -> String {
    format!(
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
         img-src 'self' data: blob:; media-src 'self' blob:; connect-src 'self'; \
         worker-src 'self' blob:; object-src 'none'; base-uri 'none'; form-action 'self'; \
         frame-ancestors {frame_ancestors}"
    )
}

/// Whether a page may be shown inside another site's `<iframe>`.
fn embeddable(path: &str) -> bool {
    path.starts_with("/watch/") || path.starts_with("/embed/")
}

async fn page(request: HttpRequest, root: web::Data<WebRoot>) -> HttpResponse {
    let index = root.0.join("index.html");
    let file = match NamedFile::open_async(&index).await {
        Ok(file) => file,
        Err(_) => {
            return HttpResponse::ServiceUnavailable()
                .content_type("text/plain; charset=utf-8")
                .body(format!(
                    "Strata's web app is not built at {}: run `make web` (or `make run`).\n",
                    root.0.display()
                ))
        }
    };
    let mut response = file
        .use_last_modified(true)
        .prefer_utf8(true)
        .into_response(&request);
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(PAGE_CACHE));
    let (ancestors, deny) = if embeddable(request.path()) {
        ("*", false)
    } else {
        ("'none'", true)
    };
    if let Ok(value) = content_security_policy(ancestors).parse() {
        headers.insert(header::CONTENT_SECURITY_POLICY, value);
    }
    if deny {
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    response
}

async fn favicon(request: HttpRequest, root: web::Data<WebRoot>) -> HttpResponse {
    match NamedFile::open_async(root.0.join("favicon.svg")).await {
        Ok(file) => file.into_response(&request),
        Err(_) => HttpResponse::NotFound().finish(),
    }
}

pub fn configure(root: &WebRoot) -> impl FnOnce(&mut web::ServiceConfig) {
    let root = root.clone();
    move |cfg| {
        cfg.app_data(web::Data::new(root.clone()))
            .service(
                web::scope("/assets")
                    .wrap(
                        DefaultHeaders::new()
                            .add((header::CACHE_CONTROL, ASSET_CACHE))
                            .add((header::X_CONTENT_TYPE_OPTIONS, "nosniff")),
                    )
                    .service(Files::new("", root.0.join("assets"))),
            )
            .route("/favicon.svg", web::get().to(favicon))
            .route("/", web::get().to(page))
            .route("/dashboard", web::get().to(page))
            .route("/golive", web::get().to(page))
            .route("/watch/{playback_id}", web::get().to(page))
            .route("/embed/{playback_id}", web::get().to(page))
            .route("/clip/{clip_id}", web::get().to(page))
            .route("/replay/{recording_id}", web::get().to(page));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_player_pages_may_be_framed() {
        assert!(embeddable("/watch/abc"));
        assert!(embeddable("/embed/abc"));
        assert!(!embeddable("/dashboard"));
        assert!(!embeddable("/"));
        assert!(content_security_policy("'none'").ends_with("frame-ancestors 'none'"));
    }
}
