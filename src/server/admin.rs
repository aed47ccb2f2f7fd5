//! `callbridge deliveries list|show|retry|prune`: inspect the outbox, replay dead deliveries
//! and remove old records offline — the server need not run; a retry delivers in this process
//! with the engine.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use clap::{Subcommand, ValueEnum};
use serde_json::{Value, json};

use super::outbox::{RetryPlan, applied, attempt};
use super::views::rfc3339;
use crate::catalog::Catalog;
use crate::cli::Output;
use crate::error::exit;
use crate::hooks::Engine;
use crate::http::RetryPolicy;
use crate::redact::Redactor;
use crate::storage::{Delivery, DeliveryStatus, DeliveryUpdate, SqliteStorage, Storage, now_ms};

/// While a retry runs here, a running server leaves the delivery alone this long.
const RETRY_LEASE: Duration = Duration::from_secs(60);

/// `callbridge deliveries …`
#[derive(Subcommand, Debug, Clone)]
pub enum DeliveriesCmd {
    /// List deliveries, newest first.
    List {
        /// Only deliveries in this state.
        #[arg(long, value_enum)]
        status: Option<StatusArg>,
        /// Only this integrator's.
        #[arg(long)]
        integrator: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Show one delivery in full (its payload redacted with the integrator's secrets).
    Show {
        /// The delivery id.
        id: String,
    },
    /// Set a delivery back to pending (attempts 0) and deliver it now, in this process.
    Retry {
        /// The delivery id.
        #[arg(required_unless_present = "all_dead", conflicts_with = "all_dead")]
        id: Option<String>,
        /// Every dead delivery (of `--integrator` when given), oldest first.
        #[arg(long)]
        all_dead: bool,
        /// With --all-dead: only this integrator's.
        #[arg(long, requires = "all_dead")]
        integrator: Option<String>,
        /// Attempts before a delivery that still fails transiently is dead again (a running
        /// server takes over the later ones).
        #[arg(long, default_value_t = 8)]
        max_attempts: u32,
    },
    /// Remove delivered deliveries and call states older than a period, as `serve --retention`
    /// does on its own; pending and dead deliveries are kept.
    Prune {
        /// e.g. `30d`, `12h`.
        #[arg(long, value_parser = super::options::parse_duration)]
        older_than: Duration,
    },
}

/// A delivery state on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum StatusArg {
    Pending,
    Delivered,
    Dead,
}

impl From<StatusArg> for DeliveryStatus {
    fn from(s: StatusArg) -> DeliveryStatus {
        match s {
            StatusArg::Pending => DeliveryStatus::Pending,
            StatusArg::Delivered => DeliveryStatus::Delivered,
            StatusArg::Dead => DeliveryStatus::Dead,
        }
    }
}

/// Runs a `deliveries` command; returns the exit code.
pub fn run(cmd: &DeliveriesCmd, config: &Path, state_file: &Path, output: Output) -> i32 {
    let store: Arc<dyn Storage> = match SqliteStorage::open(state_file) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!("error: cannot open the state file {}: {e}", state_file.display());
            return exit::INTERNAL;
        }
    };
    let result = match cmd {
        DeliveriesCmd::List { status, integrator, limit } => {
            list(store.as_ref(), status.map(Into::into), integrator.as_deref(), *limit, output)
        }
        DeliveriesCmd::Show { id } => with_catalog(config, output, |cat| show(store.as_ref(), &cat, id, output)),
        DeliveriesCmd::Retry { id, all_dead, integrator, max_attempts } => with_catalog(config, output, |cat| {
            let ids = match (id, all_dead) {
                (Some(id), _) => vec![id.clone()],
                (None, _) => {
                    let dead =
                        store.list_deliveries(Some(DeliveryStatus::Dead), integrator.as_deref(), usize::MAX >> 1)?;
                    dead.into_iter().rev().map(|d| d.id).collect()
                }
            };
            retry(store.clone(), cat, &ids, *max_attempts, output)
        }),
        DeliveriesCmd::Prune { older_than } => prune(store.as_ref(), *older_than, output),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            exit::INTERNAL
        }
    }
}

type CmdResult = Result<i32, Box<dyn std::error::Error>>;

fn with_catalog(config: &Path, output: Output, f: impl FnOnce(Catalog) -> CmdResult) -> CmdResult {
    match Catalog::load(config) {
        Ok(c) => f(c),
        Err(d) => {
            // Without the configuration the secrets to mask are unknown: show nothing.
            match output {
                Output::Json => println!("{}", json!({"valid": false, "errors": d.0})),
                Output::Text => eprintln!("{d}"),
            }
            Ok(exit::INVALID)
        }
    }
}

fn redactor_for(cat: &Catalog, integrator: &str) -> Redactor {
    cat.integrator(integrator).map(|i| Redactor::new(i.secrets.iter().chain(&i.api_keys).cloned())).unwrap_or_default()
}

/// The record as JSON; the payload only when given a redactor for it.
fn record(d: &Delivery, payload: Option<&Redactor>) -> Value {
    let mut v = json!({
        "id": d.id, "seq": d.seq, "integrator": d.integrator, "hook": d.hook, "call_id": d.call_id,
        "status": d.status.as_str(), "attempts": d.attempts, "idempotency_key": d.idempotency_key,
        "next_attempt_at": (d.status == DeliveryStatus::Pending).then(|| rfc3339(d.next_attempt_at_ms)),
        "last_error": d.last_error, "result": d.result,
        "created_at": rfc3339(d.created_at_ms), "updated_at": rfc3339(d.updated_at_ms),
    });
    if let Some(r) = payload {
        v["payload"] = crate::request::redact_value(r, &d.payload);
        v["result"] = crate::request::redact_value(r, &v["result"]);
    }
    v
}

