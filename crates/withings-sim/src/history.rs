//! A multi-year synthetic `getmeas` history for one simulated user, for the backfill's
//! tests and benchmarks: every kind of reading the exporter has a family for (blood pressure
//! and pulse, weight and body composition, segments, SpO2, temperature, ECG), and the groups
//! the live exporter leaves out or replaces — corrections (a stale copy and its newer
//! version under one grpid, both served), inconclusive readings, objectives (category 2),
//! implausible values and two readings of one series in the same second.
//!
//! Deterministic: the same spec gives the same groups, so a test can check exact values.

use serde_json::{Value, json};

/// What to generate.
#[derive(Debug, Clone, Copy)]
pub struct HistorySpec {
    /// Groups to generate, before the stale copies of corrected groups are added.
    pub groups: usize,
    /// First and last date (unix seconds): the groups are spread evenly between them.
    pub from: i64,
    pub to: i64,
    /// Added to every grpid, so that two users never share one.
    pub grpid_base: i64,
    pub seed: u64,
}

/// Every `CORRECTED_EVERY`-th group was corrected: it is served twice, the stale version
/// (older `modified`, another value) and the correction.
pub const CORRECTED_EVERY: usize = 37;
pub const INCONCLUSIVE_EVERY: usize = 53;
pub const OBJECTIVE_EVERY: usize = 71;
pub const IMPLAUSIBLE_EVERY: usize = 97;
/// Every `SAME_SECOND_EVERY`-th group has a twin at the same second on the same device,
/// with the next grpid and another value: the greater grpid is the reading.
pub const SAME_SECOND_EVERY: usize = 211;

/// The kinds of sitting, in the order they take turns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sitting {
    BloodPressure,
    Weight,
    BodyScan,
    Spo2,
    Temperature,
    Ecg,
}

const SITTINGS: [Sitting; 6] = [
    Sitting::BloodPressure,
    Sitting::Weight,
    Sitting::BloodPressure,
    Sitting::Spo2,
    Sitting::Weight,
    Sitting::BloodPressure,
];

/// A small linear congruential generator: enough for varied readings, no dependency.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: i64) -> i64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) % below.max(1) as u64) as i64
    }
}

/// Which sitting group number `n` is: mostly the rotation above, with a Body Scan, a
/// thermometer and an ECG now and then.
pub fn sitting_of(n: usize) -> Sitting {
    match n % 50 {
        7 => Sitting::BodyScan,
        19 => Sitting::Temperature,
        31 => Sitting::Ecg,
        _ => SITTINGS[n % SITTINGS.len()],
    }
}

fn device(sitting: Sitting) -> (&'static str, &'static str) {
    match sitting {
        Sitting::BloodPressure => ("hash-bpm-connect", "BPM Connect"),
        Sitting::Weight => ("hash-body-plus", "Body+"),
        Sitting::BodyScan => ("hash-body-scan", "Body Scan"),
        Sitting::Spo2 | Sitting::Ecg => ("hash-scanwatch", "ScanWatch 2"),
        Sitting::Temperature => ("hash-thermo", "Thermo"),
    }
}

fn measure(kind: i64, value: i64, unit: i64) -> Value {
    json!({"value": value, "type": kind, "unit": unit, "algo": 0, "fm": 3})
}

fn measures(sitting: Sitting, rng: &mut Lcg, implausible: bool) -> Vec<Value> {
    match sitting {
        Sitting::BloodPressure => vec![
            measure(10, 110 + rng.next(40), 0),
            measure(9, 65 + rng.next(25), 0),
            // A heart rate no heart has: the live exporter ignores it, and so must the backfill.
            measure(11, if implausible { 999 } else { 55 + rng.next(40) }, 0),
        ],
        Sitting::Weight => {
            let weight = 70_000 + rng.next(8_000);
            vec![
                measure(1, weight, -3),
                measure(6, 18_000 + rng.next(6_000), -3),
                measure(8, weight / 5, -3),
                measure(5, weight - weight / 5, -3),
                measure(76, weight * 3 / 4, -3),
                measure(77, weight * 11 / 20, -3),
                measure(88, 3_000 + rng.next(400), -3),
            ]
        }
        Sitting::BodyScan => {
            let mut all = vec![measure(1, 70_000 + rng.next(8_000), -3)];
            for position in [2, 3, 10, 11, 12] {
                let mut m = measure(174, 100 + rng.next(2_000), -2);
                m["position"] = json!(position);
                all.push(m);
            }
            all
        }
        Sitting::Spo2 => vec![measure(54, 93 + rng.next(7), 0)],
        Sitting::Temperature => vec![measure(71, 36_100 + rng.next(1_200), -3)],
        Sitting::Ecg => vec![
            measure(130, rng.next(2), 0),
            measure(135, 80 + rng.next(30), 0),
            measure(136, 120 + rng.next(60), 0),
            measure(137, 350 + rng.next(80), 0),
            measure(138, 380 + rng.next(80), 0),
        ],
    }
}

/// The groups the simulator serves for this history (`Simulator::set_user_groups`), stale
/// copies of corrected groups included, in date order.
pub fn generate(spec: HistorySpec) -> Vec<Value> {
    let mut rng = Lcg(spec.seed ^ 0x9e37_79b9_7f4a_7c15);
    let span = (spec.to - spec.from).max(1);
    let count = spec.groups.max(1) as i64;
    let mut out = Vec::with_capacity(spec.groups + spec.groups / CORRECTED_EVERY + 2);
    let mut n = 0_usize;
    let mut index = 0_i64;
    while n < spec.groups {
        // Evenly spread, with up to an hour of jitter, never past `to`.
        let date = (spec.from + span * index / count + rng.next(3_600)).min(spec.to);
        index += 1;
        let sitting = sitting_of(n);
        let (hash, model) = device(sitting);
        let grpid = spec.grpid_base + n as i64;
        let mut group = json!({
            "grpid": grpid,
            "attrib": 0,
            "date": date,
            "created": date + 60,
            "modified": date + 60,
            "category": 1,
            "deviceid": null,
            "hash_deviceid": hash,
            "model": model,
            "modelid": null,
            "is_inconclusive": false,
            "measures": measures(sitting, &mut rng, n % IMPLAUSIBLE_EVERY == IMPLAUSIBLE_EVERY - 1),
        });
        if n % INCONCLUSIVE_EVERY == INCONCLUSIVE_EVERY - 1 {
            group["is_inconclusive"] = json!(true);
        }
        if n % OBJECTIVE_EVERY == OBJECTIVE_EVERY - 1 {
            group["category"] = json!(2);
        }
        if n % CORRECTED_EVERY == CORRECTED_EVERY - 1 {
            // The version first uploaded, then corrected a day later with other values.
            let mut stale = group.clone();
            stale["measures"] = json!(measures(sitting, &mut rng, false));
            out.push(stale);
            group["modified"] = json!(date + 86_400);
        }
        out.push(group);
        n += 1;
        if n % SAME_SECOND_EVERY == SAME_SECOND_EVERY - 1 && n < spec.groups {
            let twin = json!({
                "grpid": spec.grpid_base + n as i64,
                "attrib": 0,
                "date": date,
                "created": date + 61,
                "modified": date + 61,
                "category": 1,
                "deviceid": null,
                "hash_deviceid": hash,
                "model": model,
                "modelid": null,
                "is_inconclusive": false,
                "measures": measures(sitting, &mut rng, false),
            });
            out.push(twin);
            n += 1;
        }
    }
    out
}
