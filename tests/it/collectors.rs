//! The activity, sleep and devices collectors: the real fixtures and the reference's
//! examples against hand calculations, the traps `withings-api.md` lists (two sources on one
//! day, missing values, duplicate devices, the user's local day), the simulator's endpoints
//! end to end through the client, and `promtool check metrics` on what they expose.

use crate::common;

use common::fixture;
use common::prometheus::assert_promtool_accepts;
use serde_json::{Value, json};
use withings_exporter::collector::activity::{ActivityState, local_day_start, parse_getactivity};
use withings_exporter::collector::devices::{DevicesState, parse_getdevice};
use withings_exporter::collector::sleep::{SleepState, parse_getsummary};
use withings_exporter::collector::{
    INITIAL_LOOKBACK_SECONDS, SYNC_OVERLAP_SECONDS, SyncQuery, fetch_pages,
};
use withings_exporter::collector::{activity, devices, sleep};
use withings_exporter::render::families::encode;
use withings_exporter::secret::Secret;
use withings_exporter::withings::{ApiError, ClientOptions, StatusClass, WithingsClient};
use withings_sim::data::UserExtras;
use withings_sim::{Simulator, SimulatorOptions};

/// Lines of `text` that start with `metric{` or `metric ` (the samples of one family).
fn samples<'a>(text: &'a str, metric: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|l| {
            l.strip_prefix(metric)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .collect()
}

fn activity_body(rows: Value) -> Vec<u8> {
    json!({"status": 0, "body": {"activities": rows, "more": false, "offset": 0}})
        .to_string()
        .into_bytes()
}

// ------------------------------------------------------------------------------ activity

#[test]
fn getactivity_fixture_keeps_the_latest_day_with_exact_decimals() {
    let page = parse_getactivity(fixture("getactivity.json").as_bytes()).unwrap();
    assert_eq!(
        (page.days.len(), page.malformed_rows, page.more),
        (2, 0, false)
    );
    // The first row, as parsed: decimals as written, heart rate present.
    let first = &page.days[0];
    assert_eq!(
        first.distance_meters.unwrap().to_f64().to_string(),
        "1028.559"
    );
    assert_eq!(first.active_kcal.unwrap().to_f64().to_string(), "85.497");
    assert_eq!(first.hr_average.unwrap().to_f64(), 80.0);
    assert_eq!(first.hr_zones[3].unwrap().to_f64(), 400.0);

    let mut state = ActivityState::default();
    let merged = state.merge(page);
    assert!(merged.complete);
    let text = encode(state.families());
    let device = r#"device_id="",device_model="GoogleFit tracker""#;
    // One source, so one series per family: the 21st, the later of its two days.
    for (metric, want) in [
        ("withings_activity_steps", "1155"),
        ("withings_activity_distance_meters", "1020.121"),
        ("withings_activity_floors", "0"),
        // 134.132 kcal × 4184 = 561208.288 J; 2357.149 × 4184 = 9862311.416 J.
        ("withings_activity_active_energy_joules", "561208.288"),
        ("withings_activity_total_energy_joules", "9862311.416"),
        // 2023-10-21 00:00 in Amsterdam (CEST, UTC+2) = 2023-10-20T22:00:00Z.
        ("withings_activity_day_timestamp_seconds", "1697839200"),
    ] {
        assert_eq!(
            samples(&text, metric),
            [format!("{metric}{{{device}}} {want}")],
            "{text}"
        );
    }
    for (intensity, want) in [("soft", 1516), ("moderate", 287), ("intense", 420)] {
        let line = format!(
            "withings_activity_intensity_seconds{{{device},intensity=\"{intensity}\"}} {want}"
        );
        assert!(text.contains(&line), "{line}\n{text}");
    }
    // That day's heart rate is all zeros: not measured, so absent rather than 0.
    for metric in [
        "withings_activity_heart_rate_average_bpm",
        "withings_activity_heart_rate_min_bpm",
        "withings_activity_heart_rate_max_bpm",
        "withings_activity_heart_rate_zone_seconds",
    ] {
        assert!(samples(&text, metric).is_empty(), "{metric}\n{text}");
    }
}

#[test]
fn first_fixture_day_exposes_heart_rate_and_exact_energy() {
    let mut page = parse_getactivity(fixture("getactivity.json").as_bytes()).unwrap();
    page.days.truncate(1);
    let mut state = ActivityState::default();
    state.merge(page);
    let text = encode(state.families());
    for line in [
        r#"withings_activity_distance_meters{device_id="",device_model="GoogleFit tracker"} 1028.559"#,
        // 85.497 × 4184 = 357719.448; 2303.788 × 4184 = 9639048.992.
        r#"withings_activity_active_energy_joules{device_id="",device_model="GoogleFit tracker"} 357719.448"#,
        r#"withings_activity_total_energy_joules{device_id="",device_model="GoogleFit tracker"} 9639048.992"#,
        r#"withings_activity_heart_rate_average_bpm{device_id="",device_model="GoogleFit tracker"} 80"#,
        r#"withings_activity_heart_rate_min_bpm{device_id="",device_model="GoogleFit tracker"} 70"#,
        r#"withings_activity_heart_rate_zone_seconds{device_id="",device_model="GoogleFit tracker",zone="2"} 300"#,
        // 2023-10-20 00:00 CEST.
        r#"withings_activity_day_timestamp_seconds{device_id="",device_model="GoogleFit tracker"} 1697752800"#,
    ] {
        assert!(text.contains(line), "{line}\n{text}");
    }
}

