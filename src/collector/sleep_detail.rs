//! `sleep_detail`: `get` (`{api}/v2/sleep`), the night minute by minute: the segments of
//! each sleep stage (the hypnogram) and the per-minute series a sleep analyzer or a watch
//! records (heart rate, breathing, snoring, heart-rate variability, movement). At most a day
//! a call.
//!
//! The scrape shows the latest stage and the latest value of each series, with their times;
//! the backfill and the running exporter's remote writer write every minute at its time.
//! `withings_sleep_state` is written at each segment's start and every 60 seconds within
//! it, so that any lookback window (a Grafana state timeline) shows the stage.
//!
//! A sleep analyzer uploads the night when its sleeper gets up, a watch when it next syncs:
//! each fetch asks again from [`LATE_SECONDS`] before the newest minute seen.

use super::{
    Collector, Emitted, Fetch, History, HistoryPage, Paged, Settings, Sink, State, Synced, Window,
    bounded_since, lock, write_each,
};
use crate::render::families::GaugeFamilies;
use crate::withings::lenient::{Decimal, value_decimal as decimal, value_text as text};
use crate::withings::paging::BoxFuture;
use crate::withings::{ApiError, Request, RequestError, success_body_as};
use prometheus::proto::MetricFamily;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::collections::BTreeMap;
use std::sync::Mutex;

const ACTION: &str = "get";
/// Labelled apart from the other `get`s in `withings_api_requests_total`.
const LABEL: &str = "sleep_get";
const PATH: &str = "v2/sleep";

/// The longest span one call answers.
pub const MAX_SPAN_SECONDS: i64 = 86_400;
/// What a backfill without `--since` reads of it: the last year.
pub const REACH_SECONDS: i64 = 365 * 86_400;
/// How far before the newest minute seen a fetch asks again: a night's minutes arrive when
/// the device uploads it, all at once, but a watch may send the end of a night a sync later.
pub const LATE_SECONDS: i64 = 6 * 3600;

/// The stage of `withings_sleep_state` written every this many seconds within a segment.
pub const STATE_STEP_SECONDS: i64 = 60;

const STATE_METRIC: &str = "withings_sleep_state";
const STATE_HELP: &str = "Sleep stage as Withings numbers it: 0 awake, 1 light, 2 deep, 3 REM, 4 manual, 5 unspecified, 15 out of bed; at each segment's start and every minute within it.";

/// A per-minute series: Withings' field, the family, its help, the power of ten to base
/// units (milliseconds to seconds: -3).
struct Field {
    field: &'static str,
    metric: &'static str,
    help: &'static str,
    shift: i32,
}

const FIELDS: &[Field] = &[
    Field {
        field: "hr",
        metric: "withings_sleep_heart_rate_bpm",
        help: "Heart rate in bed, minute by minute, in beats per minute.",
        shift: 0,
    },
    Field {
        field: "rr",
        metric: "withings_sleep_breathing_rate_per_minute",
        help: "Breathing rate in bed, minute by minute, in breaths per minute.",
        shift: 0,
    },
    Field {
        field: "snoring",
        // Not withings_sleep_snoring_seconds: the `sleep` collector's night total has that
        // name with the same labels.
        metric: "withings_sleep_minute_snoring_seconds",
        help: "Time snoring in each minute in bed, in seconds.",
        shift: 0,
    },
    Field {
        field: "sdnn_1",
        metric: "withings_sleep_hrv_sdnn_seconds",
        help: "Heart-rate variability in bed (SDNN over one minute), in seconds.",
        shift: -3,
    },
    Field {
        field: "rmssd",
        metric: "withings_sleep_hrv_rmssd_seconds",
        help: "Heart-rate variability in bed (RMSSD over a few seconds), in seconds.",
        shift: -3,
    },
    Field {
        field: "hrv_quality",
        metric: "withings_sleep_hrv_quality",
        help: "Withings' quality score of the heart-rate variability in bed.",
        shift: 0,
    },
    Field {
        field: "mvt_score",
        metric: "withings_sleep_movement_score",
        help: "Intensity of movement in bed, minute by minute (0-255; Sleep Analyzer).",
        shift: 0,
    },
    Field {
        field: "chest_movement_rate",
        metric: "withings_sleep_chest_movement_rate_per_minute",
        help: "Chest movements per minute in bed.",
        shift: 0,
    },
    Field {
        field: "breathing_sounds",
        metric: "withings_sleep_breathing_sounds_seconds",
        help: "Time breathing sounds were tracked in each minute in bed, in seconds.",
        shift: 0,
    },
];

