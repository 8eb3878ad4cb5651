//! nodeup's integration tests: one binary, against test-bed nodes (real OpenSSH sshd).

mod cli_deploy;
mod cli_nodes;
mod cli_ssh_config;
mod deploy;
mod ec2;
mod fleet;
mod hardening;
mod journal;
mod jump;
mod local_nodes;
mod nephoscale;
mod openstack;
mod ovh;
mod ovh_fake;
mod probe;
mod promises;
mod python;
mod reinstall;
mod relay;
mod replay;
mod round_trips;
mod slipstream;
mod ssh;

use std::process::Output;

/// A machine at `addr` that was there before the steps (not created by them), logged in to as
/// `user`.
pub fn existing_machine(addr: std::net::SocketAddr, user: &str) -> nodeup::engine::Target {
    nodeup::engine::Target {
        addr,
        users: vec![user.into()],
        pinned_host_keys: Vec::new(),
        node: None,
        journal: None,
        created: false,
        driver: None,
        ssh: Default::default(),
    }
}

/// Options that log in with the test bed's key and check host keys strictly against
/// `known_hosts`, with no journal.
pub fn strict_options(
    bed: &testbed::TestBed,
    known_hosts: &std::path::Path,
) -> nodeup::engine::DeployOptions {
    nodeup::engine::DeployOptions {
        ssh_keys: vec![bed.client_key().to_path_buf()],
        known_hosts: known_hosts.to_path_buf(),
        host_key_policy: nodeup::ssh::HostKeyPolicy::Strict,
        journal: None,
        ..Default::default()
    }
}

/// `nodeup ARGS` against a provider's fake: `env` (the fake's variables), nodeup's state in the
/// test bed, no agent, no provider from the environment.
pub fn nodeup_with(bed: &testbed::TestBed, env: &[(String, String)], args: &[&str]) -> Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_nodeup"));
    cmd.args(args)
        .env("NODEUP_STATE_DIR", bed.nodeup_state_dir())
        .env("HOME", bed.dir())
        .env_remove("SSH_AUTH_SOCK")
        .env_remove("NODEUP_PROVIDER");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// Runs `command` as root, over OpenSSH with the test bed's key, on the local node `id` of the
/// bed (a fake's machine), once it runs; its host key checked against the keys the local
/// provider reports. The node's address, and what the command did.
pub async fn ssh_root_on(
    bed: &testbed::TestBed,
    id: &str,
    command: &str,
) -> (std::net::IpAddr, Output) {
    ssh_root_with(bed, id, bed.client_key(), command).await
}

/// As [`ssh_root_on`], logging in with the private key at `key`.
pub async fn ssh_root_with(
    bed: &testbed::TestBed,
    id: &str,
    key: &std::path::Path,
    command: &str,
) -> (std::net::IpAddr, Output) {
    use nodeup::driver::NodeDriver;
    let mut node = bed.driver().get_node(id).await.unwrap();
    for _ in 0..100 {
        if node.state == nodeup::model::NodeState::Running {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        node = bed.driver().get_node(id).await.unwrap();
    }
    let ip = node.public_ips[0];
    let known_hosts = bed.dir().join(format!("known_hosts-{id}"));
    let lines: String = node
        .host_keys()
        .iter()
        .map(|k| format!("{ip} {k}\n"))
        .collect();
    std::fs::write(&known_hosts, lines).unwrap();
    let out = std::process::Command::new("ssh")
        .args(["-F", "/dev/null", "-o", "BatchMode=yes"])
        .args(["-o", "StrictHostKeyChecking=yes", "-o"])
        .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
        .arg("-i")
        .arg(key)
        .arg(format!("root@{ip}"))
        .arg(command)
        .output()
        .unwrap();
    (ip, out)
}

/// The text of a command's stdout, with stderr shown when the assertion that uses it fails.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts that a command succeeded, showing its stderr if not.
#[track_caller]
pub fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Everything of the test bed's local nodes that can outlive them: node directories, processes
/// started for them, mounts of their files, address claims.
pub fn bed_leftovers(bed: &testbed::TestBed) -> Vec<String> {
    let local = bed.dir().join("local");
    let local_str = local.to_string_lossy().into_owned();
    let mut left = Vec::new();
    for entry in std::fs::read_dir(local.join("nodes"))
        .into_iter()
        .flatten()
        .flatten()
    {
        left.push(format!("node directory {}", entry.path().display()));
    }
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(&local_str) {
            left.push(format!("process {:?}", entry.file_name()));
        }
        let mounts = std::fs::read_to_string(entry.path().join("mountinfo")).unwrap_or_default();
        if mounts.contains(&local_str) {
            left.push(format!("a mount seen by process {:?}", entry.file_name()));
        }
    }
    for entry in std::fs::read_dir(nodeup::providers::local::CLAIMS_DIR)
        .into_iter()
        .flatten()
        .flatten()
    {
        let owner = std::fs::read(entry.path()).unwrap_or_default();
        if String::from_utf8_lossy(&owner).starts_with(&local_str) {
            left.push(format!("address claim {}", entry.path().display()));
        }
    }
    left
}

