//! Host-key checking: an OpenSSH-format known_hosts file, keys the provider reported for the node
//! ("pinned"), and the policies strict / accept-new / off.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use russh::keys::{HashAlg, PublicKey};

use super::Error;

/// What to do with a host whose key is not recorded yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HostKeyPolicy {
    /// Refuse it: only recorded (or pinned) keys are accepted.
    #[default]
    Strict,
    /// Record it on first use (trust on first use); a changed key is still refused. The default for
    /// nodes nodeup itself just created.
    AcceptNew,
    /// Accept any key, record nothing. For throw-away test setups only.
    Off,
}

impl std::str::FromStr for HostKeyPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "strict" | "yes" => Ok(HostKeyPolicy::Strict),
            "accept-new" => Ok(HostKeyPolicy::AcceptNew),
            "off" | "no" => Ok(HostKeyPolicy::Off),
            other => Err(format!(
                "unknown host-key policy {other:?}: use strict, accept-new or off"
            )),
        }
    }
}

/// How one connection checks the host's key.
#[derive(Debug, Clone, Default)]
pub struct HostKeyCheck {
    /// The policy for keys not recorded yet.
    pub policy: HostKeyPolicy,
    /// The known_hosts file read (and, under accept-new, appended to).
    pub known_hosts: PathBuf,
    /// Keys the provider reported for this node (OpenSSH lines). When given, the presented key must
    /// be one of them, whatever the policy but `Off`; it is then recorded as under accept-new.
    pub pinned: Vec<String>,
    /// Set for a node this deployment created: until nodeup first accepts a key of it, a key
    /// recorded for its address was recorded before the node existed (a deleted machine's, at an
    /// address the cloud gave out again), so it is replaced, with a warning naming both keys.
    /// Once a key was accepted, a changed key is refused as for any host.
    pub new_node: Option<NewNode>,
}

/// The state of a node this deployment created, shared by every connection to it: whether a key
/// of it was accepted yet.
#[derive(Debug, Clone, Default)]
pub struct NewNode(Arc<std::sync::atomic::AtomicBool>);

