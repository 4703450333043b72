//! The progress line on a terminal: pages fetched, groups, days and nights read, and the
//! time left, estimated from the dated windows done so far. Nothing at all when stderr is not a terminal.

use std::fmt::Display;
use std::io::Write;
use std::time::{Duration, Instant};

/// Redraws at most this often: a fast simulator answers hundreds of pages a second.
const REDRAW: Duration = Duration::from_millis(100);

pub struct Progress {
    enabled: bool,
    started: Instant,
    drawn: Option<Instant>,
    windows_total: usize,
    windows_done: usize,
}

impl Progress {
    pub fn new(enabled: bool, windows_total: usize) -> Self {
        Self {
            enabled,
            started: Instant::now(),
            drawn: None,
            windows_total,
            windows_done: 0,
        }
    }

    pub fn page(&mut self, account: &str, counts: &impl Display) {
        self.draw(account, counts, false);
    }

    pub fn window_done(&mut self, account: &str, counts: &impl Display) {
        self.windows_done += 1;
        self.draw(account, counts, true);
    }

    fn draw(&mut self, account: &str, counts: &impl Display, force: bool) {
        if !self.enabled || (!force && self.drawn.is_some_and(|t| t.elapsed() < REDRAW)) {
            return;
        }
        self.drawn = Some(Instant::now());
        let left = eta(
            self.started.elapsed(),
            self.windows_done,
            self.windows_total,
        )
        .map_or_else(
            || "estimating".to_owned(),
            |d| format!("~{}s left", d.as_secs()),
        );
        let width = 30;
        let filled = (self.windows_done * width)
            .checked_div(self.windows_total)
            .unwrap_or(width);
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r\x1b[2K[{}{}] {account}: {counts}, {left}",
            "#".repeat(filled),
            "-".repeat(width - filled.min(width)),
        );
        let _ = err.flush();
    }

    pub fn finish(&mut self) {
        if self.enabled && self.drawn.is_some() {
            let _ = writeln!(std::io::stderr());
        }
    }
}

/// Time left if the windows still to read take as long as those read so far.
pub fn eta(elapsed: Duration, done: usize, total: usize) -> Option<Duration> {
    if done == 0 {
        return None;
    }
    let per = elapsed.as_secs_f64() / done as f64;
    Some(Duration::from_secs_f64(
        per * total.saturating_sub(done) as f64,
    ))
}
