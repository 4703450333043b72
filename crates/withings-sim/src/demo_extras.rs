//! The demo household's activity days, sleep nights and devices: a scale, a watch, a sleep
//! analyzer (and the blood pressure monitor and thermometer the demo's measures come from),
//! with a phone counting steps beside the watch. Deterministic: the same time gives the same
//! answer, today's row growing as the day goes on.

use super::data::UserExtras;
use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

/// Days of activity and nights of sleep the demo keeps.
pub const DAYS: i64 = 7;

pub const SCALE: (&str, &str, &str) =
    ("5b2f1cfa6e4b3c4c1d0e8a7b9c6d5e4f3a2b1c0d", "Body+", "Scale");
pub const WATCH: (&str, &str, &str) = (
    "dbf7f61809d5fb350a16a50f6af6e826f0746082",
    "ScanWatch 2",
    "Activity Tracker",
);
pub const SLEEP_ANALYZER: (&str, &str, &str) = (
    "9a8b7c6d5e4f30211f2e3d4c5b6a798877665544",
    "Aura Sensor V2",
    "Sleep Monitor",
);
const BPM: (&str, &str, &str) = (
    "c405eb8e0e053f6601e151c7e43c04e29aad6956",
    "BPM Connect",
    "Blood Pressure Monitor",
);
const THERMO: (&str, &str, &str) = (
    "1d453daf947378fac40677e7a085eea73750b061",
    "Thermo",
    "Smart Connected Thermometer",
);

fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A value in `0..span`, fixed for (day, salt).
fn pick(day: i64, salt: u64, span: i64) -> i64 {
    (mix((day as u64).wrapping_mul(1_000_003).wrapping_add(salt)) % span.max(1) as u64) as i64
}

fn day_number(date: Date) -> i64 {
    date.since(Date::constant(1970, 1, 1))
        .map_or(0, |span| i64::from(span.get_days()))
}

fn local_midnight(date: Date, tz: &TimeZone) -> i64 {
    date.to_zoned_datetime(tz.clone())
        .map_or(0, |z| z.timestamp().as_second())
}

/// When the scale is stepped on in the morning of `date`: 07:10 local time.
pub fn weigh_in_at(date: Date, tz: &TimeZone) -> i64 {
    local_midnight(date, tz) + 7 * 3600 + 600
}

/// The local date at `unix` in `tz`: the user's day, not UTC's.
pub fn local_date(unix: i64, tz: &TimeZone) -> Date {
    Timestamp::from_second(unix)
        .unwrap_or(Timestamp::UNIX_EPOCH)
        .to_zoned_datetime(tz.clone())
        .date()
}

/// Everything the collectors' endpoints serve for the demo user at `now`.
pub fn household_extras(now: i64, timezone: &str) -> UserExtras {
    let tz = TimeZone::get(timezone).unwrap_or(TimeZone::UTC);
    let today = local_date(now, &tz);
    let mut activities = Vec::new();
    let mut sleep = Vec::new();
    let mut last_night_end = None;
    for back in (0..DAYS).rev() {
        let Ok(date) = today.checked_sub(SignedDuration::from_hours(24 * back)) else {
            continue;
        };
        let n = day_number(date);
        let midnight = local_midnight(date, &tz);
        let next_midnight = date
            .tomorrow()
            .map_or(midnight + 86_400, |d| local_midnight(d, &tz));
        // Today's row covers the part of the day gone by, and keeps being modified.
        let (fraction, modified) = if back == 0 {
            let elapsed = (now - midnight).clamp(0, 86_400) as f64;
            (
                elapsed / (next_midnight - midnight) as f64,
                now - now.rem_euclid(60),
            )
        } else {
            (1.0, (next_midnight + 600).min(now))
        };
        let steps = ((6_000 + pick(n, 1, 6_000)) as f64 * fraction).round() as i64;
        activities.push(activity_row(
            date,
            timezone,
            modified,
            steps,
            n,
            Some(WATCH),
        ));
        // The phone counts most of the same steps: a second series, never to be added.
        let phone_steps = (steps as f64 * 0.85).round() as i64;
        activities.push(activity_row(
            date,
            timezone,
            modified,
            phone_steps,
            n + 7,
            None,
        ));

        // The night that ends on the morning of `date`.
        let end = midnight + 6 * 3600 + 30 * 60 + pick(n, 2, 3600);
        let start = midnight - 3600 - pick(n, 3, 5400);
        if end <= now {
            last_night_end = Some(end);
            sleep.push(night(
                date,
                timezone,
                start,
                end,
                n,
                SLEEP_ANALYZER,
                32,
                63,
                true,
            ));
            sleep.push(night(
                date,
                timezone,
                start + 300,
                end - 120,
                n,
                WATCH,
                16,
                94,
                false,
            ));
        }
    }
    let device = |d: (&str, &str, &str), battery: &str, last: Option<i64>| {
        json!({
            "type": d.2, "model": d.1, "battery": battery, "timezone": timezone,
            "first_session_date": 1_690_000_000, "last_session_date": last,
            "deviceid": d.0, "hash_deviceid": d.0
        })
    };
    let morning = weigh_in_at(today, &tz);
    let weighed = if morning <= now {
        morning
    } else {
        today
            .yesterday()
            .map_or(morning - 86_400, |d| weigh_in_at(d, &tz))
    };
    let devices = vec![
        device(SCALE, "high", Some(weighed)),
        device(WATCH, "medium", Some(now - now.rem_euclid(600))),
        device(SLEEP_ANALYZER, "high", last_night_end.map(|e| e + 900)),
        device(BPM, "high", Some(now - now.rem_euclid(60))),
        // The thermometer's battery is low, so that the demo shows the alert.
        device(THERMO, "low", Some(now - now.rem_euclid(300))),
    ];
    UserExtras {
        activities,
        sleep,
        devices,
        workouts: workouts(today, &tz),
        intraday: intraday(now, &tz),
        sleep_detail: last_night(now, &tz),
        ecgs: Vec::new(),
        goals: Some(json!({
            "steps": 10_000,
            "sleep": 8 * 3600,
            "weight": {"value": 72_000, "unit": -3},
        })),
    }
}

