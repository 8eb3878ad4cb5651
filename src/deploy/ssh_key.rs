//! The ssh-key step: add a public key to the login user's `~/.ssh/authorized_keys`.

use super::{Context, Error, StepResult};
use crate::ssh::ShScript;

/// What authorizes a key, in one command (one round trip): `$1` the authorized_keys file, `$2` the
/// key's base64 blob, `$3` the key line. Prints `present` or `added`.
const AUTHORIZE: &str = r#"umask 077
[ -d "${1%/*}" ] || mkdir -p -- "${1%/*}" || exit 1
if [ -f "$1" ] && awk -v b="$2" '{ for (i = 1; i <= NF; i++) if ($i == b) f = 1 } END { exit !f }' "$1"; then
  echo present
  exit 0
fi
if [ -s "$1" ] && [ -n "$(tail -c 1 -- "$1")" ]; then echo >>"$1" || exit 1; fi
printf '%s\n' "$3" >>"$1" && echo added"#;

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
        let file = format!("{}/.ssh/authorized_keys", ctx.home.trim_end_matches('/'));
        let authorize = ShScript {
            text: AUTHORIZE,
            args: vec![file.clone(), self.blob().to_string(), self.key.clone()],
            sudo: false,
            name: format!("adding the key to {file}"),
        };
        let out = ctx.helper(&authorize, None).await?;
        let note = if out.stdout.text().trim() == "present" {
            format!("key already in {file}")
        } else {
            format!("key added to {file}")
        };
        Ok(StepResult {
            note,
            ..Default::default()
        })
    }
}