#[test]
fn a_phone_and_a_watch_on_the_same_day_are_two_series_never_added() {
    let body = activity_body(json!([
        {"date": "2023-10-21", "timezone": "Europe/Paris", "steps": 4000, "distance": 3000.5,
         "hash_deviceid": null, "model": "iOS step tracker", "modified": 10},
        {"date": "2023-10-21", "timezone": "Europe/Paris", "steps": 4200, "distance": 3100.25,
         "hash_deviceid": "w1", "model": "ScanWatch 2", "modified": 11,
         "hr_average": 71, "hr_min": 50, "hr_max": 130}
    ]));
    let mut state = ActivityState::default();
    state.merge(parse_getactivity(&body).unwrap());
    let text = encode(state.families());
    assert_eq!(
        samples(&text, "withings_activity_steps"),
        [
            r#"withings_activity_steps{device_id="",device_model="iOS step tracker"} 4000"#,
            r#"withings_activity_steps{device_id="w1",device_model="ScanWatch 2"} 4200"#,
        ],
        "{text}"
    );
    assert!(!text.contains(" 8200"), "{text}");
    // Only the watch measures heart rate.
    assert_eq!(
        samples(&text, "withings_activity_heart_rate_average_bpm").len(),
        1
    );
}

#[test]
fn the_day_starts_at_the_users_midnight_not_utcs() {
    let date = "2023-10-21".parse().unwrap();
    // Auckland (NZDT, UTC+13): the 21st begins at 11:00 UTC on the 20th, a day UTC still
    // calls the 20th; Los Angeles (PDT, UTC-7): at 07:00 UTC on the 21st.
    assert_eq!(
        local_day_start(date, "Pacific/Auckland"),
        Some(1_697_799_600)
    );
    assert_eq!(
        local_day_start(date, "America/Los_Angeles"),
        Some(1_697_871_600)
    );
    assert_eq!(local_day_start(date, "UTC"), Some(1_697_846_400));
    // Santiago skipped midnight on 2023-09-03 (00:00 became 01:00 -03): the day starts at
    // the end of the gap, 04:00 UTC.
    assert_eq!(
        local_day_start("2023-09-03".parse().unwrap(), "America/Santiago"),
        Some(1_693_713_600)
    );
    assert_eq!(local_day_start(date, "Mars/Olympus_Mons"), None);

    // The same through the parser, and a row whose timezone is unknown is skipped, counted.
    let body = activity_body(json!([
        {"date": "2023-10-21", "timezone": "Pacific/Auckland", "steps": 1, "modified": 1},
        {"date": "2023-10-21", "timezone": "Nowhere/Special", "steps": 2, "modified": 1,
         "hash_deviceid": "x"}
    ]));
    let page = parse_getactivity(&body).unwrap();
    assert_eq!((page.days.len(), page.malformed_rows), (1, 1));
    assert_eq!(page.days[0].day_start, 1_697_799_600);
}

#[test]
fn malformed_activity_rows_are_skipped_and_counted_not_fatal() {
    let body = activity_body(json!([
        [1, 2, 3],
        {"date": "21/10/2023", "timezone": "UTC"},
        {"date": "2023-10-21", "timezone": "UTC", "steps": "many"},
        {"timezone": "UTC", "steps": 3},
        {"date": "2023-10-21", "timezone": "UTC", "steps": "12", "distance": "7.5",
         "modified": "99", "new_field": {"x": 1}}
    ]));
    let page = parse_getactivity(&body).unwrap();
    assert_eq!((page.days.len(), page.malformed_rows), (1, 4));
    assert_eq!(page.days[0].steps.unwrap().to_f64(), 12.0);
    assert_eq!(page.days[0].modified, Some(99));
    for bad in [
        &b"{\"status\":0,\"body\":{\"activities\":{}}}"[..],
        b"[]",
        b"{\"status\":0}",
    ] {
        let err = parse_getactivity(bad).unwrap_err();
        assert_eq!(err.status_label(), "invalid_response", "{err:?}");
    }
}

#[test]
fn a_later_day_replaces_and_an_older_answer_does_not() {
    let row = |date: &str, steps: i64, modified: i64| {
        json!({"date": date, "timezone": "UTC", "steps": steps, "modified": modified,
               "hash_deviceid": "w", "model": "Move"})
    };
    let mut state = ActivityState::default();
    state.merge(parse_getactivity(&activity_body(json!([row("2023-10-21", 500, 20)]))).unwrap());
    // The same day again, updated later: replaces.
    state.merge(parse_getactivity(&activity_body(json!([row("2023-10-21", 900, 30)]))).unwrap());
    // An older version of that day, and an earlier day: neither replaces.
    state.merge(
        parse_getactivity(&activity_body(json!([
            row("2023-10-21", 100, 25),
            row("2023-10-20", 7000, 40)
        ])))
        .unwrap(),
    );
    let steps: Vec<f64> = state.rows().map(|d| d.steps.unwrap().to_f64()).collect();
    assert_eq!(steps, [900.0]);
    // The cursor follows the newest `modified` seen, less the overlap.
    assert_eq!(
        state.query(1_000_000).lastupdate,
        (40 - SYNC_OVERLAP_SECONDS).max(0)
    );
}

