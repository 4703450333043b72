//! Where readings wait between paging and writing: one temporary file per metric family, so
//! that memory holds one family at a time (at most one sample per measure of that type in
//! the history) instead of the whole history.

#[cfg(test)]
use super::openmetrics::OpenMetricsWriter;
use super::openmetrics::{FamilyOutput, FamilyReport, Sample, WriteError};
use crate::collector::{Sink, Version};
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// How a spool directory's name starts: then the pid of the backfill that made it, `-`, and
/// a random part. A directory of a process that is gone is stale.
pub const SPOOL_PREFIX: &str = "withings-backfill-spool-";

/// Removes the spool directories in `parent` of backfills that are no longer running (a
/// SIGKILL, a power loss): they hold health data. Those of other users, or of a process
/// still running, are left alone.
fn remove_stale(parent: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(SPOOL_PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(meta) = std::fs::symlink_metadata(entry.path()) else {
            continue;
        };
        if !meta.is_dir() || meta.uid() != me {
            continue;
        }
        let alive = pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists();
        if !alive {
            match std::fs::remove_dir_all(entry.path()) {
                Ok(()) => tracing::info!(
                    dir = %entry.path().display(),
                    "removed the spool of a backfill that did not finish"
                ),
                Err(e) => tracing::warn!(
                    dir = %entry.path().display(),
                    error = %e,
                    "cannot remove the spool of a backfill that did not finish; remove it by hand (it holds health data)"
                ),
            }
        }
    }
}

/// series u32, timestamp i64, grpid i64, version i64, value f64.
const RECORD: usize = 4 + 8 + 8 + 8 + 8;

