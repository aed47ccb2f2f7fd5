//! Parameter resolution: one endpoint + one integrator + one call's state → a [`Request`].
//! Values come from their sources, pass their `format`, and are placed and encoded here.

use std::sync::OnceLock;

use handlebars::Context;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::catalog::{Catalog, Endpoint, Integration, Integrator, Source, SourceKind};
use crate::model::{BodyFormat, Hook};
use crate::redact::Redactor;
use crate::request::{Request, RequestBody};
use crate::templating::{DOT_SEGMENT_MARK, Data, RenderError, Tpl, encode_url_value, lookup};

/// Placeholder for the token in a dry-run that does not fetch one; shown as-is.
pub const DRY_RUN_TOKEN: &str = "<access-token>";

/// What a call has gathered so far: extracted results and kept response bodies.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CallState {
    #[serde(default)]
    pub results: Map<String, Value>,
    #[serde(default)]
    pub objects: Map<String, Value>,
}

/// Why a request could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("endpoint '{endpoint}': {what}: {source}")]
    Render { endpoint: String, what: String, source: RenderError },
    #[error("endpoint '{endpoint}': parameter '{param}' has no value ({from} is missing)")]
    MissingValue { endpoint: String, param: String, from: String },
    #[error("endpoint '{endpoint}': {message}")]
    Invalid { endpoint: String, message: String },
}

/// Everything a step's templates can read.
pub struct Scope<'a> {
    pub integrator: &'a Integrator,
    pub integration: &'a Integration,
    pub hook: Hook,
    pub call: &'a Value,
    pub state: &'a CallState,
    pub token: Option<&'a str>,
    pub refresh_token: Option<&'a str>,
}

impl<'a> Scope<'a> {
    /// The template data: see docs/yaml-reference.md, "Variables".
    pub fn data(&self) -> Value {
        self.data_at(time_now())
    }

    /// What this scope's templates read, without copying it (see [`Vars`]).
    pub fn vars(&'a self) -> Vars<'a> {
        Vars::new(self)
    }

    fn data_at(&self, time: Value) -> Value {
        let mut results = Map::new();
        for n in &self.integration.result_names {
            results.insert(n.clone(), Value::Null);
        }
        for (k, v) in &self.state.results {
            results.insert(k.clone(), v.clone());
        }
        let i = self.integrator;
        let text = |s: &str| Value::String(s.to_string());
        let mut integrator = Map::new();
        integrator.insert("id".into(), text(&i.id));
        integrator.insert("callcenter_id".into(), text(&i.callcenter_id));
        let refresh = self.refresh_token.map(text).or_else(|| i.fields.get("refresh_token").cloned());
        // Built by hand, not with json!(): that serialises every value again.
        let mut m = Map::with_capacity(13);
        m.insert("time".into(), time);
        m.insert("base_url".into(), text(&i.base_url));
        m.insert("host".into(), text(&i.host));
        m.insert("integrator".into(), Value::Object(integrator));
        m.insert("fields".into(), Value::Object(i.fields.clone()));
        m.insert("options".into(), Value::Object(i.options.clone()));
        m.insert("token".into(), self.token.map_or(Value::Null, text));
        m.insert("refresh_token".into(), refresh.unwrap_or(Value::Null));
        m.insert("call".into(), self.call.clone());
        m.insert("results".into(), Value::Object(results));
        m.insert("objects".into(), Value::Object(self.state.objects.clone()));
        m.insert("hook".into(), text(self.hook.as_str()));
        Value::Object(m)
    }

    /// Secrets to mask in anything printed about this scope.
    pub fn redactor(&self) -> Redactor {
        self.integrator.redactor.with(
            self.token
                .filter(|t| *t != DRY_RUN_TOKEN)
                .map(str::to_string)
                .into_iter()
                .chain(self.refresh_token.map(str::to_string)),
        )
    }
}

fn time_now() -> Value {
    let now = chrono::Utc::now();
    let mut time = Map::new();
    time.insert("unix".into(), now.timestamp().into());
    time.insert("unix_ms".into(), now.timestamp_millis().into());
    time.insert("iso".into(), now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true).into());
    Value::Object(time)
}

