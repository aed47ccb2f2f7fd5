//! The catalog: the validated, cross-referenced and compiled configuration. Built from a
//! loaded tree; every reference, template and JSONPath is checked here, all errors at once.

mod check;
mod endpoints;
mod integrator;

use check::check_integration;
use endpoints::build_endpoints;
pub use endpoints::url_placeholders;
use integrator::build_integrator;
pub use integrator::{merge_iframe, merge_info};

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::diagnostics::{Diagnostic, Diagnostics, Pos, did_you_mean, one_of};
use crate::jsonpath::JsonPath;
use crate::loader::{Loaded, Tree, load_tree};
use crate::model::*;
use crate::templating::{Body, Escape, TemplateSet, Tpl};

/// Default per-request timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_TOKEN_TTL: u64 = 3600;

/// Everything the engine runs, validated.
pub struct Catalog {
    pub root: PathBuf,
    pub templates: TemplateSet,
    pub integrations: BTreeMap<String, Integration>,
    pub integrators: BTreeMap<String, Arc<Integrator>>,
}

/// One integration: the template and its endpoints, compiled.
pub struct Integration {
    pub name: String,
    pub label: String,
    pub kind: IntegrationType,
    pub description: Option<String>,
    pub file: PathBuf,
    pub info: Info,
    pub iframe: Option<Iframe>,
    pub params: Vec<Param>,
    pub endpoints: Vec<Endpoint>,
    /// Index of the Auth endpoint, if any.
    pub auth: Option<usize>,
    pub token_ttl: u64,
    /// Every name some endpoint extracts (pre-set to null in `results`).
    pub result_names: BTreeSet<String>,
}

impl Integration {
    /// The endpoints a hook runs, in declared order.
    pub fn steps(&self, hook: Hook) -> impl Iterator<Item = &Endpoint> {
        self.endpoints.iter().filter(move |e| e.trigger == Some(hook))
    }
    pub fn hooks(&self) -> BTreeSet<Hook> {
        self.endpoints.iter().filter_map(|e| e.trigger).collect()
    }
    pub fn auth_endpoint(&self) -> Option<&Endpoint> {
        self.auth.map(|i| &self.endpoints[i])
    }
    pub fn param(&self, name: &str) -> Option<&Param> {
        self.params.iter().find(|p| p.name == name)
    }
}

/// A template parameter (an integrator field).
pub struct Param {
    pub name: String,
    pub placement: Option<Placement>,
    pub key: String,
    pub format: Option<Tpl>,
    pub required: bool,
    pub secret: bool,
    pub default: Option<Value>,
    pub description: Option<String>,
    pub pos: Pos,
}

/// Where a parameter's value comes from.
#[derive(Debug, Clone)]
pub enum SourceKind {
    Field(String),
    Token,
    Call(Vec<String>),
    Result(String),
    Value(Tpl),
}

/// One value to place in a request.
#[derive(Debug, Clone)]
pub struct Source {
    /// Header name, query key, path placeholder, or body path (dotted).
    pub key: String,
    pub kind: SourceKind,
    pub format: Option<Tpl>,
    pub default: Option<Value>,
    pub optional: bool,
    /// Whether the value is (or derives from) a secret: shown redacted.
    pub secret: bool,
    /// Where it is declared.
    pub pos: Pos,
}

/// What an Auth endpoint's response holds.
pub struct AuthResponse {
    pub token: JsonPath,
    pub expires_in: JsonPath,
    pub refresh_token: JsonPath,
}

pub struct SuccessRule {
    pub status: Vec<u16>,
    pub jsonpath: Option<JsonPath>,
    pub equals: Option<Value>,
    pub message: Option<JsonPath>,
}

impl SuccessRule {
    /// Whether a response with `status` and `body` counts as success.
    pub fn accepts(&self, status: u16, body: &Value) -> bool {
        let status_ok =
            if self.status.is_empty() { (200..300).contains(&status) } else { self.status.contains(&status) };
        let body_ok = match (&self.jsonpath, &self.equals) {
            (None, _) => true,
            (Some(p), None) => p.matches(body),
            (Some(p), Some(want)) => p.first(body) == Some(want),
        };
        status_ok && body_ok
    }
}

