//! OpenSSH client configuration (`~/.ssh/config`, `/etc/ssh/ssh_config`, or one file given with
//! `-F`), read with the `ssh2-config` crate: `Host` patterns (`*`, `?`, `!`), `Include`, and the
//! first value obtained winning, as OpenSSH does.
//!
//! nodeup applies `HostName`, `User`, `Port`, `IdentityFile`, `IdentitiesOnly`, `CertificateFile`,
//! `ProxyJump`, `UserKnownHostsFile`, `StrictHostKeyChecking`, `ConnectTimeout` and
//! `ServerAliveInterval`; other directives are listed as not applied ([`HostConfig::ignored`]).
//! Two are refused rather than skipped, since skipping them would change where nodeup connects or
//! what it trusts: `ProxyCommand` for a host nodeup connects to, and `Match` blocks anywhere (the
//! parser cannot tell which lines they hold).

use std::fmt;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::collections::HashMap;
use std::sync::Mutex;

use ssh2_config::{HostParams, ParseRule};

use super::{Hop, HostKeyPolicy, Jump};

/// The system-wide configuration, read after the user's.
pub const SYSTEM_CONFIG: &str = "/etc/ssh/ssh_config";

/// Directives nodeup applies (lower case), beside those `ssh2-config` reads into fields.
const APPLIED_RAW: [&str; 4] = [
    "identitiesonly",
    "userknownhostsfile",
    "stricthostkeychecking",
    "proxycommand",
];

/// A configuration that cannot be used: the file, and why.
#[derive(Debug, thiserror::Error)]
#[error("ssh config {}: {message}", path.display())]
pub struct ConfigError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong, and the fix.
    pub message: String,
}

/// The configuration files read, the user's first; and the jump-host chains made from them, one
/// [`Jump`] (one connection) per chain, whichever node asks for it.
#[derive(Default)]
pub struct SshConfig {
    files: Vec<(PathBuf, ssh2_config::SshConfig)>,
    jumps: Mutex<HashMap<Vec<Hop>, Jump>>,
}

impl fmt::Debug for SshConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.files.iter().map(|(p, _)| p))
            .finish()
    }
}

/// What the configuration says of one host. Empty and `None` fields: it says nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostConfig {
    /// `HostName`: where to connect instead of the name given (`%h` replaced).
    pub host_name: Option<String>,
    /// `User`.
    pub user: Option<String>,
    /// `Port`.
    pub port: Option<u16>,
    /// `IdentityFile`s, `~` expanded, in order.
    pub identity_files: Vec<PathBuf>,
    /// `IdentitiesOnly yes`: only those files, not the agent's keys.
    pub identities_only: bool,
    /// `CertificateFile`.
    pub certificate_file: Option<PathBuf>,
    /// `ProxyJump`: `Some(empty)` for `ProxyJump none`.
    pub proxy_jump: Option<Vec<Hop>>,
    /// The first `UserKnownHostsFile`.
    pub known_hosts: Option<PathBuf>,
    /// `StrictHostKeyChecking`: yes and ask are strict, accept-new records new keys, no and off
    /// check nothing.
    pub host_key_policy: Option<HostKeyPolicy>,
    /// `ConnectTimeout`.
    pub connect_timeout: Option<Duration>,
    /// `ServerAliveInterval`.
    pub server_alive_interval: Option<Duration>,
    /// Directives set for this host that nodeup does not apply, by name in lower case.
    pub ignored: Vec<String>,
}

impl SshConfig {
    /// `~/.ssh/config`, then `/etc/ssh/ssh_config`: each when it exists.
    ///
    /// # Errors
    /// A file that cannot be read or parsed, or holds a `Match` block.
    pub fn load_default() -> Result<Self, ConfigError> {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let user = home.as_ref().map(|h| h.join(".ssh/config"));
        let mut config = SshConfig::default();
        for path in user.into_iter().chain([PathBuf::from(SYSTEM_CONFIG)]) {
            if path.exists() {
                config.files.push((path.clone(), parse(&path)?));
            }
        }
        Ok(config)
    }

