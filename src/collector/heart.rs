//! `heart`: `list` (`{api}/v2/heart`), the ECG recordings of a BPM Core, a Move ECG or a
//! ScanWatch, each with Withings' atrial-fibrillation classification and the heart rate of
//! the recording. No raw signal: the list says what a clinician needs to go and look. The
//! blood pressure a BPM Core takes with an ECG is a measure already (`getmeas`).
//!
//! The list selects recordings by their own time (`startdate`/`enddate`), not by when
//! Withings received them, and a device syncs an ECG taken offline later: each fetch asks
//! again from [`LATE_SYNC_SECONDS`] before the newest change it saw.

use super::rows_of;
use super::{
    Collector, History, HistoryPage, LatestRows, Paged, Put, RowPage, RowQuery, SeriesBody,
    Settings, Sink, SourceRow, State, Window, device_id, write_rows,
};
use crate::withings::lenient::{self, Decimal};
use crate::withings::{ApiError, Request, success_body_as};
use serde::Deserialize;

/// The form's `action`; `withings_api_requests_total` labels it [`LABEL`], apart from the
/// notification `list`.
const ACTION: &str = "list";
const LABEL: &str = "heart_list";
const PATH: &str = "v2/heart";

/// How far before the newest `modified` seen a fetch asks again: a BPM Core keeps ECGs
/// taken out of reach of its Wi-Fi until it syncs, and a watch syncs through the phone, so a
/// recording can reach Withings days after it was taken. A week of recordings is a few rows.
pub const LATE_SYNC_SECONDS: i64 = 7 * 86_400;

/// One ECG recording.
#[derive(Debug, Clone, PartialEq)]
pub struct Recording {
    pub device_id: String,
    pub device_model: String,
    /// Unix time of the recording.
    pub timestamp: i64,
    pub modified: Option<i64>,
    /// Withings' classification: 0 negative, 1 positive (atrial fibrillation), 2
    /// inconclusive; absent when Withings gives none.
    pub afib: Option<i64>,
    /// Average heart rate of the recording; `None` also for 0 (not measured).
    pub heart_rate: Option<Decimal>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct HeartPage {
    pub recordings: Vec<Recording>,
    pub malformed_rows: usize,
    pub more: bool,
    pub offset: Option<i64>,
}

impl Paged for HeartPage {
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
    timestamp: i64,
    #[serde(default, deserialize_with = "lenient::opt_int")]
    modified: Option<i64>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    deviceid: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    hash_deviceid: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_int")]
    model: Option<i64>,
    #[serde(default)]
    ecg: Option<EcgRaw>,
    #[serde(default, deserialize_with = "lenient::opt_decimal")]
    heart_rate: Option<Decimal>,
}

#[derive(Deserialize)]
struct EcgRaw {
    #[serde(default, deserialize_with = "lenient::opt_int")]
    afib: Option<i64>,
}

/// The devices that record ECGs, by the `model` number of the list (Withings' reference
/// names 44 and 91; the ScanWatches use their device model numbers).
fn model_name(model: i64) -> Option<&'static str> {
    match model {
        44 => Some("BPM Core"),
        _ => super::sleep::model_name(model),
    }
}

fn recording(raw: RowRaw) -> Recording {
    Recording {
        device_id: device_id(raw.hash_deviceid, raw.deviceid),
        device_model: raw
            .model
            .and_then(model_name)
            .unwrap_or_default()
            .to_owned(),
        timestamp: raw.timestamp,
        modified: raw.modified,
        afib: raw.ecg.and_then(|e| e.afib),
        heart_rate: raw.heart_rate.filter(|hr| !hr.is_zero()),
    }
}

/// Parses a `v2/heart list` answer. A malformed row is counted and skipped.
pub fn parse_list(body: &[u8]) -> Result<HeartPage, ApiError> {
    let parsed: SeriesBody = success_body_as(LABEL, body)?;
    let (recordings, malformed_rows) = rows_of(LABEL, parsed.series, "recording", |raw: RowRaw| {
        Some(recording(raw))
    });
    Ok(HeartPage {
        recordings,
        malformed_rows,
        more: parsed.more,
        offset: parsed.offset,
    })
}

