//! The integration tests: one binary, one module per capability, so that the exporter's
//! library is linked once rather than once per file. `cargo test --test it NAME` runs the
//! tests whose path contains NAME (a module such as `notify::` or a test's own name).
//!
//! Every test here shares the process with the others: none may set a global tracing
//! subscriber or touch the process environment (log captures use a thread's default
//! subscriber; children get their environment through `Command::env`).

mod common;

mod accounts;
mod alert_rules;
mod auth;
mod backfill;
mod browser;
mod budget;
mod cli;
mod collectors;
mod dashboard_day;
mod deploy;
mod docs;
mod exporter;
mod exposition;
mod faults;
mod floors;
mod fuzz_regressions;
mod golden;
mod hardening_http;
mod hardening_upstream;
mod kubernetes;
mod measures;
mod notify;
mod onboard;
mod remote_write;
mod remote_write_live;
mod stack;
mod sync;
mod token_crash;
mod tokens;
mod web;
