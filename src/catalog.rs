//! The catalog: the validated, cross-referenced and compiled configuration. Built from a
//! loaded tree; every reference, template and JSONPath is checked here, all errors at once.

use std::collections::{BTreeMap, BTreeSet, HashSet};
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
#[derive(Debug)]
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

fn build_endpoints(b: &mut Builder, file: &Path, doc: EndpointsDoc, integration: &mut Integration) {
    let mut names: HashSet<String> = HashSet::new();
    for def in doc.endpoints {
        let pos = Pos::new(file, def.name.referenced);
        if !names.insert(def.name.value.clone()) {
            b.err(Diagnostic::new(pos.clone(), format!("endpoint '{}' is defined twice", def.name.value)));
            continue;
        }
        let trigger = match (&def.trigger, def.kind) {
            (Some(t), EndpointType::Auth) => {
                b.err(
                    Diagnostic::new(Pos::new(file, t.referenced), "an Auth endpoint has no trigger")
                        .hint("the engine calls it whenever a step needs a token; remove 'trigger'"),
                );
                None
            }
            (Some(t), _) => hook_of(b, file, t),
            (None, EndpointType::Auth) => None,
            (None, _) => {
                b.err(
                    Diagnostic::new(pos.clone(), format!("endpoint '{}' has no trigger", def.name.value))
                        .expected(one_of(Hook::ALL.map(Hook::as_str))),
                );
                None
            }
        };
        if def.kind == EndpointType::Auth {
            if integration.auth.is_some() {
                b.err(
                    Diagnostic::new(pos.clone(), "a second Auth endpoint")
                        .hint("an integration has at most one Auth endpoint"),
                );
            } else {
                integration.auth = Some(integration.endpoints.len());
            }
        }
        if def.kind == EndpointType::SendSms && integration.kind != IntegrationType::Sms {
            b.err(
                Diagnostic::new(pos.clone(), "a SendSMS endpoint in a CRM integration")
                    .hint("set 'type: SMS' in the template, or use PostData"),
            );
        }
        let auth_response = (def.kind == EndpointType::Auth).then(|| {
            let rt = def.response_type.as_ref();
            let get = |b: &mut Builder, s: Option<&S<String>>, dflt: &str, what: &str| match s {
                Some(s) => b.path(file, s, what),
                None => JsonPath::parse(dflt).ok(),
            };
            let token = get(b, rt.and_then(|r| r.token.as_ref()), "$.access_token", "responseType.token");
            let expires_in = get(b, rt.and_then(|r| r.expires_in.as_ref()), "$.expires_in", "responseType.expiresIn");
            let refresh_token =
                get(b, rt.and_then(|r| r.refresh_token.as_ref()), "$.refresh_token", "responseType.refreshToken");
            (token, expires_in, refresh_token)
        });
        let auth_response = match auth_response {
            Some((Some(token), Some(expires_in), Some(refresh_token))) => {
                Some(AuthResponse { token, expires_in, refresh_token })
            }
            _ => None,
        };
        if def.response_type.is_some() && def.kind != EndpointType::Auth {
            b.err(Diagnostic::new(pos.clone(), "'responseType' is only for Auth endpoints"));
        }

        // On a bad url keep checking the rest of the endpoint (the tree is invalid anyway).
        let url = b.tpl(file, &def.url, Escape::Url, "url").or_else(|| b.ts.compile("", Escape::Url).ok());
        let mut sources = Sources::default();
        // Template parameters with a placement go into every non-Auth call.
        if def.kind != EndpointType::Auth {
            for p in integration.params.iter().filter(|p| p.placement.is_some()) {
                let s = Source {
                    key: p.key.clone(),
                    kind: SourceKind::Field(p.name.clone()),
                    format: p.format.clone(),
                    default: None,
                    optional: !p.required,
                    secret: p.secret,
                    pos: p.pos.clone(),
                };
                sources.push(p.placement.unwrap_or(Placement::Header), s);
            }
        }
        let hp = &def.hard_params;
        for (placement, map) in [
            (Placement::Header, &hp.header),
            (Placement::Query, &hp.query),
            (Placement::Path, &hp.path),
            (Placement::Md5, &hp.md5),
        ] {
            for (k, v) in map {
                if let Some(t) =
                    b.tpl(file, v, Escape::Plain, &format!("hardParams.{placement:?} '{k}'").to_lowercase())
                {
                    let s = Source {
                        key: k.clone(),
                        kind: SourceKind::Value(t),
                        format: None,
                        default: None,
                        optional: false,
                        secret: false,
                        pos: Pos::new(file, v.referenced),
                    };
                    sources.push(placement, s);
                }
            }
        }
        let body = match &hp.body {
            Some(v) => match b.ts.compile_body(v) {
                Ok(body) => Some(body),
                Err(e) => {
                    b.err(Diagnostic::new(pos.clone(), format!("hardParams.body has an invalid template: {e}")));
                    None
                }
            },
            None => None,
        };
        for p in &def.parameters {
            if let Some((placement, s)) = endpoint_param(b, file, p) {
                sources.push(placement, s);
            }
        }
        if def.kind == EndpointType::Auth && def.method == Method::Get && (body.is_some() || !sources.body.is_empty()) {
            b.err(
                Diagnostic::new(pos.clone(), "a GET request has no body").hint("use query parameters, or method POST"),
            );
        }
        let mut extract = Vec::new();
        for (name, path) in &def.extract {
            if let Some(p) = b.path(file, path, &format!("extract '{name}'")) {
                extract.push((name.clone(), p));
                integration.result_names.insert(name.clone());
            }
        }
        let when = def.when.as_ref().and_then(|w| match b.ts.compile_condition(&w.value) {
            Ok(t) => Some(t),
            Err(e) => {
                b.err(Diagnostic::new(Pos::new(file, w.referenced), format!("'when' is not a valid condition: {e}")));
                None
            }
        });
        let success = match &def.success {
            Some(s) => SuccessRule {
                status: s.status.clone(),
                jsonpath: s.jsonpath.as_ref().and_then(|p| b.path(file, p, "success.jsonpath")),
                equals: s.equals.clone(),
                message: s.message.as_ref().and_then(|p| b.path(file, p, "success.message")),
            },
            None => SuccessRule { status: vec![], jsonpath: None, equals: None, message: None },
        };
        let Some(url) = url else { continue };
        integration.endpoints.push(Endpoint {
            name: def.name.value.clone(),
            pos: pos.clone(),
            url_pos: Pos::new(file, def.url.referenced),
            when_pos: def.when.as_ref().map(|w| Pos::new(file, w.referenced)).unwrap_or_else(|| pos.clone()),
            label: def.label.clone().unwrap_or_else(|| def.name.value.clone()),
            kind: def.kind,
            method: def.method,
            url,
            trigger,
            auth_response,
            headers: sources.header,
            query: sources.query,
            path: sources.path,
            md5: sources.md5,
            body,
            body_params: sources.body,
            body_format: def.body_format,
            extract,
            when,
            success,
            example: def.example.clone(),
            timeout: def.timeout_ms.map(Duration::from_millis).unwrap_or(DEFAULT_TIMEOUT),
            object_name: None,
            uses_token: false,
        });
    }
}

