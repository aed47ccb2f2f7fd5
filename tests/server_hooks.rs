//! Hooks through the real server against a fake CRM: getDataIframe answers with the data,
//! write hooks are delivered (waiting, or 202 and poll), idempotency keys and retried or
//! out-of-order hooks still give one CRM log per call; config, iframe and operations routes.

mod common;
#[path = "common/server.rs"]
mod server;

use std::time::Duration;

use common::host_of;
use serde_json::{Value, json};
use server::*;

#[tokio::test]
async fn getdataiframe_answers_with_the_contact_the_crm_found() {
    let crm = desk_crm().await;
    let tree = desk_tree(&host_of(&crm));
    let s = Server::start(tree.path(), &[]).await;
    let (status, _, body) =
        post_hook(&s, "desk-a", "getDataIframe", "key-a-1", &json!({"call_id": "c1", "phone": "+84901234567"}), &[])
            .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"]["contact_id"], "c-1");
    assert_eq!(body["objects"]["contact"]["results"][0]["name"], "Ann");
    let reqs = crm.received_requests().await.unwrap();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].url.query(), Some("phone=%2B84901234567"));
    assert_eq!(reqs[0].headers.get("x-api-key").map(|v| v.to_str().unwrap()), Some("desk-SECRET-aaaa-1111"));
}

#[tokio::test]
async fn write_hook_waits_for_the_crm_and_answers_200_with_the_log_id() {
    let crm = desk_crm().await;
    let tree = desk_tree(&host_of(&crm));
    let s = Server::start(tree.path(), &[]).await;
    let (status, _, body) =
        post_hook(&s, "desk-a", "savePreLogCRM", "key-a-1", &json!({"call_id": "c1", "phone": "+1"}), &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "delivered");
    assert_eq!(body["results"]["call_log_id"], "log-1");
    assert_eq!(body["delivery"]["attempts"], 1);
    assert_eq!(creates_for(&crm, "c1").await, 1);

    let (status, _, body) =
        post_hook(&s, "desk-a", "saveLogCRM", "key-a-1", &json!({"call_id": "c1", "phone": "+1", "duration": 42}), &[])
            .await;
    assert_eq!(status, 200, "{body}");
    let patches: Vec<_> = crm_requests(&crm).await.into_iter().filter(|(m, _, _)| m == "PATCH").collect();
    assert_eq!(patches.len(), 1, "the end of the call updates the log the pre-log created");
    assert_eq!(patches[0].1, "/calls/log-1");
    assert_eq!(patches[0].2["duration"], 42);
}

#[tokio::test]
async fn sms_ticket_and_contact_hooks_reach_their_endpoints() {
    let crm = desk_crm().await;
    let tree = desk_tree(&host_of(&crm));
    let s = Server::start(tree.path(), &[]).await;
    let cases = [
        (
            "createSMSNote",
            json!({"call_id": "c1", "phone": "+1", "sms": {"to": "+1", "text": "hello"}}),
            "/notes",
            "note_id",
        ),
        (
            "handleCreateTicket",
            json!({"call_id": "c1", "phone": "+1", "form": {"subject": "Invoice"}}),
            "/tickets",
            "ticket_id",
        ),
        ("handleCreateContact", json!({"phone": "+1", "form": {"name": "Ann Le"}}), "/contacts", "new_contact_id"),
    ];
    for (hook, body, path, result) in cases {
        let (status, _, answer) = post_hook(&s, "desk-a", hook, "key-a-1", &body, &[]).await;
        assert_eq!(status, 200, "{hook}: {answer}");
        assert!(answer["results"][result].is_string(), "{hook}: {answer}");
        let hits = crm_requests(&crm).await.into_iter().filter(|(m, p, _)| m == "POST" && p == path).count();
        assert_eq!(hits, 1, "{hook} posts once to {path}");
    }
    let ticket = crm_requests(&crm).await.into_iter().find(|(_, p, _)| p == "/tickets").unwrap();
    assert_eq!(ticket.2, json!({"call_id": "c1", "subject": "Invoice"}));
}

