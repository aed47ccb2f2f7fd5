//! The OpenAPI document of the hook server (`GET /openapi.json`), generated from the
//! handlers' annotations and the response types, so it cannot drift from the routes.

use axum::Json;
use serde::Serialize;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use super::views::{HookResponse, WriteResponse};

/// The call payload the callbox sends (docs/call-payload.md). Extra fields are allowed and
/// reach templates as `call.<name>`.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct CallPayload {
    /// The callbox's id of the call; required by every hook but `handleCreateContact`.
    pub call_id: Option<String>,
    /// `inbound` or `outbound`.
    pub direction: Option<String>,
    /// The customer's number, any format.
    pub phone: Option<String>,
    /// `id`, `name`, `email`, `extension`.
    #[schema(value_type = Option<Object>)]
    pub agent: Option<serde_json::Value>,
    /// RFC 3339.
    pub started_at: Option<String>,
    pub answered_at: Option<String>,
    pub ended_at: Option<String>,
    /// Talk time in seconds.
    pub duration: Option<u64>,
    /// `answered`, `missed`, `busy`, `failed`.
    pub status: Option<String>,
    pub recording_url: Option<String>,
    pub disposition: Option<String>,
    pub notes: Option<String>,
    /// `to`, `text` — for `createSMSNote`.
    #[schema(value_type = Option<Object>)]
    pub sms: Option<serde_json::Value>,
    /// What the agent typed in the iframe's form.
    #[schema(value_type = Option<Object>)]
    pub form: Option<serde_json::Value>,
}

/// A 200 answer of the hook route: `getDataIframe`'s data, or a delivered write hook.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum HookOk {
    Read(HookResponse),
    Write(WriteResponse),
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "callbridge hook server",
        description = "Runs an integrator's hooks for the callbox. Authenticate with `Authorization: Bearer <key>` \
            (the integrator's `apiKeys`); the iframe route also accepts `?key=`. Errors are `{\"error\": {\"kind\", \"message\"}}`."
    ),
    paths(
        super::api::hook,
        super::api::config,
        super::api::iframe,
        super::api::delivery,
        super::ops::healthz,
        super::ops::readyz,
        super::ops::metrics,
        document,
    ),
    modifiers(&Security),
    tags(
        (name = "hooks", description = "Run hooks; follow write hooks' deliveries"),
        (name = "integrators", description = "What the callbox shows"),
        (name = "operations", description = "Health, readiness, metrics, this document"),
    )
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme("query_key", SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::new("key"))));
    }
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations", responses((status = 200, description = "The OpenAPI document", content_type = "application/json")))]
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
