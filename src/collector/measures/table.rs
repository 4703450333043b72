//! The measure table: which Withings measure types this exporter exposes, under which metric
//! name and labels, and how a raw `value × 10^unit` becomes the exposed number.
//!
//! Adding a Withings type is one row in [`MEASURES`].

/// One exported measurement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MeasureDef {
    /// Withings `type` code.
    pub code: i64,
    /// Value of the `measurement` label on `withings_measurement_timestamp_seconds`.
    pub measurement: &'static str,
    /// Metric family the value is exposed in.
    pub metric: &'static str,
    pub help: &'static str,
    /// Labels that tell rows of the same family apart (`kind="systolic"`).
    pub labels: &'static [(&'static str, &'static str)],
    /// Extra power of ten applied on top of the API's `unit`: -2 turns a percentage into a
    /// ratio, +3 kilograms into grams, -3 milliseconds into seconds. It is added to the
    /// exponent before the decimal is read, never multiplied in afterwards, so that it stays
    /// exact.
    pub exponent_shift: i32,
    /// Segmental types (173–175): one reading per body part, told apart by the measure's
    /// `position` and exported with a `position` label.
    pub by_position: bool,
    /// Plausible values, inclusive, in the exported unit: physiological bounds wide enough
    /// for any real patient. A reading outside them is a corrupted answer or a broken
    /// device, and is ignored (`withings_groups_skipped_total{reason="implausible"}`).
    pub plausible: (f64, f64),
}

const BP_HELP: &str = "Latest blood pressure reading from Withings, in mmHg.";
const AFIB_HELP: &str = "Latest atrial fibrillation classification from Withings, by the signal it was read from (ecg: type 130, ppg: type 139), as its class value: 0 negative (no atrial fibrillation found), 1 positive (atrial fibrillation found), 2 inconclusive; Withings also documents 3 no signal, 4 other, 5 noise, 6 low heart rate, 7 high heart rate, 8 inconclusive US, 9 negative normal HR, 10 negative high HR, 11 positive normal HR, 12 positive high HR, 13 no diagnosis.";
const ECG_HELP: &str = "Latest ECG interval durations from Withings, in seconds: qrs, pr, qt and qtc (QT corrected for heart rate).";

/// The heaviest human on record weighed about 635 kg: every mass is bounded by 650 kg.
const MASS_GRAMS: (f64, f64) = (0.0, 650_000.0);
const AGE_YEARS: (f64, f64) = (0.0, 150.0);
/// Scores Withings documents without a unit or a scale: only a sign and a sanity bound.
const SCORE: (f64, f64) = (0.0, 1000.0);
const ECG_INTERVAL_SECONDS: (f64, f64) = (0.01, 2.0);
/// The classification codes Withings documents for type 130 (0–13).
const AFIB_CLASS: (f64, f64) = (0.0, 13.0);

const fn row(
    code: i64,
    measurement: &'static str,
    metric: &'static str,
    help: &'static str,
    exponent_shift: i32,
    plausible: (f64, f64),
) -> MeasureDef {
    MeasureDef {
        code,
        measurement,
        metric,
        help,
        labels: &[],
        exponent_shift,
        by_position: false,
        plausible,
    }
}

const fn labelled(def: MeasureDef, labels: &'static [(&'static str, &'static str)]) -> MeasureDef {
    MeasureDef { labels, ..def }
}

const fn segmental(def: MeasureDef) -> MeasureDef {
    MeasureDef {
        by_position: true,
        ..def
    }
}