type Labels = Vec<(&'static str, String)>;

struct FamilySpool {
    name: &'static str,
    help: &'static str,
    series: HashMap<Labels, u32>,
    labels: Vec<Labels>,
    /// The account (index into the run's targets) of each series: versions are per account.
    account_of: Vec<u32>,
    file: BufWriter<File>,
    path: PathBuf,
}

impl FamilySpool {
    fn record(
        &mut self,
        account: u32,
        labels: Labels,
        timestamp: i64,
        grpid: i64,
        version: i64,
        value: f64,
    ) -> std::io::Result<()> {
        let next = self.labels.len() as u32;
        let series = *self.series.entry(labels).or_insert_with_key(|labels| {
            self.labels.push(labels.clone());
            self.account_of.push(account);
            next
        });
        let mut record = [0_u8; RECORD];
        record[0..4].copy_from_slice(&series.to_le_bytes());
        record[4..12].copy_from_slice(&timestamp.to_le_bytes());
        record[12..20].copy_from_slice(&grpid.to_le_bytes());
        record[20..28].copy_from_slice(&version.to_le_bytes());
        record[28..36].copy_from_slice(&value.to_bits().to_le_bytes());
        self.file.write_all(&record)
    }
}

/// The spooled readings of a run, and the newest version seen of every group.
pub struct Spool {
    dir: tempfile::TempDir,
    families: Vec<FamilySpool>,
    index: HashMap<&'static str, usize>,
    /// (account, grpid) → newest `modified`: a group's older versions are left out at the end,
    /// wherever in the paging they came. 16 bytes a group, the only per-group memory kept.
    newest: HashMap<(u32, i64), i64>,
}

impl Spool {
    /// A spool in a new directory of the system's temporary directory, owner-only (0700,
    /// its files 0600: they hold health data) from creation, and removed when the spool is
    /// dropped. Spools that a killed backfill left behind are removed first.
    pub fn new() -> std::io::Result<Self> {
        Self::new_in(&std::env::temp_dir())
    }

    /// [`Self::new`] in `parent`.
    pub fn new_in(parent: &Path) -> std::io::Result<Self> {
        remove_stale(parent);
        Ok(Self {
            dir: tempfile::Builder::new()
                .prefix(&format!("{SPOOL_PREFIX}{}-", std::process::id()))
                .permissions(std::fs::Permissions::from_mode(0o700))
                .tempdir_in(parent)?,
            families: Vec::new(),
            index: HashMap::new(),
            newest: HashMap::new(),
        })
    }

    /// Records that `account` has a version `version` of group `grpid`, whether or not that
    /// version gives any reading (an inconclusive correction still retires the old values).
    pub fn saw_version(&mut self, account: u32, grpid: i64, version: i64) {
        self.newest
            .entry((account, grpid))
            .and_modify(|v| *v = (*v).max(version))
            .or_insert(version);
    }

    fn family(&mut self, name: &'static str, help: &'static str) -> std::io::Result<usize> {
        if let Some(&i) = self.index.get(name) {
            return Ok(i);
        }
        let path = self.dir.path().join(format!("{name}.spool"));
        let file = BufWriter::new(
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)?,
        );
        self.families.push(FamilySpool {
            name,
            help,
            series: HashMap::new(),
            labels: Vec::new(),
            account_of: Vec::new(),
            file,
            path,
        });
        let i = self.families.len() - 1;
        self.index.insert(name, i);
        Ok(i)
    }

    /// One sample of a collector's history, with the labels its live family gives it
    /// (`labels`), then `account="NAME"` when `account_label` is given (a directory of
    /// accounts) and the labels Prometheus' scrape attaches (`job`, `instance`) as given in
    /// `target`. Of a group's versions only the newest is written; of two samples of a
    /// series at one second with no versions, the greater `modified` (the live state keeps
    /// the newer row).
    #[allow(clippy::too_many_arguments)]
    pub fn sample(
        &mut self,
        account: u32,
        account_label: Option<&str>,
        target: &[(&'static str, String)],
        (name, help): (&'static str, &'static str),
        labels: &[(&'static str, &str)],
        timestamp: i64,
        version: Version,
        value: f64,
    ) -> std::io::Result<()> {
        let mut all: Labels = labels.iter().map(|(n, v)| (*n, (*v).to_owned())).collect();
        if let Some(account) = account_label {
            all.push(("account", account.to_owned()));
        }
        all.extend(target.iter().cloned());
        let i = self.family(name, help)?;
        let (grpid, version) = match version {
            Version::Group { grpid, modified } => (grpid, modified),
            // `i64::MAX` as the version: never older than a newest version of `saw_version`.
            Version::Row { modified } => (modified.unwrap_or(0), i64::MAX),
        };
        self.families[i].record(account, all, timestamp, grpid, version, value)
    }

    /// Writes every family, sorted by name as the live exposition is, reading one family's
    /// spool back at a time.
    pub fn write_to(
        mut self,
        writer: &mut dyn FamilyOutput,
    ) -> Result<Vec<FamilyReport>, WriteError> {
        self.families.sort_by(|a, b| a.name.cmp(b.name));
        let mut reports = Vec::new();
        for family in self.families {
            let FamilySpool {
                name,
                help,
                labels,
                account_of,
                file,
                path,
                ..
            } = family;
            drop(file.into_inner().map_err(|e| e.into_error())?);
            let rank = super::openmetrics::ranks(&labels);
            let runs = sorted_runs(&self.newest, &path, &account_of, &rank)?;
            let _ = std::fs::remove_file(&path);
            let report = match runs {
                Runs::Memory(samples) => {
                    writer.family(name, help, &labels, &mut samples.into_iter().map(Ok))?
                }
                Runs::Files(paths) => {
                    let mut merged = Merge::open(&paths, &rank)?;
                    let report = writer.family(name, help, &labels, &mut merged)?;
                    for path in &paths {
                        let _ = std::fs::remove_file(path);
                    }
                    report
                }
            };
            if report.samples > 0 {
                reports.push(report);
            }
        }
        Ok(reports)
    }
}

/// How many samples of a family are sorted in memory at once: 32 bytes each, so about
/// 1 MiB, whatever the length of the history. A longer family is sorted in runs of this
/// many, written back to the spool and merged while writing.
const SORT_RUN: usize = 32_768;

/// A family's samples, newest versions only, in the order they are written.
enum Runs {
    /// Fit in one run: sorted in memory.
    Memory(Vec<Sample>),
    /// Sorted runs in files, to be merged.
    Files(Vec<PathBuf>),
}

fn encode(sample: &Sample) -> [u8; RECORD] {
    let mut record = [0_u8; RECORD];
    record[0..4].copy_from_slice(&sample.series.to_le_bytes());
    record[4..12].copy_from_slice(&sample.timestamp.to_le_bytes());
    record[12..20].copy_from_slice(&sample.grpid.to_le_bytes());
    record[28..36].copy_from_slice(&sample.value.to_bits().to_le_bytes());
    record
}

/// One record: the sample and its version.
fn decode(record: &[u8; RECORD]) -> (Sample, i64) {
    let int = |range: std::ops::Range<usize>| {
        let mut bytes = [0_u8; 8];
        bytes.copy_from_slice(&record[range]);
        i64::from_le_bytes(bytes)
    };
    let series = u32::from_le_bytes([record[0], record[1], record[2], record[3]]);
    let sample = Sample {
        series,
        timestamp: int(4..12),
        grpid: int(12..20),
        value: f64::from_bits(int(28..36) as u64),
    };
    (sample, int(20..28))
}

/// The next record of `reader`, or `None` at its end.
fn next_record(reader: &mut impl Read) -> std::io::Result<Option<[u8; RECORD]>> {
    let mut record = [0_u8; RECORD];
    match reader.read_exact(&mut record) {
        Ok(()) => Ok(Some(record)),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(e),
    }
}

fn owner_only_file(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

/// Reads a family's spool back in runs of [`SORT_RUN`], leaving out older versions of
/// groups (`newest`), each run sorted; one run stays in memory, more go to files.
fn sorted_runs(
    newest: &HashMap<(u32, i64), i64>,
    path: &Path,
    account_of: &[u32],
    rank: &[usize],
) -> Result<Runs, WriteError> {
    let mut reader = BufReader::new(File::open(path)?);
    let mut files = Vec::new();
    let mut run = Vec::with_capacity(SORT_RUN.min(1024));
    loop {
        let record = next_record(&mut reader)?;
        if let Some(record) = &record {
            let (sample, version) = decode(record);
            let account = account_of
                .get(sample.series as usize)
                .copied()
                .unwrap_or(u32::MAX);
            // An older version of a group Withings corrected since: not a reading.
            if newest
                .get(&(account, sample.grpid))
                .is_none_or(|&v| v <= version)
            {
                run.push(sample);
            }
        }
        let full = run.len() >= SORT_RUN;
        if record.is_none() && files.is_empty() {
            run.sort_unstable_by_key(|s| super::openmetrics::sort_key(rank, s));
            return Ok(Runs::Memory(run));
        }
        if full || (record.is_none() && !run.is_empty()) {
            run.sort_unstable_by_key(|s| super::openmetrics::sort_key(rank, s));
            let run_path = path.with_extension(format!("run{}", files.len()));
            let mut out = BufWriter::new(owner_only_file(&run_path)?);
            for sample in run.drain(..) {
                out.write_all(&encode(&sample))?;
            }
            out.flush()?;
            files.push(run_path);
        }
        if record.is_none() {
            return Ok(Runs::Files(files));
        }
    }
}

/// The sorted runs of a family merged into one sorted stream, one record of each in memory.
struct Merge<'r> {
    readers: Vec<BufReader<File>>,
    heads: std::collections::BinaryHeap<std::cmp::Reverse<Head>>,
    rank: &'r [usize],
}

/// The next sample of run `run`, ordered by its sort key.
struct Head {
    key: (usize, i64, std::cmp::Reverse<i64>),
    run: usize,
    sample: Sample,
}

impl PartialEq for Head {
    fn eq(&self, other: &Self) -> bool {
        (self.key, self.run) == (other.key, other.run)
    }
}
impl Eq for Head {}
impl PartialOrd for Head {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Head {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.key, self.run).cmp(&(other.key, other.run))
    }
}

impl<'r> Merge<'r> {
    fn open(paths: &[PathBuf], rank: &'r [usize]) -> std::io::Result<Self> {
        let mut merge = Self {
            readers: Vec::with_capacity(paths.len()),
            heads: std::collections::BinaryHeap::new(),
            rank,
        };
        for (run, path) in paths.iter().enumerate() {
            merge.readers.push(BufReader::new(File::open(path)?));
            merge.advance(run)?;
        }
        Ok(merge)
    }

    fn advance(&mut self, run: usize) -> std::io::Result<()> {
        if let Some(record) = next_record(&mut self.readers[run])? {
            let (sample, _) = decode(&record);
            self.heads.push(std::cmp::Reverse(Head {
                key: super::openmetrics::sort_key(self.rank, &sample),
                run,
                sample,
            }));
        }
        Ok(())
    }
}

impl Iterator for Merge<'_> {
    type Item = Result<Sample, WriteError>;

    fn next(&mut self) -> Option<Self::Item> {
        let std::cmp::Reverse(head) = self.heads.pop()?;
        if let Err(e) = self.advance(head.run) {
            return Some(Err(e.into()));
        }
        Some(Ok(head.sample))
    }
}

/// The spool as one account's history sees it.
pub struct ForAccount<'a> {
    pub spool: &'a mut Spool,
    /// The account's index among the run's targets: versions are per account.
    pub account: u32,
    pub label: Option<&'a str>,
    pub target: &'a [(&'static str, String)],
}

