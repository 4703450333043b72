//! `intraday`: `getintradayactivity` (`{api}/v2/measure`), a watch's samples through the day
//! at their own times: heart rate every few minutes, steps, SpO2, HRV, breathing rate, ...
//! Withings answers at most 24 hours a call, keyed by the sample's unix time, each sample
//! with the device that took it: a phone and a watch are two series, never added.
//!
//! The scrape shows the latest sample of each series and its time; the backfill (and the
//! running exporter's remote writer) writes every sample at its own time, in windows of a
//! day ([`History::max_span`]).
//!
//! A watch syncs late, through the phone, typically within the hour: each fetch asks again
//! from [`LATE_SYNC_SECONDS`] before the newest sample it saw, so a sample that arrives
//! late is still read (the scrape shows the latest; a sample older than one already shown
//! changes nothing there, and the remote writer reads days back).

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

const ACTION: &str = "getintradayactivity";
const PATH: &str = "v2/measure";

/// The longest span one call answers.
pub const MAX_SPAN_SECONDS: i64 = 86_400;

/// What a backfill without `--since` reads of it: the last year, 365 requests an account.
pub const REACH_SECONDS: i64 = 365 * 86_400;

/// How far before the newest sample seen a fetch asks again. The simulator's watches sync
/// every 30 minutes and a sync takes 10 to reach Withings, so a sample is listed 10 to 40
/// minutes after it was taken, and Withings' guidance is "within the hour": an hour covers
/// every sync the next fetch can see, at no extra request (one call covers a day).
pub const LATE_SYNC_SECONDS: i64 = 3600;

/// Every field of an intraday sample the exporter shows: Withings' field, the family, its
/// help, and the power of ten that turns Withings' unit into the base unit (ms to seconds
/// -3, percent to a ratio -2); `kcal` marks kilocalories, turned into joules.
struct Field {
    field: &'static str,
    metric: &'static str,
    help: &'static str,
    shift: i32,
    kcal: bool,
}

const fn field(field: &'static str, metric: &'static str, help: &'static str, shift: i32) -> Field {
    Field {
        field,
        metric,
        help,
        shift,
        kcal: false,
    }
}

const FIELDS: &[Field] = &[
    field(
        "heart_rate",
        "withings_intraday_heart_rate_bpm",
        "Heart rate at each intraday sample of the device, in beats per minute.",
        0,
    ),
    field(
        "steps",
        "withings_intraday_steps",
        "Steps in the slot that begins at each intraday sample of the device.",
        0,
    ),
    field(
        "spo2_auto",
        "withings_intraday_spo2_ratio",
        "SpO2 measured automatically by the device at each intraday sample, as a ratio (0-1).",
        -2,
    ),
    field(
        "rmssd",
        "withings_intraday_hrv_rmssd_seconds",
        "Heart-rate variability (RMSSD over a few seconds) at each intraday sample, in seconds.",
        -3,
    ),
    field(
        "sdnn1",
        "withings_intraday_hrv_sdnn_seconds",
        "Heart-rate variability (SDNN over one minute) at each intraday sample, in seconds.",
        -3,
    ),
    field(
        "hrv_quality",
        "withings_intraday_hrv_quality",
        "Withings' quality score of the heart-rate variability at each intraday sample.",
        0,
    ),
    field(
        "rr",
        "withings_intraday_breathing_rate_per_minute",
        "Breathing rate at each intraday sample, in breaths per minute.",
        0,
    ),
    field(
        "chest_movement_rate",
        "withings_intraday_chest_movement_rate_per_minute",
        "Chest movements per minute at each intraday sample.",
        0,
    ),
    field(
        "elevation",
        "withings_intraday_floors",
        "Floors climbed in the slot that begins at each intraday sample.",
        0,
    ),
    Field {
        field: "calories",
        metric: "withings_intraday_energy_joules",
        help: "Active energy burned in the slot that begins at each intraday sample, in joules (Withings' kcal × 4184).",
        shift: 0,
        kcal: true,
    },
    field(
        "distance",
        "withings_intraday_distance_meters",
        "Distance covered in the slot that begins at each intraday sample, in meters.",
        0,
    ),
    field(
        "duration",
        "withings_intraday_duration_seconds",
        "Length of the activity slot that begins at each intraday sample, in seconds.",
        0,
    ),
    field(
        "stroke",
        "withings_intraday_strokes",
        "Swimming strokes in the slot that begins at each intraday sample.",
        0,
    ),
    field(
        "pool_lap",
        "withings_intraday_pool_laps",
        "Pool laps in the slot that begins at each intraday sample.",
        0,
    ),
    field(
        "core_body_temperature",
        "withings_intraday_core_body_temperature_celsius",
        "Core body temperature at each intraday sample, in degrees Celsius.",
        0,
    ),
];

