//! The OpenMetrics text `promtool tsdb create-blocks-from openmetrics` reads: each family in
//! one contiguous block with its `# HELP`, `# TYPE` and `# UNIT` lines, every sample with a
//! timestamp in seconds, samples in increasing time within each series, and `# EOF`.

use std::collections::HashSet;
use std::io::Write;

/// Prometheus keeps the last hours in its head block, which backfilled blocks must not
/// overlap: the live exporter covers them. promtool refuses nothing here, but a block
/// reaching into the head is what the Prometheus documentation warns against.
pub const HEAD_SECONDS: i64 = 3 * 3600;

/// The units the exporter's metric names end with, longest first so that
/// `_meters_per_second` is not read as `_second`.
const UNITS: &[&str] = &[
    "ml_per_min_per_kg",
    "meters_per_second",
    "kcal_per_day",
    "celsius",
    "seconds",
    "meters",
    "grams",
    "ratio",
    "years",
    "mmhg",
    "bpm",
];

/// The `# UNIT` of a family: OpenMetrics wants it only when the name ends with `_UNIT`.
pub fn unit_of(name: &str) -> Option<&'static str> {
    UNITS.iter().copied().find(|unit| {
        name.len() > unit.len() + 1
            && name.ends_with(unit)
            && name.as_bytes()[name.len() - unit.len() - 1] == b'_'
    })
}

/// Escapes a label value or a HELP text: backslash, double quote and line feed.
pub fn escape(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains(['\\', '"', '\n']) {
        return text.into();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.into()
}

/// Which timestamps go into the file: from `since` (if any) up to `until`, both inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub since: Option<i64>,
    pub until: i64,
}

impl Window {
    /// Everything up to the start of Prometheus' head block as of `now` (unix seconds).
    pub fn before_head(now: i64, since: Option<i64>) -> Self {
        Self {
            since,
            until: now.saturating_sub(HEAD_SECONDS),
        }
    }

    pub fn contains(&self, timestamp: i64) -> bool {
        timestamp <= self.until && self.since.is_none_or(|s| timestamp >= s)
    }
}

/// One reading of one series of a family, before ordering.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Index into the family's series labels.
    pub series: u32,
    /// Unix seconds.
    pub timestamp: i64,
    /// Two readings of one series at the same second: the greatest grpid is the one the live
    /// exporter would have shown, so it is the one kept.
    pub grpid: i64,
    pub value: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("cannot write the OpenMetrics file: {0}")]
    Io(#[from] std::io::Error),
    /// A family written twice would be split in two blocks, which OpenMetrics forbids.
    #[error("metric family {0} was already written; OpenMetrics wants each family in one block")]
    FamilyRepeated(String),
    /// The remote-write side stopped taking samples (its error is the one reported).
    #[error("the remote-write sender stopped")]
    Closed,
    #[error("sample refers to series {series} of {family}, which has {count} series")]
    UnknownSeries {
        family: String,
        series: u32,
        count: usize,
    },
}

/// What one family block holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FamilyReport {
    pub name: String,
    pub samples: u64,
    /// Earliest and latest timestamp written; `None` when the block was left out (no
    /// sample in the window).
    pub range: Option<(i64, i64)>,
}

/// Writes families one after the other, then `# EOF`.
pub struct OpenMetricsWriter<W: Write> {
    out: W,
    window: Window,
    written: HashSet<String>,
}

impl<W: Write> OpenMetricsWriter<W> {
    pub fn new(out: W, window: Window) -> Self {
        Self {
            out,
            window,
            written: HashSet::new(),
        }
    }

    /// Writes one gauge family: `series[i]` are the labels of series `i`, `samples` its
    /// readings in any order. Samples outside the window are dropped; a family with none left
    /// is not written at all. Series are written in the order of their labels.
    pub fn gauge_family(
        &mut self,
        name: &str,
        help: &str,
        series: &[Vec<(&str, String)>],
        samples: &mut [Sample],
    ) -> Result<FamilyReport, WriteError> {
        if let Some(bad) = samples.iter().find(|s| s.series as usize >= series.len()) {
            return Err(WriteError::UnknownSeries {
                family: name.to_owned(),
                series: bad.series,
                count: series.len(),
            });
        }
        let rank = ranks(series);
        samples.sort_unstable_by_key(|s| sort_key(&rank, s));
        self.sorted_gauge_family(name, help, series, samples.iter().map(|s| Ok(*s)))
    }

