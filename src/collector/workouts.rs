//! `workouts`: `getworkouts` (`{api}/v2/measure`), each workout a watch recorded or the
//! person entered: its category by name, duration, energy, distance, steps, heart rate and
//! its zones, SpO2. The scrape shows the latest workout of each device; the backfill writes
//! every workout at its start time.

use super::rows_of;
use super::{
    Collector, History, HistoryPage, LatestRows, Paged, Put, RowPage, RowQuery, SeriesBody,
    Settings, Sink, SourceRow, State, Window, activity::JOULES_PER_KCAL, days, device_id,
    row_request, write_rows,
};
use crate::withings::lenient::{self, Decimal};
use crate::withings::{ApiError, Request, success_body_as};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::collections::BTreeMap;

const ACTION: &str = "getworkouts";
const PATH: &str = "v2/measure";

/// The `data` fields asked for and read (Withings sends only some without `data_fields`).
const FIELDS: &[&str] = &[
    "calories",
    "hr_average",
    "hr_min",
    "hr_max",
    "hr_zone_0",
    "hr_zone_1",
    "hr_zone_2",
    "hr_zone_3",
    "pause_duration",
    "spo2_average",
    "steps",
    "distance",
    "elevation",
    "pool_laps",
    "strokes",
];

/// Withings' workout categories (the reference's `workout_object.category`), as label
/// values: lowercase, words joined by `_`. A number not in the list is its digits.
pub fn category_name(category: i64) -> Option<&'static str> {
    Some(match category {
        1 => "walk",
        2 => "run",
        3 => "hiking",
        4 => "skating",
        5 => "bmx",
        6 => "bicycling",
        7 => "swimming",
        8 => "surfing",
        9 => "kitesurfing",
        10 => "windsurfing",
        11 => "bodyboard",
        12 => "tennis",
        13 => "table_tennis",
        14 => "squash",
        15 => "badminton",
        16 => "lift_weights",
        17 => "fitness",
        18 => "elliptical",
        19 => "pilates",
        20 => "basket_ball",
        21 => "soccer",
        22 => "football",
        23 => "rugby",
        24 => "volley_ball",
        25 => "waterpolo",
        26 => "horse_riding",
        27 => "golf",
        28 => "yoga",
        29 => "dancing",
        30 => "boxing",
        31 => "fencing",
        32 => "wrestling",
        33 => "martial_arts",
        34 => "skiing",
        35 => "snowboarding",
        36 => "other",
        128 => "no_activity",
        187 => "rowing",
        188 => "zumba",
        191 => "baseball",
        192 => "handball",
        193 => "hockey",
        194 => "ice_hockey",
        195 => "climbing",
        196 => "ice_skating",
        272 => "multi_sport",
        306 => "indoor_walk",
        307 => "indoor_running",
        308 => "indoor_cycling",
        455 => "standup_paddleboarding",
        456 => "padel",
        457 => "gaming",
        490 => "beach_volleyball",
        491 => "stair_stepper",
        492 => "skateboarding",
        493 => "parkour",
        494 => "kayaking",
        495 => "canoeing",
        496 => "sailing",
        497 => "fishing",
        498 => "trail_running",
        499 => "snowshoeing",
        500 => "paintball",
        501 => "archery",
        502 => "scuba_diving",
        503 => "baseball_training",
        504 => "biathlon",
        505 => "bocce",
        506 => "petanque",
        507 => "paragliding",
        508 => "frisbee",
        509 => "skydiving",
        510 => "pickleball",
        511 => "cornhole",
        512 => "dodgeball",
        513 => "ultimate",
        514 => "teqball",
        515 => "pushing_a_wheelchair_running_pace",
        516 => "pushing_a_wheelchair_walking_pace",
        517 => "athletics",
        518 => "track_cycling",
        519 => "pentathlon",
        520 => "sport_shooting",
        521 => "triathlon",
        522 => "diving",
        523 => "mountain_biking",
        524 => "gravel_biking",
        525 => "e_biking",
        526 => "e_mountain_biking",
        527 => "handcycling",
        528 => "velomobile",
        529 => "backcountry_skiing",
        530 => "nordic_skiing",
        531 => "roller_skiing",
        532 => "racquetball",
        534 => "hip_hop",
        535 => "muaythai",
        536 => "taekwondo",
        537 => "judo",
        538 => "trampoline",
        539 => "standing_frame",
        540 => "seated_strength",
        541 => "seated_cardio",
        542 => "walk_with_walker",
        543 => "walk_with_cane",
        544 => "breaking",
        545 => "chores",
        546 => "crossfit",
        547 => "spinclass",
        548 => "cricket",
        549 => "flamenco_dancing",
        550 => "hiit",
        551 => "meditation",
        552 => "stretching",
        553 => "yard_work_gardening",
        554 => "cleaning",
        555 => "public_speaking",
        556 => "spikeball",
        557 => "lacrosse",
        558 => "baby_wearing",
        559 => "dog_walking",
        560 => "breathing_exercises",
        561 => "balance_drills",
        562 => "pushing_a_stroller",
        563 => "toddler_wearing",
        564 => "bowling",
        565 => "lasertag",
        566 => "nordic_walking",
        567 => "sumo_wrestling",
        568 => "cooking",
        _ => return None,
    })
}

