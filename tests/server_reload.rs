//! Configuration reload without restart: a broken file is logged and the old configuration
//! keeps serving; a valid change is used at once; SIGHUP reloads when the watch is off.

mod common;
#[path = "common/server.rs"]
mod server;

use std::time::Duration;

use common::host_of;
use serde_json::Value;
use server::*;

async fn config_status(s: &Server, key: &str) -> u16 {
    get(s, "/v1/integrators/desk-a/config", Some(key)).await.0
}

/// The reload lines the server logged (JSON lines).
fn reload_events(s: &Server) -> Vec<Value> {
    s.logs()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["fields"]["message"].as_str().is_some_and(|m| m.contains("configuration reload")))
        .collect()
}

#[tokio::test]
async fn broken_file_is_logged_and_the_old_configuration_keeps_serving() {
    let crm = desk_crm().await;
    let tree = desk_tree(&host_of(&crm));
    let s = Server::start(tree.path(), &["--reload-debounce", "100ms"]).await;
    let pid = s.pid();
    std::fs::write(tree.path().join("integrators/desk-a.yaml"), "id: desk-a\nintegration: desk\nhots: oops\n").unwrap();
    let rejected =
        eventually(Duration::from_secs(10), || async { reload_events(&s).iter().any(|e| e["level"] == "ERROR") }).await;
    assert!(rejected, "the rejected reload is logged:\n{}", s.logs());
    let event = reload_events(&s).into_iter().find(|e| e["level"] == "ERROR").unwrap();
    let diags = event["fields"]["diagnostics"].as_str().unwrap();
    assert!(diags.contains("desk-a.yaml") && diags.contains("hots"), "the log names the file and the problem: {diags}");
    assert_eq!(config_status(&s, "key-a-1").await, 200, "the old configuration keeps serving");
    let (status, _, _) =
        post_hook(&s, "desk-a", "getDataIframe", "key-a-1", &serde_json::json!({"call_id": "r", "phone": "+1"}), &[])
            .await;
    assert_eq!(status, 200);
    assert_eq!(s.pid(), pid);
    assert!(!s.logs().contains("desk-SECRET-aaaa-1111"));
}

#[tokio::test]
async fn valid_change_is_used_without_restart() {
    let crm = desk_crm().await;
    let tree = desk_tree(&host_of(&crm));
    let s = Server::start(tree.path(), &["--reload-debounce", "100ms"]).await;
    let pid = s.pid();
    assert_eq!(config_status(&s, "key-a-1").await, 200);
    let changed = DESK_A
        .replace("host: \"@HOST@\"", &format!("host: \"{}\"", host_of(&crm)))
        .replace(r#"[ "key-a-1", "key-a-2" ]"#, r#"[ "key-a-rotated" ]"#);
    std::fs::write(tree.path().join("integrators/desk-a.yaml"), changed).unwrap();
    let rotated =
        eventually(Duration::from_secs(10), || async { config_status(&s, "key-a-rotated").await == 200 }).await;
    assert!(rotated, "the new key works:\n{}", s.logs());
    assert_eq!(config_status(&s, "key-a-1").await, 403, "the old key no longer does");
    assert_eq!(s.pid(), pid, "no restart");

    // A new integrator file is picked up too.
    let c = DESK_B.replace("@HOST@", &host_of(&crm)).replace("desk-b", "desk-c").replace("key-b-1", "key-c-1");
    std::fs::write(tree.path().join("integrators/desk-c.yaml"), c).unwrap();
    let added = eventually(Duration::from_secs(10), || async {
        get(&s, "/v1/integrators/desk-c/config", Some("key-c-1")).await.0 == 200
    })
    .await;
    assert!(added, "{}", s.logs());
}

#[tokio::test]
async fn sighup_reloads_when_the_watch_is_off() {
    let crm = desk_crm().await;
    let tree = desk_tree(&host_of(&crm));
    let s = Server::start(tree.path(), &["--no-watch"]).await;
    let changed = DESK_A.replace("@HOST@", &host_of(&crm)).replace(r#"[ "key-a-1", "key-a-2" ]"#, r#"[ "key-a-hup" ]"#);
    std::fs::write(tree.path().join("integrators/desk-a.yaml"), changed).unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(config_status(&s, "key-a-1").await, 200, "no reload without the watch nor a signal");
    s.signal(libc::SIGHUP);
    let reloaded = eventually(Duration::from_secs(10), || async { config_status(&s, "key-a-hup").await == 200 }).await;
    assert!(reloaded, "{}", s.logs());
    assert!(reload_events(&s).iter().any(|e| e["fields"]["trigger"] == "SIGHUP"), "{}", s.logs());
}
