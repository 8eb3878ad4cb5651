//! The file step: upload a local file to a path on the node.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use super::{read_local, Context, Error, StepResult};
use crate::ssh::{quote, temp_name, UploadOptions};

/// What root runs to put a file uploaded under the login user's home into place: parent
/// directories, a temporary name next to the target, the mode, then an atomic rename.
/// `$1` the uploaded file, `$2` the target, `$3` the mode.
const INSTALL_AS_ROOT: &str = r#"set -e
dir=$(dirname -- "$2")
mkdir -p -- "$dir"
t=$(mktemp -- "$dir/.nodeup.XXXXXXXX")
trap 'rm -f -- "$t"' EXIT
cat -- "$1" >"$t"
chmod -- "$3" "$t"
mv -f -- "$t" "$2""#;

/// Uploads a local file to `target`, with an explicit mode or the source's own; written under a
/// temporary name and renamed into place. With `sudo`, the file is put in place by root.
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
        let sudo = ctx.sudo(self.sudo);
        if sudo.is_empty() {
            let options = UploadOptions {
                mode: Some(mode),
                create_parents: true,
            };
            let tmp = temp_name(&self.target);
            ctx.track(&tmp);
            ctx.session
                .upload_via(&data, &self.target, &tmp, &options)
                .await?;
            ctx.untrack(&tmp);
        } else {
            let dir = ctx.private_dir().await?;
            let staged = format!("{dir}/file");
            let options = UploadOptions {
                mode: Some(0o600),
                create_parents: false,
            };
            let installed = async {
                ctx.session.upload(&data, &staged, &options).await?;
                let command = format!(
                    "{sudo}sh -c {} sh {} {} {:o}",
                    quote(INSTALL_AS_ROOT),
                    quote(&staged),
                    quote(&self.target),
                    mode
                );
                ctx.check(&command, &format!("installing {} as root", self.target))
                    .await
            }
            .await;
            let cleaned = ctx.remove(&dir, false).await;
            installed.and(cleaned)?;
        }
        Ok(StepResult {
            note: format!(
                "uploaded {} ({} bytes) to {} (mode {:04o})",
                self.source.display(),
                data.len(),
                self.target,
                mode
            ),
            ..Default::default()
        })
    }
}
