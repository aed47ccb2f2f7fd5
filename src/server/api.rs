//! The integrator routes: run a hook (reads synchronously, writes through the durable
//! outbox), read the callbox configuration, show the screen-pop page, poll a delivery.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;
use utoipa::IntoParams;

use super::Shared;
use super::error::{ApiError, ErrorBody, ErrorDetail};
use super::extract::{ApiJson, ApiPath, ApiQuery, FrameTenant, Tenant};
use super::views::{ConfigResponse, DeadResponse, DeliveryView, HookResponse, WriteResponse};
use crate::error::HookError;
use crate::hooks::{Mode, check_call};
use crate::model::Hook;
use crate::storage::{Delivery, DeliveryStatus, Inserted, NewDelivery, now_ms};

/// Longest `Idempotency-Key` accepted.
const MAX_IDEMPOTENCY_KEY: usize = 255;

#[derive(Deserialize)]
pub struct HookPath {
    pub hook: String,
}

/// Query parameters of the hook route.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HookQuery {
    /// `true`: answer `202 Accepted` with the delivery id at once (write hooks), like
    /// `Prefer: respond-async`.
    #[serde(rename = "async")]
    #[param(rename = "async", value_type = Option<bool>)]
    pub is_async: Option<String>,
}

/// Runs a hook for an integrator.
///
/// `getDataIframe` runs at once and answers with what the CRM returned. Write hooks
/// (`savePreLogCRM`, `saveLogCRM`, `createSMSNote`, `handleCreateTicket`,
/// `handleCreateContact`) are stored durably first; then the answer waits for the CRM
/// (200 with the outcome) unless the caller asked for `Prefer: respond-async` or `?async=true`,
/// or the CRM takes longer than the server's wait timeout: then 202 with the delivery to poll.
#[utoipa::path(
    post,
    path = "/v1/integrators/{id}/hooks/{hook}",
    tag = "hooks",
    params(
        ("id" = String, Path, description = "The integrator id"),
        ("hook" = String, Path, description = "getDataIframe, savePreLogCRM, saveLogCRM, createSMSNote, handleCreateTicket or handleCreateContact"),
        HookQuery,
        ("Prefer" = Option<String>, Header, description = "`respond-async`: answer 202 at once with the delivery id"),
        ("Idempotency-Key" = Option<String>, Header, description = "A repeated key answers with the first request's delivery; the CRM is called once"),
    ),
    request_body(content = super::openapi::CallPayload, description = "The call payload (docs/call-payload.md); extra fields are allowed"),
    responses(
        (status = 200, description = "getDataIframe: the data extracted (HookResponse); a write hook: delivered (WriteResponse)", body = super::openapi::HookOk),
        (status = 202, description = "Accepted: stored, not delivered yet; poll the delivery", body = WriteResponse),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "Missing API key", body = ErrorBody),
        (status = 403, description = "The key is not this integrator's", body = ErrorBody),
        (status = 404, description = "Unknown integrator or hook", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 422, description = "Bad call payload (not an object, missing call_id, wrong types)", body = ErrorBody),
        (status = 429, description = "Too many concurrent requests for this integrator (Retry-After)", body = ErrorBody),
        (status = 502, description = "The CRM refused or could not be reached (dead delivery)", body = DeadResponse),
    ),
    security(("bearer" = []))
)]
pub async fn hook(
    State(s): State<Shared>,
    tenant: Tenant,
    ApiPath(HookPath { hook }): ApiPath<HookPath>,
    ApiQuery(q): ApiQuery<HookQuery>,
    headers: HeaderMap,
    ApiJson(call): ApiJson,
) -> Result<Response, ApiError> {
    let Tenant { catalog, integrator } = tenant;
    let integration = catalog
        .integrations
        .get(&integrator.integration)
        .ok_or_else(|| HookError::UnknownIntegrator(integrator.id.clone()))?;
    let runs = integration.hooks();
    let Some(hook) = Hook::parse(&hook).filter(|h| runs.contains(h)) else {
        let valid: Vec<&str> = runs.iter().map(|h| h.as_str()).collect();
        let hint = crate::diagnostics::did_you_mean(&hook, valid.iter().copied())
            .map(|h| format!(" — {h}"))
            .unwrap_or_default();
        return Err(ApiError::UnknownHook { integrator: integrator.id.clone(), hook, valid: valid.join(", "), hint });
    };
    let _slot = s.limits.try_acquire(&integrator.id)?;
    let call_id = check_call(hook, &call)?;

    if !hook.is_write() {
        let outcome = s.engine.run_hook(&catalog, &integrator.id, hook, &call, &Mode::Execute).await?;
        return Ok(Json(HookResponse::from_outcome(outcome)).into_response());
    }

    let respond_async =
        prefers_async(&headers) || q.is_async.as_deref().is_some_and(|v| matches!(v, "true" | "1" | "yes"));
    let new = NewDelivery {
        // Time-ordered (v7): ids sort by acceptance, and the id index grows at its end.
        id: uuid::Uuid::now_v7().to_string(),
        integrator: integrator.id.clone(),
        hook: hook.as_str().to_string(),
        call_id,
        payload: call,
        idempotency_key: idempotency_key(&headers)?,
        now_ms: now_ms(),
    };
    write_hook(&s, new, respond_async).await
}

