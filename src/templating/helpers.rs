//! Handlebars helpers available to callbridge YAML templates: hashing and
//! signing, encoding, time, phone-number normalisation, arithmetic and strings.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::panic;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::format::StrftimeItems;
use chrono::{DateTime, SecondsFormat, Utc};
use handlebars::{
    Context, Handlebars, Helper, HelperDef, JsonValue as Json, PathAndJson, RenderContext, RenderError,
    RenderErrorReason, ScopedJson,
};
use hmac::{Hmac, Mac};
use phonenumber::{Mode, PhoneNumber, country};
use sha2::{Digest, Sha256};

/// Region assumed by the phone helpers for numbers without a leading `+`
/// when the template gives no region (the first deployments are Vietnamese).
const DEFAULT_REGION: country::Id = country::Id::VN;

/// Registers every callbridge helper on `reg`.
///
/// Every helper returns a value, so it works both as `{{md5 x}}` and as a
/// subexpression such as `{{phone_last (phone_e164 caller) 4}}`. Helpers never
/// panic: bad input (wrong arity, `null`, non-numeric text, unparseable phone
/// numbers or dates, invalid strftime patterns) is a render error naming the
/// helper. Helpers that take text use the value's string form: strings as-is,
/// numbers and booleans as written, arrays and objects as compact JSON; `null`
/// is an error (wrap it in `default` to supply a value).
///
/// Helpers: `md5`, `sha256`, `hmac_sha256` (hash `encoding="hex"|"base64"`),
/// `base64`, `json`, `now [FMT]`, `date value [FMT]`, `uuid`,
/// `default value fallback`, `phone_e164 number [region]`,
/// `phone_national number [region]` (both also accept hash `region="VN"`;
/// numbers without `+` default to region VN), `phone_digits number`,
/// `phone_last number n`, `mul a b`, `add a b` (integer when both operands
/// are integers, else float), `concat a b ...`, `lower s`, `upper s`, `trim s`.
///
/// `FMT` is `iso` (default, RFC 3339 UTC with seconds and `Z`), `unix`
/// (seconds), `unix_ms`, or a chrono strftime pattern. `date` accepts unix
/// seconds (values above 10^11 are taken as milliseconds), numeric strings
/// and RFC 3339 strings. All times are UTC.
///
/// `default` falls back when `value` is `null` or `""`. In strict mode a path
/// to a *missing* key is an error, for `default` as for every helper here (and
/// the built-in `eq`); only keys present with a `null` value fall back. Guard
/// optional keys with `{{#if key}}`, which tolerates missing keys.
pub fn register(reg: &mut Handlebars<'static>) {
    const ANY: usize = usize::MAX;
    let helpers: [(&'static str, usize, usize, HelperFn); 20] = [
        ("md5", 1, 1, |a| Ok(format!("{:x}", md5::compute(a.bytes(0)?)).into())),
        ("sha256", 1, 1, |a| Ok(hex(&Sha256::digest(a.bytes(0)?)).into())),
        ("hmac_sha256", 2, 2, hmac_sha256),
        ("base64", 1, 1, |a| Ok(BASE64.encode(a.bytes(0)?).into())),
        ("json", 1, 1, |a| Ok(a.get(0)?.to_string().into())),
        ("now", 0, 1, |a| format_time(a, Utc::now(), 0)),
        ("date", 1, 2, date),
        ("duration", 1, 2, duration),
        ("uuid", 0, 0, |_| Ok(uuid::Uuid::new_v4().to_string().into())),
        ("default", 2, 2, default),
        ("phone_e164", 1, 2, |a| format_phone(a, Mode::E164)),
        ("phone_national", 1, 2, |a| format_phone(a, Mode::National)),
        ("phone_digits", 1, 1, |a| Ok(digits(a)?.into())),
        ("phone_last", 2, 2, phone_last),
        ("mul", 2, 2, |a| arith(a, i64::checked_mul, |x, y| x * y)),
        ("add", 2, 2, |a| arith(a, i64::checked_add, |x, y| x + y)),
        ("concat", 1, ANY, concat),
        ("lower", 1, 1, |a| Ok(a.text(0)?.to_lowercase().into())),
        ("upper", 1, 1, |a| Ok(a.text(0)?.to_uppercase().into())),
        ("trim", 1, 1, |a| Ok(a.text(0)?.trim().into())),
    ];
    for (name, min, max, func) in helpers {
        let helper = ValueHelper { name, min, max, func };
        reg.register_helper(name, Box::new(helper));
    }
}

type HelperOut = Result<Json, RenderError>;
type HelperFn = fn(&Args<'_, '_>) -> HelperOut;

/// Adapts a plain function to `HelperDef`. It returns a value rather than
/// writing output, so the helper also works as a subexpression.
struct ValueHelper {
    name: &'static str,
    min: usize,
    max: usize,
    func: HelperFn,
}

impl HelperDef for ValueHelper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        r: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        let (name, strict) = (self.name, r.strict_mode());
        let n = h.params().len();
        if n < self.min {
            return Err(RenderErrorReason::ParamNotFoundForIndex(name, n).into());
        }
        let args = Args { name, h, strict };
        if n > self.max {
            return Err(args.err(format_args!("too many parameters ({n})")));
        }
        (self.func)(&args).map(ScopedJson::Derived)
    }
}