/// The source of a workout: the trackers by their model number, the phone trackers too.
fn model_name(model: i64) -> Option<&'static str> {
    super::sleep::model_name(model).or_else(|| phone_tracker(model))
}

fn phone_tracker(model: i64) -> Option<&'static str> {
    Some(match model {
        1051 | 1052 => "iOS step tracker",
        1053 | 1054 => "Android step tracker",
        1055 => "GoogleFit tracker",
        1056 => "Samsung Health tracker",
        1057 => "HealthKit step iPhone tracker",
        1058 => "HealthKit step Apple Watch tracker",
        1059 => "HealthKit other step tracker",
        1060 => "Google Health Connect",
        1062 => "Huawei tracker",
        _ => return None,
    })
}

/// One workout.
#[derive(Debug, Clone, PartialEq)]
pub struct Workout {
    pub device_id: String,
    pub device_model: String,
    /// The category's name, or its number when Withings' list has no name for it.
    pub category: String,
    pub startdate: i64,
    pub enddate: i64,
    pub modified: Option<i64>,
    /// The `data` fields of [`FIELDS`] that were given.
    pub values: BTreeMap<String, Decimal>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkoutPage {
    pub workouts: Vec<Workout>,
    pub malformed_rows: usize,
    pub more: bool,
    pub offset: Option<i64>,
}

impl Paged for WorkoutPage {
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
    category: i64,
    #[serde(deserialize_with = "lenient::int")]
    startdate: i64,
    #[serde(deserialize_with = "lenient::int")]
    enddate: i64,
    #[serde(default, deserialize_with = "lenient::opt_int")]
    modified: Option<i64>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    deviceid: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    hash_deviceid: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_int")]
    model: Option<i64>,
    #[serde(default)]
    data: BTreeMap<String, Box<RawValue>>,
}

fn workout(raw: RowRaw) -> Option<Workout> {
    if raw.enddate < raw.startdate {
        return None;
    }
    let values = raw
        .data
        .into_iter()
        .filter(|(k, _)| FIELDS.contains(&k.as_str()))
        .filter_map(|(k, v)| {
            let text = v.get();
            let inner = text
                .strip_prefix('"')
                .and_then(|t| t.strip_suffix('"'))
                .unwrap_or(text);
            Decimal::parse(inner).map(|d| (k, d))
        })
        .collect();
    Some(Workout {
        device_id: device_id(raw.hash_deviceid, raw.deviceid),
        device_model: raw
            .model
            .and_then(model_name)
            .unwrap_or_default()
            .to_owned(),
        category: category_name(raw.category)
            .map_or_else(|| raw.category.to_string(), str::to_owned),
        startdate: raw.startdate,
        enddate: raw.enddate,
        modified: raw.modified,
        values,
    })
}

/// Parses a `getworkouts` answer. A malformed workout is counted and skipped.
pub fn parse_getworkouts(body: &[u8]) -> Result<WorkoutPage, ApiError> {
    let parsed: SeriesBody = success_body_as(ACTION, body)?;
    let (workouts, malformed_rows) = rows_of(ACTION, parsed.series, "workout", workout);
    Ok(WorkoutPage {
        workouts,
        malformed_rows,
        more: parsed.more,
        offset: parsed.offset,
    })
}

impl SourceRow for Workout {
    type Period = i64;
    fn source(&self) -> (&str, &str) {
        (&self.device_id, &self.device_model)
    }
    fn period(&self) -> i64 {
        self.startdate
    }
    fn modified(&self) -> Option<i64> {
        self.modified
    }
    fn written_at(&self) -> i64 {
        self.startdate
    }
    fn series(&self, put: &mut Put<'_>) {
        workout_series(self, put);
    }
}

impl RowPage for WorkoutPage {
    type Row = Workout;
    fn into_rows(self) -> (Vec<Workout>, usize) {
        (self.workouts, self.malformed_rows)
    }
}

/// The series of one workout, live (the latest of each device) and in the backfill (at its
/// start): one list for both.
pub fn workout_series(workout: &Workout, put: &mut Put<'_>) {
    let labels = [
        ("device_id", workout.device_id.as_str()),
        ("device_model", workout.device_model.as_str()),
        ("category", workout.category.as_str()),
    ];
    let value = |field: &str| workout.values.get(field).copied();
    // A heart rate of 0 is "not measured".
    let rate = |field: &str| value(field).filter(|v| !v.is_zero());
    let mut maybe = |name: &'static str, help: &'static str, v: Option<Decimal>| {
        if let Some(v) = v {
            put(name, help, &labels, v.to_f64());
        }
    };
    maybe(
        "withings_workout_duration_seconds",
        "Length of the latest workout of each device, from start to end (pauses included), in seconds.",
        Some(Decimal::parse(
            &(workout.enddate - workout.startdate).to_string(),
        ))
        .flatten(),
    );
    maybe(
        "withings_workout_pause_seconds",
        "Time paused during the latest workout of each device, in seconds.",
        value("pause_duration"),
    );
    maybe(
        "withings_workout_energy_joules",
        "Active energy burned during the latest workout of each device, in joules (Withings' kcal × 4184).",
        value("calories").and_then(|k| k.times(JOULES_PER_KCAL)),
    );
    maybe(
        "withings_workout_distance_meters",
        "Distance covered during the latest workout of each device, in meters.",
        value("distance"),
    );
    maybe(
        "withings_workout_steps",
        "Steps during the latest workout of each device.",
        value("steps"),
    );
    maybe(
        "withings_workout_floors",
        "Floors climbed during the latest workout of each device.",
        value("elevation"),
    );
    maybe(
        "withings_workout_pool_laps",
        "Pool laps of the latest workout of each device (swimming).",
        value("pool_laps"),
    );
    maybe(
        "withings_workout_strokes",
        "Strokes of the latest workout of each device (swimming).",
        value("strokes"),
    );
    maybe(
        "withings_workout_heart_rate_average_bpm",
        "Average heart rate during the latest workout of each device, in beats per minute.",
        rate("hr_average"),
    );
    maybe(
        "withings_workout_heart_rate_min_bpm",
        "Lowest heart rate during the latest workout of each device, in beats per minute.",
        rate("hr_min"),
    );
    maybe(
        "withings_workout_heart_rate_max_bpm",
        "Highest heart rate during the latest workout of each device, in beats per minute.",
        rate("hr_max"),
    );
    maybe(
        "withings_workout_spo2_average_ratio",
        "Average SpO2 during the latest workout of each device, as a ratio (0-1).",
        rate("spo2_average").and_then(|p| Decimal::parse(&format!("{}e-2", p.to_f64()))),
    );
    for zone in ["0", "1", "2", "3"] {
        if let Some(seconds) = value(&format!("hr_zone_{zone}")) {
            let with_zone = [labels[0], labels[1], labels[2], ("zone", zone)];
            put(
                "withings_workout_heart_rate_zone_seconds",
                "Time in each heart-rate zone during the latest workout of each device, in seconds (0 light, 1 moderate, 2 intense, 3 maximal).",
                &with_zone,
                seconds.to_f64(),
            );
        }
    }
    put(
        "withings_workout_start_timestamp_seconds",
        "Unix time the latest workout of each device began; the other withings_workout_ series of this device describe it.",
        &labels,
        workout.startdate as f64,
    );
    put(
        "withings_workout_end_timestamp_seconds",
        "Unix time the latest workout of each device ended.",
        &labels,
        workout.enddate as f64,
    );
}

pub fn request(query: RowQuery<'_>) -> Request {
    row_request(PATH, ACTION, query, Some(&FIELDS.join(",")))
}

pub struct Workouts;

impl Collector for Workouts {
    fn name(&self) -> &'static str {
        "workouts"
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
        Box::new(LatestRows::new(request, parse_getworkouts))
    }
    fn history(&self) -> Option<&dyn History> {
        Some(self)
    }
}

