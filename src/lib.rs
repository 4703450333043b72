//! A Prometheus exporter for Withings health measures.
//!
//! Data flows one way: a scrape ([`server`]) asks the [`exporter`] to fetch from Withings
//! ([`withings`]), merges what came into the latest values ([`state`]) by way of the measure
//! table ([`measures`]), and renders metric families ([`collector`]).

pub mod auth;
pub mod clock;
pub mod collector;
pub mod config;
pub mod exporter;
pub mod flight;
pub mod healthcheck;
pub mod measures;
pub mod ratelimit;
pub mod secret;
pub mod server;
pub mod simulator;
pub mod state;
pub mod telemetry;
pub mod text;
pub mod token_store;
pub mod tokens;
pub mod web_config;
pub mod withings;
