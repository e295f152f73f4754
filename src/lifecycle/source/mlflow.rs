//! Models from an MLflow model registry, by MLflow's own URIs and environment variables.
//!
//! `models:/<name>@<alias>` or `models:/<name>/<version>`; the tracking server comes from
//! `MLFLOW_TRACKING_URI`, credentials from `MLFLOW_TRACKING_USERNAME` / `MLFLOW_TRACKING_PASSWORD`
//! or `MLFLOW_TRACKING_TOKEN`, TLS trust from `MLFLOW_TRACKING_SERVER_CERT_PATH` /
//! `MLFLOW_TRACKING_INSECURE_TLS`, as MLflow's own clients read them. A version is resolved over
//! the REST API (`registered-models/alias`, `model-versions/get`), its files are listed
//! (`artifacts/list`) and downloaded through the artifact proxy (`model-versions/get-artifact`)
//! into the [`ModelCache`].
//!
//! The registry is a peer, not an authority: a version, a file path or a size it answers is
//! checked before it touches the filesystem or memory; a download is streamed through the hasher
//! to disk and stops at the listed size, at `model.max_download_bytes` and at the version's
//! deadline (`model.download_timeout`), and a listing is bounded in depth and entries.
//! Transient failures (connection errors, timeouts, 5xx, 429) are retried with backoff inside
//! that deadline. Credentials never appear in an error or a log line.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::cache::{self, Manifest, ManifestFile, ModelCache};
use super::{Check, Fetched, ModelSource};
use crate::infra::config::ModelConfig;
use crate::infra::secret::{redact_url, Secret};
use crate::infra::tls::{self, TlsError, TlsOptions};

/// Most files a version may list, and how deep its folders may nest.
const MAX_FILES: usize = 1_000;
const MAX_DEPTH: usize = 8;
/// Attempts per request when the failure is transient.
const ATTEMPTS: u32 = 3;
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// A lookup (alias, listing) must answer within this; downloads get the version's deadline.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("model URI {0:?} is not models:/<name>@<alias> or models:/<name>/<version> (name and alias: letters, digits, '.', '_', '-')")]
    BadUri(String),
    #[error("MLFLOW_TRACKING_URI is not set: the model registry's address is needed for {0}")]
    NoTrackingUri(String),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("MLflow at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("MLflow at {url} refused the credentials ({status}): set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, or MLFLOW_TRACKING_TOKEN")]
    Unauthorized { url: String, status: u16 },
    #[error("MLflow at {url} answered {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("MLflow at {url} redirected to {location:?}; redirects are not followed")]
    Redirect { url: String, location: String },
    /// The registry's answer named something that cannot be a path in the cache.
    #[error("the registry's answer is not safe to use: {0}")]
    Unsafe(String),
    #[error("model version files: {0}")]
    Files(String),
    #[error("{what} is over model.max_download_bytes ({limit} bytes)")]
    TooLarge { what: String, limit: u64 },
    #[error("the version was not downloaded within model.download_timeout ({0:?})")]
    Deadline(Duration),
    #[error("model cache {path}: {reason}")]
    Cache { path: PathBuf, reason: String },
}

impl RegistryError {
    /// Worth trying again soon: the network or the server, not the version.
    pub fn is_transient(&self) -> bool {
        match self {
            RegistryError::Unreachable { .. } | RegistryError::Deadline(_) => true,
            RegistryError::Status { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }

    /// The version itself is at fault (its files, its answer): refuse it until the source
    /// names another. Everything else says nothing about the version.
    pub fn blames_version(&self) -> bool {
        matches!(
            self,
            RegistryError::Unsafe(_)
                | RegistryError::Files(_)
                | RegistryError::TooLarge { .. }
                | RegistryError::Redirect { .. }
        ) || matches!(self, RegistryError::Status { status, .. } if (400..500).contains(status) && *status != 429)
    }
}

/// A parsed `models:/` URI. Name and alias are checked as path components: they name folders
/// of the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelUri {
    pub name: String,
    pub reference: Reference,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    Alias(String),
    Version(String),
}

impl std::str::FromStr for ModelUri {
    type Err = RegistryError;

