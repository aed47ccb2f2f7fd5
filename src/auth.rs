//! Auth and the token cache: an integration's Auth endpoint obtains the token; it is cached
//! per integrator (memory, then storage) until shortly before it expires. Concurrent hooks of
//! one integrator share one token request; a refresh keeps the old refresh token when the
//! response has no new one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use serde_json::Value;

use crate::catalog::{Catalog, Integration, Integrator};
use crate::error::HookError;
use crate::http::HttpClient;
use crate::metrics::Metrics;
use crate::model::Hook;
use crate::resolve::{CallState, Scope, resolve};
use crate::storage::{Storage, StoredToken, now_ms};

/// Tokens are renewed this long before they expire (or a tenth of their lifetime if shorter).
const REFRESH_MARGIN_MS: i64 = 60_000;

/// The per-integrator token cache.
pub struct TokenManager {
    store: Arc<dyn Storage>,
    memory: RwLock<HashMap<String, StoredToken>>,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    metrics: Arc<Metrics>,
}

fn fresh(t: &StoredToken, now: i64) -> bool {
    t.expires_at_ms > now
}

impl TokenManager {
    pub fn new(store: Arc<dyn Storage>, metrics: Arc<Metrics>) -> TokenManager {
        TokenManager { store, memory: RwLock::new(HashMap::new()), locks: Mutex::new(HashMap::new()), metrics }
    }

    fn cached(&self, id: &str) -> Option<StoredToken> {
        self.memory.read().unwrap_or_else(|p| p.into_inner()).get(id).cloned()
    }

    /// A valid access token for `integrator`. `rejected` is a token the CRM just refused
    /// (401): it is not returned again.
    pub async fn token(
        &self,
        catalog: &Catalog,
        http: &HttpClient,
        integration: &Integration,
        integrator: &Integrator,
        rejected: Option<&str>,
    ) -> Result<String, HookError> {
        let now = now_ms();
        let usable = |t: &StoredToken| fresh(t, now) && Some(t.access_token.as_str()) != rejected;
        if let Some(t) = self.cached(&integrator.id).filter(usable) {
            return Ok(t.access_token);
        }
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            locks.entry(integrator.id.clone()).or_default().clone()
        };
        let _guard = lock.lock().await;
        // Someone else may have fetched it while we waited.
        if let Some(t) = self.cached(&integrator.id).filter(usable) {
            return Ok(t.access_token);
        }
        let stored = self.store.load_token(&integrator.id)?;
        if let Some(t) = stored.clone().filter(usable) {
            self.remember(&integrator.id, t.clone());
            return Ok(t.access_token);
        }
        let previous_refresh = self.cached(&integrator.id).or(stored).and_then(|t| t.refresh_token);
        let t = self.fetch(catalog, http, integration, integrator, previous_refresh).await?;
        self.store.save_token(&integrator.id, &t).await?;
        self.remember(&integrator.id, t.clone());
        Ok(t.access_token)
    }

    fn remember(&self, id: &str, t: StoredToken) {
        self.memory.write().unwrap_or_else(|p| p.into_inner()).insert(id.to_string(), t);
    }

    async fn fetch(
        &self,
        catalog: &Catalog,
        http: &HttpClient,
        integration: &Integration,
        integrator: &Integrator,
        previous_refresh: Option<String>,
    ) -> Result<StoredToken, HookError> {
        let Some(e) = integration.auth_endpoint() else {
            return Err(HookError::Auth {
                integrator: integrator.id.clone(),
                message: "the integration has no Auth endpoint".into(),
            });
        };
        let Some(rt) = &e.auth_response else {
            return Err(HookError::Auth {
                integrator: integrator.id.clone(),
                message: "the Auth endpoint has no responseType".into(),
            });
        };
        let empty = Value::Null;
        let state = CallState::default();
        let scope = Scope {
            integrator,
            integration,
            hook: Hook::GetDataIframe,
            call: &empty,
            state: &state,
            token: None,
            refresh_token: previous_refresh.as_deref(),
        };
        let req = resolve(catalog, e, &scope)?;
        self.metrics.inc("callbridge_token_requests_total", &[("integrator", &integrator.id)]);
        tracing::info!(integrator = %integrator.id, url = %req.redacted_url(), "requesting an access token");
        let resp = http.send(&req, &integrator.id).await.map_err(|t| HookError::Transport {
            endpoint: e.name.clone(),
            message: t.message,
            attempts: t.attempts,
        })?;
        let ok = e.success.accepts(resp.status, &resp.body);
        let redactor = scope.redactor();
        if !ok {
            return Err(HookError::Auth {
                integrator: integrator.id.clone(),
                message: format!(
                    "token request answered {}: {}",
                    resp.status,
                    redactor.redact(&crate::error::crm_message(&resp.body, None))
                ),
            });
        }
        let access = rt.token.first(&resp.body).and_then(|v| v.as_str().map(str::to_string));
        let Some(access_token) = access else {
            return Err(HookError::Auth {
                integrator: integrator.id.clone(),
                message: format!("the token response has nothing at {}", rt.token.source()),
            });
        };
        let ttl_s = rt
            .expires_in
            .first(&resp.body)
            .and_then(|v| v.as_i64().or_else(|| v.as_str().and_then(|s| s.parse().ok())))
            .filter(|s| *s > 0)
            .unwrap_or(integration.token_ttl as i64);
        let margin = REFRESH_MARGIN_MS.min(ttl_s * 100);
        let refresh_token =
            rt.refresh_token.first(&resp.body).and_then(|v| v.as_str().map(str::to_string)).or(previous_refresh);
        Ok(StoredToken { access_token, refresh_token, expires_at_ms: now_ms() + ttl_s * 1000 - margin })
    }
}
