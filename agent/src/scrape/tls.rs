//! The rustls client configuration a `<tls_config>` describes: trusted roots (the webpki
//! set, plus `ca` / `ca_file`), the client certificate (`cert` / `key`, inline or files),
//! `insecure_skip_verify`, and `min_version` / `max_version`. One configuration serves both
//! HTTP clients of a [`Fetcher`](super::fetch::Fetcher), so they honour the same settings.
//! `server_name` is applied by the client that connects (see `direct_http`).

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio_rustls::rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use tokio_rustls::rustls::crypto::{CryptoProvider, ring, verify_tls12_signature, verify_tls13_signature};
use tokio_rustls::rustls::{
    self, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme, SupportedProtocolVersion,
};

use super::fetch::resolve;
use crate::config::TlsConfig;

/// Inline text, else the file's bytes, else nothing.
fn read(
    inline: &Option<String>,
    file: &Option<std::path::PathBuf>,
    base: &Path,
    what: &str,
) -> Result<Option<Vec<u8>>, String> {
    match (inline, file) {
        (Some(s), _) => Ok(Some(s.as_bytes().to_vec())),
        (_, Some(f)) => {
            std::fs::read(resolve(base, f)).map(Some).map_err(|e| format!("tls_config.{what}_file: {e}"))
        }
        _ => Ok(None),
    }
}

/// A `min_version` or `max_version` that cannot be met: which field, its value, and why.
#[derive(Debug)]
pub struct VersionError {
    pub field: &'static str,
    pub value: String,
    pub why: String,
}

/// Prometheus' version names, as numbers (12 for TLS 1.2).
fn version(field: &'static str, name: &str) -> Result<u8, VersionError> {
    match name {
        "TLS10" => Ok(10),
        "TLS11" => Ok(11),
        "TLS12" => Ok(12),
        "TLS13" => Ok(13),
        _ => Err(VersionError {
            field,
            value: name.to_owned(),
            why: format!("unknown TLS version {name:?} (TLS10, TLS11, TLS12 or TLS13)"),
        }),
    }
}

/// The versions `min_version`..`max_version` allow. rustls speaks TLS 1.2 and 1.3 only, so a
/// minimum below 1.2 allows those two, and a maximum below 1.2 cannot be met. The config
/// check calls this too, so a bad pair is reported with its line.
pub fn versions(tls: &TlsConfig) -> Result<Vec<&'static SupportedProtocolVersion>, VersionError> {
    let min = tls.min_version.as_deref().map(|v| version("min_version", v)).transpose()?.unwrap_or(12);
    let max = tls.max_version.as_deref().map(|v| version("max_version", v)).transpose()?.unwrap_or(13);
    if max < 12 {
        return Err(VersionError {
            field: "max_version",
            value: tls.max_version.clone().unwrap_or_default(),
            why: "TLS 1.2 is the oldest version ferry-agent speaks".into(),
        });
    }
    if min > max {
        return Err(VersionError {
            field: "min_version",
            value: tls.min_version.clone().unwrap_or_default(),
            why: format!("above max_version {}", tls.max_version.as_deref().unwrap_or("TLS13")),
        });
    }
    Ok([(12, &rustls::version::TLS12), (13, &rustls::version::TLS13)]
        .into_iter()
        .filter(|&(n, _)| n >= min && n <= max)
        .map(|(_, v)| v)
        .collect())
}

/// The client configuration for `tls` (`None`: the defaults, webpki roots and TLS 1.2–1.3).
pub fn client_config(tls: Option<&TlsConfig>, base: &Path) -> Result<ClientConfig, String> {
    let provider = Arc::new(ring::default_provider());
    let default = TlsConfig::default();
    let tls = tls.unwrap_or(&default);
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions(tls).map_err(|e| format!("tls_config.{}: {}", e.field, e.why))?)
        .map_err(|e| format!("tls_config: {e}"))?;
    let builder = if tls.insecure_skip_verify {
        builder.dangerous().with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
    } else {
        let mut roots = RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
        if let Some(pem) = read(&tls.ca, &tls.ca_file, base, "ca")? {
            let mut n = 0;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                roots
                    .add(cert.map_err(|e| format!("tls_config.ca: {e}"))?)
                    .map_err(|e| format!("tls_config.ca: {e}"))?;
                n += 1;
            }
            if n == 0 {
                return Err("tls_config.ca: no PEM certificate found".into());
            }
        }
        builder.with_root_certificates(roots)
    };
    let cert = read(&tls.cert, &tls.cert_file, base, "cert")?;
    let key = read(&tls.key, &tls.key_file, base, "key")?;
    match (cert, key) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_slice_iter(&cert)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("tls_config.cert: {e}"))?;
            let key = PrivateKeyDer::from_pem_slice(&key).map_err(|e| format!("tls_config.key: {e}"))?;
            builder.with_client_auth_cert(chain, key).map_err(|e| format!("tls_config cert/key: {e}"))
        }
        (None, None) => Ok(builder.with_no_client_auth()),
        _ => Err("tls_config: cert and key go together".into()),
    }
}

/// `tls_config.server_name` as rustls takes it.
pub fn server_name(tls: Option<&TlsConfig>) -> Result<Option<ServerName<'static>>, String> {
    tls.and_then(|t| t.server_name.as_deref())
        .map(|n| ServerName::try_from(n.to_owned()).map_err(|e| format!("tls_config.server_name {n:?}: {e}")))
        .transpose()
}

/// `insecure_skip_verify`: any certificate for any name, but the handshake's signatures are
/// still checked, so the peer must hold the key of the certificate it shows.
#[derive(Debug)]
struct AcceptAny(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
