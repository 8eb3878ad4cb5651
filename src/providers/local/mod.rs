//! The `local` provider: a node is a real OpenSSH sshd in a sandbox on this machine.
//!
//! Each node has its own mount namespace with an overlay over the host's root filesystem (every write
//! lands in the node's directory; /root, /home, /tmp, /run and /etc/ssh are the node's own), its own
//! hostname (UTS namespace), its own PID namespace (its PID 1 runs sshd and reboots the node when
//! the node's own `reboot`, `shutdown -r` or `systemctl reboot` asks; killing it ends every
//! process of the node), its own loopback address in 127.100.0.0/16, and its own host keys. Node state
//! is kept under a state directory, so that one process creates a node and another lists or destroys
//! it. A reboot ends every process of the node and boots it again with the same files and host keys
//! and a new boot id.

mod network;
mod process;
mod rootfs;
mod state;

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::net::{IpAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde::Deserialize;

use crate::driver::{Features, NodeDriver, ProviderError, Result};
use crate::model::{CreateNode, Node, NodeAuth, NodeImage, NodeLocation, NodeSize, NodeState};
pub use network::Network;
/// A process's start time in clock ticks since boot (from /proc/PID/stat), which tells a live
/// process from a later one that reused its pid.
pub use process::start_time;
use rootfs::Rootfs;
pub use rootfs::{Image, CLOUD_INIT_STATUS};
pub use state::CLAIMS_DIR;
use state::{NodeRecord, StateDir};

/// The provider's name.
pub const PROVIDER: &str = "local";

/// How long halting a node may take before it is an error.
const HALT_DEADLINE: Duration = Duration::from_secs(10);

/// The one location: this machine.
const LOCATION: &str = "local";

/// Its name, which may be given instead of the id.
const LOCATION_NAME: &str = "this machine";

/// An image's human name.
fn image_name(image: Image) -> &'static str {
    match image {
        Image::Debian => "Debian (root logs in with a key)",
        Image::CloudDebian => "Debian cloud image (log in as debian, sudo)",
    }
}

/// Finds what a request names by id or by name (case-insensitive): image, size and location.
fn resolve(request: &CreateNode) -> Result<(Image, &'static str)> {
    use crate::providers::lookup::{find, Candidate};
    let bad = |e: crate::providers::lookup::LookupError| invalid(e.to_string());
    let images: Vec<Candidate> = Image::ALL
        .iter()
        .map(|i| Candidate {
            id: i.id().into(),
            name: image_name(*i).into(),
        })
        .collect();
    let wanted = request.image.as_deref().unwrap_or("debian");
    let id = find("image", wanted, "", &images).map_err(bad)?.id.clone();
    let image = Image::parse(&id).ok_or_else(|| invalid(format!("no image {id:?}")))?;
    let sizes: Vec<Candidate> = SIZES
        .iter()
        .map(|s| Candidate {
            id: s.0.into(),
            name: s.0.into(),
        })
        .collect();
    let wanted = request.size.as_deref().unwrap_or("small");
    let size_id = find("size", wanted, "", &sizes).map_err(bad)?.id.clone();
    let size = SIZES
        .iter()
        .find(|s| s.0 == size_id)
        .map(|s| s.0)
        .unwrap_or("small");
    if let Some(location) = request.location.as_deref() {
        let here = [Candidate {
            id: LOCATION.into(),
            name: LOCATION_NAME.into(),
        }];
        find("location", location, "", &here).map_err(bad)?;
    }
    Ok((image, size))
}

/// The sizes offered. Local nodes share the host's CPU and memory: a size is a label, not a limit.
const SIZES: [(&str, u64, u32); 3] = [("small", 512, 1), ("medium", 2048, 2), ("large", 8192, 4)];

