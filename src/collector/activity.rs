//! `activity`: `getactivity` (`{api}/v2/measure`), one row per day and per source device.
//!
//! A phone and a watch report the same day as two rows; they are two series, never added
//! (their steps overlap). The day is the user's local day in the row's `timezone`.

use super::rows_of;
use super::{
    Collector, History, HistoryPage, Latest, LatestRows, Paged, Put, RowPage, RowQuery, Settings,
    Sink, SourceRow, State, Window, days, device_id, row_request, write_rows,
};
use crate::secret::Secret;
use crate::withings::lenient::{self, Decimal};
use crate::withings::{ApiError, Request, WithingsClient, success_body_as};
use jiff::civil::Date;
use jiff::tz::TimeZone;
use serde::Deserialize;
use serde_json::value::RawValue;

const ACTION: &str = "getactivity";

/// Kilocalories to joules: the thermochemical kilocalorie, 4184 J exactly, the one food
/// energy labels use. The naming guide's base unit for energy is the joule.
pub const JOULES_PER_KCAL: i64 = 4184;

/// One day of one source, as parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct ActivityDay {
    pub device_id: String,
    pub device_model: String,
    /// The user's local day.
    pub date: Date,
    /// Unix time of that day's first instant (local midnight, or the end of a DST gap).
    pub day_start: i64,
    /// Unix time of that day's last second: the last moment the live exporter shows the
    /// day's totals as "the latest day", and so the timestamp the backfill gives them.
    pub day_end: i64,
    pub modified: Option<i64>,
    pub steps: Option<Decimal>,
    pub distance_meters: Option<Decimal>,
    pub floors: Option<Decimal>,
    pub soft_seconds: Option<Decimal>,
    pub moderate_seconds: Option<Decimal>,
    pub intense_seconds: Option<Decimal>,
    pub active_kcal: Option<Decimal>,
    pub total_kcal: Option<Decimal>,
    /// `None` also when Withings sends 0: no heart beats at 0 bpm, it means "not measured".
    pub hr_average: Option<Decimal>,
    pub hr_min: Option<Decimal>,
    pub hr_max: Option<Decimal>,
    /// Seconds in heart-rate zones 0 to 3; absent when the source measures no heart rate.
    pub hr_zones: [Option<Decimal>; 4],
}

/// A `getactivity` page: the rows that made sense, and how many did not.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ActivityPage {
    pub days: Vec<ActivityDay>,
    pub malformed_rows: usize,
    pub more: bool,
    pub offset: Option<i64>,
}

impl Paged for ActivityPage {
    fn more(&self) -> bool {
        self.more
    }
    fn offset(&self) -> Option<i64> {
        self.offset
    }
}

#[derive(Deserialize)]
struct BodyRaw<'a> {
    #[serde(borrow, default)]
    activities: Vec<&'a RawValue>,
    #[serde(default, deserialize_with = "lenient::flag")]
    more: bool,
    #[serde(default, deserialize_with = "lenient::opt_int")]
    offset: Option<i64>,
}

#[derive(Deserialize)]
struct RowRaw {
    date: String,
    timezone: String,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    hash_deviceid: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    deviceid: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    model: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_int")]
    modified: Option<i64>,
    #[serde(default, deserialize_with = "lenient::opt_decimal")]
    steps: Option<Decimal>,
    #[serde(default, deserialize_with = "lenient::opt_decimal")]
    distance: Option<Decimal>,
    #[serde(default, deserialize_with = "lenient::opt_decimal")]
    elevation: Option<Decimal>,
    #[serde(default, deserialize_with = "lenient::opt_decimal")]
    soft: Option<Decimal>,
    #[serde(default, deserialize_with = "lenient::opt_decimal")]
    moderate: Option<Decimal>,
    #[serde(default, deserialize_with = "lenient::opt_decimal")]
    intense: Option<Decimal>,
    #[serde(default, deserialize_with = "lenient::opt_decimal")]
    calories: Option<Decimal>,
    #[serde(default, deserialize_with = "lenient::opt_decimal")]
    totalcalories: Option<Decimal>,
    #[serde(default, deserialize_with = "lenient::opt_decimal")]
    hr_average: Option<Decimal>,
    #[serde(default, deserialize_with = "lenient::opt_decimal")]
    hr_min: Option<Decimal>,
    #[serde(default, deserialize_with = "lenient::opt_decimal")]
    hr_max: Option<Decimal>,
    #[serde(default, deserialize_with = "lenient::opt_decimal")]
    hr_zone_0: Option<Decimal>,
    #[serde(default, deserialize_with = "lenient::opt_decimal")]
    hr_zone_1: Option<Decimal>,
    #[serde(default, deserialize_with = "lenient::opt_decimal")]
    hr_zone_2: Option<Decimal>,
    #[serde(default, deserialize_with = "lenient::opt_decimal")]
    hr_zone_3: Option<Decimal>,
}