/// Every measure type `getmeas` documents. The metric names follow the Prometheus naming
/// guide: base units (grams, meters, seconds, ratio, celsius) where it has one, the domain
/// unit (mmhg, bpm, kcal) where it has none.
pub const MEASURES: &[MeasureDef] = &[
    // The five vitals first, with the names and labels dashboards and alerts rely on.
    labelled(
        row(
            10,
            "systolic_blood_pressure",
            "withings_blood_pressure_mmhg",
            BP_HELP,
            0,
            (40.0, 300.0),
        ),
        &[("kind", "systolic")],
    ),
    labelled(
        row(
            9,
            "diastolic_blood_pressure",
            "withings_blood_pressure_mmhg",
            BP_HELP,
            0,
            (10.0, 250.0),
        ),
        &[("kind", "diastolic")],
    ),
    row(
        11,
        "heart_rate",
        "withings_heart_rate_bpm",
        "Latest heart pulse from Withings, in beats per minute.",
        0,
        (20.0, 350.0),
    ),
    row(
        54,
        "spo2",
        "withings_spo2_ratio",
        "Latest blood oxygen saturation (SpO2) from Withings, as a ratio (0.98 = 98 %).",
        -2,
        (0.5, 1.0),
    ),
    row(
        71,
        "body_temperature",
        "withings_body_temperature_celsius",
        "Latest body temperature from Withings, in degrees Celsius.",
        0,
        (25.0, 45.0),
    ),
    // Body composition (scales).
    row(
        1,
        "weight",
        "withings_weight_grams",
        "Latest body weight from Withings, in grams.",
        3,
        (500.0, 650_000.0),
    ),
    row(
        4,
        "height",
        "withings_height_meters",
        "Latest height from Withings, in meters.",
        0,
        (0.2, 3.0),
    ),
    row(
        5,
        "fat_free_mass",
        "withings_fat_free_mass_grams",
        "Latest fat-free mass from Withings, in grams.",
        3,
        MASS_GRAMS,
    ),
    row(
        6,
        "fat_ratio",
        "withings_fat_ratio",
        "Latest body fat ratio from Withings (0.2 = 20 % of the body weight).",
        -2,
        (0.0, 1.0),
    ),
    row(
        8,
        "fat_mass",
        "withings_fat_mass_grams",
        "Latest fat mass from Withings, in grams.",
        3,
        MASS_GRAMS,
    ),
    row(
        76,
        "muscle_mass",
        "withings_muscle_mass_grams",
        "Latest muscle mass from Withings, in grams.",
        3,
        MASS_GRAMS,
    ),
    row(
        77,
        "hydration",
        "withings_hydration_grams",
        "Latest hydration (mass of body water) from Withings, in grams.",
        3,
        MASS_GRAMS,
    ),
    row(
        88,
        "bone_mass",
        "withings_bone_mass_grams",
        "Latest bone mass from Withings, in grams.",
        3,
        (0.0, 50_000.0),
    ),
    row(
        168,
        "extracellular_water",
        "withings_extracellular_water_grams",
        "Latest extracellular water from Withings, in grams.",
        3,
        MASS_GRAMS,
    ),
    row(
        169,
        "intracellular_water",
        "withings_intracellular_water_grams",
        "Latest intracellular water from Withings, in grams.",
        3,
        MASS_GRAMS,
    ),
    row(
        170,
        "visceral_fat",
        "withings_visceral_fat",
        "Latest visceral fat index from Withings (a plain number: Withings gives it no unit).",
        0,
        (0.0, 200.0),
    ),
    segmental(row(
        173,
        "segmental_fat_free_mass",
        "withings_segmental_fat_free_mass_grams",
        "Latest fat-free mass of each body segment (position) from Withings, in grams.",
        3,
        MASS_GRAMS,
    )),
    segmental(row(
        174,
        "segmental_fat_mass",
        "withings_segmental_fat_mass_grams",
        "Latest fat mass of each body segment (position) from Withings, in grams.",
        3,
        MASS_GRAMS,
    )),
    segmental(row(
        175,
        "segmental_muscle_mass",
        "withings_segmental_muscle_mass_grams",
        "Latest muscle mass of each body segment (position) from Withings, in grams.",
        3,
        MASS_GRAMS,
    )),
    row(
        226,
        "basal_metabolic_rate",
        "withings_basal_metabolic_rate_kcal_per_day",
        "Latest basal metabolic rate from Withings, in kilocalories per day.",
        0,
        (100.0, 20_000.0),
    ),
    row(
        227,
        "metabolic_age",
        "withings_metabolic_age_years",
        "Latest metabolic age from Withings, in years.",
        0,
        AGE_YEARS,
    ),
    // Other temperatures.
    row(
        12,
        "temperature",
        "withings_temperature_celsius",
        "Latest temperature from Withings (type 12, which Withings documents only as \"temperature\"), in degrees Celsius.",
        0,
        // Not documented as a body temperature: bounded like a thermometer anywhere people live.
        (-50.0, 70.0),
    ),
    row(
        73,
        "skin_temperature",
        "withings_skin_temperature_celsius",
        "Latest skin temperature from Withings, in degrees Celsius.",
        0,
        (0.0, 50.0),
    ),
    // Cardiovascular.
    row(
        91,
        "pulse_wave_velocity",
        "withings_pulse_wave_velocity_meters_per_second",
        "Latest pulse wave velocity from Withings, in meters per second.",
        0,
        (1.0, 50.0),
    ),
    row(
        123,
        "vo2_max",
        "withings_vo2_max_ml_per_min_per_kg",
        "Latest VO2 max (maximal oxygen uptake) from Withings, in milliliters per minute per kilogram.",
        0,
        (1.0, 150.0),
    ),
    row(
        155,
        "vascular_age",
        "withings_vascular_age_years",
        "Latest vascular age from Withings, in years.",
        0,
        AGE_YEARS,
    ),
    labelled(
        row(
            130,
            "afib_ecg",
            "withings_afib_class",
            AFIB_HELP,
            0,
            AFIB_CLASS,
        ),
        &[("signal", "ecg")],
    ),
    labelled(
        row(
            139,
            "afib_ppg",
            "withings_afib_class",
            AFIB_HELP,
            0,
            AFIB_CLASS,
        ),
        &[("signal", "ppg")],
    ),
    labelled(
        row(
            135,
            "ecg_qrs_interval",
            "withings_ecg_interval_seconds",
            ECG_HELP,
            -3,
            ECG_INTERVAL_SECONDS,
        ),
        &[("interval", "qrs")],
    ),
    labelled(
        row(
            136,
            "ecg_pr_interval",
            "withings_ecg_interval_seconds",
            ECG_HELP,
            -3,
            ECG_INTERVAL_SECONDS,
        ),
        &[("interval", "pr")],
    ),
    labelled(
        row(
            137,
            "ecg_qt_interval",
            "withings_ecg_interval_seconds",
            ECG_HELP,
            -3,
            ECG_INTERVAL_SECONDS,
        ),
        &[("interval", "qt")],
    ),
    labelled(
        row(
            138,
            "ecg_qtc_interval",
            "withings_ecg_interval_seconds",
            ECG_HELP,
            -3,
            ECG_INTERVAL_SECONDS,
        ),
        &[("interval", "qtc")],
    ),
    // Skin conductance (Body Scan).
    row(
        167,
        "feet_nerve_health_score",
        "withings_feet_nerve_health_score",
        "Latest nerve health score from Withings, measured with 2 electrodes at the feet (Withings documents no unit).",
        0,
        SCORE,
    ),
    row(
        196,
        "feet_electrodermal_activity",
        "withings_feet_electrodermal_activity",
        "Latest electrodermal activity from Withings, measured at the feet (Withings documents no unit).",
        0,
        SCORE,
    ),
    row(
        229,
        "electrochemical_skin_conductance",
        "withings_electrochemical_skin_conductance",
        "Latest electrochemical skin conductance (ESC) from Withings (Withings documents no unit).",
        0,
        SCORE,
    ),
];