/// Parameter access with errors that name the helper.
struct Args<'a, 'rc> {
    name: &'static str,
    h: &'a Helper<'rc>,
    strict: bool,
}

impl Args<'_, '_> {
    fn err(&self, msg: impl std::fmt::Display) -> RenderError {
        RenderErrorReason::Other(format!("{}: {msg}", self.name)).into()
    }

    /// Param `i`. A path to a missing key is an error in strict mode, and
    /// reads as `null` otherwise.
    fn get(&self, i: usize) -> Result<&Json, RenderError> {
        let p = self.h.param(i);
        self.present(p.ok_or(RenderErrorReason::ParamNotFoundForIndex(self.name, i))?)
    }

    fn present<'p>(&self, p: &'p PathAndJson<'_>) -> Result<&'p Json, RenderError> {
        if self.strict && p.is_value_missing() {
            let path = p.relative_path().map_or("?", String::as_str);
            return Err(self.err(format_args!("`{path}` does not exist (strict mode)")));
        }
        Ok(p.value())
    }

    /// String form of param `i` (see [`register`]); `null` is an error.
    fn text(&self, i: usize) -> Result<Cow<'_, str>, RenderError> {
        match self.get(i)? {
            Json::String(s) => Ok(Cow::Borrowed(s)),
            Json::Null => Err(self.err(format_args!("parameter {} is null", i + 1))),
            other => Ok(Cow::Owned(other.to_string())),
        }
    }

    fn bytes(&self, i: usize) -> Result<Vec<u8>, RenderError> {
        self.text(i).map(|s| s.into_owned().into_bytes())
    }

    /// String form of param `i` when the template passed one.
    fn opt_text(&self, i: usize) -> Result<Option<Cow<'_, str>>, RenderError> {
        (i < self.h.params().len()).then(|| self.text(i)).transpose()
    }

    /// Hash param `key`, which must be a string when given.
    fn hash_str(&self, key: &str) -> Result<Option<&str>, RenderError> {
        let Some(p) = self.h.hash_get(key) else {
            return Ok(None);
        };
        match self.present(p)? {
            Json::String(s) => Ok(Some(s)),
            other => Err(self.err(format_args!("{key}= must be a string, got {other}"))),
        }
    }
}

