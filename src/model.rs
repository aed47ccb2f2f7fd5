//! The YAML language: serde types for the three kinds (template, integrator, endpoints).
//! Parsing is strict (`deny_unknown_fields`); fields that later checks point at keep their span.

use std::collections::BTreeMap;

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_saphyr::Spanned;

/// A value with the YAML position it came from (line and column, 1-based).
pub type S<T> = Spanned<T>;

/// `templates/<name>.yaml`: one integration.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TemplateDoc {
    /// Integration name, also shown in the iframe; integrators and endpoint files refer to it.
    #[schemars(with = "String")]
    pub name: S<String>,
    /// Display label, usually the same as the name.
    #[serde(default)]
    pub label: Option<String>,
    /// `CRM` or `SMS`.
    #[serde(rename = "type")]
    pub kind: IntegrationType,
    #[serde(default)]
    pub description: Option<String>,
    /// How the callbox works around the CRM's pages.
    #[serde(default)]
    pub info: Info,
    /// The screen-pop view.
    #[serde(default)]
    pub iframe: Option<Iframe>,
    /// The values an integrator supplies (its `fields`), and where each goes in every call.
    #[serde(default)]
    pub parameters: Vec<TemplateParameter>,
    /// Fallback token lifetime in seconds when the Auth response does not say (default 3600).
    #[serde(default)]
    pub token_ttl: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum IntegrationType {
    #[serde(rename = "CRM")]
    Crm,
    #[serde(rename = "SMS")]
    Sms,
}

/// Info: click-to-call placement, options, user identity, and the call-start data functions.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Info {
    /// Where to insert click-to-call buttons in the CRM's pages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub render_tooltip: Option<Vec<Tooltip>>,
    /// Checkboxes in the callbox settings; their values are `options.<name>` in templates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list_options: Option<Vec<ListOption>>,
    /// Where the CRM user's identity is read in the page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_info: Option<UserInfo>,
    /// The endpoints run at call start (`getDataIframe`), each storing its response body
    /// under `objects.<objectName>` for later steps, hooks and the iframe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_function: Option<Vec<DataFunction>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Tooltip {
    /// URL path pattern of the CRM page (`*` matches anything).
    pub path: String,
    /// CSS selector of the element holding a phone number.
    pub element: String,
    /// Attribute holding the number; the element's text when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribute: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ListOption {
    pub name: String,
    pub label: String,
    #[serde(default)]
    pub default: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UserInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub element: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribute: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DataFunction {
    /// An endpoint of this integration triggered by `getDataIframe`.
    #[schemars(with = "String")]
    #[serde(serialize_with = "ser_spanned")]
    pub endpoint: S<String>,
    pub object_name: String,
}

/// The screen-pop page: values are templates over the call state, HTML-escaped when shown.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Iframe {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Rows of label/value shown for the caller.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<IframeField>,
    /// Links to the CRM's own pages.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<IframeLink>,
    /// Forms that post back to a hook (`handleCreateTicket`, `handleCreateContact`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forms: Vec<IframeForm>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IframeField {
    pub label: String,
    /// Template, e.g. `{{objects.contact.results.0.properties.firstname}}`.
    pub value: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IframeLink {
    pub label: String,
    /// Template of the link target.
    pub url: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IframeForm {
    /// The hook the form posts to.
    #[schemars(with = "String")]
    #[serde(serialize_with = "ser_spanned")]
    pub hook: S<String>,
    pub title: String,
    pub fields: Vec<FormField>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FormField {
    /// Key in the hook's call payload (`form.<name>`).
    pub name: String,
    pub label: String,
    #[serde(default, rename = "type")]
    pub kind: FormFieldType,
    #[serde(default)]
    pub required: bool,
    /// Choices for a `select`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
    /// Template for the initial value (e.g. the caller's phone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FormFieldType {
    #[default]
    Text,
    Textarea,
    Email,
    Tel,
    Select,
}

/// Where a value is placed in a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Placement {
    /// A request header named `key`.
    Header,
    /// A query-string parameter named `key`.
    Query,
    /// Replaces `{key}` in the URL path, percent-encoded as one segment.
    Path,
    /// A key of the request body (dots make nested objects: `properties.hs_call_body`).
    Body,
    /// md5-hashed (lowercase hex), then put in the header named `key`.
    Md5,
}

/// A value the integrator supplies, and optionally where it goes in every non-Auth call.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TemplateParameter {
    /// The field name integrators set (`fields.<name>`).
    #[schemars(with = "String")]
    pub name: S<String>,
    /// Where the value goes in every call the integration makes (Auth endpoints excepted).
    /// Absent: the field is only used where a template or endpoint parameter refers to it.
    #[serde(default, rename = "in")]
    pub placement: Option<Placement>,
    /// The header, query key, body key or path placeholder; defaults to `name`.
    #[serde(default)]
    pub key: Option<String>,
    /// Template applied to the value before it is placed; `{{value}}` is the field's value
    /// (e.g. `Bearer {{value}}`).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub format: Option<S<String>>,
    /// Integrators must set it (default true, false when a default is given).
    #[serde(default)]
    pub required: Option<bool>,
    /// Never printed: redacted in dry-run output, logs, errors and the config API.
    #[serde(default)]
    pub secret: bool,
    #[serde(default)]
    pub default: Option<Value>,
    #[serde(default)]
    pub description: Option<String>,
}

