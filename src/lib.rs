//! A Prometheus exporter for Withings health data.
//!
//! The folders say whose each part is:
//! - [`account`]: one person — their token source, sync cursor, latest values and shared fetch.
//! - [`app`]: the application — the set of accounts and what they share.
//! - [`withings`]: the transport to the Withings API; every request passes its client, which
//!   enforces the application's request budget and the 601 pause, and its one pager and
//!   one retry after an expired token.
//! - [`collector`]: one file (or folder) per kind of Withings data, in one list
//!   ([`collector::ALL`]): how it asks Withings, reads, merges and shows its data.
//! - [`render`]: metric families and the text exposition, for any collector.
//! - [`http`]: the routes, the web configuration and the health check.
//!
//! Data flows one way: probe → account → collector → client (budget) → Withings → merge →
//! render.

pub mod account;
pub mod answer;
pub mod app;
pub mod auth;
pub mod backfill;
pub mod clock;
pub mod collector;
pub mod config;
pub mod http;
pub mod notify;
pub mod render;
pub mod secret;
pub mod telemetry;
pub mod text;
pub mod withings;