/// One segment of one stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub device_id: String,
    pub device_model: String,
    pub start: i64,
    pub end: i64,
    pub state: i64,
}

/// One minute's value of one series.
#[derive(Debug, Clone, PartialEq)]
pub struct Minute {
    pub at: i64,
    pub device: usize,
    /// Index in [`FIELDS`].
    pub field: usize,
    pub value: Decimal,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct SleepDetailPage {
    /// The devices of the page: (id, model).
    pub devices: Vec<(String, String)>,
    pub segments: Vec<Segment>,
    pub minutes: Vec<Minute>,
    pub malformed_rows: usize,
}

impl Paged for SleepDetailPage {
    fn more(&self) -> bool {
        false
    }
    fn offset(&self) -> Option<i64> {
        None
    }
}

#[derive(Deserialize)]
struct BodyRaw<'a> {
    #[serde(borrow, default)]
    series: Vec<&'a RawValue>,
}

/// Parses a `v2/sleep get` answer. A segment without its times or stage is counted and
/// skipped; a minute whose key is not a time is left out.
pub fn parse_get(body: &[u8]) -> Result<SleepDetailPage, ApiError> {
    let parsed: BodyRaw = success_body_as(LABEL, body)?;
    let mut page = SleepDetailPage::default();
    for raw in parsed.series {
        let Ok(serde_json::Value::Object(segment)) = serde_json::from_str(raw.get()) else {
            page.malformed_rows += 1;
            continue;
        };
        let int = |key: &str| segment.get(key).and_then(decimal).map(Decimal::to_f64);
        let (Some(start), Some(end), Some(state)) =
            (int("startdate"), int("enddate"), int("state"))
        else {
            page.malformed_rows += 1;
            continue;
        };
        let (start, end, state) = (start as i64, end as i64, state as i64);
        if end < start {
            page.malformed_rows += 1;
            continue;
        }
        let id = {
            let hash = text(segment.get("hash_deviceid"));
            if hash.is_empty() {
                text(segment.get("deviceid"))
            } else {
                hash
            }
        };
        let device = (id, text(segment.get("model")));
        let index = match page.devices.iter().position(|d| *d == device) {
            Some(i) => i,
            None => {
                page.devices.push(device.clone());
                page.devices.len() - 1
            }
        };
        page.segments.push(Segment {
            device_id: device.0,
            device_model: device.1,
            start,
            end,
            state,
        });
        for (field, f) in FIELDS.iter().enumerate() {
            let Some(serde_json::Value::Object(map)) = segment.get(f.field) else {
                continue;
            };
            for (at, value) in map {
                let (Ok(at), Some(value)) = (at.trim().parse::<i64>(), decimal(value)) else {
                    continue;
                };
                if let Some(value) = value.scaled(f.shift) {
                    page.minutes.push(Minute {
                        at,
                        device: index,
                        field,
                        value,
                    });
                }
            }
        }
    }
    page.segments.sort_by_key(|s| s.start);
    page.minutes.sort_by_key(|m| m.at);
    Ok(page)
}

/// The request of the span `from`..=`to` (at most a day).
pub fn request(from: i64, to: i64) -> Request {
    Request::new(PATH, ACTION)
        .labelled(LABEL)
        .field("startdate", from)
        .field("enddate", to)
        .field(
            "data_fields",
            FIELDS.iter().map(|f| f.field).collect::<Vec<_>>().join(","),
        )
}

/// Every sample of a page at its time, for the backfill and the remote writer, and for the
/// names the documentation lists.
pub fn page_series(
    page: &SleepDetailPage,
    mut put: impl FnMut(&'static str, &'static str, &[(&'static str, &str)], i64, f64),
) {
    for segment in &page.segments {
        let device = [
            ("device_id", segment.device_id.as_str()),
            ("device_model", segment.device_model.as_str()),
        ];
        let mut at = segment.start;
        while at < segment.end.max(segment.start + 1) {
            put(STATE_METRIC, STATE_HELP, &device, at, segment.state as f64);
            at += STATE_STEP_SECONDS;
        }
    }
    for minute in &page.minutes {
        let (id, model) = &page.devices[minute.device];
        let f = &FIELDS[minute.field];
        put(
            f.metric,
            f.help,
            &[("device_id", id), ("device_model", model)],
            minute.at,
            minute.value.to_f64(),
        );
    }
}

pub struct SleepDetail;

impl Collector for SleepDetail {
    fn name(&self) -> &'static str {
        "sleep_detail"
    }
    fn scope(&self) -> &'static str {
        "user.activity"
    }
    fn applis(&self) -> &'static [i64] {
        &[44]
    }
    fn action(&self) -> &'static str {
        LABEL
    }
    fn state(&self, _: &Settings) -> Box<dyn State> {
        Box::new(Live::default())
    }
    fn history(&self) -> Option<&dyn History> {
        Some(self)
    }
}

