//! Request counting: `strata_http_requests_total` by route pattern and status. The origin's
//! requests (`/live/…`, `/vod/…`), by far the most numerous, are counted with handles made once
//! per worker for the statuses it answers, so counting one allocates nothing and looks nothing
//! up; every other request is labelled by its matched route pattern.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::web;
use metrics::Counter;

use crate::telemetry::HTTP_REQUESTS;

/// The origin's labels (what `/{root:live|vod}/{tail:.*}` and the download route were called
/// before the origin had scopes of its own, so dashboards keep working).
const OBJECT_ROUTE: &str = "/{root}/{tail}";
const DOWNLOAD_ROUTE: &str = "/vod/{id}/recording.mp4";
/// The statuses the origin answers; any other is counted through the recorder's lookup.
const STATUSES: [u16; 10] = [200, 204, 206, 302, 304, 400, 404, 405, 416, 503];

/// Paths the origin's scopes take (`/live`, `/vod` and below).
fn is_origin(path: &str) -> bool {
    ["/live", "/vod"].iter().any(|root| {
        path.strip_prefix(root)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    })
}

/// One worker's counter handles for the origin's routes and statuses.
pub struct OriginCounters {
    object: Vec<Counter>,
    download: Vec<Counter>,
}

impl Default for OriginCounters {
    fn default() -> Self {
        Self::new()
    }
}

impl OriginCounters {
    pub fn new() -> Self {
        let handles = |route: &'static str| {
            STATUSES
                .iter()
                .map(|status| {
                    metrics::counter!(HTTP_REQUESTS, "route" => route, "status" => status.to_string())
                })
                .collect()
        };
        Self {
            object: handles(OBJECT_ROUTE),
            download: handles(DOWNLOAD_ROUTE),
        }
    }

    fn count(&self, download: bool, status: StatusCode) {
        let (handles, route) = if download {
            (&self.download, DOWNLOAD_ROUTE)
        } else {
            (&self.object, OBJECT_ROUTE)
        };
        match STATUSES.iter().position(|s| *s == status.as_u16()) {
            Some(i) => handles[i].increment(1),
            None => metrics::counter!(
                HTTP_REQUESTS,
                "route" => route,
                "status" => status.as_u16().to_string()
            )
            .increment(1),
        }
    }
}

/// Counts an origin request (`/live/…`, `/vod/…`) with the worker's [`OriginCounters`].
pub async fn count_origin(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let counters = request.app_data::<web::Data<OriginCounters>>().cloned();
    let download =
        request.path().starts_with("/vod/") && request.path().ends_with("/recording.mp4");
    let response = next.call(request).await;
    if let Some(counters) = counters {
        let status = match &response {
            Ok(response) => response.status(),
            Err(e) => e.as_response_error().status_code(),
        };
        counters.count(download, status);
    }
    response
}

/// Counts the request in `strata_http_requests_total` under its route pattern (never the path:
/// label values stay bounded) and final status.
pub async fn count_request(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    if is_origin(request.path()) {
        // counted by `count_origin`
        return next.call(request).await;
    }
    let route = request
        .match_pattern()
        .map_or_else(|| "unmatched".to_string(), |p| without_regexes(&p));
    let response = next.call(request).await;
    let status = match &response {
        Ok(response) => response.status(),
        Err(e) => e.as_response_error().status_code(),
    };
    metrics::counter!(
        crate::telemetry::HTTP_REQUESTS,
        "route" => route,
        "status" => status.as_u16().to_string()
    )
    .increment(1);
    response
}

/// A route pattern with its segments' regexes left out (`/{root:live|vod}/{tail:.*}` →
/// `/{root}/{tail}`), to keep the label readable by people and parsers.
fn without_regexes(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len());
    let mut depth = 0usize;
    let mut in_regex = false;
    for c in pattern.chars() {
        match c {
            '{' => {
                depth += 1;
                if depth == 1 {
                    out.push(c);
                }
            }
            '}' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    in_regex = false;
                    out.push(c);
                }
            }
            ':' if depth == 1 => in_regex = true,
            _ if in_regex || depth > 1 => {}
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_labels_keep_segment_names_and_drop_their_regexes() {
        assert_eq!(
            without_regexes("/{root:live|vod}/{tail:.*}"),
            "/{root}/{tail}"
        );
        assert_eq!(
            without_regexes("/api/v1/streams/{id}"),
            "/api/v1/streams/{id}"
        );
        assert_eq!(without_regexes("/x/{n:[0-9]{1,3}}/y"), "/x/{n}/y");
    }

    #[test]
    fn origin_paths_are_told_by_their_prefix() {
        assert!(is_origin("/live/abc/master.m3u8"));
        assert!(is_origin("/vod/abc/recording.mp4"));
        assert!(is_origin("/live"));
        assert!(!is_origin("/livestream"));
        assert!(!is_origin("/api/v1/streams"));
    }
}
