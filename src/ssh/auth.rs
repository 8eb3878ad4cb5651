//! Credentials for logging in: private key files (OpenSSH, PEM, PKCS#8; encrypted ones with a
//! passphrase), the ssh-agent, a password. Key files are loaded, and passphrases checked, before
//! anything is created.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use russh::keys::{Certificate, HashAlg, PrivateKey};

use super::Error;

/// A password, never shown by `Debug` or `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(pub String);

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(***)")
    }
}

/// What a connection may log in with, tried in this order: keys, the agent, the password.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// Loaded private keys, with the file each came from.
    pub keys: Vec<(PathBuf, Arc<PrivateKey>)>,
    /// OpenSSH certificates of those keys (`KEY-cert.pub` beside a key file, as `ssh` finds
    /// them), with their files: each is offered before its plain key.
    pub certificates: Vec<(PathBuf, Certificate)>,
    /// Try the identities of the ssh-agent listening on this socket (`$SSH_AUTH_SOCK`).
    pub agent: Option<PathBuf>,
    /// A password.
    pub password: Option<Password>,
}

impl Credentials {
    /// Loads key files (with one passphrase for the encrypted ones); fails on the first file that
    /// cannot be read or decrypted, naming it.
    pub fn from_key_files(files: &[PathBuf], passphrase: Option<&str>) -> Result<Self, Error> {
        let keys: Vec<_> = files
            .iter()
            .map(|path| Ok((path.clone(), Arc::new(load_key(path, passphrase)?))))
            .collect::<Result<_, Error>>()?;
        let certificates = keys
            .iter()
            .filter_map(|(path, _)| load_certificate_beside(path).transpose())
            .collect::<Result<_, Error>>()?;
        Ok(Credentials {
            keys,
            certificates,
            agent: None,
            password: None,
        })
    }

    /// The user's default keys (`~/.ssh/id_ed25519`, `id_ecdsa`, `id_rsa`) that load without a
    /// passphrase, and the agent when `$SSH_AUTH_SOCK` is set: what `ssh` would try.
    pub fn defaults() -> Self {
        let keys: Vec<(PathBuf, Arc<PrivateKey>)> = default_key_files()
            .into_iter()
            .filter_map(|path| match load_key(&path, None) {
                Ok(key) => Some((path, Arc::new(key))),
                Err(e) => {
                    tracing::warn!("skipping default key: {e}");
                    None
                }
            })
            .collect();
        let certificates = keys
            .iter()
            .filter_map(|(path, _)| match load_certificate_beside(path) {
                Ok(found) => found,
                Err(e) => {
                    tracing::warn!("skipping a certificate: {e}");
                    None
                }
            })
            .collect();
        Credentials {
            keys,
            certificates,
            agent: std::env::var_os("SSH_AUTH_SOCK").map(PathBuf::from),
            password: None,
        }
    }

    /// Whether there is any way to log in at all.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.agent.is_none() && self.password.is_none()
    }
}

impl Credentials {
    /// The certificates of `key`, to offer before it.
    pub fn certificates_of(
        &self,
        key: &PrivateKey,
    ) -> impl Iterator<Item = &(PathBuf, Certificate)> {
        let data = key.public_key().key_data().clone();
        self.certificates
            .iter()
            .filter(move |(_, cert)| *cert.public_key() == data)
    }
}

/// The certificate beside a key file (`KEY-cert.pub`), when there is one.
///
/// # Errors
/// [`Error::Key`] naming the certificate file when it cannot be read or parsed.
pub fn load_certificate_beside(key: &Path) -> Result<Option<(PathBuf, Certificate)>, Error> {
    let path = PathBuf::from(format!("{}-cert.pub", key.display()));
    if !path.exists() {
        return Ok(None);
    }
    load_certificate(&path).map(Some)
}

/// An OpenSSH certificate file (ssh_config's `CertificateFile`).
///
/// # Errors
/// [`Error::Key`] naming the file when it cannot be read or parsed.
pub fn load_certificate(path: &Path) -> Result<(PathBuf, Certificate), Error> {
    let path = path.to_path_buf();
    let fail = |reason: String| Error::Key {
        path: path.clone(),
        reason,
    };
    let text = crate::files::read_to_string(&path)
        .map_err(|e| fail(format!("cannot be read ({})", crate::error_chain(&e))))?;
    let cert = Certificate::from_openssh(text.trim()).map_err(|e| {
        fail(format!(
            "is not an OpenSSH certificate ({e}); sign the public key with `ssh-keygen -s CA -I ID -n USER KEY.pub`"
        ))
    })?;
    Ok((path, cert))
}

