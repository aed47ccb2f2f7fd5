//! The embedded default: one SQLite file in WAL mode, readable only by its owner.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::*;

/// SQLite-backed [`Storage`].
pub struct SqliteStorage {
    conn: Mutex<Connection>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS call_state (
  integrator TEXT NOT NULL, call_id TEXT NOT NULL, state TEXT NOT NULL, updated_at INTEGER NOT NULL,
  PRIMARY KEY (integrator, call_id));
CREATE TABLE IF NOT EXISTS tokens (
  integrator TEXT PRIMARY KEY, access_token TEXT NOT NULL, refresh_token TEXT, expires_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS deliveries (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, integrator TEXT NOT NULL, hook TEXT NOT NULL,
  call_id TEXT, payload TEXT NOT NULL, idempotency_key TEXT, status TEXT NOT NULL, attempts INTEGER NOT NULL,
  next_attempt_at INTEGER NOT NULL, last_error TEXT, result TEXT, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS deliveries_idem ON deliveries (integrator, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (status, next_attempt_at);
";

impl SqliteStorage {
    /// Opens (creating if needed) the database at `path`, owner-only (0600).
    pub fn open(path: &Path) -> Result<SqliteStorage, StorageError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        create_private(path)?;
        let conn = Connection::open(path)?;
        let storage = Self::init(conn)?;
        spawn_checkpointer(path);
        Ok(storage)
    }

    /// An in-memory database (tests, dry-runs).
    pub fn in_memory() -> Result<SqliteStorage, StorageError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<SqliteStorage, StorageError> {
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // WAL + NORMAL: a committed transaction survives a process crash (SIGKILL).
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // Checkpoints (which fsync) run on a background thread, not inside a hook's commit.
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        conn.execute_batch(SCHEMA)?;
        // Statements are prepared once and cached: parsing SQL costs more than running it.
        conn.set_prepared_statement_cache_capacity(32);
        Ok(SqliteStorage { conn: Mutex::new(conn) })
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, StorageError> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        Ok(f(&conn)?)
    }
}

/// Copies the WAL back into the database every second from its own connection and thread
/// (PASSIVE: it never blocks a writer), so commits on the hook path never wait for an fsync
/// and the WAL does not grow without bound. It ends when the database cannot be opened.
fn spawn_checkpointer(path: &Path) {
    let path = path.to_path_buf();
    let _ = std::thread::Builder::new().name("sqlite-checkpoint".into()).spawn(move || {
        let Ok(conn) = Connection::open(&path) else { return };
        let _ = conn.busy_timeout(std::time::Duration::from_millis(100));
        loop {
            std::thread::sleep(std::time::Duration::from_secs(1));
            if !path.exists() {
                return;
            }
            if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                tracing::debug!(error = %e, "checkpoint skipped");
            }
        }
    });
}

#[cfg(unix)]
fn create_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let f = std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
}

#[cfg(not(unix))]
fn create_private(_path: &Path) -> std::io::Result<()> {
    Ok(())
}

fn delivery_from_row(r: &Row) -> rusqlite::Result<Delivery> {
    let payload: String = r.get("payload")?;
    let result: Option<String> = r.get("result")?;
    let status: String = r.get("status")?;
    Ok(Delivery {
        id: r.get("id")?,
        seq: r.get("seq")?,
        integrator: r.get("integrator")?,
        hook: r.get("hook")?,
        call_id: r.get("call_id")?,
        payload: serde_json::from_str(&payload).unwrap_or(Value::Null),
        idempotency_key: r.get("idempotency_key")?,
        status: DeliveryStatus::parse(&status).unwrap_or(DeliveryStatus::Pending),
        attempts: r.get("attempts")?,
        next_attempt_at_ms: r.get("next_attempt_at")?,
        last_error: r.get("last_error")?,
        result: result.and_then(|s| serde_json::from_str(&s).ok()),
        created_at_ms: r.get("created_at")?,
        updated_at_ms: r.get("updated_at")?,
    })
}

impl Storage for SqliteStorage {
    fn load_call(&self, integrator: &str, call_id: &str) -> Result<Option<CallState>, StorageError> {
        let s: Option<String> = self.with(|c| {
            c.prepare_cached("SELECT state FROM call_state WHERE integrator = ?1 AND call_id = ?2")?
                .query_row(params![integrator, call_id], |r| r.get(0))
                .optional()
        })?;
        s.map(|s| serde_json::from_str(&s).map_err(|e| StorageError::Corrupt(e.to_string()))).transpose()
    }

    fn save_call(&self, integrator: &str, call_id: &str, state: &CallState) -> Result<(), StorageError> {
        let s = serde_json::to_string(state).map_err(|e| StorageError::Corrupt(e.to_string()))?;
        self.with(|c| {
            c.prepare_cached("INSERT INTO call_state (integrator, call_id, state, updated_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (integrator, call_id) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at")?.execute(params![integrator, call_id, s, now_ms()],
            )
        })?;
        Ok(())
    }

    fn load_token(&self, integrator: &str) -> Result<Option<StoredToken>, StorageError> {
        self.with(|c| {
            c.prepare_cached("SELECT access_token, refresh_token, expires_at FROM tokens WHERE integrator = ?1")?
                .query_row(params![integrator], |r| {
                    Ok(StoredToken { access_token: r.get(0)?, refresh_token: r.get(1)?, expires_at_ms: r.get(2)? })
                })
                .optional()
        })
    }

