//! `tls_server_config`: certificates, client authentication and protocol versions, built
//! into a rustls server configuration.

use super::WebConfigError;
use super::file::{RawTls, read, resolve};

use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use std::path::Path;
use std::sync::Arc;

/// What exporter-toolkit's `client_auth_type` asks of a client, named as in Go's `crypto/tls`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    NoClientCert,
    /// Asks for a certificate, accepts any or none; the chain is not checked.
    RequestClientCert,
    /// Requires a certificate; the chain is not checked.
    RequireAnyClientCert,
    /// Accepts no certificate; a certificate given must chain to `client_ca_file`.
    VerifyClientCertIfGiven,
    /// Requires a certificate chaining to `client_ca_file`: mutual TLS.
    RequireAndVerifyClientCert,
}

impl ClientAuth {
    const NAMES: &'static str = "NoClientCert, RequestClientCert, RequireAnyClientCert, VerifyClientCertIfGiven or RequireAndVerifyClientCert";

    pub(super) fn parse(value: &str) -> Option<Self> {
        Some(match value {
            "" | "NoClientCert" => Self::NoClientCert,
            "RequestClientCert" => Self::RequestClientCert,
            "RequireAnyClientCert" => Self::RequireAnyClientCert,
            "VerifyClientCertIfGiven" => Self::VerifyClientCertIfGiven,
            "RequireAndVerifyClientCert" => Self::RequireAndVerifyClientCert,
            _ => return None,
        })
    }

    fn verifies(self) -> bool {
        matches!(
            self,
            Self::VerifyClientCertIfGiven | Self::RequireAndVerifyClientCert
        )
    }
}

type TlsParts = (Option<Arc<ServerConfig>>, ClientAuth);

