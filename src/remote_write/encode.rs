//! From series to request bodies: the rules remote write 1.0 puts on a request (label names
//! valid, unique and sorted, `__name__` present, no empty label value, samples of a series in
//! time order), bounded batches, protobuf, snappy's block format.

use super::proto::{Label, MetricMetadata, Sample, TimeSeries, WriteRequest};
use prost::Message;

/// Why a series is not sent at all, as counted in `withings_remote_write_samples_dropped_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("no __name__ label")]
    NoName,
    #[error("the metric name is not [a-zA-Z_:][a-zA-Z0-9_:]*")]
    BadMetricName,
    #[error("a label name is not [a-zA-Z_][a-zA-Z0-9_]*")]
    BadLabelName,
    #[error("a label name appears twice")]
    RepeatedLabel,
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`: a label name of remote write 1.0.
pub fn valid_label_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`: a metric name.
pub fn valid_metric_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_' || b == b':')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}

/// Puts one series in the form a request carries: labels with an empty value left out (a
/// label with an empty value is no label, and the spec forbids sending it), sorted by name;
/// samples sorted by time, the first of two at one millisecond kept.
pub fn prepare(mut series: TimeSeries) -> Result<TimeSeries, Invalid> {
    series.labels.retain(|l| !l.value.is_empty());
    series.labels.sort_unstable_by(|a, b| a.name.cmp(&b.name));
    if series.labels.windows(2).any(|w| w[0].name == w[1].name) {
        return Err(Invalid::RepeatedLabel);
    }
    let mut named = false;
    for label in &series.labels {
        if label.name == "__name__" {
            if !valid_metric_name(&label.value) {
                return Err(Invalid::BadMetricName);
            }
            named = true;
        } else if !valid_label_name(&label.name) {
            return Err(Invalid::BadLabelName);
        }
    }
    if !named {
        return Err(Invalid::NoName);
    }
    if !series.samples.is_sorted_by_key(|s| s.timestamp) {
        series.samples.sort_by_key(|s| s.timestamp);
    }
    series.samples.dedup_by_key(|s| s.timestamp);
    Ok(series)
}

/// A series from its labels (`__name__` among them, in any order) and samples.
pub fn series(
    labels: impl IntoIterator<Item = (String, String)>,
    samples: Vec<Sample>,
) -> TimeSeries {
    TimeSeries {
        labels: labels
            .into_iter()
            .map(|(name, value)| Label { name, value })
            .collect(),
        samples,
    }
}

/// Samples in a list of series.
pub fn sample_count(series: &[TimeSeries]) -> usize {
    series.iter().map(|s| s.samples.len()).sum()
}