/// Body positions of segmental measures, as Withings numbers them (`position` in the
/// reference). 7 is not documented; it comes on whole-body types, where it is ignored.
pub const POSITIONS: &[(i64, &str)] = &[
    (0, "right_wrist"),
    (1, "left_wrist"),
    (2, "right_arm"),
    (3, "left_arm"),
    (4, "right_foot"),
    (5, "left_foot"),
    (6, "between_legs"),
    (8, "left_body"),
    (9, "right_body"),
    (10, "left_leg"),
    (11, "right_leg"),
    (12, "torso"),
    (13, "left_hand"),
    (14, "right_hand"),
    (15, "cardiovascular_aortic_area"),
    (16, "cardiovascular_pulmonic_area"),
    (17, "cardiovascular_tricuspid_area"),
    (18, "cardiovascular_mitral_area"),
    (19, "cardiovascular_apex_area"),
    (20, "pulmonary_front_upper_right_area"),
    (21, "pulmonary_front_upper_left_area"),
    (22, "pulmonary_front_bottom_right_area"),
    (23, "pulmonary_front_bottom_left_area"),
    (24, "pulmonary_back_upper_left_area"),
    (25, "pulmonary_back_upper_right_area"),
];

/// The `position` label value of a Withings position code; `None` for a code the reference
/// does not document (such a segmental reading is skipped: an unknown code would otherwise
/// be an unbounded label).
pub fn position_name(code: i64) -> Option<&'static str> {
    POSITIONS.iter().find(|(c, _)| *c == code).map(|(_, n)| *n)
}