/// The default key files of the user that exist.
pub fn default_key_files() -> Vec<PathBuf> {
    let Some(home) = std::env::var_os("HOME") else {
        return Vec::new();
    };
    ["id_ed25519", "id_ecdsa", "id_rsa"]
        .iter()
        .map(|name| Path::new(&home).join(".ssh").join(name))
        .filter(|p| p.exists())
        .collect()
}

/// Loads one private key file, decrypting it with `passphrase` when it is encrypted.
pub fn load_key(path: &Path, passphrase: Option<&str>) -> Result<PrivateKey, Error> {
    let fail = |reason: String| Error::Key {
        path: path.to_path_buf(),
        reason,
    };
    let text = crate::files::read_to_string(path).map_err(|e| {
        fail(format!(
            "cannot be read ({}); give the path of a private key file",
            crate::error_chain(&e)
        ))
    })?;
    if text.starts_with("ssh-") || text.starts_with("ecdsa-") {
        return Err(fail(
            "is a public key; give the private key (the same path without .pub)".into(),
        ));
    }
    warn_if_readable_by_others(path);
    match russh::keys::decode_secret_key(&text, passphrase) {
        Ok(key) => Ok(key),
        Err(russh::keys::Error::KeyIsEncrypted) => Err(fail(
            "is encrypted: give its passphrase in the NODEUP_KEY_PASSPHRASE environment variable"
                .into(),
        )),
        Err(e) if passphrase.is_some() && is_encrypted(&text) => Err(fail(format!(
            "could not be decrypted: wrong passphrase? ({e})"
        ))),
        Err(e) => Err(fail(format!(
            "is not a private key nodeup can read (OpenSSH, PEM or PKCS#8): {e}"
        ))),
    }
}

/// The permission bits that let others than the owner read a file.
const GROUP_OTHER_BITS: u32 = 0o077;

/// OpenSSH refuses a private key that others can read; nodeup uses it, but says so.
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode();
        if mode & GROUP_OTHER_BITS != 0 {
            tracing::warn!(
                "the private key {} can be read by others (mode {:04o}); OpenSSH would refuse it: \
                 chmod 600 {}",
                path.display(),
                mode & 0o7777,
                path.display()
            );
        }
    }
}

fn is_encrypted(text: &str) -> bool {
    if text.contains("ENCRYPTED") || text.contains("Proc-Type: 4,ENCRYPTED") {
        return true;
    }
    // OpenSSH format: the cipher name is inside the base64 body.
    russh::keys::ssh_key::PrivateKey::from_openssh(text).is_ok_and(|k| k.is_encrypted())
}

/// The hash to sign with: RSA keys need one the server accepts; others need none.
pub fn rsa_hash(key: &PrivateKey, best: Option<Option<HashAlg>>) -> Option<HashAlg> {
    if key.algorithm().is_rsa() {
        best.flatten().or(Some(HashAlg::Sha256))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn keygen(dir: &Path, name: &str, args: &[&str]) -> PathBuf {
        let path = dir.join(name);
        let status = Command::new("ssh-keygen")
            .args(["-q", "-f"])
            .arg(&path)
            .args(args)
            .status()
            .unwrap();
        assert!(status.success());
        path
    }

    #[test]
    fn loads_plain_encrypted_pem_and_pkcs8_keys() {
        let dir = tempfile::tempdir().unwrap();
        let plain = keygen(dir.path(), "plain", &["-t", "ed25519", "-N", ""]);
        load_key(&plain, None).unwrap();
        let enc = keygen(dir.path(), "enc", &["-t", "ed25519", "-N", "open sesame"]);
        load_key(&enc, Some("open sesame")).unwrap();
        let err = load_key(&enc, None).unwrap_err().to_string();
        assert!(err.contains("is encrypted: give its passphrase"), "{err}");
        let err = load_key(&enc, Some("wrong")).unwrap_err().to_string();
        assert!(err.contains("wrong passphrase"), "{err}");
        let pem = keygen(
            dir.path(),
            "pem",
            &["-t", "rsa", "-b", "2048", "-m", "PEM", "-N", ""],
        );
        load_key(&pem, None).unwrap();
        let pkcs8 = keygen(dir.path(), "p8", &["-t", "ecdsa", "-m", "PKCS8", "-N", ""]);
        load_key(&pkcs8, None).unwrap();
        let err = load_key(&plain.with_extension("pub"), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("is a public key"), "{err}");
        let err = load_key(&dir.path().join("missing"), None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("missing") && err.contains("cannot be read"),
            "{err}"
        );
    }

    #[test]
    fn passwords_do_not_show() {
        let creds = Credentials {
            password: Some(Password("hunter2".into())),
            ..Default::default()
        };
        assert!(!format!("{creds:?}").contains("hunter2"));
    }
}
