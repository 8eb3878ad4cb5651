//! The local provider's state on disk: one directory per node with its record, so that one process
//! creates a node and another lists or destroys it; and the machine-wide claims on loopback addresses.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where machine-wide address claims live: one file per claimed address, naming the node directory.
pub const CLAIMS_DIR: &str = "/run/nodeup-local/addresses";

/// What the local provider knows of one node, kept in `<node dir>/node.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeRecord {
    /// The node's id (`loc-` and 8 hex digits).
    pub id: String,
    /// The node's name and hostname.
    pub name: String,
    /// The image id.
    pub image: String,
    /// The size id.
    pub size: String,
    /// The address sshd listens on: a loopback address, or the node's on its own link.
    pub address: Ipv4Addr,
    /// The port sshd listens on.
    pub port: u16,
    /// The image's login user.
    pub login_user: String,
    /// The node's SSH host public keys, one OpenSSH line each.
    pub host_keys: Vec<String>,
    /// How long each boot waits before sshd starts listening, in milliseconds.
    pub listen_delay_ms: u64,
    /// The user asked for the node to be stopped.
    pub stopped: bool,
    /// The hostname, when a reinstall set one other than the name.
    #[serde(default)]
    pub hostname: Option<String>,
    /// The running boot, if any.
    pub boot: Option<Boot>,
    /// Seconds since the epoch when the node was created.
    pub created: u64,
    /// The node's own network's link, when it has one ([`super::Network`]).
    #[serde(default)]
    pub link: Option<super::network::Link>,
}

/// One boot of a node: the `unshare` process that holds its namespaces.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Boot {
    /// The host pid of the `unshare` launcher.
    pub launcher_pid: i32,
    /// Its start time (clock ticks since boot), so that a reused pid is never mistaken for it.
    pub launcher_start: u64,
}

/// One node directory: its record, or why there is none.
/// The prefix of a node directory being filled, before it is renamed into place.
const UNBORN_PREFIX: &str = ".new-";
/// The file in a node's directory that holds its name.
const NAME_FILE: &str = "name";

enum Entry {
    Record(NodeRecord),
    Broken { id: String, reason: String },
}

