//! Prometheus remote write 1.0: series with their own timestamps, written straight into a
//! store (Prometheus with `--web.enable-remote-write-receiver`, Mimir, Thanos Receive,
//! Cortex, VictoriaMetrics...). [`Writer`] is the client; [`settings`] reads the
//! configuration (a URL, or a file in the shape of one Prometheus `remote_write` entry).

pub mod encode;
pub mod proto;
pub mod settings;
mod writer;

pub use writer::{
    Auth, DROPPED_METRIC, Destination, LAST_SUCCESS_METRIC, MAX_RETRY_AFTER, Options,
    REQUESTS_METRIC, RETRIES_METRIC, Report, SAMPLES_METRIC, WriteError, Writer, public_url,
    retry_after,
};
