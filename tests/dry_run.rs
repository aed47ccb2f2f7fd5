//! `callbridge dry-run`: prints each request a hook would send — readable HTTP or curl —
//! with secrets redacted and chained values taken from example responses; sends nothing.

mod common;

use std::process::Command;

use common::*;

fn dry_run(tree: &Tree, args: &[&str]) -> (i32, String, String) {
    let state = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_callbridge"))
        .arg("--config")
        .arg(tree.path())
        .arg("--state")
        .arg(state.path().join("s.db"))
        .arg("dry-run")
        .args(args)
        .env("RUST_LOG", "trace")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn call_file(tree: &Tree, name: &str, json: &str) -> String {
    let p = tree.path().join(name);
    std::fs::write(&p, json).unwrap();
    p.to_string_lossy().into_owned()
}

#[test]
fn dry_run_prints_redacted_http_and_chains_examples() {
    // Port 9 (discard): if anything were sent, it would fail.
    let tree = acme_tree("127.0.0.1:9");
    let call =
        call_file(&tree, "call.json", r#"{"call_id": "c-1", "phone": "+84901234567", "duration": 65, "notes": "x"}"#);
    let (code, stdout, stderr) =
        dry_run(&tree, &["--integrator", "acme-1", "--hook", "getDataIframe", "--call", &call]);
    assert_eq!(code, 0, "{stderr}");
    insta::assert_snapshot!("dry_run_getdataiframe_http", stdout);
    for secret in ["key-SECRET-123456", "secret-XYZ-987654"] {
        assert!(!stdout.contains(secret) && !stderr.contains(secret), "{secret} leaked");
    }
}

#[test]
fn dry_run_curl_output() {
    let tree = acme_tree("127.0.0.1:9");
    let call = call_file(&tree, "call.json", r#"{"call_id": "c-1", "phone": "+84901234567", "direction": "inbound"}"#);
    let (code, stdout, _) =
        dry_run(&tree, &["--integrator", "acme-1", "--hook", "savePreLogCRM", "--call", &call, "--curl"]);
    assert_eq!(code, 0);
    insta::assert_snapshot!("dry_run_saveprelog_curl", stdout);
}

#[test]
fn responses_file_overrides_examples_for_chaining() {
    let tree = acme_tree("127.0.0.1:9");
    let call = call_file(&tree, "call.json", r#"{"call_id": "c-2", "phone": "+1"}"#);
    let resp = call_file(&tree, "resp.json", r#"{"find_contact": {"results": [{"id": "from-file"}]}}"#);
    let (code, stdout, _) = dry_run(
        &tree,
        &[
            "--integrator",
            "acme-1",
            "--hook",
            "getDataIframe",
            "--call",
            &call,
            "--responses",
            &resp,
            "--output",
            "json",
        ],
    );
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["results"]["contact_id"], "from-file");
    assert_eq!(v["steps"][0]["request"]["headers"][0][1], "***", "the secret api key header is masked");
}

#[test]
fn unknown_hook_and_integrator_exit_2_with_a_hint() {
    let tree = acme_tree("127.0.0.1:9");
    let call = call_file(&tree, "call.json", r#"{"call_id": "c"}"#);
    let (code, _, stderr) = dry_run(&tree, &["--integrator", "acme-1", "--hook", "saveLogCrm", "--call", &call]);
    assert_eq!(code, 2);
    assert!(stderr.contains("did you mean 'saveLogCRM'?"), "{stderr}");
    let (code, _, stderr) = dry_run(&tree, &["--integrator", "acme-2", "--hook", "saveLogCRM", "--call", &call]);
    assert_eq!(code, 2);
    assert!(stderr.contains("did you mean 'acme-1'?"), "{stderr}");
    let bad = call_file(&tree, "bad.json", r#"{"call_id": "#);
    let (code, _, stderr) = dry_run(&tree, &["--integrator", "acme-1", "--hook", "saveLogCRM", "--call", &bad]);
    assert_eq!(code, 2);
    assert!(stderr.contains("invalid JSON"), "{stderr}");
}
