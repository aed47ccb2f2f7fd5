//! Keys and CORS per integrator: one tenant's key never opens another's hooks, config,
//! deliveries or iframe; only the origins an integrator lists get CORS headers.

mod common;
#[path = "common/server.rs"]
mod server;

use common::host_of;
use serde_json::json;
use server::*;

#[tokio::test]
async fn a_key_of_one_integrator_never_reaches_another() {
    let crm = desk_crm().await;
    let tree = desk_tree(&host_of(&crm));
    let s = Server::start(tree.path(), &[]).await;
    // B has a delivery and a call state of its own.
    let (status, _, b_delivery) =
        post_hook(&s, "desk-b", "savePreLogCRM", "key-b-1", &json!({"call_id": "b-call", "phone": "+1"}), &[]).await;
    assert_eq!(status, 200);
    post_hook(&s, "desk-b", "getDataIframe", "key-b-1", &json!({"call_id": "b-call", "phone": "+1"}), &[]).await;
    let before = crm.received_requests().await.unwrap().len();

    let (status, _, body) = post_hook(
        &s,
        "desk-b",
        "saveLogCRM",
        "key-a-1",
        &json!({"call_id": "b-call", "phone": "+1", "duration": 1}),
        &[],
    )
    .await;
    assert_eq!(status, 403, "A's key on B's hook: {body}");
    assert_eq!(body["error"]["kind"], "forbidden");
    let (status, _, body) = get(&s, "/v1/integrators/desk-b/config", Some("key-a-1")).await;
    assert_eq!(status, 403, "A's key on B's config: {body}");
    let (status, _, body) = get(&s, "/v1/integrators/desk-b/iframe?call=b-call", Some("key-a-1")).await;
    assert_eq!(status, 403, "A's key on B's iframe: {body}");
    let (status, _, body) = get(&s, "/v1/integrators/desk-b/iframe?call=b-call&key=key-a-1", None).await;
    assert_eq!(status, 403, "A's key as ?key= on B's iframe: {body}");
    let id = b_delivery["delivery"]["id"].as_str().unwrap();
    let (status, _, body) = get(&s, &format!("/v1/deliveries/{id}"), Some("key-a-1")).await;
    assert_eq!(status, 404, "A's key on B's delivery: {body}");
    let (status, _, _) = get(&s, &format!("/v1/deliveries/{id}"), Some("key-b-1")).await;
    assert_eq!(status, 200, "B's key sees it");

    assert_eq!(crm.received_requests().await.unwrap().len(), before, "nothing reached the CRM for B with A's key");
    let logs = s.logs();
    for secret in ["desk-SECRET-bbbb-2222", "key-a-1", "key-b-1"] {
        assert!(!logs.contains(secret), "the log holds '{secret}'");
    }
}

#[tokio::test]
async fn every_key_an_integrator_lists_is_accepted_and_others_refused() {
    let crm = desk_crm().await;
    let tree = desk_tree(&host_of(&crm));
    let s = Server::start(tree.path(), &[]).await;
    for key in ["key-a-1", "key-a-2"] {
        let (status, _, body) = get(&s, "/v1/integrators/desk-a/config", Some(key)).await;
        assert_eq!(status, 200, "{key}: {body}");
    }
    let (status, headers, body) = get(&s, "/v1/integrators/desk-a/config", None).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(headers["www-authenticate"], "Bearer");
    for key in ["key-a-", "key-a-1x", "KEY-A-1", ""] {
        let resp = client()
            .get(s.url("/v1/integrators/desk-a/config"))
            .header("authorization", format!("Bearer {key}"))
            .send()
            .await
            .unwrap();
        assert!(matches!(resp.status().as_u16(), 401 | 403), "'{key}' → {}", resp.status());
    }
    let resp = client()
        .get(s.url("/v1/integrators/desk-a/config"))
        .header("authorization", "Basic a2V5LWEtMQ==")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401, "only Bearer is accepted");
}