/// Cuts prepared series into requests of at most `max` samples each (a long series is cut
/// across requests, its pieces in time order), in the order given.
pub fn batches(series: Vec<TimeSeries>, max: usize) -> Vec<Vec<TimeSeries>> {
    let max = max.max(1);
    let mut out = Vec::new();
    let mut current: Vec<TimeSeries> = Vec::new();
    let mut room = max;
    for mut s in series {
        while !s.samples.is_empty() {
            if room == 0 {
                out.push(std::mem::take(&mut current));
                room = max;
            }
            let take = room.min(s.samples.len());
            let rest = s.samples.split_off(take);
            current.push(TimeSeries {
                labels: s.labels.clone(),
                samples: std::mem::replace(&mut s.samples, rest),
            });
            room -= take;
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Splits a request in two halves by samples (a series may be cut in two), for finding the
/// samples a receiver refuses. A request of one sample gives `None`.
pub fn halves(series: Vec<TimeSeries>) -> Option<(Vec<TimeSeries>, Vec<TimeSeries>)> {
    let total = sample_count(&series);
    if total < 2 {
        return None;
    }
    let mut parts = batches(series, total.div_ceil(2));
    let second = parts.pop()?;
    let first = parts.pop()?;
    Some((first, second))
}

/// The body of one request: protobuf, then snappy's block format (not its framed format).
pub fn body(
    timeseries: Vec<TimeSeries>,
    metadata: Vec<MetricMetadata>,
) -> (Vec<u8>, Vec<TimeSeries>) {
    let request = WriteRequest {
        timeseries,
        metadata,
    };
    let raw = request.encode_to_vec();
    let compressed = snap::raw::Encoder::new()
        .compress_vec(&raw)
        .unwrap_or_else(|_| unreachable!("snappy compresses any input below 4 GiB"));
    (compressed, request.timeseries)
}

/// Reads a body back: snappy's block format, then protobuf. For tests and receivers.
pub fn decode(body: &[u8]) -> Result<WriteRequest, String> {
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| format!("not snappy (block format): {e}"))?;
    WriteRequest::decode(raw.as_slice()).map_err(|e| format!("not a WriteRequest: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(t: i64, v: f64) -> Sample {
        Sample {
            timestamp: t,
            value: v,
        }
    }

    fn named(name: &str, n: usize) -> TimeSeries {
        series(
            [("__name__".to_owned(), name.to_owned())],
            (0..n).map(|i| s(i as i64, i as f64)).collect(),
        )
    }

    #[test]
    fn prepare_sorts_labels_drops_empty_values_and_orders_samples() {
        let raw = series(
            [
                ("job".to_owned(), "withings".to_owned()),
                ("instance".to_owned(), String::new()),
                ("__name__".to_owned(), "withings_weight_grams".to_owned()),
                ("account".to_owned(), "alice".to_owned()),
            ],
            vec![s(3, 3.0), s(1, 1.0), s(2, 2.0), s(1, 9.0)],
        );
        let ready = prepare(raw).unwrap();
        let names: Vec<&str> = ready.labels.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["__name__", "account", "job"]);
        let times: Vec<i64> = ready.samples.iter().map(|s| s.timestamp).collect();
        assert_eq!(times, [1, 2, 3]);
    }

    #[test]
    fn prepare_refuses_what_the_spec_forbids() {
        let with = |labels: &[(&str, &str)]| {
            prepare(series(
                labels
                    .iter()
                    .map(|(n, v)| ((*n).to_owned(), (*v).to_owned())),
                vec![s(1, 1.0)],
            ))
        };
        assert_eq!(with(&[("job", "x")]), Err(Invalid::NoName));
        assert_eq!(with(&[("__name__", "1abc")]), Err(Invalid::BadMetricName));
        assert_eq!(
            with(&[("__name__", "a"), ("bad-name", "x")]),
            Err(Invalid::BadLabelName)
        );
        assert_eq!(
            with(&[("__name__", "a"), ("x", "1"), ("x", "2")]),
            Err(Invalid::RepeatedLabel)
        );
        assert!(with(&[("__name__", "a:b_c"), ("_x1", "v")]).is_ok());
    }

    #[test]
    fn batches_are_bounded_and_keep_order() {
        let parts = batches(vec![named("a", 5), named("b", 4)], 4);
        let sizes: Vec<usize> = parts.iter().map(|p| sample_count(p)).collect();
        assert_eq!(sizes, [4, 4, 1]);
        let flat: Vec<(String, i64)> = parts
            .iter()
            .flatten()
            .flat_map(|ts| {
                ts.samples
                    .iter()
                    .map(|s| (ts.labels[0].value.clone(), s.timestamp))
            })
            .collect();
        let mut sorted = flat.clone();
        sorted.sort();
        assert_eq!(flat, sorted);
        assert_eq!(flat.len(), 9);
    }

    #[test]
    fn halves_split_by_samples() {
        let (a, b) = halves(vec![named("a", 3), named("b", 2)]).unwrap();
        assert_eq!((sample_count(&a), sample_count(&b)), (3, 2));
        assert!(halves(vec![named("a", 1)]).is_none());
    }

    #[test]
    fn a_body_decodes_to_what_was_encoded() {
        let series = vec![prepare(named("a", 100)).unwrap()];
        let (body, back) = body(series.clone(), Vec::new());
        assert_eq!(back, series);
        assert_eq!(decode(&body).unwrap().timeseries, series);
    }
}
