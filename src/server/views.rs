//! What the API answers, as JSON shapes: a hook's result, a delivery, the callbox
//! configuration. Documented here once, for the responses and the OpenAPI document alike.

use serde::Serialize;
use serde_json::{Map, Value, json};
use utoipa::ToSchema;

use crate::catalog::{Catalog, Integrator};
use crate::hooks::HookOutcome;
use crate::model::Hook;
use crate::redact::Redactor;
use crate::storage::{Delivery, DeliveryStatus};

/// The answer to `getDataIframe`: what the CRM returned for the caller.
#[derive(Debug, Serialize, ToSchema)]
pub struct HookResponse {
    /// Always `ok`.
    pub status: String,
    pub integrator: String,
    pub hook: String,
    pub call_id: Option<String>,
    /// Every value extracted for this call so far (`results.<name>` in templates).
    #[schema(value_type = Object)]
    pub results: Map<String, Value>,
    /// Response bodies kept by `dataFunction` (`objects.<objectName>`).
    #[schema(value_type = Object)]
    pub objects: Map<String, Value>,
    pub steps: Vec<StepSummary>,
}

/// One endpoint of the hook.
#[derive(Debug, Serialize, ToSchema)]
pub struct StepSummary {
    pub endpoint: String,
    /// False when its `when` condition was not met.
    pub ran: bool,
    /// The CRM's HTTP status.
    pub status: Option<u16>,
    pub attempts: usize,
    pub duration_ms: u64,
}

impl HookResponse {
    pub fn from_outcome(o: HookOutcome) -> HookResponse {
        HookResponse {
            status: "ok".into(),
            integrator: o.integrator,
            hook: o.hook.as_str().to_string(),
            call_id: o.call_id,
            results: o.results,
            objects: o.objects,
            steps: o
                .steps
                .into_iter()
                .map(|s| StepSummary {
                    endpoint: s.endpoint,
                    ran: s.ran,
                    status: s.status,
                    attempts: s.attempts,
                    duration_ms: s.duration_ms,
                })
                .collect(),
        }
    }
}

/// A stored write hook and where it stands.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryView {
    pub id: String,
    pub integrator: String,
    pub hook: String,
    pub call_id: Option<String>,
    /// `pending` (queued or backing off), `delivered`, or `dead` (gave up; see `last_error`).
    pub status: String,
    /// Attempts made so far.
    pub attempts: u32,
    /// When the next attempt is due (RFC 3339), while pending.
    pub next_attempt_at: Option<String>,
    pub last_error: Option<String>,
    /// Once delivered: each step and the values extracted. Once dead: `{"error": {kind, message, status}}`.
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
    pub idempotency_key: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    /// Where to poll it.
    pub url: String,
}

/// RFC 3339 (UTC, milliseconds) of unix milliseconds.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}

impl DeliveryView {
    pub fn of(d: &Delivery) -> DeliveryView {
        DeliveryView {
            id: d.id.clone(),
            integrator: d.integrator.clone(),
            hook: d.hook.clone(),
            call_id: d.call_id.clone(),
            status: d.status.as_str().to_string(),
            attempts: d.attempts,
            next_attempt_at: (d.status == DeliveryStatus::Pending).then(|| rfc3339(d.next_attempt_at_ms)),
            last_error: d.last_error.clone(),
            result: d.result.clone(),
            idempotency_key: d.idempotency_key.clone(),
            created_at: rfc3339(d.created_at_ms),
            updated_at: rfc3339(d.updated_at_ms),
            url: format!("/v1/deliveries/{}", d.id),
        }
    }
}

/// The answer to a write hook: the delivery, and the values extracted once it is delivered.
#[derive(Debug, Serialize, ToSchema)]
pub struct WriteResponse {
    /// `delivered`, `pending` (202: poll `delivery.url`), or `dead`.
    pub status: String,
    /// True when an earlier request had the same `Idempotency-Key`: this is its delivery.
    pub duplicate: bool,
    /// Once delivered: the values extracted for this call (e.g. the CRM's call log id).
    #[schema(value_type = Option<Object>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub results: Option<Value>,
    pub delivery: DeliveryView,
}

