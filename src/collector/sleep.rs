//! `sleep`: `getsummary` (`{api}/v2/sleep`), one row per night and per device. A value the
//! device does not measure (no snoring sensor, no apnea detection) is absent, never 0.

use super::{
    Collector, History, HistoryPage, Latest, LatestRows, Paged, Put, RowPage, RowQuery, SeriesBody,
    Settings, Sink, SourceRow, State, Window, days, device_id, row_request, write_rows,
};
use crate::secret::Secret;
use crate::withings::lenient::{self, Decimal};
use crate::withings::{ApiError, Request, WithingsClient, row_as, success_body_as};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::collections::BTreeMap;

const ACTION: &str = "getsummary";

/// A `data` field and how it is exported: (field, metric, help, extra labels).
type Field = (
    &'static str,
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

const FIELDS: &[Field] = &[
    (
        "total_timeinbed",
        "withings_sleep_in_bed_seconds",
        "Time in bed during the latest night, in seconds.",
        &[],
    ),
    (
        "total_sleep_time",
        "withings_sleep_asleep_seconds",
        "Time asleep during the latest night (light + deep + REM), in seconds.",
        &[],
    ),
    (
        "lightsleepduration",
        "withings_sleep_stage_seconds",
        "Time in each sleep stage during the latest night, in seconds.",
        &[("stage", "light")],
    ),
    (
        "deepsleepduration",
        "withings_sleep_stage_seconds",
        "Time in each sleep stage during the latest night, in seconds.",
        &[("stage", "deep")],
    ),
    (
        "remsleepduration",
        "withings_sleep_stage_seconds",
        "Time in each sleep stage during the latest night, in seconds.",
        &[("stage", "rem")],
    ),
    (
        "wakeupduration",
        "withings_sleep_awake_seconds",
        "Time awake in bed during the latest night, in seconds.",
        &[],
    ),
    (
        "waso",
        "withings_sleep_awake_after_sleep_onset_seconds",
        "Time awake in bed after first falling asleep (WASO) during the latest night, in seconds.",
        &[],
    ),
    (
        "sleep_latency",
        "withings_sleep_latency_seconds",
        "Time in bed before falling asleep during the latest night, in seconds.",
        &[],
    ),
    (
        "wakeup_latency",
        "withings_sleep_wakeup_latency_seconds",
        "Time in bed after waking up at the end of the latest night, in seconds.",
        &[],
    ),
    (
        "wakeupcount",
        "withings_sleep_wakeups",
        "Times the user woke up in bed during the latest night (getting out of bed not included).",
        &[],
    ),
    (
        "out_of_bed_count",
        "withings_sleep_out_of_bed_events",
        "Times the user got out of bed during the latest night.",
        &[],
    ),
    (
        "sleep_efficiency",
        "withings_sleep_efficiency_ratio",
        "Time asleep over time in bed during the latest night, as a ratio (0-1).",
        &[],
    ),
    (
        "sleep_score",
        "withings_sleep_score",
        "Withings' sleep score of the latest night (0-100).",
        &[],
    ),
    (
        "hr_average",
        "withings_sleep_heart_rate_average_bpm",
        "Average heart rate during the latest night, in beats per minute.",
        &[],
    ),
    (
        "hr_min",
        "withings_sleep_heart_rate_min_bpm",
        "Lowest heart rate during the latest night, in beats per minute.",
        &[],
    ),
    (
        "hr_max",
        "withings_sleep_heart_rate_max_bpm",
        "Highest heart rate during the latest night, in beats per minute.",
        &[],
    ),
    (
        "rr_average",
        "withings_sleep_breathing_rate_average_per_minute",
        "Average breathing rate during the latest night, in breaths per minute.",
        &[],
    ),
    (
        "rr_min",
        "withings_sleep_breathing_rate_min_per_minute",
        "Lowest breathing rate during the latest night, in breaths per minute.",
        &[],
    ),
    (
        "rr_max",
        "withings_sleep_breathing_rate_max_per_minute",
        "Highest breathing rate during the latest night, in breaths per minute.",
        &[],
    ),
    (
        "snoring",
        "withings_sleep_snoring_seconds",
        "Time snoring during the latest night, in seconds.",
        &[],
    ),
    (
        "snoringepisodecount",
        "withings_sleep_snoring_episodes",
        "Snoring episodes of at least a minute during the latest night.",
        &[],
    ),
    (
        "apnea_hypopnea_index",
        "withings_sleep_apnea_hypopnea_index",
        "Apnea-hypopnea index of the latest night: apnea and hypopnea events per hour of sleep (medical grade; only devices and regions with sleep apnea detection).",
        &[],
    ),
];

/// The `data_fields` parameter: every field exported, and `asleepduration`, which an
/// external source gives instead of `total_sleep_time`.
pub fn data_fields() -> String {
    let mut fields: Vec<&str> = FIELDS.iter().map(|f| f.0).collect();
    fields.push("asleepduration");
    fields.join(",")
}

/// Sleep devices by `model_id`, from the reference: the sleep answer's `model` is only
/// 16 (tracker) or 32 (sleep monitor), and the label should match the other collectors'.
pub(crate) fn model_name(model_id: i64) -> Option<&'static str> {
    Some(match model_id {
        51 => "Pulse",
        52 => "Activite",
        53 => "Activite (Pop, Steel)",
        54 => "Withings Go",
        55 => "Activite Steel HR",
        58 => "Pulse HR",
        59 => "Activite Steel HR Sport Edition",
        60 => "Aura Dock",
        61 => "Aura Sensor",
        63 => "Aura Sensor V2",
        90 => "Move",
        91 | 92 => "Move ECG",
        93 => "ScanWatch",
        94 => "ScanWatch 2",
        95 => "ScanWatch Light",
        _ => return None,
    })
}

