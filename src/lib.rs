//! callbridge: a declarative integration-template engine for call centers.
//!
//! Integration authors describe a CRM in YAML (templates, integrators, endpoints); the engine
//! validates it ([`catalog`]), resolves each endpoint into a request ([`resolve`]), obtains
//! and caches tokens ([`auth`]), sends with retries ([`http`]) and runs hooks over a call's
//! life ([`hooks`]). The CLI and the hook server are thin callers of that pipeline.

pub mod auth;
pub mod catalog;
pub mod cli;
pub mod diagnostics;
pub mod error;
pub mod hooks;
pub mod http;
pub mod iframe;
pub mod jsonpath;
pub mod loader;
pub mod metrics;
pub mod model;
pub mod redact;
pub mod request;
pub mod resolve;
pub mod schema;
pub mod server;
pub mod storage;
pub mod templating;

pub use catalog::Catalog;
pub use hooks::{Engine, HookOutcome, Mode};
pub use model::Hook;