/// The latest stage and the latest minute of each series of each device.
#[derive(Default)]
struct Live(Mutex<Latest>);

#[derive(Default)]
struct Latest {
    /// (device id, model) to (segment start, stage).
    state: BTreeMap<(String, String), (i64, i64)>,
    /// (device id, model, field) to (time, value).
    minutes: BTreeMap<(String, String, usize), (i64, Decimal)>,
    newest: Option<i64>,
    emitted: Emitted,
}

impl Latest {
    fn merge(&mut self, page: SleepDetailPage) -> usize {
        let mut updated = 0;
        for s in &page.segments {
            self.newest = self.newest.max(Some(s.end));
            let key = (s.device_id.clone(), s.device_model.clone());
            if self.state.get(&key).is_none_or(|(at, _)| *at <= s.start) {
                self.state.insert(key, (s.start, s.state));
                updated += 1;
            }
        }
        for m in &page.minutes {
            self.newest = self.newest.max(Some(m.at));
            let (id, model) = page.devices[m.device].clone();
            let key = (id, model, m.field);
            if self.minutes.get(&key).is_none_or(|(at, _)| *at <= m.at) {
                self.minutes.insert(key, (m.at, m.value));
                updated += 1;
            }
        }
        updated
    }

    fn families(&self) -> Vec<MetricFamily> {
        let mut out = GaugeFamilies::new();
        let stamp = "withings_sleep_detail_timestamp_seconds";
        let stamp_help = "Unix time of the latest minute of each in-bed series of each device (measurement: Withings' field, or state for the stage's segment start).";
        for ((id, model), (at, state)) in &self.state {
            let device = [("device_id", id.as_str()), ("device_model", model.as_str())];
            out.push(STATE_METRIC, STATE_HELP, &device, *state as f64);
            out.push(
                stamp,
                stamp_help,
                &[device[0], device[1], ("measurement", "state")],
                *at as f64,
            );
        }
        for ((id, model, field), (at, value)) in &self.minutes {
            let f = &FIELDS[*field];
            let device = [("device_id", id.as_str()), ("device_model", model.as_str())];
            out.push(f.metric, f.help, &device, value.to_f64());
            out.push(
                stamp,
                stamp_help,
                &[device[0], device[1], ("measurement", f.field)],
                *at as f64,
            );
        }
        out.finish()
    }
}

impl State for Live {
    fn sync<'a>(&'a self, fetch: &'a Fetch<'a>) -> BoxFuture<'a, Result<Synced, RequestError>> {
        Box::pin(async move {
            let now = fetch.now();
            let newest = lock(&self.0).newest;
            let from = bounded_since(newest, now, LATE_SECONDS, MAX_SPAN_SECONDS);
            let page = fetch.call(&request(from, now), parse_get).await?;
            fetch.skip("malformed", page.malformed_rows);
            let mut latest = lock(&self.0);
            // A night's minutes and stages are final once uploaded: to the remote writer,
            // what the last reads of the window had not.
            latest
                .emitted
                .emit_new(fetch, from, |put| page_series(&page, put));
            let rows = page.segments.len();
            let updated = latest.merge(page);
            Ok(Synced {
                groups: rows,
                updated,
            })
        })
    }

    fn families(&self) -> Vec<MetricFamily> {
        lock(&self.0).families()
    }
}