/// Unix time of the first instant of `date` in the time zone named `tz` (IANA name, from
/// jiff's bundled tzdb, so the answer does not depend on the host's zoneinfo).
pub fn local_day_start(date: Date, tz: &str) -> Option<i64> {
    let tz = TimeZone::get(tz).ok()?;
    // `to_zoned_datetime` resolves a midnight that a DST change skips to the instant after
    // the gap: still the first instant of that day.
    Some(date.to_zoned_datetime(tz).ok()?.timestamp().as_second())
}

fn nonzero(value: Option<Decimal>) -> Option<Decimal> {
    value.filter(|v| !v.is_zero())
}

fn day(raw: RowRaw) -> Option<ActivityDay> {
    let date: Date = raw.date.trim().parse().ok()?;
    // A row whose day cannot be placed is malformed: placing it in UTC is the bug this
    // collector exists to avoid.
    let day_start = local_day_start(date, raw.timezone.trim())?;
    let day_end = local_day_start(date.tomorrow().ok()?, raw.timezone.trim())? - 1;
    let hr_average = nonzero(raw.hr_average);
    let zones = [raw.hr_zone_0, raw.hr_zone_1, raw.hr_zone_2, raw.hr_zone_3];
    Some(ActivityDay {
        device_id: device_id(raw.hash_deviceid, raw.deviceid),
        device_model: raw.model.unwrap_or_default(),
        date,
        day_start,
        day_end,
        modified: raw.modified,
        steps: raw.steps,
        distance_meters: raw.distance,
        floors: raw.elevation,
        soft_seconds: raw.soft,
        moderate_seconds: raw.moderate,
        intense_seconds: raw.intense,
        active_kcal: raw.calories,
        total_kcal: raw.totalcalories,
        hr_min: nonzero(raw.hr_min),
        hr_max: nonzero(raw.hr_max),
        hr_zones: if hr_average.is_some() {
            zones
        } else {
            [None; 4]
        },
        hr_average,
    })
}

/// Parses a `getactivity` answer. A malformed row is counted and skipped; a malformed
/// envelope or body fails the whole answer.
pub fn parse_getactivity(body: &[u8]) -> Result<ActivityPage, ApiError> {
    let parsed: BodyRaw = success_body_as(ACTION, body)?;
    let (days, malformed_rows) = rows_of(ACTION, parsed.activities, "row", day);
    Ok(ActivityPage {
        days,
        malformed_rows,
        more: parsed.more,
        offset: parsed.offset,
    })
}

/// The latest day of each source, and where the sync stands.
pub type ActivityState = Latest<ActivityDay>;

impl SourceRow for ActivityDay {
    type Period = Date;
    fn source(&self) -> (&str, &str) {
        (&self.device_id, &self.device_model)
    }
    fn period(&self) -> Date {
        self.date
    }
    fn modified(&self) -> Option<i64> {
        self.modified
    }
    fn written_at(&self) -> i64 {
        self.day_end
    }
    fn series(&self, put: &mut Put<'_>) {
        day_series(self, put);
    }
}

impl RowPage for ActivityPage {
    type Row = ActivityDay;
    fn into_rows(self) -> (Vec<ActivityDay>, usize) {
        (self.days, self.malformed_rows)
    }
}

