//! Every measure type end to end, against a hand calculation: the captured Withings answers
//! in `tests/fixtures/`, served by the simulator, scraped from a real server.
//!
//! The expected numbers were worked out with Python's `decimal` (value × 10^(unit + shift),
//! exactly), not with the exporter's code: kilograms are grams (shift +3), percentages are
//! ratios (-2); the latest group (greatest `date`) wins per type, and per body position for
//! the segmental types 173–175.

use crate::common;

use common::accounts::unix_now;
use common::{AppOptions, fixture, sample_with, spawn_app_with};
use std::collections::BTreeMap;
use withings_exporter::collector::measures::families::TIMESTAMP_METRIC;
use withings_exporter::collector::measures::table::MEASURES;
use withings_sim::SimulatorOptions;

/// Every `(series, value)` of the measure families and their timestamps in an exposition.
fn measure_samples(text: &str) -> BTreeMap<String, f64> {
    let names: Vec<&str> = MEASURES
        .iter()
        .map(|m| m.metric)
        .chain([TIMESTAMP_METRIC])
        .collect();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(series, _)| names.contains(&series.split('{').next().unwrap_or_default()))
        .map(|(series, value)| (series.to_owned(), value.parse().expect("a number")))
        .collect()
}

async fn scrape_fixture(file: &str, env: Vec<(&'static str, String)>) -> String {
    let app = spawn_app_with(AppOptions {
        env,
        simulator: SimulatorOptions {
            page_size: 100_000,
            ..SimulatorOptions::default()
        },
    })
    .await;
    app.simulator.load_fixture(&fixture(file)).unwrap();
    let text = app.scrape().await;
    assert_eq!(
        common::sample(&text, "withings_up"),
        Some(1.0),
        "{file}\n{text}"
    );
    text
}

/// The exposition holds exactly these measure samples: no more, no fewer, no other value.
async fn assert_fixture(file: &str, expected: &[(&str, f64)]) {
    let text = scrape_fixture(file, Vec::new()).await;
    let got = measure_samples(&text);
    let want: BTreeMap<String, f64> = expected.iter().map(|(s, v)| (s.to_string(), *v)).collect();
    assert_eq!(want.len(), expected.len(), "{file}: a series listed twice");
    for (series, value) in &want {
        assert_eq!(got.get(series), Some(value), "{file}: {series}\n{text}");
    }
    for series in got.keys() {
        assert!(want.contains_key(series), "{file}: unexpected {series}");
    }
}

/// A Body Scan history: body composition, segments, ECG (AFib class 8, "inconclusive US"),
/// vascular age, pulse wave velocity, feet electrodermal activity. Types 197 and 198 are not
/// documented and not exported.
#[tokio::test]
async fn body_scan_history_gives_every_type_and_every_segment() {
    assert_fixture(
        "measurement_list_2.json",
        &[
        (r#"withings_afib_class{signal="ecg",device_id="51e8d0e7d16da9ff673accf10958ca94fea55d6e",device_model="Body Scan"}"#, 8.0),
        (r#"withings_basal_metabolic_rate_kcal_per_day{device_id="51e8d0e7d16da9ff673accf10958ca94fea55d6e",device_model="Body Scan"}"#, 2250.0),
        (r#"withings_bone_mass_grams{device_id="51e8d0e7d16da9ff673accf10958ca94fea55d6e",device_model="Body Scan"}"#, 3790.0),
        (r#"withings_extracellular_water_grams{device_id="51e8d0e7d16da9ff673accf10958ca94fea55d6e",device_model="Body Scan"}"#, 21250.0),
        (r#"withings_fat_free_mass_grams{device_id="51e8d0e7d16da9ff673accf10958ca94fea55d6e",device_model="Body Scan"}"#, 76850.0),
        (r#"withings_fat_mass_grams{device_id="51e8d0e7d16da9ff673accf10958ca94fea55d6e",device_model="Body Scan"}"#, 17810.0),
        (r#"withings_fat_ratio{device_id="51e8d0e7d16da9ff673accf10958ca94fea55d6e",device_model="Body Scan"}"#, 0.18813),
        (r#"withings_feet_electrodermal_activity{device_id="51e8d0e7d16da9ff673accf10958ca94fea55d6e",device_model="Body Scan"}"#, 62.333),
        (r#"withings_heart_rate_bpm{device_id="51e8d0e7d16da9ff673accf10958ca94fea55d6e",device_model="Body Scan"}"#, 111.0),
        (r#"withings_hydration_grams{device_id="51e8d0e7d16da9ff673accf10958ca94fea55d6e",device_model="Body Scan"}"#, 52140.0),
        (r#"withings_intracellular_water_grams{device_id="51e8d0e7d16da9ff673accf10958ca94fea55d6e",device_model="Body Scan"}"#, 30890.0),
        (r#"withings_measurement_timestamp_seconds{measurement="afib_ecg"}"#, 1706145126.0),
        (r#"withings_measurement_timestamp_seconds{measurement="basal_metabolic_rate"}"#, 1706241995.0),
        (r#"withings_measurement_timestamp_seconds{measurement="bone_mass"}"#, 1706241995.0),
        (r#"withings_measurement_timestamp_seconds{measurement="extracellular_water"}"#, 1706241995.0),
        (r#"withings_measurement_timestamp_seconds{measurement="fat_free_mass"}"#, 1706241995.0),
        (r#"withings_measurement_timestamp_seconds{measurement="fat_mass"}"#, 1706241995.0),
        (r#"withings_measurement_timestamp_seconds{measurement="fat_ratio"}"#, 1706241995.0),
        (r#"withings_measurement_timestamp_seconds{measurement="feet_electrodermal_activity"}"#, 1706145126.0),
        (r#"withings_measurement_timestamp_seconds{measurement="heart_rate"}"#, 1706145126.0),
        (r#"withings_measurement_timestamp_seconds{measurement="hydration"}"#, 1706241995.0),
        (r#"withings_measurement_timestamp_seconds{measurement="intracellular_water"}"#, 1706241995.0),
        (r#"withings_measurement_timestamp_seconds{measurement="muscle_mass"}"#, 1706241995.0),
        (r#"withings_measurement_timestamp_seconds{measurement="pulse_wave_velocity"}"#, 1706145126.0),
        (r#"withings_measurement_timestamp_seconds{measurement="segmental_fat_free_mass",position="left_arm"}"#, 1706241995.0),
        (r#"withings_measurement_timestamp_seconds{measurement="segmental_fat_free_mass",position="left_leg"}"#, 1706241995.0),
        (r#"withings_measurement_timestamp_seconds{measurement="segmental_fat_free_mass",position="right_arm"}"#, 1706241995.0),
        (r#"withings_measurement_timestamp_seconds{measurement="segmental_fat_free_mass",position="right_leg"}"#, 1706241995.0),
        (r#"withings_measurement_timestamp_seconds{measurement="segmental_fat_free_mass",position="torso"}"#, 1706241995.0),
        (r#"withings_measurement_timestamp_seconds{measurement="segmental_fat_mass",position="left_arm"}"#, 1706241995.0),
        (r#"withings_measurement_timestamp_seconds{measurement="segmental_fat_mass",position="left_leg"}"#, 1706241995.0),
        (r#"withings_measurement_timestamp_seconds{measurement="segmental_fat_mass",position="right_arm"}"#, 1706241995.0),
        (r#"withings_measurement_timestamp_seconds{measurement="segmental_fat_mass",position="right_leg"}"#, 1706241995.0),
        (r#"withings_measurement_timestamp_seconds{measurement="segmental_fat_mass",position="torso"}"#, 1706241995.0),
        (r#"withings_measurement_timestamp_seconds{measurement="segmental_muscle_mass",position="left_arm"}"#, 1706241995.0),
        (r#"withings_measurement_timestamp_seconds{measurement="segmental_muscle_mass",position="left_leg"}"#, 1706241995.0),
        (r#"withings_measurement_timestamp_seconds{measurement="segmental_muscle_mass",position="right_arm"}"#, 1706241995.0),
        (r#"withings_measurement_timestamp_seconds{measurement="segmental_muscle_mass",position="right_leg"}"#, 1706241995.0),
        (r#"withings_measurement_timestamp_seconds{measurement="segmental_muscle_mass",position="torso"}"#, 1706241995.0),
        (r#"withings_measurement_timestamp_seconds{measurement="vascular_age"}"#, 1706145126.0),
        (r#"withings_measurement_timestamp_seconds{measurement="visceral_fat"}"#, 1706241995.0),
        (r#"withings_measurement_timestamp_seconds{measurement="weight"}"#, 1706241995.0),
        (r#"withings_muscle_mass_grams{device_id="51e8d0e7d16da9ff673accf10958ca94fea55d6e",device_model="Body Scan"}"#, 73060.0),
        (r#"withings_pulse_wave_velocity_meters_per_second{device_id="51e8d0e7d16da9ff673accf10958ca94fea55d6e",device_model="Body Scan"}"#, 7.744),
        (r#"withings_segmental_fat_free_mass_grams{position="left_arm",device_id="51e8d0e7d16da9ff673accf10958ca94fea55d6e",device_model="Body Scan"}"#, 4860.0),
        (r#"withings_segmental_fat_free_mass_grams{position="left_leg",device_id="51e8d0e7d16da9ff673accf10958ca94fea55d6e",device_model="Body Scan"}"#, 13250.0),
        (r#"withings_segmental_fat_free_mass_grams{position="right_arm",device_id="51e8d0e7d16da9ff673accf10958ca94fea55d6e",device_model="Body Scan"}"#, 4870.0),
        (r#"withings_segmental_fat_free_mass_grams{position="right_leg",device_id="51e8d0e7d16da9ff673accf10958ca94fea55d6e",device_model="Body Scan"}"#, 14090.0),
        (r#"withings_segmental_fat_free_mass_grams{position="torso",device_id="51e8d0e7d16da9ff673accf10958ca94fea55d6e",device_model="Body Scan"}"#, 39760.0),
        (r#"withings_segmental_fat_mass_grams{position="left_arm",device_id="51e8d0e7d16da9ff673accf10958ca94fea55d6e",device_model="Body Scan"}"#, 1050.0),
        (r#"withings_segmental_fat_mass_grams{position="left_leg",device_id="51e8d0e7d16da9ff673accf10958ca94fea55d6e",device_model="Body Scan"}"#, 2640.0),
        (r#"withings_segmental_fat_mass_grams{position="right_arm",device_id="51e8d0e7d16da9ff673accf10958ca94fea55d6e",device_model="Body Scan"}"#, 1070.0),
        (r#"withings_segmental_fat_mass_grams{position="right_leg",device_id="51e8d0e7d16da9ff673accf10958ca94fea55d6e",device_model="Body Scan"}"#, 2110.0),
        (r#"withings_segmental_fat_mass_grams{position="torso",device_id="51e8d0e7d16da9ff673accf10958ca94fea55d6e",device_model="Body Scan"}"#, 10920.0),
        (r#"withings_segmental_muscle_mass_grams{position="left_arm",device_id="51e8d0e7d16da9ff673accf10958ca94fea55d6e",device_model="Body Scan"}"#, 4580.0),
        (r#"withings_segmental_muscle_mass_grams{position="left_leg",device_id="51e8d0e7d16da9ff673accf10958ca94fea55d6e",device_model="Body Scan"}"#, 12530.0),
        (r#"withings_segmental_muscle_mass_grams{position="right_arm",device_id="51e8d0e7d16da9ff673accf10958ca94fea55d6e",device_model="Body Scan"}"#, 4600.0),
        (r#"withings_segmental_muscle_mass_grams{position="right_leg",device_id="51e8d0e7d16da9ff673accf10958ca94fea55d6e",device_model="Body Scan"}"#, 13320.0),
        (r#"withings_segmental_muscle_mass_grams{position="torso",device_id="51e8d0e7d16da9ff673accf10958ca94fea55d6e",device_model="Body Scan"}"#, 38000.0),
        (r#"withings_vascular_age_years{device_id="51e8d0e7d16da9ff673accf10958ca94fea55d6e",device_model="Body Scan"}"#, 46.5),
        (r#"withings_visceral_fat{device_id="51e8d0e7d16da9ff673accf10958ca94fea55d6e",device_model="Body Scan"}"#, 3.1),
        (r#"withings_weight_grams{device_id="51e8d0e7d16da9ff673accf10958ca94fea55d6e",device_model="Body Scan"}"#, 94667.0),
        ],
    )
    .await;
}

#[tokio::test]
async fn segmental_measures_are_exported_per_position() {
    assert_fixture(
        "measurement_positions.json",
        &[
        (r#"withings_basal_metabolic_rate_kcal_per_day{device_id="51e8d0e7d16da9ff673accf10958ca94fea55d6e",device_model="Body Scan"}"#, 2308.0),
        (r#"withings_bone_mass_grams{device_id="51e8d0e7d16da9ff673accf10958ca94fea55d6e",device_model="Body Scan"}"#, 3870.0),
        (r#"withings_extracellular_water_grams{device_id="51e8d0e7d16da9ff673accf10958ca94fea55d6e",device_model="Body Scan"}"#, 21750.0),
        (r#"withings_fat_free_mass_grams{device_id="51e8d0e7d16da9ff673accf10958ca94fea55d6e",device_model="Body Scan"}"#, 78630.0),
        (r#"withings_fat_mass_grams{device_id="51e8d0e7d16da9ff673accf10958ca94fea55d6e",device_model="Body Scan"}"#, 17800.0),
        (r#"withings_fat_ratio{device_id="51e8d0e7d16da9ff673accf10958ca94fea55d6e",device_model="Body Scan"}"#, 0.18457),
        (r#"withings_hydration_grams{device_id="51e8d0e7d16da9ff673accf10958ca94fea55d6e",device_model="Body Scan"}"#, 52960.0),
        (r#"withings_intracellular_water_grams{device_id="51e8d0e7d16da9ff673accf10958ca94fea55d6e",device_model="Body Scan"}"#, 31200.0),
        (r#"withings_measurement_timestamp_seconds{measurement="basal_metabolic_rate"}"#, 1704938744.0),
        (r#"withings_measurement_timestamp_seconds{measurement="bone_mass"}"#, 1704938744.0),
        (r#"withings_measurement_timestamp_seconds{measurement="extracellular_water"}"#, 1704938744.0),
        (r#"withings_measurement_timestamp_seconds{measurement="fat_free_mass"}"#, 1704938744.0),
        (r#"withings_measurement_timestamp_seconds{measurement="fat_mass"}"#, 1704938744.0),
        (r#"withings_measurement_timestamp_seconds{measurement="fat_ratio"}"#, 1704938744.0),
        (r#"withings_measurement_timestamp_seconds{measurement="hydration"}"#, 1704938744.0),
        (r#"withings_measurement_timestamp_seconds{measurement="intracellular_water"}"#, 1704938744.0),
        (r#"withings_measurement_timestamp_seconds{measurement="muscle_mass"}"#, 1704938744.0),
        (r#"withings_measurement_timestamp_seconds{measurement="segmental_fat_free_mass",position="left_arm"}"#, 1704938744.0),
        (r#"withings_measurement_timestamp_seconds{measurement="segmental_fat_free_mass",position="left_leg"}"#, 1704938744.0),
        (r#"withings_measurement_timestamp_seconds{measurement="segmental_fat_free_mass",position="right_arm"}"#, 1704938744.0),
        (r#"withings_measurement_timestamp_seconds{measurement="segmental_fat_free_mass",position="right_leg"}"#, 1704938744.0),
        (r#"withings_measurement_timestamp_seconds{measurement="segmental_fat_free_mass",position="torso"}"#, 1704938744.0),
        (r#"withings_measurement_timestamp_seconds{measurement="segmental_fat_mass",position="left_arm"}"#, 1704938744.0),
        (r#"withings_measurement_timestamp_seconds{measurement="segmental_fat_mass",position="left_leg"}"#, 1704938744.0),
        (r#"withings_measurement_timestamp_seconds{measurement="segmental_fat_mass",position="right_arm"}"#, 1704938744.0),
        (r#"withings_measurement_timestamp_seconds{measurement="segmental_fat_mass",position="right_leg"}"#, 1704938744.0),
        (r#"withings_measurement_timestamp_seconds{measurement="segmental_fat_mass",position="torso"}"#, 1704938744.0),
        (r#"withings_measurement_timestamp_seconds{measurement="segmental_muscle_mass",position="left_arm"}"#, 1704938744.0),
        (r#"withings_measurement_timestamp_seconds{measurement="segmental_muscle_mass",position="left_leg"}"#, 1704938744.0),
        (r#"withings_measurement_timestamp_seconds{measurement="segmental_muscle_mass",position="right_arm"}"#, 1704938744.0),
        (r#"withings_measurement_timestamp_seconds{measurement="segmental_muscle_mass",position="right_leg"}"#, 1704938744.0),
        (r#"withings_measurement_timestamp_seconds{measurement="segmental_muscle_mass",position="torso"}"#, 1704938744.0),
        (r#"withings_measurement_timestamp_seconds{measurement="visceral_fat"}"#, 1704938744.0),
        (r#"withings_measurement_timestamp_seconds{measurement="weight"}"#, 1704938744.0),
        (r#"withings_muscle_mass_grams{device_id="51e8d0e7d16da9ff673accf10958ca94fea55d6e",device_model="Body Scan"}"#, 74750.0),
        (r#"withings_segmental_fat_free_mass_grams{position="left_arm",device_id="51e8d0e7d16da9ff673accf10958ca94fea55d6e",device_model="Body Scan"}"#, 5050.0),
        (r#"withings_segmental_fat_free_mass_grams{position="left_leg",device_id="51e8d0e7d16da9ff673accf10958ca94fea55d6e",device_model="Body Scan"}"#, 13840.0),
        (r#"withings_segmental_fat_free_mass_grams{position="right_arm",device_id="51e8d0e7d16da9ff673accf10958ca94fea55d6e",device_model="Body Scan"}"#, 5180.0),
        (r#"withings_segmental_fat_free_mass_grams{position="right_leg",device_id="51e8d0e7d16da9ff673accf10958ca94fea55d6e",device_model="Body Scan"}"#, 14050.0),
        (r#"withings_segmental_fat_free_mass_grams{position="torso",device_id="51e8d0e7d16da9ff673accf10958ca94fea55d6e",device_model="Body Scan"}"#, 40490.0),
        (r#"withings_segmental_fat_mass_grams{position="left_arm",device_id="51e8d0e7d16da9ff673accf10958ca94fea55d6e",device_model="Body Scan"}"#, 1030.0),
        (r#"withings_segmental_fat_mass_grams{position="left_leg",device_id="51e8d0e7d16da9ff673accf10958ca94fea55d6e",device_model="Body Scan"}"#, 2450.0),
        (r#"withings_segmental_fat_mass_grams{position="right_arm",device_id="51e8d0e7d16da9ff673accf10958ca94fea55d6e",device_model="Body Scan"}"#, 990.0),
        (r#"withings_segmental_fat_mass_grams{position="right_leg",device_id="51e8d0e7d16da9ff673accf10958ca94fea55d6e",device_model="Body Scan"}"#, 2330.0),
        (r#"withings_segmental_fat_mass_grams{position="torso",device_id="51e8d0e7d16da9ff673accf10958ca94fea55d6e",device_model="Body Scan"}"#, 10990.0),
        (r#"withings_segmental_muscle_mass_grams{position="left_arm",device_id="51e8d0e7d16da9ff673accf10958ca94fea55d6e",device_model="Body Scan"}"#, 4770.0),
        (r#"withings_segmental_muscle_mass_grams{position="left_leg",device_id="51e8d0e7d16da9ff673accf10958ca94fea55d6e",device_model="Body Scan"}"#, 13090.0),
        (r#"withings_segmental_muscle_mass_grams{position="right_arm",device_id="51e8d0e7d16da9ff673accf10958ca94fea55d6e",device_model="Body Scan"}"#, 4890.0),
        (r#"withings_segmental_muscle_mass_grams{position="right_leg",device_id="51e8d0e7d16da9ff673accf10958ca94fea55d6e",device_model="Body Scan"}"#, 13290.0),
        (r#"withings_segmental_muscle_mass_grams{position="torso",device_id="51e8d0e7d16da9ff673accf10958ca94fea55d6e",device_model="Body Scan"}"#, 38700.0),
        (r#"withings_visceral_fat{device_id="51e8d0e7d16da9ff673accf10958ca94fea55d6e",device_model="Body Scan"}"#, 3.1),
        (r#"withings_weight_grams{device_id="51e8d0e7d16da9ff673accf10958ca94fea55d6e",device_model="Body Scan"}"#, 96440.0),
        ],
    )
    .await;
}

/// 2,062 unsorted groups over years: weight with units -4, -3 and -2, a manual height with
/// no device, blood pressure with unit 0 and -2.
#[tokio::test]
async fn a_real_multi_year_history_gives_the_latest_of_each_type() {
    assert_fixture(
        "measurement_list.json",
        &[
        (r#"withings_blood_pressure_mmhg{kind="diastolic",device_id="91a7e556c2022ef54dca6e07a853c3193734d148",device_model="BPM Connect"}"#, 106.0),
        (r#"withings_blood_pressure_mmhg{kind="systolic",device_id="91a7e556c2022ef54dca6e07a853c3193734d148",device_model="BPM Connect"}"#, 158.0),
        (r#"withings_bone_mass_grams{device_id="c57e2809f962b56b9c98c428e0240e16dba37d2f",device_model="Body Cardio"}"#, 3800.0),
        (r#"withings_fat_free_mass_grams{device_id="c57e2809f962b56b9c98c428e0240e16dba37d2f",device_model="Body Cardio"}"#, 96000.0),
        (r#"withings_fat_mass_grams{device_id="c57e2809f962b56b9c98c428e0240e16dba37d2f",device_model="Body Cardio"}"#, 12400.0),
        (r#"withings_fat_ratio{device_id="c57e2809f962b56b9c98c428e0240e16dba37d2f",device_model="Body Cardio"}"#, 0.11439),
        (r#"withings_heart_rate_bpm{device_id="91a7e556c2022ef54dca6e07a853c3193734d148",device_model="BPM Connect"}"#, 62.0),
        (r#"withings_height_meters{device_id="",device_model=""}"#, 1.6),
        (r#"withings_hydration_grams{device_id="c57e2809f962b56b9c98c428e0240e16dba37d2f",device_model="Body Cardio"}"#, 70390.0),
        (r#"withings_measurement_timestamp_seconds{measurement="bone_mass"}"#, 1680413419.0),
        (r#"withings_measurement_timestamp_seconds{measurement="diastolic_blood_pressure"}"#, 1680433212.0),
        (r#"withings_measurement_timestamp_seconds{measurement="fat_free_mass"}"#, 1680413419.0),
        (r#"withings_measurement_timestamp_seconds{measurement="fat_mass"}"#, 1680413419.0),
        (r#"withings_measurement_timestamp_seconds{measurement="fat_ratio"}"#, 1680413419.0),
        (r#"withings_measurement_timestamp_seconds{measurement="heart_rate"}"#, 1680433212.0),
        (r#"withings_measurement_timestamp_seconds{measurement="height"}"#, 1620237216.0),
        (r#"withings_measurement_timestamp_seconds{measurement="hydration"}"#, 1680413419.0),
        (r#"withings_measurement_timestamp_seconds{measurement="muscle_mass"}"#, 1680413419.0),
        (r#"withings_measurement_timestamp_seconds{measurement="pulse_wave_velocity"}"#, 1680413419.0),
        (r#"withings_measurement_timestamp_seconds{measurement="systolic_blood_pressure"}"#, 1680433212.0),
        (r#"withings_measurement_timestamp_seconds{measurement="vascular_age"}"#, 1680413419.0),
        (r#"withings_measurement_timestamp_seconds{measurement="weight"}"#, 1680413419.0),
        (r#"withings_muscle_mass_grams{device_id="c57e2809f962b56b9c98c428e0240e16dba37d2f",device_model="Body Cardio"}"#, 92200.0),
        (r#"withings_pulse_wave_velocity_meters_per_second{device_id="c57e2809f962b56b9c98c428e0240e16dba37d2f",device_model="Body Cardio"}"#, 7.4),
        (r#"withings_vascular_age_years{device_id="c57e2809f962b56b9c98c428e0240e16dba37d2f",device_model="Body Cardio"}"#, 28.9),
        (r#"withings_weight_grams{device_id="c57e2809f962b56b9c98c428e0240e16dba37d2f",device_model="Body Cardio"}"#, 108400.0),
        ],
    )
    .await;
}

#[tokio::test]
async fn the_other_captured_answers_give_the_hand_calculated_values() {
    // The same grpid twice (attrib 0 and 8): one weight, 118.003 kg.
    assert_fixture(
        "measurement.json",
        &[
        (r#"withings_measurement_timestamp_seconds{measurement="weight"}"#, 1693651151.0),
        (r#"withings_weight_grams{device_id="f998be4b9ccc9e136fd8cd8e8e344c31ec3b271d",device_model="Body+"}"#, 118003.0),
        ],
    )
    .await;
    assert_fixture(
        "getmeas_scanwatch.json",
        &[
            (
                r#"withings_heart_rate_bpm{device_id="DEVICEID",device_model="ScanWatch 2"}"#,
                83.0,
            ),
            (
                r#"withings_measurement_timestamp_seconds{measurement="heart_rate"}"#,
                1775320006.0,
            ),
            (
                r#"withings_measurement_timestamp_seconds{measurement="spo2"}"#,
                1775256777.0,
            ),
            (
                r#"withings_spo2_ratio{device_id="DEVICEID",device_model="ScanWatch 2"}"#,
                0.99,
            ),
        ],
    )
    .await;
    assert_fixture(
        "seed_getmeas.json",
        &[
        (r#"withings_blood_pressure_mmhg{kind="diastolic",device_id="c405eb8e0e053f6601e151c7e43c04e29aad6956",device_model="BPM Core"}"#, 89.0),
        (r#"withings_blood_pressure_mmhg{kind="systolic",device_id="c405eb8e0e053f6601e151c7e43c04e29aad6956",device_model="BPM Core"}"#, 109.0),
        (r#"withings_body_temperature_celsius{device_id="1d453daf947378fac40677e7a085eea73750b061",device_model=""}"#, 37.37),
        (r#"withings_heart_rate_bpm{device_id="c405eb8e0e053f6601e151c7e43c04e29aad6956",device_model="BPM Core"}"#, 88.0),
        (r#"withings_measurement_timestamp_seconds{measurement="body_temperature"}"#, 1690374434.0),
        (r#"withings_measurement_timestamp_seconds{measurement="diastolic_blood_pressure"}"#, 1690491576.0),
        (r#"withings_measurement_timestamp_seconds{measurement="heart_rate"}"#, 1690491576.0),
        (r#"withings_measurement_timestamp_seconds{measurement="spo2"}"#, 1690375238.0),
        (r#"withings_measurement_timestamp_seconds{measurement="systolic_blood_pressure"}"#, 1690491576.0),
        (r#"withings_spo2_ratio{device_id="dbf7f61809d5fb350a16a50f6af6e826f0746082",device_model=""}"#, 0.99),
        ],
    )
    .await;
}

#[tokio::test]
async fn one_request_asks_for_every_type_and_meastypes_still_narrows() {
    let app = spawn_app_with(AppOptions::default()).await;
    app.simulator
        .load_fixture(&fixture("measurement_positions.json"))
        .unwrap();
    app.scrape().await;
    let requests = app.simulator.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(
        requests[0].params["meastypes"],
        "1,4,5,6,8,9,10,11,12,54,71,73,76,77,88,91,123,130,135,136,137,138,139,155,167,168,169,170,173,174,175,196,226,227,229"
    );

    let text = scrape_fixture(
        "measurement_positions.json",
        vec![("WITHINGS_MEASTYPES", "1,174".into())],
    )
    .await;
    let got = measure_samples(&text);
    let families: std::collections::BTreeSet<&str> = got
        .keys()
        .map(|s| s.split('{').next().unwrap_or_default())
        .collect();
    assert_eq!(
        families.into_iter().collect::<Vec<_>>(),
        [
            TIMESTAMP_METRIC,
            "withings_segmental_fat_mass_grams",
            "withings_weight_grams"
        ]
    );
}

/// Issue 14, item 8: a systolic of 9.2e48 mmHg and a reading dated ten years ahead are
/// ignored and counted; the last plausible reading stays the latest.
#[tokio::test]
async fn implausible_and_future_readings_are_ignored_and_counted() {
    let app = spawn_app_with(AppOptions::default()).await;
    let now = unix_now();
    let bp = |grpid: i64, date: i64, systolic: serde_json::Value, unit: i64| {
        serde_json::json!({"grpid": grpid, "attrib": 0, "date": date, "category": 1,
            "hash_deviceid": "bpm", "model": "BPM Core",
            "measures": [{"value": systolic, "type": 10, "unit": unit},
                         {"value": 80, "type": 9, "unit": 0}]})
    };
    app.simulator
        .set_groups(vec![
            bp(1, now - 3600, 121.into(), 0),
            bp(2, now - 60, 9_200_000_000_000_000_000_i64.into(), 30),
            bp(3, now + 10 * 365 * 86_400, 130.into(), 0),
        ])
        .unwrap();
    let text = app.scrape().await;
    let systolic = sample_with(
        &text,
        "withings_blood_pressure_mmhg",
        &[("kind", "systolic")],
    );
    assert_eq!(systolic, Some(121.0), "{text}");
    // Group 2's diastolic is plausible, and it is the newest that counts.
    assert_eq!(
        sample_with(
            &text,
            TIMESTAMP_METRIC,
            &[("measurement", "diastolic_blood_pressure")]
        ),
        Some((now - 60) as f64)
    );
    for reason in ["implausible", "future"] {
        assert_eq!(
            sample_with(
                &text,
                "withings_groups_skipped_total",
                &[("reason", reason)]
            ),
            Some(1.0),
            "{reason}\n{text}"
        );
    }
    assert!(!text.contains("e+48") && !text.contains("e48"), "{text}");
}

/// The whole exposition for a Body Scan sitting, with the two values that change from run
/// to run replaced by a marker. Set `UPDATE_GOLDEN=1` to rewrite the file after a deliberate
/// change, and review the diff.
#[tokio::test]
async fn body_composition_exposition_matches_the_golden_file() {
    let text = scrape_fixture("measurement_positions.json", Vec::new()).await;
    common::assert_golden(&text, "body_scan.prom");
}

#[test]
fn the_metrics_reference_documents_every_measure_family() {
    let reference =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/metrics.md"))
            .expect("docs/metrics.md");
    for m in MEASURES {
        assert!(
            reference.contains(&format!("| `{}` |", m.metric)),
            "{} is not in the metrics table of docs/metrics.md",
            m.metric
        );
    }
}
