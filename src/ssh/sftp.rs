//! SFTP: append, read, delete, modes, directories.

use russh_sftp::client::error::Error as SftpError;
use russh_sftp::protocol::{FileAttributes, OpenFlags, StatusCode};
use tokio::io::AsyncWriteExt;

use super::{Error, SshSession};

impl SshSession {
    fn sftp_error(&self, what: String) -> impl FnOnce(SftpError) -> Error + '_ {
        move |source| Error::Sftp {
            what,
            addr: self.addr(),
            source: Box::new(source),
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
        Box::pin(self.create_dir_all(super::upload::parent_of(dir), mode)).await?;
        match sftp.create_dir(dir.to_string()).await {
            Ok(()) => {}
            // Created meanwhile by someone else: fine.
            Err(_) if sftp.try_exists(dir.to_string()).await.unwrap_or(false) => return Ok(()),
            Err(e) => return Err(self.sftp_error(format!("creating directory {dir}"))(e)),
        }
        self.chmod(dir, mode).await
    }
}