static NULL: Value = Value::Null;

/// A scope's variables, read in place: a plain `{{path}}` is looked up in the integrator,
/// the call or the state without building the whole data; the full handlebars context is
/// built only when a template needs handlebars (a helper, a block).
pub struct Vars<'a> {
    scope: &'a Scope<'a>,
    base_url: Value,
    host: Value,
    hook: Value,
    token: Value,
    refresh_token: Value,
    /// `time`, fixed once per request.
    time: OnceLock<Value>,
    full: OnceLock<Context>,
}

impl<'a> Vars<'a> {
    fn new(scope: &'a Scope<'a>) -> Vars<'a> {
        let i = scope.integrator;
        let text = |s: &str| Value::String(s.to_string());
        let refresh = scope.refresh_token.map(text).or_else(|| i.fields.get("refresh_token").cloned());
        Vars {
            scope,
            base_url: text(&i.base_url),
            host: text(&i.host),
            hook: text(scope.hook.as_str()),
            token: scope.token.map_or(Value::Null, text),
            refresh_token: refresh.unwrap_or(Value::Null),
            time: OnceLock::new(),
            full: OnceLock::new(),
        }
    }

    fn time(&self) -> &Value {
        self.time.get_or_init(time_now)
    }
}

impl Data for Vars<'_> {
    fn get(&self, path: &[String]) -> Option<&Value> {
        let s = self.scope;
        let (root, rest) = path.split_first()?;
        match (root.as_str(), rest) {
            ("fields", [k, more @ ..]) => lookup(s.integrator.fields.get(k)?, more),
            ("options", [k, more @ ..]) => lookup(s.integrator.options.get(k)?, more),
            ("call", _) => lookup(s.call, rest),
            ("objects", [k, more @ ..]) => lookup(s.state.objects.get(k)?, more),
            ("results", [k, more @ ..]) => match s.state.results.get(k) {
                Some(v) => lookup(v, more),
                None if more.is_empty() && s.integration.result_names.contains(k) => Some(&NULL),
                None => None,
            },
            ("time", _) => lookup(self.time(), rest),
            ("base_url", _) => lookup(&self.base_url, rest),
            ("host", _) => lookup(&self.host, rest),
            ("hook", _) => lookup(&self.hook, rest),
            ("token", _) => lookup(&self.token, rest),
            ("refresh_token", _) => lookup(&self.refresh_token, rest),
            _ => lookup(self.context().data(), path),
        }
    }

    fn context(&self) -> &Context {
        self.full.get_or_init(|| Context::from(self.scope.data_at(self.time().clone())))
    }
}

/// Another view plus `value` (what a parameter's `format` sees).
struct WithValue<'a> {
    base: &'a dyn Data,
    value: Value,
    full: OnceLock<Context>,
}

impl Data for WithValue<'_> {
    fn get(&self, path: &[String]) -> Option<&Value> {
        match path.split_first() {
            Some((root, rest)) if root == "value" => lookup(&self.value, rest),
            _ => self.base.get(path),
        }
    }

    fn context(&self) -> &Context {
        self.full.get_or_init(|| {
            let mut data = self.base.context().data().clone();
            if let Value::Object(m) = &mut data {
                m.insert("value".into(), self.value.clone());
            }
            Context::from(data)
        })
    }
}

