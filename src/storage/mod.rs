//! Storage: call state, the token cache and the delivery outbox, behind one trait so that a
//! networked database can replace the embedded SQLite default.

pub mod retention;
pub mod sqlite;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::resolve::CallState;

pub use sqlite::SqliteStorage;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    #[error("storage: {0}")]
    Db(String),
    #[error("storage: {0}")]
    Io(String),
    #[error("storage: stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("storage: the writer has stopped")]
    Closed,
}

impl From<rusqlite::Error> for StorageError {
    fn from(e: rusqlite::Error) -> StorageError {
        StorageError::Db(e.to_string())
    }
}

impl From<std::io::Error> for StorageError {
    fn from(e: std::io::Error) -> StorageError {
        StorageError::Io(e.to_string())
    }
}

/// A write on its way to storage: resolves once it is committed (durable), or failed.
/// Await it in async code; [`Ack::wait`] blocks for it outside an async runtime.
///
/// Writes are committed in the order they were made, so once one write's ack resolves, every
/// write made before it is committed too.
#[must_use = "a write is durable only once its ack resolved"]
pub struct Ack<T>(tokio::sync::oneshot::Receiver<Result<T, StorageError>>);

impl<T> Ack<T> {
    /// An ack and the sender that resolves it.
    pub fn channel() -> (tokio::sync::oneshot::Sender<Result<T, StorageError>>, Ack<T>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        (tx, Ack(rx))
    }

    /// An ack already resolved with `r`.
    pub fn ready(r: Result<T, StorageError>) -> Ack<T> {
        let (tx, ack) = Ack::channel();
        let _ = tx.send(r);
        ack
    }

    /// Blocks until the write is committed. Not from inside an async runtime (it would
    /// block a worker): await the ack there.
    pub fn wait(self) -> Result<T, StorageError> {
        self.0.blocking_recv().unwrap_or(Err(StorageError::Closed))
    }
}

impl<T> std::future::Future for Ack<T> {
    type Output = Result<T, StorageError>;
    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx).map(|r| r.unwrap_or(Err(StorageError::Closed)))
    }
}

/// A cached access token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredToken {
    pub access_token: String,
    pub refresh_token: Option<String>,
    /// Unix milliseconds.
    pub expires_at_ms: i64,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    Pending,
    Delivered,
    Dead,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Dead => "dead",
        }
    }
    pub fn parse(s: &str) -> Option<DeliveryStatus> {
        match s {
            "pending" => Some(DeliveryStatus::Pending),
            "delivered" => Some(DeliveryStatus::Delivered),
            "dead" => Some(DeliveryStatus::Dead),
            _ => None,
        }
    }
}

/// A write hook accepted for delivery to the CRM (the outbox).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    pub id: String,
    /// Insertion order; deliveries of one call are sent in this order.
    pub seq: i64,
    pub integrator: String,
    pub hook: String,
    pub call_id: Option<String>,
    pub payload: Value,
    pub idempotency_key: Option<String>,
    pub status: DeliveryStatus,
    pub attempts: u32,
    /// Unix milliseconds.
    pub next_attempt_at_ms: i64,
    pub last_error: Option<String>,
    /// The hook's result once delivered.
    pub result: Option<Value>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// A delivery to insert.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub id: String,
    pub integrator: String,
    pub hook: String,
    pub call_id: Option<String>,
    pub payload: Value,
    pub idempotency_key: Option<String>,
    pub now_ms: i64,
}

/// The outcome of inserting a delivery.
#[derive(Debug, Clone)]
pub enum Inserted {
    New(Delivery),
    /// The idempotency key was seen before: the earlier delivery.
    Duplicate(Delivery),
}

/// What one round of [`Storage::prune`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Pruned {
    /// Delivered deliveries removed.
    pub deliveries: u64,
    /// Call states removed.
    pub calls: u64,
    /// Call states looked at (the round's share of the pass over all of them).
    pub calls_scanned: u64,
    /// The round removed as many deliveries as it was allowed to: there may be more.
    pub more_deliveries: bool,
    /// The round ended a pass over the call states (the next round starts a new one).
    pub calls_pass_done: bool,
}

/// A change of a delivery's state after an attempt.
#[derive(Debug, Clone)]
pub struct DeliveryUpdate {
    pub status: DeliveryStatus,
    pub attempts: u32,
    pub next_attempt_at_ms: i64,
    pub last_error: Option<String>,
    pub result: Option<Value>,
    pub now_ms: i64,
}

/// The persistence the engine needs. Implementations must be safe to share across threads.
///
/// Reads answer at once. Writes return an [`Ack`] that resolves when the write is durable, so
/// that an implementation can commit many writes together (group commit) without blocking the
/// caller's thread; writes are applied in the order they were made.
pub trait Storage: Send + Sync + 'static {
    fn load_call(&self, integrator: &str, call_id: &str) -> Result<Option<CallState>, StorageError>;
    fn save_call(&self, integrator: &str, call_id: &str, state: &CallState) -> Ack<()>;

    fn load_token(&self, integrator: &str) -> Result<Option<StoredToken>, StorageError>;
    fn save_token(&self, integrator: &str, token: &StoredToken) -> Ack<()>;
    fn delete_token(&self, integrator: &str) -> Ack<()>;

    /// Inserts a delivery, or answers the earlier one with the same (integrator, idempotency key).
    fn insert_delivery(&self, d: NewDelivery) -> Ack<Inserted>;
    fn get_delivery(&self, id: &str) -> Result<Option<Delivery>, StorageError>;
    /// Newest first; `status`/`integrator` filter when given.
    fn list_deliveries(
        &self,
        status: Option<DeliveryStatus>,
        integrator: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Delivery>, StorageError>;
    /// Pending deliveries due at `now_ms`, oldest first.
    fn due_deliveries(&self, now_ms: i64, limit: usize) -> Result<Vec<Delivery>, StorageError>;
    fn update_delivery(&self, id: &str, u: &DeliveryUpdate) -> Ack<()>;
    /// Counts by status (for metrics and readiness).
    fn count_deliveries(&self, status: DeliveryStatus) -> Result<u64, StorageError>;

    /// One bounded round of retention: removes up to `limit` *delivered* deliveries created
    /// before `before_ms`, and looks at the next `limit` call states (continuing the previous
    /// round's pass over them), removing those not saved since `before_ms`. Pending and dead
    /// deliveries are never removed. Rounds are small so that other writes go on between them.
    fn prune(&self, before_ms: i64, limit: usize) -> Ack<Pruned>;
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