/// One HTTP call, compiled.
pub struct Endpoint {
    pub name: String,
    /// Where the endpoint, its url and its condition are declared.
    pub pos: Pos,
    pub url_pos: Pos,
    pub when_pos: Pos,
    pub label: String,
    pub kind: EndpointType,
    pub method: Method,
    pub url: Tpl,
    pub trigger: Option<Hook>,
    pub auth_response: Option<AuthResponse>,
    pub headers: Vec<Source>,
    pub query: Vec<Source>,
    pub path: Vec<Source>,
    pub md5: Vec<Source>,
    pub body: Option<Body>,
    pub body_params: Vec<Source>,
    pub body_format: BodyFormat,
    pub extract: Vec<(String, JsonPath)>,
    pub when: Option<Tpl>,
    pub success: SuccessRule,
    pub example: Option<Value>,
    pub timeout: Duration,
    /// `objects.<name>` this endpoint's body is kept under (from `info.dataFunction`).
    pub object_name: Option<String>,
    /// Whether the step needs the access token.
    pub uses_token: bool,
}

/// One tenant's use of an integration, with fields resolved (environment read, defaults set).
#[derive(Debug, Clone)]
pub struct Integrator {
    pub id: String,
    pub integration: String,
    pub callcenter_id: String,
    pub host: String,
    pub base_url: String,
    pub description: Option<String>,
    pub info: Info,
    pub iframe: Option<Iframe>,
    pub fields: Map<String, Value>,
    pub options: Map<String, Value>,
    pub api_keys: Vec<String>,
    pub allowed_origins: Vec<String>,
    /// Values of secret fields, for redaction.
    pub secrets: Vec<String>,
    /// Masks `secrets` (built once).
    pub redactor: crate::redact::Redactor,
    pub file: PathBuf,
}

/// The variables templates may read at the top level.
pub const ROOT_VARS: &[&str] = &[
    "time",
    "base_url",
    "host",
    "integrator",
    "fields",
    "options",
    "token",
    "refresh_token",
    "call",
    "results",
    "objects",
    "hook",
    "value",
    "this",
];

impl Catalog {
    /// Loads and validates `root`; every error of the tree is returned at once.
    pub fn load(root: &Path) -> Result<Catalog, Diagnostics> {
        Self::load_with_env(root, &|k| std::env::var(k).ok())
    }

    /// As [`Catalog::load`], reading environment variables through `env`.
    pub fn load_with_env(root: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Catalog, Diagnostics> {
        let mut diags = Diagnostics::default();
        let tree = load_tree(root, &mut diags);
        let cat = build(root, tree, env, &mut diags);
        if diags.is_empty() { Ok(cat) } else { Err(diags) }
    }

    pub fn integrator(&self, id: &str) -> Option<&Arc<Integrator>> {
        self.integrators.get(id)
    }
}

struct Builder<'a> {
    diags: &'a mut Diagnostics,
    ts: TemplateSet,
}

impl Builder<'_> {
    fn err(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    fn tpl(&mut self, file: &Path, s: &S<String>, esc: Escape, what: &str) -> Option<Tpl> {
        match self.ts.compile(&s.value, esc) {
            Ok(t) => Some(t),
            Err(e) => {
                self.err(
                    Diagnostic::new(Pos::new(file, s.referenced), format!("{what} is not a valid template: {e}"))
                        .expected("handlebars syntax, e.g. 'Bearer {{token}}'"),
                );
                None
            }
        }
    }

    fn path(&mut self, file: &Path, s: &S<String>, what: &str) -> Option<JsonPath> {
        match JsonPath::parse(&s.value) {
            Ok(p) => Some(p),
            Err(e) => {
                let e = jsonpath_error(&e);
                self.err(
                    Diagnostic::new(
                        Pos::new(file, s.referenced),
                        format!("{what} '{}' is not a valid JSONPath: {e}", s.value),
                    )
                    .expected("an RFC 9535 JSONPath such as '$.results[0].id'"),
                );
                None
            }
        }
    }
}

