//! Server-Sent Events: `GET /api/v1/events` streams the whole event bus to operators (JSON data,
//! `event: stream.live` etc.). The framing and keep-alive (a comment every 15 s, so idle
//! connections survive proxies) are shared with the public directory's events, and so are the
//! subscriber caps (`subscribers`): a stream's slot lives in its response body.

use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde::Serialize;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::{BroadcastStream, IntervalStream};

use super::api::ApiState;
use super::subscribers::{Slot, SubscribeError};
use super::HttpState;

const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// One SSE frame: `event: {name}` and the JSON of `data`.
pub fn frame(name: &str, data: &impl Serialize) -> Bytes {
    let data = serde_json::to_string(data).unwrap_or_else(|_| "{}".into());
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

/// The comment a subscriber that fell `missed` events behind gets instead of them.
pub fn lagged(missed: u64) -> Bytes {
    Bytes::from(format!(
        ": {missed} events skipped (this client fell behind)\n\n"
    ))
}

/// A slot under the subscriber caps for this request's client (its TCP peer), or why not
/// (its `response()` is the answer to send instead).
pub fn subscribe(req: &HttpRequest, http: &HttpState) -> Result<Slot, SubscribeError> {
    http.subscribers.acquire(req.peer_addr().map(|a| a.ip()))
}

/// An SSE response of `frames`, with keep-alive comments in between; `slot` is held until the
/// response body is dropped (the client left or the server stops).
pub fn response(frames: impl Stream<Item = Bytes> + 'static, slot: Slot) -> HttpResponse {
    let keep_alive = IntervalStream::new(tokio::time::interval(KEEP_ALIVE))
        .map(|_| Bytes::from_static(b": keep-alive\n\n"));
    let body = futures::stream::select(frames, keep_alive).map(move |frame| {
        // The closure owns the slot, so the slot lives exactly as long as the body.
        let _held = &slot;
        Ok::<_, actix_web::Error>(frame)
    });
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body)
}

#[utoipa::path(get, path = "/api/v1/events",
    responses((status = 200, content_type = "text/event-stream",
        description = "Server-Sent Events: `stream.live`, `stream.ended`, `session.stats` (every second per live broadcast), `segment.published`, `device.online`, `device.offline`, `device.streaming`, `device.status` (each ping a device answers, with its round-trip time)"),
        (status = 429, description = "this client address has `http.max_event_subscribers_per_ip` event streams open (`Retry-After`)"),
        (status = 503, description = "the server has `http.max_event_subscribers` event streams open (`Retry-After`)")),
    security(("bearer" = [])))]
pub async fn events(
    req: HttpRequest,
    state: web::Data<ApiState>,
    http: web::Data<HttpState>,
) -> HttpResponse {
    let slot = match subscribe(&req, &http) {
        Ok(slot) => slot,
        Err(refused) => return refused.response(),
    };
    response(
        BroadcastStream::new(state.events.subscribe()).map(|item| match item {
            Ok(event) => frame(event.name(), &event),
            Err(BroadcastStreamRecvError::Lagged(missed)) => lagged(missed),
        }),
        slot,
    )
}
