//! Where a model's files come from: one trait, [`ModelSource`], with one implementation per
//! kind of source — a directory ([`DirectorySource`]) or an MLflow registry URI
//! ([`MlflowSource`]). A source answers two questions: which version it names now (fetching its
//! files into a local directory when the caller wants that version), and which copy it has
//! cached for a start without the source. Loading, checking and swapping a version is the
//! caller's (the reloader), the same for every source.

mod cache;
mod directory;
mod mlflow;

pub use directory::DirectorySource;
pub use mlflow::{MlflowSource, ModelUri, Reference, RegistryError};

use crate::infra::config::ModelConfig;

/// Why a source could not say or fetch its version.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

impl SourceError {
    /// The version itself is at fault: refuse it until the source names another.
    pub fn blames_version(&self) -> bool {
        match self {
            SourceError::Registry(e) => e.blames_version(),
        }
    }
}

/// A version's files on disk: what the pipeline loads (it lives beside the loader, in
/// [`crate::pipeline::model`], so the pipeline never depends on where versions come from).
pub use crate::pipeline::model::Fetched;

/// What [`ModelSource::check`] found.
#[derive(Debug)]
pub enum Check {
    /// The source names this version and the caller did not want it.
    Unchanged(String),
    Fetched(Fetched),
}

pub trait ModelSource: Send + Sync {
    /// For logs and errors, e.g. `directory models/x` or `models:/news@champion`.
    fn describe(&self) -> String;

    /// Whether the source can name a new version by itself (and so is worth polling).
    fn polls(&self) -> bool {
        false
    }

    /// Looks up the version the source names now; fetches it when `wanted(version)` says so
    /// (a source that cannot tell its version without loading always fetches). Blocks.
    fn check(&self, wanted: &dyn Fn(&str) -> bool) -> Result<Check, SourceError>;

    /// The copy kept from an earlier run, for a start while the source is down.
    fn cached(&self) -> Option<Fetched> {
        None
    }

    /// `fetched` loaded and now serves: remember it, and drop copies no longer needed.
    fn served(&self, _fetched: &Fetched) {}
}

/// The source `config` names: `model.uri` if set, else `model.dir`.
pub fn from_config(config: &ModelConfig) -> Result<Box<dyn ModelSource>, SourceError> {
    Ok(match &config.uri {
        Some(uri) => Box::new(MlflowSource::new(uri.parse()?, config)),
        None => Box::new(DirectorySource::new(config.dir.clone())),
    })
}
