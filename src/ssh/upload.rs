//! Uploads: a file put in place by one command, its bytes on the command's input (one round trip
//! on a ready channel, and the channel's whole window in flight). The bytes are written under a
//! temporary, unpredictable name in the target's directory (created exclusively, 0600, never
//! through a link), counted (a lost connection ends the input early, and half a file is never
//! renamed into place), given their mode, then renamed over the target, so that a reader sees the
//! whole old file or the whole new one.

use super::{Error, ExecOptions, ExitStatus, ShScript, SshSession};

/// How a file is uploaded.
#[derive(Debug, Clone, Copy, Default)]
pub struct UploadOptions {
    /// The file's permission bits (0o644 ...); 0o600 if `None`.
    pub mode: Option<u32>,
    /// Create missing parent directories (mode 0o755).
    pub create_parents: bool,
    /// Put the file in place as root, with `sudo -n` (for a login user that is not root).
    pub sudo: bool,
}

/// The command that puts a file in place from its input: `$1` the target, `$2` the temporary
/// name, `$3` the mode (octal), `$4` the length in bytes, `$5` whether to make parent directories
/// (`1`). What it made is removed on any failure, and when sshd hangs it up (a lost connection).
const INSTALL: &str = r#"target=$1 tmp=$2
case $target in */*) dir=${target%/*} && dir=${dir:-/} ;; *) dir=. ;; esac
if [ "$5" = 1 ] && [ ! -d "$dir" ]; then (umask 022 && mkdir -p -- "$dir") || exit 1; fi
umask 077
set -C
exec 3>"$tmp" || exit 1
fail() { rm -f -- "$tmp"; exit 1; }
trap fail HUP INT TERM PIPE
cat >&3 || fail
exec 3>&-
size=$(($(wc -c <"$tmp")))
if [ "$size" -ne "$4" ]; then echo "received $size of $4 bytes" >&2; fail; fi
chmod -- "$3" "$tmp" || fail
mv -f -- "$tmp" "$target" || fail"#;

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
    /// Writes `data` to `path` atomically, through a temporary name ([`temp_name`]).
    ///
    /// # Errors
    /// [`Error::Upload`] when the node could not put the file in place (its message says why),
    /// or a lost connection.
    pub async fn upload(
        &self,
        data: &[u8],
        path: &str,
        options: &UploadOptions,
    ) -> Result<(), Error> {
        self.upload_via(data.to_vec(), path, &temp_name(path), options)
            .await
    }

    /// [`SshSession::upload`] through a temporary name the caller chose (so that it can remove
    /// it should the connection be lost before the rename), taking the bytes it sends.
    ///
    /// # Errors
    /// As [`SshSession::upload`].
    pub async fn upload_via(
        &self,
        data: Vec<u8>,
        path: &str,
        tmp: &str,
        options: &UploadOptions,
    ) -> Result<(), Error> {
        let install = ShScript {
            text: INSTALL,
            args: vec![
                path.to_string(),
                tmp.to_string(),
                format!("{:o}", options.mode.unwrap_or(0o600) & 0o7777),
                data.len().to_string(),
                u8::from(options.create_parents).to_string(),
            ],
            sudo: options.sudo,
            name: format!("writing {path}"),
        };
        let exec = ExecOptions {
            stdin: Some(data),
            ..Default::default()
        };
        let out = self.exec_script(&install, &exec).await?;
        if out.status == Some(ExitStatus::Code(0)) {
            return Ok(());
        }
        Err(Error::Upload {
            path: path.to_string(),
            addr: self.addr(),
            status: out.status.map(|s| s.to_string()).unwrap_or_default(),
            message: out.stderr.text().trim().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{parent_of, temp_name};

    #[test]
    fn parents() {
        assert_eq!(parent_of("/etc/motd"), "/etc");
        assert_eq!(parent_of("/motd"), "/");
        assert_eq!(parent_of("motd"), ".");
        assert_eq!(parent_of("a/b/"), "a");
    }

    #[test]
    fn temporary_names_sit_beside_the_target_and_differ() {
        let (a, b) = (temp_name("/etc/motd"), temp_name("/etc/motd"));
        assert!(a.starts_with("/etc/.motd.nodeup-"), "{a}");
        assert_ne!(a, b);
        assert!(temp_name("motd").starts_with("./.motd.nodeup-"));
    }
}
