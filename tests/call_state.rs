//! Call state: what savePreLogCRM extracts reaches saveLogCRM of the same call, so one call
//! gives one CRM log — created at pre-log, updated at the end, created at the end when none.

mod common;

use callbridge::{Hook, Mode};
use common::*;
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

async fn crm() -> MockServer {
    let crm = MockServer::start().await;
    mount_token(&crm, "tok", 3600).await;
    Mock::given(method("POST"))
        .and(path("/calls"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"id": "log-42"})))
        .mount(&crm)
        .await;
    Mock::given(method("PATCH"))
        .and(path("/calls/log-42"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "log-42"})))
        .mount(&crm)
        .await;
    crm
}

async fn calls(crm: &MockServer) -> Vec<(String, String)> {
    crm.received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.url.path().starts_with("/calls"))
        .map(|r| (r.method.to_string(), r.url.path().to_string()))
        .collect()
}

#[tokio::test]
async fn second_savelog_updates_not_creates() {
    let crm = crm().await;
    let tree = acme_tree(&host_of(&crm));
    let cat = tree.catalog();
    let eng = engine();
    let pre = json!({"call_id": "call-1", "phone": "+84901234567", "direction": "inbound"});
    let end = json!({"call_id": "call-1", "phone": "+84901234567", "duration": 125, "notes": "done"});
    let out = eng.run_hook(&cat, "acme-1", Hook::SavePreLogCrm, &pre, &Mode::Execute).await.unwrap();
    assert_eq!(out.results["call_log_id"], json!("log-42"));
    let out = eng.run_hook(&cat, "acme-1", Hook::SaveLogCrm, &end, &Mode::Execute).await.unwrap();
    assert!(out.steps[0].ran, "update_call runs");
    assert!(!out.steps[1].ran, "create_call_at_end is skipped");
    assert_eq!(calls(&crm).await, vec![("POST".into(), "/calls".into()), ("PATCH".into(), "/calls/log-42".into())]);
    let patch = crm.received_requests().await.unwrap().into_iter().find(|r| r.method.as_str() == "PATCH").unwrap();
    let body: serde_json::Value = serde_json::from_slice(&patch.body).unwrap();
    assert_eq!(body, json!({"duration": 125, "notes": "done"}));
}

#[tokio::test]
async fn savelog_creates_when_there_was_no_prelog() {
    let crm = crm().await;
    let tree = acme_tree(&host_of(&crm));
    let end = json!({"call_id": "call-2", "phone": "+1", "duration": 5, "notes": "missed pre-log"});
    engine().run_hook(&tree.catalog(), "acme-1", Hook::SaveLogCrm, &end, &Mode::Execute).await.unwrap();
    assert_eq!(calls(&crm).await, vec![("POST".into(), "/calls".into())]);
}

#[tokio::test]
async fn duplicate_and_out_of_order_hooks_yield_one_log() {
    let crm = crm().await;
    let tree = acme_tree(&host_of(&crm));
    let cat = tree.catalog();
    let eng = engine();
    let pre = json!({"call_id": "call-3", "phone": "+1", "direction": "outbound"});
    let end = json!({"call_id": "call-3", "phone": "+1", "duration": 9, "notes": "n"});
    // The end arrives first, then the pre-log twice (the callbox's retry).
    eng.run_hook(&cat, "acme-1", Hook::SaveLogCrm, &end, &Mode::Execute).await.unwrap();
    eng.run_hook(&cat, "acme-1", Hook::SavePreLogCrm, &pre, &Mode::Execute).await.unwrap();
    eng.run_hook(&cat, "acme-1", Hook::SavePreLogCrm, &pre, &Mode::Execute).await.unwrap();
    let creates = calls(&crm).await.into_iter().filter(|(m, _)| m == "POST").count();
    assert_eq!(creates, 1);
}

#[tokio::test]
async fn call_state_is_per_call_and_per_integrator() {
    let crm = crm().await;
    let tree = acme_tree(&host_of(&crm));
    let cat = tree.catalog();
    let eng = engine();
    for id in ["a", "b"] {
        let pre = json!({"call_id": id, "phone": "+1", "direction": "inbound"});
        eng.run_hook(&cat, "acme-1", Hook::SavePreLogCrm, &pre, &Mode::Execute).await.unwrap();
    }
    let creates = calls(&crm).await.into_iter().filter(|(m, _)| m == "POST").count();
    assert_eq!(creates, 2, "two calls, two logs");
}

#[tokio::test]
async fn getdataiframe_keeps_the_body_under_its_object_name() {
    let crm = crm().await;
    Mock::given(method("GET"))
        .and(path("/contacts"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"results": [{"id": "c-5", "name": "Ann"}]})))
        .mount(&crm)
        .await;
    let tree = acme_tree(&host_of(&crm));
    let out = engine()
        .run_hook(
            &tree.catalog(),
            "acme-1",
            Hook::GetDataIframe,
            &json!({"call_id": "x", "phone": "+1"}),
            &Mode::Execute,
        )
        .await
        .unwrap();
    assert_eq!(out.results["contact_id"], json!("c-5"));
    assert_eq!(out.objects["contact"]["results"][0]["name"], json!("Ann"));
}
