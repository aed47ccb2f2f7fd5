//! The command line: validate, list, schema, dry-run, run, serve, deliveries. A thin caller of
//! the engine; `anyhow` is used only here, at the binary's edge.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::{Map, Value, json};

use crate::catalog::Catalog;
use crate::error::{HookError, exit};
use crate::hooks::{Engine, HookOutcome, Mode};
use crate::http::RetryPolicy;
use crate::model::Hook;
use crate::storage::{SqliteStorage, Storage};

#[derive(Parser, Debug)]
#[command(name = "callbridge", version, about = "Declarative call-center → CRM integration engine")]
pub struct Cli {
    /// The configuration folder (holding templates/, integrators/, endpoints/).
    #[arg(long, global = true, env = "CALLBRIDGE_CONFIG", default_value = ".")]
    pub config: PathBuf,
    /// The state file (call state, token cache, deliveries); created owner-only.
    #[arg(long, global = true, env = "CALLBRIDGE_STATE", default_value = ".callbridge/state.db")]
    pub state: PathBuf,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Log format (logs go to stderr; level from RUST_LOG).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Check every file of a configuration tree; exit 0 only when it is valid.
    Validate {
        /// The folder (default: --config).
        dir: Option<PathBuf>,
    },
    /// List integrations, integrators, endpoints and their hooks.
    List,
    /// Print JSON Schema for a YAML kind (template, integrator, endpoints), or write all three.
    Schema {
        /// template | integrator | endpoints (default: all three in one object).
        kind: Option<String>,
        /// Write `<kind>.schema.json` files into this folder instead.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Print the requests a hook would send, secrets redacted; sends nothing (but --auth).
    DryRun(DryRunArgs),
    /// Run a hook for real and print each request's status and the result.
    Run(RunArgs),
    /// Serve the hook API for the callbox (see docs/server.md).
    Serve(crate::server::ServeArgs),
    /// Inspect and replay the delivery outbox (write hooks accepted by `serve`).
    Deliveries {
        #[command(subcommand)]
        command: crate::server::admin::DeliveriesCmd,
    },
}

#[derive(Args, Debug)]
pub struct HookArgs {
    /// The integrator id.
    #[arg(long)]
    pub integrator: String,
    /// The hook: getDataIframe, savePreLogCRM, saveLogCRM, createSMSNote, handleCreateTicket, handleCreateContact.
    #[arg(long)]
    pub hook: String,
    /// The call payload (JSON file; `-` for stdin).
    #[arg(long)]
    pub call: PathBuf,
}

#[derive(Args, Debug)]
pub struct DryRunArgs {
    #[command(flatten)]
    pub hook: HookArgs,
    /// Example responses by endpoint name (JSON object), to chain values.
    #[arg(long)]
    pub responses: Option<PathBuf>,
    /// Print curl commands instead of readable HTTP.
    #[arg(long)]
    pub curl: bool,
    /// Fetch a real token (the only request a dry-run sends).
    #[arg(long)]
    pub auth: bool,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub hook: HookArgs,
    /// Send to this base URL (scheme://host:port) instead of the integrator's host.
    #[arg(long)]
    pub host: Option<String>,
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = if matches!(cli.command, Command::Serve(_)) { "info" } else { "warn" };
    init_logging(cli.log_format, level);
    let code = match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            exit::INTERNAL
        }
    };
    ExitCode::from(code as u8)
}

/// Sets up `tracing` on stderr; `RUST_LOG` overrides `default`.
pub fn init_logging(format: LogFormat, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colours only for a terminal: a log file or collector gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let b = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    let _ = match format {
        LogFormat::Json => b.json().try_init(),
        LogFormat::Text => b.try_init(),
    };
}

fn run(cli: Cli) -> anyhow::Result<i32> {
    match &cli.command {
        Command::Validate { dir } => Ok(validate(dir.as_deref().unwrap_or(&cli.config), cli.output)),
        Command::List => with_catalog(&cli, |cat| {
            list(cat, cli.output);
            Ok(exit::OK)
        }),
        Command::Schema { kind, out } => schema(kind.as_deref(), out.as_deref()),
        Command::DryRun(a) => with_catalog(&cli, |cat| run_hook_cmd(&cli, cat, &a.hook, dry_mode(a)?, a.curl, None)),
        Command::Run(a) => {
            with_catalog(&cli, |cat| run_hook_cmd(&cli, cat, &a.hook, Mode::Execute, false, a.host.as_deref()))
        }
        Command::Serve(a) => Ok(crate::server::run(&cli.config, &cli.state, a.clone())),
        Command::Deliveries { command } => Ok(crate::server::admin::run(command, &cli.config, &cli.state, cli.output)),
    }
}