// --------------------------------------------------------------------------------- sleep

/// A night built from the reference's `sleep_summary_object` examples (a Pulse tracker,
/// model 16 / model_id 51), with `data` values chosen by hand; a Pulse senses no breathing,
/// snoring or apnea, so those fields are not there.
fn reference_night() -> Value {
    json!({
        "id": 12345, "timezone": "Europe/Paris", "model": 16, "model_id": 51,
        "startdate": 1594245600, "enddate": 1594257200, "date": "2020-07-09",
        "created": 1594257200, "modified": 1594257200,
        "hash_deviceid": "892359876fd8805ac45bab078c4828692f0276b1", "completed": true,
        "data": {
            "total_timeinbed": 11600, "total_sleep_time": 9840, "lightsleepduration": 5400,
            "deepsleepduration": 2640, "remsleepduration": 1800, "wakeupduration": 1200,
            "sleep_latency": 360, "wakeup_latency": 200, "wakeupcount": 2, "waso": 840,
            "sleep_efficiency": 0.85, "sleep_score": 78, "hr_average": 58, "hr_min": 49,
            "hr_max": 74, "night_events": {"1": [0], "2": [360]}
        }
    })
}

fn sleep_body(series: Value) -> Vec<u8> {
    json!({"status": 0, "body": {"series": series, "more": false, "offset": 0}})
        .to_string()
        .into_bytes()
}

#[test]
fn reference_night_exposes_what_the_device_measured_and_nothing_else() {
    let page = parse_getsummary(&sleep_body(json!([reference_night()]))).unwrap();
    assert_eq!((page.nights.len(), page.malformed_rows), (1, 0));
    let mut state = SleepState::default();
    state.merge(page);
    let text = encode(state.families());
    let d = r#"device_id="892359876fd8805ac45bab078c4828692f0276b1",device_model="Pulse""#;
    for (metric, extra, want) in [
        ("withings_sleep_in_bed_seconds", "", "11600"),
        ("withings_sleep_asleep_seconds", "", "9840"),
        ("withings_sleep_stage_seconds", ",stage=\"light\"", "5400"),
        ("withings_sleep_stage_seconds", ",stage=\"deep\"", "2640"),
        ("withings_sleep_stage_seconds", ",stage=\"rem\"", "1800"),
        ("withings_sleep_awake_seconds", "", "1200"),
        ("withings_sleep_latency_seconds", "", "360"),
        ("withings_sleep_wakeup_latency_seconds", "", "200"),
        ("withings_sleep_wakeups", "", "2"),
        ("withings_sleep_efficiency_ratio", "", "0.85"),
        ("withings_sleep_score", "", "78"),
        ("withings_sleep_heart_rate_average_bpm", "", "58"),
        ("withings_sleep_heart_rate_min_bpm", "", "49"),
        ("withings_sleep_heart_rate_max_bpm", "", "74"),
        ("withings_sleep_start_timestamp_seconds", "", "1594245600"),
        ("withings_sleep_end_timestamp_seconds", "", "1594257200"),
    ] {
        let line = format!("{metric}{{{d}{extra}}} {want}");
        assert!(text.contains(&line), "{line}\n{text}");
    }
    for absent in [
        "withings_sleep_snoring_seconds",
        "withings_sleep_snoring_episodes",
        "withings_sleep_apnea_hypopnea_index",
        "withings_sleep_breathing_rate_average_per_minute",
        "withings_sleep_out_of_bed_events",
    ] {
        assert!(
            samples(&text, absent).is_empty(),
            "{absent} should be absent\n{text}"
        );
    }
}