async fn with_origin(s: &Server, path: &str, origin: &str) -> reqwest::Response {
    client().get(s.url(path)).bearer_auth("key-a-1").header("origin", origin).send().await.unwrap()
}

#[tokio::test]
async fn listed_origin_gets_cors_headers_and_unlisted_origins_none() {
    let crm = desk_crm().await;
    let tree = desk_tree(&host_of(&crm));
    let s = Server::start(tree.path(), &[]).await;
    let resp = with_origin(&s, "/v1/integrators/desk-a/config", "https://callbox.a.example").await;
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["access-control-allow-origin"], "https://callbox.a.example");
    let exposed = resp.headers()["access-control-expose-headers"].to_str().unwrap().to_string();
    assert!(exposed.contains("x-request-id") && exposed.contains("location"), "{exposed}");

    for origin in ["https://evil.example", "https://callbox.b.example", "https://callbox.a.example.evil.example"] {
        let resp = with_origin(&s, "/v1/integrators/desk-a/config", origin).await;
        assert!(resp.headers().get("access-control-allow-origin").is_none(), "{origin} must get no ACAO");
    }
    // An error answer carries CORS headers too, so the callbox can read it.
    let resp = client()
        .post(s.url("/v1/integrators/desk-a/hooks/saveLogCRM"))
        .bearer_auth("key-a-1")
        .header("origin", "https://callbox.a.example")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    assert_eq!(resp.headers()["access-control-allow-origin"], "https://callbox.a.example");
}

async fn preflight(s: &Server, path: &str, origin: &str) -> reqwest::Response {
    client()
        .request(reqwest::Method::OPTIONS, s.url(path))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization, content-type, idempotency-key, prefer")
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn preflight_is_answered_per_integrator_path() {
    let crm = desk_crm().await;
    let tree = desk_tree(&host_of(&crm));
    let s = Server::start(tree.path(), &[]).await;
    let resp = preflight(&s, "/v1/integrators/desk-a/hooks/saveLogCRM", "https://callbox.a.example").await;
    assert!(resp.status().is_success(), "{}", resp.status());
    let h = resp.headers();
    assert_eq!(h["access-control-allow-origin"], "https://callbox.a.example");
    let methods = h["access-control-allow-methods"].to_str().unwrap().to_lowercase();
    assert!(methods.contains("post"), "{methods}");
    let allowed = h["access-control-allow-headers"].to_str().unwrap().to_lowercase();
    for want in ["authorization", "content-type", "idempotency-key", "prefer"] {
        assert!(allowed.contains(want), "{want} not in {allowed}");
    }
    // B's origin on A's path, and A's origin on B's path: nothing.
    let resp = preflight(&s, "/v1/integrators/desk-a/hooks/saveLogCRM", "https://callbox.b.example").await;
    assert!(resp.headers().get("access-control-allow-origin").is_none());
    let resp = preflight(&s, "/v1/integrators/desk-b/hooks/saveLogCRM", "https://callbox.a.example").await;
    assert!(resp.headers().get("access-control-allow-origin").is_none());
    let resp = preflight(&s, "/v1/integrators/desk-b/hooks/saveLogCRM", "https://callbox.b.example").await;
    assert_eq!(resp.headers()["access-control-allow-origin"], "https://callbox.b.example");

    // A delivery's path allows its integrator's origins.
    let (_, _, body) =
        post_hook(&s, "desk-a", "savePreLogCRM", "key-a-1", &json!({"call_id": "x", "phone": "+1"}), &[]).await;
    let path = body["delivery"]["url"].as_str().unwrap().to_string();
    let ok = preflight(&s, &path, "https://callbox.a.example").await;
    assert_eq!(ok.headers()["access-control-allow-origin"], "https://callbox.a.example");
    let other = preflight(&s, &path, "https://callbox.b.example").await;
    assert!(other.headers().get("access-control-allow-origin").is_none());
}
