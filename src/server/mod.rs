//! The hook server (`callbridge serve`): the callbox's HTTP API over the engine — a durable
//! outbox for write hooks, per-integrator keys, CORS and limits, and reload without restart.
//!
//! Layout: `api` (integrator routes), `ops` (health, metrics, middleware), `extract` (JSON
//! rejections, the authenticated integrator), `keys` (API keys, CORS), `limits`, `outbox`
//! (the delivery worker), `reload`, `openapi`, `views` (response shapes), `error`, `options`,
//! and `admin` (the `callbridge deliveries` commands).

pub mod admin;
pub mod api;
pub mod error;
pub mod extract;
pub mod keys;
pub mod limits;
pub mod openapi;
pub mod ops;
pub mod options;
pub mod outbox;
pub mod reload;
pub mod views;

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, Request};
use axum::middleware::{from_fn, from_fn_with_state};
use axum::routing::{get, post};
use tokio::sync::watch;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};

use crate::catalog::Catalog;
use crate::error::exit;
use crate::hooks::Engine;
use crate::http::RetryPolicy;
use crate::storage::{SqliteStorage, Storage, StorageError};

pub use options::ServeArgs;
use outbox::{Outbox, RetryPlan};
use reload::CatalogHandle;

/// What every request can reach.
pub struct AppState {
    /// The configuration; each request takes a snapshot when it starts.
    pub catalog: Arc<CatalogHandle>,
    pub engine: Arc<Engine>,
    pub outbox: Arc<Outbox>,
    pub limits: limits::Limits,
    pub opts: ServeArgs,
    /// Pending deliveries were queued and the server accepts work (`/readyz`).
    pub ready: AtomicBool,
    /// SIGTERM or Ctrl-C was received.
    pub stopping: AtomicBool,
}

/// The state handlers receive.
pub type Shared = Arc<AppState>;

/// Why the server could not start (or stopped badly).
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration tree does not validate.
    #[error("the configuration in {} is invalid:\n{diagnostics}", dir.display())]
    Config { dir: PathBuf, diagnostics: String },
    /// The state file cannot be opened.
    #[error("cannot open the state file {}: {source}", file.display())]
    Storage { file: PathBuf, source: StorageError },
    /// The address cannot be bound.
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    /// The server failed while running.
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
}

impl ServeError {
    /// The CLI's exit code.
    pub fn exit_code(&self) -> i32 {
        match self {
            ServeError::Config { .. } => exit::INVALID,
            _ => exit::INTERNAL,
        }
    }
}

/// The routes and their middleware.
pub fn router(state: Shared) -> Router {
    let x_request_id = HeaderName::from_static("x-request-id");
    let cors = keys::cors(state.catalog.clone(), state.engine.store.clone());
    Router::new()
        .route("/v1/integrators/{id}/hooks/{hook}", post(api::hook))
        .route("/v1/integrators/{id}/config", get(api::config))
        .route("/v1/integrators/{id}/iframe", get(api::iframe))
        .route("/v1/deliveries/{id}", get(api::delivery))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(openapi::document))
        .route_layer(from_fn_with_state(state.clone(), ops::count_requests))
        .fallback(ops::not_found)
        .method_not_allowed_fallback(ops::method_not_allowed)
        .layer(DefaultBodyLimit::max(state.opts.body_limit))
        .layer(
            // Outermost first: the request id exists before the span that logs it.
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(x_request_id.clone(), MakeRequestUuid))
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(|req: &Request<_>| {
                            let id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("");
                            // The path only: the iframe's query may carry a key.
                            tracing::info_span!("request", id, method = %req.method(), path = %req.uri().path())
                        })
                        .on_response(DefaultOnResponse::new().level(tracing::Level::INFO)),
                )
                .layer(PropagateRequestIdLayer::new(x_request_id))
                .layer(CatchPanicLayer::custom(ops::panic_response))
                .layer(from_fn(ops::json_errors))
                .layer(cors)
                .layer(from_fn_with_state(state.clone(), ops::timeout)),
        )
        .with_state(state)
}

