//! `callbridge validate`: the shipped tree is valid; broken copies of it report every error
//! with file:line:column, what was expected and a hint, and exit non-zero without a panic.

mod common;

use std::path::Path;
use std::process::Command;

use common::repo_root;

fn copy_shipped(to: &Path) {
    for dir in ["templates", "integrators", "endpoints"] {
        std::fs::create_dir_all(to.join(dir)).unwrap();
        for e in std::fs::read_dir(repo_root().join(dir)).unwrap() {
            let p = e.unwrap().path();
            std::fs::copy(&p, to.join(dir).join(p.file_name().unwrap())).unwrap();
        }
    }
}

/// Appends `text` to `file` and returns the 1-based line number where it starts.
fn append(file: &Path, text: &str) -> usize {
    let mut s = std::fs::read_to_string(file).unwrap();
    if !s.ends_with('\n') {
        s.push('\n');
    }
    let line = s.lines().count() + 1;
    s.push_str(text);
    std::fs::write(file, s).unwrap();
    line
}

fn validate(dir: &Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_callbridge")).arg("validate").arg(dir).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn the_shipped_tree_is_valid() {
    let (code, stdout, stderr) = validate(&repo_root());
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.starts_with("ok: "), "{stdout}");
}

#[test]
fn every_error_of_a_broken_tree_is_reported_with_its_position() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    copy_shipped(root);
    // 1. Unknown key (a typo) in an integrator.
    let l_unknown = append(&root.join("integrators/sandbox-hubspot.yaml"), "hots: 127.0.0.1\n");
    // 2. A dangling reference to a template.
    let pd = root.join("integrators/sandbox-pipedrive.yaml");
    let text = std::fs::read_to_string(&pd).unwrap();
    let l_dangling = text.lines().position(|l| l.starts_with("integration:")).unwrap() + 1;
    std::fs::write(&pd, text.replacen("integration: pipedrive", "integration: pipedriv", 1)).unwrap();
    // 3. A YAML syntax error.
    let zoho_file = root.join("integrators/sandbox-zoho.yaml");
    let zt = std::fs::read_to_string(&zoho_file).unwrap();
    let l_syntax = zt.lines().position(|l| l.starts_with("callcenterId:")).unwrap() + 1;
    std::fs::write(&zoho_file, zt.replacen("callcenterId: ", "callcenterId: [unclosed, ", 1)).unwrap();
    // 4. A wrong type.
    std::fs::write(
        root.join("integrators/wrong-type.yaml"),
        "id: wrong-type\nintegration: hubspot\ncallcenterId: x\nhost: h\napiKeys: 5\n",
    )
    .unwrap();
    // 5-9. A broken endpoint: bad template, unknown trigger, bad JSONPath, unknown result, unknown field.
    let ep = root.join("endpoints/hubspot.yaml");
    let l_ep = append(
        &ep,
        concat!(
            "  - name: broken_one\n",                                             // +0
            "    type: PostData\n",                                               // +1
            "    method: POST\n",                                                 // +2
            "    url: \"{{base_url}/crm\"\n",                                     // +3
            "    trigger: saveLogCrm\n",                                          // +4
            "    extract: { a: \"$.results[\" }\n",                               // +5
            "    parameters:\n",                                                  // +6
            "      - { name: id, in: body, result: contact_idd }\n",              // +7
            "      - { name: k, in: header, field: client_secrte }\n",            // +8
            "      - { name: q, in: query, value: \"{{fields.portal_idd}}\" }\n", // +9
        ),
    );
    let (code, stdout, stderr) = validate(root);
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let hub = root.join("integrators/sandbox-hubspot.yaml");
    let zoho = root.join("integrators/sandbox-zoho.yaml");
    let wrong = root.join("integrators/wrong-type.yaml");
    let expect = |needle: String, what: &str| {
        assert!(stderr.contains(&needle), "missing {what}: {needle}\n--- stderr:\n{stderr}");
    };
    expect(format!("{}:{l_unknown}:1: error: unknown field 'hots'", hub.display()), "unknown key");
    expect("hint: did you mean 'host'?".into(), "unknown key hint");
    expect(format!("{}:{l_dangling}:", pd.display()), "dangling integration position");
    expect("unknown integration 'pipedriv'".into(), "dangling integration");
    expect("did you mean 'pipedrive'?".into(), "dangling integration hint");
    let syntax_line = stderr.lines().find(|l| l.starts_with(&format!("{}:", zoho.display()))).expect("a zoho error");
    let reported: usize = syntax_line.split(':').nth(1).unwrap().parse().unwrap();
    assert!(reported >= l_syntax, "syntax error reported at {reported}, the bad line is {l_syntax}");
    expect(format!("{}:5:10: error: expected a list here", wrong.display()), "wrong type");
    expect(format!("{}:{}:", ep.display(), l_ep + 3), "bad template position");
    expect("url is not a valid template".into(), "bad template");
    expect(format!("{}:{}:", ep.display(), l_ep + 4), "unknown trigger position");
    expect("unknown hook 'saveLogCrm'".into(), "unknown trigger");
    expect("did you mean 'saveLogCRM'?".into(), "unknown trigger hint");
    expect(format!("{}:{}:", ep.display(), l_ep + 5), "bad JSONPath position");
    expect("is not a valid JSONPath".into(), "bad JSONPath");
    expect(format!("{}:{}:", ep.display(), l_ep + 7), "unknown result position");
    expect("no endpoint extracts 'contact_idd'".into(), "unknown result");
    expect("did you mean 'contact_id'?".into(), "unknown result hint");
    expect(format!("{}:{}:", ep.display(), l_ep + 8), "unknown field position");
    expect("unknown field 'client_secrte'".into(), "unknown field");
    expect(format!("{}:{}:", ep.display(), l_ep + 9), "unknown template variable position");
    expect("unknown field 'portal_idd'".into(), "unknown template variable");
}

#[test]
fn json_output_lists_errors_with_positions() {
    let tmp = tempfile::tempdir().unwrap();
    copy_shipped(tmp.path());
    append(&tmp.path().join("integrators/sandbox-hubspot.yaml"), "hots: x\n");
    let out = Command::new(env!("CARGO_BIN_EXE_callbridge"))
        .args(["--output", "json", "validate"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["valid"], false);
    let e = &v["errors"][0];
    assert_eq!(e["message"], "unknown field 'hots'");
    assert!(e["pos"]["line"].as_u64().unwrap() > 1);
    assert_eq!(e["hint"], "did you mean 'host'?");
}

#[test]
fn a_missing_environment_variable_is_named_not_its_value() {
    let tmp = tempfile::tempdir().unwrap();
    copy_shipped(tmp.path());
    let f = tmp.path().join("integrators/sandbox-hubspot.yaml");
    let text = std::fs::read_to_string(&f).unwrap();
    let text = text
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("client_secret:") {
                "  client_secret: { env: CB_TEST_UNSET_SECRET }"
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&f, text).unwrap();
    let (code, _, stderr) = validate(tmp.path());
    assert_eq!(code, 2);
    assert!(stderr.contains("environment variable 'CB_TEST_UNSET_SECRET' is not set"), "{stderr}");
}

#[test]
fn an_empty_folder_says_what_was_expected() {
    let tmp = tempfile::tempdir().unwrap();
    let (code, _, stderr) = validate(tmp.path());
    assert_eq!(code, 2);
    assert!(stderr.contains("expected: folders 'templates/', 'integrators/' and 'endpoints/'"), "{stderr}");
}