    /// One file instead of those (`ssh -F FILE`); `none` reads nothing.
    ///
    /// # Errors
    /// As [`SshConfig::load_default`]; a missing file too.
    pub fn load_file(path: &Path) -> Result<Self, ConfigError> {
        if path == Path::new("none") {
            return Ok(SshConfig::default());
        }
        Ok(SshConfig {
            files: vec![(path.to_path_buf(), parse(path)?)],
            jumps: Mutex::default(),
        })
    }

    /// The chain through `hops`, each completed with what the configuration says of it
    /// (`HostName`, `User` and `Port` where the hop names none, `IdentityFile`,
    /// `UserKnownHostsFile`, `StrictHostKeyChecking accept-new`); the same [`Jump`] for the same
    /// chain. `None` for no hops. A hop's own `ProxyJump` is not followed.
    ///
    /// # Errors
    /// What [`SshConfig::host`] refuses for a hop.
    pub fn jump(&self, hops: &[Hop]) -> Result<Option<Jump>, ConfigError> {
        if hops.is_empty() {
            return Ok(None);
        }
        let mut resolved = Vec::with_capacity(hops.len());
        for hop in hops {
            resolved.push(self.hop(hop)?);
        }
        let mut jumps = self.jumps.lock().unwrap_or_else(|p| p.into_inner());
        let jump = jumps
            .entry(resolved.clone())
            .or_insert_with(|| Jump::new(resolved));
        Ok(Some(jump.clone()))
    }

    /// One hop completed from the configuration.
    fn hop(&self, hop: &Hop) -> Result<Hop, ConfigError> {
        let said = self.host(&hop.host)?;
        let mut hop = hop.clone();
        if let Some(name) = said.host_name {
            hop.host = name;
        }
        if hop.user.is_none() {
            hop.user = said.user;
        }
        // A port given with the hop (`host:22` too) wins over the config's `Port`.
        hop.port = Some(hop.port.or(said.port).unwrap_or(super::SSH_PORT));
        if hop.identity_files.is_empty() {
            hop.identity_files = said
                .identity_files
                .into_iter()
                .filter(|f| f.exists())
                .collect();
        }
        hop.known_hosts = hop.known_hosts.or(said.known_hosts);
        hop.accept_new |= said.host_key_policy == Some(HostKeyPolicy::AcceptNew);
        Ok(hop)
    }

    /// The files read, the user's first.
    pub fn files(&self) -> impl Iterator<Item = &Path> {
        self.files.iter().map(|(p, _)| p.as_path())
    }

    /// What the configuration says of `host` (the name as given: an alias, a name, an address).
    ///
    /// # Errors
    /// `ProxyCommand` for this host, or a `ProxyJump` that is not a list of
    /// `[user@]host[:port]`.
    pub fn host(&self, host: &str) -> Result<HostConfig, ConfigError> {
        let per_file: Vec<(&Path, HostParams)> = self
            .files
            .iter()
            .map(|(path, file)| (path.as_path(), file.query(host)))
            .collect();
        let Some((_, first)) = per_file.first() else {
            return Ok(HostConfig::default());
        };
        let mut params = first.clone();
        for (_, later) in &per_file[1..] {
            params.overwrite_if_none(later);
        }
        let merged = Merged {
            host,
            per_file,
            params,
        };
        merged.refuse_unsupported()?;
        let proxy_jump = merged.proxy_jump()?;
        let host_key_policy = merged.host_key_policy()?;
        let params = &merged.params;
        Ok(HostConfig {
            host_name: params.host_name.as_ref().map(|h| h.replace("%h", host)),
            user: params.user.clone(),
            port: params.port,
            identity_files: params.identity_file.clone().unwrap_or_default(),
            identities_only: merged.word("identitiesonly").is_some_and(|v| v == "yes"),
            certificate_file: params.certificate_file.clone(),
            proxy_jump,
            known_hosts: merged
                .raw("userknownhostsfile")
                .and_then(|v| v.first().cloned())
                .map(|p| expand_home(&p)),
            host_key_policy,
            connect_timeout: params.connect_timeout,
            server_alive_interval: params.server_alive_interval.filter(|d| !d.is_zero()),
            ignored: ignored(params),
        })
    }
}

