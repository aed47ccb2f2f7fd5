//! Runtime errors of a hook run, and the one place that maps each to an HTTP status and a
//! CLI exit code. Messages never carry secrets: values are redacted before they get here.

use serde_json::Value;

use crate::jsonpath::JsonPath;
use crate::resolve::ResolveError;
use crate::storage::StorageError;

/// CLI exit codes.
pub mod exit {
    /// Success.
    pub const OK: i32 = 0;
    /// The configuration or the input (call payload, arguments) is invalid.
    pub const INVALID: i32 = 2;
    /// The CRM refused, failed, or could not be reached.
    pub const CRM: i32 = 3;
    /// Local failure (storage, I/O).
    pub const INTERNAL: i32 = 4;
}

/// Why a hook failed.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("unknown integrator '{0}'")]
    UnknownIntegrator(String),
    #[error("integrator '{integrator}' has no endpoint for hook '{hook}'")]
    NoSteps { integrator: String, hook: String },
    #[error("bad call payload: {0}")]
    BadCall(String),
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error("endpoint '{endpoint}': the CRM answered {status}: {message}")]
    Crm { endpoint: String, status: u16, message: String, attempts: usize },
    #[error("endpoint '{endpoint}': {message}")]
    Transport { endpoint: String, message: String, attempts: usize },
    #[error("auth for '{integrator}': {message}")]
    Auth { integrator: String, message: String },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl HookError {
    /// The HTTP status the hook server answers with.
    pub fn http_status(&self) -> u16 {
        match self {
            HookError::UnknownIntegrator(_) => 404,
            HookError::NoSteps { .. } => 404,
            HookError::BadCall(_) => 422,
            HookError::Resolve(_) => 422,
            HookError::Crm { .. } | HookError::Transport { .. } | HookError::Auth { .. } => 502,
            HookError::Storage(_) => 503,
        }
    }

    /// The CLI's exit code.
    pub fn exit_code(&self) -> i32 {
        match self {
            HookError::UnknownIntegrator(_)
            | HookError::NoSteps { .. }
            | HookError::BadCall(_)
            | HookError::Resolve(_) => exit::INVALID,
            HookError::Crm { .. } | HookError::Transport { .. } | HookError::Auth { .. } => exit::CRM,
            HookError::Storage(_) => exit::INTERNAL,
        }
    }

    /// A short machine-readable kind for JSON errors.
    pub fn kind(&self) -> &'static str {
        match self {
            HookError::UnknownIntegrator(_) => "unknown_integrator",
            HookError::NoSteps { .. } => "unknown_hook",
            HookError::BadCall(_) => "bad_call",
            HookError::Resolve(_) => "unresolvable",
            HookError::Crm { .. } => "crm_error",
            HookError::Transport { .. } => "crm_unreachable",
            HookError::Auth { .. } => "auth_failed",
            HookError::Storage(_) => "storage",
        }
    }

    /// Whether trying again later may succeed (the outbox retries these).
    pub fn is_transient(&self) -> bool {
        match self {
            HookError::Crm { status, .. } => *status == 429 || *status == 408 || *status >= 500,
            HookError::Transport { .. } | HookError::Storage(_) => true,
            HookError::Auth { .. } => true,
            _ => false,
        }
    }
}

/// The CRM's own error text from a response body: the `message` rule when given, else the
/// usual fields (`message`, `error_description`, `error.message`, `error`), else the body.
pub fn crm_message(body: &Value, rule: Option<&JsonPath>) -> String {
    if let Some(v) = rule.and_then(|r| r.first(body)) {
        return text(v);
    }
    for p in [&["message"][..], &["error_description"], &["error", "message"], &["error"], &["errors", "0", "message"]]
    {
        if let Some(v) = crate::templating::lookup(body, p)
            && !v.is_null()
            && !v.is_object()
        {
            return text(v);
        }
    }
    let s = text(body);
    if s.len() > 300 { format!("{}…", &s[..s.floor_char_boundary(300)]) } else { s }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn crm_message_prefers_rule_then_known_fields() {
        let body = json!({"data": [{"message": "bad phone"}], "message": "top"});
        assert_eq!(crm_message(&body, Some(&JsonPath::parse("$.data[0].message").unwrap())), "bad phone");
        assert_eq!(crm_message(&body, None), "top");
        assert_eq!(crm_message(&json!({"error": {"message": "nope"}}), None), "nope");
    }
}