impl SourceRow for Recording {
    type Period = i64;
    fn source(&self) -> (&str, &str) {
        (&self.device_id, &self.device_model)
    }
    fn period(&self) -> i64 {
        self.timestamp
    }
    fn modified(&self) -> Option<i64> {
        self.modified
    }
    fn written_at(&self) -> i64 {
        self.timestamp
    }
    fn series(&self, put: &mut Put<'_>) {
        recording_series(self, put);
    }
}

impl RowPage for HeartPage {
    type Row = Recording;
    fn into_rows(self) -> (Vec<Recording>, usize) {
        (self.recordings, self.malformed_rows)
    }
}

/// The series of one recording, live (the latest of each device) and in the backfill (each
/// at its time).
pub fn recording_series(recording: &Recording, put: &mut Put<'_>) {
    let device = [
        ("device_id", recording.device_id.as_str()),
        ("device_model", recording.device_model.as_str()),
    ];
    if let Some(afib) = recording.afib {
        put(
            "withings_ecg_afib_classification",
            "Withings' classification of the latest ECG of each device: 0 negative, 1 positive (atrial fibrillation), 2 inconclusive. Not medical advice.",
            &device,
            afib as f64,
        );
    }
    if let Some(hr) = recording.heart_rate {
        put(
            "withings_ecg_heart_rate_bpm",
            "Average heart rate during the latest ECG of each device, in beats per minute.",
            &device,
            hr.to_f64(),
        );
    }
    put(
        "withings_ecg_timestamp_seconds",
        "Unix time of the latest ECG of each device; the other withings_ecg_ series of this device describe it.",
        &device,
        recording.timestamp as f64,
    );
}

/// The request of one page: the live sync asks from a week before its cursor, the backfill
/// for one window of unix seconds.
pub fn request(query: RowQuery<'_>) -> Request {
    let request = Request::new(PATH, ACTION).labelled(LABEL);
    match query {
        RowQuery::Since(q) => request
            .field("startdate", (q.lastupdate - LATE_SYNC_SECONDS).max(0))
            .offset(q.offset),
        // The heart list selects by unix time only: a day-selecting window is never asked
        // of it ([`History::by_days`] is false).
        RowQuery::Days { offset, .. } => request.offset(offset),
    }
}

pub struct Heart;

impl Collector for Heart {
    fn name(&self) -> &'static str {
        "heart"
    }
    fn scope(&self) -> &'static str {
        "user.metrics"
    }
    fn applis(&self) -> &'static [i64] {
        &[54]
    }
    fn action(&self) -> &'static str {
        LABEL
    }
    fn state(&self, _: &Settings) -> Box<dyn State> {
        Box::new(LatestRows::new(request, parse_list))
    }
    fn history(&self) -> Option<&dyn History> {
        Some(self)
    }
}

impl History for Heart {
    fn by_days(&self) -> bool {
        false
    }
    fn rows(&self) -> &'static str {
        "ECGs"
    }
    fn request(&self, _: &Settings, window: Window<'_>, offset: Option<i64>) -> Request {
        Request::new(PATH, ACTION)
            .labelled(LABEL)
            .field("startdate", window.span.0)
            .field("enddate", window.span.1)
            .offset(offset)
    }
    fn parse(&self, body: &[u8]) -> Result<Box<dyn HistoryPage>, ApiError> {
        Ok(Box::new(parse_list(body)?))
    }
}

impl HistoryPage for HeartPage {
    fn malformed_rows(&self) -> usize {
        self.malformed_rows
    }

