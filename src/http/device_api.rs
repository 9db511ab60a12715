//! The admin API's devices (`/api/v1/devices`, under the same bearer token as the rest of
//! `api`): create (the token is in that answer only), list, get, rename, delete, rotate or
//! revoke the token, and start, stop or set the bit rate of a connected device. Deleting a
//! device or changing its token disconnects it at once, and its broadcast ends.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::api::{db_error, error, not_found, ApiError, ApiState};
use crate::db::DbError;
use crate::devices::{CommandError, DeviceView};

/// How long `start` waits for the device's broadcast to be admitted, and `stop` for it to end.
const START_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDevice {
    /// 1–64 letters, digits, `-`, `_`; unique among devices.
    pub name: String,
    /// The stream the device publishes to.
    pub stream_id: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenameDevice {
    pub name: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetBitrate {
    /// kbit/s, 50–100000.
    pub kbps: u32,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedDevice {
    pub device: DeviceView,
    /// Starts with `dt_`. Only its hash is stored: keep it now.
    pub token: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceToken {
    /// The new token, shown once; the old one no longer connects.
    pub token: String,
}

fn device_db_error(e: DbError) -> HttpResponse {
    match e {
        DbError::DeviceNameTaken(_) => error(StatusCode::CONFLICT, e.to_string()),
        DbError::BadDeviceName => error(StatusCode::BAD_REQUEST, e.to_string()),
        e => db_error(e),
    }
}

fn command_error(e: CommandError) -> HttpResponse {
    let status = match &e {
        CommandError::Offline | CommandError::Elsewhere(_) | CommandError::Refused(_) => {
            StatusCode::CONFLICT
        }
        CommandError::Busy => StatusCode::SERVICE_UNAVAILABLE,
        CommandError::Database(_) => return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    error(status, e.to_string())
}

/// The device's current view, as the answer of a command.
async fn answer(state: &ApiState, id: &str, status: StatusCode) -> HttpResponse {
    match state.devices.get(id).await {
        Ok(Some(device)) => HttpResponse::build(status).json(device),
        Ok(None) => not_found("device", id),
        Err(e) => db_error(e),
    }
}

#[utoipa::path(post, path = "/api/v1/devices", request_body = CreateDevice,
    responses((status = 201, body = CreatedDevice), (status = 400, body = ApiError),
        (status = 404, body = ApiError, description = "no such stream"), (status = 409, body = ApiError)),
    security(("bearer" = [])))]
async fn create(state: web::Data<ApiState>, body: web::Json<CreateDevice>) -> HttpResponse {
    match state.db.create_device(&body.name, &body.stream_id).await {
        Ok((device, token)) => {
            let stream = state
                .db
                .stream_by_id(&device.stream_id)
                .await
                .ok()
                .flatten();
            HttpResponse::Created().json(CreatedDevice {
                device: state.devices.view(&device, stream.as_ref()),
                token,
            })
        }
        Err(DbError::NotFound) => not_found("stream", &body.stream_id),
        Err(e) => device_db_error(e),
    }
}

#[utoipa::path(get, path = "/api/v1/devices",
    responses((status = 200, body = Vec<DeviceView>)), security(("bearer" = [])))]
async fn list(state: web::Data<ApiState>) -> HttpResponse {
    match state.devices.list().await {
        Ok(devices) => HttpResponse::Ok().json(devices),
        Err(e) => db_error(e),
    }
}

#[utoipa::path(get, path = "/api/v1/devices/{id}", params(("id" = String, Path)),
    responses((status = 200, body = DeviceView), (status = 404, body = ApiError)),
    security(("bearer" = [])))]
async fn get(state: web::Data<ApiState>, id: web::Path<String>) -> HttpResponse {
    answer(&state, &id, StatusCode::OK).await
}

#[utoipa::path(patch, path = "/api/v1/devices/{id}", params(("id" = String, Path)),
    request_body = RenameDevice,
    responses((status = 200, body = DeviceView), (status = 400, body = ApiError),
        (status = 404, body = ApiError), (status = 409, body = ApiError)),
    security(("bearer" = [])))]
async fn rename(
    state: web::Data<ApiState>,
    id: web::Path<String>,
    body: web::Json<RenameDevice>,
) -> HttpResponse {
    match state.db.rename_device(&id, &body.name).await {
        Ok(Some(_)) => answer(&state, &id, StatusCode::OK).await,
        Ok(None) => not_found("device", &id),
        Err(e) => device_db_error(e),
    }
}

#[utoipa::path(delete, path = "/api/v1/devices/{id}", params(("id" = String, Path)),
    responses((status = 204, description = "deleted; a connected device is disconnected and its broadcast ends"),
        (status = 404, body = ApiError)),
    security(("bearer" = [])))]
async fn delete(state: web::Data<ApiState>, id: web::Path<String>) -> HttpResponse {
    match state.db.delete_device(&id).await {
        Ok(true) => {
            state.devices.disconnect(&id);
            HttpResponse::NoContent().finish()
        }
        Ok(false) => not_found("device", &id),
        Err(e) => db_error(e),
    }
}