/// The `nodeup` binary on a test bed: its state directory and home, no passphrase, password,
/// agent or debug trace from the environment, no standard input.
pub fn nodeup_on(bed: &testbed::TestBed, args: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_nodeup"));
    cmd.args(args)
        .env("NODEUP_STATE_DIR", bed.nodeup_state_dir())
        .env("HOME", bed.dir())
        .env_remove("NODEUP_LOG")
        .env_remove("NODEUP_DEBUG")
        .env_remove("NODEUP_KEY_PASSPHRASE")
        .env_remove("NODEUP_SSH_PASSWORD")
        .env_remove("SSH_AUTH_SOCK")
        .current_dir(bed.dir())
        .stdin(std::process::Stdio::null());
    cmd
}

/// Writes `text` to `dir/name`; returns the path.
pub fn write_file(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// A command's stderr as text.
pub fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Sends `signal` to a child process.
pub fn signal(child: &std::process::Child, signal: i32) {
    // SAFETY: kill(2) on a child we spawned and have not reaped.
    unsafe { libc::kill(child.id() as i32, signal) };
}

/// The lines a child writes on stderr, from where `spawn_until` stopped reading.
pub type StderrLines = std::io::Lines<std::io::BufReader<std::process::ChildStderr>>;

/// Spawns `cmd` with stderr piped and reads stderr until a line contains `until`; returns the
/// child, the lines read so far and the rest of the reader.
pub fn spawn_until(
    mut cmd: std::process::Command,
    until: &str,
) -> (std::process::Child, Vec<String>, StderrLines) {
    use std::io::BufRead;
    let mut child = cmd.stderr(std::process::Stdio::piped()).spawn().unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let done = line.contains(until);
        seen.push(line);
        if done {
            break;
        }
    }
    (child, seen, lines)
}

/// An OVH create request the fake serves: Debian 12 on a b2-7 in GRA11, with the test bed's key.
pub fn ovh_request(bed: &testbed::TestBed, name: &str) -> nodeup::model::CreateNode {
    nodeup::model::CreateNode {
        name: name.into(),
        image: Some("Debian 12".into()),
        size: Some("b2-7".into()),
        location: Some("GRA11".into()),
        auth: Some(nodeup::model::NodeAuth::SshKey(
            bed.client_public_key().into(),
        )),
        ..Default::default()
    }
}

/// Nodes made at once, and `known_hosts` in the bed's directory listing all of them (for strict
/// host-key checking, as `run` does).
pub async fn known_nodes(
    bed: &testbed::TestBed,
    specs: Vec<testbed::NodeSpec>,
) -> (Vec<testbed::TestNode>, std::path::PathBuf) {
    let nodes: Vec<testbed::TestNode> =
        futures::future::join_all(specs.into_iter().map(|s| bed.node(s)))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
    let known: String = nodes
        .iter()
        .map(|n| std::fs::read_to_string(n.known_hosts()).unwrap())
        .collect();
    let path = bed.dir().join("known_hosts");
    std::fs::write(&path, known).unwrap();
    (nodes, path)
}

/// A local debian node of this name, authorizing the test bed's key.
pub fn deploy_request(bed: &testbed::TestBed, name: &str) -> nodeup::model::CreateNode {
    nodeup::model::CreateNode {
        name: name.into(),
        image: Some("debian".into()),
        auth: Some(nodeup::model::NodeAuth::SshKey(
            bed.client_public_key().into(),
        )),
        ..Default::default()
    }
}

/// Makes an ed25519 key pair `dir/name` (and `.pub`) with ssh-keygen; `passphrase` may be empty.
pub fn keygen(dir: &std::path::Path, name: &str, passphrase: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    let status = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", passphrase, "-f"])
        .arg(&path)
        .status()
        .unwrap();
    assert!(status.success());
    path
}