/// Builds the request `e` sends in `scope`.
pub fn resolve(catalog: &Catalog, e: &Endpoint, scope: &Scope) -> Result<Request, ResolveError> {
    let ts = &catalog.templates;
    let vars = scope.vars();
    let ctx: &dyn Data = &vars;
    let mut secrets: Vec<String> = Vec::new();
    let render_err =
        |what: &str, source| ResolveError::Render { endpoint: e.name.clone(), what: what.to_string(), source };
    let invalid = |message: String| ResolveError::Invalid { endpoint: e.name.clone(), message };

    let mut url = ts.render(&e.url, ctx).map_err(|s| render_err("url", s))?;
    for p in &e.path {
        if let Some(v) = source_value(catalog, e, p, ctx, scope, &mut secrets)? {
            url = url.replace(&format!("{{{}}}", p.key), &encode_url_value(&as_text(&v)));
        }
    }
    let redactor = scope.redactor();
    if url.contains(DOT_SEGMENT_MARK) {
        return Err(invalid("a path value of '.' or '..' would change the URL path".into()));
    }
    let mut url = url::Url::parse(&url)
        .map_err(|err| invalid(format!("url '{}' is not valid: {err}", redactor.with(secrets.clone()).redact(&url))))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(format!("url scheme '{}' is not http or https", url.scheme())));
    }

    let mut query: Vec<(String, String)> = Vec::new();
    for q in &e.query {
        if let Some(v) = source_value(catalog, e, q, ctx, scope, &mut secrets)? {
            query.push((q.key.clone(), as_text(&v)));
        }
    }
    if !query.is_empty() {
        url.query_pairs_mut().extend_pairs(&query);
    }

    let mut headers: Vec<(String, String)> = Vec::new();
    let set_header = |k: &str, v: String, headers: &mut Vec<(String, String)>| -> Result<(), ResolveError> {
        if reqwest::header::HeaderName::from_bytes(k.as_bytes()).is_err() {
            return Err(invalid(format!("'{k}' is not a valid header name")));
        }
        if reqwest::header::HeaderValue::from_str(&v).is_err() {
            return Err(invalid(format!(
                "header '{k}' has a value with characters a header cannot carry (e.g. a newline)"
            )));
        }
        headers.retain(|(x, _)| !x.eq_ignore_ascii_case(k));
        headers.push((k.to_string(), v));
        Ok(())
    };
    for h in &e.headers {
        if let Some(v) = source_value(catalog, e, h, ctx, scope, &mut secrets)? {
            set_header(&h.key, as_text(&v), &mut headers)?;
        }
    }
    for m in &e.md5 {
        if let Some(v) = source_value(catalog, e, m, ctx, scope, &mut secrets)? {
            set_header(&m.key, md5_hex(as_text(&v).as_bytes()), &mut headers)?;
        }
    }

    let body = if e.body.is_some() || !e.body_params.is_empty() {
        let mut body = match &e.body {
            Some(b) => ts.render_body(b, ctx).map_err(|s| render_err("hardParams.body", s))?,
            None => Value::Object(Map::new()),
        };
        for b in &e.body_params {
            if let Some(v) = source_value(catalog, e, b, ctx, scope, &mut secrets)? {
                set_path(&mut body, &b.key, v).map_err(invalid)?;
            }
        }
        Some(match e.body_format {
            BodyFormat::Json => {
                if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-type")) {
                    headers.push(("Content-Type".into(), "application/json".into()));
                }
                RequestBody::Json(body)
            }
            BodyFormat::Form => {
                headers.retain(|(k, _)| !k.eq_ignore_ascii_case("content-type"));
                headers.push(("Content-Type".into(), "application/x-www-form-urlencoded".into()));
                let Value::Object(m) = body else {
                    return Err(invalid("a form body must be a mapping of keys to values".into()));
                };
                RequestBody::Form(m.into_iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k, as_text(&v))).collect())
            }
        })
    } else {
        None
    };

    Ok(Request {
        endpoint: e.name.clone(),
        method: e.method,
        url,
        headers,
        body,
        timeout: e.timeout,
        redactor: redactor.with(secrets),
    })
}

