//! SFTP: upload (a mode, parent directories, written under a temporary name then renamed into
//! place, so that nobody sees half a file), append, read, delete.

use russh_sftp::client::error::Error as SftpError;
use russh_sftp::protocol::{FileAttributes, OpenFlags, StatusCode};
use tokio::io::AsyncWriteExt;

use super::{quote, Error, ExecOptions, SshSession};

/// How a file is uploaded.
#[derive(Debug, Clone, Copy, Default)]
pub struct UploadOptions {
    /// The file's permission bits (0o644 ...); the server's default (0o644 less its umask) if `None`.
    pub mode: Option<u32>,
    /// Create missing parent directories (mode 0o755).
    pub create_parents: bool,
}

/// The directory part of a remote path (`.` for a bare name).
pub fn parent_of(path: &str) -> &str {
    match path.trim_end_matches('/').rfind('/') {
        Some(0) => "/",
        Some(i) => &path[..i],
        None => ".",
    }
}

/// A temporary name for writing `path`: in the same directory, hidden, unpredictable.
pub fn temp_name(path: &str) -> String {
    let dir = parent_of(path);
    let name = path.rsplit('/').next().unwrap_or(path);
    format!(
        "{}/.{name}.nodeup-{:016x}",
        dir.trim_end_matches('/'),
        rand::random::<u64>()
    )
}