/// One night of one device, as parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct SleepNight {
    pub device_id: String,
    pub device_model: String,
    pub startdate: i64,
    pub enddate: i64,
    pub modified: Option<i64>,
    /// The `data` values present, by field name; a missing field is simply not here.
    pub values: BTreeMap<String, Decimal>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct SleepPage {
    pub nights: Vec<SleepNight>,
    pub malformed_rows: usize,
    /// Nights Withings marks as not completed (still in progress); not exported.
    pub incomplete_rows: usize,
    pub more: bool,
    pub offset: Option<i64>,
}

impl Paged for SleepPage {
    fn more(&self) -> bool {
        self.more
    }
    fn offset(&self) -> Option<i64> {
        self.offset
    }
}

#[derive(Deserialize)]
struct RowRaw {
    #[serde(deserialize_with = "lenient::int")]
    startdate: i64,
    #[serde(deserialize_with = "lenient::int")]
    enddate: i64,
    #[serde(default, deserialize_with = "lenient::opt_int")]
    modified: Option<i64>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    hash_deviceid: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    deviceid: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_int")]
    model_id: Option<i64>,
    /// Withings documents `completed` as a boolean; absent means a finished night.
    #[serde(default = "yes", deserialize_with = "lenient::flag")]
    completed: bool,
    #[serde(default)]
    data: BTreeMap<String, Decimalish>,
}

fn yes() -> bool {
    true
}

/// A `data` value: a decimal, or something else (`night_events` is an object, a future
/// field may be a string), which is not an error, only not a value to export.
struct Decimalish(Option<Decimal>);

impl<'de> Deserialize<'de> for Decimalish {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(d)?;
        let text = raw.get();
        let inner = text
            .strip_prefix('"')
            .and_then(|t| t.strip_suffix('"'))
            .unwrap_or(text);
        Ok(Self(Decimal::parse(inner)))
    }
}

fn night(raw: RowRaw) -> Option<SleepNight> {
    if raw.enddate < raw.startdate {
        return None;
    }
    let mut values: BTreeMap<String, Decimal> = raw
        .data
        .into_iter()
        .filter_map(|(k, v)| v.0.map(|v| (k, v)))
        .collect();
    // A night from an external source has `asleepduration` instead; it is the same quantity.
    if let (false, Some(asleep)) = (
        values.contains_key("total_sleep_time"),
        values.get("asleepduration").copied(),
    ) {
        values.insert("total_sleep_time".into(), asleep);
    }
    values.retain(|k, _| FIELDS.iter().any(|f| f.0 == k));
    Some(SleepNight {
        device_id: device_id(raw.hash_deviceid, raw.deviceid),
        device_model: raw
            .model_id
            .and_then(model_name)
            .unwrap_or_default()
            .to_owned(),
        startdate: raw.startdate,
        enddate: raw.enddate,
        modified: raw.modified,
        values,
    })
}

