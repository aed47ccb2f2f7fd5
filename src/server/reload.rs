//! Configuration reload without restart: SIGHUP, or a change under the configuration folder
//! (debounced). A valid tree replaces the old one at once; an invalid one is logged and ignored.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::catalog::Catalog;
use crate::diagnostics::Diagnostics;
use crate::metrics::Metrics;
use crate::redact::Redactor;

/// The configuration in use. Each request takes a snapshot ([`CatalogHandle::get`]) when it
/// starts, so a reload never changes the configuration under a running hook.
pub struct CatalogHandle {
    root: PathBuf,
    current: RwLock<Arc<Catalog>>,
    metrics: Arc<Metrics>,
}

/// The folders a configuration tree is read from.
const FOLDERS: [&str; 3] = ["templates", "integrators", "endpoints"];

impl CatalogHandle {
    pub fn new(root: &Path, catalog: Catalog, metrics: Arc<Metrics>) -> CatalogHandle {
        CatalogHandle { root: root.to_path_buf(), current: RwLock::new(Arc::new(catalog)), metrics }
    }

    /// The configuration now.
    pub fn get(&self) -> Arc<Catalog> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Loads the tree again; swaps it in when valid, else logs why and keeps the old one.
    pub async fn reload(&self, why: &str) -> Result<(), Diagnostics> {
        let root = self.root.clone();
        let loaded = tokio::task::spawn_blocking(move || Catalog::load(&root)).await;
        let loaded = match loaded {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "configuration reload failed");
                return Ok(());
            }
        };
        match loaded {
            Ok(cat) => {
                tracing::info!(
                    trigger = why,
                    integrations = cat.integrations.len(),
                    integrators = cat.integrators.len(),
                    "configuration reloaded"
                );
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(cat);
                self.metrics.inc("callbridge_config_reloads_total", &[("outcome", "ok")]);
                Ok(())
            }
            Err(diags) => {
                // A parse error may quote a line of YAML: mask what the running tree knows is secret.
                let old = self.get();
                let redactor =
                    Redactor::new(old.integrators.values().flat_map(|i| i.secrets.iter().chain(&i.api_keys).cloned()));
                tracing::error!(
                    trigger = why,
                    errors = diags.0.len(),
                    diagnostics = %redactor.redact(&diags.to_string()),
                    "configuration reload rejected; the previous configuration keeps serving"
                );
                self.metrics.inc("callbridge_config_reloads_total", &[("outcome", "rejected")]);
                Err(diags)
            }
        }
    }
}

/// Reloads on SIGHUP and, unless `watch` is false, when a file under the configuration
/// folders changes (after `debounce` of quiet). Runs until the process ends.
pub fn spawn(handle: Arc<CatalogHandle>, watch: bool, debounce: Duration) {
    let (tx, mut rx) = mpsc::unbounded_channel::<&'static str>();
    #[cfg(unix)]
    {
        let tx = tx.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let mut hup = match signal(SignalKind::hangup()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGHUP");
                    return;
                }
            };
            while hup.recv().await.is_some() {
                let _ = tx.send("SIGHUP");
            }
        });
    }
    let watcher = if watch { start_watcher(&handle.root, tx.clone()) } else { None };
    tokio::spawn(async move {
        // The watcher stops when dropped: keep it for as long as this task runs.
        let _watcher = watcher;
        while let Some(mut why) = rx.recv().await {
            if why != "SIGHUP" {
                // Editors write a file in several steps: wait until the folder is quiet.
                while let Ok(Some(next)) = tokio::time::timeout(debounce, rx.recv()).await {
                    if next == "SIGHUP" {
                        why = next;
                    }
                }
            }
            let _ = handle.reload(why).await;
        }
    });
}

fn start_watcher(root: &Path, tx: mpsc::UnboundedSender<&'static str>) -> Option<notify::RecommendedWatcher> {
    let handler = move |res: notify::Result<notify::Event>| match res {
        Ok(ev) if relevant(&ev) => {
            let _ = tx.send("file change");
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "configuration watch error"),
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the configuration folder; SIGHUP still reloads");
            return None;
        }
    };
    // Only the three folders: the root may hold a busy `target/` or `.git/`.
    let mut watching = 0;
    for f in FOLDERS {
        let dir = root.join(f);
        if dir.is_dir() {
            match watcher.watch(&dir, RecursiveMode::Recursive) {
                Ok(()) => watching += 1,
                Err(e) => {
                    tracing::warn!(folder = %dir.display(), error = %e, "cannot watch folder")
                }
            }
        }
    }
    tracing::info!(folders = watching, root = %root.display(), "watching the configuration for changes");
    Some(watcher)
}

/// A change to a YAML file (created, written, renamed, removed); not reads or metadata.
fn relevant(ev: &notify::Event) -> bool {
    use notify::EventKind;
    matches!(ev.kind, EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_))
        && !matches!(ev.kind, EventKind::Modify(notify::event::ModifyKind::Metadata(_)))
        && ev.paths.iter().any(|p| {
            let ext = p.extension().and_then(|e| e.to_str());
            matches!(ext, Some("yaml" | "yml")) || p.is_dir()
        })
}
