//! Templating: every string in the YAML is a handlebars template, compiled once at load time.
//! Bodies are structures whose string leaves are rendered, so values cannot break the JSON.

pub mod helpers;

use std::fmt;

use handlebars::template::{Parameter, TemplateElement};
use handlebars::{Context, Handlebars, Path as HbPath, PathSeg, Template};
use serde_json::{Map, Value};

/// Which escaping a template's `{{…}}` output gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    /// None: headers, query values, body leaves (the request encoder does the encoding).
    Plain,
    /// Percent-encoded: URLs, so a value cannot change the URL's structure.
    Url,
    /// HTML-escaped: the iframe page.
    Html,
    /// Lenient (missing values are falsy): `when` conditions.
    Condition,
}

/// A compiled template.
#[derive(Clone)]
pub struct Tpl {
    source: String,
    escape: Escape,
    /// Registry name; `None` for a literal with no `{{`.
    id: Option<String>,
    /// `Some(path)` when the template is exactly one `{{path}}`: its value keeps its JSON type.
    single: Option<Vec<String>>,
    /// Every variable path the template reads (outside `each`/`with` blocks).
    refs: Vec<Vec<String>>,
    /// URLs only: a leading `{{…}}` that supplies scheme and host (`{{base_url}}`), not encoded.
    base: Option<Box<(Tpl, Tpl)>>,
    /// Text and plain `{{path}}`s only (no helpers, blocks or partials): rendered here
    /// without handlebars' per-render setup, which dominates such small templates.
    parts: Option<Vec<Part>>,
}

/// A piece of a simple template.
#[derive(Debug, Clone)]
enum Part {
    Text(String),
    /// `{{path}}`: escaped per the template's escaping.
    Var(Vec<String>),
    /// `{{{path}}}`: never escaped.
    Raw(Vec<String>),
}

impl fmt::Debug for Tpl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tpl({:?})", self.source)
    }
}

impl Tpl {
    pub fn source(&self) -> &str {
        &self.source
    }
    /// Variable paths the template reads, as segments (`["results", "call_id"]`).
    pub fn refs(&self) -> &[Vec<String>] {
        &self.refs
    }
    pub fn is_literal(&self) -> bool {
        self.id.is_none() && self.base.is_none()
    }
}

/// What templates read: values by path for the fast paths (no copy of the scope), and the
/// whole data as a handlebars context for templates that need handlebars (helpers, blocks).
pub trait Data {
    fn get(&self, path: &[String]) -> Option<&Value>;
    fn context(&self) -> &Context;
}

impl Data for Context {
    fn get(&self, path: &[String]) -> Option<&Value> {
        lookup(self.data(), path)
    }
    fn context(&self) -> &Context {
        self
    }
}

/// Why a template could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("variable '{0}' is not defined")]
    Missing(String),
    #[error("{0}")]
    Failed(String),
}

/// Helpers that take no parameters: `{{uuid}}` is a call, not a variable.
const ZERO_ARG_HELPERS: &[&str] = &["uuid", "now"];

/// Marks a `.`/`..` path value, which would change the URL path; checked after rendering.
pub const DOT_SEGMENT_MARK: &str = "\u{1}dot-segment\u{1}";

/// All templates of a catalog, in four registries (one per escaping).
pub struct TemplateSet {
    plain: Handlebars<'static>,
    url: Handlebars<'static>,
    html: Handlebars<'static>,
    condition: Handlebars<'static>,
    next: usize,
}

impl Default for TemplateSet {
    fn default() -> Self {
        Self::new()
    }
}

fn registry(strict: bool) -> Handlebars<'static> {
    let mut h = Handlebars::new();
    h.set_strict_mode(strict);
    helpers::register(&mut h);
    h
}

/// Characters left as-is when a value is rendered into a URL: RFC 3986 unreserved plus ':' and
/// '@' (so `{{host}}` with a port stays readable). Everything else is percent-encoded.
const URL_VALUE: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~').remove(b':').remove(b'@');

/// Percent-encodes one URL path segment or query value.
pub fn encode_url_value(v: &str) -> String {
    if v == "." || v == ".." {
        return DOT_SEGMENT_MARK.to_string();
    }
    percent_encoding::utf8_percent_encode(v, URL_VALUE).to_string()
}

