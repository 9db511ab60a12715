//! Server-Sent Events: `GET /api/v1/events` streams the whole event bus to operators (JSON data,
//! `event: stream.live` etc.). The framing and keep-alive (a comment every 15 s, so idle
//! connections survive proxies) are shared with the public directory's events.

use std::time::Duration;

use actix_web::{web, HttpResponse};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde::Serialize;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::{BroadcastStream, IntervalStream};

use super::api::ApiState;

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

/// An SSE response of `frames`, with keep-alive comments in between.
pub fn response(frames: impl Stream<Item = Bytes> + 'static) -> HttpResponse {
    let keep_alive = IntervalStream::new(tokio::time::interval(KEEP_ALIVE))
        .map(|_| Bytes::from_static(b": keep-alive\n\n"));
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(futures::stream::select(frames, keep_alive).map(Ok::<_, actix_web::Error>))
}

#[utoipa::path(get, path = "/api/v1/events",
    responses((status = 200, content_type = "text/event-stream",
        description = "Server-Sent Events: `stream.live`, `stream.ended`, `session.stats` (every second per live broadcast), `segment.published`")),
    security(("bearer" = [])))]
pub async fn events(state: web::Data<ApiState>) -> HttpResponse {
    response(
        BroadcastStream::new(state.events.subscribe()).map(|item| match item {
            Ok(event) => frame(event.name(), &event),
            Err(BroadcastStreamRecvError::Lagged(missed)) => lagged(missed),
        }),
    )
}
