//! HTTP retries: 5xx and 429 (with Retry-After) are retried with backoff for a bounded time;
//! the final error names the endpoint, the status and the CRM's message.

mod common;

use std::time::{Duration, Instant};

use callbridge::{Hook, Mode};
use common::*;
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

async fn setup() -> (MockServer, Tree) {
    let crm = MockServer::start().await;
    mount_token(&crm, "tok", 3600).await;
    let tree = acme_tree(&host_of(&crm));
    (crm, tree)
}

async fn posts(crm: &MockServer) -> usize {
    crm.received_requests().await.unwrap().iter().filter(|r| r.url.path() == "/calls").count()
}

#[tokio::test]
async fn a_5xx_is_retried_until_it_succeeds() {
    let (crm, tree) = setup().await;
    Mock::given(method("POST"))
        .and(path("/calls"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .mount(&crm)
        .await;
    Mock::given(method("POST"))
        .and(path("/calls"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"id": "l1"})))
        .mount(&crm)
        .await;
    let out = engine()
        .run_hook(
            &tree.catalog(),
            "acme-1",
            Hook::SavePreLogCrm,
            &json!({"call_id": "1", "phone": "+1", "direction": "inbound"}),
            &Mode::Execute,
        )
        .await
        .unwrap();
    assert_eq!(out.steps[0].attempts, 3);
    assert_eq!(out.results["call_log_id"], json!("l1"));
    assert_eq!(posts(&crm).await, 3);
}

#[tokio::test]
async fn a_429_waits_for_retry_after() {
    let (crm, tree) = setup().await;
    Mock::given(method("POST"))
        .and(path("/calls"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "1"))
        .up_to_n_times(1)
        .mount(&crm)
        .await;
    Mock::given(method("POST"))
        .and(path("/calls"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"id": "l2"})))
        .mount(&crm)
        .await;
    let eng = engine();
    let cat = tree.catalog();
    let t0 = Instant::now();
    let out = eng
        .run_hook(
            &cat,
            "acme-1",
            Hook::SavePreLogCrm,
            &json!({"call_id": "1", "phone": "+1", "direction": "inbound"}),
            &Mode::Execute,
        )
        .await
        .unwrap();
    assert!(t0.elapsed() >= Duration::from_millis(190), "the test policy caps Retry-After at max_delay (200 ms)");
    assert_eq!(out.steps[0].attempts, 2);
    assert_eq!(eng.metrics.counter_total("callbridge_crm_retries_total"), 1);
}

#[tokio::test]
async fn the_final_error_names_endpoint_status_and_crm_message() {
    let (crm, tree) = setup().await;
    Mock::given(method("POST"))
        .and(path("/calls"))
        .respond_with(ResponseTemplate::new(500).set_body_json(json!({"message": "database on fire"})))
        .mount(&crm)
        .await;
    let err = engine()
        .run_hook(
            &tree.catalog(),
            "acme-1",
            Hook::SavePreLogCrm,
            &json!({"call_id": "1", "phone": "+1", "direction": "inbound"}),
            &Mode::Execute,
        )
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("create_call") && msg.contains("500") && msg.contains("database on fire"), "{msg}");
    assert!(err.is_transient());
    assert_eq!(posts(&crm).await, 4, "bounded: max_attempts");
}

#[tokio::test]
async fn a_4xx_is_not_retried_and_a_200_with_an_error_body_fails() {
    let (crm, tree) = setup().await;
    Mock::given(method("POST"))
        .and(path("/calls"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({"error": {"message": "phone is invalid"}})))
        .mount(&crm)
        .await;
    let err = engine()
        .run_hook(
            &tree.catalog(),
            "acme-1",
            Hook::SavePreLogCrm,
            &json!({"call_id": "1", "phone": "x", "direction": "inbound"}),
            &Mode::Execute,
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("phone is invalid"), "{err}");
    assert!(!err.is_transient());
    assert_eq!(posts(&crm).await, 1);
}

#[tokio::test]
async fn a_connection_error_is_retried_then_reported() {
    let tree = acme_tree("127.0.0.1:1");
    let t0 = Instant::now();
    let err = engine()
        .run_hook(
            &tree.catalog(),
            "acme-1",
            Hook::GetDataIframe,
            &json!({"call_id": "1", "phone": "+1"}),
            &Mode::Execute,
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("connect"), "{err}");
    assert!(t0.elapsed() < Duration::from_secs(10));
}
