//! `GET /api/v1/events`: the event bus as Server-Sent Events (`event: stream.live` etc., JSON
//! data), with a comment every 15 s so idle connections survive proxies.

use std::time::Duration;

use actix_web::{web, HttpResponse};
use bytes::Bytes;
use futures::StreamExt;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::{BroadcastStream, IntervalStream};

use super::api::ApiState;
use crate::events::Event;

const KEEP_ALIVE: Duration = Duration::from_secs(15);

fn frame(event: &Event) -> Bytes {
    let data = serde_json::to_string(event).unwrap_or_else(|_| "{}".into());
    Bytes::from(format!("event: {}\ndata: {data}\n\n", event.name()))
}

#[utoipa::path(get, path = "/api/v1/events",
    responses((status = 200, content_type = "text/event-stream",
        description = "Server-Sent Events: `stream.live`, `stream.ended`, `session.stats` (every second per live broadcast), `segment.published`")),
    security(("bearer" = [])))]
pub async fn events(state: web::Data<ApiState>) -> HttpResponse {
    let events = BroadcastStream::new(state.events.subscribe()).map(|item| {
        Ok::<_, actix_web::Error>(match item {
            Ok(event) => frame(&event),
            Err(BroadcastStreamRecvError::Lagged(missed)) => Bytes::from(format!(
                ": {missed} events skipped (this client fell behind)\n\n"
            )),
        })
    });
    let keep_alive = IntervalStream::new(tokio::time::interval(KEEP_ALIVE))
        .map(|_| Ok::<_, actix_web::Error>(Bytes::from_static(b": keep-alive\n\n")));
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(futures::stream::select(events, keep_alive))
}
