//! The durable delivery worker: sends stored write hooks to the CRM — one at a time and in
//! acceptance order per call, different calls concurrently — retrying with backoff, then dead-lettering.
//!
//! Deliveries reach it two ways: handed over by the hook handler right after the insert
//! committed (no polling latency), and found in storage (at start, and every `poll_interval`),
//! so whatever was accepted before a crash resumes. Before each attempt the record is read
//! again (except the first attempt of one just inserted), so a delivery finished elsewhere
//! (e.g. by `callbridge deliveries retry`) is not re-sent.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{Semaphore, oneshot, watch};
use tracing::Instrument;

use super::reload::CatalogHandle;
use crate::catalog::Catalog;
use crate::error::HookError;
use crate::hooks::{Engine, HookOutcome, Mode};
use crate::model::Hook;
use crate::redact::Redactor;
use crate::storage::{Ack, Delivery, DeliveryStatus, DeliveryUpdate, Storage, StorageError, now_ms};

/// Most pending deliveries read from storage at start.
const LOAD_LIMIT: usize = 100_000;
/// Most read by each later poll: the oldest, which is where a delivery replayed from the CLI
/// (or left behind by the start limit) is found.
const POLL_LIMIT: usize = 1_000;

/// A delivery younger than this (ms) is attempted without re-reading it first.
const FRESH_MS: i64 = 1_000;

/// How attempts are spaced and when to give up.
#[derive(Debug, Clone)]
pub struct RetryPlan {
    /// Attempts in all, the first included; then the delivery is dead.
    pub max_attempts: u32,
    /// Delay after the first failed attempt; doubles after each later one.
    pub base: Duration,
    pub max: Duration,
}

impl RetryPlan {
    /// The delay after `attempts` failed attempts: exponential, capped, with 50–100 % jitter so
    /// that deliveries failing together do not come back together.
    pub fn delay(&self, attempts: u32) -> Duration {
        let exp = self.base.saturating_mul(1u32 << attempts.saturating_sub(1).min(20));
        let capped = exp.min(self.max);
        let jitter = std::collections::hash_map::RandomState::new().build_hasher().finish() % 500;
        capped.mul_f64(0.5 + jitter as f64 / 1000.0)
    }
}

/// What one attempt did: the record's new state, the error when it failed, and the ack of
/// the call state it saved (see [`Engine::run_hook_deferred`]): await it, or the update's ack
/// (which commits after it), before telling anyone the outcome.
pub struct Attempt {
    pub update: DeliveryUpdate,
    pub error: Option<HookError>,
    pub saved: Option<Ack<()>>,
}

/// Runs a stored delivery's hook once and says what the record becomes: delivered; pending
/// again (a transient failure with attempts left); or dead (a permanent failure, or the last attempt).
pub async fn attempt(engine: &Engine, catalog: &Catalog, d: &Delivery, plan: &RetryPlan) -> Attempt {
    let attempts = d.attempts + 1;
    let (result, saved) = match Hook::parse(&d.hook) {
        Some(hook) => engine.run_hook_deferred(catalog, &d.integrator, hook, &d.payload, &Mode::Execute).await,
        None => (Err(HookError::BadCall(format!("stored hook '{}' is not a hook", d.hook))), None),
    };
    let now = now_ms();
    let redactor =
        catalog.integrator(&d.integrator).map(|i| Redactor::new(i.secrets.iter().cloned())).unwrap_or_default();
    match result {
        Ok(outcome) => Attempt {
            update: DeliveryUpdate {
                status: DeliveryStatus::Delivered,
                attempts,
                next_attempt_at_ms: now,
                last_error: d.last_error.clone(),
                result: Some(outcome_json(&outcome, &redactor)),
                now_ms: now,
            },
            error: None,
            saved,
        },
        Err(e) => {
            let message = redactor.redact(&e.to_string());
            let update = if e.is_transient() && attempts < plan.max_attempts {
                let delay = plan.delay(attempts);
                DeliveryUpdate {
                    status: DeliveryStatus::Pending,
                    attempts,
                    next_attempt_at_ms: now + delay.as_millis() as i64,
                    last_error: Some(message),
                    result: None,
                    now_ms: now,
                }
            } else {
                DeliveryUpdate {
                    status: DeliveryStatus::Dead,
                    attempts,
                    next_attempt_at_ms: now,
                    result: Some(json!({"error": {"kind": e.kind(), "message": message, "status": e.http_status()}})),
                    last_error: Some(message),
                    now_ms: now,
                }
            };
            Attempt { update, error: Some(e), saved }
        }
    }
}

