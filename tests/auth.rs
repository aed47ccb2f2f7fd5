//! Auth: the token is cached per integrator, concurrent hooks share one token request, a 401
//! refreshes once and retries once, a refresh keeps the old refresh token, and the cache
//! persists across separate runs.

mod common;

use std::sync::Arc;

use callbridge::{Hook, Mode};
use common::*;
use serde_json::json;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

async fn crm_with_contacts() -> MockServer {
    let crm = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/contacts"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"results": [{"id": "c-9"}]})))
        .mount(&crm)
        .await;
    crm
}

async fn token_requests(crm: &MockServer) -> Vec<wiremock::Request> {
    crm.received_requests().await.unwrap().into_iter().filter(|r| r.url.path() == "/oauth/token").collect()
}

#[tokio::test]
async fn token_is_requested_once_and_reused() {
    let crm = crm_with_contacts().await;
    mount_token(&crm, "tok-1", 3600).await;
    let tree = acme_tree(&host_of(&crm));
    let cat = tree.catalog();
    let eng = engine();
    for i in 0..5 {
        let call = json!({"call_id": format!("c{i}"), "phone": "+84901234567"});
        eng.run_hook(&cat, "acme-1", Hook::GetDataIframe, &call, &Mode::Execute).await.unwrap();
    }
    let toks = token_requests(&crm).await;
    assert_eq!(toks.len(), 1);
    let form = String::from_utf8(toks[0].body.clone()).unwrap();
    assert!(
        form.contains("grant_type=client_credentials") && form.contains("client_secret=secret-XYZ-987654"),
        "{form}"
    );
    let data: Vec<_> =
        crm.received_requests().await.unwrap().into_iter().filter(|r| r.url.path() == "/contacts").collect();
    assert_eq!(data.len(), 5);
    assert!(data.iter().all(|r| r.headers.get("authorization").unwrap() == "Bearer tok-1"));
}