/// Options of a local node beyond `CreateNode`'s own fields; from `CreateNode::extra` (the keys are
/// the field names below, `listen_delay_ms` for the delay) or given to `create_node_with`.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalOptions {
    /// Each boot waits this long before sshd listens (emulates a slow boot).
    #[serde(rename = "listen_delay_ms", default, deserialize_with = "millis")]
    pub listen_delay: Duration,
    /// The port sshd listens on; 22 when free on the node's address, else one the kernel picks.
    #[serde(default)]
    pub port: Option<u16>,
    /// sshd_config settings that replace nodeup's defaults or add to them, e.g.
    /// `("PermitRootLogin", "no")`, `("MaxStartups", "1:100:1")`.
    #[serde(default, deserialize_with = "settings")]
    pub sshd_config: Vec<(String, String)>,
    /// A pre-authentication banner sshd sends.
    #[serde(default)]
    pub banner: Option<String>,
    /// A password for the image's login user (turns on password authentication).
    #[serde(default)]
    pub password: Option<String>,
    /// Where the node can be reached from: this machine's loopback (the default), a network of
    /// its own linked to this machine, or one linked to another local node only.
    #[serde(default)]
    pub network: Network,
    /// The name of the image's own login user (`debian` unless given): `admin`, `ubuntu` or
    /// `ec2-user` make a `cloud-debian` node answer as a cloud's Debian, Ubuntu or Amazon Linux
    /// image does.
    #[serde(default)]
    pub login_user: Option<String>,
}

impl std::fmt::Debug for LocalOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalOptions")
            .field("listen_delay", &self.listen_delay)
            .field("port", &self.port)
            .field("sshd_config", &self.sshd_config)
            .field("banner", &self.banner)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("network", &self.network)
            .field("login_user", &self.login_user)
            .finish()
    }
}

fn millis<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Duration, D::Error> {
    u64::deserialize(d).map(Duration::from_millis)
}

fn settings<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Vec<(String, String)>, D::Error> {
    BTreeMap::<String, String>::deserialize(d).map(|m| m.into_iter().collect())
}

/// The local provider's `[provider]` settings: none.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoSettings {}

/// The local provider's driver, over one state directory.
#[derive(Debug, Clone)]
pub struct LocalDriver {
    state: StateDir,
}

impl LocalDriver {
    /// A driver over the state directory at `dir` (created if missing, mode 0700).
    ///
    /// # Errors
    /// `InvalidRequest` when `dir` (or a parent) is not a directory: a misset `NODEUP_STATE_DIR`.
    pub fn new(dir: &Path) -> Result<Self> {
        let not_a_dir = dir
            .ancestors()
            .find(|p| p.exists())
            .is_some_and(|p| !p.is_dir());
        if not_a_dir {
            return Err(invalid(format!(
                "the state directory {} is, or is inside, something that is not a directory: \
                 point NODEUP_STATE_DIR at a directory (or unset it)",
                dir.display()
            )));
        }
        let state = StateDir::open(dir).map_err(failed(format!(
            "opening the state directory {}",
            dir.display()
        )))?;
        Ok(LocalDriver { state })
    }

    /// [`LocalDriver::from_env`], after checking that the step file's `[provider]` table is empty:
    /// the local provider has no settings there (its node options go in `[node] options`).
    ///
    /// # Errors
    /// Any `[provider]` key; a state directory that cannot be used.
    pub fn from_config(config: &crate::driver::ProviderConfig) -> Result<Self> {
        crate::providers::settings::<NoSettings>(
            PROVIDER,
            "[provider]",
            config,
            "the local provider needs none",
        )?;
        Self::from_env()
    }

    /// A driver over the default state directory: `$NODEUP_STATE_DIR/local`, else
    /// `$XDG_STATE_HOME/nodeup/local`, else `~/.local/state/nodeup/local`.
    pub fn from_env() -> Result<Self> {
        Self::new(&Self::default_state_dir())
    }

    /// The default state directory: `local/` in [`crate::state_dir`].
    pub fn default_state_dir() -> PathBuf {
        crate::state_dir().join(PROVIDER)
    }

    /// The state directory this driver keeps its nodes in.
    pub fn state_dir(&self) -> &Path {
        self.state.root()
    }

    /// The directory of one node (its record, its upper layer, its console log).
    pub fn node_dir(&self, id: &str) -> PathBuf {
        self.state.node_dir(id)
    }

    /// The host pid of the node's PID 1 (its init, which runs sshd) while it is booted. Its `/proc/PID/root` is the
    /// node's filesystem, and `nsenter --target PID` enters the node.
    pub fn init_pid(&self, id: &str) -> Result<Option<i32>> {
        let record = self.record(id)?;
        Ok(record
            .boot
            .and_then(|boot| process::init_pid(&self.state.node_dir(id), &boot)))
    }

