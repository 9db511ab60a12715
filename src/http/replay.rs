//! What the public replay and clip pages need, without a token: a finished recording or a clip
//! as viewers see it (`/api/public/recordings/{id}`, `/api/public/clips/{id}`: name, times,
//! manifest and download URLs, poster), and a recording's MP4 download
//! (`/vod/{id}/recording.mp4`), put together from its stored segments as it is sent (see
//! `crate::clips::file`): nothing is stored twice. The download has no `Content-Length` and
//! takes no `Range` (it is made as it goes); a clip's MP4 is a stored object and takes both.
//! At most `clips::MAX_DOWNLOADS` downloads are sent at once per node (503 beyond).

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use futures::StreamExt;
use object_store::ObjectStoreExt;
use serde::Serialize;

use super::api::{db_error, not_found, ApiState};
use crate::clips::file::Mp4Source;
use crate::db::ids;
use crate::previews;
use crate::publish::store::{self, Root};

/// A finished recording as viewers see it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PublicRecording {
    pub id: String,
    pub stream_name: String,
    /// Unix ms.
    pub started_at: i64,
    pub duration_ms: Option<i64>,
    pub hls_url: String,
    pub dash_url: String,
    pub mp4_url: String,
    /// When the broadcast had a picture (ladders that transcode make one).
    pub poster_url: Option<String>,
    /// The WebVTT track of scrub previews, once made (a little after the VOD is complete).
    pub thumbnails_url: Option<String>,
}

/// A clip as viewers see it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PublicClip {
    pub id: String,
    pub stream_name: Option<String>,
    /// `pending`, `ready` or `failed`.
    pub state: String,
    pub starts_at: Option<i64>,
    pub duration_ms: Option<i64>,
    pub hls_url: String,
    pub dash_url: String,
    pub mp4_url: String,
    pub poster_url: Option<String>,
    /// The WebVTT track of scrub previews, once made (a little after the VOD is complete).
    pub thumbnails_url: Option<String>,
}

/// The URL of file `name` of VOD `id` when it is stored (a poster, scrub previews).
async fn stored(state: &ApiState, id: &str, name: &str) -> Option<String> {
    let path = Root::vod(id).file(name);
    state
        .store
        .head(&path)
        .await
        .ok()
        .map(|_| format!("/vod/{id}/{name}"))
}

#[utoipa::path(get, path = "/api/public/recordings/{id}", params(("id" = String, Path)),
    responses((status = 200, body = PublicRecording), (status = 404, body = super::api::ApiError)))]
pub async fn recording(state: web::Data<ApiState>, id: web::Path<String>) -> HttpResponse {
    if !ids::is_public_id(&id) {
        return not_found("recording", &id);
    }
    let recording = match state.db.ended_recording(&id).await {
        Ok(Some(r)) => r,
        Ok(None) => return not_found("recording", &id),
        Err(e) => return db_error(e),
    };
    let stream_name = match state.db.stream_by_id(&recording.stream_id).await {
        Ok(stream) => stream.map(|s| s.name).unwrap_or_default(),
        Err(e) => return db_error(e),
    };
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .json(PublicRecording {
            hls_url: format!("/vod/{id}/{}", store::MASTER_PLAYLIST),
            dash_url: format!("/vod/{id}/{}", store::MPD),
            mp4_url: format!("/vod/{id}/{RECORDING_MP4}"),
            poster_url: stored(&state, &id, store::POSTER).await,
            thumbnails_url: stored(&state, &id, previews::THUMBNAILS_VTT).await,
            id: recording.id,
            stream_name,
            started_at: recording.started_at,
            duration_ms: recording.duration_ms,
        })
}

#[utoipa::path(get, path = "/api/public/clips/{id}", params(("id" = String, Path)),
    responses((status = 200, body = PublicClip), (status = 404, body = super::api::ApiError)))]
pub async fn clip(state: web::Data<ApiState>, id: web::Path<String>) -> HttpResponse {
    if !ids::is_public_id(&id) {
        return not_found("clip", &id);
    }
    let clip = match state.db.clip(&id).await {
        Ok(Some(c)) => c,
        Ok(None) => return not_found("clip", &id),
        Err(e) => return db_error(e),
    };
    let stream_name = match state.db.stream_by_id(&clip.stream_id).await {
        Ok(stream) => stream.map(|s| s.name),
        Err(e) => return db_error(e),
    };
    let (hls_url, dash_url, mp4_url) = crate::clips::urls("", &clip.id);
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .json(PublicClip {
            poster_url: stored(&state, &id, store::POSTER).await,
            thumbnails_url: stored(&state, &id, previews::THUMBNAILS_VTT).await,
            id: clip.id,
            stream_name,
            state: clip.state,
            starts_at: clip.starts_at,
            duration_ms: clip.duration_ms,
            hls_url,
            dash_url,
            mp4_url,
        })
}

/// A recording's download, under its root.
pub const RECORDING_MP4: &str = "recording.mp4";

/// `/vod/{id}/recording.mp4`: the finished recording as one MP4, made as it is sent.
async fn download(state: web::Data<ApiState>, id: web::Path<String>) -> HttpResponse {
    if !ids::is_public_id(&id) {
        return not_found("recording", &id);
    }
    match state.db.ended_recording(&id).await {
        Ok(Some(_)) => {}
        Ok(None) => return not_found("recording", &id),
        Err(e) => return db_error(e),
    }
    let Some(slot) = state.clips.reserve_download() else {
        return HttpResponse::ServiceUnavailable()
            .insert_header(("Retry-After", "5"))
            .json(super::api::ApiError {
                error: format!(
                    "{} downloads are being sent; try again shortly",
                    crate::clips::MAX_DOWNLOADS
                ),
            });
    };
    let store = state.store.clone();
    let source = match Mp4Source::open(&store, &Root::vod(&id)).await {
        Ok(source) => source,
        Err(e) => {
            tracing::warn!(recording = %id.as_str(), error = %e, "a recording's MP4 cannot be made");
            return not_found("recording", &id);
        }
    };
    let header = source.header.clone();
    // the slot goes with the stream: it is freed when the response ends or the client leaves
    let fragments = futures::stream::unfold(
        (0usize, 0u32, source, store, slot),
        |(index, mut sequence, source, store, slot)| async move {
            if index >= source.len() {
                return None;
            }
            let next = source.fragment(&store, index, &mut sequence).await;
            Some((next, (index + 1, sequence, source, store, slot)))
        },
    );
    let body = futures::stream::once(async move { Ok(header) })
        .chain(fragments)
        .map(|part| {
            part.map_err(|e| {
                // the response has started: the connection is cut, the client sees it short
                tracing::warn!(error = %e, "a recording's MP4 stopped while sent");
                actix_web::error::ErrorInternalServerError(e.to_string())
            })
        });
    HttpResponse::Ok()
        .content_type("video/mp4")
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{}.mp4\"", id.as_str()),
        ))
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .streaming(body)
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/public/recordings/{id}", web::get().to(recording))
        .route("/api/public/clips/{id}", web::get().to(clip));
}

/// A recording's MP4, inside the origin's `/vod` scope.
pub fn configure_download(cfg: &mut web::ServiceConfig) {
    cfg.route("/{id}/recording.mp4", web::get().to(download))
        .route("/{id}/recording.mp4", web::head().to(download))
        .route(
            "/{id}/recording.mp4",
            web::method(actix_web::http::Method::OPTIONS).to(super::playback::preflight),
        );
}
