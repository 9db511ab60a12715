//! The admin REST API under `/api/v1` (JSON), described by an OpenAPI document at
//! `/api/v1/openapi.json` (utoipa). Every route needs `Authorization: Bearer TOKEN`; a missing
//! or wrong token gets 401 before any handler runs. Errors are `{"error": "…"}` with a message
//! a person can act on. Stream keys appear only in the answers that create them (create,
//! rotate), never elsewhere. Rotating or revoking a key (and deleting a stream) also stops the
//! stream's live broadcast on whichever node runs it, like `DELETE /sessions/{id}`: a key
//! that was taken away does not stay on air.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{web, HttpResponse};
use object_store::ObjectStore;
use serde::{Deserialize, Serialize};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use super::{clip_api, device_api};
use crate::cluster::Cluster;
use crate::db::ids::sha256_hex;
use crate::db::sessions::{Recording, Session, SourceInfo};
use crate::db::{Db, DbError, Stream, DEFAULT_DVR_WINDOW_SECS};
use crate::events::EventBus;
use crate::hub::{Hub, SessionIdentity, SessionStats};
use crate::publish::sweep::remove_recording;
use crate::transcode::Ladders;

/// What the API handlers share.
pub struct ApiState {
    pub db: Db,
    pub hub: Arc<Hub>,
    pub ladders: Arc<Ladders>,
    pub default_ladder: String,
    /// SHA-256 of every accepted admin token.
    pub token_hashes: HashSet<String>,
    /// OBS "Server" (`rtmp://host:port/app`) and the public base URL, for create answers.
    pub rtmp_url: String,
    /// The RTMPS "Server" field, when RTMPS is on.
    pub rtmps_url: Option<String>,
    /// When SRT is on: what a stream's SRT URL starts with (the key completes it).
    pub srt_url_prefix: Option<String>,
    pub public_url: String,
    pub events: EventBus,
    /// Other nodes' live broadcasts, and how to ask them to stop one.
    pub cluster: Arc<Cluster>,
    /// Where recordings live: deleting a stream deletes them.
    pub store: Arc<dyn ObjectStore>,
    /// Devices: presence and commands (`/devices`).
    pub devices: Arc<crate::devices::Devices>,
    /// Makes clips (`/clips`).
    pub clips: Arc<crate::clips::Clipper>,
}

impl ApiState {
    /// The SRT URL for a publisher with `key`, when SRT is on.
    fn srt_url(&self, key: &str) -> Option<String> {
        self.srt_url_prefix
            .as_deref()
            .map(|prefix| crate::config::srt_publish_url(prefix, key))
    }

    /// Every live broadcast: this node's and the other nodes'.
    pub fn live_sessions(&self) -> Vec<SessionStats> {
        self.cluster.live_sessions(&self.hub)
    }

    /// Ends a live session wherever it runs; false when no node has it.
    fn stop_anywhere(&self, session_id: &str) -> bool {
        self.hub.stop(session_id) || self.cluster.request_stop(session_id)
    }