/// A state directory of the local provider.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// Opens (creating if needed, mode 0700) the state directory at `root`.
    pub fn open(root: &Path) -> io::Result<Self> {
        fs::create_dir_all(root.join("nodes"))?;
        set_mode(root, 0o700)?;
        let root = root.canonicalize()?;
        Ok(StateDir { root })
    }

    /// The directory itself (canonical).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of the node with this id.
    pub fn node_dir(&self, id: &str) -> PathBuf {
        self.root.join("nodes").join(id)
    }

    /// Takes the state directory's lock until the guard is dropped.
    pub fn lock(&self) -> io::Result<File> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.root.join("lock"))?;
        file.lock()?;
        Ok(file)
    }

    /// Every node record, in creation order. Directories without a readable record are
    /// [`StateDir::broken`]'s.
    pub fn records(&self) -> io::Result<Vec<NodeRecord>> {
        let mut records = Vec::new();
        for entry in self.entries()? {
            if let Entry::Record(record) = entry {
                records.push(record);
            }
        }
        records.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
        Ok(records)
    }

    /// The node directories whose record is missing or does not parse, with why: left by a
    /// creator that was stopped half-way, or damaged. Only meaningful under [`StateDir::lock`]
    /// (a create in progress has no record yet).
    pub fn broken(&self) -> io::Result<Vec<(String, String)>> {
        let mut broken = Vec::new();
        for entry in self.entries()? {
            if let Entry::Broken { id, reason } = entry {
                broken.push((id, reason));
            }
        }
        broken.sort();
        Ok(broken)
    }

    /// Makes the directory of a new node, with its name in it from the first moment (so that a
    /// creator stopped half-way leaves a node that can be found by name): filled under a hidden
    /// name, then renamed into place. Call under [`StateDir::lock`]; hidden directories left by
    /// creators that were stopped before the rename are removed first.
    pub fn make_node_dir(&self, id: &str, name: &str) -> io::Result<()> {
        let nodes = self.root.join("nodes");
        self.sweep_unborn()?;
        let unborn = nodes.join(format!("{UNBORN_PREFIX}{id}"));
        fs::create_dir(&unborn)?;
        fs::write(unborn.join(NAME_FILE), name)?;
        fs::rename(&unborn, self.node_dir(id))
    }

    /// Removes the hidden directories of node creators that were stopped before renaming them
    /// into place (they hold only the node's name: no process, mount or address yet). Call under
    /// [`StateDir::lock`]: a creator holds the lock throughout, so any such directory then is a dead
    /// creator's.
    pub fn sweep_unborn(&self) -> io::Result<()> {
        for entry in fs::read_dir(self.root.join("nodes"))? {
            let path = entry?.path();
            if path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(UNBORN_PREFIX))
            {
                fs::remove_dir_all(&path)?;
            }
        }
        Ok(())
    }

    /// The name a node's creator asked for, from the node's own directory.
    pub fn node_name(&self, id: &str) -> Option<String> {
        fs::read_to_string(self.node_dir(id).join(NAME_FILE)).ok()
    }

    fn entries(&self) -> io::Result<Vec<Entry>> {
        let mut entries = Vec::new();
        for entry in fs::read_dir(self.root.join("nodes"))? {
            let dir = entry?.path();
            let Some(id) = dir.file_name().and_then(|n| n.to_str()).map(str::to_string) else {
                continue;
            };
            if id.starts_with(UNBORN_PREFIX) {
                continue;
            }
            let path = dir.join("node.json");
            let broken = |reason: String| Entry::Broken {
                id: id.clone(),
                reason,
            };
            entries.push(match fs::read(&path) {
                Ok(bytes) => match serde_json::from_slice::<NodeRecord>(&bytes) {
                    Ok(record) => Entry::Record(record),
                    Err(e) => broken(format!(
                        "its record {} does not parse ({e})",
                        path.display()
                    )),
                },
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    broken(format!("{} has no record (node.json)", dir.display()))
                }
                Err(e) => return Err(e),
            });
        }
        Ok(entries)
    }

    /// The record of one node.
    pub fn record(&self, id: &str) -> io::Result<Option<NodeRecord>> {
        match fs::read(self.node_dir(id).join("node.json")) {
            Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes a node's record atomically (temporary file, then rename).
    pub fn save(&self, record: &NodeRecord) -> io::Result<()> {
        let dir = self.node_dir(&record.id);
        let tmp = dir.join(".node.json.tmp");
        let mut file = File::create(&tmp)?;
        file.write_all(&serde_json::to_vec_pretty(record)?)?;
        file.sync_all()?;
        fs::rename(tmp, dir.join("node.json"))
    }
}

/// Claims the lowest free address in 127.100.0.0/16 for `node_dir`, machine-wide.
///
/// A claim whose node directory no longer exists (left by a crashed run) is taken over.
pub fn claim_address(node_dir: &Path) -> io::Result<Ipv4Addr> {
    fs::create_dir_all(CLAIMS_DIR)?;
    for n in 2u32..65_534 {
        let addr = Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 100, 0, 0)) + n);
        if addr.octets()[3] == 0 || addr.octets()[3] == 255 {
            continue;
        }
        let path = Path::new(CLAIMS_DIR).join(addr.to_string());
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(mut file) => {
                file.write_all(node_dir.as_os_str().as_encoded_bytes())?;
                return Ok(addr);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let owner = fs::read(&path).unwrap_or_default();
                let owner = PathBuf::from(String::from_utf8_lossy(&owner).into_owned());
                if !owner.as_os_str().is_empty() && !owner.exists() {
                    // Stale: take it over, unless another process just did.
                    if fs::remove_file(&path).is_ok() {
                        if let Ok(mut file) =
                            OpenOptions::new().write(true).create_new(true).open(&path)
                        {
                            file.write_all(node_dir.as_os_str().as_encoded_bytes())?;
                            return Ok(addr);
                        }
                    }
                }
            }
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other(
        "every address in 127.100.0.0/16 is claimed by a local node",
    ))
}

/// Gives up every claim `node_dir` holds (for a node whose record, and so its address, is lost).
pub fn release_claims_of(node_dir: &Path) {
    let Ok(entries) = fs::read_dir(CLAIMS_DIR) else {
        return;
    };
    for entry in entries.flatten() {
        if fs::read(entry.path())
            .is_ok_and(|owner| owner == node_dir.as_os_str().as_encoded_bytes())
        {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Sets a path's permission bits.
pub fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}
