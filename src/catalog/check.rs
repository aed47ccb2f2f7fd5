//! Cross-references within an integration: every variable a template reads, every field,
//! result and option a parameter names, path placeholders; and which values are secret.

use std::collections::{BTreeSet, HashSet};

use super::*;

/// Cross-reference checks within one integration; also derives secrecy and token use.
pub(super) fn check_integration(b: &mut Builder, integration: &mut Integration) {
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