    /// Ends every live broadcast of `stream_id` (one at most, plus a reconnecting one),
    /// wherever it runs, the way `DELETE /sessions/{id}` does: the publisher is disconnected and
    /// the broadcast ends normally (final manifests, recording, `stream.ended`). Returns how
    /// many were told to stop.
    fn stop_stream(&self, stream_id: &str) -> usize {
        self.live_sessions()
            .iter()
            .filter(|live| live.id.stream_id == stream_id)
            .filter(|live| self.stop_anywhere(&live.id.session_id))
            .count()
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ApiError {
    pub error: String,
}

pub(super) fn error(status: StatusCode, message: impl Into<String>) -> HttpResponse {
    HttpResponse::build(status).json(ApiError {
        error: message.into(),
    })
}

pub(super) fn db_error(e: DbError) -> HttpResponse {
    match e {
        DbError::NameTaken(_) => error(StatusCode::CONFLICT, e.to_string()),
        DbError::BadName | DbError::BadDvrWindow => error(StatusCode::BAD_REQUEST, e.to_string()),
        e => {
            tracing::error!(error = %e, "API request failed on the database");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the database is unavailable; try again shortly",
            )
        }
    }
}

pub(super) fn not_found(what: &str, id: &str) -> HttpResponse {
    error(StatusCode::NOT_FOUND, format!("no {what} with id `{id}`"))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateStream {
    /// 1–64 letters, digits, `-`, `_`; unique.
    pub name: String,
    /// A ladder name (default: the server's default ladder).
    pub ladder: Option<String>,
    /// Keep each broadcast as a VOD recording (default true).
    pub record: Option<bool>,
    /// How far back viewers may rewind a live broadcast, seconds (default 7200; 0: no DVR).
    pub dvr_window: Option<u32>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateStream {
    pub name: Option<String>,
    pub ladder: Option<String>,
    /// Applies from the stream's next broadcast.
    pub record: Option<bool>,
    /// DVR window in seconds (0: off); applies from the stream's next broadcast.
    pub dvr_window: Option<u32>,
}

/// A new stream key, shown only in this answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct StreamKey {
    /// Starts with `sk_`. Only its hash is stored: keep it now.
    pub key: String,
    /// The OBS "Server" field.
    pub rtmp_url: String,
    /// The OBS "Server" field over TLS, when RTMPS is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtmps_url: Option<String>,
    /// A complete SRT URL with this key in its stream id, when SRT is on (shown once, like the
    /// key).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub srt_url: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedStream {
    pub stream: Stream,
    pub key: String,
    pub rtmp_url: String,
    /// When RTMPS is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtmps_url: Option<String>,
    /// When SRT is on: a complete SRT URL with the key in its stream id (shown once).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub srt_url: Option<String>,
    pub hls_url: String,
    pub dash_url: String,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct RecordingQuery {
    /// Only this stream's recordings.
    pub stream_id: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct SessionQuery {
    /// `live` (default): live broadcasts with their statistics; `all`: every session, with what
    /// was stored about it.
    pub state: Option<String>,
}

/// The 400 answer for a ladder that does not exist, if it does not.
fn unknown_ladder(state: &ApiState, ladder: &str) -> Option<HttpResponse> {
    state
        .ladders
        .get(ladder)
        .err()
        .map(|e| error(StatusCode::BAD_REQUEST, e.to_string()))
}

#[utoipa::path(post, path = "/api/v1/streams", request_body = CreateStream,
    responses((status = 201, body = CreatedStream), (status = 400, body = ApiError), (status = 409, body = ApiError)),
    security(("bearer" = [])))]
async fn create_stream(state: web::Data<ApiState>, body: web::Json<CreateStream>) -> HttpResponse {
    let ladder = body
        .ladder
        .clone()
        .unwrap_or_else(|| state.default_ladder.clone());
    if let Some(response) = unknown_ladder(&state, &ladder) {
        return response;
    }
    let record = body.record.unwrap_or(true);
    let dvr_window = body.dvr_window.unwrap_or(DEFAULT_DVR_WINDOW_SECS);
    match state
        .db
        .create_stream(&body.name, &ladder, record, dvr_window)
        .await
    {
        Ok((stream, key)) => HttpResponse::Created().json(CreatedStream {
            hls_url: format!(
                "{}/live/{}/master.m3u8",
                state.public_url, stream.playback_id
            ),
            dash_url: format!(
                "{}/live/{}/manifest.mpd",
                state.public_url, stream.playback_id
            ),
            rtmp_url: state.rtmp_url.clone(),
            rtmps_url: state.rtmps_url.clone(),
            srt_url: state.srt_url(&key),
            stream,
            key,
        }),
        Err(e) => db_error(e),
    }
}

#[utoipa::path(get, path = "/api/v1/streams",
    responses((status = 200, body = Vec<Stream>)), security(("bearer" = [])))]
async fn list_streams(state: web::Data<ApiState>) -> HttpResponse {
    match state.db.list_streams().await {
        Ok(streams) => HttpResponse::Ok().json(streams),
        Err(e) => db_error(e),
    }
}

#[utoipa::path(get, path = "/api/v1/streams/{id}", params(("id" = String, Path)),
    responses((status = 200, body = Stream), (status = 404, body = ApiError)),
    security(("bearer" = [])))]
async fn get_stream(state: web::Data<ApiState>, id: web::Path<String>) -> HttpResponse {
    match state.db.stream_by_id(&id).await {
        Ok(Some(stream)) => HttpResponse::Ok().json(stream),
        Ok(None) => not_found("stream", &id),
        Err(e) => db_error(e),
    }
}

