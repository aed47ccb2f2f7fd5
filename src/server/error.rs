//! API errors: what the caller sent was wrong, was not allowed, or could not be served now.
//! The one place the server maps an error to an HTTP status and a `{"error": {kind, message}}` body.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::HookError;

/// Why a request was not served. Messages name the problem and never carry a secret.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No `Authorization: Bearer <key>` (nor `?key=` on the iframe route).
    #[error("missing API key: send 'Authorization: Bearer <key>'")]
    MissingKey,
    /// The key is not one of this integrator's keys.
    #[error("this API key is not valid for integrator '{0}'")]
    WrongKey(String),
    /// The `Authorization` header is not `Bearer <key>`.
    #[error("malformed Authorization header: expected 'Bearer <key>'")]
    MalformedAuthorization,
    /// The hook name is not one this integrator runs.
    #[error("unknown hook '{hook}' for integrator '{integrator}'; valid hooks: {valid}{hint}")]
    UnknownHook { integrator: String, hook: String, valid: String, hint: String },
    /// No delivery with this id (or not one of the key's integrator).
    #[error("unknown delivery '{0}'")]
    UnknownDelivery(String),
    /// No such route.
    #[error("no route for {0}")]
    NoRoute(String),
    /// The route exists, the method does not.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The body is not JSON.
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    /// The body is larger than `--body-limit`.
    #[error("request body too large (the limit is {0} bytes)")]
    TooLarge(usize),
    /// The body could not be read.
    #[error("cannot read the request body: {0}")]
    BadBody(String),
    /// A path or query parameter is missing or has the wrong shape.
    #[error("{0}")]
    BadParameter(String),
    /// The integrator has `--max-concurrent` requests in flight.
    #[error("too many concurrent requests for integrator '{0}'; retry shortly")]
    Busy(String),
    /// The request took longer than `--request-timeout`.
    #[error("the request took longer than {0:?}")]
    Timeout(Duration),
    /// A bug: a handler panicked (the process keeps serving).
    #[error("internal error")]
    Internal,
    /// The hook itself failed (bad call payload, CRM refused, storage…).
    #[error(transparent)]
    Hook(#[from] HookError),
}

impl From<crate::storage::StorageError> for ApiError {
    fn from(e: crate::storage::StorageError) -> Self {
        ApiError::Hook(HookError::Storage(e))
    }
}

/// The JSON body of every error.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable: `missing_key`, `forbidden`, `unknown_integrator`, `unknown_hook`,
    /// `malformed_json`, `bad_call`, `too_large`, `busy`, `crm_error`, …
    pub kind: String,
    /// What to fix, for a human.
    pub message: String,
}

impl ApiError {
    /// The HTTP status; hook errors keep the engine's own mapping ([`HookError::http_status`]).
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::MissingKey | ApiError::MalformedAuthorization => StatusCode::UNAUTHORIZED,
            ApiError::WrongKey(_) => StatusCode::FORBIDDEN,
            ApiError::UnknownHook { .. } | ApiError::UnknownDelivery(_) | ApiError::NoRoute(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::MalformedJson(_) | ApiError::BadBody(_) => StatusCode::BAD_REQUEST,
            ApiError::BadParameter(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Busy(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Hook(e) => StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::BAD_GATEWAY),
        }
    }

    /// A short machine-readable kind.
    pub fn kind(&self) -> &'static str {
        match self {
            ApiError::MissingKey => "missing_key",
            ApiError::MalformedAuthorization => "malformed_authorization",
            ApiError::WrongKey(_) => "forbidden",
            ApiError::UnknownHook { .. } => "unknown_hook",
            ApiError::UnknownDelivery(_) => "unknown_delivery",
            ApiError::NoRoute(_) => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::MalformedJson(_) => "malformed_json",
            ApiError::TooLarge(_) => "too_large",
            ApiError::BadBody(_) => "bad_body",
            ApiError::BadParameter(_) => "bad_parameter",
            ApiError::Busy(_) => "busy",
            ApiError::Timeout(_) => "timeout",
            ApiError::Internal => "internal",
            ApiError::Hook(e) => e.kind(),
        }
    }

    /// The JSON body.
    pub fn body(&self) -> ErrorBody {
        ErrorBody { error: ErrorDetail { kind: self.kind().to_string(), message: self.to_string() } }
    }
}

/// The error JSON for `status` when only the status is known (a layer's own rejection).
pub fn body_for_status(status: StatusCode) -> ErrorBody {
    let kind = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::REQUEST_TIMEOUT | StatusCode::GATEWAY_TIMEOUT => "timeout",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::TOO_MANY_REQUESTS => "busy",
        s if s.is_server_error() => "internal",
        _ => "bad_request",
    };
    let message = status.canonical_reason().unwrap_or("error").to_string();
    ErrorBody { error: ErrorDetail { kind: kind.to_string(), message } }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match &self {
            ApiError::Internal => tracing::error!(kind = self.kind(), "request failed"),
            ApiError::Hook(e) if status.is_server_error() => {
                tracing::warn!(kind = self.kind(), error = %e, "hook failed")
            }
            _ => tracing::info!(status = status.as_u16(), kind = self.kind(), "request refused"),
        }
        let mut resp = (status, axum::Json(self.body())).into_response();
        match self {
            ApiError::Busy(_) => {
                resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            ApiError::MissingKey | ApiError::MalformedAuthorization => {
                resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hook_errors_keep_the_engine_status() {
        let e = ApiError::from(HookError::BadCall("'call_id' is required".into()));
        assert_eq!(e.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(e.kind(), "bad_call");
        assert_eq!(ApiError::Busy("a".into()).status(), StatusCode::TOO_MANY_REQUESTS);
    }
}