/// One sample of one device: its time and the fields it gave, in base units.
#[derive(Debug, Clone, PartialEq)]
pub struct IntradaySample {
    pub at: i64,
    pub device_id: String,
    pub device_model: String,
    /// By index in [`FIELDS`].
    pub values: Vec<(usize, Decimal)>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct IntradayPage {
    pub samples: Vec<IntradaySample>,
    pub malformed_rows: usize,
}

impl Paged for IntradayPage {
    fn more(&self) -> bool {
        false
    }
    fn offset(&self) -> Option<i64> {
        None
    }
}

#[derive(Deserialize)]
struct BodyRaw<'a> {
    /// An object keyed by unix time; `[]` when there is nothing.
    #[serde(borrow, default)]
    series: Option<&'a RawValue>,
}

fn sample(at: &str, raw: &serde_json::Value) -> Option<IntradaySample> {
    let at: i64 = at.trim().parse().ok()?;
    let object = raw.as_object()?;
    let mut values = Vec::new();
    for (i, f) in FIELDS.iter().enumerate() {
        let Some(value) = object.get(f.field).and_then(decimal) else {
            continue;
        };
        let value = if f.kcal {
            value.times(super::activity::JOULES_PER_KCAL)
        } else {
            value.scaled(f.shift)
        };
        if let Some(v) = value {
            values.push((i, v));
        }
    }
    Some(IntradaySample {
        at,
        device_id: text(object.get("deviceid")),
        device_model: text(object.get("model")),
        values,
    })
}

/// Parses a `getintradayactivity` answer. A sample whose key is not a time, or that is not
/// an object, is counted and skipped.
pub fn parse_getintradayactivity(body: &[u8]) -> Result<IntradayPage, ApiError> {
    let parsed: BodyRaw = success_body_as(ACTION, body)?;
    let mut page = IntradayPage::default();
    let Some(series) = parsed.series else {
        return Ok(page);
    };
    let value: serde_json::Value =
        serde_json::from_str(series.get()).map_err(|e| ApiError::InvalidResponse {
            action: ACTION,
            detail: e.to_string(),
        })?;
    let serde_json::Value::Object(map) = value else {
        // `[]`: no sample in the span.
        return Ok(page);
    };
    for (at, raw) in &map {
        match sample(at, raw) {
            Some(s) => page.samples.push(s),
            None => page.malformed_rows += 1,
        }
    }
    page.samples.sort_by_key(|s| s.at);
    Ok(page)
}

/// The series of one sample, live (the latest of each series) and in the history (at its
/// time).
pub fn sample_series(
    sample: &IntradaySample,
    mut put: impl FnMut(&'static str, &'static str, &[(&'static str, &str)], Decimal),
) {
    let device = [
        ("device_id", sample.device_id.as_str()),
        ("device_model", sample.device_model.as_str()),
    ];
    for (i, value) in &sample.values {
        let f = &FIELDS[*i];
        put(f.metric, f.help, &device, *value);
    }
}

/// The request of the span `from`..=`to` (at most a day).
pub fn request(from: i64, to: i64) -> Request {
    Request::new(PATH, ACTION)
        .field("startdate", from)
        .field("enddate", to)
        .field(
            "data_fields",
            FIELDS.iter().map(|f| f.field).collect::<Vec<_>>().join(","),
        )
}

pub struct Intraday;

impl Collector for Intraday {
    fn name(&self) -> &'static str {
        "intraday"
    }
    fn scope(&self) -> &'static str {
        "user.activity"
    }
    fn applis(&self) -> &'static [i64] {
        &[16]
    }
    fn action(&self) -> &'static str {
        ACTION
    }
    fn state(&self, _: &Settings) -> Box<dyn State> {
        Box::new(Live::default())
    }
    fn history(&self) -> Option<&dyn History> {
        Some(self)
    }
}

/// The latest sample of each series: (device id, device model, field) to (time, value).
#[derive(Default)]
struct Live(Mutex<Latest>);

#[derive(Default)]
struct Latest {
    by_series: BTreeMap<(String, String, usize), (i64, Decimal)>,
    /// The newest sample's time.
    newest: Option<i64>,
    emitted: Emitted,
}

impl Latest {
    fn merge(&mut self, page: IntradayPage) -> usize {
        let mut updated = 0;
        for sample in page.samples {
            self.newest = self.newest.max(Some(sample.at));
            for (i, value) in &sample.values {
                let key = (sample.device_id.clone(), sample.device_model.clone(), *i);
                match self.by_series.get(&key) {
                    Some((at, _)) if *at > sample.at => {}
                    _ => {
                        self.by_series.insert(key, (sample.at, *value));
                        updated += 1;
                    }
                }
            }
        }
        updated
    }