#[utoipa::path(post, path = "/api/v1/devices/{id}/token", params(("id" = String, Path)),
    responses((status = 200, body = DeviceToken, description = "the new token, shown once; the device is disconnected until it connects with it"),
        (status = 404, body = ApiError)),
    security(("bearer" = [])))]
async fn rotate_token(state: web::Data<ApiState>, id: web::Path<String>) -> HttpResponse {
    match state.db.rotate_device_token(&id).await {
        Ok(Some(token)) => {
            state.devices.disconnect(&id);
            HttpResponse::Ok().json(DeviceToken { token })
        }
        Ok(None) => not_found("device", &id),
        Err(e) => db_error(e),
    }
}

#[utoipa::path(delete, path = "/api/v1/devices/{id}/token", params(("id" = String, Path)),
    responses((status = 204, description = "the token no longer connects and the device is disconnected; rotate to get a new one"),
        (status = 404, body = ApiError)),
    security(("bearer" = [])))]
async fn revoke_token(state: web::Data<ApiState>, id: web::Path<String>) -> HttpResponse {
    match state.db.revoke_device_token(&id).await {
        Ok(true) => {
            state.devices.disconnect(&id);
            HttpResponse::NoContent().finish()
        }
        Ok(false) => not_found("device", &id),
        Err(e) => db_error(e),
    }
}

#[utoipa::path(post, path = "/api/v1/devices/{id}/start", params(("id" = String, Path)),
    responses((status = 202, body = DeviceView, description = "the broadcast is admitted and the device told where to send RTP"),
        (status = 404, body = ApiError),
        (status = 409, body = ApiError, description = "offline, connected to another node, or the broadcast was refused (why is in the message)"),
        (status = 503, body = ApiError)),
    security(("bearer" = [])))]
async fn start(state: web::Data<ApiState>, id: web::Path<String>) -> HttpResponse {
    let device = match state.db.device_by_id(&id).await {
        Ok(Some(device)) => device,
        Ok(None) => return not_found("device", &id),
        Err(e) => return db_error(e),
    };
    match state.devices.start(&device, START_TIMEOUT).await {
        Ok(()) => answer(&state, &id, StatusCode::ACCEPTED).await,
        Err(e) => command_error(e),
    }
}

#[utoipa::path(post, path = "/api/v1/devices/{id}/stop", params(("id" = String, Path)),
    responses((status = 202, body = DeviceView, description = "the device's broadcast has ended and the device is told to stop"),
        (status = 404, body = ApiError), (status = 409, body = ApiError)),
    security(("bearer" = [])))]
async fn stop(state: web::Data<ApiState>, id: web::Path<String>) -> HttpResponse {
    let device = match state.db.device_by_id(&id).await {
        Ok(Some(device)) => device,
        Ok(None) => return not_found("device", &id),
        Err(e) => return db_error(e),
    };
    match state.devices.stop(&device, START_TIMEOUT).await {
        // offline: nothing streams, and it will not start again by itself
        Ok(()) | Err(CommandError::Offline) => answer(&state, &id, StatusCode::ACCEPTED).await,
        Err(e) => command_error(e),
    }
}

#[utoipa::path(post, path = "/api/v1/devices/{id}/bitrate", params(("id" = String, Path)),
    request_body = SetBitrate,
    responses((status = 202, body = DeviceView), (status = 400, body = ApiError),
        (status = 404, body = ApiError), (status = 409, body = ApiError)),
    security(("bearer" = [])))]
async fn set_bitrate(
    state: web::Data<ApiState>,
    id: web::Path<String>,
    body: web::Json<SetBitrate>,
) -> HttpResponse {
    if !(50..=100_000).contains(&body.kbps) {
        return error(
            StatusCode::BAD_REQUEST,
            "kbps must be between 50 and 100000",
        );
    }
    let device = match state.db.device_by_id(&id).await {
        Ok(Some(device)) => device,
        Ok(None) => return not_found("device", &id),
        Err(e) => return db_error(e),
    };
    match state.devices.set_bitrate(&device, body.kbps).await {
        Ok(()) => answer(&state, &id, StatusCode::ACCEPTED).await,
        Err(e) => command_error(e),
    }
}

/// The device routes, inside the API's authenticated scope.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/devices", web::post().to(create))
        .route("/devices", web::get().to(list))
        .route("/devices/{id}", web::get().to(get))
        .route("/devices/{id}", web::patch().to(rename))
        .route("/devices/{id}", web::delete().to(delete))
        .route("/devices/{id}/token", web::post().to(rotate_token))
        .route("/devices/{id}/token", web::delete().to(revoke_token))
        .route("/devices/{id}/start", web::post().to(start))
        .route("/devices/{id}/stop", web::post().to(stop))
        .route("/devices/{id}/bitrate", web::post().to(set_bitrate));
}