/// What the files say of one host, merged (the first file that sets a directive wins), with each
/// file's own answer kept so that an error names the file its directive came from.
struct Merged<'a> {
    host: &'a str,
    per_file: Vec<(&'a Path, HostParams)>,
    params: HostParams,
}

impl Merged<'_> {
    /// An error about a directive, naming the first file where `set` holds (else the first file).
    fn fail(&self, set: &dyn Fn(&HostParams) -> bool, message: String) -> ConfigError {
        let path = self
            .per_file
            .iter()
            .find(|(_, p)| set(p))
            .or(self.per_file.first())
            .map(|(path, _)| path.to_path_buf())
            .unwrap_or_default();
        ConfigError { path, message }
    }

    /// A directive kept as it was written.
    fn raw(&self, name: &str) -> Option<Vec<String>> {
        raw(&self.params, name)
    }

    /// A directive's first word, in lower case.
    fn word(&self, name: &str) -> Option<String> {
        self.raw(name)
            .and_then(|v| v.first().map(|w| w.to_lowercase()))
    }

    /// What nodeup cannot honour: `ProxyCommand`, and `Port 0`.
    fn refuse_unsupported(&self) -> Result<(), ConfigError> {
        let host = self.host;
        if self.raw("proxycommand").is_some() {
            return Err(self.fail(
                &|p| raw_set(p, "proxycommand"),
                format!(
                    "ProxyCommand applies to {host}, and nodeup does not run proxy commands: use \
                     ProxyJump (or --jump), or a config without it (--ssh-config FILE, or none)"
                ),
            ));
        }
        if self.params.port == Some(0) {
            return Err(self.fail(
                &|p| p.port.is_some(),
                format!(
                    "Port 0 for {host}: no SSH server listens there; give a port from 1 to 65535"
                ),
            ));
        }
        Ok(())
    }

    /// `ProxyJump`: the hops, none (`none`: an empty chain), or not said.
    fn proxy_jump(&self) -> Result<Option<Vec<Hop>>, ConfigError> {
        match &self.params.proxy_jump {
            None => Ok(None),
            Some(hops) if hops.iter().any(|h| h.eq_ignore_ascii_case("none")) => {
                Ok(Some(Vec::new()))
            }
            Some(hops) => hops
                .iter()
                .map(|h| h.parse::<Hop>())
                .collect::<Result<_, _>>()
                .map(Some)
                .map_err(|e| {
                    self.fail(
                        &|p| p.proxy_jump.is_some(),
                        format!("ProxyJump for {}: {e}", self.host),
                    )
                }),
        }
    }

    /// `StrictHostKeyChecking`, as a policy.
    fn host_key_policy(&self) -> Result<Option<HostKeyPolicy>, ConfigError> {
        self.word("stricthostkeychecking")
            .map(|v| match v.as_str() {
                "accept-new" => Ok(HostKeyPolicy::AcceptNew),
                "no" | "off" => Ok(HostKeyPolicy::Off),
                "yes" | "ask" => Ok(HostKeyPolicy::Strict),
                other => Err(self.fail(
                    &|p| raw_set(p, "stricthostkeychecking"),
                    format!(
                        "StrictHostKeyChecking {other:?} for {}: use yes, accept-new or no",
                        self.host
                    ),
                )),
            })
            .transpose()
    }
}

/// The arguments of a directive `ssh2-config` keeps as it was written (`name` in lower case).
fn raw(params: &HostParams, name: &str) -> Option<Vec<String>> {
    params
        .unsupported_fields
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.clone())
}

fn raw_set(params: &HostParams, name: &str) -> bool {
    raw(params, name).is_some()
}

