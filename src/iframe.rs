//! The screen-pop page: a template's `iframe:` section rendered over one call's stored state.
//! Every value is HTML-escaped, secrets never reach the template data, and nothing external loads.

use std::fmt::Write as _;
use std::sync::LazyLock;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use handlebars::{Context, Handlebars};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::catalog::{Catalog, Integration, Integrator};
use crate::model::{FormField, FormFieldType, Iframe, IframeForm, IframeLink};
use crate::redact::Redactor;
use crate::resolve::CallState;
use crate::templating::{encode_url_value, helpers};

/// The screen-pop page for one call: the template's iframe config rendered over the call state.
///
/// Values are templates over the same data endpoint templates see (`base_url`, `host`,
/// `integrator`, `fields`, `options`, `results`, `objects`, `call`), except that secret fields
/// are blank, there is no `token`, and `call` is only `{"call_id": …}`. Rendering is lenient:
/// a missing value renders empty, and a template that fails shows an empty value and logs a
/// warning — a screen pop shows what it has.
#[must_use]
pub fn render_page(catalog: &Catalog, integrator: &Integrator, state: &CallState, call_id: &str) -> String {
    let integration = catalog.integrations.get(&integrator.integration);
    let renderer = Renderer {
        ctx: Context::from(page_data(integration, integrator, state, call_id)),
        redactor: Redactor::new(integrator.secrets.iter().cloned()),
        integrator: &integrator.id,
    };
    let empty = Iframe::default();
    let iframe = integrator.iframe.as_ref().unwrap_or(&empty);
    let title = iframe
        .title
        .clone()
        .or_else(|| integration.map(|i| i.label.clone()))
        .unwrap_or_else(|| integrator.integration.clone());

    let mut body = String::new();
    let _ = writeln!(
        body,
        "<header><h1>{}</h1><p class=\"call\">Call <span class=\"call-id\">{}</span></p></header>",
        esc(&title),
        esc(call_id)
    );
    if iframe.fields.is_empty() && iframe.links.is_empty() && iframe.forms.is_empty() {
        body.push_str("<p class=\"empty-page\">No screen-pop is configured for this integration.</p>\n");
    }
    if !iframe.fields.is_empty() {
        body.push_str("<dl class=\"fields\">\n");
        for f in &iframe.fields {
            let value = renderer.text(&f.value, &format!("field '{}'", f.label));
            let _ = writeln!(body, "<div class=\"row\"><dt>{}</dt><dd>{}</dd></div>", esc(&f.label), esc(&value));
        }
        body.push_str("</dl>\n");
    }
    if !iframe.links.is_empty() {
        body.push_str("<nav class=\"links\">\n");
        for l in &iframe.links {
            body.push_str(&link_html(&renderer, l));
        }
        body.push_str("</nav>\n");
    }
    for (i, form) in iframe.forms.iter().enumerate() {
        body.push_str(&form_html(&renderer, &integrator.id, call_id, i, form));
    }

    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"{csp}\">\n\
         <meta name=\"referrer\" content=\"no-referrer\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n{body}</main>\n\
         <script>{SCRIPT}</script>\n</body>\n</html>\n",
        csp = esc(&CSP),
        title = esc(&title),
    )
}

/// The template data of the page: endpoint templates' shape, without secrets or tokens.
fn page_data(integration: Option<&Integration>, integrator: &Integrator, state: &CallState, call_id: &str) -> Value {
    let is_secret = |name: &str, v: &Value| {
        integration.and_then(|i| i.param(name)).is_some_and(|p| p.secret)
            || v.as_str().is_some_and(|s| integrator.secrets.iter().any(|x| x == s))
    };
    let fields: Map<String, Value> = integrator
        .fields
        .iter()
        .map(|(k, v)| (k.clone(), if is_secret(k, v) { Value::String(String::new()) } else { v.clone() }))
        .collect();
    let mut results = Map::new();
    for n in integration.iter().flat_map(|i| &i.result_names) {
        results.insert(n.clone(), Value::Null);
    }
    for (k, v) in &state.results {
        results.insert(k.clone(), v.clone());
    }
    json!({
        "base_url": integrator.base_url,
        "host": integrator.host,
        "integrator": { "id": integrator.id, "callcenter_id": integrator.callcenter_id },
        "fields": fields,
        "options": integrator.options,
        "call": { "call_id": call_id },
        "results": results,
        "objects": state.objects,
    })
}

/// Renders one page's templates, lenient and logged.
struct Renderer<'a> {
    ctx: Context,
    redactor: Redactor,
    integrator: &'a str,
}

