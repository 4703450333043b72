//! What remote write costs (issue 19); the figures go in BENCHMARKS.md. Run with
//! `cargo bench --bench remote_write` (needs `prometheus`, Debian package prometheus):
//!
//! 1. a synthetic 10-year history of one family at one sample a minute (5,256,000 samples)
//!    through the backfill's remote-write path (`backfill::remote`: the per-shard batches the
//!    spool feeds, the writer's requests) into a real Prometheus started here with the
//!    remote-write receiver and an out-of-order window: wall time, samples a second, peak RSS
//!    of this process (which holds nothing else yet), and the count Prometheus then holds;
//! 2. the encoder alone (labels sorted and checked, protobuf, snappy) on one core: samples a
//!    second and bytes a sample on the wire, for 2,000-sample requests of one series and of
//!    many short ones;
//! 3. the binary's `backfill` of a 100,000-group synthetic 10-year history against the
//!    simulator, to a file and by remote write into the same Prometheus: wall time, the
//!    child's peak RSS, and the requests to Withings of each (equal).

mod common;

use common::{Prometheus, run_bench};
use std::time::Instant;
use withings_exporter::backfill::openmetrics::{FamilyOutput, Sample, Window};
use withings_exporter::backfill::remote;
use withings_exporter::remote_write::encode::{self, series};
use withings_exporter::remote_write::proto;
use withings_exporter::remote_write::{Destination, Options, Writer};
use withings_sim::history::{self, HistorySpec};
use withings_sim::{Simulator, SimulatorOptions};

const TOKEN: &str = "bench-token";
const YEAR: i64 = 365 * 86_400;

fn writer(url: &str) -> Writer {
    let mut destination = Destination::new(url.parse().expect("url"));
    destination.options = Options::default();
    Writer::new(destination).expect("writer")
}

/// 1: one family, one series, a sample a minute for ten years, from a generator (as the
/// spool's merge gives them: sorted, one at a time) through `remote::Families`.
async fn ten_years_a_minute(prometheus: &Prometheus) {
    let now = withings_exporter::account::unix_now();
    let start = (now - 10 * YEAR) / 60 * 60;
    let count: u32 = 10 * 365 * 24 * 60;
    let writer = writer(&prometheus.url("/api/v1/write"));
    let window = Window {
        since: None,
        until: i64::MAX,
    };
    let before = common::memory_kib(std::process::id()).0;
    let started = Instant::now();
    let (families, receivers) = remote::channels(
        window,
        writer.options().max_samples_per_send,
        writer.options().max_in_flight,
    );
    let producer = tokio::task::spawn_blocking(move || {
        let mut families = families;
        let series = vec![vec![
            ("account", "bench".to_owned()),
            ("job", "withings".to_owned()),
            ("instance", "withings-exporter:19100".to_owned()),
        ]];
        let mut samples = (0..count).map(|i| {
            Ok(Sample {
                series: 0,
                timestamp: start + i64::from(i) * 60,
                grpid: 0,
                value: 60.0 + f64::from(i % 40),
            })
        });
        let report = families
            .family(
                "withings_heart_rate_bpm",
                "Heart rate.",
                &series,
                &mut samples,
            )
            .expect("family");
        families.finish().expect("finish");
        report
    });
    let sent = remote::send_all(&writer, receivers).await.expect("sent");
    let report = producer.await.expect("producer");
    let took = started.elapsed();
    let peak = common::memory_kib(std::process::id()).0;
    let held = prometheus
        .number(
            "count_over_time(withings_heart_rate_bpm{account=\"bench\"}[11y])",
            now,
        )
        .await;
    println!(
        "\n10 years at one sample a minute, one family by remote write into Prometheus 2.42:\n  {} samples in {:.1} s, {:.0} samples/s, {} requests, {} retries; peak RSS of this process {:.1} MiB (before: {:.1} MiB); Prometheus holds {held}",
        report.samples,
        took.as_secs_f64(),
        report.samples as f64 / took.as_secs_f64(),
        sent.requests,
        sent.retries,
        peak as f64 / 1024.0,
        before as f64 / 1024.0,
    );
}

