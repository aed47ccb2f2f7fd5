//! The embedded default: one SQLite file in WAL mode, readable only by its owner.
//!
//! Reads run on a reader connection, at once. Writes go to one writer thread that owns the
//! write connection and commits whatever is queued as one transaction (group commit): while
//! one commit runs, the next writes gather, so under load a commit carries many writes, and no
//! async worker thread ever waits on SQLite. Each write's [`Ack`] resolves after its commit.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, Row, params};
use tokio::sync::oneshot;

use super::*;

/// Most writes committed in one transaction.
const MAX_BATCH: usize = 512;
/// How often the writer checkpoints the WAL.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// SQLite-backed [`Storage`].
pub struct SqliteStorage {
    /// The reader connection (for an in-memory database, also the writer's).
    reader: Arc<Mutex<Connection>>,
    writes: mpsc::Sender<Write>,
    unsaved: Arc<Unsaved>,
}

/// Call states queued for the writer and not committed yet, by (integrator, call id), with
/// the version of the latest save: reads see a save at once, before its commit, so a caller
/// need not wait for the commit to hand the call over (the commit is awaited before anything
/// is acknowledged). An entry leaves when its write has committed or failed.
#[derive(Default)]
struct Unsaved {
    states: Mutex<HashMap<(String, String), (u64, CallState)>>,
    version: AtomicU64,
}

impl Unsaved {
    /// Drops the entries of these writes unless a later save replaced them.
    fn settle(&self, written: &[((String, String), u64)]) {
        if written.is_empty() {
            return;
        }
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        for (key, version) in written {
            if states.get(key).is_some_and(|(v, _)| v == version) {
                states.remove(key);
            }
        }
    }
}

/// A write queued for the writer thread, with where its result goes.
enum Write {
    SaveCall {
        integrator: String,
        call_id: String,
        state: String,
        version: u64,
        now_ms: i64,
        done: oneshot::Sender<Result<(), StorageError>>,
    },
    SaveToken {
        integrator: String,
        token: StoredToken,
        done: oneshot::Sender<Result<(), StorageError>>,
    },
    DeleteToken {
        integrator: String,
        done: oneshot::Sender<Result<(), StorageError>>,
    },
    InsertDelivery {
        new: NewDelivery,
        payload: String,
        done: oneshot::Sender<Result<Inserted, StorageError>>,
    },
    UpdateDelivery {
        id: String,
        update: DeliveryUpdate,
        result: Option<String>,
        done: oneshot::Sender<Result<(), StorageError>>,
    },
    Prune {
        before_ms: i64,
        limit: usize,
        done: oneshot::Sender<Result<Pruned, StorageError>>,
    },
}

/// A write's outcome, kept until its transaction commits.
enum Outcome {
    Unit(oneshot::Sender<Result<(), StorageError>>, Result<(), StorageError>),
    Inserted(oneshot::Sender<Result<Inserted, StorageError>>, Box<Result<Inserted, StorageError>>),
    Pruned(oneshot::Sender<Result<Pruned, StorageError>>, Result<Pruned, StorageError>),
}

impl Outcome {
    fn ok(&self) -> bool {
        match self {
            Outcome::Unit(_, r) => r.is_ok(),
            Outcome::Inserted(_, r) => r.as_ref().is_ok(),
            Outcome::Pruned(_, r) => r.is_ok(),
        }
    }
    /// Replaces a success by `e` (its transaction did not commit).
    fn fail(self, e: &StorageError) -> Outcome {
        match self {
            Outcome::Unit(tx, Ok(_)) => Outcome::Unit(tx, Err(e.clone())),
            Outcome::Inserted(tx, r) if r.is_ok() => Outcome::Inserted(tx, Box::new(Err(e.clone()))),
            Outcome::Pruned(tx, Ok(_)) => Outcome::Pruned(tx, Err(e.clone())),
            other => other,
        }
    }
    fn send(self) {
        match self {
            Outcome::Unit(tx, r) => {
                let _ = tx.send(r);
            }
            Outcome::Inserted(tx, r) => {
                let _ = tx.send(*r);
            }
            Outcome::Pruned(tx, r) => {
                let _ = tx.send(r);
            }
        }
    }
}

