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
/// A `wait_seconds` that a 601 answer may carry inside its body rather than beside it.
#[derive(Debug, Deserialize)]
pub struct WaitBody {
    #[serde(default, deserialize_with = "lenient::opt_int")]
    pub wait_seconds: Option<i64>,
}

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