#[derive(Default)]
struct Sources {
    header: Vec<Source>,
    query: Vec<Source>,
    path: Vec<Source>,
    md5: Vec<Source>,
    body: Vec<Source>,
}

impl Sources {
    fn push(&mut self, p: Placement, s: Source) {
        let v = match p {
            Placement::Header => &mut self.header,
            Placement::Query => &mut self.query,
            Placement::Path => &mut self.path,
            Placement::Md5 => &mut self.md5,
            Placement::Body => &mut self.body,
        };
        // A later definition of the same key replaces an earlier one (endpoint over template).
        let key_eq = |a: &str, b: &str| {
            if p == Placement::Header || p == Placement::Md5 { a.eq_ignore_ascii_case(b) } else { a == b }
        };
        v.retain(|x| !key_eq(&x.key, &s.key));
        v.push(s);
    }
}

fn endpoint_param(b: &mut Builder, file: &Path, p: &EndpointParameter) -> Option<(Placement, Source)> {
    let pos = Pos::new(file, p.name.referenced);
    let mut kinds = Vec::new();
    if let Some(f) = &p.field {
        kinds.push(SourceKind::Field(f.value.clone()));
    }
    if p.token == Some(true) {
        kinds.push(SourceKind::Token);
    }
    if let Some(c) = &p.call {
        kinds.push(SourceKind::Call(c.value.split('.').map(str::to_string).collect()));
    }
    if let Some(r) = &p.result {
        kinds.push(SourceKind::Result(r.value.clone()));
    }
    if let Some(v) = &p.value {
        kinds.push(SourceKind::Value(b.tpl(file, v, Escape::Plain, "value")?));
    }
    if kinds.len() != 1 {
        b.err(
            Diagnostic::new(
                pos,
                format!("parameter '{}' needs exactly one source, found {}", p.name.value, kinds.len()),
            )
            .expected("one of 'field', 'token: true', 'call', 'result', 'value'"),
        );
        return None;
    }
    let format = match &p.format {
        Some(f) => Some(b.tpl(file, f, Escape::Plain, "format")?),
        None => None,
    };
    let kind = kinds.remove(0);
    Some((
        p.placement,
        Source {
            key: p.name.value.clone(),
            kind,
            format,
            default: p.default.clone(),
            optional: p.optional,
            secret: false,
            pos: Pos::new(file, p.name.referenced),
        },
    ))
}

