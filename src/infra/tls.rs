//! TLS for the service's outgoing HTTP (the model registry, the OTLP trace exporter).
//!
//! rustls with the system's roots; a deployment's private CA is added from a PEM file named by
//! the peer's own convention (`MLFLOW_TRACKING_SERVER_CERT_PATH` for MLflow,
//! `OTEL_EXPORTER_OTLP_CERTIFICATE` for traces), and `MLFLOW_TRACKING_INSECURE_TLS=true` turns
//! verification off as MLflow's own client does — with a warning, since anyone on the path can
//! then answer for the registry. Redirects are never followed: a registry or collector that
//! answers elsewhere gets an error, not our credentials.
//!
//! The certificate file may also be the server's own self-signed certificate, the common
//! internal MLflow setup, which MLflow's Python client accepts. webpki refuses such a certificate
//! as a trust anchor presented by the server itself (`CaUsedAsEndEntity`), so a peer that
//! presents exactly a certificate of the file is trusted as pinned; every other peer is verified
//! against the system roots and the file's CAs.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// Why an HTTP client could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("CA certificate file {path} ({variable}): {reason}")]
    CaFile {
        variable: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("HTTP client: {0}")]
    Client(String),
}

/// How to verify a peer's certificate.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// Extra trusted CAs: `(the variable that named it, a PEM file)`.
    pub ca_file: Option<(&'static str, PathBuf)>,
    /// Accept any certificate.
    pub insecure: bool,
}

impl TlsOptions {
    /// The options from environment variables: `ca_variable` names a PEM file,
    /// `insecure_variable` (if any) is `true` to turn verification off.
    pub fn from_env(ca_variables: &[&'static str], insecure_variable: Option<&str>) -> Self {
        let ca_file = ca_variables.iter().find_map(|variable| {
            std::env::var_os(variable)
                .filter(|v| !v.is_empty())
                .map(|path| (*variable, PathBuf::from(path)))
        });
        let insecure = insecure_variable
            .and_then(|v| std::env::var(v).ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1");
        Self { ca_file, insecure }
    }
}

/// A blocking client that verifies peers as `tls` says, follows no redirects, and gives up a
/// request after `timeout`.
pub fn blocking_client(
    tls: &TlsOptions,
    timeout: Duration,
) -> Result<reqwest::blocking::Client, TlsError> {
    let mut builder = reqwest::blocking::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .redirect(reqwest::redirect::Policy::none());
    if tls.insecure {
        warn_insecure_once();
        builder = builder.tls_danger_accept_invalid_certs(true);
    } else if let Some((variable, path)) = &tls.ca_file {
        let certificates = read_ca_file(variable, path)?;
        builder = builder.tls_backend_preconfigured(pinned_or_verified(certificates)?);
    }
    builder.build().map_err(|e| TlsError::Client(e.to_string()))
}

/// One warning per process: a registry client is made again on every poll.
fn warn_insecure_once() {
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| {
        tracing::warn!("TLS certificate verification is off (MLFLOW_TRACKING_INSECURE_TLS)");
    });
}

/// A rustls configuration that trusts the system roots and `certificates` as CAs, and a peer
/// that presents exactly one of `certificates`.
fn pinned_or_verified(
    certificates: Vec<CertificateDer<'static>>,
) -> Result<rustls::ClientConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = rustls_platform_verifier::Verifier::new_with_extra_roots(
        certificates.clone(),
        provider.clone(),
    )
    .map_err(|e| TlsError::Client(e.to_string()))?;
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Client(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedOrVerified {
            pinned: certificates,
            inner: Arc::new(verifier),
        }))
        .with_no_client_auth();
    Ok(config)
}

/// Accepts a server whose certificate is byte for byte one of `pinned`; verifies every other as
/// `inner` does. The handshake's signatures are checked by `inner` either way, against the
/// presented certificate's key, so a peer must hold the pinned certificate's private key.
#[derive(Debug)]
struct PinnedOrVerified {
    pinned: Vec<CertificateDer<'static>>,
    inner: Arc<dyn ServerCertVerifier>,
}

impl ServerCertVerifier for PinnedOrVerified {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self
            .pinned
            .iter()
            .any(|p| p.as_ref() == end_entity.as_ref())
        {
            return Ok(ServerCertVerified::assertion());
        }
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

fn read_ca_file(
    variable: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let error = |reason: String| TlsError::CaFile {
        variable,
        path: path.to_path_buf(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| error(e.to_string()))?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(e.to_string()))?;
    if certificates.is_empty() {
        return Err(error("no PEM certificate in it".into()));
    }
    Ok(certificates)
}
