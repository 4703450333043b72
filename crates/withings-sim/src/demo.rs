//! Readings for the demo: a plausible person measured by four devices, new readings
//! arriving as time passes. Deterministic: the same minute always gives the same values.

use super::demo_extras::{self, local_date};
use jiff::tz::TimeZone;
use serde_json::{Value, json};

/// One reading slot per minute: blood pressure and pulse every slot, SpO2 every second
/// slot, body temperature every fifth.
pub const SLOT_SECONDS: i64 = 60;
/// How much history the demo starts with, so that graphs are not empty at first.
pub const HISTORY_SLOTS: i64 = 180;

const BPM: (&str, &str) = ("c405eb8e0e053f6601e151c7e43c04e29aad6956", "BPM Connect");
const WATCH: (&str, &str) = ("dbf7f61809d5fb350a16a50f6af6e826f0746082", "ScanWatch 2");
const THERMO: (&str, &str) = ("1d453daf947378fac40677e7a085eea73750b061", "Thermo");
const SCALE: (&str, &str) = (demo_extras::SCALE.0, demo_extras::SCALE.1);
/// The demo's groups say they were measured here; the morning weigh-in is at 07:10 in it.
const TIMEZONE: &str = "Europe/Berlin";
/// Mornings of weigh-ins the demo starts with, like its days of activity.
pub const WEIGH_IN_DAYS: i64 = demo_extras::DAYS;

/// Generates groups for slots as time reaches them.
#[derive(Debug, Clone)]
pub struct Live {
    next_slot: i64,
    /// Groups of slots that have begun whose readings are not uploaded yet: a slot's
    /// readings fall up to 47 s into it, and each reaches Withings 20 s after it was taken.
    pending: Vec<Value>,
    /// Weigh-ins uploaded up to this unix time were returned.
    weighed_until: i64,
}

/// When a group reaches Withings: its `modified` time, which is never before its `date`.
fn uploaded_at(group: &Value) -> i64 {
    group["modified"].as_i64().unwrap_or(i64::MAX)
}

impl Live {
    pub fn starting_at(now: i64) -> Self {
        Self {
            next_slot: now.div_euclid(SLOT_SECONDS) - HISTORY_SLOTS,
            pending: Vec::new(),
            weighed_until: now - WEIGH_IN_DAYS * 86_400,
        }
    }

    /// The groups uploaded by `now` that were not returned before. None is dated after
    /// `now`: a reading from the future would make "time since the reading" negative.
    pub fn advance(&mut self, now: i64) -> Vec<Value> {
        let last = now.div_euclid(SLOT_SECONDS);
        while self.next_slot <= last {
            self.pending.extend(slot_groups(self.next_slot));
            self.next_slot += 1;
        }
        let (mut due, later): (Vec<Value>, Vec<Value>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|g| uploaded_at(g) <= now);
        self.pending = later;
        due.extend(weigh_ins(self.weighed_until, now));
        self.weighed_until = self.weighed_until.max(now);
        due
    }
}

/// The weigh-ins uploaded in `(after, until]`: one each morning, at the time the scale's
/// last sync in `demo_extras` says.
fn weigh_ins(after: i64, until: i64) -> Vec<Value> {
    if until <= after {
        return Vec::new();
    }
    let tz = TimeZone::get(TIMEZONE).unwrap_or(TimeZone::UTC);
    let last = local_date(until, &tz);
    let mut date = local_date(after, &tz);
    let mut out = Vec::new();
    while date <= last {
        let at = demo_extras::weigh_in_at(date, &tz);
        let group = weigh_in(at);
        if after < uploaded_at(&group) && uploaded_at(&group) <= until {
            out.push(group);
        }
        match date.tomorrow() {
            Ok(next) => date = next,
            Err(_) => break,
        }
    }
    out
}