/// The `meastypes` asked for when the operator does not choose: every type in the table, so
/// that whatever the account measures is exposed, in the one request a sync makes anyway.
pub const DEFAULT_MEASTYPES: &[i64] = &{
    let mut codes = [0_i64; MEASURES.len()];
    let mut i = 0;
    while i < MEASURES.len() {
        codes[i] = MEASURES[i].code;
        i += 1;
    }
    // Ascending, as an operator would write the list (insertion sort: this runs at compile time).
    let mut i = 1;
    while i < codes.len() {
        let mut j = i;
        while j > 0 && codes[j - 1] > codes[j] {
            let t = codes[j];
            codes[j] = codes[j - 1];
            codes[j - 1] = t;
            j -= 1;
        }
        i += 1;
    }
    codes
};

/// `WITHINGS_MEASTYPES` (read by `config`) checked against the table: every type when unset.
pub fn checked_meastypes(asked: Option<&[i64]>) -> Result<Vec<i64>, crate::config::ConfigError> {
    let Some(asked) = asked else {
        return Ok(DEFAULT_MEASTYPES.to_vec());
    };
    if let Some(code) = asked.iter().find(|code| index_of(**code).is_none()) {
        let supported = MEASURES
            .iter()
            .map(|m| format!("{} ({})", m.code, m.measurement))
            .collect::<Vec<_>>()
            .join(", ");
        return Err(crate::config::ConfigError {
            variable: "WITHINGS_MEASTYPES",
            message: format!(
                "measure type {code} is not exported by this version; supported: {supported}"
            ),
        });
    }
    Ok(asked.to_vec())
}

/// Index of a type code in [`MEASURES`].
pub fn index_of(code: i64) -> Option<usize> {
    MEASURES.iter().position(|m| m.code == code)
}

/// Whether `value` (in the exported unit) lies in the row's plausible range.
pub fn is_plausible(def: &MeasureDef, value: f64) -> bool {
    let (min, max) = def.plausible;
    (min..=max).contains(&value)
}

/// Largest power of ten we accept from the API. Real responses use -3..=0; anything far
/// outside is a corrupted answer, and refusing it keeps the exposition free of 1e300s.
const MAX_ABS_EXPONENT: i32 = 30;

