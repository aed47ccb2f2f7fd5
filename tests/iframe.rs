//! The screen-pop page in a real browser: headless Chromium loads the rendered page from a
//! loopback server and we assert on the DOM it built and on a screenshot of it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Html;
use axum::routing::{get, post};
use axum::{Json, Router};
use callbridge::iframe::render_page;
use callbridge::resolve::CallState;
use common::{ACME_ENDPOINTS, Tree};
use serde_json::{Value, json};

/// The acme integration with a screen-pop section (the shared fixture has none).
const TEMPLATE: &str = r#"
name: acme
label: Acme CRM
type: CRM
info:
  listOptions:
    - { name: auto_create_ticket, label: Auto ticket, default: false }
  dataFunction:
    - { endpoint: find_contact, objectName: contact }
parameters:
  - { name: api_key, in: header, key: X-Api-Key, secret: true }
  - { name: client_id }
  - { name: client_secret, secret: true }
iframe:
  title: Acme CRM
  fields:
    - { label: Name, value: "{{objects.contact.results.0.name}}" }
    - { label: Company, value: "{{objects.contact.results.0.company}}" }
    - { label: Contact id, value: "{{results.contact_id}}" }
    - { label: API key, value: "{{fields.api_key}}" }
    - { label: Last call, value: "{{objects.contact.results.0.last_call}}" }
  links:
    - { label: Open contact, url: "https://crm.acme.example/contacts/{{results.contact_id}}" }
    - { label: Email, url: "mailto:{{objects.contact.results.0.email}}" }
    - { label: Run script, url: "javascript:alert(1)" }
  forms:
    - hook: handleCreateTicket
      title: New ticket
      fields:
        - { name: subject, label: Subject, required: true, value: "Call from {{objects.contact.results.0.name}}" }
        - { name: priority, label: Priority, type: select, options: [low, normal, high], value: normal }
        - { name: email, label: Email, type: email, value: "{{objects.contact.results.0.email}}" }
        - { name: content, label: Details, type: textarea }
"#;

const INTEGRATOR: &str = r#"
id: acme-1
integration: acme
callcenterId: cc-1
host: crm.acme.example
fields:
  api_key: key-SECRET-123456
  client_id: client-abc
  client_secret: secret-XYZ-987654
apiKeys: [ "callbox-key-acme-1" ]
"#;

const EVIL_NAME: &str = "Ann <script>alert(1)</script>";

fn rendered_page() -> String {
    let tree = Tree::new(
        &[
            ("templates/acme.yaml", TEMPLATE),
            ("endpoints/acme.yaml", ACME_ENDPOINTS),
            ("integrators/acme-1.yaml", INTEGRATOR),
        ],
        "unused",
    );
    let catalog = tree.catalog();
    let integrator = catalog.integrator("acme-1").expect("integrator acme-1").clone();
    let mut state = CallState::default();
    state.objects.insert(
        "contact".into(),
        json!({"results": [{
            "id": "c-1", "name": EVIL_NAME, "company": "Acme & Sons",
            "email": "ann@example.com", "last_call": "2026-11-20 09:15"
        }]}),
    );
    state.results.insert("contact_id".into(), json!("c-1"));
    state.results.insert("call_log_id".into(), json!("log-77"));
    render_page(&catalog, &integrator, &state, "call-42")
}

/// What the fake hook route received: the request's headers and JSON body.
type Received = Arc<Mutex<Vec<(HeaderMap, Value)>>>;

/// A same-origin harness page: loads the screen pop in an iframe, fills the details, presses
/// Send, and copies the form's status line into `#status` once the answer is in.
const HARNESS: &str = r#"<!DOCTYPE html>
<html><body>
<iframe id="pop" src="/screen-pop?key=callbox-key-acme-1" width="800" height="600"></iframe>
<pre id="status"></pre>
<script>
document.getElementById("pop").addEventListener("load", function () {
  var doc = this.contentDocument;
  doc.querySelector("textarea[name=content]").value = "Wants a callback";
  doc.querySelector("button[type=submit]").click();
  var poll = setInterval(function () {
    var s = doc.querySelector(".status").textContent;
    if (s && s.indexOf("Sending") !== 0) {
      document.getElementById("status").textContent = s;
      clearInterval(poll);
    }
  }, 20);
});
</script>
</body></html>"#;

/// Serves the screen pop at `/screen-pop`, the harness at `/harness`, and a hook route that
/// records what it receives; returns the base URL and the record.
async fn serve(html: String) -> (String, Received) {
    let received: Received = Arc::default();
    let hook = |State(rec): State<Received>, headers: HeaderMap, Json(body): Json<Value>| async move {
        rec.lock().expect("record lock").push((headers, body));
        Json(json!({"outcome": "accepted"}))
    };
    let app = Router::new()
        .route("/screen-pop", get(move || async move { Html(html) }))
        .route("/harness", get(|| async { Html(HARNESS) }))
        .route("/v1/integrators/{id}/hooks/{hook}", post(hook))
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), received)
}