#[test]
fn two_devices_on_one_night_stay_apart_and_only_completed_nights_count() {
    let mut analyzer = reference_night();
    analyzer["hash_deviceid"] = json!("sa");
    analyzer["model"] = json!(32);
    analyzer["model_id"] = json!(63);
    analyzer["data"]["apnea_hypopnea_index"] = json!(17);
    analyzer["data"]["snoring"] = json!(420);
    analyzer["data"]["rr_average"] = json!(14);
    let mut in_progress = reference_night();
    in_progress["startdate"] = json!(1594330000);
    in_progress["enddate"] = json!(1594340000);
    in_progress["completed"] = json!(false);
    let mut earlier = reference_night();
    earlier["enddate"] = json!(1594170000);
    earlier["startdate"] = json!(1594160000);
    let page = parse_getsummary(&sleep_body(json!([
        earlier, reference_night(), analyzer, in_progress, "not a night",
        {"startdate": 10, "enddate": 5}
    ])))
    .unwrap();
    assert_eq!(
        (page.nights.len(), page.incomplete_rows, page.malformed_rows),
        (3, 1, 2)
    );
    let mut state = SleepState::default();
    state.merge(page);
    let text = encode(state.families());
    let asleep = samples(&text, "withings_sleep_asleep_seconds");
    assert_eq!(asleep.len(), 2, "{text}");
    assert!(asleep.iter().all(|l| l.ends_with(" 9840")), "{asleep:?}");
    assert_eq!(
        samples(&text, "withings_sleep_apnea_hypopnea_index"),
        [r#"withings_sleep_apnea_hypopnea_index{device_id="sa",device_model="Aura Sensor V2"} 17"#]
    );
    // The latest completed night, not the one in progress nor the earlier one.
    assert!(
        samples(&text, "withings_sleep_end_timestamp_seconds")
            .iter()
            .all(|l| l.ends_with(" 1594257200")),
        "{text}"
    );
}

// ------------------------------------------------------------------------------- devices

#[test]
fn getdevice_fixture_folds_duplicates_into_one_series_per_device() {
    let page = parse_getdevice(fixture("getdevice.json").as_bytes()).unwrap();
    assert_eq!((page.devices.len(), page.malformed_rows), (5, 0));
    let mut state = DevicesState::default();
    state.merge(page);
    let text = encode(state.families());
    let id = "f998be4b9ccc9e136fd8cd8e8e344c31ec3b271d";
    let scale = format!(r#"device_id="{id}",device_model="Body+",device_type="Scale""#);
    let monitor =
        format!(r#"device_id="{id}",device_model="Aura Sensor V2",device_type="Sleep Monitor""#);
    // The scale is listed three times (high with a last session, high and unknown without):
    // one device, high, last synced 1693867179. The sleep monitor twice, once with an empty
    // model: one device, named, never synced (so no timestamp).
    let mut want = Vec::new();
    for labels in [&scale, &monitor] {
        for (level, v) in [("low", 0), ("medium", 0), ("high", 1), ("unknown", 0)] {
            want.push(format!(
                "withings_device_battery{{{labels},level=\"{level}\"}} {v}"
            ));
        }
    }
    assert_eq!(samples(&text, "withings_device_battery"), want, "{text}");
    assert_eq!(
        samples(&text, "withings_device_last_sync_timestamp_seconds"),
        [format!(
            "withings_device_last_sync_timestamp_seconds{{{scale}}} 1693867179"
        )]
    );
}

#[test]
fn each_device_has_exactly_one_battery_state_and_a_new_list_replaces_the_old() {
    let body = |devices: Value| {
        json!({"status": 0, "body": {"devices": devices}})
            .to_string()
            .into_bytes()
    };
    let mut state = DevicesState::default();
    state.merge(
        parse_getdevice(&body(json!([
            {"type": "Scale", "model": "Body", "battery": "low", "hash_deviceid": "a", "last_session_date": 5},
            {"type": "Scale", "model": "Body", "battery": "low", "hash_deviceid": "a", "last_session_date": 9},
            {"type": "Activity Tracker", "model": "Move", "battery": "empty?", "hash_deviceid": "b"},
            {"type": "Activity Tracker", "model": "Move", "hash_deviceid": "c"},
            42
        ])))
        .unwrap(),
    );
    let text = encode(state.families());
    let battery = samples(&text, "withings_device_battery");
    assert_eq!(battery.len(), 12, "{text}");
    assert_eq!(
        battery.iter().filter(|l| l.ends_with(" 1")).count(),
        3,
        "{text}"
    );
    assert!(text.contains(r#"withings_device_battery{device_id="a",device_model="Body",device_type="Scale",level="low"} 1"#));
    assert!(text.contains(r#"withings_device_battery{device_id="b",device_model="Move",device_type="Activity Tracker",level="unknown"} 1"#));
    assert!(text.contains(r#"withings_device_last_sync_timestamp_seconds{device_id="a",device_model="Body",device_type="Scale"} 9"#));
    state.merge(parse_getdevice(&body(json!([]))).unwrap());
    assert!(state.families().is_empty());
}

// ------------------------------------------------------------------ simulator end to end

async fn simulator(page_size: usize) -> (Simulator, WithingsClient) {
    let simulator = Simulator::start(SimulatorOptions {
        page_size,
        ..SimulatorOptions::default()
    })
    .await
    .unwrap();
    let client = WithingsClient::new(&simulator.url(), ClientOptions::default()).unwrap();
    (simulator, client)
}

fn fixture_extras() -> UserExtras {
    let activity: Value = serde_json::from_str(&fixture("getactivity.json")).unwrap();
    let devices: Value = serde_json::from_str(&fixture("getdevice.json")).unwrap();
    UserExtras {
        activities: activity["body"]["activities"].as_array().unwrap().clone(),
        sleep: vec![reference_night()],
        devices: devices["body"]["devices"].as_array().unwrap().clone(),
        ..Default::default()
    }
}

#[tokio::test]
async fn simulator_serves_all_three_endpoints_through_the_client_with_paging() {
    let (simulator, client) = simulator(1).await;
    simulator.set_extras(fixture_extras()).unwrap();
    let token = Secret::new(common::TOKEN);
    let now = 1_697_890_000;

    let mut activity = ActivityState::default();
    let first = activity.query(now);
    assert_eq!(
        first,
        SyncQuery {
            lastupdate: now - INITIAL_LOOKBACK_SECONDS,
            offset: None
        }
    );
    // A page holds one row here, so the two rows take two requests.
    let pages = fetch_pages(first, |q| {
        let (client, token) = (&client, &token);
        async move { activity::getactivity(client, token, &q).await }
    })
    .await
    .unwrap();
    assert_eq!(pages.len(), 2);
    for page in pages {
        activity.merge(page);
    }
    let text = encode(activity.families());
    assert!(
        text.contains(
            r#"withings_activity_steps{device_id="",device_model="GoogleFit tracker"} 1155"#
        ),
        "{text}"
    );
    let asked = simulator.requests();
    assert_eq!(asked.len(), 2);
    assert_eq!(asked[0].path, "/v2/measure");
    assert_eq!(asked[0].params["action"], "getactivity");
    assert_eq!(
        asked[0].params["lastupdate"],
        (now - INITIAL_LOOKBACK_SECONDS).to_string()
    );
    assert_eq!(asked[1].params["offset"], "1");
    assert_eq!(asked[0].bearer.as_deref(), Some(common::TOKEN));

    // The next fetch starts from the newest `modified` (1697887349) less the overlap, and
    // the simulator sends only what changed since.
    let next = activity.query(now);
    assert_eq!(next.lastupdate, 1_697_887_349 - SYNC_OVERLAP_SECONDS);
    let page = activity::getactivity(&client, &token, &next).await.unwrap();
    assert_eq!(page.days.len(), 1);

    let mut sleep = SleepState::default();
    let page = sleep::getsummary(
        &client,
        &token,
        &SyncQuery {
            lastupdate: 0,
            offset: None,
        },
    )
    .await
    .unwrap();
    sleep.merge(page);
    assert_eq!(sleep.rows().count(), 1);
    let asked = simulator.requests();
    let sleep_request = asked.iter().find(|r| r.path == "/v2/sleep").unwrap();
    assert_eq!(sleep_request.params["action"], "getsummary");
    assert!(sleep_request.params["data_fields"].contains("apnea_hypopnea_index"));

    let mut devices = DevicesState::default();
    devices.merge(devices::getdevice(&client, &token).await.unwrap());
    assert_eq!(devices.devices().count(), 2);
    assert_eq!(simulator.request_count("/v2/user"), 1);

    // A wrong token gets Withings' invalid-token answer, as on /measure.
    let err = devices::getdevice(&client, &Secret::new("nope"))
        .await
        .unwrap_err();
    assert!(err.is_auth_failure(), "{err:?}");
}

#[tokio::test]
async fn a_token_without_a_scope_fails_only_the_endpoints_that_need_it() {
    let (simulator, client) = simulator(100).await;
    simulator.set_extras(fixture_extras()).unwrap();
    simulator.deny_scope(common::TOKEN, "user.activity");
    let token = Secret::new(common::TOKEN);
    let query = SyncQuery {
        lastupdate: 0,
        offset: None,
    };
    for err in [
        activity::getactivity(&client, &token, &query)
            .await
            .map(|_| ())
            .unwrap_err(),
        sleep::getsummary(&client, &token, &query)
            .await
            .map(|_| ())
            .unwrap_err(),
    ] {
        match err {
            ApiError::Status {
                status: 277,
                class: StatusClass::Unauthorized,
                ref message,
                ..
            } => {
                assert!(message.contains("user.activity"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }
    // user.info was granted: devices carry on.
    assert_eq!(
        devices::getdevice(&client, &token)
            .await
            .unwrap()
            .devices
            .len(),
        5
    );
    simulator.deny_scope(common::TOKEN, "user.info");
    let err = devices::getdevice(&client, &token).await.unwrap_err();
    assert_eq!(err.class(), Some(StatusClass::Unauthorized));
}

#[tokio::test]
async fn the_live_demo_household_serves_days_nights_and_devices() {
    let simulator = Simulator::start(SimulatorOptions {
        live: true,
        ..SimulatorOptions::default()
    })
    .await
    .unwrap();
    simulator.set_clock(Some(1_697_844_600));
    let client = WithingsClient::new(&simulator.url(), ClientOptions::default()).unwrap();
    let token = Secret::new(common::TOKEN);
    let query = SyncQuery {
        lastupdate: 0,
        offset: None,
    };
    let mut activity = ActivityState::default();
    activity.merge(
        activity::getactivity(&client, &token, &query)
            .await
            .unwrap(),
    );
    let mut sleep = SleepState::default();
    sleep.merge(sleep::getsummary(&client, &token, &query).await.unwrap());
    let mut devices = DevicesState::default();
    devices.merge(devices::getdevice(&client, &token).await.unwrap());
    // A watch and a phone; the sleep analyzer and the watch; five devices with a scale, a
    // watch and a sleep analyzer among them.
    assert_eq!(activity.rows().count(), 2);
    assert!(activity.rows().all(|d| d.date.to_string() == "2023-10-21"));
    assert_eq!(sleep.rows().count(), 2);
    let models: Vec<&str> = devices.devices().map(|d| d.device_model.as_str()).collect();
    for model in ["Body+", "ScanWatch 2", "Aura Sensor V2"] {
        assert!(models.contains(&model), "{models:?}");
    }
    let text = encode(sleep.families());
    assert_eq!(
        samples(&text, "withings_sleep_apnea_hypopnea_index").len(),
        1,
        "{text}"
    );
}

// ---------------------------------------------------------------- promtool check metrics

#[test]
#[ignore = "needs promtool (Debian package prometheus)"]
fn promtool_accepts_every_collector_family() {
    let now = 1_697_844_600;
    let extras = withings_sim::demo_extras::household_extras(now, "Europe/Berlin");
    let body = |key: &str, rows: &Vec<Value>| {
        json!({"status": 0, "body": {key: rows, "more": false}})
            .to_string()
            .into_bytes()
    };
    let mut activity = ActivityState::default();
    activity.merge(parse_getactivity(&body("activities", &extras.activities)).unwrap());
    let mut sleep = SleepState::default();
    sleep.merge(parse_getsummary(&body("series", &extras.sleep)).unwrap());
    let mut devices = DevicesState::default();
    devices.merge(parse_getdevice(&body("devices", &extras.devices)).unwrap());
    let mut families = activity.families();
    families.extend(sleep.families());
    families.extend(devices.families());
    let text = encode(families);
    // Every family the collectors can emit is in this exposition, so the lint saw them all.
    for metric in [
        "withings_activity_steps",
        "withings_activity_heart_rate_zone_seconds",
        "withings_activity_total_energy_joules",
        "withings_sleep_apnea_hypopnea_index",
        "withings_sleep_breathing_rate_max_per_minute",
        "withings_sleep_out_of_bed_events",
        "withings_device_battery",
        "withings_device_last_sync_timestamp_seconds",
    ] {
        assert!(!samples(&text, metric).is_empty(), "{metric}\n{text}");
    }
    assert_promtool_accepts(&text);
}

// ------------------------------------------------------------------ wired into an account

/// The fixture's rows as if written just now: a first sync looks back 30 days.
fn recent(mut extras: UserExtras) -> UserExtras {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    for row in extras.activities.iter_mut().chain(extras.sleep.iter_mut()) {
        row["modified"] = json!(now - 60);
    }
    extras
}

#[tokio::test]
async fn every_collector_costs_one_request_and_a_missing_scope_fails_only_its_own() {
    let app = common::spawn_app_with(common::AppOptions {
        env: vec![(
            "WITHINGS_COLLECTORS",
            "measures,activity,sleep,devices".into(),
        )],
        ..common::AppOptions::default()
    })
    .await;
    app.simulator.set_extras(recent(fixture_extras())).unwrap();
    app.simulator.deny_scope(common::TOKEN, "user.info");
    let text = app.scrape().await;
    assert_eq!(common::sample(&text, "withings_up"), Some(1.0), "{text}");
    for (collector, up) in [
        ("measures", 1.0),
        ("activity", 1.0),
        ("sleep", 1.0),
        ("devices", 0.0),
    ] {
        assert_eq!(
            common::sample_with(&text, "withings_collector_up", &[("collector", collector)]),
            Some(up),
            "{collector}\n{text}"
        );
    }
    assert!(
        !samples(&text, "withings_activity_steps").is_empty(),
        "{text}"
    );
    assert!(
        !samples(&text, "withings_sleep_in_bed_seconds").is_empty(),
        "{text}"
    );
    assert!(
        samples(&text, "withings_device_battery").is_empty(),
        "{text}"
    );
    // One request per collector and fetch, every one through the budget.
    for path in ["/measure", "/v2/measure", "/v2/sleep", "/v2/user"] {
        assert_eq!(app.simulator.request_count(path), 1, "{path}");
    }
    assert_eq!(
        common::sample(&text, "withings_requests_in_window"),
        Some(4.0),
        "{text}"
    );
    // A new scrape: the missing scope is not reported again, and the rest carries on.
    let again = app.scrape().await;
    assert_eq!(common::sample(&again, "withings_up"), Some(1.0));
    assert_eq!(app.simulator.request_count("/v2/user"), 2);
}

/// The `heart`, `workouts` and `goals` collectors against the demo household on pinned
/// clocks: Sam's watch took an ECG classified atrial fibrillation yesterday evening, Alex's
/// an inconclusive one, Grandma has no ECG device; the latest workout is yesterday's run;
/// goals are asked once an hour at most.
#[tokio::test]
async fn ecgs_by_their_own_time_the_latest_workout_and_goals_once_an_hour() {
    use std::sync::Arc;
    use std::time::Duration;
    use withings_exporter::app::App;
    use withings_exporter::clock::Clock;
    use withings_exporter::config::Config;
    use withings_sim::household::Household;

    const AT: i64 = 1_780_308_330;
    let household = Household::start_at(AT).await.expect("household starts");
    let vars = [
        ("WITHINGS_LISTEN_ADDRESS", "127.0.0.1:0"),
        ("WITHINGS_COLLECTORS", "measures,workouts,heart,goals"),
        ("WITHINGS_MIN_FETCH_INTERVAL_SECONDS", "60"),
        ("WITHINGS_TIMEOUT_SECONDS", "5"),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()));
    let config = Config::from_vars(household.environment(vars)).expect("valid configuration");
    let clock = Clock::starting_at_unix(AT);
    let app = Arc::new(App::from_config_with_clock(&config, clock.clone()).expect("app"));
    let server = common::serve(common::bind(Arc::clone(&app)).await);
    let http = common::http();
    let probe = |name: &'static str| {
        let http = http.clone();
        let address = server.address;
        async move {
            let response = http
                .get(format!("http://{address}/probe?account={name}"))
                .send()
                .await
                .expect("probe");
            assert_eq!(response.status(), 200, "{name}");
            response.text().await.expect("body")
        }
    };
    // Yesterday 20:15 in the household's time zone (Europe/Berlin, UTC+2 in June).
    let taken = 1_780_251_300.0;
    let sam = probe("sam").await;
    let ecg = |text: &str, metric: &str| {
        common::sample_with(text, metric, &[("device_model", "ScanWatch 2")])
    };
    assert_eq!(
        ecg(&sam, "withings_ecg_afib_classification"),
        Some(1.0),
        "{sam}"
    );
    assert_eq!(
        ecg(&sam, "withings_ecg_heart_rate_bpm"),
        Some(96.0),
        "{sam}"
    );
    assert_eq!(
        ecg(&sam, "withings_ecg_timestamp_seconds"),
        Some(taken),
        "{sam}"
    );
    let alex = probe("alex").await;
    assert_eq!(
        ecg(&alex, "withings_ecg_afib_classification"),
        Some(2.0),
        "{alex}"
    );
    let grandma = probe("grandma").await;
    assert!(!grandma.contains("withings_ecg_"), "{grandma}");
    for text in [&sam, &alex, &grandma] {
        assert_eq!(
            common::sample(text, "withings_goal_steps"),
            Some(10_000.0),
            "{text}"
        );
        assert_eq!(
            common::sample(text, "withings_goal_sleep_seconds"),
            Some(28_800.0)
        );
        assert_eq!(
            common::sample(text, "withings_goal_weight_grams"),
            Some(72_000.0)
        );
        // Yesterday's run (07:00 Berlin, 42 minutes), not the walk the day before.
        let run = |metric: &str| {
            common::sample_with(
                text,
                metric,
                &[("category", "run"), ("device_model", "ScanWatch 2")],
            )
        };
        assert_eq!(
            run("withings_workout_start_timestamp_seconds"),
            Some(1_780_203_600.0),
            "{text}"
        );
        assert_eq!(run("withings_workout_duration_seconds"), Some(2_520.0));
        assert_eq!(run("withings_workout_energy_joules"), Some(1_667_742.4));
        assert_eq!(run("withings_workout_heart_rate_average_bpm"), Some(152.0));
        assert_eq!(run("withings_workout_spo2_average_ratio"), Some(0.97));
        assert!(!text.contains("category=\"walk\""), "{text}");
        for collector in ["measures", "workouts", "heart", "goals"] {
            assert_eq!(
                common::sample_with(text, "withings_collector_up", &[("collector", collector)]),
                Some(1.0),
                "{collector}\n{text}"
            );
        }
    }
    let asked = |action: &str| {
        household
            .simulator
            .requests()
            .into_iter()
            .filter(|r| r.params.get("action").map(String::as_str) == Some(action))
            .collect::<Vec<_>>()
    };
    // The heart list is asked by the recordings' own time, from a week before the first
    // sync's 30 days, so that an ECG synced late is still found.
    let lists = asked("list");
    assert_eq!(lists.len(), 3);
    for request in &lists {
        assert_eq!(request.path, "/v2/heart");
        assert_eq!(
            request.params.get("startdate").map(String::as_str),
            Some((AT - 37 * 86_400).to_string().as_str())
        );
    }
    assert_eq!(asked("getgoals").len(), 3);
    // Ten minutes on: measures and ECGs are fetched again, goals are not.
    clock.advance(Duration::from_secs(600));
    probe("sam").await;
    assert_eq!(asked("list").len(), 4);
    assert_eq!(asked("getgoals").len(), 3);
    // An hour after the last answer they are.
    clock.advance(Duration::from_secs(3000));
    let later = probe("sam").await;
    assert_eq!(asked("getgoals").len(), 4);
    assert_eq!(
        common::sample(&later, "withings_goal_steps"),
        Some(10_000.0)
    );
    server.stop().await;
}

/// `intraday` against the demo household on pinned clocks: the latest heart-rate sample the
/// watch has synced, with its time; half an hour on, a newer one, asked from an hour before
/// the newest sample seen (a late sync is read again), one request a fetch.
#[tokio::test]
async fn intraday_shows_the_latest_synced_sample_and_reads_late_syncs_again() {
    use std::sync::Arc;
    use std::time::Duration;
    use withings_exporter::app::App;
    use withings_exporter::clock::Clock;
    use withings_exporter::config::Config;
    use withings_sim::household::Household;

    const AT: i64 = 1_780_308_330;
    let household = Household::start_at(AT).await.expect("household starts");
    let vars = [
        ("WITHINGS_LISTEN_ADDRESS", "127.0.0.1:0"),
        ("WITHINGS_COLLECTORS", "measures,intraday"),
        ("WITHINGS_MIN_FETCH_INTERVAL_SECONDS", "60"),
        ("WITHINGS_TIMEOUT_SECONDS", "5"),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()));
    let config = Config::from_vars(household.environment(vars)).expect("valid configuration");
    let clock = Clock::starting_at_unix(AT);
    let app = Arc::new(App::from_config_with_clock(&config, clock.clone()).expect("app"));
    let server = common::serve(common::bind(Arc::clone(&app)).await);
    let http = common::http();
    let probe = || {
        let http = http.clone();
        let url = format!("http://{}/probe?account=sam", server.address);
        async move { http.get(url).send().await.unwrap().text().await.unwrap() }
    };
    let watch = [
        ("device_model", "ScanWatch 2"),
        ("measurement", "heart_rate"),
    ];
    let first = probe().await;
    let seen = common::sample_with(&first, "withings_intraday_timestamp_seconds", &watch)
        .unwrap_or_else(|| panic!("{first}")) as i64;
    // A sample every 10 minutes, synced 10 to 40 minutes after it was taken: the newest
    // listed is 10 to 50 minutes old.
    assert_eq!(seen % 600, 0);
    assert!((AT - 3_000..=AT - 600).contains(&seen), "{seen}");
    // Noon in Berlin, awake, not running: the day's heart rate.
    let bpm = common::sample_with(
        &first,
        "withings_intraday_heart_rate_bpm",
        &[("device_model", "ScanWatch 2")],
    )
    .unwrap();
    assert!((69.0..=75.0).contains(&bpm), "{bpm}");
    assert!(first.contains("withings_intraday_steps{"), "{first}");
    // Half an hour on, at both ends.
    clock.advance(Duration::from_secs(1_800));
    household.simulator.set_clock(Some(AT + 1_800));
    let later = probe().await;
    let newer =
        common::sample_with(&later, "withings_intraday_timestamp_seconds", &watch).unwrap() as i64;
    assert!(newer > seen, "{newer} after {seen}");
    let asked: Vec<_> = household
        .simulator
        .requests()
        .into_iter()
        .filter(|r| r.params.get("action").map(String::as_str) == Some("getintradayactivity"))
        .filter(|r| r.bearer.is_some())
        .collect();
    let sam: Vec<_> = asked
        .iter()
        .filter(|r| {
            r.params.get("startdate").map(String::as_str) == Some(&(seen - 3_600).to_string())
        })
        .collect();
    assert_eq!(sam.len(), 1, "{asked:?}");
    assert_eq!(
        sam[0].params.get("enddate").map(String::as_str),
        Some((AT + 1_800).to_string().as_str())
    );
    server.stop().await;
}

/// `sleep_detail` against the demo household: last night on the sleep analyzer (23:00 to
/// 07:00 in Berlin, uploaded at 07:15), its last stage with the segment's start, the last
/// minute of heart rate; one request of a day at most.
#[tokio::test]
async fn sleep_detail_shows_the_nights_last_stage_and_minute() {
    use std::sync::Arc;
    use withings_exporter::app::App;
    use withings_exporter::clock::Clock;
    use withings_exporter::config::Config;
    use withings_sim::household::Household;

    const AT: i64 = 1_780_308_330;
    let household = Household::start_at(AT).await.expect("household starts");
    let vars = [
        ("WITHINGS_LISTEN_ADDRESS", "127.0.0.1:0"),
        ("WITHINGS_COLLECTORS", "measures,sleep,sleep_detail"),
        ("WITHINGS_TIMEOUT_SECONDS", "5"),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()));
    let config = Config::from_vars(household.environment(vars)).expect("valid configuration");
    let app =
        Arc::new(App::from_config_with_clock(&config, Clock::starting_at_unix(AT)).expect("app"));
    let server = common::serve(common::bind(Arc::clone(&app)).await);
    let text = common::http()
        .get(format!("http://{}/probe?account=alex", server.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let analyzer = [("device_model", "Aura Sensor V2")];
    let with = |measurement| [analyzer[0], ("measurement", measurement)];
    // 23:00 Berlin (21:00 UTC) plus five 90-minute cycles and 25 minutes of light sleep: a
    // deep segment from 06:55 to the 07:00 wake-up.
    let bedtime = 1_780_261_200;
    assert_eq!(
        common::sample_with(&text, "withings_sleep_state", &analyzer),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        common::sample_with(
            &text,
            "withings_sleep_detail_timestamp_seconds",
            &with("state")
        ),
        Some((bedtime + 475 * 60) as f64)
    );
    assert_eq!(
        common::sample_with(
            &text,
            "withings_sleep_detail_timestamp_seconds",
            &with("hr")
        ),
        Some((bedtime + 8 * 3600 - 60) as f64)
    );
    let bpm = common::sample_with(&text, "withings_sleep_heart_rate_bpm", &analyzer).unwrap();
    assert!((50.0..=54.0).contains(&bpm), "{bpm}");
    // The night's total from `sleep` and the minutes from `sleep_detail` do not collide.
    assert_eq!(
        text.matches("# TYPE withings_sleep_snoring_seconds gauge")
            .count(),
        1
    );
    let asked: Vec<_> = household
        .simulator
        .requests()
        .into_iter()
        .filter(|r| {
            r.path == "/v2/sleep" && r.params.get("action").map(String::as_str) == Some("get")
        })
        .collect();
    assert_eq!(asked.len(), 1);
    let span: i64 = asked[0].params["enddate"].parse::<i64>().unwrap()
        - asked[0].params["startdate"].parse::<i64>().unwrap();
    assert!(span < 86_400, "{span}");
    server.stop().await;
}