/// The watch's last two days, a sample every 10 minutes: heart rate that follows the day
/// (low asleep from 23:00 to 07:00 with SpO2 and breathing, up while walking about in the
/// day, high during yesterday's run at 07:00), steps in the day. The watch syncs every 30
/// minutes and a sync takes 10 minutes to reach Withings, so a sample is listed from 10 to
/// 40 minutes after it was taken.
pub fn intraday(now: i64, tz: &TimeZone) -> std::collections::BTreeMap<i64, Value> {
    const STEP: i64 = 600;
    let mut out = std::collections::BTreeMap::new();
    let first = (now - 2 * 86_400).div_euclid(STEP) * STEP;
    let today = local_date(now, tz);
    let yesterday = today.yesterday().unwrap_or(today);
    let run_start = local_midnight(yesterday, tz) + 7 * 3600;
    let mut at = first;
    while at <= now {
        let local = at - local_midnight(local_date(at, tz), tz);
        let hour = local / 3600;
        let asleep = !(7..23).contains(&hour);
        let running = (run_start..run_start + 42 * 60).contains(&at);
        // A small, repeatable wobble so that the line is not flat.
        let wobble = (at / STEP).rem_euclid(7) - 3;
        let mut sample = json!({
            "deviceid": WATCH.0,
            "model": WATCH.1,
            "model_id": 94,
            "visible_at": (at / 1800 + 1) * 1800 + 600,
        });
        let heart_rate = if running {
            150 + wobble
        } else if asleep {
            56 + wobble / 2
        } else {
            72 + wobble
        };
        sample["heart_rate"] = json!(heart_rate);
        if asleep {
            sample["spo2_auto"] = json!(95 + wobble.rem_euclid(3));
            sample["rr"] = json!(14 + wobble / 3);
            sample["rmssd"] = json!(42 + wobble);
        } else {
            let steps = if running {
                1_650
            } else {
                80 + 20 * (wobble + 3)
            };
            sample["steps"] = json!(steps);
        }
        out.insert(at, sample);
        at += STEP;
    }
    out
}

/// Last night on the sleep analyzer, 23:00 to 07:00: 90-minute cycles of light, deep and
/// REM sleep, awake a little at the end of each, with heart rate, breathing and some
/// snoring minute by minute; uploaded at 07:15, when its sleeper is up.
pub fn last_night(now: i64, tz: &TimeZone) -> Vec<Value> {
    let today = local_date(now, tz);
    let yesterday = today.yesterday().unwrap_or(today);
    let bedtime = local_midnight(yesterday, tz) + 23 * 3600;
    let wake = local_midnight(today, tz) + 7 * 3600;
    let uploaded = wake + 15 * 60;
    // (stage, minutes) of one cycle: light, deep, light, REM, awake.
    const CYCLE: [(i64, i64); 5] = [(1, 25), (2, 30), (1, 15), (3, 15), (0, 5)];
    let mut out = Vec::new();
    let mut at = bedtime;
    'night: loop {
        for (stage, minutes) in CYCLE {
            if at >= wake {
                break 'night;
            }
            let end = (at + minutes * 60).min(wake);
            let mut hr = serde_json::Map::new();
            let mut rr = serde_json::Map::new();
            let mut snoring = serde_json::Map::new();
            let mut minute = at;
            while minute < end {
                let wobble = (minute / 60).rem_euclid(5) - 2;
                let rate = match stage {
                    2 => 52,
                    3 => 60,
                    0 => 66,
                    _ => 56,
                } + wobble;
                hr.insert(minute.to_string(), json!(rate));
                rr.insert(minute.to_string(), json!(14 + wobble / 2));
                if stage == 1 && wobble == 2 {
                    snoring.insert(minute.to_string(), json!(20));
                }
                minute += 60;
            }
            out.push(json!({
                "startdate": at,
                "enddate": end,
                "state": stage,
                "model": SLEEP_ANALYZER.1,
                "model_id": 63,
                "hash_deviceid": SLEEP_ANALYZER.0,
                "hr": hr,
                "rr": rr,
                "snoring": snoring,
                "visible_at": uploaded,
            }));
            at = end;
        }
    }
    out
}

