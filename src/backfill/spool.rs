//! Where readings wait between paging and writing: one temporary file per metric family, so
//! that memory holds one family at a time (at most one sample per measure of that type in
//! the history) instead of the whole history.

use super::openmetrics::{FamilyReport, OpenMetricsWriter, Sample, WriteError};
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
    pub fn write_to<W: Write>(
        mut self,
        writer: &mut OpenMetricsWriter<W>,
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
            let mut samples = Vec::new();
            let mut reader = BufReader::new(File::open(&path)?);
            let mut record = [0_u8; RECORD];
            loop {
                match reader.read_exact(&mut record) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                    Err(e) => return Err(e.into()),
                }
                let int = |range: std::ops::Range<usize>| {
                    let mut bytes = [0_u8; 8];
                    bytes.copy_from_slice(&record[range]);
                    i64::from_le_bytes(bytes)
                };
                let series = u32::from_le_bytes([record[0], record[1], record[2], record[3]]);
                let (timestamp, grpid, version) = (int(4..12), int(12..20), int(20..28));
                let value = f64::from_bits(int(28..36) as u64);
                let account = account_of.get(series as usize).copied().unwrap_or(u32::MAX);
                // An older version of a group Withings corrected since: not a reading.
                if self
                    .newest
                    .get(&(account, grpid))
                    .is_some_and(|&v| v > version)
                {
                    continue;
                }
                samples.push(Sample {
                    series,
                    timestamp,
                    grpid,
                    value,
                });
            }
            let _ = std::fs::remove_file(&path);
            let report = writer.gauge_family(name, help, &labels, &mut samples)?;
            if report.samples > 0 {
                reports.push(report);
            }
        }
        Ok(reports)
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
