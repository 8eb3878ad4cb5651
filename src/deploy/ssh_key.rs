//! The ssh-key step: add a public key to the login user's `~/.ssh/authorized_keys`.

use super::{Context, Error, StepResult};

/// Authorizes a public key for the login user: creates `~/.ssh` (0700) and `authorized_keys` (0600)
/// when missing, adds a missing trailing newline before the key, and skips a key already there.
#[derive(Debug, Clone)]
pub struct SshKeyStep {
    /// The public key, one OpenSSH line (`ssh-ed25519 AAAA... comment`).
    pub key: String,
}

impl SshKeyStep {
    /// A step for this public key.
    pub fn new(key: &str) -> Self {
        SshKeyStep {
            key: key.trim().to_string(),
        }
    }

    pub(super) fn validate(&self) -> Result<(), String> {
        if self.key.lines().count() != 1 {
            return Err("give exactly one public key, on one line".into());
        }
        russh::keys::PublicKey::from_openssh(&self.key)
            .map(|_| ())
            .map_err(|e| format!("the public key does not parse ({e}): give one line such as `ssh-ed25519 AAAA... comment`"))
    }

    /// The key's base64 blob, which identifies it whatever its comment or options.
    fn blob(&self) -> &str {
        self.key.split_whitespace().nth(1).unwrap_or("")
    }

    pub(super) async fn run(&self, ctx: &Context<'_>) -> Result<StepResult, Error> {
        let dir = format!("{}/.ssh", ctx.home.trim_end_matches('/'));
        let file = format!("{dir}/authorized_keys");
        ctx.session.create_dir_all(&dir, 0o700).await?;
        let existing = ctx.session.read_file(&file).await?.unwrap_or_default();
        let text = String::from_utf8_lossy(&existing);
        let present = text
            .lines()
            .any(|line| line.split_whitespace().any(|word| word == self.blob()));
        if present {
            return Ok(StepResult {
                note: format!("key already in {file}"),
                ..Default::default()
            });
        }
        let mut data = Vec::new();
        if !existing.is_empty() && !existing.ends_with(b"\n") {
            data.push(b'\n');
        }
        data.extend_from_slice(self.key.as_bytes());
        data.push(b'\n');
        // Created with mode 0600 when missing; an existing file keeps its mode.
        ctx.session.append(&data, &file).await?;
        Ok(StepResult {
            note: format!("key added to {file}"),
            ..Default::default()
        })
    }
}