impl TemplateSet {
    pub fn new() -> TemplateSet {
        let plain = {
            let mut h = registry(true);
            h.register_escape_fn(handlebars::no_escape);
            h
        };
        let url = {
            let mut h = registry(true);
            h.register_escape_fn(encode_url_value);
            h
        };
        let html = registry(true);
        let condition = registry(false);
        TemplateSet { plain, url, html, condition, next: 0 }
    }

    fn reg(&self, e: Escape) -> &Handlebars<'static> {
        match e {
            Escape::Plain => &self.plain,
            Escape::Url => &self.url,
            Escape::Html => &self.html,
            Escape::Condition => &self.condition,
        }
    }

    /// Compiles `source`; the error says what is wrong with its syntax.
    pub fn compile(&mut self, source: &str, escape: Escape) -> Result<Tpl, String> {
        if !source.contains("{{") {
            return Ok(Tpl {
                source: source.to_string(),
                escape,
                id: None,
                single: None,
                refs: vec![],
                base: None,
                parts: None,
            });
        }
        if escape == Escape::Url
            && source.starts_with("{{")
            && !source.starts_with("{{#")
            && !source.starts_with("{{{")
            && let Some(end) = source.find("}}")
        {
            let (head, rest) = source.split_at(end + 2);
            let head = self.compile(head, Escape::Plain)?;
            let rest = self.compile(rest, Escape::Url)?;
            let refs = head.refs.iter().chain(&rest.refs).cloned().collect();
            return Ok(Tpl {
                source: source.to_string(),
                escape,
                id: None,
                single: None,
                refs,
                base: Some(Box::new((head, rest))),
                parts: None,
            });
        }
        let template = Template::compile(source).map_err(|e| template_error(&e))?;
        let mut refs = Vec::new();
        collect_refs(&template.elements, &mut refs);
        let single = match template.elements.as_slice() {
            [TemplateElement::Expression(h)] if h.params.is_empty() && h.hash.is_empty() => match &h.name {
                Parameter::Path(p) => path_segments(p),
                Parameter::Name(n) if !ZERO_ARG_HELPERS.contains(&n.as_str()) => Some(vec![n.clone()]),
                _ => None,
            },
            _ => None,
        };
        let parts = if single.is_none() && escape != Escape::Condition && !source.contains('~') {
            simple_parts(&template.elements)
        } else {
            None
        };
        self.next += 1;
        let id = format!("t{}", self.next);
        let reg = match escape {
            Escape::Plain => &mut self.plain,
            Escape::Url => &mut self.url,
            Escape::Html => &mut self.html,
            Escape::Condition => &mut self.condition,
        };
        reg.register_template(&id, template);
        Ok(Tpl { source: source.to_string(), escape, id: Some(id), single, refs, base: None, parts })
    }

    /// Compiles a `when` expression (`results.x`, `not results.x`, `and a (not b)`).
    pub fn compile_condition(&mut self, expr: &str) -> Result<Tpl, String> {
        let e = expr.trim();
        if e.is_empty() || e.contains("{{") || e.contains("}}") {
            return Err("a condition is an expression without braces, e.g. 'not results.call_id'".into());
        }
        let wrapped = if e.contains(char::is_whitespace) {
            format!("{{{{#if ({e})}}}}1{{{{/if}}}}")
        } else {
            format!("{{{{#if {e}}}}}1{{{{/if}}}}")
        };
        let mut t = self.compile(&wrapped, Escape::Condition)?;
        t.source = e.to_string();
        Ok(t)
    }

    /// Renders to text.
    pub fn render(&self, t: &Tpl, ctx: &dyn Data) -> Result<String, RenderError> {
        if let Some(parts) = &t.base {
            let mut out = self.render(&parts.0, ctx)?;
            out.push_str(&self.render(&parts.1, ctx)?);
            return Ok(out);
        }
        let Some(id) = &t.id else { return Ok(t.source.clone()) };
        if let Some(path) = &t.single {
            let mut out = String::new();
            push_value(&mut out, t.escape, ctx.get(path).ok_or_else(|| RenderError::Missing(path.join(".")))?);
            return Ok(out);
        }
        if let Some(parts) = &t.parts {
            let mut out = String::with_capacity(t.source.len() + 16);
            for p in parts {
                match p {
                    Part::Text(s) => out.push_str(s),
                    Part::Var(path) | Part::Raw(path) => {
                        let v = ctx.get(path).ok_or_else(|| RenderError::Missing(path.join(".")))?;
                        let esc = if matches!(p, Part::Raw(_)) { Escape::Plain } else { t.escape };
                        push_value(&mut out, esc, v);
                    }
                }
            }
            return Ok(out);
        }
        self.reg(t.escape).render_with_context(id, ctx.context()).map_err(convert_error)
    }

    /// Renders to a JSON value: a template that is exactly one `{{path}}` keeps its type.
    pub fn render_value(&self, t: &Tpl, ctx: &dyn Data) -> Result<Value, RenderError> {
        if let Some(path) = &t.single {
            return ctx.get(path).cloned().ok_or_else(|| RenderError::Missing(path.join(".")));
        }
        self.render(t, ctx).map(Value::String)
    }

    /// Evaluates a condition compiled with [`TemplateSet::compile_condition`].
    pub fn truthy(&self, t: &Tpl, ctx: &dyn Data) -> Result<bool, RenderError> {
        Ok(!self.render(t, ctx)?.is_empty())
    }

    /// Compiles a body structure: string leaves become templates.
    pub fn compile_body(&mut self, v: &Value) -> Result<Body, String> {
        Ok(match v {
            Value::String(s) => Body::Leaf(self.compile(s, Escape::Plain)?),
            Value::Array(items) => Body::Array(items.iter().map(|i| self.compile_body(i)).collect::<Result<_, _>>()?),
            Value::Object(m) => Body::Object(
                m.iter().map(|(k, v)| Ok((k.clone(), self.compile_body(v)?))).collect::<Result<_, String>>()?,
            ),
            other => Body::Const(other.clone()),
        })
    }

    /// Renders a body structure.
    pub fn render_body(&self, b: &Body, ctx: &dyn Data) -> Result<Value, RenderError> {
        Ok(match b {
            Body::Const(v) => v.clone(),
            Body::Leaf(t) => self.render_value(t, ctx)?,
            Body::Array(items) => {
                Value::Array(items.iter().map(|i| self.render_body(i, ctx)).collect::<Result<_, _>>()?)
            }
            Body::Object(fields) => {
                let mut m = Map::with_capacity(fields.len());
                for (k, v) in fields {
                    m.insert(k.clone(), self.render_body(v, ctx)?);
                }
                Value::Object(m)
            }
        })
    }
}

