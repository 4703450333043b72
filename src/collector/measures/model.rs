//! `getmeas` (`{api}/measure`): its form and its answer, as they really come (see
//! `withings-api.md`): tolerant of the type drift seen in captured responses, strict about
//! what the exporter uses.

use crate::secret::Secret;
use crate::withings::lenient;
use crate::withings::paging::Paged;
use crate::withings::{ApiError, Request, WithingsClient, row_as, success_body_as};
use serde::Deserialize;
use serde_json::value::RawValue;

pub(super) const ACTION: &str = "getmeas";
const PATH: &str = "measure";

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
    /// The body part of a segmental measure (types 173–175); see `super::table::POSITIONS`.
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
impl Paged for GetmeasPage {
    fn more(&self) -> bool {
        self.more
    }
    fn offset(&self) -> Option<i64> {
        self.offset
    }
}

/// Parameters of one `getmeas` call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetmeasQuery {
    /// Comma-separated type codes.
    pub meastypes: String,
    /// Only groups created or modified after this unix time; 0 asks for everything.
    pub lastupdate: i64,
    /// The `offset` of the previous page when it said `more`.
    pub offset: Option<i64>,
}

impl GetmeasQuery {
    /// The request of one page of the live sync.
    pub fn request(&self) -> Request {
        Request::new(PATH, ACTION)
            .field("meastypes", &self.meastypes)
            .field("category", "1")
            .field("lastupdate", self.lastupdate)
            .offset(self.offset)
    }
}

/// One page of the groups dated from `startdate` to `enddate` (unix seconds, inclusive), for
/// the history backfill: dated windows let it tell how far it has come.
pub fn window_request(
    meastypes: &str,
    (startdate, enddate): (i64, i64),
    offset: Option<i64>,
) -> Request {
    Request::new(PATH, ACTION)
        .field("meastypes", meastypes)
        .field("category", "1")
        .field("startdate", startdate)
        .field("enddate", enddate)
        .offset(offset)
}

/// One `getmeas` page. The token goes in the `Authorization` header, the parameters in a
/// form body, so nothing secret ends up in a URL.
pub async fn getmeas(
    client: &WithingsClient,
    token: &Secret,
    query: &GetmeasQuery,
) -> Result<GetmeasPage, ApiError> {
    client.call(token, &query.request(), parse_getmeas).await
}

/// Parses a `getmeas` answer. A malformed group is counted and skipped; a malformed
/// envelope or body fails the whole answer.
pub fn parse_getmeas(body: &[u8]) -> Result<GetmeasPage, ApiError> {
    let parsed: GetmeasBodyRaw = success_body_as(ACTION, body)?;
    let mut page = GetmeasPage {
        updatetime: parsed.updatetime,
        timezone: parsed.timezone,
        groups: Vec::with_capacity(parsed.measuregrps.len()),
        malformed_groups: 0,
        more: parsed.more,
        offset: parsed.offset,
    };
    for raw_group in parsed.measuregrps {
        match row_as::<MeasureGroup>(ACTION, raw_group, "group") {
            Some(group) => page.groups.push(group),
            None => page.malformed_groups += 1,
        }
    }
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::withings::StatusClass;

    #[test]
    fn seed_expired_token_is_an_auth_failure() {
        let body = br#"{"status":401,"body":{},"error":"XRequestID: Not provided invalid_token: The access token provided is invalid"}"#;
        let err = parse_getmeas(body).unwrap_err();
        assert!(err.is_auth_failure(), "{err:?}");
        assert_eq!(err.status_label(), "401");
        assert!(err.to_string().contains("invalid_token"), "{err}");
    }

    #[test]
    fn rate_limit_carries_wait_seconds_from_either_place() {
        let beside = br#"{"status":601,"body":{},"error":"Too many requests","wait_seconds":42}"#;
        let inside = br#"{"status":601,"body":{"wait_seconds":"7"},"error":"Too many requests"}"#;
        for (body, want) in [(&beside[..], 42), (&inside[..], 7)] {
            match parse_getmeas(body).unwrap_err() {
                ApiError::Status {
                    class: StatusClass::RateLimited,
                    wait_seconds,
                    ..
                } => assert_eq!(wait_seconds, Some(want)),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn more_and_offset_as_booleans_or_integers() {
        let a =
            br#"{"status":0,"body":{"updatetime":"5","measuregrps":[],"more":true,"offset":3}}"#;
        let b = br#"{"status":0,"body":{"updatetime":5,"measuregrps":[],"more":0,"offset":false}}"#;
        let a = parse_getmeas(a).unwrap();
        assert!(a.more);
        assert_eq!((a.offset, a.updatetime), (Some(3), Some(5)));
        let b = parse_getmeas(b).unwrap();
        assert!(!b.more);
        assert_eq!(b.offset, Some(0));
    }

    #[test]
    fn a_malformed_group_is_skipped_not_fatal() {
        let body = br#"{"status":0,"body":{"measuregrps":[
            {"grpid":1,"date":"yesterday","measures":[]},
            [3, 0, 5, 5, 5, 1, "d", "m", false, []],
            {"grpid":2,"date":10,"deviceid":12,"hash_deviceid":12,"model":null,
             "measures":[{"value":1,"type":9,"unit":0,"extra":{"x":[1]}}],"new_field":true}
        ]}}"#;
        let page = parse_getmeas(body).unwrap();
        assert_eq!(page.malformed_groups, 2);
        assert_eq!(page.groups.len(), 1);
        assert_eq!(page.groups[0].hash_deviceid.as_deref(), Some("12"));
        assert_eq!(page.groups[0].model, None);
    }

    #[test]
    fn not_json_and_wrong_shapes_are_invalid_responses() {
        for body in [
            &b"<html>502 Bad Gateway</html>"[..],
            b"",
            b"{\"status\":0,\"body\":{\"measuregrps\":",
            b"[1,2,3]",
            b"{\"status\":\"ok\"}",
            b"{\"status\":0}",
            b"{\"status\":0,\"body\":{\"measuregrps\":{\"a\":1}}}",
            b"{\"status\":0,\"body\":[1,\"x\",[]]}",
            b"{\"status\":0,\"body\":null}",
        ] {
            let err = parse_getmeas(body).unwrap_err();
            assert_eq!(err.status_label(), "invalid_response", "{err:?}");
        }
    }
}
