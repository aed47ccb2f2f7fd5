//! The complete integration shown in README.md is valid YAML for this engine.

use std::process::Command;

#[test]
fn the_readme_example_integration_validates() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut found = 0;
    for file in ["templates/acme.yaml", "endpoints/acme.yaml", "integrators/acme-hq.yaml"] {
        let marker = format!("`{file}`\n```yaml\n");
        let start = readme.find(&marker).unwrap_or_else(|| panic!("README has no {file} block")) + marker.len();
        let end = start + readme[start..].find("```").unwrap();
        let p = dir.path().join(file);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, &readme[start..end]).unwrap();
        found += 1;
    }
    assert_eq!(found, 3);
    let out = Command::new(env!("CARGO_BIN_EXE_callbridge"))
        .arg("validate")
        .arg(dir.path())
        .env("ACME_API_KEY", "k")
        .env("ACME_CLIENT_SECRET", "s")
        .env("ACME_CALLBOX_KEY", "c")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