#[utoipa::path(patch, path = "/api/v1/streams/{id}", params(("id" = String, Path)),
    request_body = UpdateStream,
    responses((status = 200, body = Stream), (status = 400, body = ApiError), (status = 404, body = ApiError), (status = 409, body = ApiError)),
    security(("bearer" = [])))]
async fn update_stream(
    state: web::Data<ApiState>,
    id: web::Path<String>,
    body: web::Json<UpdateStream>,
) -> HttpResponse {
    if let Some(ladder) = &body.ladder {
        if let Some(response) = unknown_ladder(&state, ladder) {
            return response;
        }
    }
    match state
        .db
        .update_stream(
            &id,
            body.name.as_deref(),
            body.ladder.as_deref(),
            body.record,
            body.dvr_window,
        )
        .await
    {
        Ok(Some(stream)) => HttpResponse::Ok().json(stream),
        Ok(None) => not_found("stream", &id),
        Err(e) => db_error(e),
    }
}

#[utoipa::path(delete, path = "/api/v1/streams/{id}", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = ApiError)), security(("bearer" = [])))]
async fn delete_stream(state: web::Data<ApiState>, id: web::Path<String>) -> HttpResponse {
    state.stop_stream(&id);
    // its devices go with it: disconnected now, their rows deleted with the stream's
    match state.db.list_devices().await {
        Ok(devices) => devices
            .iter()
            .filter(|d| d.stream_id == *id)
            .for_each(|d| state.devices.disconnect(&d.id)),
        Err(e) => return db_error(e),
    }
    match state.db.delete_stream(&id).await {
        Ok(Some(recordings)) => {
            // a broadcast that started while the first stop went out is stopped now
            state.stop_stream(&id);
            tokio::spawn(remove_recordings(
                state.into_inner(),
                id.into_inner(),
                recordings,
            ));
            HttpResponse::NoContent().finish()
        }
        Ok(None) => not_found("stream", &id),
        Err(e) => db_error(e),
    }
}

/// How long the removal of a deleted stream's recordings waits for its broadcast to finish.
const FINISH_WAIT: Duration = Duration::from_secs(10);

/// Deletes the objects of a deleted stream's recordings once its stopped broadcast has
/// finished writing (or `FINISH_WAIT` passed); what is left, or written later, the sweeper
/// removes (`deleted_recordings`).
async fn remove_recordings(state: Arc<ApiState>, stream_id: String, recordings: Vec<String>) {
    let deadline = tokio::time::Instant::now() + FINISH_WAIT;
    while tokio::time::Instant::now() < deadline
        && state
            .live_sessions()
            .iter()
            .any(|live| live.id.stream_id == stream_id)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut objects = 0;
    for recording in &recordings {
        match remove_recording(&state.store, recording).await {
            Ok(n) => objects += n,
            Err(e) => tracing::warn!(%stream_id, %recording, error = %e,
                "a deleted stream's recording is left to the sweeper"),
        }
    }
    tracing::info!(
        %stream_id,
        recordings = recordings.len(),
        objects,
        "stream deleted with its recordings"
    );
}

/// Logs that a key change cut a live broadcast off (ids only).
fn cut_off(stream_id: &str, stopped: usize, change: &str) {
    if stopped > 0 {
        tracing::info!(
            stream_id,
            broadcasts = stopped,
            "stream key {change}; the live publisher was disconnected"
        );
    }
}

#[utoipa::path(post, path = "/api/v1/streams/{id}/key", params(("id" = String, Path)),
    responses((status = 200, body = StreamKey, description = "the new key, shown once; the old one no longer publishes, and a broadcast live with it is stopped"),
        (status = 404, body = ApiError)),
    security(("bearer" = [])))]
async fn rotate_key(state: web::Data<ApiState>, id: web::Path<String>) -> HttpResponse {
    match state.db.rotate_key(&id).await {
        Ok(Some(key)) => {
            // the key is changed first, so the stopped publisher cannot come back with it
            cut_off(&id, state.stop_stream(&id), "rotated");
            HttpResponse::Ok().json(StreamKey {
                srt_url: state.srt_url(&key),
                key,
                rtmp_url: state.rtmp_url.clone(),
                rtmps_url: state.rtmps_url.clone(),
            })
        }
        Ok(None) => not_found("stream", &id),
        Err(e) => db_error(e),
    }
}