impl Renderer<'_> {
    /// A value as plain text (the caller HTML-escapes it where it is written).
    fn text(&self, source: &str, what: &str) -> String {
        self.run(&TEXT, source, what)
    }

    /// A link target: values percent-encoded, except a leading `{{…}}` that supplies scheme and
    /// host (`{{base_url}}/…`, or a whole URL the CRM returned), as in endpoint URLs.
    fn url(&self, source: &str, what: &str) -> String {
        if source.starts_with("{{")
            && !source.starts_with("{{#")
            && !source.starts_with("{{{")
            && let Some(end) = source.find("}}")
        {
            let (head, rest) = source.split_at(end + 2);
            return self.run(&TEXT, head, what) + &self.run(&URL, rest, what);
        }
        self.run(&URL, source, what)
    }

    fn run(&self, reg: &Handlebars<'static>, source: &str, what: &str) -> String {
        if !source.contains("{{") {
            return source.to_string();
        }
        match reg.render_template_with_context(source, &self.ctx) {
            Ok(s) => self.redactor.redact(&s),
            Err(e) => {
                let error = self.redactor.redact(&e.to_string());
                tracing::warn!(integrator = %self.integrator, what, %error, "iframe template failed; showing an empty value");
                String::new()
            }
        }
    }
}

/// Lenient registries: a missing value is empty, not an error.
fn registry(escape: fn(&str) -> String) -> Handlebars<'static> {
    let mut h = Handlebars::new();
    h.set_strict_mode(false);
    helpers::register(&mut h);
    h.register_escape_fn(escape);
    h
}

/// Renders text unescaped: the page escapes the whole result (template text included), so a
/// `{{{triple}}}` or a helper's output cannot smuggle markup in.
static TEXT: LazyLock<Handlebars<'static>> = LazyLock::new(|| registry(handlebars::no_escape));
/// Percent-encodes values rendered into link targets.
static URL: LazyLock<Handlebars<'static>> = LazyLock::new(|| registry(link_value));

fn link_value(v: &str) -> String {
    // `encode_url_value` marks dot segments for the request builder to refuse; a link just
    // encodes them so they stay a literal segment.
    if v == "." || v == ".." { v.replace('.', "%2E") } else { encode_url_value(v) }
}

/// A link when its target is http(s), mailto or tel; otherwise its label as text.
fn link_html(r: &Renderer, l: &IframeLink) -> String {
    let rendered = r.url(&l.url, &format!("link '{}'", l.label));
    match safe_href(&rendered) {
        Some(href) => format!(
            "<a class=\"link\" href=\"{}\" target=\"_blank\" rel=\"noopener noreferrer\">{}</a>\n",
            esc(&href),
            esc(&l.label)
        ),
        None => {
            if !rendered.trim().is_empty() {
                tracing::warn!(integrator = %r.integrator, link = %l.label, "iframe link is not http, https, mailto or tel; shown as text");
            }
            format!("<span class=\"link disabled\">{}</span>\n", esc(&l.label))
        }
    }
}

/// The normalised URL when it is absolute and its scheme is one a screen pop may open.
fn safe_href(s: &str) -> Option<String> {
    let u = url::Url::parse(s.trim()).ok()?;
    matches!(u.scheme(), "http" | "https" | "mailto" | "tel").then(|| u.to_string())
}

fn form_html(r: &Renderer, integrator_id: &str, call_id: &str, index: usize, form: &IframeForm) -> String {
    let hook = &form.hook.value;
    let action = format!("/v1/integrators/{}/hooks/{}", link_value(integrator_id), link_value(hook));
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<section class=\"hook-form\" data-url=\"{}\" data-call-id=\"{}\">\n<h2>{}</h2>\n\
         <form method=\"post\" action=\"{}\" data-hook=\"{}\">\n\
         <input type=\"hidden\" name=\"call_id\" value=\"{}\">",
        esc(&action),
        esc(call_id),
        esc(&form.title),
        esc(&action),
        esc(hook),
        esc(call_id)
    );
    for (j, f) in form.fields.iter().enumerate() {
        out.push_str(&field_html(r, index, j, f));
    }
    // Enabled by the script: only it can post the JSON the hook expects.
    out.push_str(
        "<div class=\"actions\"><button type=\"submit\" disabled>Send</button>\
         <output class=\"status\" role=\"status\" aria-live=\"polite\"></output></div>\n</form>\n</section>\n",
    );
    out
}

