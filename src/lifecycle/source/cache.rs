//! The local cache of registry versions: `<cache>/<name>/<version>/`, each with a manifest of
//! its files' sizes and SHA-256, and `<cache>/<name>/aliases/<alias>` naming the version an alias
//! served last.
//!
//! Everything a registry says that becomes part of a path goes through [`safe_component`] or
//! [`safe_version`] first: a strict character set, never `.`/`..`, never a leading dot (which
//! could replace the manifest), so no answer can name a folder outside the cache. A version
//! is written under a `.partial-<random>` folder and renamed into place only when complete, so
//! a half download is never loaded and two processes sharing the cache never collide.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const MANIFEST: &str = ".manifest.json";
const PARTIAL_PREFIX: &str = ".partial-";
/// Longest accepted path component and version string.
const MAX_COMPONENT: usize = 128;
const MAX_VERSION: usize = 20;

/// A folder or file name from a peer is safe to join to a path: 1-128 ASCII letters, digits,
/// `.`, `_` or `-`, not starting with a dot.
pub fn safe_component(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_COMPONENT
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// An MLflow model version: 1-20 ASCII digits (MLflow numbers versions 1, 2, ...).
pub fn safe_version(version: &str) -> bool {
    !version.is_empty()
        && version.len() <= MAX_VERSION
        && version.bytes().all(|b| b.is_ascii_digit())
}

/// A relative file path from a peer, `a/b/c`: every component safe, at most `max_depth` deep.
pub fn safe_relative_path(path: &str, max_depth: usize) -> bool {
    let parts: Vec<&str> = path.split('/').collect();
    parts.len() <= max_depth && parts.iter().all(|part| safe_component(part))
}

#[derive(Serialize, Deserialize)]
pub struct Manifest {
    pub files: Vec<ManifestFile>,
}

#[derive(Serialize, Deserialize)]
pub struct ManifestFile {
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

/// The cache folder of one registered model.
pub struct ModelCache {
    root: PathBuf,
}

impl ModelCache {
    /// `name` must pass [`safe_component`] (checked when the URI is parsed).
    pub fn new(cache_dir: &Path, name: &str) -> Self {
        Self {
            root: cache_dir.join(name),
        }
    }

    /// The folder of `version`; `version` must pass [`safe_version`].
    pub fn version_dir(&self, version: &str) -> PathBuf {
        debug_assert!(safe_version(version), "an unchecked version {version:?}");
        self.root.join(version)
    }

    /// A fresh, uniquely named folder to download into; removed when dropped unless kept.
    pub fn partial(&self) -> std::io::Result<tempfile::TempDir> {
        std::fs::create_dir_all(&self.root)?;
        tempfile::Builder::new()
            .prefix(PARTIAL_PREFIX)
            .tempdir_in(&self.root)
    }

    /// Moves a complete download into place as `version`, with its manifest.
    pub fn install(
        &self,
        partial: tempfile::TempDir,
        version: &str,
        manifest: &Manifest,
    ) -> std::io::Result<PathBuf> {
        let text = serde_json::to_string_pretty(manifest).map_err(std::io::Error::other)?;
        std::fs::write(partial.path().join(MANIFEST), text)?;
        let dir = self.version_dir(version);
        if dir.exists() {
            // A copy that failed verification: replaced by the fresh one.
            std::fs::remove_dir_all(&dir)?;
        }
        let partial = partial.keep();
        std::fs::rename(&partial, &dir).inspect_err(|_| {
            let _ = std::fs::remove_dir_all(&partial);
        })?;
        Ok(dir)
    }

    /// The cached folder of `version` if every file matches its manifest; marks it used.
    pub fn intact(&self, version: &str) -> Option<PathBuf> {
        let dir = self.version_dir(version);
        verify(&dir).ok()?;
        touch(&dir.join(MANIFEST));
        Some(dir)
    }

    fn alias_file(&self, alias: &str) -> PathBuf {
        self.root.join("aliases").join(alias)
    }

    /// Remembers the version an alias served, for starting without the registry.
    pub fn remember(&self, alias: &str, version: &str) -> std::io::Result<()> {
        let path = self.alias_file(alias);
        std::fs::create_dir_all(self.root.join("aliases"))?;
        std::fs::write(path, version)
    }

    /// The version an alias served last, if it is still a valid version string.
    pub fn remembered(&self, alias: &str) -> Option<String> {
        let text = std::fs::read_to_string(self.alias_file(alias)).ok()?;
        let version = text.trim().to_string();
        safe_version(&version).then_some(version)
    }

    /// Removes every version but `serving` and the `keep` others used most recently, and
    /// `.partial-*` folders older than `stale_after` (a download still running in another
    /// process has given up by then). Returns what was removed.
    pub fn prune(&self, serving: &str, keep: usize, stale_after: Duration) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return Vec::new();
        };
        let now = SystemTime::now();
        let mut versions = Vec::new();
        let mut removed = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if name.starts_with(PARTIAL_PREFIX) {
                let age = modified(&path).and_then(|t| now.duration_since(t).ok());
                if age.is_some_and(|age| age > stale_after) && remove(&path) {
                    removed.push(path);
                }
            } else if safe_version(&name) && name != serving {
                let used = modified(&path.join(MANIFEST)).unwrap_or(SystemTime::UNIX_EPOCH);
                versions.push((used, path));
            }
        }
        versions.sort_by_key(|v| std::cmp::Reverse(v.0));
        for (_, path) in versions.into_iter().skip(keep) {
            if remove(&path) {
                removed.push(path);
            }
        }
        removed
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn touch(path: &Path) {
    if let Ok(file) = std::fs::File::options().append(true).open(path) {
        let _ = file.set_modified(SystemTime::now());
    }
}

fn remove(path: &Path) -> bool {
    match std::fs::remove_dir_all(path) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "model cache: could not remove");
            false
        }
    }
}

