//! TLS for the service's outgoing HTTP (the model registry, the OTLP trace exporter).
//!
//! rustls with the system's roots; a deployment's private CA is added from a PEM file named by
//! the peer's own convention (`MLFLOW_TRACKING_SERVER_CERT_PATH` for MLflow,
//! `OTEL_EXPORTER_OTLP_CERTIFICATE` for traces), and `MLFLOW_TRACKING_INSECURE_TLS=true` turns
//! verification off as MLflow's own client does — with a warning, since anyone on the path can
//! then answer for the registry. Redirects are never followed: a registry or collector that
//! answers elsewhere gets an error, not our credentials.

use std::path::{Path, PathBuf};
use std::time::Duration;

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
    if let Some((variable, path)) = &tls.ca_file {
        for certificate in read_ca_file(variable, path)? {
            builder = builder.add_root_certificate(certificate);
        }
    }
    if tls.insecure {
        tracing::warn!("TLS certificate verification is off (MLFLOW_TRACKING_INSECURE_TLS)");
        builder = builder.tls_danger_accept_invalid_certs(true);
    }
    builder.build().map_err(|e| TlsError::Client(e.to_string()))
}

fn read_ca_file(
    variable: &'static str,
    path: &Path,
) -> Result<Vec<reqwest::Certificate>, TlsError> {
    let error = |reason: String| TlsError::CaFile {
        variable,
        path: path.to_path_buf(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| error(e.to_string()))?;
    let certificates =
        reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| error(e.to_string()))?;
    if certificates.is_empty() {
        return Err(error("no PEM certificate in it".into()));
    }
    Ok(certificates)
}