impl History for Workouts {
    fn by_days(&self) -> bool {
        true
    }
    fn rows(&self) -> &'static str {
        "workouts"
    }
    fn request(&self, _: &Settings, window: Window<'_>, offset: Option<i64>) -> Request {
        request(days(window, offset))
    }
    fn parse(&self, body: &[u8]) -> Result<Box<dyn HistoryPage>, ApiError> {
        Ok(Box::new(parse_getworkouts(body)?))
    }
}

impl HistoryPage for WorkoutPage {
    fn malformed_rows(&self) -> usize {
        self.malformed_rows
    }

    /// Each workout at its start: when it happened.
    fn write(&self, _: &Settings, _: i64, out: &mut dyn Sink) -> std::io::Result<usize> {
        write_rows(&self.workouts, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::Latest;

    /// The reference's `workout_object` shape: a run on a ScanWatch 2 and, later, a swim
    /// entered without heart rate; a category Withings' list does not name; a bad row.
    const ANSWER: &str = r#"{"status":0,"body":{"series":[
        {"id":1,"category":2,"timezone":"Europe/Paris","model":94,"attrib":0,
         "startdate":1594245600,"enddate":1594249200,"date":"2020-07-09",
         "modified":1594249300,"deviceid":"w1",
         "data":{"calories":412.5,"hr_average":151,"hr_min":98,"hr_max":181,
                 "hr_zone_0":300,"hr_zone_1":900,"hr_zone_2":2000,"hr_zone_3":400,
                 "pause_duration":0,"spo2_average":97,"steps":9120,"distance":10012.3,
                 "elevation":4,"intensity":0}},
        {"id":2,"category":7,"model":94,"startdate":1594300000,"enddate":1594302400,
         "date":"2020-07-09","modified":1594302500,"deviceid":"w1",
         "data":{"pool_laps":40,"strokes":800,"hr_average":0}},
        {"id":3,"category":9999,"model":1055,"startdate":1594000000,"enddate":1594000600,
         "date":"2020-07-06","modified":1594000700,"deviceid":null,"data":{"steps":"800"}},
        {"id":4,"category":1,"startdate":20,"enddate":10},
        "junk"
    ],"more":false,"offset":0}}"#;

    /// A sample: family name, labels, value.
    type Shown = (String, Vec<(String, String)>, f64);

    fn samples(state: &Latest<Workout>) -> Vec<Shown> {
        let mut out = Vec::new();
        for row in state.rows() {
            row.series(&mut |name, _, labels, value| {
                let labels = labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect();
                out.push((name.to_owned(), labels, value));
            });
        }
        out
    }

    #[test]
    fn workouts_in_base_units_with_their_category_by_name() {
        let page = parse_getworkouts(ANSWER.as_bytes()).unwrap();
        assert_eq!(page.malformed_rows, 2);
        assert_eq!(page.workouts.len(), 3);
        let run = &page.workouts[0];
        assert_eq!(
            (run.category.as_str(), run.device_model.as_str()),
            ("run", "ScanWatch 2")
        );
        assert_eq!(page.workouts[2].category, "9999");
        assert_eq!(page.workouts[2].device_model, "GoogleFit tracker");
        let mut written = Vec::new();
        workout_series(run, &mut |name, _, labels, value| {
            written.push((name, labels.last().map(|l| l.1.to_owned()), value));
        });
        let get = |name: &str| {
            written
                .iter()
                .filter(|(n, _, _)| *n == name)
                .map(|(_, l, v)| (l.clone().unwrap_or_default(), *v))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            get("withings_workout_duration_seconds"),
            [("run".into(), 3600.0)]
        );
        // 412.5 kcal × 4184, exactly.
        assert_eq!(
            get("withings_workout_energy_joules"),
            [("run".into(), 1_725_900.0)]
        );
        assert_eq!(
            get("withings_workout_distance_meters"),
            [("run".into(), 10012.3)]
        );
        assert_eq!(
            get("withings_workout_spo2_average_ratio"),
            [("run".into(), 0.97)]
        );
        assert_eq!(get("withings_workout_pause_seconds"), [("run".into(), 0.0)]);
        assert_eq!(
            get("withings_workout_heart_rate_zone_seconds"),
            [
                ("0".into(), 300.0),
                ("1".into(), 900.0),
                ("2".into(), 2000.0),
                ("3".into(), 400.0)
            ]
        );
        // The latest workout of each device: the swim replaces the run on the watch, and a
        // heart rate of 0 is absent.
        let mut state = Latest::default();
        state.merge(page);
        let shown = samples(&state);
        let watch: Vec<_> = shown
            .iter()
            .filter(|(_, l, _)| l[1].1 == "ScanWatch 2")
            .collect();
        assert!(
            watch.iter().all(|(_, l, _)| l[2].1 == "swimming"),
            "{watch:?}"
        );
        assert!(
            watch
                .iter()
                .any(|(n, _, v)| n == "withings_workout_pool_laps" && *v == 40.0)
        );
        assert!(!watch.iter().any(|(n, _, _)| n.contains("heart_rate")));
        assert!(shown.iter().any(|(n, l, v)| n == "withings_workout_steps"
            && l[1].1 == "GoogleFit tracker"
            && *v == 800.0));
    }

    #[test]
    fn every_field_is_asked_for_and_a_sync_by_lastupdate() {
        let form = request(RowQuery::Since(crate::collector::SyncQuery {
            lastupdate: 100,
            offset: None,
        }))
        .form;
        assert_eq!(form[0], ("action", "getworkouts".to_owned()));
        assert_eq!(form[1], ("lastupdate", "100".to_owned()));
        assert_eq!(form[2], ("data_fields", FIELDS.join(",")));
    }
}
