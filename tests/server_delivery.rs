//! Durable delivery: a CRM that fails for a while still gets the log; one that keeps failing
//! dead-letters it and `callbridge deliveries retry` delivers it once the CRM is back; refusals
//! dead-letter at once; one call's deliveries go in order; SIGTERM drains what is in flight.

mod common;
#[path = "common/server.rs"]
mod server;

use std::sync::Arc;
use std::time::Duration;

use callbridge::storage::{DeliveryStatus, SqliteStorage, Storage};
use common::host_of;
use serde_json::{Value, json};
use server::*;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// Quick attempts: one HTTP try each, 50 ms apart (doubling).
const FAST: [&str; 6] = ["--crm-tries", "1", "--retry-delay", "50ms", "--max-retry-delay", "200ms"];

fn args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    FAST.iter().copied().chain(extra.iter().copied()).collect()
}

#[tokio::test]
async fn crm_failing_three_times_then_succeeding_gets_the_log_delivered() {
    let crm = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/calls"))
        .respond_with(ResponseTemplate::new(503).set_body_json(json!({"message": "maintenance"})))
        .up_to_n_times(3)
        .with_priority(1)
        .mount(&crm)
        .await;
    Mock::given(method("POST"))
        .and(path("/calls"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"id": "log-7"})))
        .mount(&crm)
        .await;
    let tree = desk_tree(&host_of(&crm));
    let s = Server::start(tree.path(), &args(&["--max-attempts", "8"])).await;
    let (status, _, body) = post_hook(
        &s,
        "desk-a",
        "savePreLogCRM",
        "key-a-1",
        &json!({"call_id": "c1", "phone": "+1"}),
        &[("Prefer", "respond-async")],
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let d = wait_delivery(&s, body["delivery"]["id"].as_str().unwrap(), "key-a-1", Duration::from_secs(15)).await;
    assert_eq!(d["status"], "delivered", "{d}");
    assert_eq!(d["attempts"], 4, "three failed attempts, then the one that worked");
    assert_eq!(d["result"]["results"]["call_log_id"], "log-7");
    assert_eq!(crm.received_requests().await.unwrap().len(), 4);
    let (_, _, metrics) = get(&s, "/metrics", None).await;
    assert!(
        metrics.contains(r#"callbridge_deliveries_total{integrator="desk-a",hook="savePreLogCRM",outcome="retry"} 3"#),
        "{metrics}"
    );
    assert!(
        metrics
            .contains(r#"callbridge_deliveries_total{integrator="desk-a",hook="savePreLogCRM",outcome="delivered"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_crm_refusal_dead_letters_at_once_and_the_caller_sees_why() {
    let crm = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/calls"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({"message": "phone is invalid"})))
        .mount(&crm)
        .await;
    let tree = desk_tree(&host_of(&crm));
    let s = Server::start(tree.path(), &args(&[])).await;
    let (status, _, body) =
        post_hook(&s, "desk-a", "savePreLogCRM", "key-a-1", &json!({"call_id": "c1", "phone": "nope"}), &[]).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["kind"], "crm_error");
    assert!(body["error"]["message"].as_str().unwrap().contains("phone is invalid"), "{body}");
    assert_eq!(body["delivery"]["status"], "dead");
    assert_eq!(body["delivery"]["attempts"], 1, "a 4xx is not retried");
    assert_eq!(crm.received_requests().await.unwrap().len(), 1);
}

#[tokio::test]
async fn always_failing_crm_dead_letters_and_deliveries_retry_delivers_once_it_recovers() {
    let crm = MockServer::start().await;
    Mock::given(method("POST")).and(path("/calls")).respond_with(ResponseTemplate::new(500)).mount(&crm).await;
    let tree = desk_tree(&host_of(&crm));
    let s = Server::start(tree.path(), &args(&["--max-attempts", "3"])).await;
    // The notes carry the tenant's secret by mistake: `show` must mask it.
    let call = json!({"call_id": "c-dead", "phone": "+1", "notes": "key desk-SECRET-aaaa-1111"});
    let (_, _, body) = post_hook(&s, "desk-a", "savePreLogCRM", "key-a-1", &call, &[("Prefer", "respond-async")]).await;
    let id = body["delivery"]["id"].as_str().unwrap().to_string();
    let d = wait_delivery(&s, &id, "key-a-1", Duration::from_secs(15)).await;
    assert_eq!(d["status"], "dead", "{d}");
    assert_eq!(d["attempts"], 3);
    assert!(d["last_error"].as_str().unwrap().contains("500"), "{d}");
    assert_eq!(crm.received_requests().await.unwrap().len(), 3);

    let out = s.cli(&["--output", "json", "deliveries", "list", "--status", "dead"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["id"], id.as_str());
    let out = s.cli(&["deliveries", "list", "--integrator", "desk-a"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&id) && text.contains("dead"), "{text}");

    let out = s.cli(&["deliveries", "show", &id]);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(shown.contains("c-dead") && shown.contains("key ***"), "{shown}");
    assert!(!shown.contains("desk-SECRET-aaaa-1111"), "show masks the secret: {shown}");

    // The CRM recovers; the operator replays the dead delivery with the server still running.
    crm.reset().await;
    Mock::given(method("POST"))
        .and(path("/calls"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"id": "log-back"})))
        .mount(&crm)
        .await;
    let out = s.cli(&["deliveries", "retry", &id]);
    let printed = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{printed}{}", String::from_utf8_lossy(&out.stderr));
    assert!(printed.contains("delivered"), "{printed}");
    let d = wait_delivery(&s, &id, "key-a-1", Duration::from_secs(5)).await;
    assert_eq!(d["status"], "delivered");
    assert_eq!(d["attempts"], 1, "attempts start again from 0");
    assert_eq!(d["result"]["results"]["call_log_id"], "log-back");
    // The server saw the record change and does not send it again.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(crm.received_requests().await.unwrap().len(), 1, "delivered exactly once after the recovery");

    let out = s.cli(&["deliveries", "retry", &id]);
    assert_eq!(out.status.code(), Some(2), "a delivered delivery is not replayed");
    let out = s.cli(&["deliveries", "show", "no-such-id"]);
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test]
async fn deliveries_retry_all_dead_works_without_a_server() {
    let crm = MockServer::start().await;
    Mock::given(method("POST")).and(path("/notes")).respond_with(ResponseTemplate::new(502)).mount(&crm).await;
    let tree = desk_tree(&host_of(&crm));
    let mut s = Server::start(tree.path(), &args(&["--max-attempts", "1"])).await;
    for n in 0..2 {
        let call = json!({"call_id": format!("c{n}"), "phone": "+1", "sms": {"to": "+1", "text": "hi"}});
        let (status, _, body) = post_hook(&s, "desk-a", "createSMSNote", "key-a-1", &call, &[]).await;
        assert_eq!(status, 502, "{body}");
    }
    s.kill();
    crm.reset().await;
    Mock::given(method("POST"))
        .and(path("/notes"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"id": "n"})))
        .mount(&crm)
        .await;
    let out = s.cli(&["--output", "json", "deliveries", "retry", "--all-dead"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report.as_array().unwrap().len(), 2);
    assert!(report.as_array().unwrap().iter().all(|d| d["status"] == "delivered"), "{report}");
    assert_eq!(crm.received_requests().await.unwrap().len(), 2);
}

