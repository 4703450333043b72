//! The HTTP side: routes, the exporter-toolkit web configuration, the health check.

pub mod connections;
pub mod healthcheck;
pub mod html;
pub mod landing;
pub mod onboard;
pub mod server;
pub mod signals;
pub mod web_config;