#[tokio::test]
async fn prefer_respond_async_answers_202_and_the_delivery_can_be_polled() {
    let crm = desk_crm().await;
    let tree = desk_tree(&host_of(&crm));
    let s = Server::start(tree.path(), &[]).await;
    let (status, headers, body) = post_hook(
        &s,
        "desk-a",
        "savePreLogCRM",
        "key-a-1",
        &json!({"call_id": "c1", "phone": "+1"}),
        &[("Prefer", "respond-async")],
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let id = body["delivery"]["id"].as_str().unwrap().to_string();
    assert_eq!(headers["location"].to_str().unwrap(), format!("/v1/deliveries/{id}"));
    let d = wait_delivery(&s, &id, "key-a-2", Duration::from_secs(10)).await;
    assert_eq!(d["status"], "delivered", "{d}");
    assert_eq!(d["result"]["results"]["call_log_id"], "log-1");
    assert_eq!(creates_for(&crm, "c1").await, 1);
}

#[tokio::test]
async fn async_query_parameter_answers_202() {
    let crm = desk_crm().await;
    let tree = desk_tree(&host_of(&crm));
    let s = Server::start(tree.path(), &[]).await;
    let resp = client()
        .post(s.url("/v1/integrators/desk-a/hooks/saveLogCRM?async=true"))
        .bearer_auth("key-a-1")
        .json(&json!({"call_id": "c2", "phone": "+1", "duration": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    let body: Value = resp.json().await.unwrap();
    let d = wait_delivery(&s, body["delivery"]["id"].as_str().unwrap(), "key-a-1", Duration::from_secs(10)).await;
    assert_eq!(d["status"], "delivered");
}

#[tokio::test]
async fn crm_slower_than_the_wait_timeout_gets_202_then_delivers() {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let crm = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/calls"))
        .respond_with(
            ResponseTemplate::new(201).set_body_json(json!({"id": "log-9"})).set_delay(Duration::from_millis(800)),
        )
        .mount(&crm)
        .await;
    let tree = desk_tree(&host_of(&crm));
    let s = Server::start(tree.path(), &["--wait-timeout", "150ms"]).await;
    let t0 = std::time::Instant::now();
    let (status, _, body) =
        post_hook(&s, "desk-a", "savePreLogCRM", "key-a-1", &json!({"call_id": "slow", "phone": "+1"}), &[]).await;
    assert_eq!(status, 202, "{body}");
    assert!(t0.elapsed() < Duration::from_millis(700), "answered after the wait timeout, not the CRM");
    let d = wait_delivery(&s, body["delivery"]["id"].as_str().unwrap(), "key-a-1", Duration::from_secs(10)).await;
    assert_eq!(d["status"], "delivered");
    assert_eq!(d["result"]["results"]["call_log_id"], "log-9");
}

#[tokio::test]
async fn idempotency_key_answers_with_the_first_delivery_and_calls_the_crm_once() {
    let crm = desk_crm().await;
    let tree = desk_tree(&host_of(&crm));
    let s = Server::start(tree.path(), &[]).await;
    let call = json!({"call_id": "c1", "phone": "+1", "sms": {"to": "+1", "text": "hi"}});
    let key = [("Idempotency-Key", "sms-c1-1")];
    let (s1, _, first) = post_hook(&s, "desk-a", "createSMSNote", "key-a-1", &call, &key).await;
    let (s2, _, second) = post_hook(&s, "desk-a", "createSMSNote", "key-a-1", &call, &key).await;
    assert_eq!((s1, s2), (200, 200), "{first} {second}");
    assert_eq!(first["duplicate"], false);
    assert_eq!(second["duplicate"], true);
    assert_eq!(second["delivery"]["id"], first["delivery"]["id"]);
    assert_eq!(second["results"]["note_id"], "n-1", "the duplicate answers with the first one's result");
    let notes = crm_requests(&crm).await.into_iter().filter(|(_, p, _)| p == "/notes").count();
    assert_eq!(notes, 1, "the SMS note is not created twice");

    // The same key on another integrator is another delivery.
    let (_, _, other) = post_hook(&s, "desk-b", "createSMSNote", "key-b-1", &call, &key).await;
    assert_ne!(other["delivery"]["id"], first["delivery"]["id"]);
}

#[tokio::test]
async fn duplicate_and_out_of_order_hooks_yield_one_crm_log_per_call() {
    let crm = desk_crm().await;
    let tree = desk_tree(&host_of(&crm));
    let s = Server::start(tree.path(), &[]).await;
    let async_ = [("Prefer", "respond-async")];
    for n in 0..5 {
        let id = format!("call-{n}");
        let pre = json!({"call_id": id, "phone": "+1"});
        let end = json!({"call_id": id, "phone": "+1", "duration": 10});
        // The end arrives first, then the pre-log twice (a retry), then the end again.
        post_hook(&s, "desk-a", "saveLogCRM", "key-a-1", &end, &async_).await;
        post_hook(&s, "desk-a", "savePreLogCRM", "key-a-1", &pre, &async_).await;
        post_hook(&s, "desk-a", "savePreLogCRM", "key-a-1", &pre, &async_).await;
        post_hook(&s, "desk-a", "saveLogCRM", "key-a-1", &end, &async_).await;
    }
    wait_no_pending(&s, Duration::from_secs(15)).await;
    for n in 0..5 {
        assert_eq!(creates_for(&crm, &format!("call-{n}")).await, 1, "call-{n} has one log");
    }
}

#[tokio::test]
async fn config_gives_merged_info_and_iframe_without_secrets_or_keys() {
    let crm = desk_crm().await;
    let tree = desk_tree(&host_of(&crm));
    let s = Server::start(tree.path(), &[]).await;
    let (status, _, text) = get(&s, "/v1/integrators/desk-a/config", Some("key-a-1")).await;
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["info"]["renderTooltip"][0]["element"], ".phone");
    assert_eq!(v["info"]["dataFunction"][0], json!({"endpoint": "find_contact", "objectName": "contact"}));
    assert_eq!(v["info"]["listOptions"][0]["name"], "auto_create_ticket");
    assert_eq!(v["iframe"]["title"], "Desk");
    assert_eq!(v["options"]["auto_create_ticket"], false);
    assert_eq!(v["fields"], json!({"portal": "portal-a"}), "secret fields are left out");
    assert_eq!(v["hooks"]["saveLogCRM"], "/v1/integrators/desk-a/hooks/saveLogCRM");
    for secret in ["desk-SECRET-aaaa-1111", "key-a-1", "key-a-2", "api_key"] {
        assert!(!text.contains(secret), "config leaks '{secret}': {text}");
    }
}

#[tokio::test]
async fn iframe_page_shows_the_stored_call_state_with_the_key_in_the_query() {
    let crm = desk_crm().await;
    let tree = desk_tree(&host_of(&crm));
    let s = Server::start(tree.path(), &[]).await;
    post_hook(&s, "desk-a", "getDataIframe", "key-a-1", &json!({"call_id": "pop-1", "phone": "+1"}), &[]).await;
    let (status, headers, html) = get(&s, "/v1/integrators/desk-a/iframe?call=pop-1&key=key-a-1", None).await;
    assert_eq!(status, 200, "{html}");
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(html.contains("Ann"), "the page shows the contact found at call start: {html}");
    assert!(html.contains("/v1/integrators/desk-a/hooks/handleCreateTicket"));
    assert!(!html.contains("desk-SECRET-aaaa-1111"));
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("frame-ancestors 'self' https://callbox.a.example"), "{csp}");
    assert_eq!(headers["referrer-policy"], "no-referrer");

    let (status, _, _) = get(&s, "/v1/integrators/desk-a/iframe?call=pop-1", Some("key-a-2")).await;
    assert_eq!(status, 200, "the Authorization header works too");
    let (status, _, body) = get(&s, "/v1/integrators/desk-a/iframe?call=pop-1", None).await;
    assert_eq!(status, 401, "{body}");
    let (status, _, body) = get(&s, "/v1/integrators/desk-a/config?key=key-a-1", None).await;
    assert_eq!(status, 401, "?key= is accepted on the iframe route only: {body}");
}

#[tokio::test]
async fn health_metrics_openapi_and_request_ids_answer() {
    let crm = desk_crm().await;
    let tree = desk_tree(&host_of(&crm));
    let s = Server::start(tree.path(), &[]).await;
    post_hook(&s, "desk-a", "getDataIframe", "key-a-1", &json!({"call_id": "m1", "phone": "+1"}), &[]).await;
    post_hook(&s, "desk-a", "savePreLogCRM", "key-a-1", &json!({"call_id": "m1", "phone": "+1"}), &[]).await;

    let (status, _, body) = get(&s, "/healthz", None).await;
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ok"}"#));
    let (status, _, body) = get(&s, "/readyz", None).await;
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["pending"], 0);

    let (status, headers, metrics) = get(&s, "/metrics", None).await;
    assert_eq!(status, 200);
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/plain"));
    for line in [
        r#"callbridge_hooks_total{integrator="desk-a",hook="getDataIframe",outcome="ok"} 1"#,
        r#"callbridge_deliveries_total{integrator="desk-a",hook="savePreLogCRM",outcome="delivered"} 1"#,
        "callbridge_deliveries_pending{} 0",
        "# TYPE callbridge_crm_request_seconds histogram",
    ] {
        assert!(metrics.contains(line), "missing '{line}' in:\n{metrics}");
    }
    assert!(!metrics.contains("SECRET"), "no secret in metrics");

    let (status, _, doc) = get(&s, "/openapi.json", None).await;
    assert_eq!(status, 200);
    let doc: Value = serde_json::from_str(&doc).unwrap();
    for p in [
        "/v1/integrators/{id}/hooks/{hook}",
        "/v1/integrators/{id}/config",
        "/v1/integrators/{id}/iframe",
        "/v1/deliveries/{id}",
        "/metrics",
    ] {
        assert!(doc["paths"][p].is_object(), "openapi lacks {p}");
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());

    let resp = client().get(s.url("/healthz")).header("x-request-id", "req-abc-123").send().await.unwrap();
    assert_eq!(resp.headers()["x-request-id"], "req-abc-123", "a caller's request id is kept");
    let resp = client().get(s.url("/healthz")).send().await.unwrap();
    assert!(!resp.headers()["x-request-id"].is_empty(), "one is made up otherwise");
}
