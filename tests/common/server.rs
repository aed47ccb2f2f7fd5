//! The real `callbridge serve` binary for tests: started on a free port (it binds port 0 and
//! prints the address) with a temp state file, ready once `/readyz` answers; plus a fixture
//! integration (`desk`) with every hook, and two integrators with their own keys and origins.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_callbridge");

/// A running server.
pub struct Server {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    pub config: PathBuf,
    pub state: PathBuf,
    pub log: PathBuf,
    /// Holds the state and log files (unless the caller gave a state path).
    _dir: tempfile::TempDir,
}

impl Server {
    /// Starts `callbridge serve` on `config` with a fresh state file; `extra` are serve flags.
    pub async fn start(config: &Path, extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state.db");
        Self::start_at(config, &state, extra, dir).await
    }

    /// Starts on an existing state file (a restart).
    pub async fn start_at(config: &Path, state: &Path, extra: &[&str], dir: tempfile::TempDir) -> Server {
        let (config, state, extra) =
            (config.to_path_buf(), state.to_path_buf(), extra.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        tokio::task::spawn_blocking(move || Self::start_blocking(&config, &state, &extra, dir))
            .await
            .expect("start task")
    }

    fn start_blocking(config: &Path, state: &Path, extra: &[String], dir: tempfile::TempDir) -> Server {
        let log = dir.path().join(format!("serve-{}.log", uuid_ish()));
        let log_file = std::fs::File::create(&log).expect("log file");
        let mut child = Command::new(BIN)
            .args([
                "--config",
                path_str(config),
                "--state",
                path_str(state),
                "--log-format",
                "json",
                "serve",
                "--listen",
                "127.0.0.1:0",
            ])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .spawn()
            .expect("start callbridge serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("listening on ") {
                    let _ = tx.send(addr.to_string());
                }
            }
        });
        let base = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(b) => b,
            Err(_) => {
                let _ = child.kill();
                panic!("server did not start; log:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
            }
        };
        let server = Server {
            child: Some(child),
            base,
            config: config.to_path_buf(),
            state: state.to_path_buf(),
            log,
            _dir: dir,
        };
        server.wait_ready(Duration::from_secs(20));
        server
    }

    fn wait_ready(&self, within: Duration) {
        let hostport = self.base.trim_start_matches("http://").to_string();
        let t0 = Instant::now();
        while t0.elapsed() < within {
            if raw_get(&hostport, "/readyz").is_some_and(|r| r.starts_with("HTTP/1.1 200")) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("server not ready; log:\n{}", self.logs());
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Everything the server logged so far (JSON lines).
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).expect("running")
    }

    /// Sends a signal (SIGTERM, SIGHUP…).
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) with a pid we started and a valid signal number.
        let rc = unsafe { libc::kill(self.pid() as i32, sig) };
        assert_eq!(rc, 0, "kill({sig})");
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits up to `within` for the process to exit by itself.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let t0 = Instant::now();
        while t0.elapsed() < within {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(st)) = c.try_wait()
            {
                self.child = None;
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Hands back the temp folder (to restart on the same state).
    pub fn into_dir(mut self) -> tempfile::TempDir {
        self.kill();
        std::mem::replace(&mut self._dir, tempfile::tempdir().expect("tempdir"))
    }

    /// Runs another `callbridge` command against this server's config and state.
    pub fn cli(&self, args: &[&str]) -> Output {
        cli(&self.config, &self.state, args)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `callbridge --config C --state S ARGS…`.
pub fn cli(config: &Path, state: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(["--config", path_str(config), "--state", path_str(state)])
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run callbridge")
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn uuid_ish() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}

/// A minimal HTTP/1.1 GET without a client library (for readiness from a blocking thread).
fn raw_get(hostport: &str, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(hostport).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// An HTTP client for tests.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client")
}

/// POSTs a hook with a key; returns (status, headers, JSON body).
pub async fn post_hook(
    s: &Server,
    integrator: &str,
    hook: &str,
    key: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut rb =
        client().post(s.url(&format!("/v1/integrators/{integrator}/hooks/{hook}"))).bearer_auth(key).json(body);
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    let resp = rb.send().await.expect("send hook");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.json::<Value>().await.unwrap_or(Value::Null);
    (status, headers, body)
}

/// GETs a path with an optional key; returns (status, headers, body text).
pub async fn get(s: &Server, path: &str, key: Option<&str>) -> (u16, reqwest::header::HeaderMap, String) {
    let mut rb = client().get(s.url(path));
    if let Some(k) = key {
        rb = rb.bearer_auth(k);
    }
    let resp = rb.send().await.expect("send get");
    (resp.status().as_u16(), resp.headers().clone(), resp.text().await.unwrap_or_default())
}

/// Polls a delivery until it is no longer pending (or `within` passes); returns its JSON.
pub async fn wait_delivery(s: &Server, id: &str, key: &str, within: Duration) -> Value {
    let t0 = Instant::now();
    loop {
        let (status, _, body) = get(s, &format!("/v1/deliveries/{id}"), Some(key)).await;
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).expect("delivery JSON");
        if v["status"] != "pending" || t0.elapsed() > within {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Polls `/readyz` until no delivery is pending.
pub async fn wait_no_pending(s: &Server, within: Duration) {
    let t0 = Instant::now();
    loop {
        let (_, _, body) = get(s, "/readyz", None).await;
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        if v["pending"] == 0 {
            return;
        }
        assert!(t0.elapsed() < within, "deliveries still pending after {within:?}: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `cond` every 25 ms until true; false when `within` passed.
pub async fn eventually<F, Fut>(within: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t0 = Instant::now();
    loop {
        if cond().await {
            return true;
        }
        if t0.elapsed() > within {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A CRM with every hook: contact search, call log create/update, SMS note, ticket, contact.
/// Its `api_key` is a secret header on every request.
pub const DESK_TEMPLATE: &str = r#"
name: desk
label: Desk CRM
type: CRM
info:
  renderTooltip:
    - { path: "/contacts/*", element: ".phone" }
  listOptions:
    - { name: auto_create_ticket, label: Auto ticket, default: false }
  dataFunction:
    - { endpoint: find_contact, objectName: contact }
iframe:
  title: Desk
  fields:
    - { label: Name, value: "{{objects.contact.results.0.name}}" }
  forms:
    - hook: handleCreateTicket
      title: New ticket
      fields:
        - { name: subject, label: Subject, required: true }
parameters:
  - { name: api_key, in: header, key: X-Api-Key, secret: true }
  - { name: portal, required: false }
"#;

pub const DESK_ENDPOINTS: &str = r#"
integration: desk
endpoints:
  - name: find_contact
    type: GetData
    method: GET
    url: "{{base_url}}/contacts"
    trigger: getDataIframe
    parameters:
      - { name: phone, in: query, call: phone }
    extract: { contact_id: "$.results[0].id" }
  - name: create_call
    type: PostData
    method: POST
    url: "{{base_url}}/calls"
    trigger: savePreLogCRM
    when: "not results.call_log_id"
    hardParams:
      body: { call_id: "{{call.call_id}}", phone: "{{call.phone}}" }
    extract: { call_log_id: "$.id" }
  - name: update_call
    type: PostData
    method: PATCH
    url: "{{base_url}}/calls/{id}"
    trigger: saveLogCRM
    when: "results.call_log_id"
    hardParams:
      body: { call_id: "{{call.call_id}}", duration: "{{call.duration}}" }
    parameters:
      - { name: id, in: path, result: call_log_id }
  - name: create_call_at_end
    type: PostData
    method: POST
    url: "{{base_url}}/calls"
    trigger: saveLogCRM
    when: "not results.call_log_id"
    hardParams:
      body: { call_id: "{{call.call_id}}", phone: "{{call.phone}}", duration: "{{call.duration}}" }
    extract: { call_log_id: "$.id" }
  - name: sms_note
    type: PostData
    method: POST
    url: "{{base_url}}/notes"
    trigger: createSMSNote
    hardParams:
      body: { call_id: "{{call.call_id}}", text: "{{call.sms.text}}" }
    extract: { note_id: "$.id" }
  - name: create_ticket
    type: PostData
    method: POST
    url: "{{base_url}}/tickets"
    trigger: handleCreateTicket
    hardParams:
      body: { call_id: "{{call.call_id}}", subject: "{{call.form.subject}}" }
    extract: { ticket_id: "$.id" }
  - name: create_contact
    type: PostData
    method: POST
    url: "{{base_url}}/contacts"
    trigger: handleCreateContact
    hardParams:
      body: { name: "{{call.form.name}}", phone: "{{call.phone}}" }
    extract: { new_contact_id: "$.id" }
"#;

/// Tenant A: two keys, one allowed origin.
pub const DESK_A: &str = r#"
id: desk-a
integration: desk
callcenterId: cc-a
host: "@HOST@"
scheme: http
fields:
  api_key: desk-SECRET-aaaa-1111
  portal: portal-a
apiKeys: [ "key-a-1", "key-a-2" ]
allowedOrigins: [ "https://callbox.a.example" ]
"#;

/// Tenant B: its own key, secret and origin.
pub const DESK_B: &str = r#"
id: desk-b
integration: desk
callcenterId: cc-b
host: "@HOST@"
scheme: http
fields:
  api_key: desk-SECRET-bbbb-2222
  portal: portal-b
apiKeys: [ "key-b-1" ]
allowedOrigins: [ "https://callbox.b.example" ]
"#;

/// The desk tree (tenants A and B) pointed at `host`.
pub fn desk_tree(host: &str) -> crate::common::Tree {
    crate::common::Tree::new(
        &[
            ("templates/desk.yaml", DESK_TEMPLATE),
            ("endpoints/desk.yaml", DESK_ENDPOINTS),
            ("integrators/desk-a.yaml", DESK_A),
            ("integrators/desk-b.yaml", DESK_B),
        ],
        host,
    )
}

/// A fake CRM answering every desk endpoint.
pub async fn desk_crm() -> wiremock::MockServer {
    use serde_json::json;
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let crm = MockServer::start().await;
    let ok = |status: u16, body: Value| ResponseTemplate::new(status).set_body_json(body);
    Mock::given(method("GET"))
        .and(path("/contacts"))
        .respond_with(ok(200, json!({"results": [{"id": "c-1", "name": "Ann"}]})))
        .mount(&crm)
        .await;
    Mock::given(method("POST")).and(path("/calls")).respond_with(ok(201, json!({"id": "log-1"}))).mount(&crm).await;
    Mock::given(method("PATCH"))
        .and(path("/calls/log-1"))
        .respond_with(ok(200, json!({"id": "log-1"})))
        .mount(&crm)
        .await;
    Mock::given(method("POST")).and(path("/notes")).respond_with(ok(201, json!({"id": "n-1"}))).mount(&crm).await;
    Mock::given(method("POST")).and(path("/tickets")).respond_with(ok(201, json!({"id": "t-1"}))).mount(&crm).await;
    Mock::given(method("POST")).and(path("/contacts")).respond_with(ok(201, json!({"id": "c-9"}))).mount(&crm).await;
    crm
}

/// The requests the CRM received as (method, path, JSON body).
pub async fn crm_requests(crm: &wiremock::MockServer) -> Vec<(String, String, Value)> {
    crm.received_requests()
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|r| {
            (r.method.to_string(), r.url.path().to_string(), serde_json::from_slice(&r.body).unwrap_or(Value::Null))
        })
        .collect()
}

/// How many call logs the CRM created for `call_id`.
pub async fn creates_for(crm: &wiremock::MockServer, call_id: &str) -> usize {
    crm_requests(crm).await.iter().filter(|(m, p, b)| m == "POST" && p == "/calls" && b["call_id"] == call_id).count()
}
