//! Hooks and call state: runs the endpoints a hook triggers, in declared order, for one
//! integrator and one call. What a step extracts is visible to later steps, to the hook's
//! result, and to later hooks of the same call (stored by call id after every step).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::auth::TokenManager;
use crate::catalog::{Catalog, Endpoint, Integration, Integrator};
use crate::error::{HookError, crm_message};
use crate::http::{HttpClient, RetryPolicy};
use crate::metrics::Metrics;
use crate::model::Hook;
use crate::request::{RequestView, redact_value};
use crate::resolve::{CallState, Scope, resolve};
use crate::storage::{Ack, Storage};

pub use crate::resolve::DRY_RUN_TOKEN;

/// Execute for real, or only show what would be sent.
#[derive(Debug, Clone, Default)]
pub enum Mode {
    #[default]
    Execute,
    /// Send nothing (but the token request when `auth`); chain values from `responses`
    /// (endpoint name → body), else from the endpoints' `example`s.
    DryRun { responses: Map<String, Value>, auth: bool },
}

/// What one step did.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub endpoint: String,
    pub label: String,
    /// False when its `when` condition was not met.
    pub ran: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<RequestView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    pub attempts: usize,
    pub duration_ms: u64,
    pub extracted: Map<String, Value>,
}

/// The result of a hook.
#[derive(Debug, Clone, Serialize)]
pub struct HookOutcome {
    pub integrator: String,
    pub hook: Hook,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call_id: Option<String>,
    pub steps: Vec<StepReport>,
    /// Every value extracted for this call so far.
    pub results: Map<String, Value>,
    /// Response bodies kept by `dataFunction`.
    pub objects: Map<String, Value>,
}

/// The runtime: HTTP client, token cache, storage and metrics, shared by the CLI and server.
pub struct Engine {
    pub http: HttpClient,
    pub tokens: TokenManager,
    pub store: Arc<dyn Storage>,
    pub metrics: Arc<Metrics>,
    call_locks: Mutex<HashMap<CallKey, Arc<tokio::sync::Mutex<()>>>>,
}

/// (integrator id, call id).
type CallKey = (String, String);

