//! The file step: upload a local file to a path on the node.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use super::{read_local, Context, Error, StepResult};
use crate::ssh::{temp_name, UploadOptions};

/// Uploads a local file to `target`, with an explicit mode or the source's own; written under a
/// temporary name and renamed into place, in one command. With `sudo`, root writes it.
#[derive(Debug, Clone)]
pub struct FileStep {
    /// The local file.
    pub source: PathBuf,
    /// Where it goes on the node (relative paths are under the login user's home).
    pub target: String,
    /// Its mode on the node; the source's mode when `None`.
    pub mode: Option<u32>,
    /// Put it in place as root (when the login user is not root).
    pub sudo: bool,
}

impl FileStep {
    /// Uploads `source` to `target` with the source's mode.
    pub fn new(source: impl Into<PathBuf>, target: &str) -> Self {
        FileStep {
            source: source.into(),
            target: target.to_string(),
            mode: None,
            sudo: false,
        }
    }

    pub(super) fn validate(&self) -> Result<(), String> {
        let meta = std::fs::metadata(&self.source)
            .map_err(|e| format!("cannot read {}: {e}", self.source.display()))?;
        if !meta.is_file() {
            return Err(format!("{} is not a file", self.source.display()));
        }
        std::fs::File::open(&self.source)
            .map_err(|e| format!("cannot read {}: {e}", self.source.display()))?;
        if self.target.trim().is_empty() || self.target.ends_with('/') {
            return Err("the target must be a file path on the node, e.g. /etc/motd".into());
        }
        if self.target.chars().any(char::is_control) {
            return Err(
                "the target holds a newline or another control character: remove it".into(),
            );
        }
        if self.mode.is_some_and(|m| m > 0o7777) {
            return Err("the mode must be octal permission bits, at most 7777".into());
        }
        Ok(())
    }

    pub(super) async fn run(&self, ctx: &Context<'_>) -> Result<StepResult, Error> {
        let data = read_local(&self.source).map_err(Error::Local)?;
        let mode = match self.mode {
            Some(mode) => mode,
            None => {
                std::fs::metadata(&self.source)
                    .map_err(|e| {
                        Error::Local(format!("cannot read {}: {e}", self.source.display()))
                    })?
                    .permissions()
                    .mode()
                    & 0o7777
            }
        };
        let options = UploadOptions {
            mode: Some(mode),
            create_parents: true,
            sudo: !ctx.sudo(self.sudo).is_empty(),
        };
        let (size, tmp) = (data.len(), temp_name(&self.target));
        ctx.track(&tmp);
        ctx.session
            .upload_via(data, &self.target, &tmp, &options)
            .await?;
        ctx.untrack(&tmp);
        Ok(StepResult {
            note: format!(
                "uploaded {} ({} bytes) to {} (mode {:04o})",
                self.source.display(),
                size,
                self.target,
                mode
            ),
            ..Default::default()
        })
    }
}
