//! Redaction: secret values (secret integrator fields, tokens, and every value derived from
//! them) are replaced by `***` in anything printed — dry-run output, logs, errors, metrics.

use std::sync::Arc;

/// What replaces a secret.
pub const MASK: &str = "***";
/// Shorter values are not masked as substrings (they would garble unrelated text); a field
/// marked secret is still masked whole where it is placed.
const MIN_LEN: usize = 4;

/// A set of secret strings to mask.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    secrets: Arc<Vec<String>>,
}

impl Redactor {
    pub fn new<I: IntoIterator<Item = String>>(secrets: I) -> Redactor {
        let mut v: Vec<String> = secrets.into_iter().filter(|s| s.len() >= MIN_LEN).collect();
        // Longest first, so a secret that contains another is masked whole.
        v.sort_by_key(|s| std::cmp::Reverse(s.len()));
        v.dedup();
        Redactor { secrets: Arc::new(v) }
    }

    /// A redactor that also masks `more`.
    #[must_use]
    pub fn with<I: IntoIterator<Item = String>>(&self, more: I) -> Redactor {
        let new: Vec<String> = more.into_iter().filter(|s| s.len() >= MIN_LEN && !self.secrets.contains(s)).collect();
        if new.is_empty() {
            return self.clone();
        }
        Redactor::new(self.secrets.iter().cloned().chain(new))
    }

    /// `text` with every secret replaced by `***`.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in self.secrets.iter() {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), MASK);
            }
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_every_occurrence_longest_first() {
        let r = Redactor::new(["sekret".to_string(), "sekret-token-123".to_string(), "ab".to_string()]);
        assert_eq!(r.redact("a sekret-token-123 b sekret ab"), "a *** b *** ab");
    }
}
