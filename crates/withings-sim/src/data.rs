//! One simulated user's data beyond measure groups: activity days, sleep nights and
//! devices, and how the `v2/measure getactivity`, `v2/sleep getsummary` and
//! `v2/user getdevice` endpoints answer from it. Kept in one struct so that it moves with
//! the user when the simulator holds several.

use serde_json::{Value, json};
use std::collections::BTreeMap;

/// What the collectors' endpoints serve for one user.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UserExtras {
    /// `getactivity` rows, each with `date` (YYYY-MM-DD) and `modified`.
    pub activities: Vec<Value>,
    /// `getsummary` rows, each with `startdate`, `enddate`, `date` and `modified`.
    pub sleep: Vec<Value>,
    /// `getdevice` entries, served as they are (duplicates included).
    pub devices: Vec<Value>,
    /// `getworkouts` rows, each with `date` (YYYY-MM-DD) and `modified`.
    pub workouts: Vec<Value>,
    /// `v2/heart list` rows (ECG recordings), each with `timestamp` and `modified`.
    pub ecgs: Vec<Value>,
    /// `getgoals`' `goals` object, served as it is; `None` answers an empty `body`.
    pub goals: Option<Value>,
    /// `getintradayactivity` samples by unix time, each an object with `deviceid`, `model`
    /// and its fields; a sample is listed only from `visible_at` on when that is given (a
    /// watch that syncs late), the key itself never sent.
    pub intraday: BTreeMap<i64, Value>,
    /// `v2/sleep get` segments, each with `startdate`, `enddate`, `state` and its
    /// per-minute maps; listed only from `visible_at` on when given (a sleep analyzer
    /// uploads the night when its sleeper gets up), the key itself never sent.
    pub sleep_detail: Vec<Value>,
}