    fn from_str(uri: &str) -> Result<Self, RegistryError> {
        let bad = || RegistryError::BadUri(uri.to_string());
        let rest = uri.strip_prefix("models:/").ok_or_else(bad)?;
        let (name, reference) = if let Some((name, alias)) = rest.split_once('@') {
            if !cache::safe_component(alias) {
                return Err(bad());
            }
            (name, Reference::Alias(alias.to_string()))
        } else {
            let (name, version) = rest.rsplit_once('/').ok_or_else(bad)?;
            if !cache::safe_version(version) {
                return Err(bad());
            }
            (name, Reference::Version(version.to_string()))
        };
        if !cache::safe_component(name) || name == "aliases" {
            return Err(bad());
        }
        Ok(Self {
            name: name.to_string(),
            reference,
        })
    }
}

impl std::fmt::Display for ModelUri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.reference {
            Reference::Alias(alias) => write!(f, "models:/{}@{alias}", self.name),
            Reference::Version(version) => write!(f, "models:/{}/{version}", self.name),
        }
    }
}

/// One registered model version, as the registry answered and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelVersion {
    pub name: String,
    /// Digits only ([`cache::safe_version`]).
    pub version: String,
    /// The folder under the run's artifacts that holds its files, e.g. `model`.
    pub artifact_root: String,
    pub run_id: String,
}

enum Auth {
    None,
    Basic(String, Secret),
    Bearer(Secret),
}

/// The deadline of one version's download.
struct Budget {
    until: Instant,
    total: Duration,
}

impl Budget {
    fn new(total: Duration) -> Self {
        Self {
            until: Instant::now() + total,
            total,
        }
    }

    fn remaining(&self) -> Result<Duration, RegistryError> {
        self.until
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or(RegistryError::Deadline(self.total))
    }

    /// Runs `attempt` until it succeeds or fails for good; a transient failure is tried again
    /// with backoff, at most [`ATTEMPTS`] times, never past the deadline.
    fn retry<T>(
        &self,
        what: &str,
        mut attempt: impl FnMut() -> Result<T, RegistryError>,
    ) -> Result<T, RegistryError> {
        let mut backoff = FIRST_BACKOFF;
        let mut tried = 1;
        loop {
            match attempt() {
                Err(e) if e.is_transient() && tried < ATTEMPTS => {
                    let left = self.remaining()?;
                    tracing::warn!(what, error = %e, attempt = tried, "model registry: transient failure, retrying");
                    std::thread::sleep(backoff.min(left));
                    backoff *= 2;
                    tried += 1;
                }
                result => return result,
            }
        }
    }
}

/// A client of one MLflow tracking server.
pub struct Mlflow {
    /// The tracking URI, credentials removed: for messages.
    shown: String,
    base: String,
    http: reqwest::blocking::Client,
    auth: Auth,
    max_bytes: u64,
    deadline: Duration,
}