/// The Chromium binary, or `None` when the test may skip (`CALLBRIDGE_SKIP_BROWSER=1`).
fn chromium() -> Option<PathBuf> {
    let found = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].into_iter().map(PathBuf::from).find(|p| p.is_file());
    if found.is_some() {
        return found;
    }
    if std::env::var("CALLBRIDGE_SKIP_BROWSER").as_deref() == Ok("1") {
        println!("skipped: no Chromium at /usr/bin/chromium and CALLBRIDGE_SKIP_BROWSER=1");
        return None;
    }
    panic!(
        "headless Chromium is required for this test but /usr/bin/chromium was not found; \
         install it with `apt-get install -y chromium` (Debian), or set CALLBRIDGE_SKIP_BROWSER=1 to skip"
    );
}

/// Runs headless Chromium with `extra` arguments against `url`; returns its stdout.
async fn run_chromium(bin: &Path, extra: &[String], url: &str) -> String {
    let profile = tempfile::tempdir().expect("profile dir");
    let mut cmd = tokio::process::Command::new(bin);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .args(extra)
    .arg(url)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(90), cmd.output())
        .await
        .expect("chromium did not finish within 90s")
        .expect("chromium could not be started");
    assert!(out.status.success(), "chromium failed ({}):\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn screen_pop_shows_caller_data_as_text_in_a_browser() {
    let Some(bin) = chromium() else { return };
    let html = rendered_page();
    let (base, _) = serve(html).await;
    let url = format!("{base}/screen-pop?key=callbox-key-acme-1");

    let dom = run_chromium(&bin, &["--dump-dom".to_string()], &url).await;

    // The caller's name is text in its field: escaped in the serialized DOM, never an element.
    assert!(
        dom.contains("<dd>Ann &lt;script&gt;alert(1)&lt;/script&gt;</dd>"),
        "the name should be shown as text:\n{dom}"
    );
    assert!(!dom.contains("<script>alert(1)"), "an injected script element exists:\n{dom}");
    assert!(dom.contains("<dd>Acme &amp; Sons</dd>"), "{dom}");
    assert!(dom.contains("<dd>c-1</dd>"), "{dom}");
    assert!(dom.contains("<title>Acme CRM</title>"), "{dom}");
    // Secrets are not on the page.
    for secret in ["key-SECRET-123456", "secret-XYZ-987654"] {
        assert!(!dom.contains(secret), "secret {secret} rendered:\n{dom}");
    }
    // Links: web and mail links are links; a javascript: one is plain text.
    assert!(dom.contains("href=\"https://crm.acme.example/contacts/c-1\""), "{dom}");
    assert!(dom.contains("href=\"mailto:ann@example.com\""), "{dom}");
    assert!(!dom.contains("javascript:"), "{dom}");
    // The form carries the call id and initial values, and its button was enabled by the page's
    // script — so the CSP lets our own inline script run.
    assert!(dom.contains("data-url=\"/v1/integrators/acme-1/hooks/handleCreateTicket\""), "{dom}");
    assert!(dom.contains("name=\"call_id\" value=\"call-42\""), "{dom}");
    assert!(dom.contains("value=\"Call from Ann &lt;script&gt;alert(1)&lt;/script&gt;\""), "{dom}");
    assert!(dom.contains("<button type=\"submit\">Send</button>"), "the script did not run:\n{dom}");

    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("iframe-screen-pop.png");
    let _ = std::fs::remove_file(&shot);
    let args = [
        format!("--screenshot={}", shot.display()),
        "--window-size=800,600".to_string(),
        "--hide-scrollbars".to_string(),
    ];
    run_chromium(&bin, &args, &url).await;
    let png = std::fs::read(&shot).unwrap_or_else(|e| panic!("no screenshot at {}: {e}", shot.display()));
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG: {}", shot.display());
    // A blank 800x600 page compresses to a few hundred bytes; a rendered one is far larger.
    assert!(png.len() > 10_000, "screenshot is suspiciously small ({} bytes): {}", png.len(), shot.display());
    println!("screenshot: {}", shot.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn screen_pop_form_posts_json_with_the_page_key() {
    let Some(bin) = chromium() else { return };
    let (base, received) = serve(rendered_page()).await;

    // Virtual time lets the page's fetch and the harness's polling finish before the dump.
    let args = ["--dump-dom".to_string(), "--virtual-time-budget=10000".to_string()];
    let dom = run_chromium(&bin, &args, &format!("{base}/harness")).await;

    let received = received.lock().expect("record lock").clone();
    assert_eq!(received.len(), 1, "the hook should be posted once; harness DOM:\n{dom}");
    let (headers, body) = &received[0];
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert_eq!(header("content-type"), "application/json");
    assert_eq!(header("authorization"), "Bearer callbox-key-acme-1");
    assert_eq!(
        body,
        &json!({
            "call_id": "call-42",
            "form": {
                "subject": format!("Call from {EVIL_NAME}"),
                "priority": "normal",
                "email": "ann@example.com",
                "content": "Wants a callback"
            }
        })
    );
    assert!(
        dom.contains("<pre id=\"status\">Sent: accepted</pre>"),
        "the form should show the answer's outcome:\n{dom}"
    );
}