#[utoipa::path(delete, path = "/api/v1/streams/{id}/key", params(("id" = String, Path)),
    responses((status = 204, description = "the key no longer publishes, and a broadcast live with it is stopped; rotate to get a new one"),
        (status = 404, body = ApiError)),
    security(("bearer" = [])))]
async fn revoke_key(state: web::Data<ApiState>, id: web::Path<String>) -> HttpResponse {
    match state.db.revoke_key(&id).await {
        Ok(true) => {
            cut_off(&id, state.stop_stream(&id), "revoked");
            HttpResponse::NoContent().finish()
        }
        Ok(false) => not_found("stream", &id),
        Err(e) => db_error(e),
    }
}

/// A session as the API lists it: live statistics, or what was stored.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum SessionView {
    Live(SessionStats),
    Stored(Session),
}

#[utoipa::path(get, path = "/api/v1/sessions", params(SessionQuery),
    responses((status = 200, body = Vec<SessionView>), (status = 400, body = ApiError)),
    security(("bearer" = [])))]
async fn list_sessions(
    state: web::Data<ApiState>,
    query: web::Query<SessionQuery>,
) -> HttpResponse {
    match query.state.as_deref().unwrap_or("live") {
        "live" => {
            let mut live = state.live_sessions();
            live.sort_by_key(|s| std::cmp::Reverse(s.id.started_at));
            HttpResponse::Ok().json(live.into_iter().map(SessionView::Live).collect::<Vec<_>>())
        }
        "all" => match state.db.list_sessions().await {
            Ok(all) => HttpResponse::Ok()
                .json(all.into_iter().map(SessionView::Stored).collect::<Vec<_>>()),
            Err(e) => db_error(e),
        },
        other => error(
            StatusCode::BAD_REQUEST,
            format!("state `{other}` is not `live` or `all`"),
        ),
    }
}

#[utoipa::path(delete, path = "/api/v1/sessions/{id}", params(("id" = String, Path)),
    responses((status = 204, description = "the publisher is disconnected and the broadcast ends"),
        (status = 404, body = ApiError)),
    security(("bearer" = [])))]
async fn stop_session(state: web::Data<ApiState>, id: web::Path<String>) -> HttpResponse {
    if state.stop_anywhere(&id) {
        HttpResponse::NoContent().finish()
    } else {
        not_found("live session", &id)
    }
}

#[utoipa::path(get, path = "/api/v1/recordings", params(RecordingQuery),
    responses((status = 200, body = Vec<Recording>)), security(("bearer" = [])))]
async fn list_recordings(
    state: web::Data<ApiState>,
    query: web::Query<RecordingQuery>,
) -> HttpResponse {
    match state.db.list_recordings(query.stream_id.as_deref()).await {
        Ok(recordings) => HttpResponse::Ok().json(recordings),
        Err(e) => db_error(e),
    }
}

#[utoipa::path(delete, path = "/api/v1/recordings/{id}", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = ApiError)), security(("bearer" = [])))]
async fn delete_recording(state: web::Data<ApiState>, id: web::Path<String>) -> HttpResponse {
    if !crate::db::ids::is_public_id(&id) {
        return not_found("recording", &id);
    }
    match state.db.ended_recording(&id).await {
        Ok(Some(_)) => {}
        // a recording still being made ends with its broadcast first
        Ok(None) => return not_found("recording", &id),
        Err(e) => return db_error(e),
    }
    // objects first: a row without objects is swept; objects without a row are not
    if let Err(e) = remove_recording(&state.store, &id).await {
        tracing::warn!(recording = %id.as_str(), error = %e, "could not delete a recording's objects");
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the recording's objects could not be deleted; try again",
        );
    }
    match state.db.delete_recording(&id).await {
        Ok(_) => HttpResponse::NoContent().finish(),
        Err(e) => db_error(e),
    }
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Strata admin API", description = "Streams, keys, sessions, recordings, clips and devices."),
    paths(create_stream, list_streams, get_stream, update_stream, delete_stream, rotate_key,
        revoke_key, list_sessions, stop_session, list_recordings, delete_recording, list_ladders,
        super::events::events, super::directory::list, super::directory::one,
        super::directory::events, super::replay::recording, super::replay::clip,
        device_api::create, device_api::list, device_api::get,
        device_api::rename, device_api::delete, device_api::rotate_token,
        device_api::revoke_token, device_api::start, device_api::stop, device_api::set_bitrate,
        clip_api::create_clip, clip_api::list_clips, clip_api::get_clip, clip_api::delete_clip),
    components(schemas(ApiError, CreateStream, UpdateStream, StreamKey, CreatedStream, Stream,
        SessionIdentity, SessionStats, Session, SourceInfo, SessionView, Recording, LadderList,
        super::directory::DirectoryEntry, super::replay::PublicRecording,
        super::replay::PublicClip, clip_api::CreateClip, clip_api::ClipView,
        crate::db::clips::Clip, device_api::CreateDevice, device_api::RenameDevice,
        device_api::SetBitrate, device_api::CreatedDevice, device_api::DeviceToken,
        crate::devices::DeviceView, crate::devices::Presence, crate::devices::DeviceEvent,
        crate::devices::messages::DeviceReport, crate::devices::messages::DeviceState)),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(ApiDoc::openapi().to_json().unwrap_or_default())
}