/// `integrators/<id>.yaml`: one tenant's use of an integration.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IntegratorDoc {
    /// Unique id used by the CLI and the API (`/v1/integrators/{id}/...`).
    #[schemars(with = "String")]
    pub id: S<String>,
    /// The template's `name`.
    #[schemars(with = "String")]
    pub integration: S<String>,
    /// The call center (tenant) id.
    pub callcenter_id: String,
    /// The CRM host without scheme, e.g. `api.hubapi.com` or `127.0.0.1:4010`.
    #[schemars(with = "String")]
    pub host: S<String>,
    /// `https` (default) or `http` (local sandboxes only). Templates use `{{base_url}}`.
    #[serde(default)]
    pub scheme: Option<Scheme>,
    #[serde(default)]
    pub description: Option<String>,
    /// Overrides the template's info, key by key.
    #[serde(default)]
    pub info: Option<Info>,
    /// Overrides the template's iframe, key by key.
    #[serde(default)]
    pub iframe: Option<Iframe>,
    /// Values for the template's parameters; `{env: NAME}` reads an environment variable.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, FieldValue>")]
    pub fields: IndexMap<String, S<FieldValue>>,
    /// Values of the template's `listOptions` for this tenant.
    #[serde(default)]
    pub options: BTreeMap<String, bool>,
    /// API keys the callbox presents as `Authorization: Bearer <key>`; `{env: NAME}` allowed.
    #[serde(default)]
    pub api_keys: Vec<FieldValue>,
    /// Browser origins allowed to call this integrator's hooks (CORS).
    #[serde(default)]
    pub allowed_origins: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    Http,
    Https,
}

/// A field's value: a literal, or `{env: NAME}` to read it from the environment at load time.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum FieldValue {
    Env(EnvRef),
    Literal(Value),
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EnvRef {
    pub env: String,
    #[serde(default)]
    pub default: Option<String>,
}

/// `endpoints/<integration>.yaml`: the HTTP calls of one integration.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EndpointsDoc {
    /// The template's `name`.
    #[schemars(with = "String")]
    pub integration: S<String>,
    pub endpoints: Vec<EndpointDef>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum EndpointType {
    Auth,
    GetData,
    PostData,
    #[serde(rename = "SendSMS")]
    SendSms,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }
}

/// How the body is encoded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BodyFormat {
    #[default]
    Json,
    /// `application/x-www-form-urlencoded` (OAuth token endpoints).
    Form,
}

/// One HTTP call.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EndpointDef {
    #[schemars(with = "String")]
    pub name: S<String>,
    #[serde(default)]
    pub label: Option<String>,
    #[serde(rename = "type")]
    pub kind: EndpointType,
    pub method: Method,
    /// Template; `{{base_url}}`, `{{host}}`, `{{fields.x}}`… Values rendered into it are
    /// percent-encoded; `{name}` placeholders are filled by `path` parameters.
    #[schemars(with = "String")]
    pub url: S<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// The hook that runs it (not for Auth endpoints).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub trigger: Option<S<String>>,
    /// For Auth endpoints: where the token is in the response and how long it lives.
    #[serde(default)]
    pub response_type: Option<ResponseType>,
    /// Fixed values, per placement. Strings are templates.
    #[serde(default)]
    pub hard_params: HardParams,
    /// Values taken from a source (field, token, call, result, or a template).
    #[serde(default)]
    pub parameters: Vec<EndpointParameter>,
    #[serde(default)]
    pub body_format: BodyFormat,
    /// Named values extracted from the response by JSONPath (`results.<name>`).
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, String>")]
    pub extract: IndexMap<String, S<String>>,
    /// Run only when this expression is truthy, e.g. `not results.call_id` or
    /// `options.auto_create_ticket`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub when: Option<S<String>>,
    /// When the response counts as success (default: any 2xx).
    #[serde(default)]
    pub success: Option<SuccessRule>,
    /// An example response body, used by dry-run to chain values.
    #[serde(default)]
    pub example: Option<Value>,
    /// Per-request timeout in milliseconds (default 10000).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ResponseType {
    /// JSONPath of the access token (default `$.access_token`).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub token: Option<S<String>>,
    /// JSONPath of the lifetime in seconds (default `$.expires_in`; absent → template tokenTtl).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub expires_in: Option<S<String>>,
    /// JSONPath of a new refresh token (default `$.refresh_token`); kept when absent.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub refresh_token: Option<S<String>>,
}

