//! JSON Schema for the three YAML kinds, generated from the model, for editors.

use serde_json::Value;

use crate::model::{EndpointsDoc, IntegratorDoc, TemplateDoc};

/// The kinds a schema can be printed for.
pub const KINDS: [&str; 3] = ["template", "integrator", "endpoints"];

/// The JSON Schema of one kind.
pub fn schema_of(kind: &str) -> Option<Value> {
    let s = match kind {
        "template" => schemars::schema_for!(TemplateDoc),
        "integrator" => schemars::schema_for!(IntegratorDoc),
        "endpoints" => schemars::schema_for!(EndpointsDoc),
        _ => return None,
    };
    serde_json::to_value(s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_forbid_unknown_keys_and_list_fields() {
        let t = schema_of("integrator").unwrap();
        assert_eq!(t["additionalProperties"], Value::Bool(false));
        assert!(t["properties"]["host"].is_object());
        let e = schema_of("endpoints").unwrap();
        assert!(e.to_string().contains("hardParams"));
        assert!(schema_of("nope").is_none());
    }
}