/// What a delivered hook answered, as stored with the delivery: each step, and the values
/// extracted for the call (already masked by the engine; masked again for what it stores).
pub fn outcome_json(o: &HookOutcome, redactor: &Redactor) -> Value {
    let steps: Vec<Value> = o
        .steps
        .iter()
        .map(|s| json!({"endpoint": s.endpoint, "ran": s.ran, "status": s.status, "attempts": s.attempts, "duration_ms": s.duration_ms}))
        .collect();
    let v = json!({"hook": o.hook, "call_id": o.call_id, "steps": steps, "results": o.results});
    crate::request::redact_value(redactor, &v)
}

/// `d` after `u` was applied (what storage now holds).
pub fn applied(mut d: Delivery, u: &DeliveryUpdate) -> Delivery {
    d.status = u.status;
    d.attempts = u.attempts;
    d.next_attempt_at_ms = u.next_attempt_at_ms;
    d.last_error = u.last_error.clone();
    if u.result.is_some() {
        d.result = u.result.clone();
    }
    d.updated_at_ms = u.now_ms;
    d
}

/// Deliveries of one call share a lane; a delivery without a call id has its own.
type LaneKey = (String, String);

fn lane_key(d: &Delivery) -> LaneKey {
    match &d.call_id {
        Some(c) => (d.integrator.clone(), format!("call:{c}")),
        None => (d.integrator.clone(), format!("delivery:{}", d.id)),
    }
}

#[derive(Default)]
struct Lanes {
    /// Each lane's queued deliveries by seq; a lane present here has a task running it.
    queues: HashMap<LaneKey, BTreeMap<i64, Delivery>>,
    /// Ids queued or in flight, so a delivery found twice is queued once.
    known: HashSet<String>,
}

enum Drive {
    /// Delivered or dead (or gone): the lane moves on.
    Done,
    /// Shutting down: the record stays as it is in storage and resumes at the next start.
    Stopped,
}

/// The worker. Share it behind an `Arc`.
pub struct Outbox {
    store: Arc<dyn Storage>,
    engine: Arc<Engine>,
    catalog: Arc<CatalogHandle>,
    plan: RetryPlan,
    workers: u32,
    permits: Arc<Semaphore>,
    lanes: Mutex<Lanes>,
    waiters: Mutex<HashMap<String, Vec<oneshot::Sender<Delivery>>>>,
    stop: watch::Sender<bool>,
}

impl Outbox {
    pub fn new(engine: Arc<Engine>, catalog: Arc<CatalogHandle>, plan: RetryPlan, workers: u32) -> Arc<Outbox> {
        Arc::new(Outbox {
            store: engine.store.clone(),
            engine,
            catalog,
            plan,
            workers,
            permits: Arc::new(Semaphore::new(workers as usize)),
            lanes: Mutex::new(Lanes::default()),
            waiters: Mutex::new(HashMap::new()),
            stop: watch::Sender::new(false),
        })
    }

    /// Queues every pending delivery in storage that is not queued yet; returns how many were new.
    pub fn load_pending(self: &Arc<Self>) -> Result<usize, StorageError> {
        self.load(LOAD_LIMIT)
    }

    fn load(self: &Arc<Self>, limit: usize) -> Result<usize, StorageError> {
        // All pending ones, due or not: a lane waits for its head's next attempt, so a later
        // delivery of the same call cannot overtake an earlier one that is backing off.
        let pending = self.store.due_deliveries(i64::MAX, limit)?;
        let mut added = 0;
        for d in pending {
            if self.submit(d) {
                added += 1;
            }
        }
        self.refresh_gauges();
        Ok(added)
    }

