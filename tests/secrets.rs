//! Secrets (secret fields, tokens) never appear in `run` output, errors or logs.

mod common;

use std::process::Command;

use common::*;
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const SECRETS: [&str; 3] = ["key-SECRET-123456", "secret-XYZ-987654", "tok-very-secret-777"];

async fn run_cli(tree: &Tree, hook: &str, call: serde_json::Value) -> (i32, String, String) {
    let p = tree.path().join("call.json");
    std::fs::write(&p, call.to_string()).unwrap();
    let cfg = tree.path().to_path_buf();
    let hook = hook.to_string();
    tokio::task::spawn_blocking(move || {
        let out = Command::new(env!("CARGO_BIN_EXE_callbridge"))
            .arg("--config")
            .arg(&cfg)
            .arg("--state")
            .arg(cfg.join("state.db"))
            .args(["run", "--integrator", "acme-1", "--hook", &hook, "--call"])
            .arg(&p)
            .env("RUST_LOG", "trace")
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into(),
            String::from_utf8_lossy(&out.stderr).into(),
        )
    })
    .await
    .unwrap()
}

fn assert_clean(text: &str) {
    for s in SECRETS {
        assert!(!text.contains(s), "secret {s} leaked in:\n{text}");
    }
}

#[tokio::test]
async fn run_output_and_trace_logs_hold_no_secret() {
    let crm = MockServer::start().await;
    mount_token(&crm, "tok-very-secret-777", 3600).await;
    // The CRM echoes the token and key back in its body: extracted values must be masked too.
    Mock::given(method("GET"))
        .and(path("/contacts"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"results": [{"id": "tok-very-secret-777"}]})))
        .mount(&crm)
        .await;
    let tree = acme_tree(&host_of(&crm));
    let (code, stdout, stderr) = run_cli(&tree, "getDataIframe", json!({"call_id": "1", "phone": "+1"})).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("/contacts"), "{stdout}");
    assert!(stderr.contains("requesting an access token"), "trace logs were captured: {stderr}");
    assert_clean(&stdout);
    assert_clean(&stderr);
}

#[tokio::test]
async fn crm_errors_that_echo_a_secret_are_masked() {
    let crm = MockServer::start().await;
    mount_token(&crm, "tok-very-secret-777", 3600).await;
    Mock::given(method("POST"))
        .and(path("/calls"))
        .respond_with(
            ResponseTemplate::new(400)
                .set_body_json(json!({"message": "bad key key-SECRET-123456 with tok-very-secret-777"})),
        )
        .mount(&crm)
        .await;
    let tree = acme_tree(&host_of(&crm));
    let (code, stdout, stderr) =
        run_cli(&tree, "savePreLogCRM", json!({"call_id": "1", "phone": "+1", "direction": "inbound"})).await;
    assert_eq!(code, 3, "a CRM failure exits 3: {stdout}{stderr}");
    assert!(stderr.contains("bad key ***"), "{stderr}");
    assert_clean(&stdout);
    assert_clean(&stderr);
}