/// The call id of a payload (`call_id`, or `callId`).
pub fn call_id_of(call: &Value) -> Option<String> {
    let v = call.get("call_id").or_else(|| call.get("callId"))?;
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Checks a call payload's shape for `hook`; the error names the problem.
pub fn check_call(hook: Hook, call: &Value) -> Result<Option<String>, HookError> {
    let Value::Object(m) = call else {
        return Err(HookError::BadCall("the call payload must be a JSON object".into()));
    };
    if let Some(v) = m.get("call_id").or_else(|| m.get("callId"))
        && (!(v.is_string() || v.is_u64() || v.is_i64()) || v.as_str() == Some(""))
    {
        return Err(HookError::BadCall("'call_id' must be a non-empty string".into()));
    }
    let id = call_id_of(call);
    if id.is_none() && hook.needs_call_id() {
        return Err(HookError::BadCall(format!("'call_id' is required for {hook}")));
    }
    for (k, want) in [("duration", "a number"), ("phone", "a string"), ("direction", "a string")] {
        if let Some(v) = m.get(k) {
            let ok = match k {
                "duration" => v.is_number() || v.is_null(),
                _ => v.is_string() || v.is_null(),
            };
            if !ok {
                return Err(HookError::BadCall(format!("'{k}' must be {want}")));
            }
        }
    }
    Ok(id)
}

impl Engine {
    pub fn new(store: Arc<dyn Storage>, policy: RetryPolicy) -> Engine {
        let metrics = Arc::new(Metrics::default());
        Engine {
            http: HttpClient::new(policy, metrics.clone()),
            tokens: TokenManager::new(store.clone(), metrics.clone()),
            store,
            metrics,
            call_locks: Mutex::new(HashMap::new()),
        }
    }

    fn call_lock(&self, integrator: &str, call_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.call_locks.lock().unwrap_or_else(|p| p.into_inner());
        if locks.len() > 10_000 {
            // Drop locks nobody holds, so the map does not grow without bound.
            locks.retain(|_, l| Arc::strong_count(l) > 1);
        }
        locks.entry((integrator.to_string(), call_id.to_string())).or_default().clone()
    }

    /// Runs `hook` for `integrator_id` with the call payload `call`. When it returns, what the
    /// hook stored for the call is durable.
    pub async fn run_hook(
        &self,
        catalog: &Catalog,
        integrator_id: &str,
        hook: Hook,
        call: &Value,
        mode: &Mode,
    ) -> Result<HookOutcome, HookError> {
        let (out, saved) = self.run_hook_deferred(catalog, integrator_id, hook, call, mode).await;
        let durable = match saved {
            Some(ack) => ack.await,
            None => Ok(()),
        };
        match (out, durable) {
            (Ok(_), Err(e)) => Err(e.into()),
            (out, _) => out,
        }
    }

    /// [`Engine::run_hook`] without waiting for the call state to be committed: the ack of its
    /// last save comes back instead. The caller must await it — or the ack of a write it makes
    /// later, which commits after it — before it acknowledges anything (the delivery worker
    /// records the delivery's outcome and awaits that). Reads see the state at once.
    pub async fn run_hook_deferred(
        &self,
        catalog: &Catalog,
        integrator_id: &str,
        hook: Hook,
        call: &Value,
        mode: &Mode,
    ) -> (Result<HookOutcome, HookError>, Option<Ack<()>>) {
        let started = Instant::now();
        let mut saved = None;
        let out = self.run_hook_inner(catalog, integrator_id, hook, call, mode, &mut saved).await;
        if matches!(mode, Mode::Execute) {
            let outcome = match &out {
                Ok(_) => "ok",
                Err(e) => e.kind(),
            };
            self.metrics.inc(
                "callbridge_hooks_total",
                &[("integrator", integrator_id), ("hook", hook.as_str()), ("outcome", outcome)],
            );
            self.metrics.observe("callbridge_hook_seconds", &[("hook", hook.as_str())], started.elapsed());
        }
        (out, saved)
    }

    /// Runs the hook; `saved` receives the ack of the last call-state save.
    async fn run_hook_inner(
        &self,
        catalog: &Catalog,
        integrator_id: &str,
        hook: Hook,
        call: &Value,
        mode: &Mode,
        saved: &mut Option<Ack<()>>,
    ) -> Result<HookOutcome, HookError> {
        let integrator =
            catalog.integrator(integrator_id).ok_or_else(|| HookError::UnknownIntegrator(integrator_id.to_string()))?;
        let integration = catalog
            .integrations
            .get(&integrator.integration)
            .ok_or_else(|| HookError::UnknownIntegrator(integrator_id.to_string()))?;
        if integration.steps(hook).next().is_none() {
            return Err(HookError::NoSteps { integrator: integrator_id.to_string(), hook: hook.to_string() });
        }
        let call_id = check_call(hook, call)?;
        let execute = matches!(mode, Mode::Execute);
        // Hooks of one call run one at a time, so a retried hook sees what the first one stored.
        let lock = call_id.as_ref().map(|c| self.call_lock(integrator_id, c));
        let _guard = match &lock {
            Some(l) => Some(l.lock().await),
            None => None,
        };
        let mut state = match &call_id {
            Some(c) => self.store.load_call(integrator_id, c)?.unwrap_or_default(),
            None => CallState::default(),
        };
        let mut steps = Vec::new();
        let mut secrets: Vec<String> = integrator.secrets.clone();
        // The state is saved after every step that ran (a crash after step 2 of 3 keeps what
        // steps 1 and 2 extracted). Storage shows a save to reads at once and commits saves in
        // order, so the last save's ack covers them all and the call's next hook may start
        // before it resolves; the caller awaits it before acknowledging anything.
        for e in integration.steps(hook) {
            let report =
                self.run_step(catalog, integration, integrator, hook, call, &mut state, e, mode, &mut secrets).await?;
            if execute
                && report.ran
                && let Some(c) = &call_id
            {
                *saved = Some(self.store.save_call(integrator_id, c, &state));
            }
            steps.push(report);
        }
        // What the hook answers is masked like everything else printed: a CRM may echo a
        // token or key back. The stored call state keeps the real values.
        let r = crate::redact::Redactor::new(secrets);
        let mask = |m: Map<String, Value>| match redact_value(&r, &Value::Object(m)) {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        for s in &mut steps {
            s.extracted = mask(std::mem::take(&mut s.extracted));
        }
        Ok(HookOutcome {
            integrator: integrator_id.to_string(),
            hook,
            call_id,
            steps,
            results: mask(state.results),
            objects: mask(state.objects),
        })
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_step(
        &self,
        catalog: &Catalog,
        integration: &Integration,
        integrator: &Integrator,
        hook: Hook,
        call: &Value,
        state: &mut CallState,
        e: &Endpoint,
        mode: &Mode,
        secrets: &mut Vec<String>,
    ) -> Result<StepReport, HookError> {
        let t0 = Instant::now();
        let mut report = StepReport {
            endpoint: e.name.clone(),
            label: e.label.clone(),
            ran: true,
            request: None,
            status: None,
            attempts: 0,
            duration_ms: 0,
            extracted: Map::new(),
        };
        let base = Scope { integrator, integration, hook, call, state, token: None, refresh_token: None };
        if let Some(w) = &e.when {
            let vars = base.vars();
            let run = catalog.templates.truthy(w, &vars).map_err(|source| crate::resolve::ResolveError::Render {
                endpoint: e.name.clone(),
                what: "when".into(),
                source,
            })?;
            if !run {
                report.ran = false;
                return Ok(report);
            }
        }
        let mut token = match (e.uses_token, mode) {
            (false, _) => None,
            (true, Mode::DryRun { auth: false, .. }) => Some(DRY_RUN_TOKEN.to_string()),
            (true, _) => Some(self.tokens.token(catalog, &self.http, integration, integrator, None).await?),
        };
        secrets.extend(token.iter().filter(|t| t.as_str() != DRY_RUN_TOKEN).cloned());
        let mut req = resolve(catalog, e, &Scope { token: token.as_deref(), ..base })?;
        report.request = Some(req.view());

        let body = match mode {
            Mode::DryRun { responses, .. } => responses.get(&e.name).or(e.example.as_ref()).cloned(),
            Mode::Execute => {
                let mut resp = self.send(e, &req, integrator).await?;
                if resp.status == 401 && e.uses_token {
                    // The token was refused: get a new one, once, and try again, once.
                    tracing::info!(integrator = %integrator.id, endpoint = %e.name, "401: refreshing the token and retrying once");
                    let fresh =
                        self.tokens.token(catalog, &self.http, integration, integrator, token.as_deref()).await?;
                    secrets.push(fresh.clone());
                    token = Some(fresh);
                    let scope = Scope {
                        integrator,
                        integration,
                        hook,
                        call,
                        state,
                        token: token.as_deref(),
                        refresh_token: None,
                    };
                    req = resolve(catalog, e, &scope)?;
                    report.request = Some(req.view());
                    let again = self.send(e, &req, integrator).await?;
                    resp = crate::http::Response { attempts: resp.attempts + again.attempts, ..again };
                }
                report.status = Some(resp.status);
                report.attempts = resp.attempts;
                if !e.success.accepts(resp.status, &resp.body) {
                    let message = req.redactor.redact(&crm_message(&resp.body, e.success.message.as_ref()));
                    tracing::warn!(integrator = %integrator.id, endpoint = %e.name, status = resp.status, %message, "CRM refused");
                    return Err(HookError::Crm {
                        endpoint: e.name.clone(),
                        status: resp.status,
                        message,
                        attempts: resp.attempts,
                    });
                }
                Some(resp.body)
            }
        };
        if let Some(body) = body {
            for (name, path) in &e.extract {
                if let Some(v) = path.first(&body) {
                    report.extracted.insert(name.clone(), v.clone());
                    state.results.insert(name.clone(), v.clone());
                }
            }
            if let Some(obj) = &e.object_name {
                state.objects.insert(obj.clone(), body);
            }
        }
        report.duration_ms = t0.elapsed().as_millis() as u64;
        Ok(report)
    }

    async fn send(
        &self,
        e: &Endpoint,
        req: &crate::request::Request,
        integrator: &Integrator,
    ) -> Result<crate::http::Response, HookError> {
        tracing::debug!(integrator = %integrator.id, endpoint = %e.name, method = req.method.as_str(), url = %req.redacted_url(), "sending");
        self.http.send(req, &integrator.id).await.map_err(|t| HookError::Transport {
            endpoint: e.name.clone(),
            message: t.message,
            attempts: t.attempts,
        })
    }
}