/// Every commit writes each page it changed to the WAL, so the schema keeps the pages a write
/// hook touches few: call state is one B-tree (WITHOUT ROWID); delivery ids are time-ordered,
/// so their index grows at its end; `seq` is a plain rowid (no AUTOINCREMENT bookkeeping
/// table: a new row's seq is above every row there is, which is all the per-call order needs);
/// and only pending and dead deliveries are
/// indexed by status — a delivered one leaves the index instead of moving within it.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS call_state (
  integrator TEXT NOT NULL, call_id TEXT NOT NULL, state TEXT NOT NULL, updated_at INTEGER NOT NULL,
  PRIMARY KEY (integrator, call_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tokens (
  integrator TEXT PRIMARY KEY, access_token TEXT NOT NULL, refresh_token TEXT, expires_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS deliveries (
  seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, integrator TEXT NOT NULL, hook TEXT NOT NULL,
  call_id TEXT, payload TEXT NOT NULL, idempotency_key TEXT, status TEXT NOT NULL, attempts INTEGER NOT NULL,
  next_attempt_at INTEGER NOT NULL, last_error TEXT, result TEXT, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS deliveries_idem ON deliveries (integrator, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS deliveries_pending ON deliveries (seq) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS deliveries_dead ON deliveries (seq) WHERE status = 'dead';
DROP INDEX IF EXISTS deliveries_due;
";

impl SqliteStorage {
    /// Opens (creating if needed) the database at `path`, owner-only (0600).
    pub fn open(path: &Path) -> Result<SqliteStorage, StorageError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        create_private(path)?;
        let writer = configure(Connection::open(path)?)?;
        writer.execute_batch(SCHEMA)?;
        let reader = configure(Connection::open(path)?)?;
        spawn_checkpointer(path);
        Ok(Self::start(Arc::new(Mutex::new(reader)), Arc::new(Mutex::new(writer))))
    }

    /// An in-memory database (tests, dry-runs): one connection, shared by reads and the writer.
    pub fn in_memory() -> Result<SqliteStorage, StorageError> {
        let conn = configure(Connection::open_in_memory()?)?;
        conn.execute_batch(SCHEMA)?;
        let conn = Arc::new(Mutex::new(conn));
        Ok(Self::start(conn.clone(), conn))
    }

    fn start(reader: Arc<Mutex<Connection>>, writer: Arc<Mutex<Connection>>) -> SqliteStorage {
        let (tx, rx) = mpsc::channel();
        let unsaved = Arc::new(Unsaved::default());
        let u = unsaved.clone();
        // The thread ends when the storage is dropped, after committing what was queued.
        let spawned =
            std::thread::Builder::new().name("sqlite-writer".into()).spawn(move || write_loop(&writer, &rx, &u));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the storage writer thread; writes will fail");
        }
        SqliteStorage { reader, writes: tx, unsaved }
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, StorageError> {
        let conn = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        Ok(f(&conn)?)
    }

    /// Queues a write; a stopped writer fails it at once.
    fn queue<T>(&self, make: impl FnOnce(oneshot::Sender<Result<T, StorageError>>) -> Write) -> Ack<T> {
        let (tx, ack) = Ack::channel();
        if let Err(mpsc::SendError(w)) = self.writes.send(make(tx)) {
            fail(w, &StorageError::Closed);
        }
        ack
    }
}

fn configure(conn: Connection) -> Result<Connection, StorageError> {
    conn.busy_timeout(Duration::from_secs(5))?;
    // WAL + NORMAL: a committed transaction survives a process crash (SIGKILL).
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    // No checkpoint inside a commit: the background checkpointer copies the WAL, and the writer
    // finishes it between transactions (see `write_loop`).
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    // Statements are prepared once and cached: parsing SQL costs more than running it.
    conn.set_prepared_statement_cache_capacity(32);
    Ok(conn)
}

/// Resolves a write that never ran with `e`.
fn fail(w: Write, e: &StorageError) {
    let out = match w {
        Write::SaveCall { done, .. }
        | Write::SaveToken { done, .. }
        | Write::DeleteToken { done, .. }
        | Write::UpdateDelivery { done, .. } => Outcome::Unit(done, Err(e.clone())),
        Write::InsertDelivery { done, .. } => Outcome::Inserted(done, Box::new(Err(e.clone()))),
        Write::Prune { done, .. } => Outcome::Pruned(done, Err(e.clone())),
    };
    out.send();
}

/// The writer thread: takes every queued write (up to [`MAX_BATCH`]), runs them in one
/// transaction, commits, then resolves their acks. A write that fails alone (a constraint)
/// fails alone; a failed commit fails the whole batch, and nothing of it is acknowledged.
fn write_loop(conn: &Mutex<Connection>, rx: &mpsc::Receiver<Write>, unsaved: &Unsaved) {
    let mut last_checkpoint = Instant::now();
    // Where the pass of `prune` over the call states has got to.
    let mut cursor = PruneCursor::default();
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        let conn = conn.lock().unwrap_or_else(|p| p.into_inner());
        commit_batch(&conn, batch, &mut cursor, unsaved);
        if last_checkpoint.elapsed() >= CHECKPOINT_EVERY {
            checkpoint(&conn);
            last_checkpoint = Instant::now();
        }
    }
}

/// Copies the WAL back into the database (PASSIVE). Run by the writer between transactions,
/// it catches up completely, so the next transaction starts the WAL over: under a steady
/// stream of writes, a checkpoint from another connection never catches up and the WAL
/// grows without bound. The background checkpointer has usually copied most of it already.
fn checkpoint(conn: &Connection) {
    let t0 = Instant::now();
    match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))) {
        Ok((frames, copied)) => {
            tracing::debug!(frames, copied, ms = t0.elapsed().as_millis() as u64, "checkpoint")
        }
        Err(e) => tracing::debug!(error = %e, "checkpoint skipped"),
    }
}