fn build(root: &Path, tree: Tree, env: &dyn Fn(&str) -> Option<String>, diags: &mut Diagnostics) -> Catalog {
    let mut b = Builder { diags, ts: TemplateSet::new() };
    let mut integrations: BTreeMap<String, Integration> = BTreeMap::new();

    for Loaded { file, doc } in tree.templates {
        if integrations.contains_key(&doc.name.value) {
            let d = Diagnostic::new(
                Pos::new(&file, doc.name.referenced),
                format!("integration '{}' is defined twice", doc.name.value),
            )
            .hint("integration names must be unique across templates/");
            b.err(d);
            continue;
        }
        let params = template_params(&mut b, &file, &doc);
        integrations.insert(
            doc.name.value.clone(),
            Integration {
                name: doc.name.value.clone(),
                label: doc.label.clone().unwrap_or_else(|| doc.name.value.clone()),
                kind: doc.kind,
                description: doc.description.clone(),
                file: file.clone(),
                info: doc.info,
                iframe: doc.iframe,
                params,
                endpoints: Vec::new(),
                auth: None,
                token_ttl: doc.token_ttl.unwrap_or(DEFAULT_TOKEN_TTL),
                result_names: BTreeSet::new(),
            },
        );
    }

    let names: Vec<String> = integrations.keys().cloned().collect();
    let mut seen_endpoint_files: BTreeMap<String, PathBuf> = BTreeMap::new();
    for Loaded { file, doc } in tree.endpoints {
        let Some(integration) = integrations.get_mut(&doc.integration.value) else {
            unknown_integration(&mut b, &file, &doc.integration, &names);
            continue;
        };
        if let Some(prev) = seen_endpoint_files.insert(doc.integration.value.clone(), file.clone()) {
            b.err(
                Diagnostic::new(
                    Pos::new(&file, doc.integration.referenced),
                    format!("integration '{}' already has an endpoints file", doc.integration.value),
                )
                .hint(format!("merge it into {}", prev.display())),
            );
            continue;
        }
        build_endpoints(&mut b, &file, doc, integration);
    }

    for integration in integrations.values_mut() {
        check_integration(&mut b, integration);
    }

    let mut integrators = BTreeMap::new();
    for Loaded { file, doc } in tree.integrators {
        let Some(integration) = integrations.get(&doc.integration.value) else {
            unknown_integration(&mut b, &file, &doc.integration, &names);
            continue;
        };
        if integrators.contains_key(&doc.id.value) {
            let d = Diagnostic::new(
                Pos::new(&file, doc.id.referenced),
                format!("integrator '{}' is defined twice", doc.id.value),
            );
            b.err(d);
            continue;
        }
        if let Some(i) = build_integrator(&mut b, &file, doc, integration, env) {
            integrators.insert(i.id.clone(), Arc::new(i));
        }
    }

    Catalog { root: root.to_path_buf(), templates: b.ts, integrations, integrators }
}

/// The parser's multi-line report, in one line: `at column N: expected …`.
fn jsonpath_error(e: &str) -> String {
    let col = e.split("--> ").nth(1).and_then(|r| r.split_whitespace().next()).and_then(|lc| lc.split(':').nth(1));
    let what =
        e.lines().rev().find_map(|l| l.trim().strip_prefix("= ")).unwrap_or_else(|| e.lines().next().unwrap_or(e));
    match col {
        Some(c) => format!("at character {c}: {what}"),
        None => what.trim().to_string(),
    }
}

fn unknown_integration(b: &mut Builder, file: &Path, name: &S<String>, names: &[String]) {
    b.err(
        Diagnostic::new(Pos::new(file, name.referenced), format!("unknown integration '{}'", name.value))
            .expected(one_of(names.iter().map(String::as_str)))
            .hint_opt(did_you_mean(&name.value, names.iter().map(String::as_str))),
    );
}

fn template_params(b: &mut Builder, file: &Path, doc: &TemplateDoc) -> Vec<Param> {
    let mut out: Vec<Param> = Vec::new();
    for p in &doc.parameters {
        if out.iter().any(|q| q.name == p.name.value) {
            b.err(Diagnostic::new(
                Pos::new(file, p.name.referenced),
                format!("parameter '{}' is declared twice", p.name.value),
            ));
            continue;
        }
        let format = p.format.as_ref().and_then(|f| b.tpl(file, f, Escape::Plain, "format"));
        if p.placement.is_some() && p.key.is_none() && p.placement == Some(Placement::Md5) {
            b.err(
                Diagnostic::new(
                    Pos::new(file, p.name.referenced),
                    format!("md5 parameter '{}' needs a 'key'", p.name.value),
                )
                .expected("the header that receives the hash, e.g. key: X-Signature"),
            );
        }
        out.push(Param {
            name: p.name.value.clone(),
            placement: p.placement,
            key: p.key.clone().unwrap_or_else(|| p.name.value.clone()),
            format,
            required: p.required.unwrap_or(p.default.is_none()),
            secret: p.secret,
            default: p.default.clone(),
            description: p.description.clone(),
            pos: Pos::new(file, p.name.referenced),
        });
    }
    out
}

fn hook_of(b: &mut Builder, file: &Path, s: &S<String>) -> Option<Hook> {
    let h = Hook::parse(&s.value);
    if h.is_none() {
        let all = Hook::ALL.map(Hook::as_str);
        b.err(
            Diagnostic::new(Pos::new(file, s.referenced), format!("unknown hook '{}'", s.value))
                .expected(one_of(all))
                .hint_opt(did_you_mean(&s.value, all)),
        );
    }
    h
}
