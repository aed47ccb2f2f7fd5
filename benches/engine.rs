//! Micro-benchmarks of the engine's hot paths: resolving one endpoint call, JSONPath
//! extraction from a large response, and loading/validating many integrators.

use std::hint::black_box;
use std::path::Path;

use callbridge::Catalog;
use callbridge::jsonpath::JsonPath;
use callbridge::model::Hook;
use callbridge::resolve::{CallState, Scope, resolve};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use serde_json::{Value, json};

// The allocator the `callbridge` binary ships with (src/main.rs), so that these numbers are
// the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// One integration whose `log_call` endpoint has headers, a query, a JSON body with 20
/// templated fields and one md5 parameter.
fn write_tree(dir: &Path, integrators: usize) {
    let mut body = String::new();
    for i in 0..20 {
        let v = match i % 4 {
            0 => "\"{{call.phone}}\"".to_string(),
            1 => format!("\"{{{{call.agent.name}}}} #{i}\""),
            2 => "\"{{call.duration}}\"".to_string(),
            _ => "\"{{call.notes}} ({{call.direction}})\"".to_string(),
        };
        body.push_str(&format!("        f{i}: {v}\n"));
    }
    std::fs::create_dir_all(dir.join("templates")).unwrap();
    std::fs::create_dir_all(dir.join("endpoints")).unwrap();
    std::fs::create_dir_all(dir.join("integrators")).unwrap();
    std::fs::write(
        dir.join("templates/bench.yaml"),
        "name: bench\ntype: CRM\nparameters:\n  - { name: api_key, in: header, key: X-Api-Key, secret: true }\n  - { name: secret, in: md5, key: X-Signature, format: \"{{value}}{{time.unix}}\", secret: true }\n  - { name: account }\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("endpoints/bench.yaml"),
        format!(
            "integration: bench\nendpoints:\n  - name: log_call\n    type: PostData\n    method: POST\n    url: \"{{{{base_url}}}}/accounts/{{account}}/calls\"\n    trigger: savePreLogCRM\n    hardParams:\n      header: {{ X-Source: callbridge }}\n      query: {{ source: callbox }}\n      body:\n{body}    parameters:\n      - {{ name: account, in: path, field: account }}\n      - {{ name: call_id, in: query, call: call_id }}\n      - {{ name: Authorization, in: header, value: \"Bearer {{{{fields.api_key}}}}\" }}\n    extract: {{ id: \"$.id\" }}\n"
        ),
    )
    .unwrap();
    for i in 0..integrators {
        std::fs::write(
            dir.join(format!("integrators/tenant-{i:05}.yaml")),
            format!(
                "id: tenant-{i:05}\nintegration: bench\ncallcenterId: cc-{i}\nhost: crm{i}.example.com\nfields:\n  api_key: key-{i:05}-abcdef\n  secret: secret-{i:05}\n  account: acc-{i}\napiKeys: [ \"callbox-{i:05}\" ]\n"
            ),
        )
        .unwrap();
    }
}

fn resolve_one(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    write_tree(dir.path(), 1);
    let cat = Catalog::load(dir.path()).unwrap();
    let integrator = cat.integrator("tenant-00000").unwrap().clone();
    let integration = &cat.integrations["bench"];
    let e = integration.endpoints.iter().find(|e| e.name == "log_call").unwrap();
    let call = json!({"call_id": "c-1", "phone": "+84901234567", "duration": 125, "direction": "inbound",
                      "agent": {"name": "Lan Nguyen"}, "notes": "a note"});
    let state = CallState::default();
    c.bench_function("resolve_endpoint_20_field_body_md5", |b| {
        b.iter(|| {
            let scope = Scope {
                integrator: &integrator,
                integration,
                hook: Hook::SavePreLogCrm,
                call: &call,
                state: &state,
                token: None,
                refresh_token: None,
            };
            black_box(resolve(&cat, e, &scope).unwrap())
        })
    });
}

fn jsonpath_50kb(c: &mut Criterion) {
    let results: Vec<Value> = (0..120)
        .map(|i| {
            json!({"id": format!("{i}"), "properties": {"firstname": "Ann", "lastname": format!("Le {i}"),
                   "email": format!("ann{i}@example.com"), "phone": "+84901234567", "company": "Acme Trading Co",
                   "notes": "x".repeat(260)}})
        })
        .collect();
    let body = json!({"total": 120, "results": results, "paging": {"next": {"after": "120"}}});
    let size = serde_json::to_vec(&body).unwrap().len();
    assert!((45_000..80_000).contains(&size), "response is {size} bytes");
    let first = JsonPath::parse("$.results[0].id").unwrap();
    let filter = JsonPath::parse("$.results[?@.properties.lastname == 'Le 119'].id").unwrap();
    let mut g = c.benchmark_group(format!("jsonpath_{}kb", size / 1000));
    g.bench_function("first_index", |b| b.iter(|| black_box(first.first(&body))));
    g.bench_function("filter_scan", |b| b.iter(|| black_box(filter.first(&body))));
    g.finish();
}

fn load_integrators(c: &mut Criterion) {
    let mut g = c.benchmark_group("load_and_validate");
    g.sample_size(10);
    for n in [1_000usize, 10_000] {
        let dir = tempfile::tempdir().unwrap();
        write_tree(dir.path(), n);
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| black_box(Catalog::load(dir.path()).unwrap().integrators.len()))
        });
    }
    g.finish();
}

/// Phone formatting (libphonenumber metadata) is the most expensive helper; measured apart.
fn phone_helper(c: &mut Criterion) {
    let mut ts = callbridge::templating::TemplateSet::new();
    let t = ts.compile("{{phone_e164 call.phone}}", callbridge::templating::Escape::Plain).unwrap();
    let ctx = handlebars::Context::from(json!({"call": {"phone": "0901234567"}}));
    c.bench_function("helper_phone_e164", |b| b.iter(|| black_box(ts.render(&t, &ctx).unwrap())));
}

criterion_group!(benches, resolve_one, jsonpath_50kb, load_integrators, phone_helper);
criterion_main!(benches);