/// The call states the batch saved leave `unsaved` before any ack of the batch resolves.
fn commit_batch(conn: &Connection, batch: Vec<Write>, cursor: &mut PruneCursor, unsaved: &Unsaved) {
    // (integrator, call id) and version of each call state saved, for `unsaved`.
    let mut written: Vec<((String, String), u64)> = Vec::new();
    if let Err(e) = run(conn, "BEGIN IMMEDIATE") {
        let e = StorageError::from(e);
        tracing::error!(error = %e, writes = batch.len(), "storage: cannot begin a transaction");
        for w in &batch {
            if let Write::SaveCall { integrator, call_id, version, .. } = w {
                written.push(((integrator.clone(), call_id.clone()), *version));
            }
        }
        unsaved.settle(&written);
        batch.into_iter().for_each(|w| fail(w, &e));
        return;
    }
    let settle = |written: &[((String, String), u64)]| unsaved.settle(written);
    let mut done: Vec<Outcome> = Vec::with_capacity(batch.len());
    for w in batch {
        let out = apply(conn, w, cursor, &mut written);
        if !out.ok() && conn.is_autocommit() {
            // The error rolled the transaction back: what ran before it is lost too.
            let e = StorageError::Db("the transaction was rolled back by an earlier error".into());
            done = done.into_iter().map(|o| o.fail(&e)).collect();
            done.push(out);
            settle(&written);
            done.into_iter().for_each(Outcome::send);
            done = Vec::new();
            if let Err(e) = run(conn, "BEGIN IMMEDIATE") {
                tracing::error!(error = %e, "storage: cannot begin a transaction");
            }
            continue;
        }
        done.push(out);
    }
    let committed = if conn.is_autocommit() { Ok(()) } else { run(conn, "COMMIT") };
    if let Err(e) = committed {
        let e = StorageError::from(e);
        tracing::error!(error = %e, writes = done.len(), "storage: commit failed");
        let _ = run(conn, "ROLLBACK");
        done = done.into_iter().map(|o| o.fail(&e)).collect();
    }
    settle(&written);
    done.into_iter().for_each(Outcome::send);
}