/// Cross-reference checks within one integration; also derives secrecy and token use.
fn check_integration(b: &mut Builder, integration: &mut Integration) {
    let file = integration.file.clone();
    let params: Vec<String> = integration.params.iter().map(|p| p.name.clone()).collect();
    let secret_fields: HashSet<String> =
        integration.params.iter().filter(|p| p.secret).map(|p| p.name.clone()).collect();
    let results = integration.result_names.clone();
    let options: Vec<String> = integration.info.list_options.iter().flatten().map(|o| o.name.clone()).collect();
    let has_auth = integration.auth.is_some();
    let endpoint_names: Vec<String> = integration.endpoints.iter().map(|e| e.name.clone()).collect();

    // dataFunction → object names.
    let mut objects: Vec<String> = Vec::new();
    for df in integration.info.data_function.iter().flatten() {
        match integration.endpoints.iter_mut().find(|e| e.name == df.endpoint.value) {
            Some(e) if e.trigger == Some(Hook::GetDataIframe) => {
                e.object_name = Some(df.object_name.clone());
                objects.push(df.object_name.clone());
            }
            Some(_) => b.err(
                Diagnostic::new(
                    Pos::new(&file, df.endpoint.referenced),
                    format!("dataFunction endpoint '{}' is not triggered by getDataIframe", df.endpoint.value),
                )
                .hint("dataFunction lists the calls made at call start; set its trigger to getDataIframe"),
            ),
            None => b.err(
                Diagnostic::new(
                    Pos::new(&file, df.endpoint.referenced),
                    format!("unknown endpoint '{}'", df.endpoint.value),
                )
                .expected(one_of(endpoint_names.iter().map(String::as_str)))
                .hint_opt(did_you_mean(&df.endpoint.value, endpoint_names.iter().map(String::as_str))),
            ),
        }
    }
    let ctx =
        RefCheck { params: &params, results: &results, options: &options, has_auth, secret_fields: &secret_fields };

    for p in &integration.params {
        if let Some(f) = &p.format {
            for d in ctx.check(f, &format!("parameter '{}'", p.name), true) {
                b.err(Diagnostic::new(p.pos.clone(), d));
            }
        }
    }
    for e in &mut integration.endpoints {
        let mut problems = Vec::new();
        let is_auth = e.kind == EndpointType::Auth;
        let mut uses_token = false;
        let check_tpl = |t: &Tpl, what: &str, pos: &Pos, problems: &mut Vec<(Pos, String)>| -> bool {
            problems.extend(ctx.check(t, what, false).into_iter().map(|m| (pos.clone(), m)));
            if is_auth && t.refs().iter().any(|r| r[0] == "token") {
                problems.push((pos.clone(), format!("{what}: an Auth endpoint cannot use the token it obtains")));
            }
            t.refs().iter().any(|r| r[0] == "token")
        };
        uses_token |= check_tpl(&e.url, "url", &e.url_pos, &mut problems);
        let mut leaves = Vec::new();
        if let Some(body) = &e.body {
            body.leaves(&mut leaves);
        }
        for t in leaves {
            uses_token |= check_tpl(t, "hardParams.body", &e.pos, &mut problems);
        }
        if let Some(w) = &e.when {
            check_tpl(w, "when", &e.when_pos, &mut problems);
        }
        for s in e.headers.iter_mut().chain(&mut e.query).chain(&mut e.path).chain(&mut e.md5).chain(&mut e.body_params)
        {
            let what = format!("parameter '{}'", s.key);
            let at = s.pos.clone();
            match &s.kind {
                SourceKind::Field(f) => {
                    if !params.contains(f) {
                        problems.push((
                            at.clone(),
                            format!(
                                "{what}: unknown field '{f}' (expected {}){}",
                                one_of(params.iter().map(String::as_str)),
                                did_you_mean(f, params.iter().map(String::as_str))
                                    .map(|h| format!("; {h}"))
                                    .unwrap_or_default()
                            ),
                        ));
                    }
                    s.secret |= secret_fields.contains(f);
                }
                SourceKind::Token => {
                    uses_token = true;
                    s.secret = true;
                    if !has_auth {
                        problems.push((
                            at.clone(),
                            format!("{what}: uses the token but the integration has no Auth endpoint"),
                        ));
                    }
                    if is_auth {
                        problems
                            .push((at.clone(), format!("{what}: an Auth endpoint cannot use the token it obtains")));
                    }
                }
                SourceKind::Result(r) => {
                    if !results.contains(r) {
                        problems.push((
                            at.clone(),
                            format!(
                                "{what}: no endpoint extracts '{r}' (expected {}){}",
                                one_of(results.iter().map(String::as_str)),
                                did_you_mean(r, results.iter().map(String::as_str))
                                    .map(|h| format!("; {h}"))
                                    .unwrap_or_default()
                            ),
                        ));
                    }
                }
                SourceKind::Value(t) => {
                    let t = t.clone();
                    uses_token |= check_tpl(&t, &what, &at, &mut problems);
                    s.secret |= ctx.reads_secret(&t);
                }
                SourceKind::Call(_) => {}
            }
            if let Some(f) = &s.format.clone() {
                uses_token |= check_tpl(f, &what, &at, &mut problems);
                s.secret |= ctx.reads_secret(f);
            }
        }
        // Every `{name}` placeholder in the URL has a path parameter and the other way round.
        let placeholders = url_placeholders(e.url.source());
        for ph in &placeholders {
            if !e.path.iter().any(|p| &p.key == ph) {
                problems.push((e.url_pos.clone(), format!("url placeholder '{{{ph}}}' has no path parameter")));
            }
        }
        for p in &e.path {
            if !placeholders.contains(&p.key) {
                problems.push((
                    p.pos.clone(),
                    format!("path parameter '{}' has no '{{{}}}' placeholder in the url", p.key, p.key),
                ));
            }
        }
        e.uses_token = uses_token;
        for (at, p) in problems {
            b.err(Diagnostic::new(at, format!("endpoint '{}': {p}", e.name)));
        }
    }
    let _ = objects;
}

