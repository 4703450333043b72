//! What basic auth costs a request, and whether its timing tells users apart.
//!
//! `cargo bench --bench basic_auth` prints the median and the spread of each case at bcrypt
//! cost 10 (htpasswd's and exporter-toolkit's usual cost). Figures go to BENCHMARKS.md.

use base64::Engine;
use std::sync::Arc;
use std::time::{Duration, Instant};
use withings_exporter::http::web_config::{AuthOutcome, WebConfig};

const ROUNDS: usize = 21;
const COST: u32 = 10;

fn header(user: &str, password: &str) -> Vec<u8> {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
    .into_bytes()
}

fn summary(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    println!(
        "{name:<40} min {:>10.3?}  median {:>10.3?}  max {:>10.3?}  ({} rounds)",
        at(0.0),
        at(0.5),
        at(1.0),
        samples.len()
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("web.yml");
    let hash = bcrypt::hash("the-right-password", COST).expect("hash");
    std::fs::write(&path, format!("basic_auth_users:\n  prometheus: {hash}\n")).expect("write");
    let web = Arc::new(WebConfig::load(&path).expect("load"));
    let right = header("prometheus", "the-right-password");
    let wrong = header("prometheus", "a-wrong-password");
    let unknown = header("nobody", "the-right-password");

    runtime.block_on(async {
        let time = |h: &'static [u8], web: Arc<WebConfig>| async move {
            let users = web.current();
            let started = Instant::now();
            // A new client address each time: one address's failures are rate-limited,
            // which would time the 429 instead of bcrypt.
            static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let peer = std::net::Ipv4Addr::from(0x0a00_0000 + n).into();
            let allowed = users.users.check(Some(h), peer).await == AuthOutcome::Allowed;
            (started.elapsed(), allowed)
        };
        let right: &'static [u8] = Box::leak(right.into_boxed_slice());
        let wrong: &'static [u8] = Box::leak(wrong.into_boxed_slice());
        let unknown: &'static [u8] = Box::leak(unknown.into_boxed_slice());

        let mut first = Vec::new();
        for _ in 0..ROUNDS {
            // A reload starts an empty cache: the next right answer pays bcrypt.
            web.reload().expect("reload");
            let (took, allowed) = time(right, Arc::clone(&web)).await;
            assert!(allowed);
            first.push(took);
        }
        let mut cached = Vec::new();
        for _ in 0..ROUNDS * 10 {
            let (took, allowed) = time(right, Arc::clone(&web)).await;
            assert!(allowed);
            cached.push(took);
        }
        // Interleaved, so that drift in the machine's load hits both alike.
        let (mut wrong_times, mut unknown_times) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            let (took, allowed) = time(wrong, Arc::clone(&web)).await;
            assert!(!allowed);
            wrong_times.push(took);
            let (took, allowed) = time(unknown, Arc::clone(&web)).await;
            assert!(!allowed);
            unknown_times.push(took);
        }
        println!("bcrypt cost {COST}");
        summary("right password, first time (bcrypt)", first);
        summary("right password, again (cache)", cached);
        summary("wrong password, known user", wrong_times);
        summary("unknown user", unknown_times);
    });
}