/// Runs a statement without parameters, prepared once.
fn run(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

/// The last call state (integrator, call id) a prune round looked at.
#[derive(Default)]
struct PruneCursor(Option<(String, String)>);

/// One round of retention (see [`Storage::prune`]), inside the writer's transaction.
fn prune(c: &Connection, before_ms: i64, limit: usize, cursor: &mut PruneCursor) -> rusqlite::Result<Pruned> {
    let limit = limit.max(1) as i64;
    // Deliveries: seq grows with time, so every delivery created before the cutoff has a seq
    // below the first one created after it. Old rows left in place (pending, dead) are few,
    // so finding that boundary scans little.
    let boundary: i64 = c
        .prepare_cached("SELECT seq FROM deliveries WHERE created_at >= ?1 ORDER BY seq LIMIT 1")?
        .query_row(params![before_ms], |r| r.get(0))
        .optional()?
        .unwrap_or(i64::MAX);
    let deliveries = c
        .prepare_cached(
            "DELETE FROM deliveries WHERE seq IN
               (SELECT seq FROM deliveries WHERE seq < ?1 AND status = 'delivered' ORDER BY seq LIMIT ?2)",
        )?
        .execute(params![boundary, limit])? as u64;
    // Call states: the next `limit` in key order after the cursor; the old ones among them go.
    let (ci, cc) = cursor.0.clone().unwrap_or_default();
    let rows: Vec<(String, String, i64)> = c
        .prepare_cached(
            "SELECT integrator, call_id, updated_at FROM call_state WHERE (integrator, call_id) > (?1, ?2)
             ORDER BY integrator, call_id LIMIT ?3",
        )?
        .query_map(params![ci, cc, limit], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut calls = 0;
    {
        let mut del = c.prepare_cached("DELETE FROM call_state WHERE integrator = ?1 AND call_id = ?2")?;
        for (i, id, _) in rows.iter().filter(|(_, _, at)| *at < before_ms) {
            calls += del.execute(params![i, id])? as u64;
        }
    }
    let scanned = rows.len() as u64;
    let pass_done = (scanned as i64) < limit;
    cursor.0 = if pass_done { None } else { rows.last().map(|(i, id, _)| (i.clone(), id.clone())) };
    Ok(Pruned {
        deliveries,
        calls,
        calls_scanned: scanned,
        more_deliveries: deliveries as i64 >= limit,
        calls_pass_done: pass_done,
    })
}

/// Runs one write inside the writer's transaction; a call-state save records its key and
/// version in `written`.
fn apply(c: &Connection, w: Write, cursor: &mut PruneCursor, written: &mut Vec<((String, String), u64)>) -> Outcome {
    let unit = |r: rusqlite::Result<usize>| r.map(|_| ()).map_err(StorageError::from);
    match w {
        Write::SaveCall { integrator, call_id, state, version, now_ms, done } => {
            let r = c
                .prepare_cached(
                    "INSERT INTO call_state (integrator, call_id, state, updated_at) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (integrator, call_id) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
                )
                .and_then(|mut st| st.execute(params![integrator, call_id, state, now_ms]));
            written.push(((integrator, call_id), version));
            Outcome::Unit(done, unit(r))
        }
        Write::SaveToken { integrator, token: t, done } => {
            let r = c
                .prepare_cached(
                    "INSERT INTO tokens (integrator, access_token, refresh_token, expires_at) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (integrator) DO UPDATE SET access_token = excluded.access_token,
                       refresh_token = excluded.refresh_token, expires_at = excluded.expires_at",
                )
                .and_then(|mut st| st.execute(params![integrator, t.access_token, t.refresh_token, t.expires_at_ms]));
            Outcome::Unit(done, unit(r))
        }
        Write::DeleteToken { integrator, done } => {
            let r = c
                .prepare_cached("DELETE FROM tokens WHERE integrator = ?1")
                .and_then(|mut st| st.execute(params![integrator]));
            Outcome::Unit(done, unit(r))
        }
        Write::Prune { before_ms, limit, done } => {
            Outcome::Pruned(done, prune(c, before_ms, limit, cursor).map_err(Into::into))
        }
        Write::InsertDelivery { new, payload, done } => {
            Outcome::Inserted(done, Box::new(insert_delivery(c, new, payload)))
        }
        Write::UpdateDelivery { id, update: u, result, done } => {
            let r = c
                .prepare_cached(
                    "UPDATE deliveries SET status = ?2, attempts = ?3, next_attempt_at = ?4, last_error = ?5,
                       result = COALESCE(?6, result), updated_at = ?7 WHERE id = ?1",
                )
                .and_then(|mut st| {
                    st.execute(params![
                        id,
                        u.status.as_str(),
                        u.attempts,
                        u.next_attempt_at_ms,
                        u.last_error,
                        result,
                        u.now_ms
                    ])
                });
            Outcome::Unit(done, unit(r))
        }
    }
}

fn insert_delivery(c: &Connection, d: NewDelivery, payload: String) -> Result<Inserted, StorageError> {
    if let Some(key) = &d.idempotency_key {
        let prev = c
            .prepare_cached("SELECT * FROM deliveries WHERE integrator = ?1 AND idempotency_key = ?2")?
            .query_row(params![d.integrator, key], delivery_from_row)
            .optional()?;
        if let Some(prev) = prev {
            return Ok(Inserted::Duplicate(prev));
        }
    }
    c.prepare_cached(
        "INSERT INTO deliveries (id, integrator, hook, call_id, payload, idempotency_key, status, attempts,
           next_attempt_at, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', 0, ?7, ?7, ?7)",
    )?
    .execute(params![d.id, d.integrator, d.hook, d.call_id, payload, d.idempotency_key, d.now_ms])?;
    Ok(Inserted::New(Delivery {
        seq: c.last_insert_rowid(),
        id: d.id,
        integrator: d.integrator,
        hook: d.hook,
        call_id: d.call_id,
        payload: d.payload,
        idempotency_key: d.idempotency_key,
        status: DeliveryStatus::Pending,
        attempts: 0,
        next_attempt_at_ms: d.now_ms,
        last_error: None,
        result: None,
        created_at_ms: d.now_ms,
        updated_at_ms: d.now_ms,
    }))
}

/// Copies the WAL back into the database four times a second from its own connection and
/// thread (PASSIVE: it never blocks the writer), so that most of the copying and its fsyncs
/// happen off the writer thread, whose own checkpoint then has little left to do. It ends
/// when the database file is gone.
fn spawn_checkpointer(path: &Path) {
    let path = path.to_path_buf();
    let _ = std::thread::Builder::new().name("sqlite-checkpoint".into()).spawn(move || {
        let Ok(conn) = Connection::open(&path) else { return };
        let _ = conn.busy_timeout(Duration::from_millis(100));
        loop {
            std::thread::sleep(Duration::from_millis(250));
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
        {
            let states = self.unsaved.states.lock().unwrap_or_else(|p| p.into_inner());
            if !states.is_empty()
                && let Some((_, st)) = states.get(&(integrator.to_string(), call_id.to_string()))
            {
                return Ok(Some(st.clone()));
            }
        }
        let s: Option<String> = self.with(|c| {
            c.prepare_cached("SELECT state FROM call_state WHERE integrator = ?1 AND call_id = ?2")?
                .query_row(params![integrator, call_id], |r| r.get(0))
                .optional()
        })?;
        s.map(|s| serde_json::from_str(&s).map_err(|e| StorageError::Corrupt(e.to_string()))).transpose()
    }

    fn save_call(&self, integrator: &str, call_id: &str, state: &CallState) -> Ack<()> {
        let state_value = state;
        let state = match serde_json::to_string(state) {
            Ok(s) => s,
            Err(e) => return Ack::ready(Err(StorageError::Corrupt(e.to_string()))),
        };
        // Visible to reads from now on; queued under the same lock, so versions and the
        // writer's order agree.
        let mut states = self.unsaved.states.lock().unwrap_or_else(|p| p.into_inner());
        let version = self.unsaved.version.fetch_add(1, Ordering::Relaxed);
        let key = (integrator.to_string(), call_id.to_string());
        states.insert(key.clone(), (version, state_value.clone()));
        let (done, ack) = Ack::channel();
        let w = Write::SaveCall {
            integrator: key.0.clone(),
            call_id: key.1.clone(),
            state,
            version,
            now_ms: now_ms(),
            done,
        };
        if let Err(mpsc::SendError(w)) = self.writes.send(w) {
            // No writer: the save fails, and reads must not see it.
            states.remove(&key);
            fail(w, &StorageError::Closed);
        }
        ack
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

    fn save_token(&self, integrator: &str, t: &StoredToken) -> Ack<()> {
        self.queue(|done| Write::SaveToken { integrator: integrator.to_string(), token: t.clone(), done })
    }

    fn delete_token(&self, integrator: &str) -> Ack<()> {
        self.queue(|done| Write::DeleteToken { integrator: integrator.to_string(), done })
    }

    fn insert_delivery(&self, d: NewDelivery) -> Ack<Inserted> {
        match serde_json::to_string(&d.payload) {
            Ok(payload) => self.queue(|done| Write::InsertDelivery { new: d, payload, done }),
            Err(e) => Ack::ready(Err(StorageError::Corrupt(e.to_string()))),
        }
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

    fn update_delivery(&self, id: &str, u: &DeliveryUpdate) -> Ack<()> {
        let result = u.result.as_ref().map(|r| r.to_string());
        self.queue(|done| Write::UpdateDelivery { id: id.to_string(), update: u.clone(), result, done })
    }

    fn prune(&self, before_ms: i64, limit: usize) -> Ack<Pruned> {
        self.queue(|done| Write::Prune { before_ms, limit, done })
    }

    fn count_deliveries(&self, status: DeliveryStatus) -> Result<u64, StorageError> {
        // Literal statuses, so the partial indexes serve pending and dead (delivered: a scan).
        let sql = match status {
            DeliveryStatus::Pending => "SELECT COUNT(*) FROM deliveries WHERE status = 'pending'",
            DeliveryStatus::Dead => "SELECT COUNT(*) FROM deliveries WHERE status = 'dead'",
            DeliveryStatus::Delivered => "SELECT COUNT(*) FROM deliveries WHERE status = 'delivered'",
        };
        self.with(|c| c.prepare_cached(sql)?.query_row([], |r| r.get(0)))
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
        s.save_call("i", "c1", &st).wait().unwrap();
        assert_eq!(s.load_call("i", "c1").unwrap(), Some(st));
        assert_eq!(s.load_call("other", "c1").unwrap(), None);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
    }

    fn new_delivery(id: &str, key: Option<&str>) -> NewDelivery {
        NewDelivery {
            id: id.into(),
            integrator: "i".into(),
            hook: "saveLogCRM".into(),
            call_id: Some("c".into()),
            payload: json!({"call_id": "c"}),
            idempotency_key: key.map(str::to_string),
            now_ms: 1,
        }
    }

    #[test]
    fn a_failing_write_fails_alone_and_the_others_commit() {
        let s = SqliteStorage::in_memory().unwrap();
        let mut st = CallState::default();
        st.results.insert("k".into(), json!(1));
        // Queued back to back, so usually one transaction; the outcome is the same either way.
        let first = s.insert_delivery(new_delivery("a", None));
        let same_id = s.insert_delivery(new_delivery("a", None));
        let save = s.save_call("i", "c", &st);
        assert!(matches!(first.wait().unwrap(), Inserted::New(d) if d.seq > 0 && d.payload == json!({"call_id": "c"})));
        assert!(matches!(same_id.wait(), Err(StorageError::Db(m)) if m.contains("UNIQUE")));
        save.wait().unwrap();
        assert_eq!(s.load_call("i", "c").unwrap(), Some(st));
        assert!(s.get_delivery("a").unwrap().is_some());
        assert_eq!(s.count_deliveries(DeliveryStatus::Pending).unwrap(), 1);
    }

    #[test]
    fn an_acknowledged_write_is_visible_to_every_reader_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let s = Arc::new(SqliteStorage::open(&dir.path().join("db.sqlite")).unwrap());
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let s = s.clone();
                std::thread::spawn(move || {
                    for n in 0..100 {
                        let mut st = CallState::default();
                        st.results.insert("n".into(), json!(n));
                        let call = format!("t{t}-{n}");
                        s.save_call("i", &call, &st).wait().unwrap();
                        // Read through the other connection right after the ack.
                        assert_eq!(s.load_call("i", &call).unwrap(), Some(st), "{call}");
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        // A second handle on the same file (another process, say) sees them all.
        let again = SqliteStorage::open(&dir.path().join("db.sqlite")).unwrap();
        assert_eq!(again.load_call("i", "t7-99").unwrap().unwrap().results["n"], json!(99));
    }

    #[test]
    fn a_save_is_read_back_before_its_commit_and_then_leaves_the_overlay() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStorage::open(&dir.path().join("db.sqlite")).unwrap();
        let mut acks = Vec::new();
        for n in 0..50 {
            let mut st = CallState::default();
            st.results.insert("n".into(), json!(n));
            acks.push(s.save_call("i", "c", &st));
            // Read your writes, committed or not: never an older version.
            assert_eq!(s.load_call("i", "c").unwrap().unwrap().results["n"], json!(n));
        }
        acks.into_iter().for_each(|a| a.wait().unwrap());
        assert!(s.unsaved.states.lock().unwrap().is_empty(), "committed saves leave the overlay");
        assert_eq!(s.load_call("i", "c").unwrap().unwrap().results["n"], json!(49));
    }

    #[test]
    fn prune_removes_old_delivered_deliveries_and_old_call_states_only() {
        let s = SqliteStorage::in_memory().unwrap();
        let at = |id: &str, ms: i64, status: DeliveryStatus| {
            let mut d = new_delivery(id, None);
            d.now_ms = ms;
            s.insert_delivery(d).wait().unwrap();
            let u = DeliveryUpdate {
                status,
                attempts: 1,
                next_attempt_at_ms: ms,
                last_error: None,
                result: None,
                now_ms: ms,
            };
            s.update_delivery(id, &u).wait().unwrap();
        };
        for n in 0..5 {
            at(&format!("old-{n}"), 100 + n, DeliveryStatus::Delivered);
        }
        at("old-pending", 110, DeliveryStatus::Pending);
        at("old-dead", 120, DeliveryStatus::Dead);
        at("new", 5_000, DeliveryStatus::Delivered);
        for c in ["a", "b", "c", "d", "e"] {
            s.save_call("i", c, &CallState::default()).wait().unwrap();
        }
        s.with(|c| c.execute("UPDATE call_state SET updated_at = 50 WHERE call_id IN ('a', 'c', 'e')", [])).unwrap();

        // Rounds of 2: deliveries 2 + 2 + 1; call states looked at 2 + 2 + 1 (the pass ends).
        let r1 = s.prune(1_000, 2).wait().unwrap();
        assert_eq!((r1.deliveries, r1.more_deliveries, r1.calls_scanned, r1.calls_pass_done), (2, true, 2, false));
        let r2 = s.prune(1_000, 2).wait().unwrap();
        let r3 = s.prune(1_000, 2).wait().unwrap();
        assert_eq!((r3.deliveries, r3.more_deliveries, r3.calls_scanned, r3.calls_pass_done), (1, false, 1, true));
        assert_eq!(r1.calls + r2.calls + r3.calls, 3);
        for id in ["old-pending", "old-dead", "new"] {
            assert!(s.get_delivery(id).unwrap().is_some(), "{id} is kept");
        }
        assert!(s.get_delivery("old-0").unwrap().is_none() && s.get_delivery("old-4").unwrap().is_none());
        let kept: Vec<bool> =
            ["a", "b", "c", "d", "e"].iter().map(|c| s.load_call("i", c).unwrap().is_some()).collect();
        assert_eq!(kept, [false, true, false, true, false]);
        // Nothing old is left: a new pass removes nothing.
        let r4 = s.prune(1_000, 10).wait().unwrap();
        assert_eq!((r4.deliveries, r4.calls, r4.calls_pass_done), (0, 0, true));
    }

    #[test]
    fn writes_after_the_writer_stopped_fail_instead_of_hanging() {
        let (tx, rx) = mpsc::channel::<Write>();
        drop(rx);
        let s = SqliteStorage {
            reader: Arc::new(Mutex::new(Connection::open_in_memory().unwrap())),
            writes: tx,
            unsaved: Arc::default(),
        };
        assert!(matches!(s.save_call("i", "c", &CallState::default()).wait(), Err(StorageError::Closed)));
        assert_eq!(s.load_call("i", "c").unwrap_or(None), None, "a failed save is not read back");
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
        assert!(matches!(s.insert_delivery(nd("a")).wait().unwrap(), Inserted::New(_)));
        match s.insert_delivery(nd("b")).wait().unwrap() {
            Inserted::Duplicate(d) => assert_eq!(d.id, "a"),
            other => panic!("{other:?}"),
        }
        assert_eq!(s.due_deliveries(10, 10).unwrap().len(), 1);
    }
}