/// Checks the variables a template reads against what the integration defines.
struct RefCheck<'a> {
    params: &'a [String],
    results: &'a BTreeSet<String>,
    options: &'a [String],
    has_auth: bool,
    secret_fields: &'a HashSet<String>,
}

impl RefCheck<'_> {
    fn check(&self, t: &Tpl, what: &str, in_format: bool) -> Vec<String> {
        let mut out = Vec::new();
        for r in t.refs() {
            let root = r[0].as_str();
            if root.starts_with('@') || root == "this" || (root == "value" && in_format) {
                continue;
            }
            if !ROOT_VARS.contains(&root) {
                out.push(format!(
                    "{what}: unknown variable '{}' (expected a path under {}){}",
                    r.join("."),
                    one_of(ROOT_VARS.iter().copied()),
                    did_you_mean(root, ROOT_VARS.iter().copied()).map(|h| format!("; {h}")).unwrap_or_default()
                ));
                continue;
            }
            let second = r.get(1).map(String::as_str);
            let mut check_name = |kind: &str, names: &mut dyn Iterator<Item = &str>| {
                if let Some(n) = second {
                    let names: Vec<&str> = names.collect();
                    if !names.contains(&n) {
                        out.push(format!(
                            "{what}: unknown {kind} '{n}' in '{}' (expected {}){}",
                            r.join("."),
                            one_of(names.iter().copied()),
                            did_you_mean(n, names.iter().copied()).map(|h| format!("; {h}")).unwrap_or_default()
                        ));
                    }
                }
            };
            match root {
                "fields" => check_name("field", &mut self.params.iter().map(String::as_str)),
                "results" => check_name("result", &mut self.results.iter().map(String::as_str)),
                "options" => check_name("option", &mut self.options.iter().map(String::as_str)),
                "token" | "refresh_token" if !self.has_auth => {
                    out.push(format!("{what}: '{root}' is used but the integration has no Auth endpoint"))
                }
                _ => {}
            }
        }
        out
    }

    fn reads_secret(&self, t: &Tpl) -> bool {
        t.refs().iter().any(|r| match r[0].as_str() {
            "token" | "refresh_token" => true,
            "fields" => r.get(1).is_some_and(|f| self.secret_fields.contains(f)),
            _ => false,
        })
    }
}