    fn families(&self) -> Vec<MetricFamily> {
        let mut out = GaugeFamilies::new();
        for ((id, model, i), (at, value)) in &self.by_series {
            let f = &FIELDS[*i];
            let device = [("device_id", id.as_str()), ("device_model", model.as_str())];
            out.push(f.metric, f.help, &device, value.to_f64());
            let measurement = f.field;
            out.push(
                "withings_intraday_timestamp_seconds",
                "Unix time of the latest intraday sample of each series of each device (measurement: Withings' field name).",
                &[device[0], device[1], ("measurement", measurement)],
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
            let from = bounded_since(newest, now, LATE_SYNC_SECONDS, MAX_SPAN_SECONDS);
            let page = fetch
                .call(&request(from, now), parse_getintradayactivity)
                .await?;
            fetch.skip("malformed", page.malformed_rows);
            let mut latest = lock(&self.0);
            // Final as soon as synced: to the remote writer at once, what the last reads of
            // the hour had not.
            latest.emitted.emit_new(fetch, from, |put| {
                for sample in &page.samples {
                    sample_series(sample, |name, help, labels, value| {
                        put(name, help, labels, sample.at, value.to_f64());
                    });
                }
            });
            let rows = page.samples.len();
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

impl History for Intraday {
    fn by_days(&self) -> bool {
        false
    }
    fn rows(&self) -> &'static str {
        "intraday samples"
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
        Ok(Box::new(parse_getintradayactivity(body)?))
    }
}

impl HistoryPage for IntradayPage {
    fn malformed_rows(&self) -> usize {
        self.malformed_rows
    }

    /// Each sample at its own time.
    fn write(&self, _: &Settings, _: i64, out: &mut dyn Sink) -> std::io::Result<usize> {
        write_each(out, |put| {
            for sample in &self.samples {
                sample_series(sample, |name, help, labels, value| {
                    put(name, help, labels, sample.at, value.to_f64());
                });
            }
        })?;
        Ok(self.samples.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference's shape: samples keyed by unix time, a watch and a phone, a string
    /// number, a field the exporter does not know, and a key that is not a time.
    const ANSWER: &str = r#"{"status":0,"body":{"series":{
        "1700000060":{"deviceid":"w1","model":"ScanWatch 2","model_id":94,"heart_rate":62,
                      "spo2_auto":97,"rmssd":"41","sdnn1":55,"rr":14,"unknown":1},
        "1700000000":{"deviceid":"w1","model":"ScanWatch 2","model_id":94,"heart_rate":64,
                      "steps":12,"calories":1.5},
        "1700000030":{"deviceid":null,"model":"iOS step tracker","model_id":1051,"steps":30},
        "soon":{"heart_rate":1}
    }}}"#;

    #[test]
    fn samples_in_base_units_devices_apart_and_the_latest_shown() {
        let page = parse_getintradayactivity(ANSWER.as_bytes()).unwrap();
        assert_eq!(page.malformed_rows, 1);
        assert_eq!(
            page.samples.iter().map(|s| s.at).collect::<Vec<_>>(),
            [1_700_000_000, 1_700_000_030, 1_700_000_060]
        );
        let mut written = Vec::new();
        for s in &page.samples {
            sample_series(s, |name, _, labels, value| {
                written.push((name, labels[1].1.to_owned(), s.at, value.to_f64()));
            });
        }
        let of = |name: &str| -> Vec<(String, i64, f64)> {
            written
                .iter()
                .filter(|w| w.0 == name)
                .map(|w| (w.1.clone(), w.2, w.3))
                .collect()
        };
        assert_eq!(
            of("withings_intraday_heart_rate_bpm"),
            [
                ("ScanWatch 2".into(), 1_700_000_000, 64.0),
                ("ScanWatch 2".into(), 1_700_000_060, 62.0)
            ]
        );
        // A phone's steps and a watch's stay two series.
        assert_eq!(
            of("withings_intraday_steps"),
            [
                ("ScanWatch 2".into(), 1_700_000_000, 12.0),
                ("iOS step tracker".into(), 1_700_000_030, 30.0)
            ]
        );
        assert_eq!(of("withings_intraday_spo2_ratio")[0].2, 0.97);
        assert_eq!(of("withings_intraday_hrv_rmssd_seconds")[0].2, 0.041);
        assert_eq!(of("withings_intraday_energy_joules")[0].2, 6276.0);
        let mut latest = Latest::default();
        latest.merge(page);
        assert_eq!(latest.newest, Some(1_700_000_060));
        let text = crate::render::families::encode(latest.families());
        assert!(
            text.contains(
                "withings_intraday_heart_rate_bpm{device_id=\"w1\",device_model=\"ScanWatch 2\"} 62\n"
            ),
            "{text}"
        );
        assert!(text.contains("withings_intraday_timestamp_seconds{device_id=\"w1\",device_model=\"ScanWatch 2\",measurement=\"heart_rate\"} 1700000060\n"), "{text}");
        // An older sample synced late does not replace a newer one.
        let late = parse_getintradayactivity(
            br#"{"status":0,"body":{"series":{"1699999000":{"deviceid":"w1","model":"ScanWatch 2","heart_rate":99}}}}"#,
        )
        .unwrap();
        latest.merge(late);
        let text = crate::render::families::encode(latest.families());
        assert!(!text.contains(" 99\n"), "{text}");
    }

    #[test]
    fn nothing_in_the_span_is_an_empty_list() {
        for body in [
            r#"{"status":0,"body":{"series":[]}}"#,
            r#"{"status":0,"body":{}}"#,
        ] {
            assert_eq!(
                parse_getintradayactivity(body.as_bytes()).unwrap(),
                IntradayPage::default()
            );
        }
        assert!(parse_getintradayactivity(br#"{"status":401,"body":{}}"#).is_err());
    }
}