/// `duration SECONDS [FMT]`: `hh:mm:ss` (default), `mm:ss` (minutes may exceed 59, so an
/// hour-long call is `75:00`), `hh:mm`, or `ms` (milliseconds).
fn duration(a: &Args) -> HelperOut {
    let v = a.get(0)?;
    let secs = v
        .as_f64()
        .or_else(|| v.as_str().and_then(|s| s.trim().parse::<f64>().ok()))
        .filter(|s| s.is_finite() && *s >= 0.0)
        .ok_or_else(|| a.err(format_args!("expected a non-negative number of seconds, got {v}")))?;
    let total = secs.round() as u64;
    let (h, m, s) = (total / 3600, (total % 3600) / 60, total % 60);
    let fmt = a.opt_text(1)?;
    Ok(match fmt.as_deref().unwrap_or("hh:mm:ss") {
        "hh:mm:ss" => format!("{h:02}:{m:02}:{s:02}").into(),
        "mm:ss" => format!("{:02}:{s:02}", total / 60).into(),
        "hh:mm" => format!("{h:02}:{m:02}").into(),
        "ms" => Json::from((secs * 1000.0).round() as u64),
        other => return Err(a.err(format_args!("format must be hh:mm:ss, mm:ss, hh:mm or ms, got {other:?}"))),
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hmac_sha256(a: &Args) -> HelperOut {
    let mut mac = Hmac::<Sha256>::new_from_slice(&a.bytes(0)?).map_err(|e| a.err(format_args!("invalid key: {e}")))?;
    mac.update(&a.bytes(1)?);
    let tag = mac.finalize().into_bytes();
    match a.hash_str("encoding")?.unwrap_or("hex") {
        "hex" => Ok(hex(&tag).into()),
        "base64" => Ok(BASE64.encode(tag).into()),
        other => Err(a.err(format_args!("encoding must be hex or base64, got {other:?}"))),
    }
}

fn date(a: &Args) -> HelperOut {
    let value = a.get(0)?;
    let time = match value {
        Json::Number(n) => n.as_f64().and_then(from_unix),
        Json::String(s) => match s.trim().parse::<f64>() {
            Ok(v) => from_unix(v),
            Err(_) => DateTime::parse_from_rfc3339(s.trim()).ok().map(|t| t.to_utc()),
        },
        _ => None,
    };
    let time = time.ok_or_else(|| a.err(format_args!("cannot read a date from {value}")))?;
    format_time(a, time, 1)
}

/// Unix seconds, or milliseconds when the value is above 10^11.
fn from_unix(v: f64) -> Option<DateTime<Utc>> {
    let ms = if v > 1e11 { v } else { v * 1000.0 };
    // The bound rejects NaN and infinities and keeps the cast in range.
    if ms.abs() < 1e17 { DateTime::from_timestamp_millis(ms.round() as i64) } else { None }
}

/// Formats `t` as the format given in param `fmt_param` (default `iso`).
fn format_time(a: &Args, t: DateTime<Utc>, fmt_param: usize) -> HelperOut {
    let fmt = a.opt_text(fmt_param)?;
    Ok(match fmt.as_deref().unwrap_or("iso") {
        "unix" => t.timestamp().into(),
        "unix_ms" => t.timestamp_millis().into(),
        "iso" => t.to_rfc3339_opts(SecondsFormat::Secs, true).into(),
        pattern => {
            // chrono's Display panics on bad patterns: parse first, then
            // write! so any formatting error becomes an Err.
            let bad = || a.err(format_args!("invalid strftime pattern {pattern:?}"));
            let items = StrftimeItems::new(pattern).parse().map_err(|_| bad())?;
            let mut out = String::new();
            write!(out, "{}", t.format_with_items(items.iter())).map_err(|_| bad())?;
            out.into()
        }
    })
}

fn default(a: &Args) -> HelperOut {
    match a.get(0)? {
        Json::Null => Ok(a.get(1)?.clone()),
        Json::String(s) if s.is_empty() => Ok(a.get(1)?.clone()),
        v => Ok(v.clone()),
    }
}

/// Parses param 0. Numbers starting with `+` are parsed without a region;
/// others use param 1, hash `region=`, or [`DEFAULT_REGION`].
fn parse_phone(a: &Args) -> Result<PhoneNumber, RenderError> {
    let number = a.text(0)?;
    let region = match a.opt_text(1)? {
        Some(r) => Some(r),
        None => a.hash_str("region")?.map(Cow::Borrowed),
    };
    let id = match region {
        Some(r) => (r.trim().to_ascii_uppercase().parse::<country::Id>())
            .map_err(|_| a.err(format_args!("unknown region {r:?}")))?,
        None => DEFAULT_REGION,
    };
    let region = (!number.trim_start().starts_with('+')).then_some(id);
    // The phonenumber crate has panicked on malformed input before; contain it.
    match panic::catch_unwind(|| phonenumber::parse(region, number.as_ref())) {
        Ok(Ok(parsed)) => Ok(parsed),
        _ => Err(a.err(format_args!("cannot parse phone number {number:?}"))),
    }
}

fn format_phone(a: &Args, mode: Mode) -> HelperOut {
    let parsed = parse_phone(a)?;
    match panic::catch_unwind(|| parsed.format().mode(mode).to_string()) {
        Ok(s) => Ok(s.into()),
        Err(_) => Err(a.err("cannot format phone number")),
    }
}

fn digits(a: &Args) -> Result<String, RenderError> {
    Ok(a.text(0)?.chars().filter(char::is_ascii_digit).collect())
}

fn phone_last(a: &Args) -> HelperOut {
    let all = digits(a)?;
    let n = match number(a, 1)? {
        Num::Int(n) if n >= 0 => usize::try_from(n).unwrap_or(usize::MAX),
        _ => return Err(a.err("n must be a non-negative integer")),
    };
    Ok(all[all.len().saturating_sub(n)..].into())
}

#[derive(Clone, Copy)]
enum Num {
    Int(i64),
    Float(f64),
}

impl Num {
    fn to_f64(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }
}

/// Reads param `i` as a finite number; numeric strings are accepted.
fn number(a: &Args, i: usize) -> Result<Num, RenderError> {
    let v = a.get(i)?;
    let parsed = match v {
        Json::Number(n) => n.as_i64().map(Num::Int).or(n.as_f64().map(Num::Float)),
        Json::String(s) => {
            let s = s.trim();
            s.parse().map(Num::Int).or_else(|_| s.parse().map(Num::Float)).ok()
        }
        _ => None,
    };
    parsed
        .filter(|n| n.to_f64().is_finite())
        .ok_or_else(|| a.err(format_args!("parameter {} is not a number: {v}", i + 1)))
}

/// Integer arithmetic when both operands are integers (falling back to
/// floats on overflow), float arithmetic otherwise.
fn arith(a: &Args, int: fn(i64, i64) -> Option<i64>, float: fn(f64, f64) -> f64) -> HelperOut {
    let (x, y) = (number(a, 0)?, number(a, 1)?);
    if let (Num::Int(i), Num::Int(j)) = (x, y)
        && let Some(r) = int(i, j)
    {
        return Ok(r.into());
    }
    serde_json::Number::from_f64(float(x.to_f64(), y.to_f64()))
        .map(Json::Number)
        .ok_or_else(|| a.err("result is not a finite number"))
}

fn concat(a: &Args) -> HelperOut {
    let mut out = String::new();
    for i in 0..a.h.params().len() {
        out.push_str(&a.text(i)?);
    }
    Ok(out.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(tpl: &str) -> Result<String, RenderError> {
        let mut reg = Handlebars::new();
        reg.set_strict_mode(true);
        reg.register_escape_fn(handlebars::no_escape);
        register(&mut reg);
        let data = json!({"nil": null, "empty": "", "name": "An", "n": 7, "flag": true,
            "call": {"id": 7, "tags": ["a", "b"], "note": null}});
        reg.render_template(tpl, &data)
    }

    fn check(cases: &[(&str, &str)]) {
        for (tpl, want) in cases {
            let got = render(tpl).unwrap_or_else(|e| panic!("{tpl}: {e}"));
            assert_eq!(got, *want, "{tpl}");
        }
    }

    /// Asserts that each template fails with an error containing its needle.
    fn fails(cases: &[(&str, &str)]) {
        for (tpl, needle) in cases {
            let err = render(tpl).expect_err(tpl).to_string();
            assert!(err.contains(needle), "{tpl}: {err}");
        }
    }

    #[test]
    fn md5() {
        check(&[(r#"{{md5 "hello"}}"#, "5d41402abc4b2a76b9719d911017c592")]);
        check(&[("{{md5 n}}", "8f14e45fceea167a5a36dedd4bea2543")]);
    }

    #[test]
    fn sha256() {
        let hello = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
        check(&[(r#"{{sha256 "hello"}}"#, hello)]);
    }

    #[test]
    fn hmac_sha256() {
        let tpl = r#"{{hmac_sha256 "key" "The quick brown fox jumps over the lazy dog""#;
        let hex = "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8";
        check(&[(&format!("{tpl}}}}}"), hex)]);
        let b64 = "97yD9DBThCSxMpjmqm+xQ+9NWaFJRhdZl0edvC0aPNg=";
        check(&[(&format!(r#"{tpl} encoding="base64"}}}}"#), b64)]);
    }

    #[test]
    fn base64() {
        check(&[(r#"{{base64 "hello"}}"#, "aGVsbG8=")]);
    }

    #[test]
    fn json() {
        check(&[
            ("{{json call}}", r#"{"id":7,"tags":["a","b"],"note":null}"#),
            (r#"{{json "x"}}"#, r#""x""#),
            ("{{json nil}}", "null"),
        ]);
    }

    #[test]
    fn now() {
        let iso = render("{{now}}").unwrap();
        assert!(iso.len() == 20 && iso.ends_with('Z'), "{iso}");
        assert!(DateTime::parse_from_rfc3339(&iso).is_ok(), "{iso}");
        assert_eq!(render(r#"{{now "iso"}}"#).unwrap().len(), 20);
        let unix: i64 = render(r#"{{now "unix"}}"#).unwrap().parse().unwrap();
        assert!((unix - Utc::now().timestamp()).abs() < 5);
        let ms: i64 = render(r#"{{now "unix_ms"}}"#).unwrap().parse().unwrap();
        assert!((ms / 1000 - unix).abs() < 5);
        let local = render(r#"{{now "%Y-%m-%d %H:%M:%S"}}"#).unwrap();
        assert!(chrono::NaiveDateTime::parse_from_str(&local, "%Y-%m-%d %H:%M:%S").is_ok());
    }

    #[test]
    fn duration() {
        check(&[
            ("{{duration 125}}", "00:02:05"),
            ("{{duration 4500 'mm:ss'}}", "75:00"),
            ("{{duration 3725 'hh:mm'}}", "01:02"),
            ("{{duration '2.5' 'ms'}}", "2500"),
        ]);
        fails(&[("{{duration name}}", "duration"), ("{{duration 5 'x'}}", "duration")]);
    }

    #[test]
    fn date() {
        check(&[
            ("{{date 1700000000}}", "2023-11-14T22:13:20Z"),
            (r#"{{date 1700000000123 "unix_ms"}}"#, "1700000000123"),
            (r#"{{date 1700000000123 "unix"}}"#, "1700000000"),
            (r#"{{date "1700000000" "unix"}}"#, "1700000000"),
            (r#"{{date "2023-11-15T05:13:20+07:00" "%d %H:%M"}}"#, "14 22:13"),
        ]);
    }

    #[test]
    fn uuid() {
        let id = render("{{uuid}}").unwrap();
        assert_eq!(id.len(), 36);
        assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 4);
        assert_ne!(id, render("{{uuid}}").unwrap());
    }

    #[test]
    fn default() {
        check(&[
            (r#"{{default nil "fb"}}"#, "fb"),
            (r#"{{default call.note "fb"}}"#, "fb"),
            (r#"{{default empty "fb"}}"#, "fb"),
            (r#"{{default name "fb"}}"#, "An"),
            (r#"{{default 0 "fb"}}"#, "0"),
            ("{{json (default nil 5)}}", "5"),
            (r#"{{#if missing}}{{missing}}{{else}}none{{/if}}"#, "none"),
        ]);
    }

    #[test]
    fn phone_e164() {
        check(&[
            (r#"{{phone_e164 "0901234567"}}"#, "+84901234567"),
            (r#"{{phone_e164 "+84 90 123 4567"}}"#, "+84901234567"),
            (r#"{{phone_e164 "+84 90 123 4567" "US"}}"#, "+84901234567"),
            (r#"{{phone_e164 "(415) 555-2671" "US"}}"#, "+14155552671"),
            (r#"{{phone_e164 "84901234567"}}"#, "+84901234567"),
            ("{{phone_e164 84901234567}}", "+84901234567"),
            (r#"{{phone_e164 "901234567"}}"#, "+84901234567"),
            (r#"{{phone_e164 "0084901234567"}}"#, "+84901234567"),
            (r#"{{phone_e164 "4155552671" region="us"}}"#, "+14155552671"),
        ]);
    }

    #[test]
    fn phone_national() {
        check(&[
            (r#"{{phone_national "+84901234567"}}"#, "0901 234 567"),
            (r#"{{phone_national "4155552671" "US"}}"#, "(415) 555-2671"),
        ]);
    }

    #[test]
    fn phone_digits() {
        check(&[(r#"{{phone_digits "+84 (90) 123-4567"}}"#, "84901234567")]);
    }

    #[test]
    fn phone_last() {
        check(&[
            (r#"{{phone_last "+84 (90) 123-4567" 4}}"#, "4567"),
            (r#"{{phone_last "12" 4}}"#, "12"),
            (r#"{{phone_last (phone_e164 "0901234567") "3"}}"#, "567"),
        ]);
    }

    #[test]
    fn mul() {
        check(&[
            (r#"{{mul "125" 1000}}"#, "125000"),
            ("{{mul 1.5 2}}", "3.0"),
            ("{{mul n (add 1 1)}}", "14"),
            ("{{mul 9223372036854775807 2}}", "1.8446744073709552e+19"),
        ]);
    }

    #[test]
    fn add() {
        check(&[("{{add 2 3}}", "5"), (r#"{{add "0.5" 1}}"#, "1.5")]);
    }

    #[test]
    fn concat() {
        check(&[(r#"{{concat name " #" n "-" flag}}"#, "An #7-true")]);
    }

    #[test]
    fn lower_upper_trim() {
        check(&[(r#"{{lower "ÂbC"}}"#, "âbc"), (r#"{{upper "âbc"}}"#, "ÂBC"), (r#"{{trim "  x y  "}}"#, "x y")]);
    }

    #[test]
    fn bad_input_is_an_error_naming_the_helper() {
        fails(&[
            (r#"{{hmac_sha256 "k" "m" encoding="x"}}"#, "hmac_sha256: encoding"),
            (r#"{{now "%Q%"}}"#, "now: invalid strftime pattern"),
            (r#"{{date 0 "%Q%"}}"#, "date: invalid strftime pattern"),
            ("{{date nil}}", "date: cannot read a date from null"),
            ("{{date flag}}", "date: cannot read a date"),
            (r#"{{date "yesterday"}}"#, "date: cannot read a date"),
            ("{{default nope 1}}", "default: `nope` does not exist"),
            (r#"{{phone_e164 "not a phone"}}"#, "phone_e164: cannot"),
            (r#"{{phone_national "  2 22#:"}}"#, "phone_national: cannot"),
            (r#"{{phone_e164 "0901" "XX"}}"#, "phone_e164: unknown region"),
            (r#"{{phone_last "123" -1}}"#, "phone_last: n must be"),
            (r#"{{mul "abc" 2}}"#, "mul: parameter 1 is not a number"),
            ("{{mul 2 flag}}", "mul: parameter 2 is not a number"),
            (r#"{{mul "inf" 2}}"#, "mul: parameter 1 is not a number"),
            ("{{concat name nil}}", "concat: parameter 2 is null"),
            ("{{md5}}", "md5 param at index 0"),
            (r#"{{upper "a" "b"}}"#, "upper: too many parameters (2)"),
            ("{{lower nil}}", "lower: parameter 1 is null"),
            ("{{sha256 nope}}", "sha256: `nope` does not exist"),
        ]);
    }
}
