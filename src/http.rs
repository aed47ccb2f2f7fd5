//! HTTP execution: sends a resolved request with a timeout, and retries transient failures
//! (connection errors, timeouts, 5xx, 429 honouring `Retry-After`) with backoff, for a bounded time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::BackoffBuilder;
use serde_json::Value;

use crate::metrics::Metrics;
use crate::request::Request;

/// How transient failures are retried.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: usize,
    pub min_delay: Duration,
    pub max_delay: Duration,
    /// No retry starts after this much time since the first attempt.
    pub max_elapsed: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            min_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(5),
            max_elapsed: Duration::from_secs(30),
        }
    }
}

/// A CRM's answer.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// The body as JSON, or as a JSON string when it is not JSON.
    pub body: Value,
    pub elapsed: Duration,
    pub attempts: usize,
}

/// The request could not get an answer.
#[derive(Debug, thiserror::Error)]
#[error("{message} (after {attempts} attempt(s))")]
pub struct TransportError {
    pub message: String,
    pub attempts: usize,
}

/// The HTTP client the engine shares.
#[derive(Clone)]
pub struct HttpClient {
    client: reqwest::Client,
    pub policy: RetryPolicy,
    metrics: Arc<Metrics>,
}

impl HttpClient {
    pub fn new(policy: RetryPolicy, metrics: Arc<Metrics>) -> HttpClient {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(256)
            // Some servers (and the sandbox's router) match header names case-sensitively.
            .http1_title_case_headers()
            .user_agent(concat!("callbridge/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        HttpClient { client, policy, metrics }
    }

    /// Sends `req`, retrying transient failures. A final 5xx/429 is returned as a response.
    pub async fn send(&self, req: &Request, integrator: &str) -> Result<Response, TransportError> {
        let started = Instant::now();
        let mut delays = backon::ExponentialBuilder::default()
            .with_min_delay(self.policy.min_delay)
            .with_max_delay(self.policy.max_delay)
            .with_max_times(self.policy.max_attempts.saturating_sub(1))
            .with_jitter()
            .build();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let t0 = Instant::now();
            let outcome = self.send_once(req).await;
            self.metrics.observe(
                "callbridge_crm_request_seconds",
                &[("integrator", integrator), ("endpoint", &req.endpoint)],
                t0.elapsed(),
            );
            let retry_after = match &outcome {
                Ok((status, _, ra)) if *status == 429 || *status >= 500 => Some(*ra),
                Ok(_) => None,
                Err(_) => Some(None),
            };
            let next = retry_after.and_then(|ra| {
                let backoff = delays.next()?;
                let delay = ra.map_or(backoff, |ra| ra.min(self.policy.max_delay.max(backoff)));
                (started.elapsed() + delay <= self.policy.max_elapsed).then_some(delay)
            });
            match (outcome, next) {
                (Ok((status, body, _)), None) => {
                    return Ok(Response { status, body, elapsed: started.elapsed(), attempts });
                }
                (Err(e), None) => {
                    return Err(TransportError { message: req.redactor.redact(&e), attempts });
                }
                (_, Some(delay)) => {
                    self.metrics.inc(
                        "callbridge_crm_retries_total",
                        &[("integrator", integrator), ("endpoint", &req.endpoint)],
                    );
                    tracing::debug!(endpoint = %req.endpoint, attempt = attempts, delay_ms = delay.as_millis() as u64, "retrying");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    async fn send_once(&self, req: &Request) -> Result<(u16, Value, Option<Duration>), String> {
        let method = reqwest::Method::from_bytes(req.method.as_str().as_bytes()).map_err(|e| e.to_string())?;
        let mut rb = self.client.request(method, req.url.clone()).timeout(req.timeout);
        for (k, v) in &req.headers {
            rb = rb.header(k, v);
        }
        if let Some(b) = &req.body {
            rb = rb.body(b.to_bytes());
        }
        let resp = rb.send().await.map_err(|e| describe(&e))?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let bytes = resp.bytes().await.map_err(|e| describe(&e))?;
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Ok((status, body, retry_after))
    }
}

fn describe(e: &reqwest::Error) -> String {
    // reqwest's Display includes the URL, which may carry a secret query value; the caller redacts.
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    let mut msg = format!("{kind}: {e}");
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(&format!(": {s}"));
        src = s.source();
    }
    msg
}
