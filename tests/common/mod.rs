//! Shared test fixtures: a configuration tree in a temp folder, an in-process fake CRM
//! (wiremock on a loopback port), and an engine over in-memory SQLite.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use callbridge::http::RetryPolicy;
use callbridge::storage::{SqliteStorage, Storage};
use callbridge::{Catalog, Engine};
use tempfile::TempDir;
use wiremock::MockServer;

/// A configuration tree in a temporary folder.
pub struct Tree {
    pub dir: TempDir,
}

impl Tree {
    /// Writes `files` (relative path → content); `@HOST@` is replaced by `host`.
    pub fn new(files: &[(&str, &str)], host: &str) -> Tree {
        let dir = tempfile::tempdir().expect("tempdir");
        for (rel, text) in files {
            let p = dir.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, text.replace("@HOST@", host)).unwrap();
        }
        Tree { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Loads the catalog, failing the test with every diagnostic when invalid.
    pub fn catalog(&self) -> Catalog {
        match Catalog::load(self.path()) {
            Ok(c) => c,
            Err(d) => panic!("configuration invalid:\n{d}"),
        }
    }
}

/// The loopback `host:port` of a mock server.
pub fn host_of(server: &MockServer) -> String {
    server.uri().trim_start_matches("http://").to_string()
}

/// Fast retries for tests.
pub fn quick_retries() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 4,
        min_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(200),
        max_elapsed: Duration::from_secs(5),
    }
}

/// An engine over in-memory storage.
pub fn engine() -> Engine {
    Engine::new(Arc::new(SqliteStorage::in_memory().unwrap()), quick_retries())
}

/// An engine over a SQLite file (to share state between "runs").
pub fn engine_at(path: &Path) -> Engine {
    let store: Arc<dyn Storage> = Arc::new(SqliteStorage::open(path).unwrap());
    Engine::new(store, quick_retries())
}

/// The repository root (the shipped configuration).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A small CRM integration used across tests: OAuth client credentials, contact search,
/// call log create/update, with a secret API key header.
pub const ACME_TEMPLATE: &str = r#"
name: acme
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
"#;

pub const ACME_ENDPOINTS: &str = r#"
integration: acme
endpoints:
  - name: get_token
    type: Auth
    method: POST
    url: "{{base_url}}/oauth/token"
    bodyFormat: form
    hardParams:
      body: { grant_type: client_credentials, client_id: "{{fields.client_id}}", client_secret: "{{fields.client_secret}}" }
  - name: find_contact
    type: GetData
    method: GET
    url: "{{base_url}}/contacts"
    trigger: getDataIframe
    parameters:
      - { name: Authorization, in: header, token: true, format: "Bearer {{value}}" }
      - { name: phone, in: query, call: phone }
    extract: { contact_id: "$.results[0].id" }
    example: { results: [ { id: "c-1", name: "Ann" } ] }
  - name: create_call
    type: PostData
    method: POST
    url: "{{base_url}}/calls"
    trigger: savePreLogCRM
    when: "not results.call_log_id"
    hardParams:
      body: { phone: "{{call.phone}}", direction: "{{call.direction}}" }
    parameters:
      - { name: Authorization, in: header, token: true, format: "Bearer {{value}}" }
    extract: { call_log_id: "$.id" }
  - name: update_call
    type: PostData
    method: PATCH
    url: "{{base_url}}/calls/{id}"
    trigger: saveLogCRM
    when: "results.call_log_id"
    hardParams:
      body: { duration: "{{call.duration}}", notes: "{{call.notes}}" }
    parameters:
      - { name: Authorization, in: header, token: true, format: "Bearer {{value}}" }
      - { name: id, in: path, result: call_log_id }
  - name: create_call_at_end
    type: PostData
    method: POST
    url: "{{base_url}}/calls"
    trigger: saveLogCRM
    when: "not results.call_log_id"
    hardParams:
      body: { phone: "{{call.phone}}", duration: "{{call.duration}}", notes: "{{call.notes}}" }
    parameters:
      - { name: Authorization, in: header, token: true, format: "Bearer {{value}}" }
    extract: { call_log_id: "$.id" }
"#;

pub const ACME_INTEGRATOR: &str = r#"
id: acme-1
integration: acme
callcenterId: cc-1
host: "@HOST@"
scheme: http
fields:
  api_key: key-SECRET-123456
  client_id: client-abc
  client_secret: secret-XYZ-987654
apiKeys: [ "callbox-key-acme-1" ]
"#;

/// The acme tree pointed at `host`.
pub fn acme_tree(host: &str) -> Tree {
    Tree::new(
        &[
            ("templates/acme.yaml", ACME_TEMPLATE),
            ("endpoints/acme.yaml", ACME_ENDPOINTS),
            ("integrators/acme-1.yaml", ACME_INTEGRATOR),
        ],
        host,
    )
}

/// Mounts a token endpoint answering `token` with `expires_in`.
pub async fn mount_token(server: &MockServer, token: &str, expires_in: u64) {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, ResponseTemplate};
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "access_token": token, "expires_in": expires_in, "token_type": "Bearer"
        })))
        .mount(server)
        .await;
}
