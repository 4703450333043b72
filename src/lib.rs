//! A Prometheus exporter for Withings health data.
//!
//! The folders say whose each part is. Each module imports only from its own floor or the
//! floors below (`tests/it/floors.rs` holds the list and keeps it true):
//! - [`config`]: what was asked for, from the `WITHINGS_*` variables and the flags; each
//!   component takes its own part of it.
//! - [`account`]: one person — their token source, sync cursor, latest values and shared fetch.
//! - [`app`]: the application — the set of accounts, what they share, and which of them may
//!   fetch when (the fair share and the notification schedule).
//! - [`collector`]: one file (or folder) per kind of Withings data, in one list
//!   ([`collector::ALL`]): how it asks Withings, reads, merges and shows its data.
//! - [`withings`]: the transport to the Withings API; every request passes its client, which
//!   enforces the application's request budget and the 601 pause, and its one pager and
//!   one retry after an expired token.
//! - [`render`]: metric families and the text exposition, for any collector.
//! - [`http`]: the routes, the web configuration, the health check, and onboarding from a
//!   phone (`http::onboard`: the invite pages and `/auth/callback`).
//! - [`invite`]: the invite links' store (hashes only) in the token directory.
//!
//! Data flows one way: probe → application → account → collector → client (budget) →
//! Withings → merge → render.

pub mod account;
pub mod answer;
pub mod app;
pub mod auth;
pub mod backfill;
pub mod clock;
pub mod collector;
pub mod config;
pub mod files;
pub mod http;
pub mod invite;
pub mod lock;
pub mod notify;
pub mod remote_write;
pub mod render;
pub mod secret;
pub mod telemetry;
pub mod text;
pub mod withings;