fn field_html(r: &Renderer, form: usize, index: usize, f: &FormField) -> String {
    let id = format!("f{form}-{index}");
    let value = f.value.as_deref().map(|v| r.text(v, &format!("form field '{}'", f.name))).unwrap_or_default();
    let required = if f.required { " required" } else { "" };
    let mark = if f.required { "<span class=\"req\" aria-hidden=\"true\">*</span>" } else { "" };
    let name = esc(&f.name);
    let control = match f.kind {
        FormFieldType::Textarea => {
            format!("<textarea id=\"{id}\" name=\"{name}\" data-field rows=\"3\"{required}>{}</textarea>", esc(&value))
        }
        FormFieldType::Select => {
            let mut s = format!("<select id=\"{id}\" name=\"{name}\" data-field{required}>");
            if !f.options.contains(&value) {
                s.push_str("<option value=\"\" selected>—</option>");
            }
            for o in &f.options {
                let selected = if *o == value { " selected" } else { "" };
                let _ = write!(s, "<option value=\"{}\"{selected}>{}</option>", esc(o), esc(o));
            }
            s.push_str("</select>");
            s
        }
        FormFieldType::Text | FormFieldType::Email | FormFieldType::Tel => {
            let kind = match f.kind {
                FormFieldType::Email => "email",
                FormFieldType::Tel => "tel",
                _ => "text",
            };
            format!(
                "<input id=\"{id}\" name=\"{name}\" type=\"{kind}\" value=\"{}\" data-field{required}>",
                esc(&value)
            )
        }
    };
    format!("<label for=\"{id}\">{}{mark}</label>\n{control}\n", esc(&f.label))
}

/// Escapes text and double- or single-quoted attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `'sha256-…'` of an inline element's exact text, for the CSP.
fn csp_hash(text: &str) -> String {
    format!("'sha256-{}'", BASE64.encode(Sha256::digest(text.as_bytes())))
}

/// Only this page's own inline script and style run; requests go back to this server only.
static CSP: LazyLock<String> = LazyLock::new(|| {
    format!(
        "default-src 'none'; script-src 'self' {}; style-src 'self' {}; connect-src 'self'; img-src 'self' data:; \
         form-action 'self'; base-uri 'none'",
        csp_hash(SCRIPT),
        csp_hash(STYLE)
    )
});