/// A body template: a JSON structure whose string leaves are templates.
#[derive(Debug, Clone)]
pub enum Body {
    Const(Value),
    Leaf(Tpl),
    Array(Vec<Body>),
    Object(Vec<(String, Body)>),
}

impl Body {
    /// Every template leaf, for reference checks.
    pub fn leaves<'a>(&'a self, out: &mut Vec<&'a Tpl>) {
        match self {
            Body::Const(_) => {}
            Body::Leaf(t) => out.push(t),
            Body::Array(items) => items.iter().for_each(|i| i.leaves(out)),
            Body::Object(fields) => fields.iter().for_each(|(_, v)| v.leaves(out)),
        }
    }
}

/// Appends a value as template output: strings as-is, null as nothing, others as JSON.
fn push_value(out: &mut String, escape: Escape, v: &Value) {
    let text: std::borrow::Cow<str> = match v {
        Value::Null => return,
        Value::String(s) => s.into(),
        other => other.to_string().into(),
    };
    match escape {
        Escape::Url => out.push_str(&encode_url_value(&text)),
        Escape::Html => out.push_str(&handlebars::html_escape(&text)),
        Escape::Plain | Escape::Condition => out.push_str(&text),
    }
}

/// The parts of a template made only of text and plain variable paths.
fn simple_parts(elements: &[TemplateElement]) -> Option<Vec<Part>> {
    let var = |h: &handlebars::template::HelperTemplate| -> Option<Vec<String>> {
        if !h.params.is_empty() || !h.hash.is_empty() {
            return None;
        }
        match &h.name {
            Parameter::Path(p) => path_segments(p).filter(|s| !s.is_empty()),
            Parameter::Name(n) if !ZERO_ARG_HELPERS.contains(&n.as_str()) => Some(vec![n.clone()]),
            _ => None,
        }
    };
    elements
        .iter()
        .map(|e| match e {
            TemplateElement::RawString(s) => Some(Part::Text(s.clone())),
            TemplateElement::Expression(h) => var(h).map(Part::Var),
            TemplateElement::HtmlExpression(h) => var(h).map(Part::Raw),
            _ => None,
        })
        .collect()
}