/// Every file in the manifest is there, with its size and SHA-256.
fn verify(dir: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(dir.join(MANIFEST)).map_err(|e| e.to_string())?;
    let manifest: Manifest = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    for file in manifest.files {
        if !safe_relative_path(&file.path, 16) {
            return Err(format!("{:?} is not a safe path", file.path));
        }
        let mut reader =
            std::fs::File::open(dir.join(&file.path)).map_err(|e| format!("{}: {e}", file.path))?;
        let mut hasher = Sha256::new();
        let size = std::io::copy(&mut reader, &mut hasher).map_err(|e| e.to_string())?;
        if size != file.size || hex(&hasher.finalize()) != file.sha256 {
            return Err(format!("{} does not match its checksum", file.path));
        }
    }
    Ok(())
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_names_become_path_components() {
        for good in ["model.onnx", "tokenizer.json", "news-topic_2", "v1.2"] {
            assert!(safe_component(good), "{good}");
        }
        // Never run these end to end: against an unchecked cache they name `/`, the cache
        // itself, or a folder outside it.
        for bad in [
            "",
            ".",
            "..",
            "/",
            "../../escape",
            "a/b",
            "a\\b",
            "a\0b",
            ".manifest.json",
            ".partial-1",
            "naïve",
            "a b",
            &"x".repeat(129),
        ] {
            assert!(!safe_component(bad), "{bad:?}");
        }
    }

    #[test]
    fn versions_are_numbers_only() {
        assert!(safe_version("1") && safe_version("20261125"));
        for bad in [
            "",
            "/",
            "..",
            "../../escape",
            "1/2",
            "1\0",
            "-1",
            "1.0",
            "v2",
            &"9".repeat(21),
        ] {
            assert!(!safe_version(bad), "{bad:?}");
        }
    }

    #[test]
    fn relative_paths_are_checked_part_by_part() {
        assert!(safe_relative_path("onnx/model.onnx", 8));
        for bad in ["../x", "/abs", "a//b", "a/../b", "a/", "a/./b", "a\\..\\b"] {
            assert!(!safe_relative_path(bad, 8), "{bad:?}");
        }
        assert!(!safe_relative_path("a/b/c", 2), "too deep");
    }

    fn temp() -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix("newscls-cache-test-")
            .tempdir()
            .expect("temp dir")
    }

    fn put(cache: &ModelCache, version: &str, content: &[u8]) -> PathBuf {
        let partial = cache.partial().expect("partial");
        std::fs::write(partial.path().join("model.onnx"), content).expect("write");
        let manifest = Manifest {
            files: vec![ManifestFile {
                path: "model.onnx".into(),
                size: content.len() as u64,
                sha256: hex(&Sha256::digest(content)),
            }],
        };
        cache.install(partial, version, &manifest).expect("install")
    }

    #[test]
    fn a_cached_version_is_used_only_while_its_files_match_the_manifest() {
        let dir = temp();
        let cache = ModelCache::new(dir.path(), "news");
        let installed = put(&cache, "3", b"weights");
        assert_eq!(cache.intact("3"), Some(installed.clone()));
        assert_eq!(
            cache.remembered("champion"),
            None,
            "no alias remembered yet"
        );
        cache.remember("champion", "3").expect("remember");
        assert_eq!(cache.remembered("champion").as_deref(), Some("3"));
        std::fs::write(installed.join("model.onnx"), b"weightz").expect("corrupt");
        assert_eq!(cache.intact("3"), None, "a corrupted file is not used");
        std::fs::write(cache.alias_file("champion"), "../..").expect("write");
        assert_eq!(cache.remembered("champion"), None, "never a path");
    }

    #[test]
    fn pruning_keeps_the_serving_version_and_the_latest_others() {
        let dir = temp();
        let cache = ModelCache::new(dir.path(), "news");
        for version in ["1", "2", "3", "4"] {
            put(&cache, version, version.as_bytes());
            // Distinct modification times, oldest first.
            std::thread::sleep(Duration::from_millis(20));
        }
        let stale = cache.partial().expect("partial").keep();
        let fresh = cache.partial().expect("partial");
        let removed = cache.prune("1", 2, Duration::ZERO);
        assert!(removed.contains(&cache.version_dir("2")), "{removed:?}");
        for version in ["1", "3", "4"] {
            assert!(cache.version_dir(version).is_dir(), "{version} kept");
        }
        assert!(
            !stale.exists() && !fresh.path().exists(),
            "old partials removed"
        );
        let outside = dir.path().join("news-other");
        std::fs::create_dir_all(&outside).expect("dir");
        cache.prune("1", 0, Duration::ZERO);
        assert!(
            outside.is_dir(),
            "nothing outside the model's folder is touched"
        );
    }
}