/// The ladders streams can use.
#[derive(Debug, Serialize, ToSchema)]
pub struct LadderList {
    /// The ladder a stream gets when none is chosen.
    pub default: String,
    pub ladders: Vec<String>,
}

#[utoipa::path(get, path = "/api/v1/ladders",
    responses((status = 200, body = LadderList)), security(("bearer" = [])))]
async fn list_ladders(state: web::Data<ApiState>) -> HttpResponse {
    HttpResponse::Ok().json(LadderList {
        default: state.default_ladder.clone(),
        ladders: state.ladders.names().map(str::to_string).collect(),
    })
}

/// 401 unless the request carries a known admin token.
async fn require_token(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let authorized = req
        .app_data::<web::Data<ApiState>>()
        .zip(req.headers().get(actix_web::http::header::AUTHORIZATION))
        .and_then(|(state, value)| {
            let token = value.to_str().ok()?.strip_prefix("Bearer ")?.trim();
            Some(state.token_hashes.contains(&sha256_hex(token)))
        })
        .unwrap_or(false);
    if !authorized {
        let response = error(
            StatusCode::UNAUTHORIZED,
            "send `Authorization: Bearer TOKEN` with an admin token (printed at first start, or \
             from `auth.admin_tokens`)",
        );
        return Ok(req.into_response(response).map_into_right_body());
    }
    next.call(req)
        .await
        .map(ServiceResponse::map_into_left_body)
}

/// A request body or query that does not parse, answered as a JSON error.
#[derive(Debug, thiserror::Error)]
#[error("bad request: {0}")]
struct BadRequest(String);

impl actix_web::ResponseError for BadRequest {
    fn status_code(&self) -> StatusCode {
        StatusCode::BAD_REQUEST
    }

    fn error_response(&self) -> HttpResponse {
        error(self.status_code(), self.to_string())
    }
}

fn bad_request(e: impl std::fmt::Display) -> actix_web::Error {
    BadRequest(e.to_string()).into()
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::JsonConfig::default()
            .limit(64 * 1024)
            .error_handler(|e, _| bad_request(e)),
    )
    .app_data(web::QueryConfig::default().error_handler(|e, _| bad_request(e)));
    cfg.route("/api/v1/openapi.json", web::get().to(openapi))
        .service(
            web::scope("/api/v1")
                .wrap(actix_web::middleware::from_fn(require_token))
                .route("/streams", web::post().to(create_stream))
                .route("/streams", web::get().to(list_streams))
                .route("/streams/{id}", web::get().to(get_stream))
                .route("/streams/{id}", web::patch().to(update_stream))
                .route("/streams/{id}", web::delete().to(delete_stream))
                .route("/streams/{id}/key", web::post().to(rotate_key))
                .route("/streams/{id}/key", web::delete().to(revoke_key))
                .route("/sessions", web::get().to(list_sessions))
                .route("/sessions/{id}", web::delete().to(stop_session))
                .route("/recordings", web::get().to(list_recordings))
                .route("/recordings/{id}", web::delete().to(delete_recording))
                .route("/ladders", web::get().to(list_ladders))
                .configure(device_api::routes)
                .configure(clip_api::routes)
                .route("/events", web::get().to(super::events::events)),
        );
}
