//! Storage: call state, the token cache and the delivery outbox, behind one trait so that a
//! networked database can replace the embedded SQLite default.

pub mod sqlite;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::resolve::CallState;

pub use sqlite::SqliteStorage;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("storage: {0}")]
    Io(#[from] std::io::Error),
    #[error("storage: stored data is corrupt: {0}")]
    Corrupt(String),
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
pub trait Storage: Send + Sync + 'static {
    fn load_call(&self, integrator: &str, call_id: &str) -> Result<Option<CallState>, StorageError>;
    fn save_call(&self, integrator: &str, call_id: &str, state: &CallState) -> Result<(), StorageError>;

    fn load_token(&self, integrator: &str) -> Result<Option<StoredToken>, StorageError>;
    fn save_token(&self, integrator: &str, token: &StoredToken) -> Result<(), StorageError>;
    fn delete_token(&self, integrator: &str) -> Result<(), StorageError>;

    /// Inserts a delivery, or returns the earlier one with the same (integrator, idempotency key).
    fn insert_delivery(&self, d: NewDelivery) -> Result<Inserted, StorageError>;
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
    fn update_delivery(&self, id: &str, u: &DeliveryUpdate) -> Result<(), StorageError>;
    /// Counts by status (for metrics and readiness).
    fn count_deliveries(&self, status: DeliveryStatus) -> Result<u64, StorageError>;
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