    /// The node with this id or, failing that, this name.
    pub async fn find(&self, id_or_name: &str) -> Result<Node> {
        let nodes = self.list_nodes().await?;
        nodes
            .iter()
            .find(|n| n.id == id_or_name)
            .or_else(|| nodes.iter().find(|n| n.name == id_or_name))
            .cloned()
            .ok_or_else(|| ProviderError::NotFound {
                provider: PROVIDER.into(),
                kind: "node",
                id: id_or_name.into(),
            })
    }

    /// Creates a node with the local provider's own options.
    pub async fn create_node_with(
        &self,
        request: &CreateNode,
        options: &LocalOptions,
    ) -> Result<Node> {
        let state = self.state.clone();
        let request = request.clone();
        let options = options.clone();
        blocking(move || create(&state, &request, &options)).await
    }

    /// Reinstalls a node: every process ends, its files are replaced by a fresh filesystem (image
    /// `debian`) with new host keys, the hostname, root's key and the user data of `spec`, and it
    /// boots again at the same address.
    pub async fn reinstall(&self, node: &Node, spec: &Reinstall) -> Result<Node> {
        self.change(node, Action::Reinstall(spec.clone())).await?;
        self.get_node(&node.id).await
    }

    /// Destroys every node in the state directory, blocking the calling thread: what a test bed's
    /// teardown (in `Drop`) and its sweep of crashed runs do. Every node is tried; the first error
    /// is returned.
    pub fn destroy_all_blocking(&self) -> Result<()> {
        let records = self
            .state
            .records()
            .map_err(failed("reading the state directory"))?;
        let broken = self
            .state
            .broken()
            .map_err(failed("reading the state directory"))?;
        let ids = records
            .iter()
            .map(|r| r.id.clone())
            .chain(broken.into_iter().map(|(id, _)| id));
        let mut first_error = None;
        for id in ids {
            match change(&self.state, &id, Action::Destroy) {
                // Destroyed meanwhile by another process: what we wanted.
                Ok(()) | Err(ProviderError::NotFound { .. }) => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn record(&self, id: &str) -> Result<NodeRecord> {
        read_record(&self.state, id)
    }

    async fn change(&self, node: &Node, action: Action) -> Result<()> {
        let state = self.state.clone();
        let id = node.id.clone();
        blocking(move || change(&state, &id, action)).await
    }
}

#[async_trait]
impl NodeDriver for LocalDriver {
    fn name(&self) -> &str {
        PROVIDER
    }

    fn features(&self) -> Features {
        Features {
            ssh_key: true,
            password: true,
            generates_password: false,
        }
    }

    async fn list_nodes(&self) -> Result<Vec<Node>> {
        let state = self.state.clone();
        blocking(move || {
            // Under the lock, a directory without a record is not one being created: it is
            // listed (state `error`) so that it can be destroyed.
            let _lock = state
                .lock()
                .map_err(failed("locking the state directory"))?;
            state
                .sweep_unborn()
                .map_err(failed("removing what stopped creators left"))?;
            let read = failed("reading the state directory");
            let records = state.records().map_err(read)?;
            let broken = state
                .broken()
                .map_err(failed("reading the state directory"))?;
            let mut nodes: Vec<Node> = records
                .into_iter()
                .map(|r| to_node(&state, &heal(&state, r)))
                .collect();
            nodes.extend(
                broken
                    .iter()
                    .map(|(id, why)| broken_node(id, state.node_name(id).as_deref(), why)),
            );
            Ok(nodes)
        })
        .await
    }

    async fn get_node(&self, id: &str) -> Result<Node> {
        let record = self.record(id)?;
        Ok(to_node(&self.state, &record))
    }

    async fn create_node(&self, request: &CreateNode) -> Result<Node> {
        let options: LocalOptions = crate::providers::settings(
            PROVIDER,
            "[node] options",
            &request.extra,
            "a local node's login password is the `password` option",
        )?;
        self.create_node_with(request, &options).await
    }

    async fn destroy_node(&self, node: &Node) -> Result<()> {
        self.change(node, Action::Destroy).await
    }

    async fn reboot_node(&self, node: &Node) -> Result<()> {
        self.change(node, Action::Reboot).await
    }

    async fn stop_node(&self, node: &Node) -> Result<()> {
        self.change(node, Action::Stop).await
    }

    async fn start_node(&self, node: &Node) -> Result<()> {
        self.change(node, Action::Start).await
    }

    async fn list_images(
        &self,
        location: Option<&str>,
        _size: Option<&str>,
    ) -> Result<Vec<NodeImage>> {
        if location.is_some_and(|l| l != LOCATION) {
            return Ok(Vec::new());
        }
        Ok(Image::ALL
            .iter()
            .map(|image| NodeImage {
                id: image.id().into(),
                name: image_name(*image).into(),
                extra: [("login_user".to_string(), image.login_user().into())].into(),
            })
            .collect())
    }

    async fn list_sizes(&self, location: Option<&str>) -> Result<Vec<NodeSize>> {
        if location.is_some_and(|l| l != LOCATION) {
            return Ok(Vec::new());
        }
        Ok(SIZES
            .iter()
            .map(|&(id, ram, vcpus)| NodeSize {
                id: id.into(),
                name: id.into(),
                ram_mib: ram,
                disk_gb: None,
                vcpus: Some(vcpus),
                price: Some(0.0),
                bandwidth_mbps: None,
                extra: [("enforced".to_string(), false.into())].into(),
            })
            .collect())
    }

    async fn list_locations(&self) -> Result<Vec<NodeLocation>> {
        Ok(vec![NodeLocation {
            id: LOCATION.into(),
            name: LOCATION_NAME.into(),
            country: None,
        }])
    }
}

#[derive(Debug, Clone)]
enum Action {
    Destroy,
    Reboot,
    Stop,
    Start,
    Reinstall(Reinstall),
}

/// What a reinstall puts on a node: what a dedicated server gets from a config drive.
#[derive(Debug, Clone, Default)]
pub struct Reinstall {
    /// The new hostname (the node's name when `None`).
    pub hostname: Option<String>,
    /// An SSH public key for root.
    pub root_key: Option<String>,
    /// A script run once at the first boot, as cloud-init runs user data.
    pub user_data: Option<Vec<u8>>,
    /// Config-drive metadata, written as `/var/lib/cloud/instance/meta_data.json`.
    pub metadata: Vec<(String, String)>,
}

/// What a create request asks for, checked: everything before the state directory is touched.
struct Planned<'a> {
    name: &'a str,
    image: Image,
    /// The image's own login user (an account on both images; the one to log in as on
    /// `cloud-debian`).
    user: &'a str,
    size: &'static str,
    ssh_key: Option<&'a str>,
    password: Option<&'a str>,
}

fn plan<'a>(request: &'a CreateNode, options: &'a LocalOptions) -> Result<Planned<'a>> {
    let name = request.name.as_str();
    let valid_name = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if !valid_name {
        return Err(invalid(format!(
            "node name {name:?} is not a valid hostname: use 1 to 63 letters, digits and '-', \
             not starting or ending with '-'"
        )));
    }
    let (image, size) = resolve(request)?;
    let (ssh_key, auth_password) = match &request.auth {
        Some(NodeAuth::SshKey(key)) => {
            russh::keys::PublicKey::from_openssh(key.trim()).map_err(|e| {
                invalid(format!(
                    "the SSH public key does not parse ({e}); give one line such as \
                     `ssh-ed25519 AAAA... comment`, e.g. the contents of ~/.ssh/id_ed25519.pub"
                ))
            })?;
            (Some(key.as_str()), None)
        }
        Some(NodeAuth::Password(pw)) => (None, Some(pw.as_str())),
        None => (None, None),
    };
    for (key, value) in &options.sshd_config {
        if key.is_empty()
            || !key.bytes().all(|b| b.is_ascii_alphanumeric())
            || value.contains(['\n', '\r'])
        {
            return Err(invalid(format!(
                "sshd_config setting {key:?} {value:?}: a key is one word of letters and digits \
                 and a value is one line"
            )));
        }
    }
    let user = options.login_user.as_deref().unwrap_or(rootfs::LOGIN_USER);
    let valid_user = !user.is_empty()
        && user.len() <= 32
        && user.starts_with(|c: char| c.is_ascii_lowercase())
        && user
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !valid_user || user == "root" {
        return Err(invalid(format!(
            "login_user {user:?}: give a user name of lower-case letters, digits, '-' and '_' \
             (not root), up to 32"
        )));
    }
    check_requirements()?;
    if options.network != Network::Loopback {
        network::check_requirements()?;
    }
    Ok(Planned {
        name,
        image,
        user,
        size,
        ssh_key,
        password: options.password.as_deref().or(auth_password),
    })
}

fn create(state: &StateDir, request: &CreateNode, options: &LocalOptions) -> Result<Node> {
    let planned = plan(request, options)?;
    let name = planned.name;
    let _lock = state
        .lock()
        .map_err(failed("locking the state directory"))?;
    let records = state
        .records()
        .map_err(failed("reading the state directory"))?;
    if let Some(other) = records.iter().find(|r| r.name == name) {
        return Err(invalid(format!(
            "a local node named {name:?} exists already ({}); destroy it or choose another name",
            other.id
        )));
    }
    let peer = link_peer(&records, &options.network)?;
    let id = format!("loc-{:08x}", rand::random::<u32>());
    let dir = state.node_dir(&id);
    state
        .make_node_dir(&id, name)
        .map_err(failed(format!("creating {}", dir.display())))?;
    match build(state, &id, &planned, options, peer) {
        Ok(record) => {
            tracing::info!(node = %record.id, name, address = %record.address, "local node created");
            Ok(to_node(state, &record))
        }
        Err(e) => {
            if let Some(boot) = process::recorded_boot(&dir) {
                let _ = process::halt(&dir, &boot, HALT_DEADLINE);
            }
            if let Ok(Some(record)) = state.record(&id) {
                if let Some(link) = record.link {
                    link.release(&network::link_name(&id));
                }
            }
            state::release_claims_of(&dir);
            let _ = fs::remove_dir_all(&dir);
            Err(failed(format!("creating node {name}"))(e))
        }
    }
}

/// The far end of a new node's link, checked: `None` when the node shares this machine's
/// network, `Some(None)` for a link to this machine, `Some(Some(id))` for one to that node.
fn link_peer(records: &[NodeRecord], network: &Network) -> Result<Option<Option<String>>> {
    let id = match network {
        Network::Loopback => return Ok(None),
        Network::Linked => return Ok(Some(None)),
        Network::Behind(id) => id,
    };
    let peer = records
        .iter()
        .find(|r| &r.id == id || &r.name == id)
        .ok_or_else(|| {
            invalid(format!(
                "network behind {id:?}: no local node has that id or name; create the bastion first"
            ))
        })?;
    if peer.link.is_none() {
        return Err(invalid(format!(
            "network behind {:?}: that node shares this machine's network, so this machine would \
             reach the new node too; create the bastion with network \"linked\" (or behind \
             another node)",
            peer.name
        )));
    }
    Ok(Some(Some(peer.id.clone())))
}

/// Fills a new node's directory (layers, address, host keys, record) and boots it; the record is
/// saved before the boot and again with it. `peer`: the far end of its link ([`link_peer`]).
fn build(
    state: &StateDir,
    id: &str,
    planned: &Planned<'_>,
    options: &LocalOptions,
    peer: Option<Option<String>>,
) -> io::Result<NodeRecord> {
    let dir = state.node_dir(id);
    state::set_mode(&dir, 0o700)?;
    for sub in ["upper", "work", "root"] {
        fs::create_dir(dir.join(sub))?;
    }
    let claim = state::claim_address(&dir)?;
    let link = peer.map(|peer| network::Link::numbered(claim, peer));
    let address = link.as_ref().map_or(claim, network::Link::address);
    let port = match (options.port, &link) {
        (Some(port), _) => port,
        // A network of its own: nothing else listens there.
        (None, Some(_)) => 22,
        (None, None) => match TcpListener::bind((address, 22)) {
            Ok(_) => 22,
            // Something holds *:22 (the machine's own sshd): let the kernel pick a port.
            Err(_) => TcpListener::bind((address, 0))?.local_addr()?.port(),
        },
    };
    let host_keys = Rootfs {
        name: planned.name,
        address,
        port,
        image: planned.image,
        user: planned.user,
        ssh_key: planned.ssh_key,
        password: planned.password,
        banner: options.banner.as_deref(),
        sshd_config: &options.sshd_config,
    }
    .write(&dir.join("upper"))?;
    let mut record = NodeRecord {
        id: id.to_string(),
        name: planned.name.to_string(),
        image: planned.image.id().to_string(),
        size: planned.size.to_string(),
        address,
        port,
        login_user: match planned.image {
            Image::CloudDebian => planned.user.to_string(),
            Image::Debian => planned.image.login_user().to_string(),
        },
        host_keys,
        listen_delay_ms: options.listen_delay.as_millis() as u64,
        stopped: false,
        hostname: None,
        boot: None,
        created: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        link,
    };
    state.save(&record)?;
    if let Some(link) = &record.link {
        link.hold_route()?;
    }
    record.boot = Some(process::boot(
        &dir,
        planned.name,
        state.root(),
        options.listen_delay,
        record.link.as_ref().map(network::Link::address),
    )?);
    state.save(&record)?;
    connect_links(state, &record)?;
    Ok(record)
}

/// Links a fresh boot of a node that has a network of its own to the far end, and the running
/// nodes behind it to it again (their links went with its old namespace).
fn connect_links(state: &StateDir, record: &NodeRecord) -> io::Result<()> {
    let Some(link) = &record.link else {
        return Ok(());
    };
    let pid_of = |r: &NodeRecord| {
        r.boot
            .and_then(|boot| process::init_pid(&state.node_dir(&r.id), &boot))
    };
    let node_pid = network::wait_for_init(|| pid_of(record), &state.node_dir(&record.id))?;
    let peer_pid = match &link.peer {
        None => None,
        Some(id) => {
            let peer = state.record(id)?;
            let pid = peer.as_ref().and_then(pid_of).ok_or_else(|| {
                io::Error::other(format!("the node it sits behind ({id}) is not running"))
            })?;
            Some(pid)
        }
    };
    link.connect(&network::link_name(&record.id), node_pid, peer_pid)?;
    let behind = state.records()?.into_iter().filter(|r| {
        r.link
            .as_ref()
            .is_some_and(|l| l.peer.as_deref() == Some(record.id.as_str()))
    });
    for child in behind {
        let (Some(child_link), Some(pid)) = (&child.link, pid_of(&child)) else {
            continue;
        };
        if let Err(e) = child_link.connect(&network::link_name(&child.id), pid, Some(node_pid)) {
            tracing::warn!(node = %child.id, "linking it again to {}: {e}", record.id);
        }
    }
    Ok(())
}

/// Whether `id` is one the provider gives (`loc-` and 8 hex digits): nothing else names a
/// directory, so that no id from the user can lead outside the state directory.
fn valid_id(id: &str) -> bool {
    id.strip_prefix("loc-")
        .is_some_and(|hex| hex.len() == 8 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A node's record (its boot filled in from the node's own files when a creator stopped before
/// saving it); `NotFound` when there is none.
fn read_record(state: &StateDir, id: &str) -> Result<NodeRecord> {
    let not_found = || ProviderError::NotFound {
        provider: PROVIDER.into(),
        kind: "node",
        id: id.into(),
    };
    if !valid_id(id) {
        return Err(not_found());
    }
    let record = state
        .record(id)
        .map_err(failed(format!("reading the record of node {id}")))?
        .ok_or_else(not_found)?;
    Ok(heal(state, record))
}

/// A record that says no boot while the node is not stopped may belong to a creator stopped
/// between booting the node and saving the boot: the node's own files then name it.
fn heal(state: &StateDir, mut record: NodeRecord) -> NodeRecord {
    if record.boot.is_none() && !record.stopped {
        record.boot = process::recorded_boot(&state.node_dir(&record.id));
    }
    record
}

/// A node directory without a usable record, as a node in `error` that can be destroyed; named
/// as its creator asked when that is known.
fn broken_node(id: &str, name: Option<&str>, why: &str) -> Node {
    let mut extra = BTreeMap::new();
    extra.insert(
        "error".into(),
        format!(
            "incomplete node: {why} (its creator was stopped half-way, or the file was damaged); \
             destroy it with `nodeup nodes destroy {id}`"
        )
        .into(),
    );
    Node {
        id: id.into(),
        name: name.unwrap_or(id).into(),
        state: NodeState::Error,
        public_ips: vec![],
        private_ips: vec![],
        image: None,
        size: None,
        provider: PROVIDER.into(),
        extra,
    }
}

/// Destroys a node directory whose record is missing or damaged: halts whatever of it still runs
/// (found from its own files), gives up its address claims, deletes it.
fn destroy_broken(state: &StateDir, id: &str) -> Result<()> {
    let dir = state.node_dir(id);
    if let Some(boot) = process::recorded_boot(&dir) {
        process::halt(&dir, &boot, HALT_DEADLINE)
            .map_err(failed(format!("halting incomplete node {id}")))?;
    }
    state::release_claims_of(&dir);
    fs::remove_dir_all(&dir).map_err(failed(format!("deleting incomplete node {id}")))?;
    tracing::info!(node = %id, "incomplete local node destroyed");
    Ok(())
}

fn change(state: &StateDir, id: &str, action: Action) -> Result<()> {
    let _lock = state
        .lock()
        .map_err(failed("locking the state directory"))?;
    let mut record = match read_record(state, id) {
        Ok(record) => record,
        Err(_)
            if matches!(action, Action::Destroy) && valid_id(id) && state.node_dir(id).is_dir() =>
        {
            return destroy_broken(state, id);
        }
        Err(e) => return Err(e),
    };
    let dir = state.node_dir(id);
    let name = record.name.clone();
    let context = |what: &str| format!("{what} node {name} ({id})");
    if matches!(
        action,
        Action::Reboot | Action::Start | Action::Reinstall(_)
    ) {
        check_requirements()?;
    }
    if let Some(boot) = record.boot.take() {
        if matches!(action, Action::Start) && process::is_alive(&boot) {
            record.boot = Some(boot);
            return Ok(());
        }
        // Seen as pending, not as failed, while the old boot is being ended.
        state
            .save(&record)
            .map_err(failed(context("saving the record of")))?;
        process::halt(&dir, &boot, HALT_DEADLINE).map_err(failed(context("halting")))?;
    }
    match action {
        Action::Destroy => {
            state::release_claims_of(&dir);
            if let Some(link) = &record.link {
                link.release(&network::link_name(id));
            }
            fs::remove_dir_all(&dir).map_err(failed(context("deleting the files of")))?;
            tracing::info!(node = %id, "local node destroyed");
            return Ok(());
        }
        Action::Stop => record.stopped = true,
        Action::Reinstall(spec) => {
            record.host_keys =
                fresh_files(&dir, &record, &spec).map_err(failed(context("reinstalling")))?;
            record.image = Image::Debian.id().to_string();
            record.login_user = Image::Debian.login_user().to_string();
            record.hostname = spec.hostname.clone();
            let boot = boot_again(state, &mut record).map_err(failed(context("booting")))?;
            record.boot = Some(boot);
        }
        Action::Reboot | Action::Start => {
            let boot = boot_again(state, &mut record).map_err(failed(context("booting")))?;
            record.boot = Some(boot);
        }
    }
    connect_links(state, &record).map_err(failed(context("linking the network of")))?;
    state
        .save(&record)
        .map_err(failed(context("saving the record of")))
}

/// Boots a node that is not running (after a halt), as its record says.
fn boot_again(state: &StateDir, record: &mut NodeRecord) -> io::Result<state::Boot> {
    record.stopped = false;
    let delay = Duration::from_millis(record.listen_delay_ms);
    let hostname = record.hostname.clone().unwrap_or(record.name.clone());
    let own_network = record.link.as_ref().map(network::Link::address);
    process::boot(
        &state.node_dir(&record.id),
        &hostname,
        state.root(),
        delay,
        own_network,
    )
}

/// A reinstall's fresh filesystem (image `debian`): new layers, new host keys (returned), the
/// hostname and root key of `spec`, and its config drive (user data, metadata) for first boot.
fn fresh_files(dir: &Path, record: &NodeRecord, spec: &Reinstall) -> io::Result<Vec<String>> {
    for sub in ["upper", "work"] {
        let path = dir.join(sub);
        if path.exists() {
            fs::remove_dir_all(&path)?;
        }
        fs::create_dir(&path)?;
    }
    let hostname = spec.hostname.clone().unwrap_or(record.name.clone());
    let upper = dir.join("upper");
    let keys = Rootfs {
        name: &hostname,
        address: record.address,
        port: record.port,
        image: Image::Debian,
        user: rootfs::LOGIN_USER,
        ssh_key: spec.root_key.as_deref(),
        password: None,
        banner: None,
        sshd_config: &[],
    }
    .write(&upper)?;
    if spec.user_data.is_none() && spec.metadata.is_empty() {
        return Ok(keys);
    }
    let cloud = upper.join("var/lib/cloud/instance");
    fs::create_dir_all(&cloud)?;
    state::set_mode(&cloud, 0o700)?;
    if let Some(data) = &spec.user_data {
        fs::write(cloud.join("user-data.txt"), data)?;
    }
    if !spec.metadata.is_empty() {
        let meta: serde_json::Map<String, serde_json::Value> = spec
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().into()))
            .collect();
        fs::write(
            cloud.join("meta_data.json"),
            serde_json::to_vec(&serde_json::json!({ "meta": meta }))?,
        )?;
    }
    Ok(keys)
}

fn to_node(state: &StateDir, record: &NodeRecord) -> Node {
    let dir = state.node_dir(&record.id);
    let mut extra: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    let node_state = match (&record.boot, record.stopped) {
        (_, true) => NodeState::Stopped,
        (None, false) => NodeState::Pending,
        (Some(boot), false) if process::is_alive(boot) => {
            let listening = match &record.link {
                None => process::is_listening(record.address, record.port),
                Some(_) => process::init_pid(&dir, boot)
                    .is_some_and(|pid| process::is_listening_in(pid, record.address, record.port)),
            };
            if listening {
                NodeState::Running
            } else {
                NodeState::Pending
            }
        }
        (Some(_), false) => {
            extra.insert("error".into(), console_tail(&dir).into());
            NodeState::Error
        }
    };
    if record.port != 22 {
        extra.insert("ssh_port".into(), record.port.into());
    }
    extra.insert("login_user".into(), record.login_user.clone().into());
    extra.insert("host_keys".into(), record.host_keys.clone().into());
    extra.insert("location".into(), "local".into());
    extra.insert("created".into(), record.created.into());
    // A node behind another has no address this machine reaches: a private one.
    let address = vec![IpAddr::V4(record.address)];
    let (public, private) = match record.link.as_ref().and_then(|l| l.peer.as_ref()) {
        Some(_) => (vec![], address),
        None => (address, vec![]),
    };
    Node {
        id: record.id.clone(),
        name: record.name.clone(),
        state: node_state,
        public_ips: public,
        private_ips: private,
        image: Some(record.image.clone()),
        size: Some(record.size.clone()),
        provider: PROVIDER.into(),
        extra,
    }
}

/// The last lines of a node's console (the boot script's and sshd's messages).
fn console_tail(dir: &Path) -> String {
    let text = fs::read_to_string(dir.join("console.log")).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(5)..].join("\n");
    if tail.is_empty() {
        "the node's sshd exited".into()
    } else {
        format!("the node's sshd exited: {tail}")
    }
}

/// Checks what booting a node needs, with the fix for each thing missing.
fn check_requirements() -> Result<()> {
    let need = |message: String| ProviderError::Requirement {
        provider: PROVIDER.into(),
        message,
    };
    if !cfg!(target_os = "linux") {
        return Err(need(
            "local nodes need Linux (namespaces and overlayfs)".into(),
        ));
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(need(
            "local nodes need root (they mount an overlay and create namespaces): run nodeup as root".into(),
        ));
    }
    for (path, package) in [
        ("/usr/sbin/sshd", "openssh-server"),
        ("/usr/lib/openssh/sftp-server", "openssh-sftp-server"),
        (process::UNSHARE, "util-linux"),
        ("/usr/bin/sudo", "sudo"),
    ] {
        if !Path::new(path).exists() {
            return Err(need(format!(
                "{path} is missing: install the {package} package (apt-get install {package})"
            )));
        }
    }
    let filesystems = fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !filesystems
        .lines()
        .any(|l| l.trim_end().ends_with("overlay"))
    {
        return Err(need(
            "this kernel has no overlay filesystem: load it with `modprobe overlay`".into(),
        ));
    }
    Ok(())
}

fn invalid(message: String) -> ProviderError {
    ProviderError::InvalidRequest {
        provider: PROVIDER.into(),
        message,
    }
}

fn failed(context: impl Into<String>) -> impl FnOnce(io::Error) -> ProviderError {
    let context = context.into();
    move |e| ProviderError::Failed {
        provider: PROVIDER.into(),
        context,
        source: Box::new(e),
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| failed("running a blocking task")(io::Error::other(e)))?
}