/// A source's value after `default`/`optional` and `format`; `None` means "leave it out".
fn source_value(
    catalog: &Catalog,
    e: &Endpoint,
    s: &Source,
    ctx: &dyn Data,
    scope: &Scope,
    secrets: &mut Vec<String>,
) -> Result<Option<Value>, ResolveError> {
    let ts = &catalog.templates;
    let render_err =
        |source| ResolveError::Render { endpoint: e.name.clone(), what: format!("parameter '{}'", s.key), source };
    let raw: Option<Value> = match &s.kind {
        SourceKind::Field(f) => scope.integrator.fields.get(f).cloned(),
        SourceKind::Token => scope.token.map(|t| Value::String(t.to_string())),
        SourceKind::Call(path) => lookup(scope.call, path).cloned(),
        SourceKind::Result(r) => scope.state.results.get(r).cloned(),
        SourceKind::Value(t) => Some(render_tpl(ts, t, ctx).map_err(render_err)?),
    };
    let raw = match raw {
        Some(v) if !v.is_null() && v.as_str() != Some("") => v,
        _ => match &s.default {
            Some(d) => d.clone(),
            None if s.optional => return Ok(None),
            None => {
                let from = match &s.kind {
                    SourceKind::Field(f) => format!("field '{f}'"),
                    SourceKind::Token => "the access token".into(),
                    SourceKind::Call(path) => format!("call payload key '{}'", path.join(".")),
                    SourceKind::Result(r) => format!("result '{r}'"),
                    SourceKind::Value(_) => "value".into(),
                };
                return Err(ResolveError::MissingValue { endpoint: e.name.clone(), param: s.key.clone(), from });
            }
        },
    };
    let raw_text = as_text(&raw);
    let v = match &s.format {
        None => raw,
        Some(f) => {
            let with = WithValue { base: ctx, value: raw, full: OnceLock::new() };
            render_tpl(ts, f, &with).map_err(render_err)?
        }
    };
    if s.secret && raw_text != DRY_RUN_TOKEN {
        // Mask the secret itself ("Bearer ***"), and the whole value when a format
        // transformed it beyond recognition (a hash, base64 of "id:secret").
        let text = as_text(&v);
        if !text.contains(&raw_text) {
            secrets.push(text);
        }
        secrets.push(raw_text);
    }
    Ok(Some(v))
}

fn render_tpl(ts: &crate::templating::TemplateSet, t: &Tpl, ctx: &dyn Data) -> Result<Value, RenderError> {
    ts.render_value(t, ctx)
}

/// Lowercase hex md5 (formatting the digest with `{:x}` costs more than hashing it).
fn md5_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = md5::compute(bytes);
    let mut out = String::with_capacity(32);
    for b in digest.0 {
        out.push(HEX[(b >> 4) as usize] as char);
        out.push(HEX[(b & 15) as usize] as char);
    }
    out
}

/// A value as text for a header, query or form: strings as-is, others as JSON.
pub fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Sets `value` at a dotted path in `body`, creating objects on the way.
fn set_path(body: &mut Value, path: &str, value: Value) -> Result<(), String> {
    let mut cur = body;
    let segs: Vec<&str> = path.split('.').collect();
    for (i, seg) in segs.iter().enumerate() {
        let last = i + 1 == segs.len();
        let Value::Object(m) = cur else {
            return Err(format!("body parameter '{path}': '{}' is not an object", segs[..i].join(".")));
        };
        if last {
            m.insert((*seg).to_string(), value);
            return Ok(());
        }
        cur = m.entry((*seg).to_string()).or_insert_with(|| Value::Object(Map::new()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn md5_hex_matches_the_digest_format() {
        assert_eq!(md5_hex(b"abc"), format!("{:x}", md5::compute(b"abc")));
    }

    #[test]
    fn set_path_nests_and_refuses_scalars() {
        let mut b = json!({"properties": {"a": 1}, "s": "x"});
        set_path(&mut b, "properties.b", json!(2)).unwrap();
        set_path(&mut b, "x.y.z", json!(true)).unwrap();
        assert_eq!(b, json!({"properties": {"a": 1, "b": 2}, "s": "x", "x": {"y": {"z": true}}}));
        assert!(set_path(&mut b, "s.t", json!(1)).is_err());
    }
}
