//! Operations routes and the cross-cutting middleware: health, readiness, metrics; the request
//! timeout, JSON for every error (whoever produced it), panics, per-route request counts.

use std::sync::atomic::Ordering;

use axum::Json;
use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::Shared;
use super::error::{ApiError, ErrorBody, body_for_status};
use super::views::Health;
use crate::storage::DeliveryStatus;

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok".into(), integrators: None, pending: None })
}

/// Readiness: the configuration is loaded, storage answers, and pending deliveries were
/// queued; 503 while starting or draining.
#[utoipa::path(get, path = "/readyz", tag = "operations", responses((status = 200, body = Health), (status = 503, body = Health)))]
pub async fn readyz(State(s): State<Shared>) -> Response {
    if !s.ready.load(Ordering::SeqCst) {
        let status = if s.stopping.load(Ordering::SeqCst) { "stopping" } else { "starting" };
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Health { status: status.into(), integrators: None, pending: None }),
        )
            .into_response();
    }
    match s.engine.store.count_deliveries(DeliveryStatus::Pending) {
        Ok(pending) => Json(Health {
            status: "ready".into(),
            integrators: Some(s.catalog.get().integrators.len()),
            pending: Some(pending),
        })
        .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "readiness: storage does not answer");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(Health { status: "storage unavailable".into(), integrators: None, pending: None }),
            )
                .into_response()
        }
    }
}

/// Prometheus metrics (text format).
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain")))]
pub async fn metrics(State(s): State<Shared>) -> Response {
    s.outbox.refresh_gauges();
    let text = s.engine.metrics.render();
    ([(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"))], text)
        .into_response()
}

/// No such route.
pub async fn not_found(uri: Uri) -> ApiError {
    ApiError::NoRoute(uri.path().to_string())
}

/// The route exists, not with this method.
pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Answers 504 when a request takes longer than `--request-timeout`.
pub async fn timeout(State(s): State<Shared>, req: Request, next: Next) -> Response {
    let limit = s.opts.request_timeout;
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => ApiError::Timeout(limit).into_response(),
    }
}

/// Turns any error answer that is not JSON (a layer's own rejection) into the JSON error shape.
pub async fn json_errors(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return resp;
    }
    let (mut parts, _) = resp.into_parts();
    let body: ErrorBody = body_for_status(status);
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Response::from_parts(parts, Body::from(bytes))
}

/// The answer when a handler panics: a JSON 500, and the process keeps serving.
pub fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    ApiError::Internal.into_response()
}

/// Counts requests by route template and status (`callbridge_http_requests_total`).
pub async fn count_requests(State(s): State<Shared>, req: Request, next: Next) -> Response {
    let route =
        req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_string()).unwrap_or_else(|| "unmatched".into());
    let method = req.method().as_str().to_string();
    let resp = next.run(req).await;
    let status = resp.status().as_u16().to_string();
    s.engine
        .metrics
        .inc("callbridge_http_requests_total", &[("route", &route), ("method", &method), ("status", &status)]);
    resp
}
