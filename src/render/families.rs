//! Metric families built sample by sample, and the text exposition: nothing here knows
//! what the samples mean.

use prometheus::proto::{Gauge, LabelPair, Metric, MetricFamily, MetricType};

/// `Content-Type` of the text exposition format 0.0.4; Prometheus 3 refuses a scrape without it.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

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
/// collectors build their per-device series, where a value the device did not measure is
/// simply never pushed.
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