const STYLE: &str = r#"
:root { color-scheme: light; --fg: #1f2933; --muted: #616e7c; --line: #e4e7eb; --accent: #2563eb; --bg: #f5f7fa; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--fg); font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
main { max-width: 720px; margin: 0 auto; padding: 16px; }
header { display: flex; align-items: baseline; justify-content: space-between; gap: 12px; border-bottom: 2px solid var(--accent); margin-bottom: 12px; }
h1 { font-size: 18px; margin: 0 0 6px; }
h2 { font-size: 15px; margin: 0 0 10px; }
.call { margin: 0; color: var(--muted); font-size: 12px; }
.call-id { font-family: ui-monospace, Menlo, Consolas, monospace; }
.fields, .hook-form { background: #fff; border: 1px solid var(--line); border-radius: 8px; margin: 0 0 12px; }
.fields { padding: 4px 14px; }
.row { display: grid; grid-template-columns: minmax(90px, 32%) 1fr; gap: 12px; padding: 7px 0; border-bottom: 1px solid var(--line); }
.row:last-child { border-bottom: 0; }
dt { color: var(--muted); }
dd { margin: 0; font-weight: 600; overflow-wrap: anywhere; white-space: pre-wrap; }
dd:empty::before { content: "—"; color: var(--muted); font-weight: 400; }
.links { display: flex; flex-wrap: wrap; gap: 8px; margin: 0 0 12px; }
.link { display: inline-block; padding: 5px 12px; border: 1px solid var(--accent); border-radius: 999px; color: var(--accent); text-decoration: none; background: #fff; }
a.link:hover { background: var(--accent); color: #fff; }
.link.disabled { border-style: dashed; border-color: #cbd2d9; color: var(--muted); cursor: not-allowed; }
.hook-form { padding: 12px 14px; }
form { display: grid; grid-template-columns: minmax(90px, 32%) 1fr; gap: 8px 12px; align-items: center; margin: 0; }
label { color: var(--muted); }
.req { color: #c81e1e; margin-left: 2px; }
input, textarea, select { width: 100%; font: inherit; padding: 6px 8px; border: 1px solid #cbd2d9; border-radius: 6px; background: #fff; color: inherit; }
textarea { resize: vertical; }
input:focus, textarea:focus, select:focus { outline: 2px solid var(--accent); outline-offset: -1px; }
.actions { grid-column: 2; display: flex; align-items: center; gap: 12px; }
button { font: inherit; padding: 6px 16px; border: 0; border-radius: 6px; background: var(--accent); color: #fff; cursor: pointer; }
button:disabled { opacity: .5; cursor: default; }
.status { color: var(--muted); }
.status.ok { color: #0e7c3a; }
.status.error { color: #c81e1e; }
.empty-page { color: var(--muted); }
@media (max-width: 420px) { .row, form { grid-template-columns: 1fr; gap: 4px; } .actions { grid-column: 1; } }
"#;

// Reads nothing from the forms' own properties (a field named `action` or `submit` would shadow
// them): the URL and call id come from the wrapping section's data attributes.
const SCRIPT: &str = r#"
(function () {
  "use strict";
  var key = new URLSearchParams(location.search).get("key");
  function describe(ok, status, body) {
    var b = body && typeof body === "object" ? body : {};
    var err = b.error && typeof b.error === "object" ? b.error.message : b.error;
    var text = b.outcome || b.status || err || b.message;
    if (typeof text !== "string") { text = ok ? "done" : "failed"; }
    return ok ? "Sent: " + text : "Error " + status + ": " + text;
  }
  document.querySelectorAll("section.hook-form").forEach(function (section) {
    var button = section.querySelector("button[type=submit]");
    var status = section.querySelector(".status");
    button.disabled = false;
    section.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var values = {};
      section.querySelectorAll("[data-field]").forEach(function (el) { values[el.name] = el.value; });
      var headers = { "Content-Type": "application/json" };
      if (key) { headers["Authorization"] = "Bearer " + key; }
      button.disabled = true;
      status.className = "status";
      status.textContent = "Sending…";
      fetch(section.dataset.url, {
        method: "POST",
        headers: headers,
        body: JSON.stringify({ call_id: section.dataset.callId, form: values })
      }).then(function (r) {
        return r.json().catch(function () { return null; }).then(function (body) {
          status.className = "status " + (r.ok ? "ok" : "error");
          status.textContent = describe(r.ok, r.status, body);
        });
      }).catch(function (e) {
        status.className = "status error";
        status.textContent = "Not sent: " + e.message;
      }).then(function () { button.disabled = false; });
    });
  });
})();
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const TEMPLATE: &str = r#"
name: demo
label: Demo CRM
type: CRM
parameters:
  - { name: api_key, in: header, key: X-Api-Key, secret: true }
  - { name: portal }
iframe:
  title: Demo <CRM>
  fields:
    - { label: Name, value: "{{objects.contact.name}}" }
    - { label: Key, value: "{{fields.api_key}}" }
    - { label: Portal, value: "{{fields.portal}}" }
    - { label: Missing, value: "{{objects.nothing.here}}" }
    - { label: Broken, value: "{{#if}}" }
    - { label: Echo, value: "{{objects.contact.note}}" }
  links:
    - { label: Open, url: "https://crm.example/{{fields.portal}}/c/{{results.contact_id}}?k={{fields.api_key}}" }
    - { label: Evil, url: "javascript:alert(1)" }
    - { label: Evil2, url: "{{objects.contact.url}}" }
    - { label: Mail, url: "mailto:{{objects.contact.email}}" }
  forms:
    - hook: handleCreateTicket
      title: New ticket
      fields:
        - { name: subject, label: Subject, required: true, value: "Call from {{objects.contact.name}}" }
        - { name: secret, label: Secret, value: "{{fields.api_key}}" }
        - { name: priority, label: Priority, type: select, options: [low, high], value: high }
        - { name: notes, label: Notes, type: textarea }
"#;

    const INTEGRATOR: &str = r#"
id: demo-1
integration: demo
callcenterId: cc-1
host: crm.example
fields: { api_key: "sk-TOP-SECRET-42", portal: "p9" }
"#;

    fn catalog(dir: &Path) -> Catalog {
        for (rel, text) in [("templates/demo.yaml", TEMPLATE), ("integrators/demo-1.yaml", INTEGRATOR)] {
            let p = dir.join(rel);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, text).expect("write");
        }
        match Catalog::load_with_env(dir, &|_| None) {
            Ok(c) => c,
            Err(d) => panic!("invalid test configuration:\n{d}"),
        }
    }

    fn page(state: CallState, call_id: &str) -> String {
        let dir = tempfile::tempdir().expect("tempdir");
        let cat = catalog(dir.path());
        let integrator = cat.integrator("demo-1").expect("integrator").clone();
        render_page(&cat, &integrator, &state, call_id)
    }

    fn state(contact: Value) -> CallState {
        let mut s = CallState::default();
        s.objects.insert("contact".into(), contact);
        s.results.insert("contact_id".into(), json!("c/../7?x=1"));
        s
    }

    #[test]
    fn object_values_are_html_escaped() {
        let html = page(state(json!({"name": "Ann <script>alert(1)</script> & \"co\""})), "call-1");
        assert!(html.contains("<dd>Ann &lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;co&quot;</dd>"), "{html}");
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(html.contains("value=\"Call from Ann &lt;script&gt;"), "form initial value escaped: {html}");
        assert!(html.contains("<title>Demo &lt;CRM&gt;</title>"), "{html}");
    }

    #[test]
    fn secret_fields_are_never_rendered() {
        let html = page(state(json!({"name": "Ann", "note": "echo sk-TOP-SECRET-42"})), "call-1");
        assert!(!html.contains("sk-TOP-SECRET-42"), "{html}");
        assert!(!html.contains("TOP-SECRET"), "{html}");
        assert!(html.contains("<dt>Key</dt><dd></dd>"), "{html}");
        assert!(html.contains("<dd>p9</dd>"), "non-secret fields still render: {html}");
        assert!(html.contains("<dd>echo ***</dd>"), "a secret echoed by the CRM is masked: {html}");
    }

    #[test]
    fn non_web_link_schemes_are_not_emitted_as_links() {
        let html = page(state(json!({"url": " JaVaScRiPt:alert(document.cookie)", "email": "ann@example.com"})), "c");
        assert!(!html.to_ascii_lowercase().contains("javascript:"), "{html}");
        assert!(html.contains("<span class=\"link disabled\">Evil</span>"), "{html}");
        assert!(html.contains("<span class=\"link disabled\">Evil2</span>"), "{html}");
        assert!(html.contains("href=\"mailto:ann@example.com\""), "{html}");
        assert!(html.contains("rel=\"noopener noreferrer\""), "{html}");
    }

    #[test]
    fn link_values_are_percent_encoded() {
        let html = page(state(json!({})), "c");
        assert!(html.contains("href=\"https://crm.example/p9/c/c%2F..%2F7%3Fx%3D1?k=\""), "{html}");
    }

    #[test]
    fn missing_or_broken_templates_render_empty() {
        let html = page(CallState::default(), "c");
        assert!(html.contains("<dt>Missing</dt><dd></dd>"), "{html}");
        assert!(html.contains("<dt>Broken</dt><dd></dd>"), "{html}");
        assert!(html.contains("<dt>Name</dt><dd></dd>"), "{html}");
    }

    #[test]
    fn forms_post_to_their_hook_with_the_call_id() {
        let html = page(state(json!({"name": "Ann"})), "id\"><b>x");
        assert!(html.contains("data-url=\"/v1/integrators/demo-1/hooks/handleCreateTicket\""), "{html}");
        assert!(html.contains("method=\"post\""), "{html}");
        assert!(html.contains("<input type=\"hidden\" name=\"call_id\" value=\"id&quot;&gt;&lt;b&gt;x\">"), "{html}");
        assert!(!html.contains("<b>x"), "{html}");
        assert!(html.contains("<option value=\"high\" selected>high</option>"), "{html}");
        assert!(html.contains("name=\"subject\" type=\"text\" value=\"Call from Ann\" data-field required"), "{html}");
        assert!(html.contains("<textarea id=\"f0-3\" name=\"notes\" data-field rows=\"3\"></textarea>"), "{html}");
    }

    #[test]
    fn csp_allows_exactly_the_inline_script_and_style() {
        let html = page(CallState::default(), "c");
        let between = |open: &str, close: &str| {
            let start = html.find(open).expect("open tag") + open.len();
            let end = start + html[start..].find(close).expect("close tag");
            html[start..end].to_string()
        };
        let csp = CSP.as_str();
        assert!(csp.contains(&csp_hash(&between("<script>", "</script>"))), "{csp}");
        assert!(csp.contains(&csp_hash(&between("<style>", "</style>"))), "{csp}");
        assert!(csp.contains("connect-src 'self'") && csp.contains("default-src 'none'"), "{csp}");
        assert!(!csp.contains("unsafe"), "{csp}");
        assert!(html.contains("http-equiv=\"Content-Security-Policy\""));
    }
}
