//! A resolved request — method, URL, headers, body — ready to send, and its printable forms
//! (readable HTTP and curl), always redacted.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::model::Method;
use crate::redact::Redactor;

/// The body of a request.
#[derive(Debug, Clone, PartialEq)]
pub enum RequestBody {
    Json(Value),
    Form(Vec<(String, String)>),
}

impl RequestBody {
    /// The bytes sent on the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            RequestBody::Json(v) => serde_json::to_vec(v).unwrap_or_default(),
            RequestBody::Form(pairs) => {
                url::form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish().into_bytes()
            }
        }
    }
}

/// One request, resolved from an endpoint for one integrator and one call.
#[derive(Debug, Clone)]
pub struct Request {
    pub endpoint: String,
    pub method: Method,
    pub url: url::Url,
    pub headers: Vec<(String, String)>,
    pub body: Option<RequestBody>,
    pub timeout: Duration,
    /// Masks the secrets this request carries.
    pub redactor: Redactor,
}

/// A redacted, serialisable view of a request (dry-run `--output json`, run reports).
#[derive(Debug, Clone, Serialize)]
pub struct RequestView {
    pub endpoint: String,
    pub method: &'static str,
    pub url: String,
    pub headers: Vec<(String, String)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The URL with secrets masked.
    pub fn redacted_url(&self) -> String {
        self.redactor.redact(self.url.as_str())
    }

    /// The redacted view.
    pub fn view(&self) -> RequestView {
        let r = &self.redactor;
        RequestView {
            endpoint: self.endpoint.clone(),
            method: self.method.as_str(),
            url: self.redacted_url(),
            headers: self.headers.iter().map(|(k, v)| (k.clone(), r.redact(v))).collect(),
            body: self.body.as_ref().map(|b| match b {
                RequestBody::Json(v) => redact_value(r, v),
                RequestBody::Form(pairs) => {
                    Value::Object(pairs.iter().map(|(k, v)| (k.clone(), Value::String(r.redact(v)))).collect())
                }
            }),
        }
    }

    /// Readable HTTP (redacted), as in an `.http` file.
    pub fn to_http(&self) -> String {
        self.view().to_http()
    }

    /// A curl command line (redacted).
    pub fn to_curl(&self) -> String {
        self.view().to_curl()
    }
}

impl RequestView {
    fn is_form(&self) -> bool {
        self.headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("content-type") && v.starts_with("application/x-www-form-urlencoded"))
    }

    fn body_text(&self, pretty: bool) -> Option<String> {
        let b = self.body.as_ref()?;
        if self.is_form() {
            let mut ser = url::form_urlencoded::Serializer::new(String::new());
            if let Value::Object(m) = b {
                for (k, v) in m {
                    ser.append_pair(k, v.as_str().unwrap_or_default());
                }
            }
            Some(ser.finish())
        } else if pretty {
            serde_json::to_string_pretty(b).ok()
        } else {
            serde_json::to_string(b).ok()
        }
    }

    /// Readable HTTP, as in an `.http` file: request line, headers, blank line, body.
    pub fn to_http(&self) -> String {
        let mut out = format!("{} {}\n", self.method, self.url);
        for (k, val) in &self.headers {
            let _ = writeln!(out, "{k}: {val}");
        }
        if let Some(body) = self.body_text(true) {
            out.push('\n');
            out.push_str(&body);
            out.push('\n');
        }
        out
    }

    /// A curl command line that sends the same request.
    pub fn to_curl(&self) -> String {
        let mut out = format!("curl -sS -X {} {}", self.method, shell_quote(&self.url));
        for (k, val) in &self.headers {
            let _ = write!(out, " \\\n  -H {}", shell_quote(&format!("{k}: {val}")));
        }
        if let Some(body) = self.body_text(false) {
            let _ = write!(out, " \\\n  --data-raw {}", shell_quote(&body));
        }
        out
    }
}

/// A JSON value with every string leaf redacted.
pub fn redact_value(r: &Redactor, v: &Value) -> Value {
    if r.is_empty() {
        return v.clone();
    }
    match v {
        Value::String(s) => Value::String(r.redact(s)),
        Value::Array(a) => Value::Array(a.iter().map(|x| redact_value(r, x)).collect()),
        Value::Object(m) => Value::Object(m.iter().map(|(k, x)| (k.clone(), redact_value(r, x))).collect()),
        other => other.clone(),
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn req() -> Request {
        Request {
            endpoint: "e".into(),
            method: Method::Post,
            url: url::Url::parse("https://h/x?api_token=s3cret-key").unwrap(),
            headers: vec![("Authorization".into(), "Bearer tok-abcdef".into())],
            body: Some(RequestBody::Json(json!({"a": "it's s3cret-key"}))),
            timeout: Duration::from_secs(1),
            redactor: Redactor::new(["s3cret-key".to_string(), "tok-abcdef".to_string()]),
        }
    }

    #[test]
    fn http_and_curl_are_redacted() {
        let r = req();
        for text in [r.to_http(), r.to_curl()] {
            assert!(!text.contains("s3cret-key") && !text.contains("tok-abcdef"), "{text}");
            assert!(text.contains("Bearer ***"), "{text}");
        }
        assert!(r.to_curl().contains(r#"'{"a":"it'\''s ***"}'"#), "{}", r.to_curl());
    }
}