/// Stores a write hook, hands it to the outbox, and answers: at once (202), or once the CRM
/// answered (200, or the error of a dead delivery), or 202 when the wait timeout passes first.
async fn write_hook(s: &Shared, new: NewDelivery, respond_async: bool) -> Result<Response, ApiError> {
    // Committed before anything is acknowledged: from here on, a crash loses nothing.
    let (d, duplicate) = match s.engine.store.insert_delivery(new).await? {
        Inserted::New(d) => (d, false),
        Inserted::Duplicate(d) => (d, true),
    };
    tracing::debug!(delivery = %d.id, integrator = %d.integrator, hook = %d.hook, call_id = d.call_id.as_deref().unwrap_or(""), duplicate, "write hook accepted");
    if d.status != DeliveryStatus::Pending {
        return Ok(finished(&d, duplicate));
    }
    if respond_async {
        let resp = accepted(&d, duplicate);
        s.outbox.submit(d);
        return Ok(resp);
    }
    // Watch before submitting, so the end cannot be missed.
    let done = s.outbox.watch(&d.id);
    let id = d.id.clone();
    s.outbox.submit(d);
    let wait = s.opts.wait_timeout.min(s.opts.request_timeout.saturating_sub(Duration::from_millis(500)));
    // A duplicate may have finished between the insert and the watch: look once more.
    let ended = if duplicate {
        s.engine.store.get_delivery(&id)?.filter(|n| n.status != DeliveryStatus::Pending)
    } else {
        None
    };
    let ended = match ended {
        Some(e) => {
            drop(done);
            Some(e)
        }
        None => tokio::time::timeout(wait, done).await.ok().and_then(Result::ok),
    };
    // The watch was served, or gave up: drop it.
    s.outbox.forget(&id);
    if let Some(e) = ended {
        return Ok(finished(&e, duplicate));
    }
    let latest = s.engine.store.get_delivery(&id)?.ok_or(ApiError::UnknownDelivery(id))?;
    Ok(if latest.status == DeliveryStatus::Pending {
        accepted(&latest, duplicate)
    } else {
        finished(&latest, duplicate)
    })
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let k = v.to_str().map_err(|_| ApiError::BadParameter("Idempotency-Key must be visible ASCII".into()))?.trim();
    if k.is_empty() || k.len() > MAX_IDEMPOTENCY_KEY {
        return Err(ApiError::BadParameter(format!("Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} characters")));
    }
    Ok(Some(k.to_string()))
}

/// `Prefer: respond-async` (RFC 7240), among other preferences.
fn prefers_async(headers: &HeaderMap) -> bool {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.split(';').next().is_some_and(|p| p.trim().eq_ignore_ascii_case("respond-async")))
}

/// 202 with the delivery to poll.
fn accepted(d: &Delivery, duplicate: bool) -> Response {
    let mut resp = (StatusCode::ACCEPTED, Json(WriteResponse::of(d, duplicate))).into_response();
    if let Ok(loc) = HeaderValue::from_str(&format!("/v1/deliveries/{}", d.id)) {
        resp.headers_mut().insert(header::LOCATION, loc);
    }
    resp
}

/// A delivered delivery answers 200; a dead one the status of its error (e.g. 502), with the error.
fn finished(d: &Delivery, duplicate: bool) -> Response {
    if d.status != DeliveryStatus::Dead {
        return (StatusCode::OK, Json(WriteResponse::of(d, duplicate))).into_response();
    }
    let err = d.result.as_ref().and_then(|r| r.get("error"));
    let field = |k: &str| err.and_then(|e| e.get(k)).and_then(|v| v.as_str()).map(str::to_string);
    let status = err
        .and_then(|e| e.get("status"))
        .and_then(|v| v.as_u64())
        .and_then(|s| StatusCode::from_u16(s as u16).ok())
        .unwrap_or(StatusCode::BAD_GATEWAY);
    let body = DeadResponse {
        error: ErrorDetail {
            kind: field("kind").unwrap_or_else(|| "delivery_failed".into()),
            message: field("message").or_else(|| d.last_error.clone()).unwrap_or_else(|| "delivery failed".into()),
        },
        status: "dead".into(),
        duplicate,
        delivery: DeliveryView::of(d),
    };
    (status, Json(body)).into_response()
}

