//! Bodies are structures: a leaf that is exactly one `{{value}}` keeps its JSON type, and a
//! caller's text (quotes, newlines, `{{`) cannot alter the body's structure.

mod common;

use callbridge::{Hook, Mode};
use common::*;
use serde_json::{Value, json};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

const TEMPLATE: &str = "name: b\ntype: CRM\n";
const ENDPOINTS: &str = r#"
integration: b
endpoints:
  - name: log
    type: PostData
    method: POST
    url: "{{base_url}}/log"
    trigger: saveLogCRM
    hardParams:
      body:
        duration: "{{call.duration}}"
        answered: "{{call.answered}}"
        agent: "{{call.agent}}"
        missing_ok: "{{call.nothing_here_is_null}}"
        text: "Notes: {{call.notes}}"
        notes: "{{call.notes}}"
        fixed: [1, true, null, "x"]
"#;
const INTEGRATOR: &str = "id: b1\nintegration: b\ncallcenterId: c\nhost: \"@HOST@\"\nscheme: http\n";

async fn run(call: Value) -> Value {
    let crm = MockServer::start().await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(200).set_body_json(json!({}))).mount(&crm).await;
    let tree = Tree::new(
        &[("templates/b.yaml", TEMPLATE), ("endpoints/b.yaml", ENDPOINTS), ("integrators/b.yaml", INTEGRATOR)],
        &host_of(&crm),
    );
    engine().run_hook(&tree.catalog(), "b1", Hook::SaveLogCrm, &call, &Mode::Execute).await.unwrap();
    let reqs = crm.received_requests().await.unwrap();
    serde_json::from_slice(&reqs[0].body).expect("the body stays valid JSON")
}

#[tokio::test]
async fn single_expression_leaves_keep_their_json_type() {
    let body = run(json!({"call_id": "1", "duration": 125, "answered": true, "agent": {"id": 7},
                          "nothing_here_is_null": null, "notes": "ok"}))
    .await;
    assert_eq!(body["duration"], json!(125));
    assert_eq!(body["answered"], json!(true));
    assert_eq!(body["agent"], json!({"id": 7}));
    assert_eq!(body["missing_ok"], Value::Null);
    assert_eq!(body["text"], json!("Notes: ok"));
    assert_eq!(body["fixed"], json!([1, true, null, "x"]));
}

#[tokio::test]
async fn quotes_newlines_and_braces_in_caller_values_cannot_alter_the_body() {
    let evil = "\"}, \"admin\": true, \"x\": {\"a\": \"\n\r\t{{call.agent}} {{#each this}}x{{/each}} \\\" </script>";
    let body = run(json!({"call_id": "1", "duration": 1, "answered": false, "agent": "A",
                          "nothing_here_is_null": null, "notes": evil}))
    .await;
    assert_eq!(body["notes"], json!(evil), "the value arrives byte for byte");
    assert_eq!(body["text"], json!(format!("Notes: {evil}")));
    let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["duration", "answered", "agent", "missing_ok", "text", "notes", "fixed"]);
    assert!(body.get("admin").is_none());
}
