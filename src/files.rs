//! Reading the small files a user names (step files, inventories, ssh_config and what it
//! includes, private keys and certificates, cookie files): only regular files, and only up to a
//! bound, so that `/dev/zero`, a FIFO or a directory given by mistake is refused at once with the
//! file named, rather than read forever.

use std::io::Read;
use std::path::{Path, PathBuf};

/// The most nodeup reads of such a file: far more than any of them holds (a large inventory of
/// 100,000 hosts is a few MB), and a bound on one that never ends.
pub const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// A file that cannot be read as one of nodeup's inputs.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// It is a device, a FIFO, a socket or a directory: not a file to read.
    #[error("{} is {what}, not a regular file: give the path of a file", path.display())]
    NotRegular {
        /// The file.
        path: PathBuf,
        /// What it is (`a character device`, `a directory` ...).
        what: &'static str,
    },
    /// It is larger than any such file should be.
    #[error("{} is larger than {} MB: is it the right file?", path.display(), MAX_FILE_BYTES / 1024 / 1024)]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// It cannot be read.
    #[error("{} cannot be read", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl FileError {
    /// Whether the file does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, FileError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

/// What a file that is not regular is, in words.
fn kind_of(meta: &std::fs::Metadata) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_file() {
        None
    } else if t.is_dir() {
        Some("a directory")
    } else if t.is_char_device() {
        Some("a character device")
    } else if t.is_block_device() {
        Some("a block device")
    } else if t.is_fifo() {
        Some("a FIFO")
    } else if t.is_socket() {
        Some("a socket")
    } else {
        Some("not a file")
    }
}

/// Checks that `path` (links followed) is a regular file; it is not opened.
///
/// # Errors
/// It is not one, or cannot be looked at.
pub fn check_regular(path: &Path) -> Result<(), FileError> {
    let meta = std::fs::metadata(path).map_err(|source| FileError::Io {
        path: path.into(),
        source,
    })?;
    match kind_of(&meta) {
        Some(what) => Err(FileError::NotRegular {
            path: path.into(),
            what,
        }),
        None => Ok(()),
    }
}

/// The bytes of a regular file, at most [`MAX_FILE_BYTES`].
///
/// # Errors
/// It is not a regular file, is larger, or cannot be read.
pub fn read(path: &Path) -> Result<Vec<u8>, FileError> {
    let io = |source| FileError::Io {
        path: path.into(),
        source,
    };
    // Looked at before it is opened: opening a FIFO would wait for a writer.
    check_regular(path)?;
    let file = std::fs::File::open(path).map_err(io)?;
    // And once open: what is read is what was checked.
    let meta = file.metadata().map_err(io)?;
    if let Some(what) = kind_of(&meta) {
        return Err(FileError::NotRegular {
            path: path.into(),
            what,
        });
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(FileError::TooLarge { path: path.into() });
    }
    Ok(bytes)
}

/// The text of a regular file, at most [`MAX_FILE_BYTES`].
///
/// # Errors
/// As [`read`]; text that is not UTF-8 too.
pub fn read_to_string(path: &Path) -> Result<String, FileError> {
    String::from_utf8(read(path)?).map_err(|e| FileError::Io {
        path: path.into(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e.utf8_error()),
    })
}

/// Makes `path`, empty and mode 0600, when it is missing, with its directory (mode 0700) when
/// that is missing too: for files that hold what is nobody else's business (the journal, known
/// hosts), which their writers would otherwise make 0644. An existing file is left as it is.
///
/// # Errors
/// The directory or the file cannot be made.
pub fn create_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.is_dir() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endless_and_odd_files_are_refused_at_once() {
        let e = read(Path::new("/dev/zero")).unwrap_err().to_string();
        assert!(e.contains("/dev/zero is a character device"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let e = read(dir.path()).unwrap_err().to_string();
        assert!(e.contains("is a directory"), "{e}");
        let fifo = dir.path().join("fifo");
        assert!(std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        assert!(matches!(
            check_regular(&fifo),
            Err(FileError::NotRegular { what: "a FIFO", .. })
        ));
        let file = dir.path().join("f");
        std::fs::write(&file, "hello").unwrap();
        assert_eq!(read_to_string(&file).unwrap(), "hello");
        assert!(read(&dir.path().join("missing"))
            .unwrap_err()
            .is_not_found());
    }
}