/// The callbox configuration of an integrator (secrets and keys left out).
#[utoipa::path(
    get,
    path = "/v1/integrators/{id}/config",
    tag = "integrators",
    params(("id" = String, Path, description = "The integrator id")),
    responses(
        (status = 200, description = "Merged info and iframe configuration", body = ConfigResponse),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn config(tenant: Tenant) -> Result<Json<ConfigResponse>, ApiError> {
    ConfigResponse::of(&tenant.catalog, &tenant.integrator)
        .map(Json)
        .ok_or_else(|| HookError::UnknownIntegrator(tenant.integrator.id.clone()).into())
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct IframeQuery {
    /// The call id whose stored state the page shows.
    pub call: Option<String>,
    /// The API key, for `<iframe src>` which cannot send headers (this route only).
    pub key: Option<String>,
}

/// The screen-pop page for a call (HTML), over the call's stored state.
#[utoipa::path(
    get,
    path = "/v1/integrators/{id}/iframe",
    tag = "integrators",
    params(("id" = String, Path, description = "The integrator id"), IframeQuery),
    responses(
        (status = 200, description = "The page", content_type = "text/html"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 422, description = "Missing `call`", body = ErrorBody),
    ),
    security(("bearer" = []), ("query_key" = []))
)]
pub async fn iframe(
    State(s): State<Shared>,
    FrameTenant(tenant): FrameTenant,
    ApiQuery(q): ApiQuery<IframeQuery>,
) -> Result<Response, ApiError> {
    let call = q
        .call
        .filter(|c| !c.is_empty())
        .ok_or_else(|| ApiError::BadParameter("missing query parameter 'call' (the call id)".into()))?;
    let _slot = s.limits.try_acquire(&tenant.integrator.id)?;
    let state = s.engine.store.load_call(&tenant.integrator.id, &call)?.unwrap_or_default();
    let page = crate::iframe::render_page(&tenant.catalog, &tenant.integrator, &state, &call);
    let mut resp = Html(page).into_response();
    let h = resp.headers_mut();
    // The key may be in this page's URL: do not let it leak through Referer or caches.
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    let ancestors: Vec<&str> =
        tenant.integrator.allowed_origins.iter().map(|o| o.trim_end_matches('/')).filter(|o| valid_source(o)).collect();
    let csp = format!("frame-ancestors 'self'{}{}", if ancestors.is_empty() { "" } else { " " }, ancestors.join(" "));
    if let Ok(v) = HeaderValue::from_str(&csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    Ok(resp)
}

/// An origin that is safe to put in a CSP source list.
fn valid_source(o: &str) -> bool {
    !o.is_empty() && o.chars().all(|c| c.is_ascii_alphanumeric() || ":/.-_*[]".contains(c))
}

#[derive(Deserialize)]
pub struct DeliveryPath {
    pub id: String,
}

/// A delivery: where a write hook stands. Only a key of the delivery's integrator sees it.
#[utoipa::path(
    get,
    path = "/v1/deliveries/{id}",
    tag = "hooks",
    params(("id" = String, Path, description = "The delivery id (from a 202 answer)")),
    responses(
        (status = 200, description = "The delivery", body = DeliveryView),
        (status = 401, body = ErrorBody),
        (status = 404, description = "Unknown delivery, or another integrator's", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn delivery(
    State(s): State<Shared>,
    headers: HeaderMap,
    ApiPath(DeliveryPath { id }): ApiPath<DeliveryPath>,
) -> Result<Json<DeliveryView>, ApiError> {
    let key = super::keys::bearer(&headers)?.ok_or(ApiError::MissingKey)?;
    let d = s.engine.store.get_delivery(&id)?.ok_or_else(|| ApiError::UnknownDelivery(id.clone()))?;
    let catalog = s.catalog.get();
    // Another integrator's delivery is answered as unknown: its existence is not theirs to learn.
    let owner = catalog.integrator(&d.integrator).filter(|i| super::keys::key_matches(i, &key));
    if owner.is_none() {
        return Err(ApiError::UnknownDelivery(id));
    }
    Ok(Json(DeliveryView::of(&d)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefer_respond_async_is_found_among_preferences() {
        let mut h = HeaderMap::new();
        assert!(!prefers_async(&h));
        h.insert("prefer", HeaderValue::from_static("return=minimal, respond-async; wait=5"));
        assert!(prefers_async(&h));
    }
}