impl NewNode {
    /// Whether a key of the node was accepted already.
    pub fn seen(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn see(&self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Serializes appends to known_hosts files from this process (many nodes at once).
static LEARN: Mutex<()> = Mutex::new(());

impl HostKeyCheck {
    /// Checks `key` presented by `host:port`; records it when the policy says so.
    pub fn verify(&self, host: &str, port: u16, key: &PublicKey) -> Result<(), Error> {
        let verdict = self.check(host, port, key);
        if let (Ok(()), Some(new)) = (&verdict, &self.new_node) {
            new.see();
        }
        verdict
    }

    fn check(&self, host: &str, port: u16, key: &PublicKey) -> Result<(), Error> {
        if self.policy == HostKeyPolicy::Off {
            return Ok(());
        }
        let recorded_as = if port == 22 {
            host.to_string()
        } else {
            format!("[{host}]:{port}")
        };
        let presented = key.fingerprint(HashAlg::Sha256).to_string();
        let path = &self.known_hosts;
        let known_error = |source| Error::KnownHosts {
            path: path.clone(),
            source: Box::new(source),
        };
        let recorded = if path.exists() {
            recorded_keys(path, host, port).map_err(known_error)?
        } else {
            Vec::new()
        };
        if recorded.iter().any(|(_, k)| k == key) {
            return Ok(());
        }
        let pinned_match = self
            .pinned
            .iter()
            .filter_map(|line| PublicKey::from_openssh(line.trim()).ok())
            .any(|k| k.key_data() == key.key_data());
        if !self.pinned.is_empty() && !pinned_match {
            return Err(Error::HostKeyNotPinned {
                host: recorded_as,
                presented,
            });
        }
        match recorded.first() {
            // The provider vouches for this key (its API told us): it replaces what was recorded
            // for the address, which a node destroyed earlier may have left.
            Some(_) if pinned_match => {
                tracing::info!(host = %recorded_as, "replacing the recorded host key with the one the provider reported");
                self.forget(host, port).map_err(|e| known_error(e.into()))?;
            }
            // A node this deployment created, not logged in to yet: what is recorded is older
            // than the node.
            Some((line, old)) if self.new_node.as_ref().is_some_and(|n| !n.seen()) => {
                tracing::warn!(
                    "{recorded_as} is a new node at an address another machine had: replacing the \
                     key recorded for it at {}:{line} ({}) with the node's own ({presented})",
                    path.display(),
                    old.fingerprint(HashAlg::Sha256)
                );
                self.forget(host, port).map_err(|e| known_error(e.into()))?;
            }
            // Recorded with another key (of this type or another): refuse, as a changed key.
            Some((line, _)) => {
                return Err(Error::HostKeyChanged {
                    host: recorded_as,
                    presented,
                    path: path.clone(),
                    line: *line,
                })
            }
            None if self.policy == HostKeyPolicy::Strict && !pinned_match => {
                return Err(Error::HostKeyUnknown {
                    host: recorded_as,
                    presented,
                    path: path.clone(),
                })
            }
            None => {}
        }
        let _guard = LEARN.lock().unwrap_or_else(|e| e.into_inner());
        // Made 0600 (in a 0700 directory) before russh appends to it: it says which hosts this
        // user reaches.
        crate::files::create_private(path).map_err(|e| known_error(e.into()))?;
        russh::keys::known_hosts::learn_known_hosts_path(host, port, key, path)
            .map_err(known_error)?;
        tracing::info!(host = %recorded_as, key = %presented, file = %path.display(), "recorded a new host key");
        Ok(())
    }

    /// Forgets every key recorded for `host:port` (after the user asked for a reinstall).
    pub fn forget(&self, host: &str, port: u16) -> std::io::Result<()> {
        let pattern = if port == 22 {
            host.to_string()
        } else {
            format!("[{host}]:{port}")
        };
        let _guard = LEARN.lock().unwrap_or_else(|e| e.into_inner());
        let Ok(text) = std::fs::read_to_string(&self.known_hosts) else {
            return Ok(());
        };
        let kept: String = text
            .lines()
            .filter(|line| {
                let hosts = line.split_whitespace().next().unwrap_or("");
                !hosts.split(',').any(|h| h == pattern)
            })
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(&self.known_hosts, kept)
    }
}

/// A known_hosts file, parsed once while it is unchanged: a fleet checks thousands of hosts
/// against one file, and reading it whole for each (as russh does) costs time and memory in
/// proportion to the file. Files with hashed names, patterns or markers go to russh's reader.
struct Index {
    /// The file's size, modification time and inode when it was read.
    stamp: (u64, std::time::SystemTime, u64),
    /// Plain host names (`host` or `[host]:port`) → (line, key text).
    plain: HashMap<String, Vec<(usize, String)>>,
    /// Whether every line is a plain entry (otherwise the index is not used).
    simple: bool,
}

/// The parsed known_hosts files of this process, by path.
static INDEXES: Mutex<Option<HashMap<PathBuf, Arc<Index>>>> = Mutex::new(None);

fn stamp(path: &Path) -> std::io::Result<(u64, std::time::SystemTime, u64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path)?;
    Ok((meta.len(), meta.modified()?, meta.ino()))
}

fn index(path: &Path) -> std::io::Result<Arc<Index>> {
    let now = stamp(path)?;
    let mut indexes = INDEXES.lock().unwrap_or_else(|e| e.into_inner());
    let indexes = indexes.get_or_insert_with(HashMap::new);
    if let Some(index) = indexes.get(path).filter(|i| i.stamp == now) {
        return Ok(index.clone());
    }
    let text = std::fs::read_to_string(path)?;
    let mut index = Index {
        stamp: now,
        plain: HashMap::new(),
        simple: true,
    };
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let special = |h: &str| h.starts_with('|') || h.contains(['*', '?', '!']);
        if fields.len() < 3 || line.starts_with('@') || fields[0].split(',').any(special) {
            index.simple = false;
            break;
        }
        let key = format!("{} {}", fields[1], fields[2]);
        for host in fields[0].split(',') {
            index
                .plain
                .entry(host.to_string())
                .or_default()
                .push((n + 1, key.clone()));
        }
    }
    let index = Arc::new(index);
    indexes.insert(path.to_path_buf(), index.clone());
    Ok(index)
}

/// The keys recorded for `host:port` in `path`, with their line numbers.
fn recorded_keys(
    path: &Path,
    host: &str,
    port: u16,
) -> Result<Vec<(usize, PublicKey)>, russh::keys::Error> {
    let index = index(path)?;
    if !index.simple {
        return russh::keys::known_hosts::known_host_keys_path(host, port, path);
    }
    let name = if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    };
    Ok(index
        .plain
        .get(&name)
        .into_iter()
        .flatten()
        .filter_map(|(line, text)| PublicKey::from_openssh(text).ok().map(|k| (*line, k)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use russh::keys::{Algorithm, PrivateKey};

    fn key() -> PublicKey {
        PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519)
            .unwrap()
            .public_key()
            .clone()
    }

    fn check(policy: HostKeyPolicy, dir: &tempfile::TempDir) -> HostKeyCheck {
        HostKeyCheck {
            policy,
            known_hosts: dir.path().join("known_hosts"),
            pinned: vec![],
            ..Default::default()
        }
    }

    #[test]
    fn the_index_follows_the_file_and_leaves_patterns_to_russh() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (key(), key());
        check(HostKeyPolicy::AcceptNew, &dir)
            .verify("10.0.0.1", 22, &a)
            .unwrap();
        let strict = check(HostKeyPolicy::Strict, &dir);
        strict.verify("10.0.0.1", 22, &a).unwrap();
        assert!(strict.verify("10.0.0.2", 22, &b).is_err());
        // Another writer adds a host: the next check sees it.
        let path = dir.path().join("known_hosts");
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str(&format!("10.0.0.2 {}\n", b.to_openssh().unwrap()));
        std::fs::write(&path, &text).unwrap();
        strict.verify("10.0.0.2", 22, &b).unwrap();
        // A pattern line: the file is read by russh, with the same answers.
        text.push_str(&format!("*.lab {}\n", key().to_openssh().unwrap()));
        std::fs::write(&path, &text).unwrap();
        strict.verify("10.0.0.1", 22, &a).unwrap();
        assert!(matches!(
            strict.verify("10.0.0.1", 22, &b),
            Err(Error::HostKeyChanged { .. })
        ));
    }

    #[test]
    fn strict_refuses_unknown_and_accept_new_records() {
        let dir = tempfile::tempdir().unwrap();
        let k = key();
        let err = check(HostKeyPolicy::Strict, &dir)
            .verify("10.0.0.1", 22, &k)
            .unwrap_err();
        assert!(matches!(err, Error::HostKeyUnknown { .. }), "{err}");
        check(HostKeyPolicy::AcceptNew, &dir)
            .verify("10.0.0.1", 22, &k)
            .unwrap();
        check(HostKeyPolicy::Strict, &dir)
            .verify("10.0.0.1", 22, &k)
            .unwrap();
        let text = std::fs::read_to_string(dir.path().join("known_hosts")).unwrap();
        assert!(
            text.trim_start().starts_with("10.0.0.1 ssh-ed25519 "),
            "{text}"
        );
    }

    #[test]
    fn a_changed_key_is_refused_under_every_policy_but_off() {
        let dir = tempfile::tempdir().unwrap();
        check(HostKeyPolicy::AcceptNew, &dir)
            .verify("h", 2222, &key())
            .unwrap();
        for policy in [HostKeyPolicy::AcceptNew, HostKeyPolicy::Strict] {
            let err = check(policy, &dir).verify("h", 2222, &key()).unwrap_err();
            assert!(
                matches!(err, Error::HostKeyChanged { line: 2, .. }),
                "{err}"
            );
            assert!(err.to_string().contains("ssh-keygen -R [h]:2222"), "{err}");
        }
        check(HostKeyPolicy::Off, &dir)
            .verify("h", 2222, &key())
            .unwrap();
        // Forgetting the host makes room for its new key.
        check(HostKeyPolicy::AcceptNew, &dir)
            .forget("h", 2222)
            .unwrap();
        check(HostKeyPolicy::AcceptNew, &dir)
            .verify("h", 2222, &key())
            .unwrap();
    }

    #[test]
    fn a_new_node_replaces_an_older_key_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = check(HostKeyPolicy::AcceptNew, &dir);
        let (old, node, impostor) = (key(), key(), key());
        c.verify("10.0.0.5", 22, &old).unwrap();
        c.new_node = Some(NewNode::default());
        c.verify("10.0.0.5", 22, &node).unwrap();
        assert!(c.new_node.as_ref().unwrap().seen());
        let text = std::fs::read_to_string(&c.known_hosts).unwrap();
        assert_eq!(
            text.lines().filter(|l| !l.trim().is_empty()).count(),
            1,
            "{text}"
        );
        // Once the node's key was accepted, another is a changed key again.
        let err = c.verify("10.0.0.5", 22, &impostor).unwrap_err();
        assert!(matches!(err, Error::HostKeyChanged { .. }), "{err}");
        // Without `new_node`, an older key is never replaced.
        c.new_node = None;
        assert!(c.verify("10.0.0.5", 22, &old).is_err());
    }

    #[test]
    fn pinned_keys_are_required_and_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let k = key();
        let mut c = check(HostKeyPolicy::Strict, &dir);
        c.pinned = vec![k.to_openssh().unwrap()];
        let err = c.verify("h", 22, &key()).unwrap_err();
        assert!(matches!(err, Error::HostKeyNotPinned { .. }), "{err}");
        c.verify("h", 22, &k).unwrap();
        c.pinned.clear();
        c.verify("h", 22, &k).unwrap();
        // A new node at the same address, its key reported by the provider: replaces the old one.
        let new = key();
        assert!(c.verify("h", 22, &new).is_err());
        c.pinned = vec![new.to_openssh().unwrap()];
        c.verify("h", 22, &new).unwrap();
        c.pinned.clear();
        c.verify("h", 22, &new).unwrap();
        assert!(c.verify("h", 22, &k).is_err(), "the old key is forgotten");
    }
}
