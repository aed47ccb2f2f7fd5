//! Bad requests get a 4xx JSON error `{"error": {"kind", "message"}}` naming the problem —
//! never a 500, never a dropped connection — and the server keeps serving.

mod common;
#[path = "common/server.rs"]
mod server;

use std::time::Duration;

use common::host_of;
use serde_json::{Value, json};
use server::*;

struct Case {
    what: &'static str,
    path: &'static str,
    key: Option<&'static str>,
    body: Vec<u8>,
    status: u16,
    kind: &'static str,
    /// The message names the problem.
    mentions: &'static str,
}

fn case(
    what: &'static str,
    path: &'static str,
    key: Option<&'static str>,
    body: &str,
    status: u16,
    kind: &'static str,
    mentions: &'static str,
) -> Case {
    Case { what, path, key, body: body.as_bytes().to_vec(), status, kind, mentions }
}

const PRE: &str = "/v1/integrators/desk-a/hooks/savePreLogCRM";

#[tokio::test]
async fn each_bad_request_gets_a_4xx_json_error_naming_the_problem() {
    let crm = desk_crm().await;
    let tree = desk_tree(&host_of(&crm));
    let s = Server::start(tree.path(), &["--body-limit", "2048"]).await;
    let k = Some("key-a-1");
    let big = format!(r#"{{"call_id": "c", "notes": "{}"}}"#, "x".repeat(4096));
    let cases = [
        case("malformed JSON", PRE, k, r#"{"call_id": "c","#, 400, "malformed_json", "line 1"),
        case("empty body", PRE, k, "", 400, "malformed_json", "empty"),
        case("JSON that is not an object", PRE, k, r#"["c"]"#, 422, "bad_call", "JSON object"),
        case("a string as the body", PRE, k, r#""call""#, 422, "bad_call", "JSON object"),
        case(
            "unknown integrator",
            "/v1/integrators/nobody/hooks/savePreLogCRM",
            k,
            r#"{"call_id": "c"}"#,
            404,
            "unknown_integrator",
            "nobody",
        ),
        case(
            "unknown hook",
            "/v1/integrators/desk-a/hooks/saveLog",
            k,
            r#"{"call_id": "c"}"#,
            404,
            "unknown_hook",
            "saveLogCRM",
        ),
        case("missing call_id", PRE, k, r#"{"phone": "+1"}"#, 422, "bad_call", "call_id"),
        case("call_id of the wrong type", PRE, k, r#"{"call_id": {"id": 1}}"#, 422, "bad_call", "call_id"),
        case(
            "duration of the wrong type",
            PRE,
            k,
            r#"{"call_id": "c", "duration": "long"}"#,
            422,
            "bad_call",
            "duration",
        ),
        case("phone of the wrong type", PRE, k, r#"{"call_id": "c", "phone": 84901234567}"#, 422, "bad_call", "phone"),
        case("body too large", PRE, k, &big, 413, "too_large", "2048"),
        case("missing key", PRE, None, r#"{"call_id": "c"}"#, 401, "missing_key", "Bearer"),
        case("wrong key", PRE, Some("key-b-1"), r#"{"call_id": "c"}"#, 403, "forbidden", "desk-a"),
    ];
    for c in cases {
        let mut rb = client().post(s.url(c.path)).body(c.body.clone());
        if let Some(key) = c.key {
            rb = rb.bearer_auth(key);
        }
        let resp = rb.send().await.unwrap_or_else(|e| panic!("{}: {e}", c.what));
        let status = resp.status().as_u16();
        let ctype = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        assert_eq!(status, c.status, "{}: {body}", c.what);
        assert!(ctype.starts_with("application/json"), "{}: {ctype}", c.what);
        assert_eq!(body["error"]["kind"], c.kind, "{}: {body}", c.what);
        let msg = body["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(c.mentions), "{}: '{msg}' should mention '{}'", c.what, c.mentions);
    }
    assert!(crm.received_requests().await.unwrap().is_empty(), "no bad request reached the CRM");
    let (status, _, _) = get(&s, "/readyz", None).await;
    assert_eq!(status, 200, "still serving");
    assert!(!s.logs().contains("panicked"), "no panic");
}

#[tokio::test]
async fn unknown_routes_wrong_methods_and_bad_parameters_are_json_errors() {
    let crm = desk_crm().await;
    let tree = desk_tree(&host_of(&crm));
    let s = Server::start(tree.path(), &[]).await;
    let check = |status: u16, want: u16, kind: &str, body: &str| {
        assert_eq!(status, want, "{body}");
        let v: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body}"));
        assert_eq!(v["error"]["kind"], kind, "{body}");
    };
    let (st, _, body) = get(&s, "/v2/whatever", None).await;
    check(st, 404, "not_found", &body);
    let (st, _, body) = get(&s, "/v1/integrators/desk-a/hooks/saveLogCRM", Some("key-a-1")).await;
    check(st, 405, "method_not_allowed", &body);
    let (st, _, body) = get(&s, "/v1/integrators/desk-a/iframe", Some("key-a-1")).await;
    check(st, 422, "bad_parameter", &body);
    let (st, _, body) = get(&s, "/v1/deliveries/no-such-id", Some("key-a-1")).await;
    check(st, 404, "unknown_delivery", &body);
    let (st, _, body) = get(&s, "/v1/deliveries/no-such-id", None).await;
    check(st, 401, "missing_key", &body);
    let resp = client()
        .post(s.url(PRE))
        .bearer_auth("key-a-1")
        .header("idempotency-key", "x".repeat(300))
        .body(r#"{"call_id": "c"}"#)
        .send()
        .await
        .unwrap();
    let st = resp.status().as_u16();
    check(st, 422, "bad_parameter", &resp.text().await.unwrap());
}

#[tokio::test]
async fn too_many_concurrent_requests_for_one_integrator_get_429_with_retry_after() {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let crm = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/contacts"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"results": []})).set_delay(Duration::from_millis(700)),
        )
        .mount(&crm)
        .await;
    let tree = desk_tree(&host_of(&crm));
    let s = Server::start(tree.path(), &["--max-concurrent", "1"]).await;
    let call = json!({"call_id": "c", "phone": "+1"});
    let first = post_hook(&s, "desk-a", "getDataIframe", "key-a-1", &call, &[]);
    let second = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let a = post_hook(&s, "desk-a", "getDataIframe", "key-a-1", &call, &[]).await;
        let b = post_hook(&s, "desk-b", "getDataIframe", "key-b-1", &call, &[]).await;
        (a, b)
    };
    let ((s1, _, b1), ((s2, h2, b2), (s3, _, b3))) = tokio::join!(first, second);
    assert_eq!(s1, 200, "{b1}");
    assert_eq!(s2, 429, "{b2}");
    assert_eq!(b2["error"]["kind"], "busy");
    assert_eq!(h2["retry-after"], "1");
    assert_eq!(s3, 200, "another integrator is not limited by desk-a's load: {b3}");
}
