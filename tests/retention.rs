//! Retention: `serve --retention` removes delivered deliveries and call states older than the
//! period on its own; pending and dead deliveries stay; `callbridge deliveries prune` does the
//! same offline.

mod common;
#[path = "common/server.rs"]
mod server;

use std::time::Duration;

use callbridge::storage::{SqliteStorage, Storage};
use common::host_of;
use serde_json::{Value, json};
use server::*;
use wiremock::matchers::{body_partial_json, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// A CRM that logs calls, but refuses the call "refused" (so it is dead-lettered).
async fn crm() -> MockServer {
    let crm = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/calls"))
        .and(body_partial_json(json!({"call_id": "refused"})))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({"message": "no"})))
        .with_priority(1)
        .mount(&crm)
        .await;
    Mock::given(method("POST"))
        .and(path("/calls"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"id": "log-1"})))
        .mount(&crm)
        .await;
    crm
}

fn listed(s: &Server) -> Vec<(String, String)> {
    let out = s.cli(&["--output", "json", "deliveries", "list"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|d| (d["call_id"].as_str().unwrap().to_string(), d["status"].as_str().unwrap().to_string()))
        .collect()
}

async fn log_calls(s: &Server, calls: &[&str]) {
    for c in calls {
        let (status, _, body) =
            post_hook(s, "desk-a", "savePreLogCRM", "key-a-1", &json!({"call_id": c, "phone": "+1"}), &[]).await;
        assert!(status == 200 || status == 502, "{status} {body}");
    }
}

#[tokio::test]
async fn serve_removes_what_is_older_than_its_retention_and_keeps_dead_deliveries() {
    let crm = crm().await;
    let tree = desk_tree(&host_of(&crm));
    let s = Server::start(tree.path(), &["--crm-tries", "1", "--retention", "1s", "--prune-interval", "200ms"]).await;
    log_calls(&s, &["c1", "c2", "refused"]).await;
    let mut all = listed(&s);
    all.sort();
    assert_eq!(
        all,
        [("c1".into(), "delivered".into()), ("c2".into(), "delivered".into()), ("refused".into(), "dead".into())]
    );
    let state = |call: &str| SqliteStorage::open(&s.state).unwrap().load_call("desk-a", call).unwrap();
    assert!(state("c1").is_some(), "the call state is there at first");

    let gone = eventually(Duration::from_secs(10), || async { listed(&s).len() == 1 }).await;
    assert!(gone, "delivered deliveries older than 1 s are removed: {:?}", listed(&s));
    assert_eq!(listed(&s), [("refused".to_string(), "dead".to_string())], "the dead one stays for an operator");
    assert!(state("c1").is_none(), "the old call state is removed too");
    assert!(s.logs().contains("retention: removed old records"), "{}", s.logs());

    // A new call after the prune is kept (younger than the period).
    log_calls(&s, &["c3"]).await;
    assert!(listed(&s).contains(&("c3".to_string(), "delivered".to_string())));
}

#[tokio::test]
async fn deliveries_prune_removes_old_records_offline() {
    let crm = crm().await;
    let tree = desk_tree(&host_of(&crm));
    // Retention off (0): the server keeps everything.
    let mut s = Server::start(tree.path(), &["--crm-tries", "1", "--retention", "0"]).await;
    log_calls(&s, &["c1", "c2", "refused"]).await;
    s.kill();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(listed(&s).len(), 3, "nothing was removed with --retention 0");

    let out = s.cli(&["deliveries", "prune", "--older-than", "1h"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("removed 0 delivered deliveries and 0 call states"));
    let out = s.cli(&["--output", "json", "deliveries", "prune", "--older-than", "1s"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["deliveries"], 2, "{report}");
    assert_eq!(report["calls"], 2, "the two logged calls' states (the refused one stored none): {report}");
    assert_eq!(listed(&s), [("refused".to_string(), "dead".to_string())]);
    let out = s.cli(&["deliveries", "prune", "--older-than", "soon"]);
    assert_eq!(out.status.code(), Some(2), "a bad duration is a usage error");
}