/// Fixed values per placement; string leaves are templates.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HardParams {
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, String>")]
    pub header: IndexMap<String, S<String>>,
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, String>")]
    pub query: IndexMap<String, S<String>>,
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, String>")]
    pub path: IndexMap<String, S<String>>,
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, String>")]
    pub md5: IndexMap<String, S<String>>,
    /// The body as a structure; string leaves are templates, and a leaf that is exactly
    /// one `{{value}}` keeps that value's JSON type.
    #[serde(default)]
    pub body: Option<Value>,
}

/// A parameter with exactly one source: `field`, `token`, `call`, `result`, `option` or `value`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EndpointParameter {
    /// The header, query key, body key (dots nest) or path placeholder.
    #[schemars(with = "String")]
    pub name: S<String>,
    #[serde(rename = "in")]
    pub placement: Placement,
    /// An integrator field (a template parameter's name).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub field: Option<S<String>>,
    /// The access token the Auth endpoint obtained.
    #[serde(default)]
    pub token: Option<bool>,
    /// A key of the call payload the callbox sent (dots for nesting: `form.subject`).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub call: Option<S<String>>,
    /// A value an earlier endpoint extracted.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub result: Option<S<String>>,
    /// A template (`Bearer {{token}}`).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub value: Option<S<String>>,
    /// Template applied to the sourced value, which it sees as `{{value}}`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub format: Option<S<String>>,
    /// Used when the source has no value; without it a missing value is an error
    /// unless `optional` is true (then the parameter is left out).
    #[serde(default)]
    pub default: Option<Value>,
    #[serde(default)]
    pub optional: bool,
}

/// When a response counts as success.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SuccessRule {
    /// Accepted status codes (default: any 2xx).
    #[serde(default)]
    pub status: Vec<u16>,
    /// A JSONPath that must match something in the body (e.g. `$.data[?@.status == 'success']`,
    /// or `$.success` with `equals: true`).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub jsonpath: Option<S<String>>,
    /// With `jsonpath`: the first match must equal this value.
    #[serde(default)]
    pub equals: Option<Value>,
    /// JSONPath of the CRM's error message, quoted in the failure.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub message: Option<S<String>>,
}

fn ser_spanned<T: Serialize, Ser: serde::Serializer>(v: &S<T>, s: Ser) -> Result<Ser::Ok, Ser::Error> {
    v.value.serialize(s)
}

/// The hooks of a call's life, in the callbox's vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
pub enum Hook {
    #[serde(rename = "getDataIframe")]
    GetDataIframe,
    #[serde(rename = "savePreLogCRM")]
    SavePreLogCrm,
    #[serde(rename = "saveLogCRM")]
    SaveLogCrm,
    #[serde(rename = "createSMSNote")]
    CreateSmsNote,
    #[serde(rename = "handleCreateTicket")]
    HandleCreateTicket,
    #[serde(rename = "handleCreateContact")]
    HandleCreateContact,
}

impl Hook {
    pub const ALL: [Hook; 6] = [
        Hook::GetDataIframe,
        Hook::SavePreLogCrm,
        Hook::SaveLogCrm,
        Hook::CreateSmsNote,
        Hook::HandleCreateTicket,
        Hook::HandleCreateContact,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Hook::GetDataIframe => "getDataIframe",
            Hook::SavePreLogCrm => "savePreLogCRM",
            Hook::SaveLogCrm => "saveLogCRM",
            Hook::CreateSmsNote => "createSMSNote",
            Hook::HandleCreateTicket => "handleCreateTicket",
            Hook::HandleCreateContact => "handleCreateContact",
        }
    }

    pub fn parse(s: &str) -> Option<Hook> {
        Hook::ALL.into_iter().find(|h| h.as_str() == s)
    }

    /// Write hooks change the CRM; the server stores them durably before acknowledging.
    pub fn is_write(self) -> bool {
        self != Hook::GetDataIframe
    }

    /// Whether the payload must carry a `call_id`.
    pub fn needs_call_id(self) -> bool {
        self != Hook::HandleCreateContact
    }
}

impl std::fmt::Display for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