/// What of `extras` reached Withings in `(since, now]`, as the notifications Withings
/// sends for it: `(appli, startdate, enddate)`, the dates spanning what arrived. A watch's
/// sync (intraday samples listed from their `visible_at`) or a workout (`modified`) is
/// activity, 16; a night's segments uploaded, 44; an ECG recorded (`modified`), 54.
pub fn arrivals(extras: &UserExtras, since: i64, now: i64) -> Vec<(i64, i64, i64)> {
    let arrived = |at: Option<i64>| at.is_some_and(|at| since < at && at <= now);
    let visible_at = |v: &Value| v.get("visible_at").and_then(Value::as_i64);
    let modified = |v: &Value| v.get("modified").and_then(Value::as_i64);
    let mut out = Vec::new();
    let mut push = |appli: i64, dates: Vec<i64>| {
        if let (Some(first), Some(last)) = (dates.iter().min(), dates.iter().max()) {
            out.push((appli, *first, *last));
        }
    };
    let mut activity: Vec<i64> = extras
        .intraday
        .iter()
        .filter(|(_, sample)| arrived(visible_at(sample)))
        .map(|(at, _)| *at)
        .collect();
    activity.extend(
        extras
            .workouts
            .iter()
            .filter(|w| arrived(modified(w)))
            .filter_map(|w| w.get("startdate").and_then(Value::as_i64)),
    );
    push(16, activity);
    push(
        44,
        extras
            .sleep_detail
            .iter()
            .filter(|s| arrived(visible_at(s)))
            .filter_map(|s| s.get("startdate").and_then(Value::as_i64))
            .collect(),
    );
    push(
        54,
        extras
            .ecgs
            .iter()
            .filter(|e| arrived(modified(e)))
            .filter_map(|e| e.get("timestamp").and_then(Value::as_i64))
            .collect(),
    );
    out
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ExtrasError {
    #[error("an activity row lacks a valid `{0}`")]
    Activity(&'static str),
    #[error("a sleep row lacks a valid `{0}`")]
    Sleep(&'static str),
    #[error("a device entry is not a JSON object")]
    Device,
    #[error("a workout lacks a valid `{0}`")]
    Workout(&'static str),
    #[error("an ECG row lacks a valid `{0}`")]
    Ecg(&'static str),
}

fn is_ymd(text: &str) -> bool {
    text.parse::<jiff::civil::Date>().is_ok() && text.len() == 10
}

impl UserExtras {
    /// Checks that every row has what filtering needs, so that a test's typo fails loudly.
    pub fn validate(&self) -> Result<(), ExtrasError> {
        for row in &self.activities {
            if !row.get("date").and_then(Value::as_str).is_some_and(is_ymd) {
                return Err(ExtrasError::Activity("date"));
            }
            if row.get("modified").and_then(Value::as_i64).is_none() {
                return Err(ExtrasError::Activity("modified"));
            }
        }
        for row in &self.sleep {
            for key in ["startdate", "enddate", "modified"] {
                if row.get(key).and_then(Value::as_i64).is_none() {
                    return Err(ExtrasError::Sleep(key));
                }
            }
            if !row.get("date").and_then(Value::as_str).is_some_and(is_ymd) {
                return Err(ExtrasError::Sleep("date"));
            }
        }
        if !self.devices.iter().all(Value::is_object) {
            return Err(ExtrasError::Device);
        }
        for row in &self.workouts {
            if !row.get("date").and_then(Value::as_str).is_some_and(is_ymd) {
                return Err(ExtrasError::Workout("date"));
            }
            if row.get("modified").and_then(Value::as_i64).is_none() {
                return Err(ExtrasError::Workout("modified"));
            }
        }
        for row in &self.ecgs {
            for key in ["timestamp", "modified"] {
                if row.get(key).and_then(Value::as_i64).is_none() {
                    return Err(ExtrasError::Ecg(key));
                }
            }
        }
        Ok(())
    }
}

/// The scope a token needs for a collector endpoint, by path.
pub fn scope_for(path: &str) -> Option<&'static str> {
    match path {
        "/v2/measure" | "/v2/sleep" => Some("user.activity"),
        "/v2/heart" => Some("user.metrics"),
        "/v2/user" => Some("user.info"),
        _ => None,
    }
}

/// An integer form parameter as Withings reads it: absent is `None`, anything but an
/// integer is its "Invalid Params" error.
pub(crate) fn int_param(
    params: &BTreeMap<String, String>,
    key: &str,
) -> Result<Option<i64>, String> {
    params
        .get(key)
        .map(|v| {
            v.parse::<i64>()
                .map_err(|_| format!("Invalid Params: {key}"))
        })
        .transpose()
}

fn invalid(error: &str) -> Value {
    json!({"status": 293, "body": {}, "error": error})
}

/// The envelope for one request to a collector endpoint, as Withings gives it.
pub fn answer(
    extras: &UserExtras,
    path: &str,
    params: &BTreeMap<String, String>,
    page_size: usize,
    now: i64,
) -> Value {
    let action = params.get("action").map(String::as_str);
    let (rows, key) = match (path, action) {
        ("/v2/measure", Some("getactivity")) => (&extras.activities, "activities"),
        ("/v2/sleep", Some("getsummary")) => (&extras.sleep, "series"),
        ("/v2/measure", Some("getworkouts")) => (&extras.workouts, "series"),
        ("/v2/user", Some("getdevice")) => {
            return json!({"status": 0, "body": {"devices": extras.devices}});
        }
        ("/v2/user", Some("getgoals")) => {
            return match &extras.goals {
                Some(goals) => json!({"status": 0, "body": {"goals": goals}}),
                None => json!({"status": 0, "body": {}}),
            };
        }
        ("/v2/heart", Some("list")) => return heart_list(extras, params, page_size),
        ("/v2/measure", Some("getintradayactivity")) => return intraday(extras, params, now),
        ("/v2/sleep", Some("get")) => return sleep_get(extras, params, now),
        _ => return json!({"status": 2554, "body": {}, "error": "Not implemented"}),
    };
    let int = |key: &str| int_param(params, key);
    let (lastupdate, offset) = match (int("lastupdate"), int("offset")) {
        (Ok(l), Ok(o)) => (l, o.unwrap_or(0)),
        (Err(e), _) | (_, Err(e)) => return invalid(&e),
    };
    let start = params.get("startdateymd");
    let end = params.get("enddateymd");
    if lastupdate.is_some() && (start.is_some() || end.is_some()) {
        return invalid(
            "Invalid Params: lastupdate cannot be used with startdateymd or enddateymd",
        );
    }
    let range = match (start, end) {
        (Some(s), Some(e)) if is_ymd(s) && is_ymd(e) => Some((s.as_str(), e.as_str())),
        (None, None) if lastupdate.is_some() => None,
        _ => return invalid("Invalid Params: give lastupdate, or startdateymd and enddateymd"),
    };
    let selected: Vec<&Value> = rows
        .iter()
        .filter(|r| {
            lastupdate.is_none_or(|t| r.get("modified").and_then(Value::as_i64).unwrap_or(0) > t)
        })
        .filter(|r| {
            range.is_none_or(|(s, e)| {
                // YYYY-MM-DD compares as text in date order.
                let date = r.get("date").and_then(Value::as_str).unwrap_or("");
                s <= date && date <= e
            })
        })
        .collect();
    let offset = usize::try_from(offset).unwrap_or(0).min(selected.len());
    let end = (offset + page_size.max(1)).min(selected.len());
    let more = end < selected.len();
    json!({
        "status": 0,
        "body": {
            key: selected[offset..end],
            "more": more,
            "offset": if more { end } else { 0 },
        }
    })
}

/// `getintradayactivity`: the samples from `startdate` to `enddate`, at most the first 24
/// hours of the range (the last 24 hours without dates), as an object keyed by unix time,
/// or `[]` when there is none (as Withings answers).
fn intraday(extras: &UserExtras, params: &BTreeMap<String, String>, now: i64) -> Value {
    let int = |key: &str| int_param(params, key);
    let (start, end) = match (int("startdate"), int("enddate")) {
        (Ok(s), Ok(e)) => (s, e),
        (Err(e), _) | (_, Err(e)) => return invalid(&e),
    };
    let start = start.unwrap_or(now - 86_400);
    let end = end.unwrap_or(now).min(start.saturating_add(86_400));
    let mut series = serde_json::Map::new();
    for (at, sample) in extras.intraday.range(start..=end) {
        let mut sample = sample.clone();
        let visible_at = sample
            .as_object_mut()
            .and_then(|o| o.remove("visible_at"))
            .and_then(|v| v.as_i64());
        if visible_at.is_some_and(|v| v > now) {
            continue;
        }
        series.insert(at.to_string(), sample);
    }
    if series.is_empty() {
        return json!({"status": 0, "body": {"series": []}});
    }
    json!({"status": 0, "body": {"series": series}})
}

/// `v2/sleep get`: the segments that begin from `startdate` to `enddate` (both required,
/// at most 24 hours apart as `withings-api.md` says; a longer range answers its first day).
fn sleep_get(extras: &UserExtras, params: &BTreeMap<String, String>, now: i64) -> Value {
    let int = |key: &str| int_param(params, key);
    let (start, end) = match (int("startdate"), int("enddate")) {
        (Ok(Some(s)), Ok(Some(e))) => (s, e.min(s.saturating_add(86_400))),
        (Err(e), _) | (_, Err(e)) => return invalid(&e),
        _ => return invalid("Invalid Params: startdate and enddate are required"),
    };
    let series: Vec<Value> = extras
        .sleep_detail
        .iter()
        .filter(|s| {
            let begins = s
                .get("startdate")
                .and_then(Value::as_i64)
                .unwrap_or(i64::MIN);
            let visible = s
                .get("visible_at")
                .and_then(Value::as_i64)
                .unwrap_or(i64::MIN);
            (start..=end).contains(&begins) && visible <= now
        })
        .map(|s| {
            let mut s = s.clone();
            if let Some(o) = s.as_object_mut() {
                o.remove("visible_at");
            }
            s
        })
        .collect();
    json!({"status": 0, "body": {"series": series}})
}

/// `v2/heart list`: the recordings whose `timestamp` is within `startdate`..=`enddate`
/// (either may be absent), newest first as Withings lists them, paged by `offset`.
fn heart_list(extras: &UserExtras, params: &BTreeMap<String, String>, page_size: usize) -> Value {
    let int = |key: &str| int_param(params, key);
    let (start, end, offset) = match (int("startdate"), int("enddate"), int("offset")) {
        (Ok(s), Ok(e), Ok(o)) => (s, e, o.unwrap_or(0)),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return invalid(&e),
    };
    let mut selected: Vec<&Value> = extras
        .ecgs
        .iter()
        .filter(|r| {
            let t = r.get("timestamp").and_then(Value::as_i64).unwrap_or(0);
            start.is_none_or(|s| t >= s) && end.is_none_or(|e| t <= e)
        })
        .collect();
    selected.sort_by_key(|r| {
        std::cmp::Reverse(r.get("timestamp").and_then(Value::as_i64).unwrap_or(0))
    });
    let offset = usize::try_from(offset).unwrap_or(0).min(selected.len());
    let end = (offset + page_size.max(1)).min(selected.len());
    let more = end < selected.len();
    json!({
        "status": 0,
        "body": {
            "series": selected[offset..end],
            "more": more,
            "offset": if more { end } else { 0 },
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn extras() -> UserExtras {
        UserExtras {
            activities: (1..=5)
                .map(|d| json!({"date": format!("2023-10-0{d}"), "modified": 100 * d, "steps": d}))
                .collect(),
            sleep: vec![
                json!({"startdate": 1, "enddate": 2, "date": "2023-10-01", "modified": 300}),
            ],
            devices: vec![json!({"type": "Scale"}), json!({"type": "Scale"})],
            workouts: Vec::new(),
            intraday: BTreeMap::new(),
            sleep_detail: Vec::new(),
            ecgs: (1..=3)
                .map(|i| json!({"timestamp": 1000 * i, "modified": 1000 * i + 5, "ecg": {"afib": i - 1}}))
                .collect(),
            goals: Some(json!({"steps": 9000})),
        }
    }

    #[test]
    fn lastupdate_filters_by_modified_and_pages_by_offset() {
        let e = extras();
        let a = answer(
            &e,
            "/v2/measure",
            &params(&[("action", "getactivity"), ("lastupdate", "150")]),
            3,
            1_700_000_000,
        );
        assert_eq!(a["body"]["activities"].as_array().unwrap().len(), 3);
        assert_eq!(
            (a["body"]["more"].clone(), a["body"]["offset"].clone()),
            (json!(true), json!(3))
        );
        let b = answer(
            &e,
            "/v2/measure",
            &params(&[
                ("action", "getactivity"),
                ("lastupdate", "150"),
                ("offset", "3"),
            ]),
            3,
            1_700_000_000,
        );
        assert_eq!(b["body"]["activities"].as_array().unwrap().len(), 1);
        assert_eq!(b["body"]["activities"][0]["steps"], 5);
        assert_eq!(b["body"]["more"], json!(false));
    }

    #[test]
    fn ymd_range_is_inclusive_and_exclusive_with_lastupdate() {
        let e = extras();
        let a = answer(
            &e,
            "/v2/measure",
            &params(&[
                ("action", "getactivity"),
                ("startdateymd", "2023-10-02"),
                ("enddateymd", "2023-10-03"),
            ]),
            10,
            1_700_000_000,
        );
        assert_eq!(a["body"]["activities"].as_array().unwrap().len(), 2);
        for bad in [
            params(&[("action", "getactivity")]),
            params(&[
                ("action", "getactivity"),
                ("lastupdate", "1"),
                ("startdateymd", "2023-10-02"),
                ("enddateymd", "2023-10-03"),
            ]),
            params(&[("action", "getactivity"), ("startdateymd", "2023-10-02")]),
            params(&[("action", "getactivity"), ("lastupdate", "soon")]),
        ] {
            assert_eq!(
                answer(&e, "/v2/measure", &bad, 10, 1_700_000_000)["status"],
                293,
                "{bad:?}"
            );
        }
        let s = answer(
            &e,
            "/v2/sleep",
            &params(&[("action", "getsummary"), ("lastupdate", "0")]),
            10,
            1_700_000_000,
        );
        assert_eq!(s["body"]["series"].as_array().unwrap().len(), 1);
        let d = answer(
            &e,
            "/v2/user",
            &params(&[("action", "getdevice")]),
            10,
            1_700_000_000,
        );
        assert_eq!(d["body"]["devices"].as_array().unwrap().len(), 2);
        assert_eq!(
            answer(
                &e,
                "/v2/user",
                &params(&[("action", "get")]),
                10,
                1_700_000_000
            )["status"],
            2554
        );
    }

    #[test]
    fn heart_list_selects_by_recording_time_newest_first_and_goals_as_set() {
        let e = extras();
        let list = |pairs: &[(&str, &str)]| {
            let mut p = params(&[("action", "list")]);
            p.extend(params(pairs));
            answer(&e, "/v2/heart", &p, 2, 1_700_000_000)
        };
        let times = |v: &Value| -> Vec<i64> {
            v["body"]["series"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["timestamp"].as_i64().unwrap())
                .collect()
        };
        let first = list(&[]);
        assert_eq!(times(&first), [3000, 2000]);
        assert_eq!(
            (
                first["body"]["more"].clone(),
                first["body"]["offset"].clone()
            ),
            (json!(true), json!(2))
        );
        assert_eq!(times(&list(&[("offset", "2")])), [1000]);
        assert_eq!(
            times(&list(&[("startdate", "2000"), ("enddate", "2999")])),
            [2000]
        );
        assert_eq!(list(&[("startdate", "x")])["status"], 293);
        let goals = answer(
            &e,
            "/v2/user",
            &params(&[("action", "getgoals")]),
            10,
            1_700_000_000,
        );
        assert_eq!(goals["body"]["goals"]["steps"], 9000);
        let none = UserExtras::default();
        assert_eq!(
            answer(
                &none,
                "/v2/user",
                &params(&[("action", "getgoals")]),
                10,
                1_700_000_000
            ),
            json!({"status": 0, "body": {}})
        );
        assert_eq!(scope_for("/v2/heart"), Some("user.metrics"));
        let mut e = extras();
        e.workouts = vec![
            json!({"date": "2023-10-01", "modified": 10, "category": 2}),
            json!({"date": "2023-10-03", "modified": 30, "category": 1}),
        ];
        let w = answer(
            &e,
            "/v2/measure",
            &params(&[("action", "getworkouts"), ("lastupdate", "20")]),
            10,
            1_700_000_000,
        );
        assert_eq!(w["body"]["series"], json!([e.workouts[1]]));
    }

    #[test]
    fn arrivals_are_what_became_visible_in_the_interval_as_notifications() {
        let mut e = UserExtras::default();
        for (at, visible) in [(1_000, 2_400), (1_600, 2_400), (2_200, 4_200)] {
            e.intraday
                .insert(at, json!({"heart_rate": 60, "visible_at": visible}));
        }
        e.sleep_detail
            .push(json!({"startdate": 500, "enddate": 900, "state": 1, "visible_at": 3_000}));
        e.ecgs
            .push(json!({"timestamp": 1_500, "modified": 1_800, "ecg": {"afib": 1}}));
        // Nothing arrived yet; a sample listed at exactly `since` was notified before.
        assert_eq!(arrivals(&e, 0, 1_000), []);
        assert_eq!(arrivals(&e, 1_000, 2_000), [(54, 1_500, 1_500)]);
        assert_eq!(arrivals(&e, 2_000, 2_400), [(16, 1_000, 1_600)]);
        assert_eq!(arrivals(&e, 2_400, 3_000), [(44, 500, 500)]);
        assert_eq!(arrivals(&e, 3_000, 5_000), [(16, 2_200, 2_200)]);
        assert_eq!(
            arrivals(&e, 0, 5_000),
            [(16, 1_000, 2_200), (44, 500, 500), (54, 1_500, 1_500)]
        );
    }

    #[test]
    fn intraday_answers_a_day_at_most_keyed_by_time_and_hides_what_is_not_synced_yet() {
        let mut e = UserExtras::default();
        for (at, visible) in [
            (1_000, 1_000),
            (50_000, 50_000),
            (90_000, 90_000),
            (90_600, 200_000),
        ] {
            e.intraday
                .insert(at, json!({"heart_rate": at / 1000, "visible_at": visible}));
        }
        let ask = |pairs: &[(&str, &str)], now: i64| {
            let mut p = params(&[("action", "getintradayactivity")]);
            p.extend(params(pairs));
            answer(&e, "/v2/measure", &p, 10, now)
        };
        let keys = |v: &Value| -> Vec<String> {
            v["body"]["series"]
                .as_object()
                .map(|o| o.keys().cloned().collect())
                .unwrap_or_default()
        };
        // A range of two days answers its first day only.
        let two_days = ask(&[("startdate", "0"), ("enddate", "172800")], 100_000);
        assert_eq!(keys(&two_days), ["1000", "50000"]);
        assert!(
            two_days["body"]["series"]["1000"]
                .get("visible_at")
                .is_none()
        );
        // Without dates: the last day; a sample not synced yet is not listed.
        assert_eq!(keys(&ask(&[], 100_000)), ["50000", "90000"]);
        assert_eq!(
            keys(&ask(&[("startdate", "80000")], 200_000)),
            ["90000", "90600"]
        );
        // Nothing: an empty list, as Withings answers.
        assert_eq!(
            ask(&[("startdate", "300000"), ("enddate", "300010")], 400_000)["body"]["series"],
            json!([])
        );
        assert_eq!(ask(&[("startdate", "x")], 0)["status"], 293);
    }

    #[test]
    fn sleep_get_answers_the_segments_of_the_range_once_uploaded() {
        let mut e = UserExtras::default();
        for (start, visible) in [(1_000, 5_000), (2_000, 5_000), (100_000, 200_000)] {
            e.sleep_detail.push(
                json!({"startdate": start, "enddate": start + 600, "state": 1,
                                       "hr": {start.to_string(): 55}, "visible_at": visible}),
            );
        }
        let ask = |start: &str, end: &str, now: i64| {
            answer(
                &e,
                "/v2/sleep",
                &params(&[("action", "get"), ("startdate", start), ("enddate", end)]),
                10,
                now,
            )
        };
        let starts = |v: &Value| -> Vec<i64> {
            v["body"]["series"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["startdate"].as_i64().unwrap())
                .collect()
        };
        assert_eq!(starts(&ask("0", "3000", 4_000)), Vec::<i64>::new());
        assert_eq!(starts(&ask("0", "3000", 6_000)), [1_000, 2_000]);
        assert!(
            ask("0", "3000", 6_000)["body"]["series"][0]
                .get("visible_at")
                .is_none()
        );
        // A week asked: its first day only.
        assert_eq!(starts(&ask("0", "604800", 300_000)), [1_000, 2_000]);
        let missing = answer(&e, "/v2/sleep", &params(&[("action", "get")]), 10, 0);
        assert_eq!(missing["status"], 293);
    }

    #[test]
    fn validation_names_the_missing_field() {
        let mut e = extras();
        assert_eq!(e.validate(), Ok(()));
        e.activities
            .push(json!({"date": "20/10/2023", "modified": 1}));
        assert_eq!(e.validate(), Err(ExtrasError::Activity("date")));
        let mut e = extras();
        e.ecgs.push(json!({"timestamp": 5}));
        assert_eq!(e.validate(), Err(ExtrasError::Ecg("modified")));
    }
}