fn dry_mode(a: &DryRunArgs) -> anyhow::Result<Mode> {
    let responses = match &a.responses {
        Some(p) => match read_json(p)? {
            Value::Object(m) => m,
            _ => anyhow::bail!("{}: expected a JSON object of endpoint name → response body", p.display()),
        },
        None => Map::new(),
    };
    Ok(Mode::DryRun { responses, auth: a.auth })
}

fn with_catalog(cli: &Cli, f: impl FnOnce(Catalog) -> anyhow::Result<i32>) -> anyhow::Result<i32> {
    match Catalog::load(&cli.config) {
        Ok(cat) => f(cat),
        Err(diags) => {
            print_diagnostics(&diags, cli.output);
            Ok(exit::INVALID)
        }
    }
}

fn print_diagnostics(diags: &crate::diagnostics::Diagnostics, output: Output) {
    match output {
        Output::Json => println!("{}", json!({"valid": false, "errors": diags.0})),
        Output::Text => eprintln!("{diags}"),
    }
}

fn validate(dir: &Path, output: Output) -> i32 {
    match Catalog::load(dir) {
        Ok(cat) => {
            let endpoints: usize = cat.integrations.values().map(|i| i.endpoints.len()).sum();
            match output {
                Output::Json => println!(
                    "{}",
                    json!({"valid": true, "integrations": cat.integrations.len(), "integrators": cat.integrators.len(), "endpoints": endpoints})
                ),
                Output::Text => println!(
                    "ok: {} integration(s), {} integrator(s), {} endpoint(s) in {}",
                    cat.integrations.len(),
                    cat.integrators.len(),
                    endpoints,
                    dir.display()
                ),
            }
            exit::OK
        }
        Err(diags) => {
            print_diagnostics(&diags, output);
            exit::INVALID
        }
    }
}

