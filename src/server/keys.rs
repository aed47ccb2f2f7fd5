//! API keys and CORS, per integrator: a key opens one integrator's routes only (compared in
//! constant time), and only the origins an integrator lists get CORS headers.

use std::sync::Arc;
use std::time::Duration;

use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::error::ApiError;
use super::reload::CatalogHandle;
use crate::catalog::Integrator;
use crate::storage::Storage;

/// The key presented in `Authorization: Bearer <key>`, if any.
pub fn bearer(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let s = v.to_str().map_err(|_| ApiError::MalformedAuthorization)?.trim();
    let (scheme, key) = s.split_once(' ').ok_or(ApiError::MalformedAuthorization)?;
    if !scheme.eq_ignore_ascii_case("bearer") || key.trim().is_empty() {
        return Err(ApiError::MalformedAuthorization);
    }
    Ok(Some(key.trim().to_string()))
}

/// Whether `presented` is one of `integrator`'s keys. Both sides are hashed first so the
/// comparison takes the same time whatever the keys' lengths, and every key is compared.
pub fn key_matches(integrator: &Integrator, presented: &str) -> bool {
    let p = Sha256::digest(presented.as_bytes());
    let mut found = subtle::Choice::from(0);
    for k in &integrator.api_keys {
        found |= Sha256::digest(k.as_bytes()).ct_eq(&p);
    }
    found.into()
}

/// Checks the request's key against `integrator`: missing → 401, someone else's → 403.
pub fn authorize(integrator: &Integrator, presented: Option<&str>) -> Result<(), ApiError> {
    match presented {
        None => Err(ApiError::MissingKey),
        Some(k) if key_matches(integrator, k) => Ok(()),
        Some(_) => Err(ApiError::WrongKey(integrator.id.clone())),
    }
}

/// Whose origins apply to a path: an integrator's routes name it; a delivery names its integrator.
fn integrator_of_path(path: &str, store: &dyn Storage) -> Option<String> {
    let mut seg = path.trim_start_matches('/').split('/');
    match (seg.next(), seg.next(), seg.next()) {
        (Some("v1"), Some("integrators"), Some(id)) if !id.is_empty() => {
            Some(percent_encoding::percent_decode_str(id).decode_utf8_lossy().into_owned())
        }
        (Some("v1"), Some("deliveries"), Some(id)) if !id.is_empty() => {
            let id = percent_encoding::percent_decode_str(id).decode_utf8_lossy();
            store.get_delivery(&id).ok().flatten().map(|d| d.integrator)
        }
        _ => None,
    }
}

/// CORS for the API: an origin is allowed on a path when the integrator the path belongs to
/// lists it in `allowedOrigins`; preflights are answered the same way. Other origins get no
/// `Access-Control-Allow-Origin`, so browsers keep the response from them.
pub fn cors(catalog: Arc<CatalogHandle>, store: Arc<dyn Storage>) -> CorsLayer {
    let allow = AllowOrigin::predicate(move |origin: &HeaderValue, parts: &Parts| {
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        let Some(id) = integrator_of_path(parts.uri.path(), store.as_ref()) else {
            return false;
        };
        let cat = catalog.get();
        cat.integrator(&id).is_some_and(|i| i.allowed_origins.iter().any(|o| o.trim_end_matches('/') == origin))
    });
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("idempotency-key"),
            HeaderName::from_static("prefer"),
            HeaderName::from_static("x-request-id"),
        ])
        .expose_headers([HeaderName::from_static("x-request-id"), header::LOCATION, header::RETRY_AFTER])
        .max_age(Duration::from_secs(600))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_is_parsed_and_malformed_headers_refused() {
        let mut h = HeaderMap::new();
        assert!(matches!(bearer(&h), Ok(None)));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer k-1"));
        assert_eq!(bearer(&h).ok().flatten().as_deref(), Some("k-1"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert!(matches!(bearer(&h), Err(ApiError::MalformedAuthorization)));
    }

    #[test]
    fn delivery_and_integrator_paths_name_their_integrator() {
        let store = crate::storage::SqliteStorage::in_memory().expect("db");
        assert_eq!(integrator_of_path("/v1/integrators/acme%2D1/config", &store).as_deref(), Some("acme-1"));
        assert_eq!(integrator_of_path("/v1/deliveries/nope", &store), None);
        assert_eq!(integrator_of_path("/healthz", &store), None);
    }
}