impl History for SleepDetail {
    fn by_days(&self) -> bool {
        false
    }
    fn rows(&self) -> &'static str {
        "sleep segments"
    }
    fn max_span(&self) -> Option<i64> {
        Some(MAX_SPAN_SECONDS)
    }
    fn reach(&self) -> Option<i64> {
        Some(REACH_SECONDS)
    }
    fn request(&self, _: &Settings, window: Window<'_>, _: Option<i64>) -> Request {
        request(window.span.0, window.span.1)
    }
    fn parse(&self, body: &[u8]) -> Result<Box<dyn HistoryPage>, ApiError> {
        Ok(Box::new(parse_get(body)?))
    }
}

impl HistoryPage for SleepDetailPage {
    fn malformed_rows(&self) -> usize {
        self.malformed_rows
    }

    /// Each minute and each stage at its own time.
    fn write(&self, _: &Settings, _: i64, out: &mut dyn Sink) -> std::io::Result<usize> {
        write_each(out, |put| page_series(self, put))?;
        Ok(self.segments.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference's shape: two segments of a sleep analyzer with per-minute maps, a
    /// watch's segment, and a segment without its stage.
    const ANSWER: &str = r#"{"status":0,"body":{"series":[
        {"startdate":1000,"enddate":1180,"state":1,"model":"Aura Sensor V2","model_id":63,
         "hash_deviceid":"a1","hr":{"1000":58,"1060":57},"rr":{"1000":14},"snoring":{"1060":12},
         "rmssd":{"1000":41}},
        {"startdate":1180,"enddate":1300,"state":2,"model":"Aura Sensor V2","model_id":63,
         "hash_deviceid":"a1","hr":{"1180":54,"soon":1}},
        {"startdate":1000,"enddate":1060,"state":0,"model":"ScanWatch 2","deviceid":"w1"},
        {"startdate":2000,"enddate":2060,"model":"Aura Sensor V2"}
    ]}}"#;

    #[test]
    fn the_hypnogram_every_minute_and_the_per_minute_series_in_base_units() {
        let page = parse_get(ANSWER.as_bytes()).unwrap();
        assert_eq!(page.malformed_rows, 1);
        let mut written = Vec::new();
        page_series(&page, |name, _, labels, at, value| {
            written.push((name, labels[1].1.to_owned(), at, value));
        });
        let of = |name: &str, model: &str| -> Vec<(i64, f64)> {
            written
                .iter()
                .filter(|w| w.0 == name && w.1 == model)
                .map(|w| (w.2, w.3))
                .collect()
        };
        // Light from 1000 to 1180 (three minutes), deep from 1180 to 1300 (two).
        assert_eq!(
            of(STATE_METRIC, "Aura Sensor V2"),
            [
                (1000, 1.0),
                (1060, 1.0),
                (1120, 1.0),
                (1180, 2.0),
                (1240, 2.0)
            ]
        );
        assert_eq!(of(STATE_METRIC, "ScanWatch 2"), [(1000, 0.0)]);
        assert_eq!(
            of("withings_sleep_heart_rate_bpm", "Aura Sensor V2"),
            [(1000, 58.0), (1060, 57.0), (1180, 54.0)]
        );
        assert_eq!(
            of("withings_sleep_hrv_rmssd_seconds", "Aura Sensor V2"),
            [(1000, 0.041)]
        );
        assert_eq!(
            of("withings_sleep_minute_snoring_seconds", "Aura Sensor V2"),
            [(1060, 12.0)]
        );
        let mut latest = Latest::default();
        latest.merge(page);
        assert_eq!(latest.newest, Some(1300));
        let text = crate::render::families::encode(latest.families());
        assert!(
            text.contains(
                "withings_sleep_state{device_id=\"a1\",device_model=\"Aura Sensor V2\"} 2\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("withings_sleep_heart_rate_bpm{device_id=\"a1\",device_model=\"Aura Sensor V2\"} 54\n"),
            "{text}"
        );
        assert!(text.contains("withings_sleep_detail_timestamp_seconds{device_id=\"a1\",device_model=\"Aura Sensor V2\",measurement=\"hr\"} 1180\n"), "{text}");
    }

    #[test]
    fn a_day_a_request_labelled_apart() {
        let r = request(10, 20);
        assert_eq!(r.action, "sleep_get");
        assert_eq!(r.form[0], ("action", "get".to_owned()));
        assert_eq!(r.form[1], ("startdate", "10".to_owned()));
        assert_eq!(r.form[2], ("enddate", "20".to_owned()));
        assert!(
            parse_get(br#"{"status":0,"body":{"series":[]}}"#)
                .unwrap()
                .segments
                .is_empty()
        );
    }
}