fn list(cat: Catalog, output: Output) {
    let integrations: Vec<Value> = cat
        .integrations
        .values()
        .map(|i| {
            json!({
                "name": i.name,
                "label": i.label,
                "type": i.kind,
                "hooks": i.hooks(),
                "endpoints": i.endpoints.iter().map(|e| json!({
                    "name": e.name, "type": e.kind, "method": e.method.as_str(), "trigger": e.trigger,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let integrators: Vec<Value> = cat
        .integrators
        .values()
        .map(|i| json!({"id": i.id, "integration": i.integration, "callcenterId": i.callcenter_id, "host": i.host}))
        .collect();
    if output == Output::Json {
        println!("{}", json!({"integrations": integrations, "integrators": integrators}));
        return;
    }
    println!("integrations:");
    for i in cat.integrations.values() {
        let hooks: Vec<&str> = i.hooks().into_iter().map(Hook::as_str).collect();
        println!("  {} ({:?}) — hooks: {}", i.name, i.kind, hooks.join(", "));
        for e in &i.endpoints {
            let trig = e.trigger.map(Hook::as_str).unwrap_or("(auth)");
            println!("    {:<24} {:<8} {:<7} {}", e.name, format!("{:?}", e.kind), e.method.as_str(), trig);
        }
    }
    println!("integrators:");
    for i in cat.integrators.values() {
        println!("  {:<24} {} @ {}", i.id, i.integration, i.host);
    }
}

fn schema(kind: Option<&str>, out: Option<&Path>) -> anyhow::Result<i32> {
    use crate::schema::{KINDS, schema_of};
    if let Some(k) = kind
        && !KINDS.contains(&k)
    {
        eprintln!("error: unknown kind '{k}'\n  expected: one of {}", KINDS.join(", "));
        return Ok(exit::INVALID);
    }
    let kinds: Vec<&str> = kind.map(|k| vec![k]).unwrap_or_else(|| KINDS.to_vec());
    match out {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            for k in kinds {
                let p = dir.join(format!("{k}.schema.json"));
                std::fs::write(&p, serde_json::to_string_pretty(&schema_of(k))?)?;
                println!("wrote {}", p.display());
            }
        }
        None if kinds.len() == 1 => println!("{}", serde_json::to_string_pretty(&schema_of(kinds[0]))?),
        None => {
            let all: Map<String, Value> =
                kinds.iter().map(|k| (k.to_string(), schema_of(k).unwrap_or(Value::Null))).collect();
            println!("{}", serde_json::to_string_pretty(&all)?);
        }
    }
    Ok(exit::OK)
}

fn read_json(p: &Path) -> anyhow::Result<Value> {
    let text = if p == Path::new("-") {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?
    };
    serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}:{}:{}: invalid JSON: {e}", p.display(), e.line(), e.column()))
}

/// Replaces an integrator's scheme and host (`run --host`).
fn override_host(cat: &mut Catalog, id: &str, base: &str) -> anyhow::Result<()> {
    let url = url::Url::parse(base).map_err(|e| anyhow::anyhow!("--host '{base}' is not a URL: {e}"))?;
    let host = url.host_str().ok_or_else(|| anyhow::anyhow!("--host '{base}' has no host"))?;
    let host = match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    };
    if let Some(i) = cat.integrators.get(id) {
        let mut i = crate::catalog::Integrator::clone(i);
        i.base_url = format!("{}://{host}", url.scheme());
        i.host = host;
        cat.integrators.insert(id.to_string(), Arc::new(i));
    }
    Ok(())
}

fn run_hook_cmd(
    cli: &Cli,
    mut cat: Catalog,
    a: &HookArgs,
    mode: Mode,
    curl: bool,
    host: Option<&str>,
) -> anyhow::Result<i32> {
    let Some(hook) = Hook::parse(&a.hook) else {
        let all = Hook::ALL.map(Hook::as_str);
        eprintln!(
            "error: unknown hook '{}'\n  expected: {}{}",
            a.hook,
            crate::diagnostics::one_of(all),
            crate::diagnostics::did_you_mean(&a.hook, all).map(|h| format!("\n  hint: {h}")).unwrap_or_default()
        );
        return Ok(exit::INVALID);
    };
    if cat.integrator(&a.integrator).is_none() {
        let ids: Vec<&str> = cat.integrators.keys().map(String::as_str).collect();
        eprintln!(
            "error: unknown integrator '{}'\n  expected: {}{}",
            a.integrator,
            crate::diagnostics::one_of(ids.iter().copied()),
            crate::diagnostics::did_you_mean(&a.integrator, ids.iter().copied())
                .map(|h| format!("\n  hint: {h}"))
                .unwrap_or_default()
        );
        return Ok(exit::INVALID);
    }
    if let Some(h) = host {
        override_host(&mut cat, &a.integrator, h)?;
    }
    let call = match read_json(&a.call) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(exit::INVALID);
        }
    };
    let store: Arc<dyn Storage> = Arc::new(SqliteStorage::open(&cli.state)?);
    let engine = Engine::new(store, RetryPolicy::default());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let dry = matches!(mode, Mode::DryRun { .. });
    let result = rt.block_on(engine.run_hook(&cat, &a.integrator, hook, &call, &mode));
    let redactor =
        cat.integrator(&a.integrator).map(|i| crate::redact::Redactor::new(i.secrets.clone())).unwrap_or_default();
    match result {
        Ok(outcome) => {
            print_outcome(&outcome, cli.output, dry, curl, &redactor);
            Ok(exit::OK)
        }
        Err(e) => {
            print_error(&e, cli.output, &redactor);
            Ok(e.exit_code())
        }
    }
}

fn print_error(e: &HookError, output: Output, r: &crate::redact::Redactor) {
    let msg = r.redact(&e.to_string());
    match output {
        Output::Json => println!("{}", json!({"ok": false, "error": {"kind": e.kind(), "message": msg}})),
        Output::Text => eprintln!("error: {msg}"),
    }
}

fn print_outcome(o: &HookOutcome, output: Output, dry: bool, curl: bool, r: &crate::redact::Redactor) {
    let results = crate::request::redact_value(r, &Value::Object(o.results.clone()));
    if output == Output::Json {
        let mut v = serde_json::to_value(o).unwrap_or(Value::Null);
        v["ok"] = Value::Bool(true);
        v["results"] = results;
        println!("{}", crate::request::redact_value(r, &v));
        return;
    }
    for (n, s) in o.steps.iter().enumerate() {
        let n = n + 1;
        if !s.ran {
            println!("### {n}. {} — skipped (its 'when' is false)\n", s.endpoint);
            continue;
        }
        if dry {
            println!("### {n}. {} ({})", s.endpoint, s.label);
            if let Some(req) = &s.request {
                println!("{}", if curl { req.to_curl() } else { req.to_http() });
            }
            if !s.extracted.is_empty() {
                println!("# chained from its example response: {}", Value::Object(s.extracted.clone()));
            }
            println!();
        } else {
            let (method, url) = s.request.as_ref().map(|r| (r.method, r.url.as_str())).unwrap_or(("", ""));
            println!(
                "{n}. {:<22} {method} {url} → {} ({} attempt(s), {} ms){}",
                s.endpoint,
                s.status.map(|c| c.to_string()).unwrap_or_default(),
                s.attempts,
                s.duration_ms,
                if s.extracted.is_empty() {
                    String::new()
                } else {
                    format!("  {}", Value::Object(s.extracted.clone()))
                }
            );
        }
    }
    println!("results: {}", serde_json::to_string_pretty(&results).unwrap_or_default());
}