/// A run yesterday morning and a walk the evening before, on the watch.
fn workouts(today: Date, tz: &TimeZone) -> Vec<Value> {
    let mut out = Vec::new();
    for (back, category, start_hour, minutes, data) in [
        (
            1,
            2,
            7,
            42,
            json!({"calories": 398.6, "hr_average": 152, "hr_min": 101, "hr_max": 178,
                   "hr_zone_0": 180, "hr_zone_1": 720, "hr_zone_2": 1380, "hr_zone_3": 240,
                   "pause_duration": 0, "steps": 6950, "distance": 7412.5, "elevation": 3,
                   "spo2_average": 97}),
        ),
        (
            2,
            1,
            18,
            35,
            json!({"calories": 121.2, "hr_average": 96, "hr_min": 74, "hr_max": 118,
                   "hr_zone_0": 1900, "hr_zone_1": 200, "hr_zone_2": 0, "hr_zone_3": 0,
                   "pause_duration": 60, "steps": 3820, "distance": 2890.0, "elevation": 1}),
        ),
    ] {
        let Ok(date) = today.checked_sub(SignedDuration::from_hours(24 * back)) else {
            continue;
        };
        let start = local_midnight(date, tz) + start_hour * 3600;
        let end = start + minutes * 60;
        out.push(json!({
            "id": start,
            "category": category,
            "timezone": tz.iana_name().unwrap_or("UTC"),
            "model": 94,
            "attrib": 7,
            "startdate": start,
            "enddate": end,
            "date": date.to_string(),
            "modified": end + 600,
            "deviceid": WATCH.0,
            "data": data,
        }));
    }
    out
}

/// The ECG a member's watch recorded at 20:15 yesterday, classified `afib` (none for a
/// member without an ECG device), listed a few minutes after it was taken.
pub fn ecgs(now: i64, timezone: &str, afib: Option<i64>) -> Vec<Value> {
    let Some(afib) = afib else {
        return Vec::new();
    };
    let tz = TimeZone::get(timezone).unwrap_or(TimeZone::UTC);
    let today = local_date(now, &tz);
    let yesterday = today.yesterday().unwrap_or(today);
    let taken = local_midnight(yesterday, &tz) + 20 * 3600 + 15 * 60;
    let heart_rate = if afib == 1 { 96 } else { 71 };
    vec![json!({
        "deviceid": WATCH.0,
        "model": 94,
        "ecg": {"signalid": taken, "afib": afib},
        "heart_rate": heart_rate,
        "timestamp": taken,
        "modified": taken + 300,
    })]
}

fn activity_row(
    date: Date,
    timezone: &str,
    modified: i64,
    steps: i64,
    n: i64,
    device: Option<(&str, &str, &str)>,
) -> Value {
    // Distance and calories with three decimals, as real answers have them.
    let distance_mm = steps * (700 + pick(n, 4, 80));
    let active_cal = steps * (38 + pick(n, 5, 10));
    let soft = steps / 4;
    let moderate = steps / 20;
    let intense = steps / 60;
    let mut row = json!({
        "steps": steps,
        "distance": distance_mm as f64 / 1000.0,
        "elevation": steps / 1500,
        "soft": soft, "moderate": moderate, "intense": intense, "active": moderate + intense,
        "calories": active_cal as f64 / 1000.0,
        "totalcalories": (1_650_000 + active_cal) as f64 / 1000.0,
        "timezone": timezone,
        "date": date.to_string(),
        "modified": modified,
    });
    match device {
        Some((id, model, _)) => {
            let average = 68 + pick(n, 6, 12);
            row["hr_average"] = json!(average);
            row["hr_min"] = json!(average - 18);
            row["hr_max"] = json!(average + 60);
            for (zone, share) in [(0, 50), (1, 25), (2, 10), (3, 2)] {
                row[format!("hr_zone_{zone}")] = json!(soft * share / 100);
            }
            row["deviceid"] = json!(id);
            row["hash_deviceid"] = json!(id);
            row["brand"] = json!(1);
            row["model"] = json!(model);
            row["is_tracker"] = json!(true);
        }
        None => {
            // A phone measures no heart rate: Withings sends zeros.
            for key in [
                "hr_average",
                "hr_min",
                "hr_max",
                "hr_zone_0",
                "hr_zone_1",
                "hr_zone_2",
                "hr_zone_3",
            ] {
                row[key] = json!(0);
            }
            row["deviceid"] = Value::Null;
            row["hash_deviceid"] = Value::Null;
            row["brand"] = json!(18);
            row["model"] = json!("iOS step tracker");
            row["is_tracker"] = json!(false);
        }
    }
    row
}

