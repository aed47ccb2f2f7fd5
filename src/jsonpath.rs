//! JSONPath (RFC 9535) behind one small type: every path is parsed once, at load time,
//! and queried many times. The only module that touches `jsonpath-rust`.

use std::fmt;

use jsonpath_rust::parser::model::JpQuery;
use jsonpath_rust::parser::parse_json_path;
use jsonpath_rust::query::js_path_process;
use serde_json::Value;

/// A compiled JSONPath.
#[derive(Clone)]
pub struct JsonPath {
    source: String,
    query: JpQuery,
}

impl fmt::Debug for JsonPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JsonPath({})", self.source)
    }
}

impl JsonPath {
    /// Parses `source`; the error text says what is wrong with it.
    pub fn parse(source: &str) -> Result<JsonPath, String> {
        let query = parse_json_path(source).map_err(|e| e.to_string())?;
        Ok(JsonPath { source: source.to_string(), query })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Every match, in document order.
    pub fn all<'a>(&self, value: &'a Value) -> Vec<&'a Value> {
        match js_path_process(&self.query, value) {
            Ok(refs) => refs.into_iter().map(|r| r.val()).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// The first match that is not null.
    pub fn first<'a>(&self, value: &'a Value) -> Option<&'a Value> {
        self.all(value).into_iter().find(|v| !v.is_null())
    }

    /// Whether the path matches anything.
    pub fn matches(&self, value: &Value) -> bool {
        !self.all(value).is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn first_match_and_filters() {
        let body = json!({"results": [{"id": "7"}, {"id": "8"}], "data": [{"status": "error"}]});
        assert_eq!(JsonPath::parse("$.results[0].id").unwrap().first(&body), Some(&json!("7")));
        assert!(!JsonPath::parse("$.data[?@.status == 'success']").unwrap().matches(&body));
        assert!(JsonPath::parse("$.data[?@.status == 'error']").unwrap().matches(&body));
        assert_eq!(JsonPath::parse("$.missing").unwrap().first(&body), None);
    }

    #[test]
    fn bad_path_is_an_error() {
        assert!(JsonPath::parse("$.results[").is_err());
        assert!(JsonPath::parse("results").is_err());
    }
}
