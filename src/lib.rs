//! A Prometheus exporter for Withings health data.
//!
//! The folders say whose each part is (their floors, and the rule that a module imports
//! only from its floor or below, are in [`floors`]):
//! - [`config`]: what was asked for, from the `WITHINGS_*` variables and the flags; each
//!   component takes its own part of it.
//! - [`account`]: one person — their token source, sync cursor, latest values and shared fetch.
//! - [`app`]: the application — the set of accounts, what they share, and which of them may
//!   fetch when (the fair share and the notification schedule).
//! - [`withings`]: the Withings API; every request passes its client, which enforces the
//!   application's request budget and the 601 pause.
//! - [`render`]: the measure table and the metric families.
//! - [`http`]: the routes, the web configuration and the health check.
//!
//! Data flows one way: probe → account → budget → Withings → merge → render.

pub mod account;
pub mod app;
pub mod auth;
pub mod backfill;
pub mod clock;
pub mod collector;
pub mod config;
pub mod files;
pub mod floors;
pub mod http;
pub mod lock;
pub mod notify;
pub mod render;
pub mod secret;
pub mod simulator;
pub mod telemetry;
pub mod text;
pub mod withings;