impl WriteResponse {
    pub fn of(d: &Delivery, duplicate: bool) -> WriteResponse {
        WriteResponse {
            status: d.status.as_str().to_string(),
            duplicate,
            results: d.result.as_ref().and_then(|r| r.get("results")).cloned(),
            delivery: DeliveryView::of(d),
        }
    }
}

/// A dead delivery's answer: the error, and the delivery.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadResponse {
    pub error: super::error::ErrorDetail,
    /// Always `dead`.
    pub status: String,
    pub duplicate: bool,
    pub delivery: DeliveryView,
}

/// What the callbox needs to set itself up for an integrator: click-to-call placement,
/// options, the call-start data functions, the screen-pop layout, and the API's URLs.
/// Secret field values and API keys are never included.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigResponse {
    pub integrator: String,
    pub integration: String,
    pub label: String,
    /// `CRM` or `SMS`.
    #[serde(rename = "type")]
    pub kind: String,
    pub callcenter_id: String,
    pub description: Option<String>,
    /// Merged info (the template's, overridden key by key by the integrator's):
    /// `renderTooltip`, `listOptions`, `userInfo`, `dataFunction`.
    #[schema(value_type = Object)]
    pub info: Value,
    /// Merged iframe layout: `title`, `fields`, `links`, `forms`.
    #[schema(value_type = Option<Object>)]
    pub iframe: Option<Value>,
    /// Values of the list options (integrator's, else the template default).
    #[schema(value_type = Object)]
    pub options: Map<String, Value>,
    /// Fields that are not secret (secret ones are left out).
    #[schema(value_type = Object)]
    pub fields: Map<String, Value>,
    /// The hooks this integrator runs, each with its URL.
    #[schema(value_type = Object)]
    pub hooks: Map<String, Value>,
    /// The screen-pop page; replace `{call_id}`.
    pub iframe_url: String,
}

impl ConfigResponse {
    /// `None` when the integrator's integration is missing (cannot happen in a valid catalog).
    pub fn of(catalog: &Catalog, i: &Integrator) -> Option<ConfigResponse> {
        let integration = catalog.integrations.get(&i.integration)?;
        let fields: Map<String, Value> = i
            .fields
            .iter()
            .filter(|(k, _)| integration.param(k).is_some_and(|p| !p.secret))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let hooks: Map<String, Value> = integration
            .hooks()
            .into_iter()
            .map(|h: Hook| (h.as_str().to_string(), json!(format!("/v1/integrators/{}/hooks/{}", i.id, h.as_str()))))
            .collect();
        let r = Redactor::new(i.secrets.iter().chain(&i.api_keys).cloned());
        let mask = |v: Value| crate::request::redact_value(&r, &v);
        let mask_map = |m: Map<String, Value>| match mask(Value::Object(m)) {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        Some(ConfigResponse {
            integrator: i.id.clone(),
            integration: integration.name.clone(),
            label: integration.label.clone(),
            kind: serde_json::to_value(integration.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            callcenter_id: i.callcenter_id.clone(),
            description: i.description.as_deref().map(|d| r.redact(d)),
            info: mask(serde_json::to_value(&i.info).unwrap_or(Value::Null)),
            iframe: i.iframe.as_ref().and_then(|f| serde_json::to_value(f).ok()).map(mask),
            options: mask_map(i.options.clone()),
            fields: mask_map(fields),
            hooks,
            iframe_url: format!("/v1/integrators/{}/iframe?call={{call_id}}", i.id),
        })
    }
}

/// `/healthz` and `/readyz`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`, `ready`, or `starting`/`stopping` (503).
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub integrators: Option<usize>,
    /// Deliveries waiting to be sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending: Option<u64>,
}
