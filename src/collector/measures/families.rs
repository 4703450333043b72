//! The live families of `measures`: the latest reading of every measurement and its
//! timestamp.

use super::state::LatestState;
use super::table::{MEASURES, position_name};
use crate::render::families::GaugeFamilies;
use prometheus::proto::MetricFamily;

pub const TIMESTAMP_METRIC: &str = "withings_measurement_timestamp_seconds";
pub const TIMESTAMP_HELP: &str = "Unix time the latest exported value of each measurement (and body position, for segmental measures) was taken on the device.";

/// Every measurement with a reading (the vitals, body composition, segments...) and their
/// timestamps. A measurement with no reading yet has no sample at all: a made-up 0 would
/// read as a real, alarming value.
///
/// A segmental reading carries a `position` label (`left_arm`, `torso`...) both on its value
/// and on its `withings_measurement_timestamp_seconds`, next to `measurement`.
pub fn vital_families(state: &LatestState) -> Vec<MetricFamily> {
    let mut values = GaugeFamilies::new();
    let mut timestamps = GaugeFamilies::new();
    for (slot, reading) in state.readings() {
        let Some(def) = MEASURES.get(slot.index) else {
            continue;
        };
        let position = slot.position.and_then(position_name);
        let mut labels: Vec<(&str, &str)> = def.labels.to_vec();
        if let Some(position) = position {
            labels.push(("position", position));
        }
        labels.push(("device_id", &reading.device_id));
        labels.push(("device_model", &reading.device_model));
        values.push(def.metric, def.help, &labels, reading.value);
        let mut labels = vec![("measurement", def.measurement)];
        if let Some(position) = position {
            labels.push(("position", position));
        }
        timestamps.push(
            TIMESTAMP_METRIC,
            TIMESTAMP_HELP,
            &labels,
            reading.date as f64,
        );
    }
    let mut families = values.finish();
    families.extend(timestamps.finish());
    families
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::measures::model::{Measure, MeasureGroup};
    use crate::collector::measures::state::MergeOptions;
    use crate::render::families::encode;

    #[test]
    fn empty_state_exposes_no_vitals() {
        assert!(vital_families(&LatestState::default()).is_empty());
    }

    #[test]
    fn both_blood_pressure_kinds_share_one_family() {
        let mut state = LatestState::default();
        state.merge(
            &[MeasureGroup {
                grpid: 1,
                attrib: Some(0),
                date: 1690491576,
                created: None,
                modified: None,
                category: Some(1),
                hash_deviceid: None,
                model: Some("BPM \"Core\"\n".into()),
                is_inconclusive: false,
                measures: vec![
                    Measure {
                        value: 89,
                        kind: 9,
                        unit: 0,
                        position: None,
                    },
                    Measure {
                        value: 109,
                        kind: 10,
                        unit: 0,
                        position: None,
                    },
                ],
            }],
            MergeOptions {
                include_ambiguous: true,
            },
        );
        let text = encode(vital_families(&state));
        assert_eq!(
            text.matches("# TYPE withings_blood_pressure_mmhg gauge")
                .count(),
            1
        );
        assert!(text.contains(
            "withings_blood_pressure_mmhg{kind=\"systolic\",device_id=\"\",device_model=\"BPM \\\"Core\\\"\\n\"} 109\n"
        ), "{text}");
        assert!(text.contains("withings_measurement_timestamp_seconds{measurement=\"diastolic_blood_pressure\"} 1690491576\n"), "{text}");
    }
}
