//! `/api/v1/clips`: cut a clip from a live stream or a recording, follow it until it is ready,
//! list and delete clips (see `crate::clips`).

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::api::{db_error, error, not_found, ApiState};
use crate::clips::{self, ClipRange, ClipSource, MAX_CLIP_SECS};
use crate::db::clips::Clip;
use crate::db::ids;

/// A clip to cut: from `stream_id` (its live broadcast's DVR view) or `recording_id`, either
/// the last `last_secs` seconds or from `start` to `end`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateClip {
    pub stream_id: Option<String>,
    pub recording_id: Option<String>,
    /// Seconds before the live edge (the newest stored segment's end).
    pub last_secs: Option<f64>,
    /// RFC 3339 wall clock (with `end`).
    pub start: Option<String>,
    /// RFC 3339 wall clock (with `start`).
    pub end: Option<String>,
    /// Start and end on the requested frames: the first and last segment are re-encoded from
    /// the frame nearest `start` to the one before `end` (every segment between them is
    /// copied). Without it a clip is cut on segment boundaries (keyframes).
    #[serde(default)]
    pub precise: bool,
}

/// A clip and where to play or download it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClipView {
    #[serde(flatten)]
    pub clip: Clip,
    pub hls_url: String,
    pub dash_url: String,
    pub mp4_url: String,
    /// The public page with the player.
    pub page_url: String,
}

impl ClipView {
    pub fn of(public_url: &str, clip: Clip) -> Self {
        let (hls_url, dash_url, mp4_url) = clips::urls(public_url, &clip.id);
        Self {
            page_url: format!("{public_url}/clip/{}", clip.id),
            hls_url,
            dash_url,
            mp4_url,
            clip,
        }
    }
}

/// What a creation asks for, checked: the range, and the source's id (stream or recording).
fn range_of(body: &CreateClip) -> Result<ClipRange, String> {
    let parse = |what: &str, value: &str| {
        DateTime::parse_from_rfc3339(value)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| format!("`{what}` is not an RFC 3339 time"))
    };
    let range = match (body.last_secs, &body.start, &body.end) {
        (Some(secs), None, None) => {
            if !(secs > 0.0 && secs <= MAX_CLIP_SECS) {
                return Err(format!(
                    "`last_secs` is more than 0 and at most {MAX_CLIP_SECS}"
                ));
            }
            ClipRange::Last(secs)
        }
        (None, Some(start), Some(end)) => {
            let (start, end) = (parse("start", start)?, parse("end", end)?);
            let secs = (end - start).num_milliseconds() as f64 / 1000.0;
            if !(secs > 0.0 && secs <= MAX_CLIP_SECS) {
                return Err(format!(
                    "`end` is after `start`, and at most {MAX_CLIP_SECS} s after it"
                ));
            }
            ClipRange::Between(start, end)
        }
        _ => return Err("give either `last_secs`, or `start` and `end`".into()),
    };
    Ok(range)
}

#[utoipa::path(post, path = "/api/v1/clips", request_body = CreateClip,
    responses((status = 202, body = ClipView), (status = 400, body = super::api::ApiError),
        (status = 404, body = super::api::ApiError),
        (status = 503, description = "the node is making as many clips as it makes at once")),
    security(("bearer" = [])))]
pub(super) async fn create_clip(
    state: web::Data<ApiState>,
    body: web::Json<CreateClip>,
) -> HttpResponse {
    let range = match range_of(&body) {
        Ok(range) => range,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    let (stream_id, source) = match (&body.stream_id, &body.recording_id) {
        (Some(stream_id), None) => match state.db.stream_by_id(stream_id).await {
            Ok(Some(stream)) => (
                stream.id,
                ClipSource::Live {
                    playback_id: stream.playback_id,
                },
            ),
            Ok(None) => return not_found("stream", stream_id),
            Err(e) => return db_error(e),
        },
        (None, Some(recording_id)) => {
            if !ids::is_public_id(recording_id) {
                return not_found("recording", recording_id);
            }
            match state.db.recording_stream(recording_id).await {
                Ok(Some(stream_id)) => (
                    stream_id,
                    ClipSource::Recording {
                        recording_id: recording_id.clone(),
                    },
                ),
                Ok(None) => return not_found("recording", recording_id),
                Err(e) => return db_error(e),
            }
        }
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "give either `stream_id` or `recording_id`",
            )
        }
    };
    let slot = match state.clips.reserve() {
        Ok(slot) => slot,
        Err(busy) => {
            return HttpResponse::ServiceUnavailable()
                .insert_header(("Retry-After", "2"))
                .json(super::api::ApiError {
                    error: busy.to_string(),
                })
        }
    };
    let recording_id = match &source {
        ClipSource::Recording { recording_id } => Some(recording_id.as_str()),
        ClipSource::Live { .. } => None,
    };
    let id = ids::new_clip_id();
    match state
        .db
        .create_clip(
            &id,
            &stream_id,
            recording_id,
            body.precise,
            state.clips.node_id(),
        )
        .await
    {
        Ok(clip) => {
            state.clips.start(clip.clone(), source, range, slot);
            HttpResponse::Accepted().json(ClipView::of(&state.public_url, clip))
        }
        Err(e) => db_error(e),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ClipQuery {
    /// Only this stream's clips.
    pub stream_id: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/clips", params(ClipQuery),
    responses((status = 200, body = Vec<ClipView>)), security(("bearer" = [])))]
