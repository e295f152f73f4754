//! Where a relative path in the configuration points, so the binary works from any directory:
//! - typed by the user (a flag, an environment variable): the working directory, as the shell
//!   meant it;
//! - written in a config file: that file's directory (`config/default.yaml` says
//!   `../models/...`);
//! - a built-in default: the installation, the nearest directory above the executable that
//!   holds `config/default.yaml` (the repository for `target/release/newscls`), else the working
//!   directory (an image that sets its paths in its config file).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The config file the installation ships, relative to its root.
pub const SHIPPED_CONFIG: &str = "config/default.yaml";

/// Who set a path, which decides what a relative one is relative to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin<'a> {
    /// A flag or an environment variable.
    Typed,
    /// The config file at this path.
    File(&'a Path),
    /// The built-in default.
    Default,
}

/// `path` made to point where its origin meant; absolute paths are kept.
pub fn resolve(path: &Path, origin: Origin<'_>) -> PathBuf {
    if path.is_absolute() {
        return path.to_path_buf();
    }
    match origin {
        Origin::Typed => path.to_path_buf(),
        Origin::File(file) => match file.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.join(path),
            _ => path.to_path_buf(),
        },
        Origin::Default => in_installation(path),
    }
}

/// `path` under the installation's root, or as given when there is no installation.
pub fn in_installation(path: &Path) -> PathBuf {
    match installation_root() {
        Some(root) => root.join(path),
        None => path.to_path_buf(),
    }
}

/// The nearest directory above the running executable that holds [`SHIPPED_CONFIG`].
pub fn installation_root() -> Option<&'static Path> {
    static ROOT: OnceLock<Option<PathBuf>> = OnceLock::new();
    ROOT.get_or_init(|| {
        let exe = std::env::current_exe().ok()?;
        let exe = exe.canonicalize().unwrap_or(exe);
        exe.ancestors()
            .skip(1)
            .find(|dir| dir.join(SHIPPED_CONFIG).is_file())
            .map(Path::to_path_buf)
    })
    .as_deref()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_origin_resolves_against_its_own_place() {
        let relative = Path::new("models/x");
        assert_eq!(resolve(relative, Origin::Typed), PathBuf::from("models/x"));
        assert_eq!(
            resolve(
                relative,
                Origin::File(Path::new("/etc/newscls/config.yaml"))
            ),
            PathBuf::from("/etc/newscls/models/x")
        );
        assert_eq!(
            resolve(
                Path::new("../models/x"),
                Origin::File(Path::new("config/default.yaml"))
            ),
            PathBuf::from("config/../models/x")
        );
        assert_eq!(
            resolve(relative, Origin::File(Path::new("config.yaml"))),
            PathBuf::from("models/x")
        );
        assert_eq!(
            resolve(Path::new("/opt/m"), Origin::Default),
            PathBuf::from("/opt/m")
        );
    }

    #[test]
    fn the_test_binary_finds_the_repository_as_its_installation() {
        // target/debug/deps/<test binary>: the repository above it ships config/default.yaml.
        let root = installation_root().expect("an installation above the test binary");
        assert_eq!(
            root.canonicalize().expect("root"),
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .canonicalize()
                .expect("manifest dir")
        );
        assert_eq!(
            resolve(Path::new("models/x"), Origin::Default),
            root.join("models/x")
        );
    }
}