fn list(
    store: &dyn Storage,
    status: Option<DeliveryStatus>,
    integrator: Option<&str>,
    limit: usize,
    output: Output,
) -> CmdResult {
    let ds = store.list_deliveries(status, integrator, limit)?;
    if output == Output::Json {
        println!("{}", Value::Array(ds.iter().map(|d| record(d, None)).collect()));
        return Ok(exit::OK);
    }
    if ds.is_empty() {
        println!("no deliveries");
        return Ok(exit::OK);
    }
    println!(
        "{:<36}  {:<9}  {:>8}  {:<20}  {:<19}  {:<24}  {:<24}  LAST ERROR",
        "ID", "STATUS", "ATTEMPTS", "INTEGRATOR", "HOOK", "CALL", "UPDATED"
    );
    for d in &ds {
        let err = d.last_error.as_deref().filter(|_| d.status != DeliveryStatus::Delivered).unwrap_or("");
        let err = if err.chars().count() > 80 {
            format!("{}…", err.chars().take(80).collect::<String>())
        } else {
            err.to_string()
        };
        println!(
            "{:<36}  {:<9}  {:>8}  {:<20}  {:<19}  {:<24}  {:<24}  {}",
            d.id,
            d.status.as_str(),
            d.attempts,
            d.integrator,
            d.hook,
            d.call_id.as_deref().unwrap_or("-"),
            rfc3339(d.updated_at_ms),
            err
        );
    }
    Ok(exit::OK)
}

fn show(store: &dyn Storage, cat: &Catalog, id: &str, output: Output) -> CmdResult {
    let Some(d) = store.get_delivery(id)? else {
        eprintln!("error: unknown delivery '{id}'");
        return Ok(exit::INVALID);
    };
    let v = record(&d, Some(&redactor_for(cat, &d.integrator)));
    match output {
        Output::Json => println!("{v}"),
        Output::Text => println!("{}", serde_json::to_string_pretty(&v)?),
    }
    Ok(exit::OK)
}

fn retry(store: Arc<dyn Storage>, cat: Catalog, ids: &[String], max_attempts: u32, output: Output) -> CmdResult {
    let engine = Engine::new(store.clone(), RetryPolicy::default());
    let plan = RetryPlan { max_attempts, base: Duration::from_secs(2), max: Duration::from_secs(300) };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut code = exit::OK;
    let mut report = Vec::new();
    for id in ids {
        let Some(d) = store.get_delivery(id)? else {
            eprintln!("error: unknown delivery '{id}'");
            code = code.max(exit::INVALID);
            continue;
        };
        if d.status == DeliveryStatus::Delivered {
            eprintln!("error: delivery '{id}' was already delivered; nothing to retry");
            code = code.max(exit::INVALID);
            continue;
        }
        // Pending again, attempts 0 — leased for a moment so a running server does not send it too.
        let now = now_ms();
        let reset = DeliveryUpdate {
            status: DeliveryStatus::Pending,
            attempts: 0,
            next_attempt_at_ms: now + RETRY_LEASE.as_millis() as i64,
            last_error: d.last_error.clone(),
            result: None,
            now_ms: now,
        };
        store.update_delivery(id, &reset).wait()?;
        let d = applied(d, &reset);
        let a = rt.block_on(attempt(&engine, &cat, &d, &plan));
        store.update_delivery(id, &a.update).wait()?;
        if let Some(state) = a.saved {
            state.wait()?;
        }
        let after = applied(d, &a.update);
        let r = redactor_for(&cat, &after.integrator);
        if let Some(e) = &a.error {
            code = code.max(e.exit_code());
        }
        match output {
            Output::Json => report.push(record(&after, None)),
            Output::Text => println!("{}", describe(&after, &r)),
        }
    }
    if output == Output::Json {
        println!("{}", Value::Array(report));
    }
    Ok(code)
}

fn prune(store: &dyn Storage, older_than: Duration, output: Output) -> CmdResult {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let before = now_ms() - older_than.as_millis() as i64;
    let p = rt.block_on(crate::storage::retention::prune_before(store, before))?;
    match output {
        Output::Json => {
            println!("{}", json!({"deliveries": p.deliveries, "calls": p.calls, "before": rfc3339(before)}))
        }
        Output::Text => println!(
            "removed {} delivered deliveries and {} call states older than {}",
            p.deliveries,
            p.calls,
            rfc3339(before)
        ),
    }
    Ok(exit::OK)
}

fn describe(d: &Delivery, r: &Redactor) -> String {
    let what = format!("{} {} {} (call {})", d.id, d.integrator, d.hook, d.call_id.as_deref().unwrap_or("-"));
    match d.status {
        DeliveryStatus::Delivered => {
            let results = d
                .result
                .as_ref()
                .and_then(|v| v.get("results"))
                .map(|v| crate::request::redact_value(r, v))
                .unwrap_or(Value::Null);
            format!("{what}: delivered — results: {results}")
        }
        DeliveryStatus::Pending => format!(
            "{what}: failed again ({}); pending, next attempt at {} (a running server sends it)",
            d.last_error.as_deref().unwrap_or("?"),
            rfc3339(d.next_attempt_at_ms)
        ),
        DeliveryStatus::Dead => {
            format!("{what}: dead — {}", d.last_error.as_deref().unwrap_or("?"))
        }
    }
}
