//! Each placement kind — header, query, path, body, md5 — and how values are encoded.

mod common;

use callbridge::{Hook, Mode};
use common::*;
use serde_json::json;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

const TEMPLATE: &str = r#"
name: place
type: CRM
parameters:
  - { name: api_key, in: header, key: X-Api-Key, secret: true }
  - { name: tenant, in: query, key: tenant }
  - { name: secret, in: md5, key: X-Signature, format: "{{value}}{{call.ts}}", secret: true }
  - { name: account }
"#;

const ENDPOINTS: &str = r#"
integration: place
endpoints:
  - name: post_note
    type: PostData
    method: POST
    url: "{{base_url}}/accounts/{account}/notes/{note}"
    trigger: createSMSNote
    hardParams:
      header: { X-Fixed: fixed-value }
      query: { source: "call center & co" }
      body: { kind: sms }
    parameters:
      - { name: account, in: path, field: account }
      - { name: note, in: path, call: note_id }
      - { name: q, in: query, call: sms.text }
      - { name: content.text, in: body, call: sms.text }
      - { name: X-Agent, in: header, call: agent.name }
"#;

const INTEGRATOR: &str = r#"
id: place-1
integration: place
callcenterId: cc
host: "@HOST@"
scheme: http
fields: { api_key: the-api-key-1234, tenant: "t 1", secret: shh-secret-99, account: "acc/../../admin" }
"#;

async fn setup() -> (MockServer, Tree) {
    let crm = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"id": "n1"})))
        .mount(&crm)
        .await;
    let tree = Tree::new(
        &[("templates/p.yaml", TEMPLATE), ("endpoints/p.yaml", ENDPOINTS), ("integrators/p.yaml", INTEGRATOR)],
        &host_of(&crm),
    );
    (crm, tree)
}

#[tokio::test]
async fn every_placement_reaches_the_request() {
    let (crm, tree) = setup().await;
    let cat = tree.catalog();
    let call = json!({"call_id": "c1", "ts": "1700000000", "note_id": "n 7",
                      "sms": {"text": "hi & bye=1?"}, "agent": {"name": "Lan"}});
    engine().run_hook(&cat, "place-1", Hook::CreateSmsNote, &call, &Mode::Execute).await.unwrap();
    let reqs = crm.received_requests().await.unwrap();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    // Path values are encoded per segment: '/' and '..' inside a value cannot climb the path.
    assert_eq!(r.url.path(), "/accounts/acc%2F..%2F..%2Fadmin/notes/n%207");
    // Query values are form-encoded; '&' and '=' inside a value stay inside it.
    let q: Vec<(String, String)> = r.url.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    assert!(q.contains(&("tenant".into(), "t 1".into())), "{q:?}");
    assert!(q.contains(&("source".into(), "call center & co".into())), "{q:?}");
    assert!(q.contains(&("q".into(), "hi & bye=1?".into())), "{q:?}");
    assert_eq!(q.len(), 3, "{q:?}");
    // Headers: template parameter, hard param, call value.
    assert_eq!(r.headers.get("x-api-key").unwrap(), "the-api-key-1234");
    assert_eq!(r.headers.get("x-fixed").unwrap(), "fixed-value");
    assert_eq!(r.headers.get("x-agent").unwrap(), "Lan");
    assert_eq!(r.headers.get("content-type").unwrap(), "application/json");
    // md5: the formatted value is hashed, then placed in the named header.
    let want = format!("{:x}", md5::compute("shh-secret-991700000000"));
    assert_eq!(r.headers.get("x-signature").unwrap().to_str().unwrap(), want);
    // Body: hard structure plus a nested parameter.
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body, json!({"kind": "sms", "content": {"text": "hi & bye=1?"}}));
}

#[tokio::test]
async fn a_dot_dot_path_value_is_refused() {
    let (crm, tree) = setup().await;
    let cat = tree.catalog();
    let call = json!({"call_id": "c1", "ts": "1", "note_id": "..", "sms": {"text": "x"}, "agent": {"name": "L"}});
    let err = engine().run_hook(&cat, "place-1", Hook::CreateSmsNote, &call, &Mode::Execute).await.unwrap_err();
    assert!(err.to_string().contains("'..'"), "{err}");
    assert_eq!(err.exit_code(), callbridge::error::exit::INVALID);
    assert!(crm.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_missing_call_value_names_the_parameter_and_endpoint() {
    let (_crm, tree) = setup().await;
    let cat = tree.catalog();
    let call = json!({"call_id": "c1", "ts": "1", "note_id": "n", "agent": {"name": "L"}});
    let err = engine().run_hook(&cat, "place-1", Hook::CreateSmsNote, &call, &Mode::Execute).await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("post_note") && msg.contains("'q'") && msg.contains("sms.text"), "{msg}");
}

#[tokio::test]
async fn a_newline_in_a_header_value_is_an_error_not_an_injection() {
    let (crm, tree) = setup().await;
    let cat = tree.catalog();
    let call =
        json!({"call_id": "c1", "ts": "1", "note_id": "n", "sms": {"text": "x"}, "agent": {"name": "L\r\nX-Evil: 1"}});
    let err = engine().run_hook(&cat, "place-1", Hook::CreateSmsNote, &call, &Mode::Execute).await.unwrap_err();
    assert!(err.to_string().contains("X-Agent"), "{err}");
    assert!(crm.received_requests().await.unwrap().is_empty());
}