    fn save_token(&self, integrator: &str, t: &StoredToken) -> Result<(), StorageError> {
        self.with(|c| {
            c.prepare_cached(
                "INSERT INTO tokens (integrator, access_token, refresh_token, expires_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (integrator) DO UPDATE SET access_token = excluded.access_token,
                   refresh_token = excluded.refresh_token, expires_at = excluded.expires_at",
            )?
            .execute(params![integrator, t.access_token, t.refresh_token, t.expires_at_ms])
        })?;
        Ok(())
    }

    fn delete_token(&self, integrator: &str) -> Result<(), StorageError> {
        self.with(|c| c.prepare_cached("DELETE FROM tokens WHERE integrator = ?1")?.execute(params![integrator]))?;
        Ok(())
    }

    fn insert_delivery(&self, d: NewDelivery) -> Result<Inserted, StorageError> {
        let payload = serde_json::to_string(&d.payload).map_err(|e| StorageError::Corrupt(e.to_string()))?;
        self.with(|c| {
            if let Some(key) = &d.idempotency_key {
                let prev = c
                    .query_row(
                        "SELECT * FROM deliveries WHERE integrator = ?1 AND idempotency_key = ?2",
                        params![d.integrator, key],
                        delivery_from_row,
                    )
                    .optional()?;
                if let Some(prev) = prev {
                    return Ok(Inserted::Duplicate(prev));
                }
            }
            c.prepare_cached(
                "INSERT INTO deliveries (id, integrator, hook, call_id, payload, idempotency_key, status, attempts,
                   next_attempt_at, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', 0, ?7, ?7, ?7)",
            )?
            .execute(params![
                d.id,
                d.integrator,
                d.hook,
                d.call_id,
                payload,
                d.idempotency_key,
                d.now_ms
            ])?;
            let row = c
                .prepare_cached("SELECT * FROM deliveries WHERE id = ?1")?
                .query_row(params![d.id], delivery_from_row)?;
            Ok(Inserted::New(row))
        })
    }

    fn get_delivery(&self, id: &str) -> Result<Option<Delivery>, StorageError> {
        self.with(|c| {
            c.prepare_cached("SELECT * FROM deliveries WHERE id = ?1")?
                .query_row(params![id], delivery_from_row)
                .optional()
        })
    }

    fn list_deliveries(
        &self,
        status: Option<DeliveryStatus>,
        integrator: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Delivery>, StorageError> {
        self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT * FROM deliveries WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR integrator = ?2)
                 ORDER BY seq DESC LIMIT ?3",
            )?;
            let rows =
                st.query_map(params![status.map(DeliveryStatus::as_str), integrator, limit as i64], delivery_from_row)?;
            rows.collect()
        })
    }

    fn due_deliveries(&self, now_ms: i64, limit: usize) -> Result<Vec<Delivery>, StorageError> {
        self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT * FROM deliveries WHERE status = 'pending' AND next_attempt_at <= ?1 ORDER BY seq LIMIT ?2",
            )?;
            let rows = st.query_map(params![now_ms, limit as i64], delivery_from_row)?;
            rows.collect()
        })
    }

    fn update_delivery(&self, id: &str, u: &DeliveryUpdate) -> Result<(), StorageError> {
        let result = u.result.as_ref().map(|r| r.to_string());
        self.with(|c| {
            c.prepare_cached(
                "UPDATE deliveries SET status = ?2, attempts = ?3, next_attempt_at = ?4, last_error = ?5,
                   result = COALESCE(?6, result), updated_at = ?7 WHERE id = ?1",
            )?
            .execute(params![
                id,
                u.status.as_str(),
                u.attempts,
                u.next_attempt_at_ms,
                u.last_error,
                result,
                u.now_ms
            ])
        })?;
        Ok(())
    }

    fn count_deliveries(&self, status: DeliveryStatus) -> Result<u64, StorageError> {
        self.with(|c| {
            c.prepare_cached("SELECT COUNT(*) FROM deliveries WHERE status = ?1")?
                .query_row(params![status.as_str()], |r| r.get(0))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn file_is_owner_only_and_state_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/db.sqlite");
        let s = SqliteStorage::open(&path).unwrap();
        let mut st = CallState::default();
        st.results.insert("call_log_id".into(), json!("77"));
        s.save_call("i", "c1", &st).unwrap();
        assert_eq!(s.load_call("i", "c1").unwrap(), Some(st));
        assert_eq!(s.load_call("other", "c1").unwrap(), None);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
    }

    #[test]
    fn idempotency_key_returns_the_first_delivery() {
        let s = SqliteStorage::in_memory().unwrap();
        let nd = |id: &str| NewDelivery {
            id: id.into(),
            integrator: "i".into(),
            hook: "saveLogCRM".into(),
            call_id: Some("c".into()),
            payload: json!({"call_id": "c"}),
            idempotency_key: Some("k1".into()),
            now_ms: 1,
        };
        assert!(matches!(s.insert_delivery(nd("a")).unwrap(), Inserted::New(_)));
        match s.insert_delivery(nd("b")).unwrap() {
            Inserted::Duplicate(d) => assert_eq!(d.id, "a"),
            other => panic!("{other:?}"),
        }
        assert_eq!(s.due_deliveries(10, 10).unwrap().len(), 1);
    }
}