/// `value × 10^exponent`, computed so that the result is the `f64` nearest to the exact
/// decimal: 37370 × 10^-3 is 37.37, not the 37.370000000000005 that float multiplication gives.
///
/// The decimal is written out as text and parsed, since Rust's float parser rounds correctly.
/// Returns `None` for an exponent outside ±30.
pub fn scale(value: i64, exponent: i32) -> Option<f64> {
    if exponent.abs() > MAX_ABS_EXPONENT {
        return None;
    }
    let text = if exponent >= 0 {
        format!("{value}e{exponent}")
    } else {
        let digits = value.unsigned_abs().to_string();
        let frac = exponent.unsigned_abs() as usize;
        let sign = if value < 0 { "-" } else { "" };
        if digits.len() > frac {
            let (int, dec) = digits.split_at(digits.len() - frac);
            format!("{sign}{int}.{dec}")
        } else {
            format!("{sign}0.{}{digits}", "0".repeat(frac - digits.len()))
        }
    };
    text.parse::<f64>().ok().filter(|v| v.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaling_is_exact_to_the_last_digit() {
        assert_eq!(scale(37370, -3), Some(37.37));
        assert_eq!(
            scale(37370, -3).map(|v| v.to_string()).as_deref(),
            Some("37.37")
        );
        assert_eq!(scale(10600, -2), Some(106.0));
        assert_eq!(scale(109, 0), Some(109.0));
        assert_eq!(
            scale(99, -2).map(|v| v.to_string()).as_deref(),
            Some("0.99")
        );
        assert_eq!(scale(5, -3), Some(0.005));
        assert_eq!(scale(-1234, -2), Some(-12.34));
        assert_eq!(scale(7, 2), Some(700.0));
        assert_eq!(scale(0, -3), Some(0.0));
        assert_eq!(scale(i64::MIN, -3), Some(-9223372036854775.808));
    }

    #[test]
    fn absurd_exponents_are_refused() {
        assert_eq!(scale(1, 400), None);
        assert_eq!(scale(1, -400), None);
        assert_eq!(scale(1, 31), None);
        assert!(scale(i64::MAX, 30).is_some());
    }

    #[test]
    fn every_thermometer_reading_prints_as_its_decimal() {
        // Exhaustive over the plausible range: the printed number is exactly the decimal
        // Withings meant, with no binary-float tail such as 37.370000000000005.
        for value in 30_000..45_000_i64 {
            let want = format!("{}.{:03}", value / 1000, value % 1000);
            let want = want.trim_end_matches('0').trim_end_matches('.');
            assert_eq!(scale(value, -3).unwrap().to_string(), want);
        }
        for value in 0..=100_i64 {
            let got = scale(value, -2).unwrap().to_string();
            let want = if value == 100 {
                "1".to_string()
            } else {
                format!("0.{value:02}").trim_end_matches('0').to_string()
            };
            let want = if value == 0 { "0".to_string() } else { want };
            assert_eq!(got, want);
        }
    }

    #[test]
    fn kilograms_become_grams_exactly_for_every_unit_seen() {
        // 72.55 kg as Withings has sent it: the shift goes into the exponent, so the grams
        // are read from the decimal, not computed by a float multiplication.
        let weight = &MEASURES[index_of(1).unwrap()];
        for (value, unit) in [(7255, -2), (72550, -3), (725500, -4), (726, -1)] {
            let grams = scale(value, unit + weight.exponent_shift).unwrap();
            let want = if unit == -1 { 72600.0 } else { 72550.0 };
            assert_eq!(grams, want, "{value}e{unit}");
            assert_eq!(grams.to_string(), want.to_string());
        }
        // What multiplying afterwards would have given: 1.001 kg × 1000 is 1000.9999999999999.
        assert_ne!(scale(1001, -3).unwrap() * 1000.0, 1001.0);
        assert_eq!(scale(1001, -3 + weight.exponent_shift), Some(1001.0));
        // Every weight a scale can show at 10 g resolution, from 0.5 to 650 kg, and the
        // 0.1 g resolution of unit -4 over a stretch of it: exact integers or decimals.
        for value in 50..=65_000_i64 {
            assert_eq!(scale(value, -2 + 3), Some((value * 10) as f64));
        }
        for value in 720_000..740_000_i64 {
            let want = format!("{}.{}", value / 10, value % 10);
            let want = want.trim_end_matches(".0");
            assert_eq!(scale(value, -4 + 3).unwrap().to_string(), want);
        }
        // Milliseconds become seconds the same way: 96 ms is 0.096 s.
        let qrs = &MEASURES[index_of(135).unwrap()];
        assert_eq!(scale(96, qrs.exponent_shift).unwrap().to_string(), "0.096");
    }

    #[test]
    fn every_documented_type_is_in_the_table_and_asked_for_by_default() {
        // The type table of withings-api.md and the reference's `meastype` parameter.
        let documented = [
            1, 4, 5, 6, 8, 9, 10, 11, 12, 54, 71, 73, 76, 77, 88, 91, 123, 130, 135, 136, 137, 138,
            139, 155, 167, 168, 169, 170, 173, 174, 175, 196, 226, 227, 229,
        ];
        assert_eq!(MEASURES.len(), documented.len());
        for code in documented {
            assert!(index_of(code).is_some(), "type {code} missing");
        }
        assert_eq!(DEFAULT_MEASTYPES, &documented[..]);
    }

    #[test]
    fn the_contract_names_are_kept() {
        let names: Vec<(i64, &str)> = MEASURES.iter().map(|m| (m.code, m.metric)).collect();
        for pair in [
            (10, "withings_blood_pressure_mmhg"),
            (9, "withings_blood_pressure_mmhg"),
            (11, "withings_heart_rate_bpm"),
            (54, "withings_spo2_ratio"),
            (71, "withings_body_temperature_celsius"),
            (1, "withings_weight_grams"),
            (4, "withings_height_meters"),
            (6, "withings_fat_ratio"),
            (8, "withings_fat_mass_grams"),
            (5, "withings_fat_free_mass_grams"),
            (76, "withings_muscle_mass_grams"),
            (88, "withings_bone_mass_grams"),
            (77, "withings_hydration_grams"),
            (12, "withings_temperature_celsius"),
            (73, "withings_skin_temperature_celsius"),
            (91, "withings_pulse_wave_velocity_meters_per_second"),
            (123, "withings_vo2_max_ml_per_min_per_kg"),
            (155, "withings_vascular_age_years"),
        ] {
            assert!(names.contains(&pair), "{pair:?}");
        }
    }

    #[test]
    fn plausible_ranges_hold_real_readings_and_refuse_absurd_ones() {
        let def = |code| &MEASURES[index_of(code).unwrap()];
        assert!(is_plausible(def(10), 300.0));
        assert!(!is_plausible(def(10), 9.2e48));
        assert!(!is_plausible(def(10), 39.0));
        assert!(is_plausible(def(1), 500.0));
        assert!(!is_plausible(def(1), 499.9));
        assert!(is_plausible(def(54), 0.5));
        assert!(!is_plausible(def(54), 1.01));
        assert!(is_plausible(def(71), 45.0));
        assert!(!is_plausible(def(71), 45.001));
        assert!(!is_plausible(def(71), f64::NAN));
    }

    #[test]
    fn positions_are_the_documented_ones() {
        assert_eq!(position_name(2), Some("right_arm"));
        assert_eq!(position_name(3), Some("left_arm"));
        assert_eq!(position_name(10), Some("left_leg"));
        assert_eq!(position_name(11), Some("right_leg"));
        assert_eq!(position_name(12), Some("torso"));
        assert_eq!(position_name(7), None);
        assert_eq!(position_name(-1), None);
        let mut names: Vec<_> = POSITIONS.iter().map(|p| p.1).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), POSITIONS.len());
    }

    #[test]
    fn table_is_consistent() {
        for (i, m) in MEASURES.iter().enumerate() {
            assert_eq!(index_of(m.code), Some(i), "duplicate code {}", m.code);
            assert!(m.metric.starts_with("withings_"));
            let same_family: Vec<_> = MEASURES.iter().filter(|o| o.metric == m.metric).collect();
            for o in same_family {
                assert_eq!(o.help, m.help, "{} rows disagree on HELP", m.metric);
                let names = |d: &MeasureDef| d.labels.iter().map(|l| l.0).collect::<Vec<_>>();
                assert_eq!(
                    names(o),
                    names(m),
                    "{} rows disagree on label names",
                    m.metric
                );
            }
        }
        for code in DEFAULT_MEASTYPES {
            assert!(index_of(*code).is_some());
        }
        for m in MEASURES {
            let (min, max) = m.plausible;
            assert!(
                min.is_finite() && max.is_finite() && min < max,
                "{}",
                m.metric
            );
            // A family is segmental for all its rows or none, and never labels `position` itself.
            for o in MEASURES.iter().filter(|o| o.metric == m.metric) {
                assert_eq!(o.by_position, m.by_position, "{}", m.metric);
            }
            assert!(m.labels.iter().all(|l| l.0 != "position"));
            let measurements = MEASURES.iter().filter(|o| o.measurement == m.measurement);
            assert_eq!(measurements.count(), 1, "{}", m.measurement);
        }
    }
}