pub(super) fn build_tls(path: &Path, tls: &RawTls) -> Result<TlsParts, WebConfigError> {
    let err = |key: &str, message: String| WebConfigError {
        file: path.to_owned(),
        key: Some(format!("tls_server_config.{key}")),
        message,
    };
    if let Some((key, message)) = tls.unsupported() {
        return Err(err(key, message.into()));
    }
    let cert_file = match tls.cert_file.as_deref() {
        Some(p) if !p.is_empty() => resolve(path, p),
        _ => {
            return Err(err(
                "cert_file",
                "missing; TLS needs the server certificate (PEM) in cert_file".into(),
            ));
        }
    };
    let key_file = match tls.key_file.as_deref() {
        Some(p) if !p.is_empty() => resolve(path, p),
        _ => {
            return Err(err(
                "key_file",
                "missing; TLS needs the server's private key (PEM) in key_file".into(),
            ));
        }
    };
    let client_auth_name = tls.client_auth_type.as_deref().unwrap_or("");
    let client_auth = ClientAuth::parse(client_auth_name).ok_or_else(|| {
        err(
            "client_auth_type",
            format!(
                "{client_auth_name:?} is not a client auth type; use {}",
                ClientAuth::NAMES
            ),
        )
    })?;
    let versions = protocol_versions(tls).map_err(|(key, message)| err(key, message))?;

    let certs_pem = read(path, &cert_file, Some("tls_server_config.cert_file"))?;
    let certs = CertificateDer::pem_slice_iter(&certs_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            err(
                "cert_file",
                format!("{} is not a PEM certificate ({e})", cert_file.display()),
            )
        })?;
    if certs.is_empty() {
        return Err(err(
            "cert_file",
            format!(
                "{} holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)",
                cert_file.display()
            ),
        ));
    }
    let key_pem = read(path, &key_file, Some("tls_server_config.key_file"))?;
    // The key's own parse error could quote key material; name the file only.
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| {
        err(
            "key_file",
            format!(
                "{} holds no usable PEM private key (PKCS#8, PKCS#1 or SEC1)",
                key_file.display()
            ),
        )
    })?;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier: Arc<dyn ClientCertVerifier> = match (client_auth, tls.client_ca_file.as_deref()) {
        (ClientAuth::NoClientCert, Some(ca)) if !ca.is_empty() => {
            return Err(err(
                "client_ca_file",
                "set without a client_auth_type that uses it; set client_auth_type to RequireAndVerifyClientCert (or VerifyClientCertIfGiven), or remove client_ca_file".into(),
            ));
        }
        (ClientAuth::NoClientCert, _) => WebPkiClientVerifier::no_client_auth(),
        (ClientAuth::RequestClientCert | ClientAuth::RequireAnyClientCert, _) => {
            Arc::new(UncheckedClientCert {
                mandatory: client_auth == ClientAuth::RequireAnyClientCert,
                algorithms: provider.signature_verification_algorithms,
            })
        }
        (_, None) | (_, Some("")) => {
            return Err(err(
                "client_ca_file",
                format!(
                    "missing; client_auth_type {client_auth_name} checks client certificates against the CA certificates (PEM) in client_ca_file"
                ),
            ));
        }
        (_, Some(ca)) => {
            debug_assert!(client_auth.verifies());
            let ca_file = resolve(path, ca);
            let pem = read(path, &ca_file, Some("tls_server_config.client_ca_file"))?;
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let added = cert
                    .map_err(|e| e.to_string())
                    .and_then(|c| roots.add(c).map_err(|e| e.to_string()));
                if let Err(e) = added {
                    return Err(err(
                        "client_ca_file",
                        format!("{} is not a PEM CA certificate ({e})", ca_file.display()),
                    ));
                }
            }
            if roots.is_empty() {
                return Err(err(
                    "client_ca_file",
                    format!("{} holds no PEM certificate", ca_file.display()),
                ));
            }
            let builder =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider));
            let builder = if client_auth == ClientAuth::VerifyClientCertIfGiven {
                builder.allow_unauthenticated()
            } else {
                builder
            };
            builder.build().map_err(|e| {
                err(
                    "client_ca_file",
                    format!("{} cannot verify clients ({e})", ca_file.display()),
                )
            })?
        }
    };

    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .map_err(|e| err("min_version", e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| {
            err(
                "key_file",
                format!(
                    "{} does not go with {} ({e}); give the key of that certificate",
                    key_file.display(),
                    cert_file.display()
                ),
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((Some(Arc::new(config)), client_auth))
}

type VersionError = (&'static str, String);

fn protocol_versions(
    tls: &RawTls,
) -> Result<Vec<&'static rustls::SupportedProtocolVersion>, VersionError> {
    fn rank(key: &'static str, value: Option<&str>, default: u8) -> Result<u8, VersionError> {
        match value {
            None | Some("") => Ok(default),
            Some("TLS12") => Ok(12),
            Some("TLS13") => Ok(13),
            Some(v @ ("TLS10" | "TLS11")) => Err((
                key,
                format!("{v} is obsolete and not offered by withings-exporter; use TLS12 or TLS13"),
            )),
            Some(v) => Err((
                key,
                format!("{v:?} is not a TLS version; use TLS12 or TLS13"),
            )),
        }
    }
    let min = rank("min_version", tls.min_version.as_deref(), 12)?;
    let max = rank("max_version", tls.max_version.as_deref(), 13)?;
    if min > max {
        return Err((
            "max_version",
            "is lower than min_version; no TLS version is left".into(),
        ));
    }
    Ok(
        [(12, &rustls::version::TLS12), (13, &rustls::version::TLS13)]
            .into_iter()
            .filter(|(v, _)| (min..=max).contains(v))
            .map(|(_, version)| version)
            .collect(),
    )
}

/// `RequestClientCert` and `RequireAnyClientCert`: the client must prove it holds the key of
/// the certificate it sends, but the certificate itself is not checked, as in Go.
#[derive(Debug)]
struct UncheckedClientCert {
    mandatory: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for UncheckedClientCert {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
