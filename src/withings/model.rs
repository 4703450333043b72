//! The shape of Withings answers, as they really come (see `withings-api.md`): tolerant of
//! the type drift seen in captured responses, strict about what we actually use.

use super::lenient;
use serde::Deserialize;
use serde_json::value::RawValue;

/// `{"status": N, "body": {...}, "error": "..."}`. The body is kept raw: what it must
/// contain depends on `status`, and for a failure it is usually `{}`.
#[derive(Debug, Deserialize)]
pub struct Envelope<'a> {
    #[serde(deserialize_with = "lenient::int")]
    pub status: i64,
    #[serde(borrow, default)]
    pub body: Option<&'a RawValue>,
    #[serde(default)]
    pub error: Option<serde_json::Value>,
    /// Only on some failures, e.g. 601 "too many requests".
    #[serde(default, deserialize_with = "lenient::opt_int")]
    pub wait_seconds: Option<i64>,
}

impl Envelope<'_> {
    /// Withings' `error` text, on one line: it ends up in a log line, where a newline in it
    /// would forge a second line. Withings sends a string; anything else is described by its
    /// JSON type and size only, since its content could be anything, the token fields of
    /// the request included (`{"error":{"refresh_token":"..."}}`, found by the fuzzer).
    pub fn error_text(&self) -> Option<String> {
        let kind = match &self.error {
            None | Some(serde_json::Value::Null) => return None,
            Some(serde_json::Value::String(s)) => {
                return Some(crate::text::one_line(s).into_owned());
            }
            Some(serde_json::Value::Object(_)) => "an object",
            Some(serde_json::Value::Array(_)) => "an array",
            Some(serde_json::Value::Number(_)) => "a number",
            Some(serde_json::Value::Bool(_)) => "a boolean",
        };
        let size = self.error.as_ref().map_or(0, |v| v.to_string().len());
        Some(format!(
            "error field is {kind} of {size} bytes, not text (its content is not shown)"
        ))
    }
}

/// `body` of a successful `getmeas`. Groups are kept raw so that one malformed group is
/// skipped instead of failing the whole answer.
#[derive(Debug, Deserialize)]
pub struct GetmeasBodyRaw<'a> {
    #[serde(default, deserialize_with = "lenient::opt_int")]
    pub updatetime: Option<i64>,
    #[serde(default)]
    pub timezone: Option<String>,
    #[serde(borrow, default)]
    pub measuregrps: Vec<&'a RawValue>,
    #[serde(default, deserialize_with = "lenient::flag")]
    pub more: bool,
    #[serde(default, deserialize_with = "lenient::opt_int")]
    pub offset: Option<i64>,
    /// Some failures put `wait_seconds` in the body rather than beside it.
    #[serde(default, deserialize_with = "lenient::opt_int")]
    pub wait_seconds: Option<i64>,
}

/// A measure group: one sitting on one device.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct MeasureGroup {
    #[serde(deserialize_with = "lenient::int")]
    pub grpid: i64,
    #[serde(default, deserialize_with = "lenient::opt_int")]
    pub attrib: Option<i64>,
    #[serde(deserialize_with = "lenient::int")]
    pub date: i64,
    #[serde(default, deserialize_with = "lenient::opt_int")]
    pub created: Option<i64>,
    #[serde(default, deserialize_with = "lenient::opt_int")]
    pub modified: Option<i64>,
    #[serde(default, deserialize_with = "lenient::opt_int")]
    pub category: Option<i64>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub hash_deviceid: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub model: Option<String>,
    #[serde(default, deserialize_with = "lenient::flag")]
    pub is_inconclusive: bool,
    #[serde(default)]
    pub measures: Vec<Measure>,
}

/// One value in a group: the real value is `value × 10^unit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Measure {
    #[serde(deserialize_with = "lenient::int")]
    pub value: i64,
    #[serde(rename = "type", deserialize_with = "lenient::int")]
    pub kind: i64,
    #[serde(deserialize_with = "lenient::int")]
    pub unit: i64,
    /// The body part of a segmental measure (types 173–175); see `render::measures::POSITIONS`.
    /// Whole-body types carry one too, which nothing uses: a malformed one is `None` rather
    /// than a reason to lose the measure.
    #[serde(default, deserialize_with = "tolerant_position")]
    pub position: Option<i64>,
}

fn tolerant_position<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    Ok(match Option::<serde_json::Value>::deserialize(d)? {
        Some(serde_json::Value::Number(n)) => n.as_i64(),
        Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    })
}

/// A `getmeas` page after parsing: the groups that made sense, and how many did not.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GetmeasPage {
    pub updatetime: Option<i64>,
    pub timezone: Option<String>,
    pub groups: Vec<MeasureGroup>,
    pub malformed_groups: usize,
    pub more: bool,
    pub offset: Option<i64>,
}

/// `body` of a successful `requesttoken`.
#[derive(Deserialize)]
pub struct TokenBody {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub userid: Option<String>,
    pub access_token: crate::secret::Secret,
    pub refresh_token: crate::secret::Secret,
    #[serde(deserialize_with = "lenient::int")]
    pub expires_in: i64,
    #[serde(default)]
    pub scope: Option<String>,
    #[serde(default)]
    pub token_type: Option<String>,
}

impl TokenBody {
    /// The fields serde requires, which an error may name.
    pub const FIELDS: &'static [&'static str] = &["access_token", "refresh_token", "expires_in"];
}

impl std::fmt::Debug for TokenBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenBody")
            .field("userid", &self.userid)
            .field("expires_in", &self.expires_in)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}
