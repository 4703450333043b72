//! The backfill's families by remote write instead of into a file: the same samples (the
//! same window, the same choice among samples of one second) as [`super::openmetrics`]
//! writes, read from the spool on a blocking thread and handed to the [`Writer`] in batches.
//!
//! Series are spread over `max_in_flight` shards by series, each shard sending its batches one
//! after the other, as Prometheus' own queue does: the samples of one series reach the
//! receiver in time order across requests too, and memory holds a few batches per shard,
//! whatever the length of the history.

use super::openmetrics::{FamilyOutput, FamilyReport, Sample, Window, WriteError, count, kept};
use crate::remote_write::proto::{self, Label, MetricMetadata, TimeSeries};
use crate::remote_write::{Report, Writer};
use tokio::sync::mpsc;

/// One batch for a shard: series pieces, and the metadata of families that start in it.
pub type Batch = (Vec<TimeSeries>, Vec<MetricMetadata>);

/// Batches waiting per shard beyond the one being sent.
const QUEUED_PER_SHARD: usize = 2;

/// The spool's side: cuts families into per-shard batches of at most `max` samples.
pub struct Families {
    window: Window,
    max: usize,
    shards: Vec<Shard>,
}

struct Shard {
    series: Vec<TimeSeries>,
    metadata: Vec<MetricMetadata>,
    samples: usize,
    tx: mpsc::Sender<Batch>,
}

impl Shard {
    fn flush(&mut self) -> Result<(), WriteError> {
        if self.series.is_empty() && self.metadata.is_empty() {
            return Ok(());
        }
        let batch = (
            std::mem::take(&mut self.series),
            std::mem::take(&mut self.metadata),
        );
        self.samples = 0;
        self.tx.blocking_send(batch).map_err(|_| WriteError::Closed)
    }
}

/// The channels of a run: [`Families`] for the spool's thread, one receiver per shard for
/// [`send_all`].
pub fn channels(
    window: Window,
    max_samples: usize,
    shards: usize,
) -> (Families, Vec<mpsc::Receiver<Batch>>) {
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    for _ in 0..shards.max(1) {
        let (tx, rx) = mpsc::channel(QUEUED_PER_SHARD);
        senders.push(Shard {
            series: Vec::new(),
            metadata: Vec::new(),
            samples: 0,
            tx,
        });
        receivers.push(rx);
    }
    (
        Families {
            window,
            max: max_samples.max(1),
            shards: senders,
        },
        receivers,
    )
}

impl Families {
    /// Sends what is left and closes the channels.
    pub fn finish(mut self) -> Result<(), WriteError> {
        for shard in &mut self.shards {
            shard.flush()?;
        }
        Ok(())
    }
}

impl FamilyOutput for Families {
    fn family(
        &mut self,
        name: &str,
        help: &str,
        series: &[Vec<(&str, String)>],
        samples: &mut dyn Iterator<Item = Result<Sample, WriteError>>,
    ) -> Result<FamilyReport, WriteError> {
        let mut report = FamilyReport {
            name: name.to_owned(),
            samples: 0,
            range: None,
        };
        let shards = self.shards.len();
        let mut current: Option<u32> = None;
        for sample in kept(self.window, name, series.len(), samples) {
            let sample = sample?;
            // A series' shard: series of one family spread over the shards in turn.
            let shard = &mut self.shards[sample.series as usize % shards];
            if report.samples == 0 {
                shard.metadata.push(MetricMetadata {
                    r#type: proto::GAUGE,
                    metric_family_name: name.to_owned(),
                    help: help.to_owned(),
                    unit: super::openmetrics::unit_of(name)
                        .unwrap_or_default()
                        .to_owned(),
                });
            }
            let continues = current == Some(sample.series) && !shard.series.is_empty();
            if !continues {
                let mut labels = Vec::with_capacity(series[sample.series as usize].len() + 1);
                labels.push(Label {
                    name: "__name__".to_owned(),
                    value: name.to_owned(),
                });
                for (n, v) in &series[sample.series as usize] {
                    labels.push(Label {
                        name: (*n).to_owned(),
                        value: v.clone(),
                    });
                }
                shard.series.push(TimeSeries {
                    labels,
                    samples: Vec::new(),
                });
                current = Some(sample.series);
            }
            if let Some(last) = shard.series.last_mut() {
                last.samples.push(proto::Sample {
                    value: sample.value,
                    timestamp: sample.timestamp.saturating_mul(1000),
                });
            }
            shard.samples += 1;
            count(&mut report, sample.timestamp);
            if shard.samples >= self.max {
                shard.flush()?;
            }
        }
        Ok(report)
    }
}

/// Sends every shard's batches, each shard in order, the shards side by side; the first
/// error stops the others.
pub async fn send_all(
    writer: &Writer,
    receivers: Vec<mpsc::Receiver<Batch>>,
) -> Result<Report, crate::remote_write::WriteError> {
    let mut tasks = tokio::task::JoinSet::new();
    for mut rx in receivers {
        let writer = writer.clone();
        tasks.spawn(async move {
            let mut total = Report::default();
            while let Some((series, metadata)) = rx.recv().await {
                total.add(&writer.send(series, metadata).await?);
            }
            Ok::<_, crate::remote_write::WriteError>(total)
        });
    }
    let mut total = Report::default();
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(Ok(report)) => total.add(&report),
            Ok(Err(e)) => {
                // Dropping the set aborts the other shards; their receivers close, and the
                // spool's thread stops at its next batch.
                return Err(e);
            }
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => {}
        }
    }
    Ok(total)
}