/// Looks up a dotted path (`results.contact_id`, `objects.contact.results.0.id`) in `data`.
pub fn lookup<'a, S: AsRef<str>>(data: &'a Value, path: &[S]) -> Option<&'a Value> {
    let mut cur = data;
    for seg in path {
        let seg = seg.as_ref();
        cur = match cur {
            Value::Object(m) => m.get(seg)?,
            Value::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

fn path_segments(p: &HbPath) -> Option<Vec<String>> {
    match p {
        HbPath::Relative((segs, raw)) => {
            let mut out = Vec::with_capacity(segs.len());
            for s in segs {
                match s {
                    PathSeg::Named(n) => out.push(n.trim_start_matches('[').trim_end_matches(']').to_string()),
                    _ => return None,
                }
            }
            if out.is_empty() && !raw.is_empty() {
                return None;
            }
            Some(out)
        }
        HbPath::Local(_) => None,
    }
}

fn param_refs(p: &Parameter, out: &mut Vec<Vec<String>>) {
    match p {
        Parameter::Path(path) => {
            if let Some(segs) = path_segments(path).filter(|s| !s.is_empty()) {
                out.push(segs);
            }
        }
        Parameter::Subexpression(sub) => collect_refs(std::slice::from_ref(&*sub.element), out),
        Parameter::Name(_) | Parameter::Literal(_) => {}
        _ => {}
    }
}

fn collect_refs(elements: &[TemplateElement], out: &mut Vec<Vec<String>>) {
    for e in elements {
        match e {
            TemplateElement::Expression(h) | TemplateElement::HtmlExpression(h) | TemplateElement::HelperBlock(h) => {
                let helper_name = match &h.name {
                    Parameter::Name(n) => Some(n.as_str()),
                    _ => None,
                };
                if h.params.is_empty()
                    && h.hash.is_empty()
                    && !h.block
                    && let Parameter::Name(n) = &h.name
                    && !ZERO_ARG_HELPERS.contains(&n.as_str())
                {
                    out.push(vec![n.clone()]);
                }
                param_refs(&h.name, out);
                h.params.iter().for_each(|p| param_refs(p, out));
                h.hash.values().for_each(|p| param_refs(p, out));
                // Inside `each`/`with` paths are relative to another value: not checked.
                if !matches!(helper_name, Some("each") | Some("with")) {
                    if let Some(t) = &h.template {
                        collect_refs(&t.elements, out);
                    }
                    if let Some(t) = &h.inverse {
                        collect_refs(&t.elements, out);
                    }
                }
            }
            _ => {}
        }
    }
}

fn template_error(e: &handlebars::TemplateError) -> String {
    let s = e.to_string();
    // The first line says what is wrong; the rest is a multi-line source excerpt.
    s.lines().next().unwrap_or("invalid template").trim().to_string()
}

fn convert_error(e: handlebars::RenderError) -> RenderError {
    use handlebars::RenderErrorReason as R;
    match e.reason() {
        R::MissingVariable(Some(path)) => RenderError::Missing(path.clone()),
        R::MissingVariable(None) => RenderError::Missing("(unknown)".into()),
        _ => RenderError::Failed(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx(v: Value) -> Context {
        Context::from(v)
    }

    #[test]
    fn single_path_keeps_json_type() {
        let mut ts = TemplateSet::new();
        let t = ts.compile("{{call.duration}}", Escape::Plain).unwrap();
        let c = ctx(json!({"call": {"duration": 125}}));
        assert_eq!(ts.render_value(&t, &c).unwrap(), json!(125));
        let t = ts.compile("{{call.duration}}s", Escape::Plain).unwrap();
        assert_eq!(ts.render_value(&t, &c).unwrap(), json!("125s"));
    }

    #[test]
    fn strict_missing_variable_names_it() {
        let mut ts = TemplateSet::new();
        let t = ts.compile("Hi {{call.nmae}}!", Escape::Plain).unwrap();
        let err = ts.render(&t, &ctx(json!({"call": {"name": "x"}}))).unwrap_err();
        assert!(err.to_string().contains("call.nmae"), "{err}");
        let t = ts.compile("{{call.nmae}}", Escape::Plain).unwrap();
        assert!(ts.render(&t, &ctx(json!({"call": {}}))).unwrap_err().to_string().contains("call.nmae"));
    }

    #[test]
    fn plain_does_not_html_escape_but_html_does() {
        let mut ts = TemplateSet::new();
        let c = ctx(json!({"v": "<b>&\"quote\""}));
        let p = ts.compile("x {{v}}", Escape::Plain).unwrap();
        assert_eq!(ts.render(&p, &c).unwrap(), "x <b>&\"quote\"");
        let h = ts.compile("x {{v}}", Escape::Html).unwrap();
        assert_eq!(ts.render(&h, &c).unwrap(), "x &lt;b&gt;&amp;&quot;quote&quot;");
    }

    #[test]
    fn url_values_are_percent_encoded() {
        let mut ts = TemplateSet::new();
        let t = ts.compile("http://{{host}}/x/{{id}}?q={{q}}", Escape::Url).unwrap();
        let c = ctx(json!({"host": "127.0.0.1:4010", "id": "a/../b", "q": "x&y=z", "base_url": "http://h:1"}));
        assert_eq!(ts.render(&t, &c).unwrap(), "http://127.0.0.1:4010/x/a%2F..%2Fb?q=x%26y%3Dz");
        // A leading expression supplies scheme and host and is not encoded.
        let t = ts.compile("{{base_url}}/x/{{id}}", Escape::Url).unwrap();
        assert_eq!(ts.render(&t, &c).unwrap(), "http://h:1/x/a%2F..%2Fb");
        assert_eq!(t.refs().len(), 2);
    }

    #[test]
    fn conditions_are_lenient_and_compose() {
        let mut ts = TemplateSet::new();
        let c = ctx(json!({"results": {"a": "1", "b": null}, "options": {"o": true}}));
        for (expr, want) in [
            ("results.a", true),
            ("results.b", false),
            ("not results.b", true),
            ("results.missing", false),
            ("and options.o (not results.b)", true),
        ] {
            let t = ts.compile_condition(expr).unwrap();
            assert_eq!(ts.truthy(&t, &c).unwrap(), want, "{expr}");
        }
        assert!(ts.compile_condition("{{x}}").is_err());
    }

    #[test]
    fn simple_templates_render_like_handlebars() {
        let mut ts = TemplateSet::new();
        let c = ctx(json!({"a": "x&y", "n": 5, "z": null, "o": {"k": 1}}));
        let t = ts.compile("[{{a}}|{{n}}|{{z}}|{{{a}}}]", Escape::Url).unwrap();
        assert!(t.parts.is_some());
        assert_eq!(ts.render(&t, &c).unwrap(), "[x%26y|5||x&y]");
        let t = ts.compile("<{{a}}>", Escape::Html).unwrap();
        assert_eq!(ts.render(&t, &c).unwrap(), "<x&amp;y>");
        let t = ts.compile("{{a}} and {{missing.x}}", Escape::Plain).unwrap();
        assert!(ts.render(&t, &c).unwrap_err().to_string().contains("missing.x"));
        // Helpers and blocks go through handlebars.
        let t = ts.compile("{{upper a}}-{{#if n}}y{{/if}}", Escape::Plain).unwrap();
        assert!(t.parts.is_none());
        assert_eq!(ts.render(&t, &c).unwrap(), "X&Y-y");
    }

    #[test]
    fn refs_are_collected() {
        let mut ts = TemplateSet::new();
        let t = ts
            .compile("{{md5 (concat fields.secret call.phone)}} {{#if results.x}}{{token}}{{/if}}", Escape::Plain)
            .unwrap();
        let refs: Vec<String> = t.refs().iter().map(|r| r.join(".")).collect();
        for want in ["fields.secret", "call.phone", "results.x", "token"] {
            assert!(refs.contains(&want.to_string()), "{want} not in {refs:?}");
        }
    }

    #[test]
    fn body_leaves_cannot_break_structure() {
        let mut ts = TemplateSet::new();
        let b = ts.compile_body(&json!({"a": "{{v}}", "b": ["x {{v}}", 3]})).unwrap();
        let evil = "\"}, \"admin\": true, \"x\": {\"\n{{token}}";
        let out = ts.render_body(&b, &ctx(json!({"v": evil}))).unwrap();
        assert_eq!(out, json!({"a": evil, "b": [format!("x {evil}"), 3]}));
    }
}
