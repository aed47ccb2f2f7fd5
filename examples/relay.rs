//! The reference point of `scripts/load-bench.sh`: a minimal hand-written axum + reqwest relay
//! doing the benchmark's hook workload with nothing declarative, durable or observable in it —
//! receive the call payload, build the call-log body, POST it with a bearer token, extract the
//! new id, answer. What callbridge costs on top of hand-written code is measured against this.
//!
//! ```sh
//! cargo build --release --example relay
//! target/release/examples/relay --listen 127.0.0.1:18085 --crm http://127.0.0.1:18081/calls
//! ```

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use clap::Parser;
use serde_json::{Value, json};

#[derive(Parser, Debug)]
#[command(about = "Hand-written hook relay (the load benchmark's reference)")]
struct Args {
    #[arg(long, default_value = "127.0.0.1:18085")]
    listen: String,
    /// The fake CRM's create-call URL.
    #[arg(long, default_value = "http://127.0.0.1:18081/calls")]
    crm: String,
    /// Bearer token sent to the CRM.
    #[arg(long, default_value = "bench-token")]
    token: String,
}

struct Relay {
    client: reqwest::Client,
    crm: String,
    auth: String,
}

async fn hook(State(r): State<Arc<Relay>>, Json(call): Json<Value>) -> Result<Json<Value>, (StatusCode, String)> {
    let s = |k: &str| call.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let agent = |k: &str| call.pointer(&format!("/agent/{k}")).and_then(Value::as_str).unwrap_or("").to_string();
    let phone = s("phone");
    let e164 = match phone.strip_prefix('0') {
        Some(rest) => format!("+84{rest}"),
        None => phone.clone(),
    };
    let direction = s("direction");
    let title = if direction == "outbound" { "Outbound call to" } else { "Inbound call from" };
    let body = json!({
        "call_id": s("call_id"),
        "phone": e164,
        "direction": direction.to_uppercase(),
        "title": format!("{title} {e164}"),
        "agent_id": agent("id"),
        "agent_name": agent("name"),
        "agent_extension": agent("extension"),
        "started_at": s("started_at"),
        "duration_ms": call.get("duration").and_then(Value::as_f64).map(|d| d * 1000.0),
        "status": "IN_PROGRESS",
        "notes": call.get("notes"),
    });
    let resp = r
        .client
        .post(&r.crm)
        .header("Authorization", &r.auth)
        .json(&body)
        .send()
        .await
        .map_err(|e| (StatusCode::BAD_GATEWAY, e.to_string()))?;
    let answer: Value = resp.json().await.map_err(|e| (StatusCode::BAD_GATEWAY, e.to_string()))?;
    Ok(Json(json!({"status": "delivered", "results": {"call_log_id": answer.get("id")}})))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let relay = Arc::new(Relay {
        client: reqwest::Client::builder().pool_max_idle_per_host(256).build()?,
        crm: args.crm,
        auth: format!("Bearer {}", args.token),
    });
    let app = axum::Router::new().route("/hook", post(hook)).with_state(relay);
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    axum::serve(listener, app).await?;
    Ok(())
}
