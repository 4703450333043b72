//! Turns the exporter's state into Prometheus metric families and the text exposition.

use crate::account::state::LatestState;
use crate::render::measures::{MEASURES, position_name};
use prometheus::proto::{Gauge, LabelPair, Metric, MetricFamily, MetricType};

/// `Content-Type` of the text exposition format 0.0.4; Prometheus 3 refuses a scrape without it.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub const TIMESTAMP_METRIC: &str = "withings_measurement_timestamp_seconds";
pub const TIMESTAMP_HELP: &str = "Unix time the latest exported value of each measurement (and body position, for segmental measures) was taken on the device.";

fn label(name: &str, value: &str) -> LabelPair {
    let mut pair = LabelPair::default();
    pair.set_name(name.to_owned());
    pair.set_value(value.to_owned());
    pair
}

fn gauge_metric(labels: Vec<LabelPair>, value: f64) -> Metric {
    let mut gauge = Gauge::default();
    gauge.set_value(value);
    let mut metric = Metric::from_gauge(gauge);
    metric.set_label(labels);
    metric
}

fn family(name: &str, help: &str, kind: MetricType) -> MetricFamily {
    let mut family = MetricFamily::default();
    family.set_name(name.to_owned());
    family.set_help(help.to_owned());
    family.set_field_type(kind);
    family
}

/// A family with one unlabelled gauge sample.
pub fn single_gauge(name: &str, help: &str, value: f64) -> MetricFamily {
    let mut f = family(name, help, MetricType::GAUGE);
    f.mut_metric().push(gauge_metric(Vec::new(), value));
    f
}

/// A family with one gauge sample carrying one label.
pub fn labelled_gauge(
    name: &str,
    help: &str,
    label_name: &str,
    label_value: &str,
    value: f64,
) -> MetricFamily {
    let mut f = family(name, help, MetricType::GAUGE);
    f.mut_metric()
        .push(gauge_metric(vec![label(label_name, label_value)], value));
    f
}

/// A gauge family with one sample per `(label value, value)`, all under one label name.
pub fn gauge_by_label<'a>(
    name: &str,
    help: &str,
    label_name: &str,
    samples: impl IntoIterator<Item = (&'a str, f64)>,
) -> MetricFamily {
    let mut f = family(name, help, MetricType::GAUGE);
    for (label_value, value) in samples {
        f.mut_metric()
            .push(gauge_metric(vec![label(label_name, label_value)], value));
    }
    f
}

/// Every measurement with a reading (the vitals, body composition, segments...) and their
/// timestamps. A measurement with no reading yet has no sample at all: a made-up 0 would
/// read as a real, alarming value.
///
/// A segmental reading carries a `position` label (`left_arm`, `torso`...) both on its value
/// and on its `withings_measurement_timestamp_seconds`, next to `measurement`.
pub fn vital_families(state: &LatestState) -> Vec<MetricFamily> {
    let mut families: Vec<MetricFamily> = Vec::new();
    let mut timestamps = family(TIMESTAMP_METRIC, TIMESTAMP_HELP, MetricType::GAUGE);
    for (slot, reading) in state.readings() {
        let Some(def) = MEASURES.get(slot.index) else {
            continue;
        };
        let position = slot.position.and_then(position_name);
        let mut labels: Vec<LabelPair> = def.labels.iter().map(|(n, v)| label(n, v)).collect();
        if let Some(position) = position {
            labels.push(label("position", position));
        }
        labels.push(label("device_id", &reading.device_id));
        labels.push(label("device_model", &reading.device_model));
        let sample = gauge_metric(labels, reading.value);
        match families.iter_mut().find(|f| f.name() == def.metric) {
            Some(existing) => existing.mut_metric().push(sample),
            None => {
                let mut f = family(def.metric, def.help, MetricType::GAUGE);
                f.mut_metric().push(sample);
                families.push(f);
            }
        }
        let mut labels = vec![label("measurement", def.measurement)];
        if let Some(position) = position {
            labels.push(label("position", position));
        }
        timestamps
            .mut_metric()
            .push(gauge_metric(labels, reading.date as f64));
    }
    if !timestamps.get_metric().is_empty() {
        families.push(timestamps);
    }
    families
}

/// Encodes families in the text format, sorted by name so the output is stable.
pub fn encode(mut families: Vec<MetricFamily>) -> String {
    families.sort_by(|a, b| a.name().cmp(b.name()));
    let mut out = String::with_capacity(4096);
    // Every family here is built by this crate with valid names, so encoding cannot fail;
    // if it ever did, a partial exposition is better than none.
    if let Err(e) = prometheus::TextEncoder::new().encode_utf8(&families, &mut out) {
        tracing::error!(error = %e, "encoding metrics failed");
    }
    out
}

/// Gauge families built sample by sample, each family created at its first sample: how the
/// collectors (activity, sleep, devices) build their per-device series, where a value the
/// device did not measure is simply never pushed.
#[derive(Debug, Default)]
pub struct GaugeFamilies {
    families: Vec<MetricFamily>,
}

impl GaugeFamilies {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one sample to the family `name` (its HELP is the first one given).
    pub fn push(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        let labels = labels.iter().map(|(n, v)| label(n, v)).collect();
        let sample = gauge_metric(labels, value);
        match self.families.iter_mut().find(|f| f.name() == name) {
            Some(existing) => existing.mut_metric().push(sample),
            None => {
                let mut f = family(name, help, MetricType::GAUGE);
                f.mut_metric().push(sample);
                self.families.push(f);
            }
        }
    }

    pub fn finish(self) -> Vec<MetricFamily> {
        self.families
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::account::state::MergeOptions;
    use crate::withings::{Measure, MeasureGroup};

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