#[tokio::test]
async fn deliveries_of_one_call_are_sent_in_acceptance_order() {
    let crm = MockServer::start().await;
    let slow = |status: u16| {
        ResponseTemplate::new(status).set_body_json(json!({"id": "log-1"})).set_delay(Duration::from_millis(150))
    };
    Mock::given(method("POST")).and(path("/calls")).respond_with(slow(201)).mount(&crm).await;
    Mock::given(method("PATCH")).and(path("/calls/log-1")).respond_with(slow(200)).mount(&crm).await;
    let tree = desk_tree(&host_of(&crm));
    let s = Server::start(tree.path(), &[]).await;
    let a = [("Prefer", "respond-async")];
    for n in 0..4 {
        let id = format!("o{n}");
        post_hook(&s, "desk-a", "savePreLogCRM", "key-a-1", &json!({"call_id": id, "phone": "+1"}), &a).await;
        post_hook(&s, "desk-a", "saveLogCRM", "key-a-1", &json!({"call_id": id, "phone": "+1", "duration": 5}), &a)
            .await;
    }
    wait_no_pending(&s, Duration::from_secs(10)).await;
    let reqs = crm_requests(&crm).await;
    for n in 0..4 {
        let id = format!("o{n}");
        let of_call: Vec<&str> =
            reqs.iter().filter(|(_, _, b)| b["call_id"] == id.as_str()).map(|(m, _, _)| m.as_str()).collect();
        assert_eq!(of_call, ["POST", "PATCH"], "{id}: the pre-log's create, then the end's update");
    }
}

#[tokio::test]
async fn sigterm_drains_in_flight_deliveries_before_exit() {
    let crm = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/calls"))
        .respond_with(
            ResponseTemplate::new(201).set_body_json(json!({"id": "log-1"})).set_delay(Duration::from_millis(800)),
        )
        .mount(&crm)
        .await;
    let tree = desk_tree(&host_of(&crm));
    let mut s = Server::start(tree.path(), &[]).await;
    for n in 0..3 {
        post_hook(
            &s,
            "desk-a",
            "savePreLogCRM",
            "key-a-1",
            &json!({"call_id": format!("t{n}"), "phone": "+1"}),
            &[("Prefer", "respond-async")],
        )
        .await;
    }
    let in_flight =
        eventually(Duration::from_secs(5), || async { crm.received_requests().await.unwrap().len() == 3 }).await;
    assert!(in_flight, "the three deliveries are at the CRM");
    s.signal(libc::SIGTERM);
    let status = s.wait_exit(Duration::from_secs(10)).expect("exits after draining");
    assert!(status.success(), "{status:?}");
    let store = Arc::new(SqliteStorage::open(&s.state).unwrap());
    assert_eq!(
        store.count_deliveries(DeliveryStatus::Pending).unwrap(),
        0,
        "in-flight deliveries finished before exit"
    );
    assert_eq!(store.count_deliveries(DeliveryStatus::Delivered).unwrap(), 3);
    assert!(s.logs().contains("SIGTERM"));
}
