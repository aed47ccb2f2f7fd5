//! Integrators: one tenant's fields (environment read, defaults set, secrets noted), options,
//! API keys, and info/iframe merged over the template's.

use std::path::Path;

use serde_json::{Map, Value};

use super::*;

pub(super) fn build_integrator(
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
        redactor: crate::redact::Redactor::new(secrets.iter().cloned()),
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
