//! Request extractors whose rejections are JSON errors (axum's own answer in plain text):
//! the JSON body, path and query parameters, and the authenticated integrator of a route.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::Shared;
use super::error::ApiError;
use super::keys;
use crate::catalog::{Catalog, Integrator};
use crate::error::HookError;

/// A JSON body of any shape (the call payload's shape is checked by the engine). The
/// `Content-Type` is not required: callboxes and `curl -d` send JSON under other types.
pub struct ApiJson(pub Value);

impl FromRequest<Shared> for ApiJson {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Shared) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::TooLarge(state.opts.body_limit)
            } else {
                ApiError::BadBody(e.body_text())
            }
        })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::MalformedJson("the body is empty; expected a JSON object (the call payload)".into()));
        }
        serde_json::from_slice(&bytes)
            .map(ApiJson)
            .map_err(|e| ApiError::MalformedJson(format!("line {} column {}: {e}", e.line(), e.column())))
    }
}

/// Path parameters.
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(t)| ApiPath(t))
            .map_err(|e| ApiError::BadParameter(e.body_text()))
    }
}

/// Query parameters.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        Query::<T>::try_from_uri(&parts.uri)
            .map(|Query(t)| ApiQuery(t))
            .map_err(|e| ApiError::BadParameter(e.body_text()))
    }
}

/// The integrator a route names, with the configuration snapshot the request runs on, once
/// the request's key is one of that integrator's (`Authorization: Bearer <key>`).
pub struct Tenant {
    pub catalog: Arc<Catalog>,
    pub integrator: Arc<Integrator>,
}

/// As [`Tenant`], also accepting the key as `?key=` (the iframe route: an `<iframe src>` cannot
/// send headers).
pub struct FrameTenant(pub Tenant);

#[derive(Deserialize)]
struct IntegratorPath {
    id: String,
}

#[derive(Deserialize)]
struct KeyQuery {
    key: Option<String>,
}

impl FromRequestParts<Shared> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Self, ApiError> {
        let key = keys::bearer(&parts.headers)?;
        tenant(parts, state, key).await
    }
}

impl FromRequestParts<Shared> for FrameTenant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Self, ApiError> {
        let key = match keys::bearer(&parts.headers)? {
            Some(k) => Some(k),
            None => ApiQuery::<KeyQuery>::from_request_parts(parts, state).await?.0.key.filter(|k| !k.is_empty()),
        };
        tenant(parts, state, key).await.map(FrameTenant)
    }
}

async fn tenant(parts: &mut Parts, state: &Shared, key: Option<String>) -> Result<Tenant, ApiError> {
    let ApiPath(IntegratorPath { id }) = ApiPath::from_request_parts(parts, state).await?;
    let Some(key) = key else {
        return Err(ApiError::MissingKey);
    };
    let catalog = state.catalog.get();
    let integrator = catalog.integrator(&id).cloned().ok_or(HookError::UnknownIntegrator(id))?;
    keys::authorize(&integrator, Some(&key))?;
    Ok(Tenant { catalog, integrator })
}
