//! Models from an MLflow model registry, by MLflow's own URIs and environment variables.
//!
//! `models:/<name>@<alias>` or `models:/<name>/<version>`; the tracking server comes from
//! `MLFLOW_TRACKING_URI`, credentials from `MLFLOW_TRACKING_USERNAME` / `MLFLOW_TRACKING_PASSWORD`
//! or `MLFLOW_TRACKING_TOKEN`, as MLflow's own clients read them. A version is resolved over the
//! REST API (`registered-models/alias`, `model-versions/get`), its files are listed
//! (`artifacts/list`) and downloaded through the artifact proxy (`model-versions/get-artifact`)
//! into `<cache>/<name>/<version>/`: into a temporary folder first, each file checked against
//! the listed size and recorded with its SHA-256 in a manifest, then renamed into place, so a
//! half download is never loaded. A cached version is verified against its manifest before use;
//! the last version an alias resolved to is remembered, so the service can start from the cache
//! when the registry is down.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

const MANIFEST: &str = ".manifest.json";
const TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("model URI {0:?} is not models:/<name>@<alias> or models:/<name>/<version>")]
    BadUri(String),
    #[error("MLFLOW_TRACKING_URI is not set: the model registry's address is needed for {0}")]
    NoTrackingUri(String),
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
    #[error("model version files: {0}")]
    Files(String),
    #[error("model cache {path}: {reason}")]
    Cache { path: PathBuf, reason: String },
}

/// A parsed `models:/` URI.
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
            (name, Reference::Alias(alias.to_string()))
        } else {
            let (name, version) = rest.rsplit_once('/').ok_or_else(bad)?;
            if version.is_empty() || !version.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            (name, Reference::Version(version.to_string()))
        };
        let valid = |s: &str| !s.is_empty() && !s.contains(['/', '@']) && s != "." && s != "..";
        match &reference {
            Reference::Alias(alias) if !valid(alias) => return Err(bad()),
            _ if !valid(name) => return Err(bad()),
            _ => {}
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

/// One registered model version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelVersion {
    pub name: String,
    pub version: String,
    /// Where its files are, e.g. `mlflow-artifacts:/1/<run>/artifacts/model`.
    pub source: String,
    pub run_id: String,
}

#[derive(Serialize, Deserialize)]
struct Manifest {
    files: Vec<ManifestFile>,
}

#[derive(Serialize, Deserialize)]
struct ManifestFile {
    path: String,
    size: u64,
    sha256: String,
}

/// A client of one MLflow tracking server.
pub struct Mlflow {
    base: String,
    http: reqwest::blocking::Client,
    auth: Auth,
}

enum Auth {
    None,
    Basic(String, String),
    Bearer(String),
}