impl Mlflow {
    /// The server, credentials and TLS trust from MLflow's environment variables.
    pub fn from_env(uri: &ModelUri, config: &ModelConfig) -> Result<Self, RegistryError> {
        let var = |key: &str| std::env::var(key).ok().filter(|v| !v.is_empty());
        let base = var("MLFLOW_TRACKING_URI")
            .ok_or_else(|| RegistryError::NoTrackingUri(uri.to_string()))?;
        let auth = match (
            var("MLFLOW_TRACKING_USERNAME"),
            var("MLFLOW_TRACKING_PASSWORD"),
            var("MLFLOW_TRACKING_TOKEN"),
        ) {
            (Some(user), Some(password), _) => Auth::Basic(user, Secret::new(password)),
            (_, _, Some(token)) => Auth::Bearer(Secret::new(token)),
            _ => Auth::None,
        };
        let tls = TlsOptions::from_env(
            &["MLFLOW_TRACKING_SERVER_CERT_PATH"],
            Some("MLFLOW_TRACKING_INSECURE_TLS"),
        );
        let deadline = Duration::from_secs_f64(config.download_timeout);
        let http = tls::blocking_client(&tls, deadline)?;
        let base = base.trim_end_matches('/').to_string();
        let has_credentials = !matches!(auth, Auth::None) || base.contains('@');
        if has_credentials && base.to_ascii_lowercase().starts_with("http://") {
            warn_plain_http_once(&redact_url(&base));
        }
        Ok(Self {
            shown: redact_url(&base),
            base,
            http,
            auth,
            max_bytes: config.max_download_bytes,
            deadline,
        })
    }

    /// One GET, retried with backoff while the failure is transient and time is left.
    fn get(
        &self,
        path: &str,
        query: &[(&str, &str)],
        budget: &Budget,
    ) -> Result<reqwest::blocking::Response, RegistryError> {
        budget.retry(path, || self.get_once(path, query, budget))
    }

    fn get_once(
        &self,
        path: &str,
        query: &[(&str, &str)],
        budget: &Budget,
    ) -> Result<reqwest::blocking::Response, RegistryError> {
        let url = format!("{}{path}", self.base);
        let mut request = self
            .http
            .get(&url)
            .query(query)
            .timeout(budget.remaining()?);
        request = match &self.auth {
            Auth::None => request,
            Auth::Basic(user, password) => request.basic_auth(user, Some(password.expose())),
            Auth::Bearer(token) => request.bearer_auth(token.expose()),
        };
        let shown = || format!("{}{path}", self.shown);
        let response = request.send().map_err(|e| RegistryError::Unreachable {
            url: self.shown.clone(),
            reason: describe(e),
        })?;
        match response.status().as_u16() {
            200..=299 => Ok(response),
            300..=399 => Err(RegistryError::Redirect {
                url: shown(),
                location: response
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .chars()
                    .take(200)
                    .collect(),
            }),
            status @ (401 | 403) => Err(RegistryError::Unauthorized {
                url: self.shown.clone(),
                status,
            }),
            status => Err(RegistryError::Status {
                url: shown(),
                status,
                body: read_capped(response, 300),
            }),
        }
    }

    /// A JSON answer of at most 16 MiB.
    fn get_json(
        &self,
        path: &str,
        query: &[(&str, &str)],
        budget: &Budget,
    ) -> Result<Value, RegistryError> {
        const MAX_JSON: u64 = 16 << 20;
        let response = self.get(path, query, budget)?;
        let mut body = Vec::new();
        response
            .take(MAX_JSON + 1)
            .read_to_end(&mut body)
            .map_err(|e| RegistryError::Unreachable {
                url: self.shown.clone(),
                reason: format!("{path}: {e}"),
            })?;
        if body.len() as u64 > MAX_JSON {
            return Err(RegistryError::Files(format!(
                "{path}: the answer is over {MAX_JSON} bytes"
            )));
        }
        serde_json::from_slice(&body)
            .map_err(|e| RegistryError::Files(format!("{path}: not JSON: {e}")))
    }

