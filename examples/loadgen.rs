//! A small open-loop load generator for `scripts/load-bench.sh`.
//!
//! Fixed rate: `--rate R --duration D` sends R requests per second for D seconds, each on its
//! own task, whether or not earlier ones have been answered (open loop: a slow server does
//! not slow the generator down, so queueing shows up in the latencies). Burst: `--burst N`
//! sends N requests at once (each on its own connection). Every request carries a distinct
//! `call_id` (`<prefix>-<n>`), because the engine runs hooks of one call one at a time.
//!
//! Prints one summary line, e.g.
//! `loadgen mode=rate target_rps=1000 sent=10000 ok=10000 errors=0 achieved_rps=999.9 p50_ms=0.412 p99_ms=0.981 max_ms=3.104 statuses=200:10000`
//!
//! ```sh
//! cargo build --release --example loadgen
//! target/release/examples/loadgen --url http://127.0.0.1:18081/calls --rate 1000 --duration 10
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::json;
use tokio::sync::Mutex;

#[derive(Parser, Debug)]
#[command(about = "Open-loop fixed-rate (or burst) HTTP POST load generator")]
struct Args {
    /// Where to POST.
    #[arg(long)]
    url: String,
    /// Sent as `Authorization: Bearer <key>`.
    #[arg(long)]
    key: Option<String>,
    /// Requests per second (fixed-rate mode).
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Seconds to run (fixed-rate mode).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Send this many requests all at once instead (burst mode).
    #[arg(long)]
    burst: Option<usize>,
    /// call_id prefix; request n carries `<prefix>-<n>`.
    #[arg(long, default_value = "lg")]
    prefix: String,
    /// Runtime worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Per-request timeout, seconds.
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
    /// Leave the first SECONDS of a fixed-rate run out of the statistics (connection set-up).
    #[arg(long, default_value_t = 0.0)]
    warmup: f64,
    /// Spread requests over N integrators: `{n}` in --url and --key becomes 00001…N (5 digits),
    /// request i going to integrator (i mod N) + 1.
    #[arg(long)]
    spread: Option<usize>,
}

/// The URL and key of request `i`.
fn target(url: &str, key: Option<&str>, spread: Option<usize>, i: usize) -> (Arc<String>, Option<Arc<String>>) {
    match spread {
        Some(n) if n > 0 => {
            let tag = format!("{:05}", i % n + 1);
            (Arc::new(url.replace("{n}", &tag)), key.map(|k| Arc::new(k.replace("{n}", &tag))))
        }
        _ => (Arc::new(url.to_string()), key.map(|k| Arc::new(k.to_string()))),
    }
}

/// The call payload, the same shape the wrk script sends.
fn body(call_id: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "call_id": call_id,
        "direction": "inbound",
        "phone": "0901234567",
        "agent": { "id": "42", "name": "Lan Nguyen", "email": "lan@acme.example", "extension": "1001" },
        "started_at": "2026-11-20T09:15:00Z",
        "answered_at": "2026-11-20T09:15:07Z",
        "duration": 125,
        "status": "answered",
        "notes": "Customer asked about invoice 7731"
    }))
    .expect("a JSON body")
}

/// One request's outcome: when it was due (seconds from the start), its latency, its status
/// (None: no answer).
struct Sample {
    due_s: f64,
    latency: Duration,
    status: Option<u16>,
}

