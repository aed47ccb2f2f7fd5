//! Loading: reads the three folders and parses each YAML file into the model, turning
//! parser errors into positioned diagnostics. Cross-file checks live in `catalog`.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use crate::diagnostics::{Diagnostic, Diagnostics, Pos, did_you_mean, one_of};
use crate::model::{EndpointsDoc, IntegratorDoc, TemplateDoc};

/// A parsed document and the file it came from.
#[derive(Debug)]
pub struct Loaded<T> {
    pub file: PathBuf,
    pub doc: T,
}

/// Every document of a configuration tree that parsed.
#[derive(Debug, Default)]
pub struct Tree {
    pub templates: Vec<Loaded<TemplateDoc>>,
    pub integrators: Vec<Loaded<IntegratorDoc>>,
    pub endpoints: Vec<Loaded<EndpointsDoc>>,
}

/// Reads `root/templates`, `root/integrators` and `root/endpoints`. Files that fail to parse
/// are reported in `diags` and left out of the tree.
pub fn load_tree(root: &Path, diags: &mut Diagnostics) -> Tree {
    let mut tree = Tree::default();
    let mut any = false;
    for (dir, kind) in [("templates", 0), ("integrators", 1), ("endpoints", 2)] {
        let folder = root.join(dir);
        if !folder.is_dir() {
            continue;
        }
        any = true;
        for file in yaml_files(&folder, diags) {
            let text = match std::fs::read_to_string(&file) {
                Ok(t) => t,
                Err(e) => {
                    diags.push(Diagnostic::new(Pos::file_only(&file), format!("cannot read file: {e}")));
                    continue;
                }
            };
            match kind {
                0 => push(&mut tree.templates, parse(&file, &text, diags)),
                1 => push(&mut tree.integrators, parse(&file, &text, diags)),
                _ => push(&mut tree.endpoints, parse(&file, &text, diags)),
            }
        }
    }
    if !any {
        diags.push(
            Diagnostic::new(Pos::file_only(root), "no configuration here")
                .expected("folders 'templates/', 'integrators/' and 'endpoints/'")
                .hint("pass the folder that holds them, e.g. `callbridge validate path/to/config`"),
        );
    }
    tree
}

fn push<T>(v: &mut Vec<Loaded<T>>, item: Option<Loaded<T>>) {
    if let Some(i) = item {
        v.push(i);
    }
}

fn yaml_files(folder: &Path, diags: &mut Diagnostics) -> Vec<PathBuf> {
    let mut files = Vec::new();
    match std::fs::read_dir(folder) {
        Ok(rd) => {
            for entry in rd.flatten() {
                let p = entry.path();
                let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
                if p.is_file() && (ext == "yaml" || ext == "yml") {
                    files.push(p);
                }
            }
        }
        Err(e) => diags.push(Diagnostic::new(Pos::file_only(folder), format!("cannot read folder: {e}"))),
    }
    files.sort();
    files
}

/// Parses one document; a YAML or schema error becomes a positioned diagnostic.
pub fn parse<T: DeserializeOwned>(file: &Path, text: &str, diags: &mut Diagnostics) -> Option<Loaded<T>> {
    let opts = serde_saphyr::options! { with_snippet: false };
    match serde_saphyr::from_str_with_options::<T>(text, opts) {
        Ok(doc) => Some(Loaded { file: file.to_path_buf(), doc }),
        Err(e) => {
            diags.push(yaml_diagnostic(file, &e));
            None
        }
    }
}

fn yaml_diagnostic(file: &Path, e: &serde_saphyr::Error) -> Diagnostic {
    let e = e.without_snippet();
    let pos = match e.location() {
        Some(loc) => Pos::new(file, loc),
        None => Pos::file_only(file),
    };
    let raw = e.to_string();
    // The parser appends the position in prose; we print it in front as file:line:col.
    let msg = match raw.find(" at line ") {
        Some(i) => raw[..i].to_string(),
        None => raw,
    };
    // serde's "unknown field `x`, expected one of `a`, `b`" → message, expected and hint.
    if let Some(rest) = msg.strip_prefix("unknown field `").or_else(|| msg.strip_prefix("unknown variant `")) {
        let what = if msg.starts_with("unknown field") { "field" } else { "value" };
        if let Some((name, tail)) = rest.split_once('`') {
            let list = tail.trim_start_matches(',').trim().trim_start_matches("expected").trim();
            let list = list.strip_prefix("one of").unwrap_or(list).trim();
            let names: Vec<String> = list
                .split(", ")
                .map(|n| n.trim_matches(|c| c == '`' || c == '\'' || c == ' ').to_string())
                .filter(|n| !n.is_empty())
                .collect();
            let expected =
                if names.is_empty() { "no fields here".to_string() } else { one_of(names.iter().map(String::as_str)) };
            return Diagnostic::new(pos, format!("unknown {what} '{name}'"))
                .expected(expected)
                .hint_opt(did_you_mean(name, names.iter().map(String::as_str)));
        }
    }
    if let Some(rest) = msg.strip_prefix("duplicate mapping key: ") {
        let key = rest.split(',').next().unwrap_or(rest).trim();
        return Diagnostic::new(pos, format!("duplicate key '{key}'"))
            .hint("a key may appear once per mapping; remove one of them");
    }
    let friendly = match msg.as_str() {
        "expected sequence start" => Some("expected a list here"),
        "expected mapping start" => Some("expected a mapping (key: value) here"),
        _ => None,
    };
    if let Some(f) = friendly {
        return Diagnostic::new(pos, f.to_string())
            .hint("see `callbridge schema` or docs/yaml-reference.md for this key's type");
    }
    if msg.starts_with("missing field") {
        return Diagnostic::new(pos, msg.replace('`', "'")).hint("add the field; see docs/yaml-reference.md");
    }
    Diagnostic::new(pos, msg.replace('`', "'"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::IntegratorDoc;

    fn diag_of(text: &str) -> Diagnostic {
        let mut d = Diagnostics::default();
        assert!(parse::<IntegratorDoc>(Path::new("i.yaml"), text, &mut d).is_none());
        d.0.remove(0)
    }

    #[test]
    fn unknown_field_has_position_and_suggestion() {
        let d = diag_of("id: a\nintegration: hubspot\ncallcenterId: x\nhots: h\n");
        assert_eq!((d.pos.line, d.pos.column), (4, 1), "{d}");
        assert_eq!(d.message, "unknown field 'hots'");
        assert_eq!(d.hint.as_deref(), Some("did you mean 'host'?"));
        assert!(d.expected.unwrap().contains("'host'"));
    }

    #[test]
    fn syntax_error_has_position() {
        let d = diag_of("id: a\nintegration: [hubspot\n");
        assert!(d.pos.line >= 2, "{d}");
    }

    #[test]
    fn wrong_type_is_reported() {
        let d = diag_of("id: a\nintegration: hubspot\ncallcenterId: x\nhost: h\noptions: 5\n");
        assert_eq!(d.pos.line, 5, "{d}");
    }
}