    /// The version a URI names now, checked.
    pub fn resolve(&self, uri: &ModelUri) -> Result<ModelVersion, RegistryError> {
        let budget = Budget::new(LOOKUP_TIMEOUT.min(self.deadline));
        let answer = match &uri.reference {
            Reference::Alias(alias) => self.get_json(
                "/api/2.0/mlflow/registered-models/alias",
                &[("name", &uri.name), ("alias", alias)],
                &budget,
            )?,
            Reference::Version(version) => self.get_json(
                "/api/2.0/mlflow/model-versions/get",
                &[("name", &uri.name), ("version", version)],
                &budget,
            )?,
        };
        let field = |key: &str| {
            answer["model_version"][key]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| {
                    RegistryError::Files(format!("{uri}: the answer has no model_version.{key}"))
                })
        };
        let version = field("version")?;
        if !cache::safe_version(&version) {
            return Err(RegistryError::Unsafe(format!(
                "{uri} resolved to version {:?}: a version must be 1-20 digits",
                version.escape_debug().to_string()
            )));
        }
        let source = field("source")?;
        let artifact_root = source
            .split_once("/artifacts/")
            .map(|(_, path)| path.trim_end_matches('/').to_string())
            .ok_or_else(|| {
                RegistryError::Files(format!(
                    "source {source:?} is not in a run's artifacts (mlflow-artifacts:/<experiment>/<run>/artifacts/<path>)"
                ))
            })?;
        if !cache::safe_relative_path(&artifact_root, MAX_DEPTH) {
            return Err(RegistryError::Unsafe(format!(
                "version {version}'s artifact folder {artifact_root:?}"
            )));
        }
        Ok(ModelVersion {
            name: uri.name.clone(),
            version,
            artifact_root,
            run_id: field("run_id").unwrap_or_default(),
        })
    }

    /// The version's files, relative to its artifact folder, with their listed sizes: each a
    /// safe path, each and all together within `max_download_bytes`.
    fn list(
        &self,
        version: &ModelVersion,
        budget: &Budget,
    ) -> Result<Vec<(String, u64)>, RegistryError> {
        let root = &version.artifact_root;
        let mut files = Vec::new();
        let mut seen = HashSet::from([root.clone()]);
        let mut folders = vec![(root.clone(), 1)];
        let mut total: u64 = 0;
        while let Some((folder, depth)) = folders.pop() {
            let answer = self.get_json(
                "/api/2.0/mlflow/artifacts/list",
                &[("run_id", &version.run_id), ("path", &folder)],
                budget,
            )?;
            for entry in answer["files"].as_array().into_iter().flatten() {
                let path = entry["path"].as_str().unwrap_or_default();
                // Every entry must lie strictly inside the folder listed: no `..`, no
                // absolute path, no folder that contains itself.
                let relative = path
                    .strip_prefix(folder.as_str())
                    .and_then(|rest| rest.strip_prefix('/'))
                    .filter(|rest| cache::safe_relative_path(rest, 1))
                    .ok_or_else(|| {
                        RegistryError::Unsafe(format!(
                            "listing of {folder:?} names {:?}, which is not a plain name inside it",
                            path.escape_debug().to_string()
                        ))
                    })?;
                let in_version = format!(
                    "{}{relative}",
                    folder
                        .strip_prefix(root.as_str())
                        .map(|f| f.trim_start_matches('/'))
                        .filter(|f| !f.is_empty())
                        .map(|f| format!("{f}/"))
                        .unwrap_or_default()
                );
                if files.len() + folders.len() >= MAX_FILES {
                    return Err(RegistryError::Files(format!(
                        "more than {MAX_FILES} files and folders"
                    )));
                }
                if entry["is_dir"].as_bool().unwrap_or(false) {
                    if depth >= MAX_DEPTH || !seen.insert(path.to_string()) {
                        return Err(RegistryError::Unsafe(format!(
                            "folder {path:?} is nested deeper than {MAX_DEPTH} or listed twice"
                        )));
                    }
                    folders.push((path.to_string(), depth + 1));
                } else {
                    let size = entry["file_size"].as_u64().ok_or_else(|| {
                        RegistryError::Files(format!("{in_version}: no file_size in the listing"))
                    })?;
                    total = total.saturating_add(size);
                    if total > self.max_bytes {
                        return Err(RegistryError::TooLarge {
                            what: format!(
                                "version {} ({in_version} listed as {size} bytes)",
                                version.version
                            ),
                            limit: self.max_bytes,
                        });
                    }
                    files.push((in_version, size));
                }
            }
        }
        if files.is_empty() {
            return Err(RegistryError::Files(format!(
                "{} version {} has no files under {root}",
                version.name, version.version
            )));
        }
        Ok(files)
    }

    /// The version's files in the cache, downloaded unless already there and intact.
    pub fn fetch(
        &self,
        version: &ModelVersion,
        cache: &ModelCache,
    ) -> Result<PathBuf, RegistryError> {
        if let Some(dir) = cache.intact(&version.version) {
            return Ok(dir);
        }
        let budget = Budget::new(self.deadline);
        let files = self.list(version, &budget)?;
        let cache_error = |path: &Path, e: std::io::Error| RegistryError::Cache {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        // Removed when dropped: a failed download leaves nothing behind.
        let partial = cache
            .partial()
            .map_err(|e| cache_error(&cache.version_dir(&version.version), e))?;
        let mut manifest = Manifest { files: Vec::new() };
        for (relative, size) in files {
            let target = partial.path().join(&relative);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(|e| cache_error(parent, e))?;
            }
            // The whole file again on a transient failure, the request or the body's.
            let sha256 = budget.retry(&relative, || {
                self.download(version, &relative, size, &target, &budget)
            })?;
            manifest.files.push(ManifestFile {
                path: relative,
                size,
                sha256,
            });
        }
        let dir = cache.version_dir(&version.version);
        cache
            .install(partial, &version.version, &manifest)
            .map_err(|e| cache_error(&dir, e))
    }

    /// Streams one file to `target` through the hasher; stops at `size` bytes and at the
    /// deadline. Returns its SHA-256. One attempt: the caller retries.
    fn download(
        &self,
        version: &ModelVersion,
        relative: &str,
        size: u64,
        target: &Path,
        budget: &Budget,
    ) -> Result<String, RegistryError> {
        let mut response = self.get_once(
            "/model-versions/get-artifact",
            &[
                ("path", relative),
                ("name", &version.name),
                ("version", &version.version),
            ],
            budget,
        )?;
        let mut file = std::fs::File::create(target).map_err(|e| RegistryError::Cache {
            path: target.to_path_buf(),
            reason: e.to_string(),
        })?;
        let mut hasher = Sha256::new();
        let mut received: u64 = 0;
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            budget.remaining()?;
            let n = match response.read(&mut buffer) {
                Ok(n) => n,
                Err(e) => {
                    // A read that timed out is the deadline, however reqwest words it.
                    budget.remaining()?;
                    return Err(RegistryError::Unreachable {
                        url: self.shown.clone(),
                        reason: format!("downloading {relative}: {e}"),
                    });
                }
            };
            if n == 0 {
                break;
            }
            received += n as u64;
            if received > size {
                return Err(RegistryError::Files(format!(
                    "{relative}: the body is longer than the {size} bytes listed"
                )));
            }
            hasher.update(&buffer[..n]);
            file.write_all(&buffer[..n])
                .map_err(|e| RegistryError::Cache {
                    path: target.to_path_buf(),
                    reason: e.to_string(),
                })?;
        }
        if received != size {
            return Err(RegistryError::Unreachable {
                url: self.shown.clone(),
                reason: format!(
                    "{relative}: downloaded {received} bytes, the registry lists {size}"
                ),
            });
        }
        Ok(cache::hex(&hasher.finalize()))
    }
}