/// Parses a `getsummary` answer. A malformed night is counted and skipped; a malformed
/// envelope or body fails the whole answer.
pub fn parse_getsummary(body: &[u8]) -> Result<SleepPage, ApiError> {
    let parsed: SeriesBody = success_body_as(ACTION, body)?;
    let mut page = SleepPage {
        more: parsed.more,
        offset: parsed.offset,
        ..SleepPage::default()
    };
    for row in parsed.series {
        let parsed = row_as::<RowRaw>(ACTION, row, "night");
        match parsed {
            Some(raw) if !raw.completed => page.incomplete_rows += 1,
            Some(raw) => match night(raw) {
                Some(n) => page.nights.push(n),
                None => page.malformed_rows += 1,
            },
            None => page.malformed_rows += 1,
        }
    }
    Ok(page)
}

/// The latest completed night of each device, and where the sync stands. Nights are ordered
/// by when they ended.
pub type SleepState = Latest<SleepNight>;

impl SourceRow for SleepNight {
    type Period = i64;
    fn source(&self) -> (&str, &str) {
        (&self.device_id, &self.device_model)
    }
    fn period(&self) -> i64 {
        self.enddate
    }
    fn modified(&self) -> Option<i64> {
        self.modified
    }
    fn written_at(&self) -> i64 {
        self.enddate
    }
    fn series(&self, put: &mut Put<'_>) {
        night_series(self, put);
    }
}

impl RowPage for SleepPage {
    type Row = SleepNight;
    fn into_rows(self) -> (Vec<SleepNight>, usize) {
        (self.nights, self.malformed_rows)
    }
}

/// The samples of one night of one device, as the live families show them: `put(name,
/// help, labels, value)` once per sample, a value the device does not measure left out.
/// One list for the live exporter and the backfill, so that both give the same series.
pub fn night_series(
    night: &SleepNight,
    mut put: impl FnMut(&'static str, &'static str, &[(&'static str, &str)], f64),
) {
    let device = [
        ("device_id", night.device_id.as_str()),
        ("device_model", night.device_model.as_str()),
    ];
    for (field, metric, help, extra) in FIELDS {
        if let Some(value) = night.values.get(*field) {
            let mut labels = device.to_vec();
            labels.extend_from_slice(extra);
            put(metric, help, &labels, value.to_f64());
        }
    }
    put(
        "withings_sleep_start_timestamp_seconds",
        "Unix time the latest night began (the user went to bed).",
        &device,
        night.startdate as f64,
    );
    put(
        "withings_sleep_end_timestamp_seconds",
        "Unix time the latest night ended; the other withings_sleep_ series of this device describe that night.",
        &device,
        night.enddate as f64,
    );
}

/// The `sleep` collector.
pub struct Sleep;

const PATH: &str = "v2/sleep";

/// The request of one `getsummary` page: for the sync, or a range of nights for the backfill.
pub fn request(query: RowQuery<'_>) -> Request {
    row_request(PATH, ACTION, query, Some(&data_fields()))
}

/// One `getsummary` page.
pub async fn getsummary<'q>(
    client: &WithingsClient,
    token: &Secret,
    query: impl Into<RowQuery<'q>>,
) -> Result<SleepPage, ApiError> {
    client
        .call(token, &request(query.into()), parse_getsummary)
        .await
}

impl Collector for Sleep {
    fn name(&self) -> &'static str {
        "sleep"
    }
    fn scope(&self) -> &'static str {
        "user.activity"
    }
    fn applis(&self) -> &'static [i64] {
        &[44]
    }
    fn action(&self) -> &'static str {
        ACTION
    }
    fn state(&self, _: &Settings) -> Box<dyn State> {
        Box::new(LatestRows::new(request, parse_getsummary))
    }
    fn history(&self) -> Option<&dyn History> {
        Some(self)
    }
}

impl History for Sleep {
    fn by_days(&self) -> bool {
        true
    }
    fn rows(&self) -> &'static str {
        "nights"
    }
    fn request(&self, _: &Settings, window: Window<'_>, offset: Option<i64>) -> Request {
        request(days(window, offset))
    }
    fn parse(&self, body: &[u8]) -> Result<Box<dyn HistoryPage>, ApiError> {
        Ok(Box::new(parse_getsummary(body)?))
    }
}

impl HistoryPage for SleepPage {
    fn malformed_rows(&self) -> usize {
        self.malformed_rows
    }

    /// A night's values at its end: when the live exporter starts showing them.
    fn write(&self, _: &Settings, _: i64, out: &mut dyn Sink) -> std::io::Result<usize> {
        write_rows(&self.nights, out)
    }
}