/// 2: the encoder alone, on this thread.
fn encoder() {
    let labels = |i: usize| {
        vec![
            ("__name__".to_owned(), "withings_heart_rate_bpm".to_owned()),
            ("job".to_owned(), "withings".to_owned()),
            ("instance".to_owned(), "withings-exporter:19100".to_owned()),
            ("account".to_owned(), format!("account{}", i % 10)),
            (
                "device_id".to_owned(),
                "0123456789abcdef0123456789abcdef".to_owned(),
            ),
            ("device_model".to_owned(), "ScanWatch 2".to_owned()),
        ]
    };
    for (name, series_per_request) in [
        ("one series a request", 1),
        ("100 series of 20 samples", 100),
    ] {
        let per_series = 2_000 / series_per_request;
        let requests = 1_000;
        let base = 1_600_000_000_000_i64;
        let batches: Vec<Vec<proto::TimeSeries>> = (0..requests)
            .map(|r| {
                (0..series_per_request)
                    .map(|s| {
                        series(
                            labels(s),
                            (0..per_series)
                                .map(|i| proto::Sample {
                                    timestamp: base + ((r * per_series + i) as i64) * 60_000,
                                    value: 60.0 + ((r + i) % 40) as f64 + 0.5,
                                })
                                .collect(),
                        )
                    })
                    .collect()
            })
            .collect();
        let samples = requests * 2_000;
        let started = Instant::now();
        let mut bytes = 0usize;
        for batch in batches {
            let ready: Vec<_> = batch
                .into_iter()
                .map(|s| encode::prepare(s).expect("valid"))
                .collect();
            let (body, _) = encode::body(ready, Vec::new());
            bytes += body.len();
        }
        let took = started.elapsed();
        println!(
            "\nencoder, {name} (2,000 samples a request, {requests} requests): {:.2} M samples/s on one core, {:.2} bytes a sample on the wire",
            samples as f64 / took.as_secs_f64() / 1e6,
            bytes as f64 / samples as f64
        );
    }
}

/// 3: the same history to a file and by remote write.
async fn file_and_remote_write(prometheus: &Prometheus) {
    let now = withings_exporter::account::unix_now();
    let groups = history::generate(HistorySpec {
        groups: 100_000,
        from: now - 10 * YEAR,
        to: now - 3_600,
        grpid_base: 1,
        seed: 7,
    });
    let write_url = prometheus.url("/api/v1/write");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("history.om");
    for (name, target) in [
        (
            "to a file",
            vec!["--output".to_owned(), file.display().to_string()],
        ),
        (
            "by remote write",
            vec!["--remote-write".to_owned(), write_url.clone()],
        ),
    ] {
        // A simulator each: its request count is this run's alone, its budget fresh.
        let simulator = Simulator::start(SimulatorOptions {
            access_tokens: vec![TOKEN.into()],
            page_size: 500,
            ..SimulatorOptions::default()
        })
        .await
        .expect("simulator");
        simulator.set_groups(groups.clone()).expect("groups");
        let url = simulator.url().to_string();
        let (took, peak, stderr) = tokio::task::spawn_blocking(move || {
            let target: Vec<&str> = target.iter().map(String::as_str).collect();
            common::run_backfill(&url, TOKEN, &[], &target)
        })
        .await
        .expect("bench thread");
        let requests = simulator.request_count("/measure");
        println!(
            "\nbackfill of a 100,000-group 10-year history {name}: wall {:.1} s, peak RSS {:.1} MiB, {requests} requests to Withings\n  {}",
            took.as_secs_f64(),
            peak as f64 / 1024.0,
            stderr
                .lines()
                .last()
                .unwrap_or("")
                .chars()
                .take(300)
                .collect::<String>()
        );
    }
}

fn main() {
    withings_exporter::withings::install_crypto_provider();
    run_bench(
        async {
            let prometheus = Prometheus::start().await;
            ten_years_a_minute(&prometheus).await;
            encoder();
            file_and_remote_write(&prometheus).await;
        },
        "Prometheus 2.42 (Debian) on the same machine; the writer with its defaults (2,000 samples a request, 4 in flight); 2 shared cores",
    );
}
