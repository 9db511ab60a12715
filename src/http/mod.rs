//! The HTTP origin (actix-web): one `configure` per area. Playback is public with open CORS
//! (no credentials); `/healthz` answers for load balancers; `/metrics` is Prometheus text;
//! `/api/v1` is the admin API (bearer token), with its events stream.

pub mod api;
pub mod events;
pub mod playback;

use std::sync::Arc;

use actix_web::{web, App, HttpResponse, HttpServer};
use object_store::ObjectStore;

pub struct HttpState {
    pub store: Arc<dyn ObjectStore>,
    /// Renders the process's metrics (`None` when no recorder is installed, e.g. in tests).
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok")
}

async fn metrics(state: web::Data<HttpState>) -> HttpResponse {
    match &state.metrics {
        Some(handle) => HttpResponse::Ok()
            .content_type("text/plain; version=0.0.4")
            .body(handle.render()),
        None => HttpResponse::NotFound().finish(),
    }
}

/// Builds the server on an already-bound listener; the caller runs and stops it.
pub fn server(
    listener: std::net::TcpListener,
    state: web::Data<HttpState>,
    api: web::Data<api::ApiState>,
) -> std::io::Result<actix_web::dev::Server> {
    let server = HttpServer::new(move || {
        let cors = actix_cors::Cors::default()
            .allow_any_origin()
            .send_wildcard()
            .allowed_methods(["GET", "HEAD", "OPTIONS"])
            .allowed_headers([
                actix_web::http::header::RANGE,
                actix_web::http::header::IF_NONE_MATCH,
            ])
            .expose_headers(["Content-Length", "Content-Range", "ETag"])
            .max_age(86_400);
        App::new()
            .app_data(state.clone())
            .app_data(api.clone())
            .route("/healthz", web::get().to(healthz))
            .route("/metrics", web::get().to(metrics))
            .configure(api::configure)
            .service(web::scope("").wrap(cors).configure(playback::configure))
    })
    .workers(2)
    .disable_signals()
    .listen(listener)?
    .run();
    Ok(server)
}