/// How deep `Include`s may nest (OpenSSH's own limit).
const MAX_INCLUDE_DEPTH: usize = 16;

/// Checks `path` and every file it `Include`s (globs expanded, relative paths under `~/.ssh` as
/// OpenSSH takes them from a user's config) before the parser reads them: each must be a regular
/// file within [`crate::files::MAX_FILE_BYTES`], so that an `Include /dev/zero` is refused, naming
/// the file and the line, rather than read forever.
fn check_includes(path: &Path, depth: usize) -> Result<(), ConfigError> {
    let fail = |message: String| ConfigError {
        path: path.to_path_buf(),
        message,
    };
    let text = crate::files::read_to_string(path)
        .map_err(|e| fail(format!("cannot be read ({})", crate::error_chain(&e))))?;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        let (word, rest) = line
            .split_once(|c: char| c.is_whitespace() || c == '=')
            .unwrap_or((line, ""));
        if !word.eq_ignore_ascii_case("include") {
            continue;
        }
        if depth >= MAX_INCLUDE_DEPTH {
            return Err(fail(format!(
                "line {}: Includes nest deeper than {MAX_INCLUDE_DEPTH}: is one file including itself?",
                n + 1
            )));
        }
        for pattern in rest.trim_start_matches([' ', '\t', '=']).split_whitespace() {
            let pattern = pattern.trim_matches('"');
            let full = match expand_home(pattern) {
                p if p.is_absolute() => p,
                p => std::env::var_os("HOME")
                    .map(|h| PathBuf::from(h).join(".ssh").join(&p))
                    .unwrap_or(p),
            };
            let matches = glob::glob(&full.to_string_lossy()).map_err(|e| {
                fail(format!(
                    "line {}: Include {pattern:?} is not a pattern ({e})",
                    n + 1
                ))
            })?;
            for included in matches.flatten() {
                check_includes(&included, depth + 1).map_err(|e| ConfigError {
                    message: format!(
                        "included from {} line {}: {}",
                        path.display(),
                        n + 1,
                        e.message
                    ),
                    ..e
                })?;
            }
        }
    }
    Ok(())
}

/// Reads one file (and what it includes); a `Match` block anywhere is refused.
fn parse(path: &Path) -> Result<ssh2_config::SshConfig, ConfigError> {
    let fail = |message: String| ConfigError {
        path: path.to_path_buf(),
        message,
    };
    check_includes(path, 0)?;
    let file = std::fs::File::open(path).map_err(|e| fail(format!("cannot be read ({e})")))?;
    let rules = ParseRule::ALLOW_UNKNOWN_FIELDS | ParseRule::ALLOW_UNSUPPORTED_FIELDS;
    let config = ssh2_config::SshConfig::default()
        .parse(&mut BufReader::new(file), rules)
        .map_err(|e| {
            fail(format!(
                "{e}; fix the file, or give another with --ssh-config"
            ))
        })?;
    let has_match = config.get_hosts().iter().any(|h| {
        h.params
            .ignored_fields
            .keys()
            .any(|k| k.eq_ignore_ascii_case("match"))
    });
    if has_match {
        return Err(fail(
            "holds a `Match` block, which nodeup does not evaluate (and cannot tell which lines \
             it holds): rewrite it as `Host` blocks, or give nodeup another file with \
             --ssh-config FILE (or none)"
                .into(),
        ));
    }
    Ok(config)
}