impl Sink for ForAccount<'_> {
    fn saw_version(&mut self, grpid: i64, modified: i64) {
        self.spool.saw_version(self.account, grpid, modified);
    }

    fn sample(
        &mut self,
        family: (&'static str, &'static str),
        labels: &[(&'static str, &str)],
        at: i64,
        version: Version,
        value: f64,
    ) -> std::io::Result<()> {
        self.spool.sample(
            self.account,
            self.label,
            self.target,
            family,
            labels,
            at,
            version,
            value,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backfill::openmetrics::Window;

    /// A family longer than one sorting run is written exactly as one sorted in memory.
    #[test]
    fn a_family_longer_than_a_run_is_merged_into_the_same_text() {
        let parent = tempfile::tempdir().unwrap();
        let mut spool = Spool::new_in(parent.path()).unwrap();
        let family = ("withings_weight_grams", "Weight.");
        let window = Window::before_head(4_000_000_000, None);
        let mut expected = Vec::new();
        let mut series: Vec<Vec<(&str, String)>> = Vec::new();
        let count = SORT_RUN * 2 + 1_000;
        for i in 0..count {
            // Scrambled times, two devices, and pairs of samples at one second.
            let t = 1_000_000 + ((i * 7_919) % count) as i64 / 2;
            let device = if i % 3 == 0 { "b" } else { "a" };
            let grpid = i as i64;
            spool
                .sample(
                    0,
                    None,
                    &[],
                    family,
                    &[("device_id", device)],
                    t,
                    Version::Group { grpid, modified: 1 },
                    i as f64,
                )
                .unwrap();
            let labels = vec![("device_id", device.to_owned())];
            let index = match series.iter().position(|l| *l == labels) {
                Some(i) => i,
                None => {
                    series.push(labels);
                    series.len() - 1
                }
            };
            expected.push(Sample {
                series: index as u32,
                timestamp: t,
                grpid,
                value: i as f64,
            });
        }
        let mut streamed = OpenMetricsWriter::new(Vec::new(), window);
        let reports = spool.write_to(&mut streamed).unwrap();
        let streamed = String::from_utf8(streamed.finish().unwrap()).unwrap();
        let mut in_memory = OpenMetricsWriter::new(Vec::new(), window);
        in_memory
            .gauge_family(family.0, family.1, &series, &mut expected)
            .unwrap();
        let in_memory = String::from_utf8(in_memory.finish().unwrap()).unwrap();
        assert_eq!(reports.len(), 1);
        assert!(reports[0].samples > SORT_RUN as u64, "{reports:?}");
        assert_eq!(streamed, in_memory);
        // The spool, runs included, is gone.
        assert_eq!(std::fs::read_dir(parent.path()).unwrap().count(), 0);
    }
}