/// Builds the state: loads the configuration, opens storage, creates the engine and outbox.
pub fn build_state(config: &Path, state_file: &Path, opts: ServeArgs) -> Result<Shared, ServeError> {
    let catalog = Catalog::load(config)
        .map_err(|d| ServeError::Config { dir: config.to_path_buf(), diagnostics: d.to_string() })?;
    let store: Arc<dyn Storage> = Arc::new(
        SqliteStorage::open(state_file)
            .map_err(|source| ServeError::Storage { file: state_file.to_path_buf(), source })?,
    );
    let policy = RetryPolicy { max_attempts: opts.crm_tries as usize, ..RetryPolicy::default() };
    let engine = Arc::new(Engine::new(store, policy));
    let handle = Arc::new(CatalogHandle::new(config, catalog, engine.metrics.clone()));
    let plan = RetryPlan { max_attempts: opts.max_attempts, base: opts.retry_delay, max: opts.max_retry_delay };
    let outbox = Outbox::new(engine.clone(), handle.clone(), plan, opts.workers);
    Ok(Arc::new(AppState {
        catalog: handle,
        engine,
        outbox,
        limits: limits::Limits::new(opts.max_concurrent as usize),
        opts,
        ready: AtomicBool::new(false),
        stopping: AtomicBool::new(false),
    }))
}

/// Runs the server until SIGTERM or Ctrl-C, then drains: stops accepting, lets in-flight
/// requests and deliveries finish (bounded by `--drain-timeout`), and returns.
pub async fn serve(config: PathBuf, state_file: PathBuf, opts: ServeArgs) -> Result<(), ServeError> {
    let state = build_state(&config, &state_file, opts)?;
    let opts = &state.opts;
    let listener = tokio::net::TcpListener::bind(opts.listen).await.map_err(|e| ServeError::Bind(opts.listen, e))?;
    let addr = listener.local_addr()?;
    // Queue what a previous run accepted before taking new work, so each call keeps its order.
    let resumed =
        state.outbox.load_pending().map_err(|source| ServeError::Storage { file: state_file.clone(), source })?;
    state.outbox.spawn_poller(opts.poll_interval);
    if !opts.retention.is_zero() {
        crate::storage::retention::spawn(state.engine.store.clone(), opts.retention, opts.prune_interval);
    }
    reload::spawn(state.catalog.clone(), !opts.no_watch, opts.reload_debounce);
    state.ready.store(true, Ordering::SeqCst);
    tracing::info!(%addr, config = %config.display(), state = %state_file.display(), resumed, "callbridge serving");
    println!("listening on http://{addr}");
    let _ = std::io::stdout().flush();

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped_at = Arc::new(OnceLock::new());
    {
        let state = state.clone();
        let stopped_at = stopped_at.clone();
        tokio::spawn(async move {
            let signal = shutdown_signal().await;
            tracing::info!(signal, "shutting down: draining in-flight requests and deliveries");
            let _ = stopped_at.set(Instant::now());
            state.ready.store(false, Ordering::SeqCst);
            state.stopping.store(true, Ordering::SeqCst);
            let _ = stop_tx.send(true);
        });
    }
    let server = axum::serve(listener, router(state.clone())).with_graceful_shutdown(stopped(stop_rx.clone()));
    let mut server_task = tokio::spawn(server.into_future());
    let drain = opts.drain_timeout;
    tokio::select! {
        r = &mut server_task => match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(ServeError::Io(e)),
            Err(e) => tracing::error!(error = %e, "server task failed"),
        },
        _ = async { stopped(stop_rx).await; tokio::time::sleep(drain).await } => {
            tracing::warn!(?drain, "requests still in flight at the drain timeout; closing them");
            server_task.abort();
        }
    }
    let left = stopped_at.get().map_or(drain, |t| drain.saturating_sub(t.elapsed())).max(Duration::from_millis(100));
    if state.outbox.shutdown(left).await {
        tracing::info!("stopped; deliveries not yet sent stay pending and resume at the next start");
    } else {
        tracing::warn!("stopped with deliveries still in flight; they resume at the next start");
    }
    Ok(())
}

/// Resolves once `rx` holds true.
async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

/// SIGTERM or Ctrl-C; the signal's name.
async fn shutdown_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = tokio::signal::ctrl_c() => "SIGINT",
            },
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }
}

/// `callbridge serve`: runs the server on a multi-threaded runtime; returns the exit code.
pub fn run(config: &Path, state_file: &Path, opts: ServeArgs) -> i32 {
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return exit::INTERNAL;
        }
    };
    match rt.block_on(serve(config.to_path_buf(), state_file.to_path_buf(), opts)) {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}
