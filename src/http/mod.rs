//! The HTTP origin (actix-web): one `configure` per area. Playback is public with open CORS
//! (no credentials); `/healthz` answers for load balancers.

pub mod playback;

use std::sync::Arc;

use actix_web::{web, App, HttpResponse, HttpServer};
use object_store::ObjectStore;

pub struct HttpState {
    pub store: Arc<dyn ObjectStore>,
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok")
}

/// Builds the server on an already-bound listener; the caller runs and stops it.
pub fn server(
    listener: std::net::TcpListener,
    state: web::Data<HttpState>,
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
            .route("/healthz", web::get().to(healthz))
            .service(web::scope("").wrap(cors).configure(playback::configure))
    })
    .workers(2)
    .disable_signals()
    .listen(listener)?
    .run();
    Ok(server)
}