pub(super) async fn list_clips(
    state: web::Data<ApiState>,
    query: web::Query<ClipQuery>,
) -> HttpResponse {
    match state.db.list_clips(query.stream_id.as_deref()).await {
        Ok(clips) => HttpResponse::Ok().json(
            clips
                .into_iter()
                .map(|c| ClipView::of(&state.public_url, c))
                .collect::<Vec<_>>(),
        ),
        Err(e) => db_error(e),
    }
}

#[utoipa::path(get, path = "/api/v1/clips/{id}", params(("id" = String, Path)),
    responses((status = 200, body = ClipView), (status = 404, body = super::api::ApiError)),
    security(("bearer" = [])))]
pub(super) async fn get_clip(state: web::Data<ApiState>, id: web::Path<String>) -> HttpResponse {
    match state.db.clip(&id).await {
        Ok(Some(clip)) => HttpResponse::Ok().json(ClipView::of(&state.public_url, clip)),
        Ok(None) => not_found("clip", &id),
        Err(e) => db_error(e),
    }
}

#[utoipa::path(delete, path = "/api/v1/clips/{id}", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = super::api::ApiError)),
    security(("bearer" = [])))]
pub(super) async fn delete_clip(state: web::Data<ApiState>, id: web::Path<String>) -> HttpResponse {
    if !ids::is_public_id(&id) {
        return not_found("clip", &id);
    }
    match state.db.delete_clip(&id).await {
        Ok(true) => {
            // the row goes first: a clip still being made finds it gone and keeps nothing
            if let Err(e) = crate::publish::sweep::remove_recording(&state.store, &id).await {
                tracing::warn!(clip = %id.as_str(), error = %e, "a deleted clip's objects are left");
            }
            HttpResponse::NoContent().finish()
        }
        Ok(false) => not_found("clip", &id),
        Err(e) => db_error(e),
    }
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/clips", web::post().to(create_clip))
        .route("/clips", web::get().to(list_clips))
        .route("/clips/{id}", web::get().to(get_clip))
        .route("/clips/{id}", web::delete().to(delete_clip));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(json: serde_json::Value) -> CreateClip {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn a_clip_request_names_one_range() {
        let ok = body(serde_json::json!({"stream_id": "s", "last_secs": 10}));
        assert_eq!(range_of(&ok), Ok(ClipRange::Last(10.0)));
        let between = body(serde_json::json!({"recording_id": "r",
            "start": "2026-12-07T12:00:00Z", "end": "2026-12-07T12:00:07.300Z"}));
        assert!(matches!(range_of(&between), Ok(ClipRange::Between(..))));
        let precise = body(serde_json::json!({"stream_id": "s", "last_secs": 5, "precise": true}));
        assert_eq!(range_of(&precise), Ok(ClipRange::Last(5.0)));
        for bad in [
            serde_json::json!({"last_secs": 0}),
            serde_json::json!({"last_secs": 601}),
            serde_json::json!({"last_secs": 5, "start": "2026-12-07T12:00:00Z"}),
            serde_json::json!({"start": "2026-12-07T12:00:10Z", "end": "2026-12-07T12:00:00Z"}),
            serde_json::json!({"start": "yesterday", "end": "2026-12-07T12:00:00Z"}),
            serde_json::json!({}),
        ] {
            assert!(range_of(&body(bad.clone())).is_err(), "{bad}");
        }
    }
}