    /// Polls storage every `interval` until shutdown (the first load is the caller's).
    pub fn spawn_poller(self: &Arc<Self>, interval: Duration) {
        let me = self.clone();
        let mut stop = self.stop.subscribe();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {}
                    _ = stop.changed() => return,
                }
                match me.load(POLL_LIMIT) {
                    Ok(n) if n > 0 => {
                        tracing::info!(found = n, "queued pending deliveries from storage")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = %e, "cannot read pending deliveries"),
                }
            }
        });
    }

    /// Queues a delivery (in its call's lane, by seq). False when it was already queued or
    /// the worker is stopping (it stays pending in storage).
    pub fn submit(self: &Arc<Self>, d: Delivery) -> bool {
        if *self.stop.borrow() || d.status != DeliveryStatus::Pending {
            return false;
        }
        let mut lanes = self.lanes.lock().unwrap_or_else(|p| p.into_inner());
        if !lanes.known.insert(d.id.clone()) {
            return false;
        }
        let key = lane_key(&d);
        match lanes.queues.get_mut(&key) {
            Some(q) => {
                q.insert(d.seq, d);
            }
            None => {
                lanes.queues.insert(key.clone(), BTreeMap::from([(d.seq, d)]));
                tokio::spawn(self.clone().run_lane(key));
            }
        }
        true
    }

    /// A receiver for the delivery's final state (delivered or dead).
    pub fn watch(&self, id: &str) -> oneshot::Receiver<Delivery> {
        let (tx, rx) = oneshot::channel();
        self.waiters.lock().unwrap_or_else(|p| p.into_inner()).entry(id.to_string()).or_default().push(tx);
        rx
    }

    /// Drops the waiters of `id` that gave up.
    pub fn forget(&self, id: &str) {
        let mut w = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = w.get_mut(id) {
            v.retain(|tx| !tx.is_closed());
            if v.is_empty() {
                w.remove(id);
            }
        }
    }

    fn notify(&self, d: Delivery) {
        let mut senders = self.waiters.lock().unwrap_or_else(|p| p.into_inner()).remove(&d.id).unwrap_or_default();
        if let Some(last) = senders.pop() {
            for tx in senders {
                let _ = tx.send(d.clone());
            }
            let _ = last.send(d);
        }
    }

    /// Sets the queue gauges from storage.
    pub fn refresh_gauges(&self) {
        let m = &self.engine.metrics;
        for status in [DeliveryStatus::Pending, DeliveryStatus::Dead] {
            if let Ok(n) = self.store.count_deliveries(status) {
                let name = match status {
                    DeliveryStatus::Pending => "callbridge_deliveries_pending",
                    _ => "callbridge_deliveries_dead",
                };
                m.set_gauge(name, &[], n as i64);
            }
        }
        let in_flight = self.workers as i64 - self.permits.available_permits() as i64;
        m.set_gauge("callbridge_deliveries_in_flight", &[], in_flight.max(0));
    }

    /// Stops starting attempts and waits up to `within` for those in flight to finish and be
    /// recorded. True when none was left running.
    pub async fn shutdown(&self, within: Duration) -> bool {
        self.stop.send_replace(true);
        matches!(tokio::time::timeout(within, self.permits.acquire_many(self.workers)).await, Ok(Ok(_)))
    }

    async fn run_lane(self: Arc<Self>, key: LaneKey) {
        let mut stop = self.stop.subscribe();
        loop {
            // The head leaves the queue while it is driven (it stays in `known`); the lane
            // stays, so what is submitted meanwhile queues behind it.
            let head = {
                let mut lanes = self.lanes.lock().unwrap_or_else(|p| p.into_inner());
                match lanes.queues.get_mut(&key).and_then(BTreeMap::pop_first) {
                    Some((_, d)) => d,
                    None => {
                        lanes.queues.remove(&key);
                        return;
                    }
                }
            };
            let id = head.id.clone();
            let drive = self.drive(head, &mut stop).await;
            let mut lanes = self.lanes.lock().unwrap_or_else(|p| p.into_inner());
            match drive {
                Drive::Done => {
                    lanes.known.remove(&id);
                }
                Drive::Stopped => {
                    lanes.known.remove(&id);
                    for d in lanes.queues.remove(&key).into_iter().flat_map(BTreeMap::into_values) {
                        lanes.known.remove(&d.id);
                    }
                    return;
                }
            }
        }
    }

    /// Attempts `d` until it is delivered or dead, waiting out its backoff between attempts.
    async fn drive(&self, d: Delivery, stop: &mut watch::Receiver<bool>) -> Drive {
        // A delivery inserted a moment ago and never attempted is as the handler handed it
        // over: its first attempt needs no re-read. Every other attempt re-reads (the record
        // may have been finished or leased elsewhere meanwhile, e.g. by `deliveries retry`).
        let id = d.id.clone();
        let mut known = (d.attempts == 0 && now_ms() - d.updated_at_ms < FRESH_MS).then_some(d);
        loop {
            if *stop.borrow() {
                return Drive::Stopped;
            }
            let read = match known.take() {
                Some(k) => Ok(Some(k)),
                None => self.store.get_delivery(&id),
            };
            let current = match read {
                Ok(Some(c)) => c,
                Ok(None) => return Drive::Done,
                Err(e) => {
                    tracing::error!(delivery = %id, error = %e, "cannot read delivery; trying again shortly");
                    if pause(Duration::from_secs(1), stop).await {
                        return Drive::Stopped;
                    }
                    continue;
                }
            };
            if current.status != DeliveryStatus::Pending {
                self.notify(current);
                return Drive::Done;
            }
            let wait = current.next_attempt_at_ms - now_ms();
            if wait > 0 {
                if pause(Duration::from_millis(wait as u64), stop).await {
                    return Drive::Stopped;
                }
                continue;
            }
            let permit = tokio::select! {
                p = self.permits.clone().acquire_owned() => p,
                _ = stop.changed() => return Drive::Stopped,
            };
            let Ok(permit) = permit else {
                return Drive::Stopped;
            };
            if *stop.borrow() {
                return Drive::Stopped;
            }
            let span = tracing::info_span!("delivery", id = %current.id, integrator = %current.integrator, hook = %current.hook, attempt = current.attempts + 1);
            let catalog = self.catalog.get();
            let a = attempt(&self.engine, &catalog, &current, &self.plan).instrument(span).await;
            // One wait covers both writes: the update commits with or after the call state.
            let saved = match (self.store.update_delivery(&current.id, &a.update).await, a.saved) {
                (Ok(()), Some(state)) => state.await,
                (r, _) => r,
            };
            // The permit is held until the outcome is recorded, so a drain waits for it.
            drop(permit);
            let after = applied(current, &a.update);
            self.record(&after, a.error.as_ref());
            if let Err(e) = saved {
                tracing::error!(delivery = %after.id, error = %e, "cannot record the delivery's outcome; it will be attempted again");
                if pause(Duration::from_secs(1), stop).await {
                    return Drive::Stopped;
                }
                continue;
            }
            if after.status != DeliveryStatus::Pending {
                self.notify(after);
                return Drive::Done;
            }
        }
    }

    fn record(&self, d: &Delivery, error: Option<&HookError>) {
        let outcome = match d.status {
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Pending => "retry",
            DeliveryStatus::Dead => "dead",
        };
        let m = &self.engine.metrics;
        m.inc("callbridge_deliveries_total", &[("integrator", &d.integrator), ("hook", &d.hook), ("outcome", outcome)]);
        let error = d.last_error.as_deref().filter(|_| error.is_some()).unwrap_or("");
        match d.status {
            DeliveryStatus::Delivered => {
                let age = Duration::from_millis((d.updated_at_ms - d.created_at_ms).max(0) as u64);
                m.observe("callbridge_delivery_seconds", &[("integrator", &d.integrator)], age);
                tracing::info!(delivery = %d.id, integrator = %d.integrator, hook = %d.hook, attempts = d.attempts, "delivered");
            }
            DeliveryStatus::Pending => {
                let in_ms = (d.next_attempt_at_ms - d.updated_at_ms).max(0);
                tracing::warn!(delivery = %d.id, integrator = %d.integrator, hook = %d.hook, attempts = d.attempts, retry_in_ms = in_ms, error, "delivery failed; will retry");
            }
            DeliveryStatus::Dead => {
                tracing::error!(delivery = %d.id, integrator = %d.integrator, hook = %d.hook, attempts = d.attempts, error, "delivery dead-lettered");
            }
        }
    }
}

/// Sleeps `d`, or less when stopping; true when stopping.
async fn pause(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => *stop.borrow(),
        _ = stop.changed() => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_doubles_is_capped_and_jittered() {
        let p = RetryPlan { max_attempts: 8, base: Duration::from_secs(2), max: Duration::from_secs(60) };
        for _ in 0..20 {
            let d1 = p.delay(1);
            assert!(d1 >= Duration::from_secs(1) && d1 <= Duration::from_secs(2), "{d1:?}");
            let d3 = p.delay(3);
            assert!(d3 >= Duration::from_secs(4) && d3 <= Duration::from_secs(8), "{d3:?}");
            assert!(p.delay(30) <= Duration::from_secs(60));
        }
    }
}