/// A reqwest error with its causes, never its URL (which is shown separately, redacted).
fn describe(error: reqwest::Error) -> String {
    let error = error.without_url();
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// At most `limit` characters of an error body.
fn read_capped(response: reqwest::blocking::Response, limit: u64) -> String {
    let mut body = Vec::new();
    let _ = response.take(limit * 4).read_to_end(&mut body);
    String::from_utf8_lossy(&body)
        .chars()
        .take(limit as usize)
        .collect()
}

/// A model from a registry URI, with its cache.
pub struct MlflowSource {
    uri: ModelUri,
    config: ModelConfig,
    cache: ModelCache,
}

impl MlflowSource {
    pub fn new(uri: ModelUri, config: &ModelConfig) -> Self {
        let cache = ModelCache::new(&config.cache_dir, &uri.name);
        Self {
            uri,
            config: config.clone(),
            cache,
        }
    }

    fn fetched(&self, version: String, dir: PathBuf) -> Fetched {
        Fetched {
            description: format!("{} (version {version})", self.uri),
            dir,
            version: Some(version),
            registry_name: Some(self.uri.name.clone()),
        }
    }
}

impl ModelSource for MlflowSource {
    fn describe(&self) -> String {
        self.uri.to_string()
    }

    fn polls(&self) -> bool {
        true
    }

    fn check(&self, wanted: &dyn Fn(&str) -> bool) -> Result<Check, super::SourceError> {
        let client = Mlflow::from_env(&self.uri, &self.config)?;
        let version = client.resolve(&self.uri)?;
        if !wanted(&version.version) {
            return Ok(Check::Unchanged(version.version));
        }
        let dir = client.fetch(&version, &self.cache)?;
        Ok(Check::Fetched(self.fetched(version.version, dir)))
    }

    fn cached(&self) -> Option<Fetched> {
        let version = match &self.uri.reference {
            Reference::Version(version) => version.clone(),
            Reference::Alias(alias) => self.cache.remembered(alias)?,
        };
        let dir = self.cache.intact(&version)?;
        Some(self.fetched(version, dir))
    }

    fn served(&self, fetched: &Fetched) {
        let Some(version) = &fetched.version else {
            return;
        };
        if let Reference::Alias(alias) = &self.uri.reference {
            if let Err(e) = self.cache.remember(alias, version) {
                tracing::warn!(error = %e, "model cache: could not remember the alias's version; a restart without the registry will not find it");
            }
        }
        let stale_after = Duration::from_secs_f64(self.config.download_timeout * 2.0);
        for removed in self
            .cache
            .prune(version, self.config.cache_keep, stale_after)
        {
            tracing::info!(path = %removed.display(), "model cache: removed");
        }
    }
}

/// Credentials over plain HTTP can be read by anyone on the path: said once per process (a
/// client is made again on every poll).
fn warn_plain_http_once(shown: &str) {
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| {
        tracing::warn!(
            registry = shown,
            "registry credentials are sent over plain http://; use https:// so they cannot be read on the way"
        );
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_uris_follow_mlflow() {
        let alias: ModelUri = "models:/news@champion".parse().expect("alias");
        assert_eq!(alias.reference, Reference::Alias("champion".into()));
        let version: ModelUri = "models:/news/12".parse().expect("version");
        assert_eq!(
            (version.name.as_str(), version.reference.clone()),
            ("news", Reference::Version("12".into()))
        );
        assert_eq!(version.to_string(), "models:/news/12");
        for bad in [
            "news@x",
            "models:/",
            "models:/news",
            "models:/news/latest",
            "models:/../x@a",
            "models:/n@",
            "models:/n@..",
            "models:/a b@champion",
            "models:/aliases@champion",
        ] {
            assert!(bad.parse::<ModelUri>().is_err(), "{bad}");
        }
    }

    #[test]
    fn failures_are_sorted_into_outage_and_bad_version() {
        let status = |status| RegistryError::Status {
            url: String::new(),
            status,
            body: String::new(),
        };
        assert!(status(503).is_transient() && !status(503).blames_version());
        assert!(status(429).is_transient() && !status(429).blames_version());
        assert!(!status(404).is_transient() && status(404).blames_version());
        let unauthorized = RegistryError::Unauthorized {
            url: String::new(),
            status: 401,
        };
        assert!(!unauthorized.is_transient() && !unauthorized.blames_version());
        assert!(RegistryError::Unsafe(String::new()).blames_version());
        assert!(RegistryError::Deadline(Duration::ZERO).is_transient());
    }
}