/// The samples of one day of one source, as the live families show them: `put(name, help,
/// labels, value)` once per sample, a value the source does not measure left out. One list
/// for the live exporter and the backfill, so that both give the same series.
pub fn day_series(
    day: &ActivityDay,
    mut put: impl FnMut(&'static str, &'static str, &[(&'static str, &str)], f64),
) {
    let device = [
        ("device_id", day.device_id.as_str()),
        ("device_model", day.device_model.as_str()),
    ];
    let mut maybe = |name: &'static str, help: &'static str, value: Option<Decimal>| {
        if let Some(v) = value {
            put(name, help, &device, v.to_f64());
        }
    };
    maybe(
        "withings_activity_steps",
        "Steps on the latest day reported by each source (per device: a phone and a watch count the same steps, so never add them).",
        day.steps,
    );
    maybe(
        "withings_activity_distance_meters",
        "Distance travelled on the latest day, in meters.",
        day.distance_meters,
    );
    maybe(
        "withings_activity_floors",
        "Floors climbed on the latest day.",
        day.floors,
    );
    maybe(
        "withings_activity_active_energy_joules",
        "Active energy burned on the latest day, in joules (Withings' kcal × 4184).",
        day.active_kcal.and_then(|k| k.times(JOULES_PER_KCAL)),
    );
    maybe(
        "withings_activity_total_energy_joules",
        "Total energy burned on the latest day, active and passive, in joules (Withings' kcal × 4184).",
        day.total_kcal.and_then(|k| k.times(JOULES_PER_KCAL)),
    );
    maybe(
        "withings_activity_heart_rate_average_bpm",
        "Average heart rate on the latest day, in beats per minute (absent when the source measures none).",
        day.hr_average,
    );
    maybe(
        "withings_activity_heart_rate_min_bpm",
        "Lowest heart rate on the latest day, in beats per minute.",
        day.hr_min,
    );
    maybe(
        "withings_activity_heart_rate_max_bpm",
        "Highest heart rate on the latest day, in beats per minute.",
        day.hr_max,
    );
    for (intensity, value) in [
        ("soft", day.soft_seconds),
        ("moderate", day.moderate_seconds),
        ("intense", day.intense_seconds),
    ] {
        if let Some(v) = value {
            let labels = [device[0], device[1], ("intensity", intensity)];
            put(
                "withings_activity_intensity_seconds",
                "Time spent at each activity intensity on the latest day, in seconds (moderate + intense is Withings' `active`).",
                &labels,
                v.to_f64(),
            );
        }
    }
    for (zone, value) in ["0", "1", "2", "3"].into_iter().zip(day.hr_zones) {
        if let Some(v) = value {
            let labels = [device[0], device[1], ("zone", zone)];
            put(
                "withings_activity_heart_rate_zone_seconds",
                "Time spent in each heart-rate zone on the latest day, in seconds (0 light, 1 moderate, 2 intense, 3 maximal).",
                &labels,
                v.to_f64(),
            );
        }
    }
    put(
        "withings_activity_day_timestamp_seconds",
        "Unix time of the local midnight (in the user's time zone) that starts the day the other withings_activity_ series of this source belong to.",
        &device,
        day.day_start as f64,
    );
}

/// The `activity` collector.
pub struct Activity;

const PATH: &str = "v2/measure";

/// The request of one `getactivity` page: for the sync, or a range of days for the backfill.
pub fn request(query: RowQuery<'_>) -> Request {
    row_request(PATH, ACTION, query, None)
}

/// One `getactivity` page.
pub async fn getactivity<'q>(
    client: &WithingsClient,
    token: &Secret,
    query: impl Into<RowQuery<'q>>,
) -> Result<ActivityPage, ApiError> {
    client
        .call(token, &request(query.into()), parse_getactivity)
        .await
}

impl Collector for Activity {
    fn name(&self) -> &'static str {
        "activity"
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
        Box::new(LatestRows::new(request, parse_getactivity))
    }
    fn history(&self) -> Option<&dyn History> {
        Some(self)
    }
}

impl History for Activity {
    fn by_days(&self) -> bool {
        true
    }
    fn rows(&self) -> &'static str {
        "days"
    }
    fn request(&self, _: &Settings, window: Window<'_>, offset: Option<i64>) -> Request {
        request(days(window, offset))
    }
    fn parse(&self, body: &[u8]) -> Result<Box<dyn HistoryPage>, ApiError> {
        Ok(Box::new(parse_getactivity(body)?))
    }
}

impl HistoryPage for ActivityPage {
    fn malformed_rows(&self) -> usize {
        self.malformed_rows
    }

    /// A day's totals at its last second: the last moment the live exporter shows them.
    fn write(&self, _: &Settings, _: i64, out: &mut dyn Sink) -> std::io::Result<usize> {
        write_rows(&self.days, out)
    }
}
