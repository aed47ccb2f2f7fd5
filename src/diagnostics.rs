//! Configuration errors that point at a place in a YAML file, Hurl-style:
//! `file:line:column: what is wrong — expected …; hint: did you mean …?`

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_saphyr::Location;

/// A position in a configuration file (1-based; 0 when unknown).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pos {
    pub file: PathBuf,
    pub line: u64,
    pub column: u64,
}

impl Pos {
    pub fn new(file: &Path, loc: Location) -> Pos {
        Pos { file: file.to_path_buf(), line: loc.line(), column: loc.column() }
    }
    pub fn file_only(file: &Path) -> Pos {
        Pos { file: file.to_path_buf(), line: 0, column: 0 }
    }
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.file.display())
        } else {
            write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
        }
    }
}

/// One configuration error.
#[derive(Debug, Clone, Serialize)]
pub struct Diagnostic {
    pub pos: Pos,
    /// What is wrong.
    pub message: String,
    /// What was expected, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
    /// How to fix it (often a "did you mean").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn new(pos: Pos, message: impl Into<String>) -> Diagnostic {
        Diagnostic { pos, message: message.into(), expected: None, hint: None }
    }
    #[must_use]
    pub fn expected(mut self, e: impl Into<String>) -> Diagnostic {
        self.expected = Some(e.into());
        self
    }
    #[must_use]
    pub fn hint(mut self, h: impl Into<String>) -> Diagnostic {
        self.hint = Some(h.into());
        self
    }
    #[must_use]
    pub fn hint_opt(mut self, h: Option<String>) -> Diagnostic {
        if h.is_some() {
            self.hint = h;
        }
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: error: {}", self.pos, self.message)?;
        if let Some(e) = &self.expected {
            write!(f, "\n  expected: {e}")?;
        }
        if let Some(h) = &self.hint {
            write!(f, "\n  hint: {h}")?;
        }
        Ok(())
    }
}

/// Every error found in a configuration tree.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn push(&mut self, d: Diagnostic) {
        self.0.push(d);
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.0 {
            writeln!(f, "{d}")?;
        }
        write!(f, "{} error(s)", self.0.len())
    }
}

impl std::error::Error for Diagnostics {}

/// The closest of `candidates` to `name`, phrased as a hint, when one is close enough.
pub fn did_you_mean<'a, I>(name: &str, candidates: I) -> Option<String>
where
    I: IntoIterator<Item = &'a str>,
{
    let mut best: Option<(f64, &str)> = None;
    for c in candidates {
        let score = strsim::jaro_winkler(&name.to_lowercase(), &c.to_lowercase());
        if score > best.map_or(0.0, |b| b.0) {
            best = Some((score, c));
        }
    }
    match best {
        Some((score, c)) if score >= 0.75 => Some(format!("did you mean '{c}'?")),
        _ => None,
    }
}

/// A list of names for an "expected one of" line.
pub fn one_of<'a, I: IntoIterator<Item = &'a str>>(names: I) -> String {
    let v: Vec<String> = names.into_iter().map(|n| format!("'{n}'")).collect();
    if v.is_empty() { "nothing is defined".to_string() } else { format!("one of {}", v.join(", ")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names_only() {
        assert_eq!(did_you_mean("hots", ["host", "fields"]), Some("did you mean 'host'?".into()));
        assert_eq!(did_you_mean("zzz", ["host", "fields"]), None);
    }

    #[test]
    fn display_has_position_expected_and_hint() {
        let d = Diagnostic::new(Pos { file: "a.yaml".into(), line: 3, column: 5 }, "unknown field 'hots'")
            .expected("one of 'host'")
            .hint("did you mean 'host'?");
        assert_eq!(
            d.to_string(),
            "a.yaml:3:5: error: unknown field 'hots'\n  expected: one of 'host'\n  hint: did you mean 'host'?"
        );
    }
}
