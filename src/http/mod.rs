//! The HTTP origin (actix-web): one `configure` per area. Playback is public with open CORS
//! (no credentials); `/healthz` answers for load balancers; `/metrics` is Prometheus text;
//! `/api/v1` is the admin API (bearer token), with its events stream. Every request is counted
//! by route pattern and status. `/api/public` is the viewers' directory (no token, open CORS);
//! the web app's pages and assets are served from `http.web_root`; `/ingest/hls` takes HLS
//! pushed by encoders (`ingest::hls_push`); `/ingest/ws` takes a browser's recording over a
//! WebSocket (`ingest::ws`); `/ingest/device` is the devices' signaling socket
//! (`devices::signaling`).
//!
//! Connection policy (`http.*`): at most `http.max_connections` open connections (split evenly
//! between the workers, one per core; at the cap the server stops accepting and new clients
//! wait in the kernel's listen backlog); a new connection must send its request head within
//! `http.request_timeout` (else 408 and close); an idle kept-alive connection is closed after
//! `http.keep_alive`; a closing connection gets `DISCONNECT_TIMEOUT` to finish; up to
//! `LISTEN_BACKLOG` connections wait in the kernel while none is accepted. Half-closed
//! connections are not kept: a client's EOF ends its connection at once, so an event stream's
//! subscriber slot comes back as soon as its client leaves rather than at the next write.
//! Every connection is paced (`pacing`: `http.send_buffer`, `http.notsent_lowat`).

pub mod api;
pub mod clip_api;
pub mod cold;
pub mod counting;
pub mod device_api;
pub mod directory;
pub mod events;
pub mod low_latency;
pub mod pacing;
pub mod playback;
pub mod replay;
pub mod serve;
pub mod subscribers;
pub mod webapp;

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::KeepAlive;
use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpResponse, HttpServer};
use object_store::ObjectStore;

use crate::config::HttpSettings;

/// Worker threads serving HTTP, one per core this process may run on (its CPU affinity
/// counts: a server pinned to one core runs one worker, not two taking turns), at most
/// [`MAX_WORKERS`]; `http.max_connections` is divided between them.
fn workers() -> usize {
    std::thread::available_parallelism()
        .map_or(2, usize::from)
        .clamp(1, MAX_WORKERS)
}

const MAX_WORKERS: usize = 16;
/// Connections the kernel queues for us while we do not accept (at `http.max_connections`, or
/// in a burst); the kernel caps it at `net.core.somaxconn`. Past it new clients' SYNs are
/// dropped and retried by their TCP stack.
const LISTEN_BACKLOG: i32 = 1024;
/// How long a connection being closed may take to flush and shut down.
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(1);

pub struct HttpState {
    pub store: Arc<dyn ObjectStore>,
    /// Live broadcasts of this node: low-latency playlists are answered from them.
    pub edges: crate::edge::LiveEdges,
    /// Renders the process's metrics (`None` when no recorder is installed, e.g. in tests).
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// The built web app (`http.web_root`).
    pub web_root: webapp::WebRoot,
    /// Segment requests are redirected here (`storage.public_base_url`, no trailing slash).
    pub segment_base_url: Option<String>,
    /// Open event streams under `http.max_event_subscribers` and `…_per_ip`.
    pub subscribers: subscribers::Subscribers,
    /// Live objects answered from memory (fed by the store's writes, see `hot`).
    pub hot: Arc<crate::hot::HotObjects>,
    /// The store's directory when it is on local disk: cold objects are mapped from there.
    pub local_root: Option<cold::LocalRoot>,
    /// Low-latency playlists rendered once per change of their broadcast's edge.
    pub rendered: low_latency::Rendered,
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

/// A non-blocking listener on `addr` whose kernel queue holds `LISTEN_BACKLOG` connections not
/// yet accepted (std's and tokio's `TcpListener::bind` allow 128). RTMP listens with it too.
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    #[cfg(unix)]
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Connections one worker may hold so that all workers together hold at most `total`
/// (rounded up to a multiple of the worker count).
fn per_worker(total: usize) -> usize {
    total.div_ceil(workers()).max(1)
}

/// The ingest endpoints served over HTTP, each `None` when disabled.
pub struct Ingests {
    pub hls_push: Option<web::Data<Arc<crate::ingest::hls_push::HlsPush>>>,
    pub ws: Option<web::Data<Arc<crate::ingest::ws::WsIngest>>>,
    pub devices: Option<web::Data<Arc<crate::devices::signaling::Signaling>>>,
}

/// Builds the server on an already-bound listener with the connection policy of `settings`;
/// the caller runs and stops it.
pub fn server(
    listener: std::net::TcpListener,
    settings: &HttpSettings,
    state: web::Data<HttpState>,
    api: web::Data<api::ApiState>,
    ingests: Ingests,
) -> std::io::Result<actix_web::dev::Server> {
    let Ingests {
        hls_push,
        ws,
        devices,
    } = ingests;
    let pacing = pacing::Pacing {
        send_buffer: settings.send_buffer,
        notsent_lowat: settings.notsent_lowat,
    };
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
            .wrap(from_fn(counting::count_request))
            .app_data(state.clone())
            .app_data(api.clone())
            .app_data(web::Data::new(counting::OriginCounters::new()))
            .configure(playback::configure_origin)
            .route("/healthz", web::get().to(healthz))
            .route("/metrics", web::get().to(metrics))
            .configure(api::configure)
            .configure(|cfg| {
                if let Some(push) = &hls_push {
                    cfg.app_data(push.clone());
                    crate::ingest::hls_push::configure(cfg);
                }
                if let Some(ws) = &ws {
                    cfg.app_data(ws.clone());
                    crate::ingest::ws::configure(cfg);
                }
                if let Some(devices) = &devices {
                    cfg.app_data(devices.clone());
                    crate::devices::signaling::configure(cfg);
                }
            })
            .configure(webapp::configure(&state.web_root))
            .service(
                web::scope("")
                    .wrap(cors)
                    .configure(replay::configure)
                    .configure(playback::configure)
                    .configure(directory::configure),
            )
    })
    .workers(workers())
    .max_connections(per_worker(settings.max_connections))
    .keep_alive(KeepAlive::from(Duration::from_secs_f64(
        settings.keep_alive,
    )))
    .client_request_timeout(Duration::from_secs_f64(settings.request_timeout))
    .client_disconnect_timeout(DISCONNECT_TIMEOUT)
    .h1_allow_half_closed(false)
    .on_connect(move |connection, data| {
        pacing.apply(connection);
        data.insert(pacing::OpenConnection::new());
    })
    .disable_signals()
    .listen(listener)?
    .run();
    Ok(server)
}

#[cfg(test)]
mod tests {
    use super::{per_worker, workers};

    #[test]
    fn the_connection_cap_is_split_between_workers_and_never_zero() {
        assert!(per_worker(10_000) * workers() >= 10_000);
        assert!(per_worker(10_000) * workers() < 10_000 + workers());
        assert_eq!(per_worker(1), 1);
        assert!(per_worker(7) * workers() >= 7);
    }
}