impl SshSession {
    fn sftp_error(&self, what: String) -> impl FnOnce(SftpError) -> Error + '_ {
        move |source| Error::Sftp {
            what,
            addr: self.addr(),
            source: Box::new(source),
        }
    }

    /// Writes `data` to `path` atomically: a temporary file with an unpredictable name in the same
    /// directory ([`temp_name`]), created exclusively with mode 0600, written, given its mode, then
    /// renamed over `path`.
    pub async fn upload(
        &self,
        data: &[u8],
        path: &str,
        options: &UploadOptions,
    ) -> Result<(), Error> {
        self.upload_via(data, path, &temp_name(path), options).await
    }

    /// [`SshSession::upload`] through a temporary file the caller named (so that it can remove it
    /// should the connection be lost before the rename).
    pub async fn upload_via(
        &self,
        data: &[u8],
        path: &str,
        tmp: &str,
        options: &UploadOptions,
    ) -> Result<(), Error> {
        let sftp = self.sftp().await?;
        if options.create_parents {
            self.create_dir_all(parent_of(path), 0o755).await?;
        }
        let tmp = tmp.to_string();
        let attrs = FileAttributes {
            permissions: Some(0o600),
            ..FileAttributes::empty()
        };
        let mut file = sftp
            .open_with_flags_and_attributes(
                tmp.clone(),
                OpenFlags::CREATE | OpenFlags::EXCLUDE | OpenFlags::WRITE,
                attrs,
            )
            .await
            .map_err(self.sftp_error(format!("creating {tmp}")))?;
        let written = async {
            file.write_all(data).await?;
            file.flush().await?;
            file.shutdown().await
        }
        .await;
        if let Err(e) = written {
            let _ = sftp.remove_file(tmp.clone()).await;
            return Err(self.sftp_error(format!("writing {tmp}"))(SftpError::IO(
                e.to_string(),
            )));
        }
        if let Some(mode) = options.mode {
            let attrs = FileAttributes {
                permissions: Some(mode & 0o7777),
                ..FileAttributes::empty()
            };
            if let Err(e) = sftp.set_metadata(tmp.clone(), attrs).await {
                let _ = sftp.remove_file(tmp.clone()).await;
                return Err(self.sftp_error(format!("setting the mode of {path}"))(e));
            }
        }
        let renamed = self.rename_over(&tmp, path).await;
        if renamed.is_err() {
            let _ = sftp.remove_file(tmp).await;
        }
        renamed
    }

    /// Renames `from` to `to`, replacing `to` if it exists (SFTP's own rename refuses to).
    async fn rename_over(&self, from: &str, to: &str) -> Result<(), Error> {
        let sftp = self.sftp().await?;
        match sftp.rename(from.to_string(), to.to_string()).await {
            Ok(()) => Ok(()),
            Err(first) => {
                // The target exists: rename(2) replaces it atomically, which `mv -f` does.
                let out = self
                    .exec(
                        &format!("mv -f -- {} {}", quote(from), quote(to)),
                        &ExecOptions::default(),
                    )
                    .await?;
                if out.status.as_ref().and_then(|s| s.code()) == Some(0) {
                    Ok(())
                } else {
                    Err(self.sftp_error(format!(
                        "renaming {from} to {to} ({})",
                        out.stderr.text().trim()
                    ))(first))
                }
            }
        }
    }

    /// Appends `data` to `path`, creating it (mode 0600) when missing.
    pub async fn append(&self, data: &[u8], path: &str) -> Result<(), Error> {
        let sftp = self.sftp().await?;
        let attrs = FileAttributes {
            permissions: Some(0o600),
            ..FileAttributes::empty()
        };
        let mut file = sftp
            .open_with_flags_and_attributes(
                path.to_string(),
                OpenFlags::CREATE | OpenFlags::APPEND | OpenFlags::WRITE,
                attrs,
            )
            .await
            .map_err(self.sftp_error(format!("opening {path}")))?;
        let written = async {
            file.write_all(data).await?;
            file.flush().await?;
            file.shutdown().await
        }
        .await;
        written.map_err(|e| {
            self.sftp_error(format!("appending to {path}"))(SftpError::IO(e.to_string()))
        })
    }

    /// Reads a whole file; `None` when it does not exist.
    pub async fn read_file(&self, path: &str) -> Result<Option<Vec<u8>>, Error> {
        let sftp = self.sftp().await?;
        match sftp.read(path.to_string()).await {
            Ok(data) => Ok(Some(data)),
            Err(SftpError::Status(s)) if s.status_code == StatusCode::NoSuchFile => Ok(None),
            Err(e) => Err(self.sftp_error(format!("reading {path}"))(e)),
        }
    }

    /// Deletes a file; a missing file is not an error.
    pub async fn remove_file(&self, path: &str) -> Result<(), Error> {
        let sftp = self.sftp().await?;
        match sftp.remove_file(path.to_string()).await {
            Ok(()) => Ok(()),
            Err(SftpError::Status(s)) if s.status_code == StatusCode::NoSuchFile => Ok(()),
            Err(e) => Err(self.sftp_error(format!("deleting {path}"))(e)),
        }
    }

    /// Sets a path's permission bits.
    pub async fn chmod(&self, path: &str, mode: u32) -> Result<(), Error> {
        let sftp = self.sftp().await?;
        let attrs = FileAttributes {
            permissions: Some(mode & 0o7777),
            ..FileAttributes::empty()
        };
        sftp.set_metadata(path.to_string(), attrs)
            .await
            .map_err(self.sftp_error(format!("setting the mode of {path}")))
    }

    /// Creates `dir` and its missing parents with `mode`.
    pub async fn create_dir_all(&self, dir: &str, mode: u32) -> Result<(), Error> {
        let sftp = self.sftp().await?;
        if dir == "." || dir == "/" || dir.is_empty() {
            return Ok(());
        }
        if sftp
            .try_exists(dir.to_string())
            .await
            .map_err(self.sftp_error(format!("looking up {dir}")))?
        {
            return Ok(());
        }
        Box::pin(self.create_dir_all(parent_of(dir), mode)).await?;
        match sftp.create_dir(dir.to_string()).await {
            Ok(()) => {}
            // Created meanwhile by someone else: fine.
            Err(_) if sftp.try_exists(dir.to_string()).await.unwrap_or(false) => return Ok(()),
            Err(e) => return Err(self.sftp_error(format!("creating directory {dir}"))(e)),
        }
        self.chmod(dir, mode).await
    }
}

#[cfg(test)]
mod tests {
    use super::parent_of;

    #[test]
    fn parents() {
        assert_eq!(parent_of("/etc/motd"), "/etc");
        assert_eq!(parent_of("/motd"), "/");
        assert_eq!(parent_of("motd"), ".");
        assert_eq!(parent_of("a/b/"), "a");
    }
}