async fn one(
    client: reqwest::Client,
    url: Arc<String>,
    key: Option<Arc<String>>,
    call_id: String,
) -> (Duration, Option<u16>) {
    let mut rb = client.post(url.as_str()).header("content-type", "application/json").body(body(&call_id));
    if let Some(k) = &key {
        rb = rb.header("authorization", format!("Bearer {k}"));
    }
    let t0 = Instant::now();
    let status = match rb.send().await {
        Ok(resp) => {
            let s = resp.status().as_u16();
            // Read the whole answer: the latency is until the last byte.
            match resp.bytes().await {
                Ok(_) => Some(s),
                Err(_) => None,
            }
        }
        Err(_) => None,
    };
    (t0.elapsed(), status)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn run(a: Args) -> i32 {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(4096)
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_nodelay(true)
        .timeout(Duration::from_secs_f64(a.timeout))
        .build()
        .expect("an HTTP client");
    let samples = Arc::new(Mutex::new(Vec::<Sample>::new()));
    let mut tasks = tokio::task::JoinSet::new();
    let started = Instant::now();
    let mode;
    if let Some(n) = a.burst {
        mode = "burst".to_string();
        // Every request on its own task at once; a barrier so they really go together.
        let barrier = Arc::new(tokio::sync::Barrier::new(n + 1));
        for i in 0..n {
            let (u, k) = target(&a.url, a.key.as_deref(), a.spread, i);
            let (c, s, b) = (client.clone(), samples.clone(), barrier.clone());
            let id = format!("{}-{i}", a.prefix);
            tasks.spawn(async move {
                b.wait().await;
                let (latency, status) = one(c, u, k, id).await;
                s.lock().await.push(Sample { due_s: 0.0, latency, status });
            });
        }
        barrier.wait().await;
    } else {
        mode = "rate".to_string();
        let total = (a.rate as f64 * a.duration).round() as u64;
        let period = Duration::from_secs_f64(1.0 / a.rate as f64);
        // Tick at most every millisecond (the timer's resolution); each tick sends every request
        // that is due by then, so the rate holds even above 1,000/s.
        let mut tick = tokio::time::interval(period.max(Duration::from_millis(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut sent = 0u64;
        while sent < total {
            tick.tick().await;
            let due = ((started.elapsed().as_secs_f64() * a.rate as f64) as u64 + 1).min(total);
            while sent < due {
                let (u, k) = target(&a.url, a.key.as_deref(), a.spread, sent as usize);
                let (c, s) = (client.clone(), samples.clone());
                let id = format!("{}-{sent}", a.prefix);
                let due_s = sent as f64 / a.rate as f64;
                tasks.spawn(async move {
                    let (latency, status) = one(c, u, k, id).await;
                    s.lock().await.push(Sample { due_s, latency, status });
                });
                sent += 1;
            }
        }
    }
    let sending = started.elapsed();
    while tasks.join_next().await.is_some() {}
    let elapsed = started.elapsed();

    let all = std::mem::take(&mut *samples.lock().await);
    let sent = all.len();
    let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
    let mut ok = 0usize;
    let mut lat: Vec<Duration> = Vec::with_capacity(sent);
    for s in &all {
        let k = s.status.map_or("none".to_string(), |c| c.to_string());
        *statuses.entry(k).or_default() += 1;
        if s.status.is_some_and(|c| (200..300).contains(&c)) {
            ok += 1;
        }
        if s.due_s >= a.warmup {
            lat.push(s.latency);
        }
    }
    lat.sort_unstable();
    let statuses: Vec<String> = statuses.iter().map(|(k, v)| format!("{k}:{v}")).collect();
    let achieved = if mode == "rate" {
        sent as f64 / sending.as_secs_f64().max(1e-9)
    } else {
        sent as f64 / elapsed.as_secs_f64()
    };
    println!(
        "loadgen mode={mode} target_rps={} sent={sent} ok={ok} errors={} achieved_rps={achieved:.1} elapsed_s={:.3} measured={} p50_ms={:.3} p90_ms={:.3} p99_ms={:.3} p999_ms={:.3} max_ms={:.3} statuses={}",
        if mode == "rate" { a.rate.to_string() } else { "-".into() },
        sent - ok,
        elapsed.as_secs_f64(),
        lat.len(),
        ms(percentile(&lat, 50.0)),
        ms(percentile(&lat, 90.0)),
        ms(percentile(&lat, 99.0)),
        ms(percentile(&lat, 99.9)),
        ms(lat.last().copied().unwrap_or_default()),
        statuses.join(","),
    );
    if ok == sent { 0 } else { 1 }
}

fn main() -> std::process::ExitCode {
    let a = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(a.threads.max(1))
        .enable_all()
        .build()
        .expect("a runtime");
    let code = rt.block_on(run(a));
    std::process::ExitCode::from(code as u8)
}