/// The directives set for a host that nodeup does not apply, sorted.
fn ignored(params: &HostParams) -> Vec<String> {
    let mut names: Vec<String> = params
        .unsupported_fields
        .keys()
        .filter(|k| !APPLIED_RAW.contains(&k.to_lowercase().as_str()))
        .chain(params.ignored_fields.keys())
        .cloned()
        .collect();
    let modelled = [
        ("addkeystoagent", params.add_keys_to_agent.is_some()),
        ("bindaddress", params.bind_address.is_some()),
        ("bindinterface", params.bind_interface.is_some()),
        ("compression", params.compression.is_some()),
        ("connectionattempts", params.connection_attempts.is_some()),
        ("forwardagent", params.forward_agent.is_some()),
        (
            "pubkeyauthentication",
            params.pubkey_authentication.is_some(),
        ),
        ("remoteforward", !params.remote_forward.is_empty()),
        ("tcpkeepalive", params.tcp_keep_alive.is_some()),
    ];
    names.extend(
        modelled
            .iter()
            .filter(|(_, set)| *set)
            .map(|(n, _)| n.to_string()),
    );
    for name in &mut names {
        *name = name.to_lowercase();
    }
    names.sort();
    names.dedup();
    names
}

/// `~/rest` with the user's home.
fn expand_home(path: &str) -> PathBuf {
    match (path.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> (tempfile::TempDir, SshConfig) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        std::fs::write(&path, text).unwrap();
        let config = SshConfig::load_file(&path).unwrap();
        (dir, config)
    }

    #[test]
    fn the_first_value_obtained_wins_and_patterns_match() {
        let (_dir, config) = config(
            "Host web-*\n  User deploy\n  Port 2222\n  ProxyJump admin@bastion:2200\n\
             Host *.example !db.example\n  User ops\n\
             Host *\n  User nobody\n  ConnectTimeout 7\n  StrictHostKeyChecking accept-new\n  \
             ForwardX11 yes\n",
        );
        let web = config.host("web-1").unwrap();
        assert_eq!(web.user.as_deref(), Some("deploy"));
        assert_eq!(web.port, Some(2222));
        assert_eq!(
            web.proxy_jump,
            Some(vec![Hop::new(Some("admin"), "bastion", 2200)])
        );
        assert_eq!(web.connect_timeout, Some(Duration::from_secs(7)));
        assert_eq!(web.host_key_policy, Some(HostKeyPolicy::AcceptNew));
        assert_eq!(web.ignored, vec!["forwardx11".to_string()]);
        assert_eq!(
            config.host("a.example").unwrap().user.as_deref(),
            Some("ops")
        );
        assert_eq!(
            config.host("db.example").unwrap().user.as_deref(),
            Some("nobody")
        );
    }

    #[test]
    fn endless_includes_and_port_0_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        std::fs::write(&path, "Host a\n  User x\nInclude /dev/zero\n").unwrap();
        let e = SshConfig::load_file(&path).unwrap_err().to_string();
        assert!(e.contains("/dev/zero is a character device"), "{e}");
        assert!(e.contains("line 3"), "{e}");
        let e = SshConfig::load_file(Path::new("/dev/zero"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("character device"), "{e}");
        let (_dir, config) = config("Host zero\n  Port 0\n");
        let e = config.host("zero").unwrap_err().to_string();
        assert!(e.contains("Port 0 for zero"), "{e}");
    }

    #[test]
    fn a_hop_keeps_the_port_it_was_given_even_22() {
        let (_dir, config) = config("Host bastion\n  Port 2222\n  User admin\n");
        let port = |hop: &str| {
            let hops = Hop::parse_chain(hop).unwrap();
            let jump = config.jump(&hops).unwrap().unwrap();
            jump.hops()[0].port()
        };
        assert_eq!(port("bastion:22"), 22);
        assert_eq!(port("bastion"), 2222);
        assert_eq!(port("bastion:2200"), 2200);
    }

    #[test]
    fn proxy_command_and_match_are_refused() {
        let (_dir, config) = config("Host old\n  ProxyCommand nc %h %p\n");
        let e = config.host("old").unwrap_err().to_string();
        assert!(e.contains("ProxyCommand applies to old"), "{e}");
        assert!(config.host("other").is_ok());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        std::fs::write(&path, "Host a\n  User x\nMatch host b\n  User y\n").unwrap();
        let e = SshConfig::load_file(&path).unwrap_err().to_string();
        assert!(e.contains("`Match` block"), "{e}");
        assert!(e.contains(&path.display().to_string()), "{e}");
    }
}