    /// [`Self::gauge_family`] for samples that come already in [`sort_key`] order (of
    /// [`ranks`]), one at a time: memory does not grow with the family.
    pub fn sorted_gauge_family(
        &mut self,
        name: &str,
        help: &str,
        series: &[Vec<(&str, String)>],
        samples: impl Iterator<Item = Result<Sample, WriteError>>,
    ) -> Result<FamilyReport, WriteError> {
        if !self.written.insert(name.to_owned()) {
            return Err(WriteError::FamilyRepeated(name.to_owned()));
        }
        let mut report = FamilyReport {
            name: name.to_owned(),
            samples: 0,
            range: None,
        };
        let mut prefixes: Vec<Option<String>> = vec![None; series.len()];
        for sample in kept(self.window, name, series.len(), samples) {
            let sample = sample?;
            let labels = &series[sample.series as usize];
            if report.samples == 0 {
                writeln!(self.out, "# HELP {name} {}", escape(help))?;
                writeln!(self.out, "# TYPE {name} gauge")?;
                if let Some(unit) = unit_of(name) {
                    writeln!(self.out, "# UNIT {name} {unit}")?;
                }
            }
            let prefix =
                prefixes[sample.series as usize].get_or_insert_with(|| series_prefix(name, labels));
            writeln!(self.out, "{prefix} {} {}", sample.value, sample.timestamp)?;
            count(&mut report, sample.timestamp);
        }
        Ok(report)
    }

    /// Writes `# EOF` and gives the output back, flushed.
    pub fn finish(mut self) -> Result<W, WriteError> {
        writeln!(self.out, "# EOF")?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Where the families of a backfill go: the OpenMetrics file, or a remote-write receiver.
pub trait FamilyOutput {
    /// One family, its samples in [`sort_key`] order (of [`ranks`]).
    fn family(
        &mut self,
        name: &str,
        help: &str,
        series: &[Vec<(&str, String)>],
        samples: &mut dyn Iterator<Item = Result<Sample, WriteError>>,
    ) -> Result<FamilyReport, WriteError>;
}

impl<W: Write> FamilyOutput for OpenMetricsWriter<W> {
    fn family(
        &mut self,
        name: &str,
        help: &str,
        series: &[Vec<(&str, String)>],
        samples: &mut dyn Iterator<Item = Result<Sample, WriteError>>,
    ) -> Result<FamilyReport, WriteError> {
        self.sorted_gauge_family(name, help, series, samples)
    }
}

/// Of samples in [`sort_key`] order, those a family holds: in the window, the first of each
/// (series, second) (the greatest grpid), each of a known series.
pub fn kept(
    window: Window,
    family: &str,
    count: usize,
    samples: impl Iterator<Item = Result<Sample, WriteError>>,
) -> impl Iterator<Item = Result<Sample, WriteError>> {
    let mut previous: Option<(u32, i64)> = None;
    samples.filter_map(move |sample| {
        let sample = match sample {
            Ok(s) => s,
            Err(e) => return Some(Err(e)),
        };
        if sample.series as usize >= count {
            return Some(Err(WriteError::UnknownSeries {
                family: family.to_owned(),
                series: sample.series,
                count,
            }));
        }
        if !window.contains(sample.timestamp) || previous == Some((sample.series, sample.timestamp))
        {
            return None;
        }
        previous = Some((sample.series, sample.timestamp));
        Some(Ok(sample))
    })
}

/// Adds a written sample to a family's report.
pub fn count(report: &mut FamilyReport, timestamp: i64) {
    report.samples += 1;
    report.range = Some(match report.range {
        None => (timestamp, timestamp),
        Some((lo, hi)) => (lo.min(timestamp), hi.max(timestamp)),
    });
}

/// The rank of each series in label order, so that the file does not depend on the order
/// the series arrived in.
pub fn ranks(series: &[Vec<(&str, String)>]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..series.len()).collect();
    order.sort_by(|&a, &b| series[a].cmp(&series[b]));
    let mut rank = vec![0_usize; series.len()];
    for (r, &i) in order.iter().enumerate() {
        rank[i] = r;
    }
    rank
}

/// The order samples are written in: series (by [`ranks`]), time, then the greatest grpid
/// first (the one of a second that stands).
pub fn sort_key(rank: &[usize], s: &Sample) -> (usize, i64, std::cmp::Reverse<i64>) {
    (
        rank.get(s.series as usize).copied().unwrap_or(usize::MAX),
        s.timestamp,
        std::cmp::Reverse(s.grpid),
    )
}

fn series_prefix(name: &str, labels: &[(&str, String)]) -> String {
    if labels.is_empty() {
        return name.to_owned();
    }
    let pairs: Vec<String> = labels
        .iter()
        .map(|(n, v)| format!("{n}=\"{}\"", escape(v)))
        .collect();
    format!("{name}{{{}}}", pairs.join(","))
}
