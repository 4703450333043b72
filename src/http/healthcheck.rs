//! `withings-exporter healthcheck`: asks a running exporter whether it is healthy. Container
//! images without curl use it as their HEALTHCHECK.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;
use url::Url;

#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error("{url} did not answer: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{url} answered HTTP {status}")]
    Unhealthy { url: String, status: u16 },
}

/// The health URL of an exporter listening on `listen`. An exporter listening on every
/// interface is reached on loopback.
pub fn health_url(listen: SocketAddr, https: bool) -> Url {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let scheme = if https { "https" } else { "http" };
    let address = SocketAddr::new(ip, listen.port());
    // A socket address always forms a valid URL.
    Url::parse(&format!("{scheme}://{address}/-/healthy")).expect("socket address URL")
}

/// GETs `url` and succeeds on a 2xx answer within `timeout`.
///
/// Certificates are not verified: the check talks to its own exporter, usually on loopback,
/// whose certificate may well be self-signed or issued for another name.
pub async fn check(url: &Url, timeout: Duration) -> Result<(), HealthError> {
    crate::withings::install_crypto_provider();
    let unreachable = |reason: String| HealthError::Unreachable {
        url: url.to_string(),
        reason,
    };
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .tls_danger_accept_invalid_certs(true)
        .build()
        .map_err(|e| unreachable(e.to_string()))?;
    let response = client
        .get(url.clone())
        .send()
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(HealthError::Unhealthy {
            url: url.to_string(),
            status: response.status().as_u16(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_addresses_become_loopback() {
        let url = |s: &str, tls| health_url(s.parse().unwrap(), tls).to_string();
        assert_eq!(
            url("0.0.0.0:19100", false),
            "http://127.0.0.1:19100/-/healthy"
        );
        assert_eq!(url("[::]:19100", true), "https://[::1]:19100/-/healthy");
        assert_eq!(
            url("10.1.2.3:8080", false),
            "http://10.1.2.3:8080/-/healthy"
        );
    }
}
