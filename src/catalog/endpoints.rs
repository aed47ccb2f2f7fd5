//! Endpoints: compiles each endpoint's url, parameters, body, extraction, condition and
//! success rule, reporting every problem with its position.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use super::*;

pub(super) fn build_endpoints(b: &mut Builder, file: &Path, doc: EndpointsDoc, integration: &mut Integration) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_skip_handlebars() {
        assert_eq!(url_placeholders("{{base_url}}/calls/{id}/x/{other_id}"), vec!["id", "other_id"]);
        assert!(url_placeholders("{{base_url}}/calls").is_empty());
    }
}