    /// Each recording at its own time.
    fn write(&self, _: &Settings, _: i64, out: &mut dyn Sink) -> std::io::Result<usize> {
        write_rows(&self.recordings, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::{Latest, SyncQuery};

    /// The shape of Withings' reference (`heart_measurement_object`), with a BPM Core
    /// recording classified positive and a ScanWatch one inconclusive without a heart rate.
    const ANSWER: &str = r#"{"status":0,"body":{"series":[
        {"deviceid":"892359876fd8805ac45bab078c4828692f0276b1","model":44,
         "ecg":{"signalid":48,"afib":1},"bloodpressure":{"diastole":80,"systole":121},
         "heart_rate":82,"modified":1594159700,"timestamp":1594159644},
        {"deviceid":"aa","model":93,"ecg":{"signalid":49,"afib":2},"heart_rate":0,
         "modified":1594160000,"timestamp":1594159900},
        {"deviceid":"aa","model":93,"ecg":{"signalid":47,"afib":0},"heart_rate":"61",
         "modified":1594000000,"timestamp":1593999000},
        "not a row",
        {"deviceid":"bb","model":44}
    ],"more":true,"offset":3}}"#;

    fn samples(state: &Latest<Recording>) -> Vec<(String, String, f64)> {
        let mut out = Vec::new();
        for row in state.rows() {
            row.series(&mut |name, _, labels, value| {
                out.push((name.to_owned(), labels[1].1.to_owned(), value));
            });
        }
        out
    }

    #[test]
    fn the_list_is_read_with_the_classification_and_a_missing_rate_absent() {
        let page = parse_list(ANSWER.as_bytes()).unwrap();
        assert_eq!(
            (page.more, page.offset, page.malformed_rows),
            (true, Some(3), 2)
        );
        assert_eq!(page.recordings.len(), 3);
        let core = &page.recordings[0];
        assert_eq!(core.device_model, "BPM Core");
        assert_eq!((core.afib, core.timestamp), (Some(1), 1594159644));
        assert_eq!(core.heart_rate.map(Decimal::to_f64), Some(82.0));
        // 0 bpm is "not measured": absent, not 0.
        assert_eq!(page.recordings[1].heart_rate, None);
        let mut state = Latest::default();
        state.merge(page);
        // The latest recording of each device; the older ScanWatch one is not shown.
        assert_eq!(
            samples(&state),
            [
                (
                    "withings_ecg_afib_classification".into(),
                    "BPM Core".into(),
                    1.0
                ),
                (
                    "withings_ecg_heart_rate_bpm".into(),
                    "BPM Core".into(),
                    82.0
                ),
                (
                    "withings_ecg_timestamp_seconds".into(),
                    "BPM Core".into(),
                    1594159644.0
                ),
                (
                    "withings_ecg_afib_classification".into(),
                    "ScanWatch".into(),
                    2.0
                ),
                (
                    "withings_ecg_timestamp_seconds".into(),
                    "ScanWatch".into(),
                    1594159900.0
                ),
            ]
        );
    }

    fn settings() -> Settings {
        Settings {
            meastypes: String::new(),
            include_ambiguous: false,
        }
    }

    #[test]
    fn a_sync_asks_again_a_week_before_its_cursor_for_recordings_synced_late() {
        let form = |q: RowQuery<'_>| request(q).form;
        let since = SyncQuery {
            lastupdate: 1_000_000,
            offset: Some(20),
        };
        assert_eq!(
            form(since.into()),
            [
                ("action", "list".to_owned()),
                ("startdate", (1_000_000 - LATE_SYNC_SECONDS).to_string()),
                ("offset", "20".to_owned()),
            ]
        );
        assert_eq!(request(since.into()).action, "heart_list");
        let window = Window {
            span: (10, 20),
            days: None,
        };
        assert_eq!(
            Heart.request(&settings(), window, None).form,
            [
                ("action", "list".to_owned()),
                ("startdate", "10".to_owned()),
                ("enddate", "20".to_owned()),
            ]
        );
    }

    #[test]
    fn an_error_status_is_an_error() {
        let err = parse_list(br#"{"status":503,"body":{},"error":"no"}"#).unwrap_err();
        assert!(
            matches!(err, ApiError::Status { status: 503, .. }),
            "{err:?}"
        );
    }
}