/// A Body+ sitting at `at`, with the units real answers have: weight in grams (unit -3),
/// fat ratio in thousandths of a percent, masses in tens of grams (unit -2). The masses add
/// up: fat + fat-free is the weight, to the ten grams.
fn weigh_in(at: i64) -> Value {
    let day = at.div_euclid(86_400);
    let weight_g = 72_400 + 10 * noise(day, 6, 40);
    let fat_milli_percent = 21_300 + 10 * noise(day, 7, 50);
    // weight × percent / 100, in tens of grams, rounded.
    let fat_dag = (weight_g * fat_milli_percent + 500_000) / 1_000_000;
    let fat_free_dag = (weight_g + 5) / 10 - fat_dag;
    let muscle_dag = fat_free_dag * 94 / 100;
    let bone_dag = fat_free_dag - muscle_dag;
    let hydration_dag = fat_free_dag * 73 / 100;
    // Slot numbers times four, plus 0..=2, are the slots' groups: + 3 is free.
    let grpid = 5_000_000_000 + at.div_euclid(SLOT_SECONDS) * 4 + 3;
    group(
        grpid,
        at,
        SCALE,
        json!([
            {"value": weight_g, "type": 1, "unit": -3, "algo": 3, "fm": 131},
            {"value": fat_free_dag, "type": 5, "unit": -2, "algo": 3, "fm": 131},
            {"value": fat_milli_percent, "type": 6, "unit": -3, "algo": 3, "fm": 131},
            {"value": fat_dag, "type": 8, "unit": -2, "algo": 3, "fm": 131},
            {"value": muscle_dag, "type": 76, "unit": -2, "algo": 3, "fm": 131},
            {"value": hydration_dag, "type": 77, "unit": -2, "algo": 3, "fm": 131},
            {"value": bone_dag, "type": 88, "unit": -2, "algo": 3, "fm": 131}
        ]),
    )
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A value in `-spread..=spread`, fixed for (slot, salt).
fn noise(slot: i64, salt: u64, spread: i64) -> i64 {
    let r = splitmix((slot as u64).wrapping_mul(31).wrapping_add(salt));
    (r % (2 * spread as u64 + 1)) as i64 - spread
}

/// A slow daily swing, -1.0..=1.0.
fn daily(slot: i64) -> f64 {
    let minutes_per_day = 24.0 * 60.0;
    (std::f64::consts::TAU * (slot as f64) / minutes_per_day).sin()
}

fn group(grpid: i64, date: i64, device: (&str, &str), measures: Value) -> Value {
    json!({
        "grpid": grpid,
        "attrib": 0,
        "date": date,
        "created": date + 20,
        "modified": date + 20,
        "category": 1,
        "deviceid": device.0,
        "hash_deviceid": device.0,
        "measures": measures,
        "modelid": null,
        "model": device.1,
        "comment": null,
        "timezone": "Europe/Berlin"
    })
}

fn slot_groups(slot: i64) -> Vec<Value> {
    let date = slot * SLOT_SECONDS + 7;
    let base = 5_000_000_000 + slot * 4;
    let swing = daily(slot);
    let mut groups = Vec::with_capacity(3);
    let systolic = 121 + (8.0 * swing).round() as i64 + noise(slot, 1, 6);
    let diastolic = 78 + (5.0 * swing).round() as i64 + noise(slot, 2, 4);
    let pulse = 68 + (6.0 * swing).round() as i64 + noise(slot, 3, 5);
    groups.push(group(
        base,
        date,
        BPM,
        json!([
            {"value": diastolic, "type": 9, "unit": 0, "algo": 0, "fm": 3},
            {"value": systolic, "type": 10, "unit": 0, "algo": 0, "fm": 3},
            {"value": pulse, "type": 11, "unit": 0, "algo": 0, "fm": 3}
        ]),
    ));
    if slot % 2 == 0 {
        let spo2 = 97 + noise(slot, 4, 2);
        let mut g = group(
            base + 1,
            date + 20,
            WATCH,
            json!([{"value": spo2, "type": 54, "unit": 0, "algo": 285343749, "fm": 131}]),
        );
        g["is_inconclusive"] = json!(false);
        groups.push(g);
    }
    if slot % 5 == 0 {
        // Thermometers report millidegrees with unit -3, in steps of 10.
        let temp = 36_800 + 10 * ((15.0 * swing).round() as i64 + noise(slot, 5, 20));
        groups.push(group(
            base + 2,
            date + 40,
            THERMO,
            json!([{"value": temp, "type": 71, "unit": -3, "algo": 0, "fm": 0}]),
        ));
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_with_history_and_grows_with_time() {
        let now = 1_700_000_000;
        let mut live = Live::starting_at(now);
        let first = live.advance(now);
        assert!(first.len() as i64 > HISTORY_SLOTS, "{}", first.len());
        assert!(live.advance(now).is_empty());
        assert!(!live.advance(now + SLOT_SECONDS).is_empty());
    }

    #[test]
    fn no_reading_is_dated_after_the_time_it_is_served_and_none_is_lost() {
        let start = 1_700_000_000;
        for offset in 0..SLOT_SECONDS {
            let mut live = Live::starting_at(start + offset);
            let mut served = Vec::new();
            for now in start + offset..start + offset + 4 * SLOT_SECONDS {
                for g in live.advance(now) {
                    for key in ["date", "created", "modified"] {
                        let at = g[key].as_i64().unwrap();
                        assert!(at <= now, "{key} {at} is after now {now}: {g}");
                    }
                    served.push(g["grpid"].as_i64().unwrap());
                }
            }
            // Every group uploaded by the end was served, once.
            let end = start + offset + 4 * SLOT_SECONDS - 1;
            let first_slot = (start + offset).div_euclid(SLOT_SECONDS) - HISTORY_SLOTS;
            let mut expected: Vec<i64> = (first_slot..=end.div_euclid(SLOT_SECONDS))
                .flat_map(slot_groups)
                .filter(|g| uploaded_at(g) <= end)
                .chain(weigh_ins(start + offset - WEIGH_IN_DAYS * 86_400, end))
                .map(|g| g["grpid"].as_i64().unwrap())
                .collect();
            served.sort_unstable();
            expected.sort_unstable();
            assert_eq!(served, expected, "offset {offset}");
        }
    }

    #[test]
    fn one_weigh_in_each_morning_at_ten_past_seven_in_berlin_with_masses_that_add_up() {
        // 2026-06-01T10:05:30Z is 12:05 in Berlin (UTC+2): this morning's weigh-in is done.
        let now = 1_780_308_330;
        let mut live = Live::starting_at(now);
        let scale: Vec<Value> = live
            .advance(now)
            .into_iter()
            .filter(|g| g["model"] == "Body+")
            .collect();
        assert_eq!(scale.len() as i64, WEIGH_IN_DAYS);
        // 2026-06-01T05:10:00Z, then a day apart (no clock change in that week).
        let dates: Vec<i64> = scale.iter().map(|g| g["date"].as_i64().unwrap()).collect();
        let expected: Vec<i64> = (0..WEIGH_IN_DAYS)
            .rev()
            .map(|back| 1_780_290_600 - back * 86_400)
            .collect();
        assert_eq!(dates, expected);
        for g in &scale {
            let m = |t: i64| {
                g["measures"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|m| m["type"] == t)
                    .map(|m| (m["value"].as_i64().unwrap(), m["unit"].as_i64().unwrap()))
                    .unwrap()
            };
            let (weight, unit) = m(1);
            assert_eq!(unit, -3);
            assert!((72_000..=72_800).contains(&weight), "{g}");
            let (fat, fat_free) = (m(8), m(5));
            assert_eq!((fat.1, fat_free.1), (-2, -2));
            assert!((weight - 10 * (fat.0 + fat_free.0)).abs() <= 5, "{g}");
            assert_eq!(m(76).0 + m(88).0, fat_free.0, "{g}");
            assert!((20_800..=21_800).contains(&m(6).0), "{g}");
        }
        assert_eq!(weigh_in(1_780_290_600), weigh_in(1_780_290_600));
        // The same morning is not served again; the next one comes the next morning.
        assert!(
            live.advance(now + 3600)
                .iter()
                .all(|g| g["model"] != "Body+")
        );
        let tomorrow = live.advance(1_780_290_600 + 86_400 + 20);
        assert_eq!(tomorrow.iter().filter(|g| g["model"] == "Body+").count(), 1);
    }

    #[test]
    fn values_are_plausible_and_deterministic() {
        for slot in 0..2000 {
            let a = slot_groups(slot);
            assert_eq!(a, slot_groups(slot));
            for g in &a {
                for m in g["measures"].as_array().unwrap() {
                    let v = m["value"].as_i64().unwrap();
                    let ok = match m["type"].as_i64().unwrap() {
                        9 => (60..=95).contains(&v),
                        10 => (100..=140).contains(&v),
                        11 => (50..=90).contains(&v),
                        54 => (94..=100).contains(&v),
                        71 => (36_000..=37_600).contains(&v),
                        _ => false,
                    };
                    assert!(ok, "slot {slot}: {m}");
                }
            }
        }
    }
}