#[allow(clippy::too_many_arguments)]
fn night(
    date: Date,
    timezone: &str,
    start: i64,
    end: i64,
    n: i64,
    device: (&str, &str, &str),
    model: i64,
    model_id: i64,
    analyzer: bool,
) -> Value {
    let in_bed = end - start;
    let latency = 600 + pick(n, 7, 900);
    let wakeup_latency = 120 + pick(n, 8, 600);
    let awake = 900 + pick(n, 9, 1200);
    let asleep = in_bed - latency - wakeup_latency - awake;
    let deep = asleep / 5;
    let rem = asleep / 4;
    let light = asleep - deep - rem;
    let mut data = json!({
        "total_timeinbed": in_bed,
        "total_sleep_time": asleep,
        "lightsleepduration": light,
        "deepsleepduration": deep,
        "remsleepduration": rem,
        "wakeupduration": awake,
        "waso": awake - latency.min(awake),
        "sleep_latency": latency,
        "wakeup_latency": wakeup_latency,
        "wakeupcount": 1 + pick(n, 10, 4),
        "out_of_bed_count": pick(n, 11, 2),
        // Thousandths, as a ratio with three decimals.
        "sleep_efficiency": (asleep * 1000 / in_bed.max(1)) as f64 / 1000.0,
        "sleep_score": 60 + pick(n, 12, 35),
        "hr_average": 56 + pick(n, 13, 8),
        "hr_min": 48 + pick(n, 14, 5),
        "hr_max": 70 + pick(n, 15, 20),
    });
    if analyzer {
        // Only the sleep analyzer senses breathing and snoring; the watch's nights lack
        // these fields altogether.
        data["rr_average"] = json!(14 + pick(n, 16, 3));
        data["rr_min"] = json!(10 + pick(n, 17, 3));
        data["rr_max"] = json!(18 + pick(n, 18, 4));
        data["snoring"] = json!(pick(n, 19, 2400));
        data["snoringepisodecount"] = json!(pick(n, 20, 8));
        data["apnea_hypopnea_index"] = json!(pick(n, 21, 20));
    }
    json!({
        "id": 1_000_000 + n * 2 + i64::from(analyzer),
        "timezone": timezone,
        "model": model,
        "model_id": model_id,
        "hash_deviceid": device.0,
        "startdate": start,
        "enddate": end,
        "date": date.to_string(),
        "created": end + 900,
        "modified": end + 900,
        "completed": true,
        "data": data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_day_is_the_users_local_day_not_utc() {
        // 2023-10-20T23:30:00Z is already the 21st in Berlin (UTC+2) and still the 20th in
        // New York (UTC-4).
        let now = 1_697_844_600;
        let berlin = household_extras(now, "Europe/Berlin");
        let newyork = household_extras(now, "America/New_York");
        let last = |e: &UserExtras| {
            e.activities.last().unwrap()["date"]
                .as_str()
                .unwrap()
                .to_owned()
        };
        assert_eq!(last(&berlin), "2023-10-21");
        assert_eq!(last(&newyork), "2023-10-20");
    }

    #[test]
    fn valid_deterministic_and_only_past_nights() {
        let now = 1_697_844_600;
        let a = household_extras(now, "Europe/Berlin");
        assert_eq!(a, household_extras(now, "Europe/Berlin"));
        assert_eq!(a.validate(), Ok(()));
        assert_eq!(a.activities.len() as i64, 2 * DAYS);
        assert!(
            a.sleep
                .iter()
                .all(|n| n["enddate"].as_i64().unwrap() <= now)
        );
        assert!(
            a.activities
                .iter()
                .all(|r| r["modified"].as_i64().unwrap() <= now)
        );
        assert_eq!(a.devices.len(), 5);
        // Today's row grows as the day goes on.
        let later = household_extras(now + 6 * 3600, "Europe/Berlin");
        let steps = |e: &UserExtras| {
            e.activities[e.activities.len() - 2]["steps"]
                .as_i64()
                .unwrap()
        };
        assert!(steps(&later) > steps(&a), "{} {}", steps(&later), steps(&a));
    }
}
