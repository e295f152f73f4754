//! A model directory on disk (`model.dir`): the bundled model, or a mounted volume a deployment
//! replaces. It has no version of its own before loading (config.json says), so every check
//! fetches it: a reload always reloads it.

use std::path::PathBuf;

use super::{Check, Fetched, ModelSource, SourceError};

pub struct DirectorySource {
    dir: PathBuf,
}

impl DirectorySource {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }
}

impl ModelSource for DirectorySource {
    fn describe(&self) -> String {
        format!("directory {}", self.dir.display())
    }

    fn check(&self, _wanted: &dyn Fn(&str) -> bool) -> Result<Check, SourceError> {
        Ok(Check::Fetched(Fetched {
            dir: self.dir.clone(),
            version: None,
            registry_name: None,
            description: self.describe(),
        }))
    }
}