/// `{name}` placeholders (single braces) in a URL template.
pub fn url_placeholders(url: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = url.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'{' {
            if bytes.get(i + 1) == Some(&b'{') {
                // Skip a handlebars expression.
                match url[i..].find("}}") {
                    Some(end) => {
                        i += end + 2;
                        continue;
                    }
                    None => break,
                }
            }
            if let Some(end) = url[i + 1..].find('}') {
                let name = &url[i + 1..i + 1 + end];
                if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                    out.push(name.to_string());
                }
                i += end + 2;
                continue;
            }
        }
        i += 1;
    }
    out
}

fn build_integrator(
    b: &mut Builder,
    file: &Path,
    doc: IntegratorDoc,
    integration: &Integration,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<Integrator> {
    let mut ok = true;
    let host = doc.host.value.trim().to_string();
    if host.contains("://") || host.is_empty() || host.contains('/') {
        b.err(
            Diagnostic::new(Pos::new(file, doc.host.referenced), format!("host '{host}' must be a bare host"))
                .expected("a host name with an optional port and no scheme or path, e.g. 'app.gcalls.co'")
                .hint("set 'scheme: http' for a plain-HTTP sandbox"),
        );
        ok = false;
    }
    let mut fields = Map::new();
    let mut secrets = Vec::new();
    let param_names: Vec<&str> = integration.params.iter().map(|p| p.name.as_str()).collect();
    for (name, v) in &doc.fields {
        let Some(param) = integration.param(name) else {
            b.err(
                Diagnostic::new(
                    Pos::new(file, v.referenced),
                    format!("unknown field '{name}' for integration '{}'", integration.name),
                )
                .expected(one_of(param_names.iter().copied()))
                .hint_opt(did_you_mean(name, param_names.iter().copied())),
            );
            ok = false;
            continue;
        };
        match resolve_field(&v.value, env) {
            Ok(value) => {
                if param.secret {
                    if let Some(s) = value.as_str() {
                        secrets.push(s.to_string());
                    } else {
                        secrets.push(value.to_string());
                    }
                }
                fields.insert(name.clone(), value);
            }
            Err(msg) => {
                b.err(
                    Diagnostic::new(Pos::new(file, v.referenced), format!("field '{name}': {msg}"))
                        .hint("export the variable, or give the field a 'default'"),
                );
                ok = false;
            }
        }
    }
    for p in &integration.params {
        if fields.contains_key(&p.name) {
            continue;
        }
        match &p.default {
            Some(d) => {
                fields.insert(p.name.clone(), d.clone());
            }
            None if p.required => {
                b.err(
                    Diagnostic::new(
                        Pos::new(file, doc.id.referenced),
                        format!("missing field '{}' required by integration '{}'", p.name, integration.name),
                    )
                    .hint(format!(
                        "add it under 'fields:'{}",
                        p.description.as_ref().map(|d| format!(" ({d})")).unwrap_or_default()
                    )),
                );
                ok = false;
            }
            None => {
                fields.insert(p.name.clone(), Value::Null);
            }
        }
    }
    let option_names: Vec<&str> = integration.info.list_options.iter().flatten().map(|o| o.name.as_str()).collect();
    let mut options = Map::new();
    for o in integration.info.list_options.iter().flatten() {
        options.insert(o.name.clone(), Value::Bool(o.default));
    }
    for (k, v) in &doc.options {
        if !option_names.contains(&k.as_str()) {
            b.err(
                Diagnostic::new(Pos::new(file, doc.id.referenced), format!("unknown option '{k}'"))
                    .expected(one_of(option_names.iter().copied()))
                    .hint_opt(did_you_mean(k, option_names.iter().copied())),
            );
            ok = false;
        }
        options.insert(k.clone(), Value::Bool(*v));
    }
    let mut api_keys = Vec::new();
    for k in &doc.api_keys {
        match resolve_field(k, env) {
            Ok(Value::String(s)) if !s.is_empty() => api_keys.push(s),
            Ok(_) => {
                b.err(Diagnostic::new(Pos::new(file, doc.id.referenced), "apiKeys entries must be non-empty strings"));
                ok = false;
            }
            Err(msg) => {
                b.err(Diagnostic::new(Pos::new(file, doc.id.referenced), format!("apiKeys: {msg}")));
                ok = false;
            }
        }
    }
    let scheme = match doc.scheme {
        Some(Scheme::Http) => "http",
        _ => "https",
    };
    if !ok {
        return None;
    }
    Some(Integrator {
        id: doc.id.value.clone(),
        integration: integration.name.clone(),
        callcenter_id: doc.callcenter_id.clone(),
        base_url: format!("{scheme}://{host}"),
        host,
        description: doc.description.clone(),
        info: merge_info(&integration.info, doc.info.as_ref()),
        iframe: merge_iframe(integration.iframe.as_ref(), doc.iframe.as_ref()),
        fields,
        options,
        api_keys,
        allowed_origins: doc.allowed_origins.clone(),
        secrets,
        file: file.to_path_buf(),
    })
}

fn resolve_field(v: &FieldValue, env: &dyn Fn(&str) -> Option<String>) -> Result<Value, String> {
    match v {
        FieldValue::Literal(v) => Ok(v.clone()),
        FieldValue::Env(e) => match env(&e.env).or_else(|| e.default.clone()) {
            Some(s) => Ok(Value::String(s)),
            None => Err(format!("environment variable '{}' is not set", e.env)),
        },
    }
}

/// The integrator's info overrides the template's, key by key.
pub fn merge_info(base: &Info, over: Option<&Info>) -> Info {
    let Some(o) = over else { return base.clone() };
    Info {
        render_tooltip: o.render_tooltip.clone().or_else(|| base.render_tooltip.clone()),
        list_options: o.list_options.clone().or_else(|| base.list_options.clone()),
        user_info: o.user_info.clone().or_else(|| base.user_info.clone()),
        data_function: base.data_function.clone(),
    }
}

/// The integrator's iframe overrides the template's, key by key.
pub fn merge_iframe(base: Option<&Iframe>, over: Option<&Iframe>) -> Option<Iframe> {
    match (base, over) {
        (None, None) => None,
        (Some(b), None) => Some(b.clone()),
        (None, Some(o)) => Some(o.clone()),
        (Some(b), Some(o)) => Some(Iframe {
            title: o.title.clone().or_else(|| b.title.clone()),
            fields: if o.fields.is_empty() { b.fields.clone() } else { o.fields.clone() },
            links: if o.links.is_empty() { b.links.clone() } else { o.links.clone() },
            forms: if o.forms.is_empty() { b.forms.clone() } else { o.forms.clone() },
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_skip_handlebars() {
        assert_eq!(url_placeholders("{{base_url}}/calls/{id}/x/{other_id}"), vec!["id", "other_id"]);
        assert!(url_placeholders("{{base_url}}/calls").is_empty());
    }
}