#[tokio::test]
async fn a_hundred_concurrent_hooks_make_one_token_request() {
    let crm = crm_with_contacts().await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"access_token": "tok-c", "expires_in": 3600}))
                .set_delay(std::time::Duration::from_millis(200)),
        )
        .mount(&crm)
        .await;
    let tree = acme_tree(&host_of(&crm));
    let cat = Arc::new(tree.catalog());
    let eng = Arc::new(engine());
    let mut tasks = Vec::new();
    for i in 0..100 {
        let (cat, eng) = (cat.clone(), eng.clone());
        tasks.push(tokio::spawn(async move {
            let call = json!({"call_id": format!("c{i}"), "phone": "+1"});
            eng.run_hook(&cat, "acme-1", Hook::GetDataIframe, &call, &Mode::Execute).await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(token_requests(&crm).await.len(), 1);
    assert_eq!(eng.metrics.counter("callbridge_token_requests_total", &[("integrator", "acme-1")]), 1);
}

#[tokio::test]
async fn a_401_refreshes_the_token_once_and_retries_once() {
    let crm = MockServer::start().await;
    // The first token is refused, the second accepted.
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"access_token": "old-token", "expires_in": 3600})),
        )
        .up_to_n_times(1)
        .mount(&crm)
        .await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"access_token": "new-token", "expires_in": 3600})),
        )
        .mount(&crm)
        .await;
    Mock::given(method("GET"))
        .and(path("/contacts"))
        .and(header("authorization", "Bearer old-token"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({"message": "expired"})))
        .mount(&crm)
        .await;
    Mock::given(method("GET"))
        .and(path("/contacts"))
        .and(header("authorization", "Bearer new-token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"results": [{"id": "c-1"}]})))
        .mount(&crm)
        .await;
    let tree = acme_tree(&host_of(&crm));
    let out = engine()
        .run_hook(
            &tree.catalog(),
            "acme-1",
            Hook::GetDataIframe,
            &json!({"call_id": "1", "phone": "+1"}),
            &Mode::Execute,
        )
        .await
        .unwrap();
    assert_eq!(out.results["contact_id"], json!("c-1"));
    assert_eq!(token_requests(&crm).await.len(), 2);
}

#[tokio::test]
async fn a_401_after_refresh_fails_without_looping() {
    let crm = MockServer::start().await;
    mount_token(&crm, "t", 3600).await;
    Mock::given(method("GET")).and(path("/contacts")).respond_with(ResponseTemplate::new(401)).mount(&crm).await;
    let tree = acme_tree(&host_of(&crm));
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
    assert!(err.to_string().contains("401"), "{err}");
    let data = crm.received_requests().await.unwrap().into_iter().filter(|r| r.url.path() == "/contacts").count();
    assert_eq!(data, 2, "one try, one retry after the refresh");
}

const REFRESH_ENDPOINTS: &str = r#"
integration: z
endpoints:
  - name: refresh
    type: Auth
    method: POST
    url: "{{base_url}}/oauth/v2/token"
    bodyFormat: form
    hardParams:
      body: { grant_type: refresh_token, refresh_token: "{{refresh_token}}", client_id: "{{fields.client_id}}" }
  - name: find
    type: GetData
    method: GET
    url: "{{base_url}}/find"
    trigger: getDataIframe
    parameters:
      - { name: Authorization, in: header, token: true, format: "Zoho-oauthtoken {{value}}" }
"#;

#[tokio::test]
async fn refresh_without_a_new_refresh_token_keeps_the_old_one_and_the_cache_persists() {
    let crm = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth/v2/token"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"access_token": "a1", "expires_in": 1, "refresh_token": "r2"})),
        )
        .up_to_n_times(1)
        .mount(&crm)
        .await;
    Mock::given(method("POST"))
        .and(path("/oauth/v2/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"access_token": "a2", "expires_in": 3600})))
        .mount(&crm)
        .await;
    Mock::given(method("GET"))
        .and(path("/find"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
        .mount(&crm)
        .await;
    let tree = Tree::new(
        &[
            (
                "templates/z.yaml",
                "name: z\ntype: CRM\nparameters:\n  - { name: client_id }\n  - { name: refresh_token, secret: true }\n",
            ),
            ("endpoints/z.yaml", REFRESH_ENDPOINTS),
            (
                "integrators/z.yaml",
                "id: z1\nintegration: z\ncallcenterId: c\nhost: \"@HOST@\"\nscheme: http\nfields: { client_id: cid, refresh_token: r1-from-onboarding }\n",
            ),
        ],
        &host_of(&crm),
    );
    let cat = tree.catalog();
    let state = tempfile::tempdir().unwrap();
    let db = state.path().join("state.db");
    let call = json!({"call_id": "1"});
    // Run 1: first token a1 (expires at once: 1 s lifetime), refresh token r2.
    engine_at(&db).run_hook(&cat, "z1", Hook::GetDataIframe, &call, &Mode::Execute).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    // Run 2 (a new engine, as a separate CLI run): a1 is stale, refresh with r2 → a2, no new refresh token.
    engine_at(&db).run_hook(&cat, "z1", Hook::GetDataIframe, &call, &Mode::Execute).await.unwrap();
    // Run 3: a2 is valid and persisted: no token request at all.
    engine_at(&db).run_hook(&cat, "z1", Hook::GetDataIframe, &call, &Mode::Execute).await.unwrap();
    let toks: Vec<String> = crm
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.url.path() == "/oauth/v2/token")
        .map(|r| String::from_utf8(r.body).unwrap())
        .collect();
    assert_eq!(toks.len(), 2, "{toks:?}");
    assert!(toks[0].contains("refresh_token=r1-from-onboarding"), "{}", toks[0]);
    assert!(toks[1].contains("refresh_token=r2"), "{}", toks[1]);
    let stored = callbridge::storage::SqliteStorage::open(&db).unwrap();
    let t = callbridge::storage::Storage::load_token(&stored, "z1").unwrap().unwrap();
    assert_eq!(t.access_token, "a2");
    assert_eq!(t.refresh_token.as_deref(), Some("r2"), "the old refresh token is kept");
    let finds: Vec<_> =
        crm.received_requests().await.unwrap().into_iter().filter(|r| r.url.path() == "/find").collect();
    assert_eq!(finds.last().unwrap().headers.get("authorization").unwrap(), "Zoho-oauthtoken a2");
}
