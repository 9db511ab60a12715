//! The public directory under `/api/public`: which streams exist and which are live, for the
//! streams and watch pages (and anyone building their own), without a token. It shows only
//! what a viewer can see anyway — name, playback id, state, start time — never stream ids,
//! keys, client addresses or encoder details.

use std::collections::HashMap;

use actix_web::{web, HttpRequest, HttpResponse};
use futures::StreamExt;
use serde::Serialize;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;

use super::api::{db_error, not_found, ApiState};
use crate::db::{ids, Stream};
use crate::events::Event;
use crate::hub::SessionStats;

/// A stream as viewers see it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct DirectoryEntry {
    pub name: String,
    pub playback_id: String,
    /// `live`, `reconnecting` (the publisher was lost and may come back) or `offline`.
    pub state: &'static str,
    /// When the current broadcast started (Unix ms); absent while offline.
    pub started_at: Option<i64>,
    /// Whether players can start: the broadcast has published `READY_SEGMENTS` segments, enough
    /// for a player to hold its usual distance from the live edge without stalling.
    pub ready: bool,
    /// A picture of the live broadcast (refreshed every 10 s), when it has one: ladders that
    /// transcode make posters, passthrough does not.
    pub poster_url: Option<String>,
    /// Seconds of a live broadcast viewers may rewind (`/live/{playback_id}/dvr.m3u8` and
    /// `dvr.mpd`); 0: no DVR.
    pub dvr_window: u32,
}

/// Segments a broadcast needs before the directory calls it ready (hls.js and dash.js start
/// three segments behind the live edge).
pub const READY_SEGMENTS: u64 = 3;

impl DirectoryEntry {
    fn live(stats: &SessionStats) -> Self {
        Self {
            name: stats.id.stream_name.clone(),
            playback_id: stats.id.playback_id.clone(),
            state: stats.state.as_str(),
            started_at: Some(stats.id.started_at),
            ready: stats.segments_published >= READY_SEGMENTS,
            poster_url: stats
                .poster
                .then(|| format!("/live/{}/poster.jpg", stats.id.playback_id)),
            dvr_window: stats.id.dvr_window,
        }
    }

    fn of(stream: Stream, live: Option<&SessionStats>) -> Self {
        match live {
            Some(stats) => Self {
                name: stream.name,
                ..Self::live(stats)
            },
            None => Self {
                name: stream.name,
                playback_id: stream.playback_id,
                state: "offline",
                started_at: None,
                ready: false,
                poster_url: None,
                dvr_window: stream.dvr_window,
            },
        }
    }
}

/// `stream.ended` as viewers see it.
#[derive(Debug, Serialize)]
struct PublicEnded<'a> {
    playback_id: &'a str,
}

fn live_by_playback_id(state: &ApiState) -> HashMap<String, SessionStats> {
    state
        .live_sessions()
        .into_iter()
        .map(|stats| (stats.id.playback_id.clone(), stats))
        .collect()
}

#[utoipa::path(get, path = "/api/public/streams",
    responses((status = 200, body = Vec<DirectoryEntry>)))]
pub async fn list(state: web::Data<ApiState>) -> HttpResponse {
    match state.db.list_streams().await {
        Ok(streams) => {
            let live = live_by_playback_id(&state);
            let entries: Vec<DirectoryEntry> = streams
                .into_iter()
                .map(|s| {
                    let stats = live.get(&s.playback_id);
                    DirectoryEntry::of(s, stats)
                })
                .collect();
            HttpResponse::Ok()
                .insert_header(("Cache-Control", "no-cache"))
                .json(entries)
        }
        Err(e) => db_error(e),
    }
}

#[utoipa::path(get, path = "/api/public/streams/{playback_id}",
    params(("playback_id" = String, Path)),
    responses((status = 200, body = DirectoryEntry), (status = 404, body = super::api::ApiError)))]
pub async fn one(state: web::Data<ApiState>, playback_id: web::Path<String>) -> HttpResponse {
    if !ids::is_public_id(&playback_id) {
        return not_found("stream", &playback_id);
    }
    match state.db.stream_by_playback_id(&playback_id).await {
        Ok(Some(stream)) => {
            let live = match state
                .hub
                .live()
                .into_iter()
                .find(|b| b.id.playback_id == stream.playback_id)
            {
                Some(local) => Some(local.snapshot()),
                None => state
                    .cluster
                    .remote_live()
                    .into_iter()
                    .find(|s| s.id.playback_id == stream.playback_id),
            };
            HttpResponse::Ok()
                .insert_header(("Cache-Control", "no-cache"))
                .json(DirectoryEntry::of(stream, live.as_ref()))
        }
        Ok(None) => not_found("stream", &playback_id),
        Err(e) => db_error(e),
    }
}

/// The public frame for an event, if viewers get one for it.
fn public_frame(event: &Event) -> Option<bytes::Bytes> {
    match event {
        Event::Live(stats) => Some(super::events::frame(
            "stream.live",
            &DirectoryEntry::live(stats),
        )),
        Event::Ended(ended) => Some(super::events::frame(
            "stream.ended",
            &PublicEnded {
                playback_id: &ended.playback_id,
            },
        )),
        Event::Stats(_) | Event::Segment(_) | Event::Device(_) => None,
    }
}

#[utoipa::path(get, path = "/api/public/events",
    responses((status = 200, content_type = "text/event-stream",
        description = "Server-Sent Events: `stream.live` (a DirectoryEntry) and `stream.ended` (`{playback_id}`)"),
        (status = 429, description = "this client address has `http.max_event_subscribers_per_ip` event streams open (`Retry-After`)"),
        (status = 503, description = "the server has `http.max_event_subscribers` event streams open (`Retry-After`)")))]
pub async fn events(
    req: HttpRequest,
    state: web::Data<ApiState>,
    http: web::Data<super::HttpState>,
) -> HttpResponse {
    let slot = match super::events::subscribe(&req, &http) {
        Ok(slot) => slot,
        Err(refused) => return refused.response(),
    };
    super::events::response(
        BroadcastStream::new(state.events.subscribe()).filter_map(|item| async move {
            match item {
                Ok(event) => public_frame(&event),
                Err(BroadcastStreamRecvError::Lagged(missed)) => {
                    Some(super::events::lagged(missed))
                }
            }
        }),
        slot,
    )
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/public/streams", web::get().to(list))
        .route("/api/public/streams/{playback_id}", web::get().to(one))
        .route("/api/public/events", web::get().to(events));
}