impl Mlflow {
    /// The server and credentials from MLflow's environment variables.
    pub fn from_env(uri: &ModelUri) -> Result<Self, RegistryError> {
        let base = std::env::var("MLFLOW_TRACKING_URI")
            .ok()
            .filter(|v| !v.is_empty())
            .ok_or_else(|| RegistryError::NoTrackingUri(uri.to_string()))?;
        let var = |key: &str| std::env::var(key).ok().filter(|v| !v.is_empty());
        let auth = match (
            var("MLFLOW_TRACKING_USERNAME"),
            var("MLFLOW_TRACKING_PASSWORD"),
            var("MLFLOW_TRACKING_TOKEN"),
        ) {
            (Some(user), Some(password), _) => Auth::Basic(user, password),
            (_, _, Some(token)) => Auth::Bearer(token),
            _ => Auth::None,
        };
        let http = reqwest::blocking::Client::builder()
            .timeout(TIMEOUT)
            .build()
            .map_err(|e| RegistryError::Unreachable {
                url: base.clone(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            base: base.trim_end_matches('/').to_string(),
            http,
            auth,
        })
    }

    fn get(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<reqwest::blocking::Response, RegistryError> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.get(&url).query(query);
        request = match &self.auth {
            Auth::None => request,
            Auth::Basic(user, password) => request.basic_auth(user, Some(password)),
            Auth::Bearer(token) => request.bearer_auth(token),
        };
        let response = request.send().map_err(|e| RegistryError::Unreachable {
            url: self.base.clone(),
            reason: e.to_string(),
        })?;
        match response.status().as_u16() {
            200..=299 => Ok(response),
            status @ (401 | 403) => Err(RegistryError::Unauthorized {
                url: self.base.clone(),
                status,
            }),
            status => Err(RegistryError::Status {
                url: format!(
                    "{url}?{}",
                    query
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join("&")
                ),
                status,
                body: response
                    .text()
                    .unwrap_or_default()
                    .chars()
                    .take(300)
                    .collect(),
            }),
        }
    }

    fn get_json(&self, path: &str, query: &[(&str, &str)]) -> Result<Value, RegistryError> {
        self.get(path, query)?
            .json()
            .map_err(|e| RegistryError::Files(format!("{path}: not JSON: {e}")))
    }

    /// The version a URI names now.
    pub fn resolve(&self, uri: &ModelUri) -> Result<ModelVersion, RegistryError> {
        let answer = match &uri.reference {
            Reference::Alias(alias) => self.get_json(
                "/api/2.0/mlflow/registered-models/alias",
                &[("name", &uri.name), ("alias", alias)],
            )?,
            Reference::Version(version) => self.get_json(
                "/api/2.0/mlflow/model-versions/get",
                &[("name", &uri.name), ("version", version)],
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
        Ok(ModelVersion {
            name: uri.name.clone(),
            version: field("version")?,
            source: field("source")?,
            run_id: field("run_id").unwrap_or_default(),
        })
    }

    /// The version's files, relative to its source folder, with their sizes.
    fn list(&self, version: &ModelVersion) -> Result<Vec<(String, u64)>, RegistryError> {
        let root = version
            .source
            .split_once("/artifacts/")
            .map(|(_, path)| path.trim_end_matches('/').to_string())
            .ok_or_else(|| {
                RegistryError::Files(format!(
                    "source {:?} is not in a run's artifacts (mlflow-artifacts:/<experiment>/<run>/artifacts/<path>)",
                    version.source
                ))
            })?;
        let mut files = Vec::new();
        let mut folders = vec![root.clone()];
        while let Some(folder) = folders.pop() {
            let answer = self.get_json(
                "/api/2.0/mlflow/artifacts/list",
                &[("run_id", &version.run_id), ("path", &folder)],
            )?;
            for entry in answer["files"].as_array().into_iter().flatten() {
                let path = entry["path"].as_str().unwrap_or_default().to_string();
                if entry["is_dir"].as_bool().unwrap_or(false) {
                    folders.push(path);
                } else {
                    let relative = path
                        .strip_prefix(&format!("{root}/"))
                        .unwrap_or(&path)
                        .to_string();
                    let size = entry["file_size"].as_u64().unwrap_or(0);
                    files.push((relative, size));
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
    pub fn fetch(&self, version: &ModelVersion, cache: &Path) -> Result<PathBuf, RegistryError> {
        let dir = version_dir(cache, &version.name, &version.version);
        if verify(&dir).is_ok() {
            return Ok(dir);
        }
        let files = self.list(version)?;
        let partial = dir.with_extension(format!("partial-{}", std::process::id()));
        let cache_error = |path: &Path, e: std::io::Error| RegistryError::Cache {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        let _ = std::fs::remove_dir_all(&partial);
        let mut manifest = Manifest { files: Vec::new() };
        for (relative, size) in files {
            if relative
                .split('/')
                .any(|part| part == ".." || part.is_empty())
            {
                return Err(RegistryError::Files(format!(
                    "unsafe file path {relative:?}"
                )));
            }
            let target = partial.join(&relative);
            std::fs::create_dir_all(target.parent().unwrap_or(&partial))
                .map_err(|e| cache_error(&partial, e))?;
            let mut response = self.get(
                "/model-versions/get-artifact",
                &[
                    ("path", &relative),
                    ("name", &version.name),
                    ("version", &version.version),
                ],
            )?;
            let mut bytes = Vec::with_capacity(size as usize);
            response
                .read_to_end(&mut bytes)
                .map_err(|e| RegistryError::Unreachable {
                    url: self.base.clone(),
                    reason: format!("downloading {relative}: {e}"),
                })?;
            if bytes.len() as u64 != size {
                let _ = std::fs::remove_dir_all(&partial);
                return Err(RegistryError::Files(format!(
                    "{relative}: downloaded {} bytes, the registry lists {size}",
                    bytes.len()
                )));
            }
            std::fs::write(&target, &bytes).map_err(|e| cache_error(&target, e))?;
            manifest.files.push(ManifestFile {
                path: relative,
                size,
                sha256: hex(&Sha256::digest(&bytes)),
            });
        }
        let text = serde_json::to_string_pretty(&manifest).unwrap_or_default();
        std::fs::write(partial.join(MANIFEST), text).map_err(|e| cache_error(&partial, e))?;
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::rename(&partial, &dir).map_err(|e| cache_error(&dir, e))?;
        Ok(dir)
    }
}

fn version_dir(cache: &Path, name: &str, version: &str) -> PathBuf {
    cache.join(name).join(version)
}

fn alias_file(cache: &Path, name: &str, alias: &str) -> PathBuf {
    cache.join(name).join("aliases").join(alias)
}

/// Remembers the version an alias resolved to, for starting without the registry.
pub fn remember(cache: &Path, uri: &ModelUri, version: &str) {
    if let Reference::Alias(alias) = &uri.reference {
        let path = alias_file(cache, &uri.name, alias);
        if let Some(parent) = path.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        let _ = std::fs::write(path, version);
    }
}

/// The cached, intact version a URI named last time, if any.
pub fn cached(cache: &Path, uri: &ModelUri) -> Option<(String, PathBuf)> {
    let version = match &uri.reference {
        Reference::Version(version) => version.clone(),
        Reference::Alias(alias) => std::fs::read_to_string(alias_file(cache, &uri.name, alias))
            .ok()?
            .trim()
            .to_string(),
    };
    let dir = version_dir(cache, &uri.name, &version);
    verify(&dir).ok().map(|()| (version, dir))
}

/// Every file in the manifest is there, with its size and SHA-256.
fn verify(dir: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(dir.join(MANIFEST)).map_err(|e| e.to_string())?;
    let manifest: Manifest = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    for file in manifest.files {
        let bytes =
            std::fs::read(dir.join(&file.path)).map_err(|e| format!("{}: {e}", file.path))?;
        if bytes.len() as u64 != file.size || hex(&Sha256::digest(&bytes)) != file.sha256 {
            return Err(format!("{} does not match its checksum", file.path));
        }
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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
        ] {
            assert!(bad.parse::<ModelUri>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_cached_version_is_used_only_while_its_files_match_the_manifest() {
        let cache = std::env::temp_dir().join(format!("newscls-registry-{}", std::process::id()));
        let dir = version_dir(&cache, "news", "3");
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("model.onnx"), b"weights").expect("write");
        let manifest = Manifest {
            files: vec![ManifestFile {
                path: "model.onnx".into(),
                size: 7,
                sha256: hex(&Sha256::digest(b"weights")),
            }],
        };
        std::fs::write(
            dir.join(MANIFEST),
            serde_json::to_string(&manifest).expect("json"),
        )
        .expect("write");
        let uri: ModelUri = "models:/news@champion".parse().expect("uri");
        assert!(cached(&cache, &uri).is_none(), "no alias remembered yet");
        remember(&cache, &uri, "3");
        assert_eq!(cached(&cache, &uri).map(|(v, _)| v), Some("3".to_string()));
        std::fs::write(dir.join("model.onnx"), b"weightz").expect("corrupt");
        assert!(
            cached(&cache, &uri).is_none(),
            "a corrupted file is not used"
        );
        let _ = std::fs::remove_dir_all(&cache);
    }
}
