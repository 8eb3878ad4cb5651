//! Booting and halting a local node's namespaces, and reading what the kernel says of them:
//! whether a process is still the one we started, whether sshd listens.

use std::fs::{self, OpenOptions};
use std::io;
use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::state::Boot;
pub use crate::procfs::start_time;
use crate::procfs::stat;

/// The script PID 1 of every node runs: mounts, hostname, then (chrooted into the node) a loop that
/// runs sshd and boots the node again when its own `reboot` asks.
const NODE_INIT: &str = include_str!("node-init.sh");

/// Where `unshare` (util-linux) is looked for.
pub const UNSHARE: &str = "/usr/bin/unshare";

/// Starts one boot of the node in `node_dir`; returns at once with the launcher's identity.
/// `own_network`: the node gets a network namespace of its own, and its sshd waits until this
/// address is on one of its interfaces (the provider links it).
pub fn boot(
    node_dir: &Path,
    name: &str,
    state_dir: &Path,
    listen_delay: Duration,
    own_network: Option<Ipv4Addr>,
) -> io::Result<Boot> {
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(node_dir.join("console.log"))?;
    let _ = fs::remove_file(node_dir.join("init.pid"));
    let delay = format!(
        "{}.{:03}",
        listen_delay.as_secs(),
        listen_delay.subsec_millis()
    );
    let delay = if listen_delay.is_zero() { "0" } else { &delay };
    let mut child = Command::new(UNSHARE)
        .args(own_network.map(|_| "--net"))
        .args([
            "--mount",
            "--uts",
            "--pid",
            "--fork",
            "--kill-child=SIGKILL",
            "--propagation",
            "private",
            "--",
            "/bin/sh",
            "-c",
            NODE_INIT,
            "node-init",
        ])
        .arg(node_dir)
        .arg(name)
        .arg(state_dir)
        .arg(delay)
        .arg(own_network.map(|a| a.to_string()).unwrap_or_default())
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // Its own process group: a Ctrl+C meant for the command that created it does not reach it.
        .process_group(0)
        .spawn()?;
    let launcher_pid = child.id() as i32;
    let launcher_start = start_time(launcher_pid)
        .ok_or_else(|| io::Error::other("the node's launcher exited at once"))?;
    // Reap it whenever it ends, so that a long-lived caller keeps no zombie.
    thread::spawn(move || child.wait());
    let boot = Boot {
        launcher_pid,
        launcher_start,
    };
    // Written at once, apart from the node's record: a creator stopped before it saved the record
    // still leaves what it takes to halt this boot.
    fs::write(node_dir.join(BOOT_FILE), serde_json::to_vec(&boot)?)?;
    Ok(boot)
}

/// The file in a node's directory that names its running boot (see [`boot`]).
const BOOT_FILE: &str = "boot.json";

/// The boot a node directory holds, from its own files when its record cannot say: the boot file,
/// else the launcher of the PID 1 named in `init.pid` (when that launcher is an `unshare` started
/// for this very directory). `None` when no process of the node lives.
pub fn recorded_boot(node_dir: &Path) -> Option<Boot> {
    let from_file = fs::read(node_dir.join(BOOT_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice::<Boot>(&b).ok())
        .filter(is_alive);
    from_file.or_else(|| {
        let pid: i32 = fs::read_to_string(node_dir.join("init.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let launcher = stat(pid)?.ppid;
        let cmdline = fs::read(format!("/proc/{launcher}/cmdline")).ok()?;
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let ours = args.first().is_some_and(|a| a.ends_with(b"unshare"))
            && args.contains(&node_dir.as_os_str().as_encoded_bytes());
        ours.then_some(Boot {
            launcher_pid: launcher,
            launcher_start: start_time(launcher)?,
        })
    })
}

/// Whether the launcher of this boot is still alive (and not a zombie).
pub fn is_alive(boot: &Boot) -> bool {
    crate::procfs::is_running(boot.launcher_pid, boot.launcher_start)
}

/// The host pid of the node's PID 1 (its init loop, chrooted into the node), while this boot lives.
pub fn init_pid(node_dir: &Path, boot: &Boot) -> Option<i32> {
    let pid: i32 = fs::read_to_string(node_dir.join("init.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let s = stat(pid)?;
    (s.ppid == boot.launcher_pid && is_alive(boot) && s.state != 'Z').then_some(pid)
}

/// Ends this boot: kills PID 1 of the node (the kernel then kills every process of its PID namespace
/// and its mount namespace goes with them) and waits until the launcher has reaped it and exited.
///
/// The launcher is left to exit by itself rather than killed: the launcher reaps PID 1 at once,
/// while a PID 1 orphaned by a killed launcher would stay a zombie until the host's init reaps it.
pub fn halt(node_dir: &Path, boot: &Boot, deadline: Duration) -> io::Result<()> {
    let init = init_pid(node_dir, boot).map(|pid| (pid, start_time(pid)));
    match init {
        // SAFETY: kill(2) has no memory effects; the pid was checked to be this boot's PID 1.
        Some((pid, _)) => unsafe { libc::kill(pid, libc::SIGKILL) },
        // Not forked yet (or already gone): the launcher's death signal reaches its child.
        // SAFETY: as above; the start time was checked, so the pid was not reused.
        None if is_alive(boot) => unsafe { libc::kill(boot.launcher_pid, libc::SIGKILL) },
        None => 0,
    };
    let started = Instant::now();
    let mut launcher_killed = init.is_none();
    loop {
        // Gone means reaped, not a zombie: until then the kernel still shows it in the node's
        // PID namespace.
        let init_gone = init.is_none_or(|(pid, start)| start_time(pid) != start);
        if init_gone && !is_alive(boot) {
            let _ = fs::remove_file(node_dir.join(BOOT_FILE));
            return Ok(());
        }
        if !launcher_killed && started.elapsed() > Duration::from_secs(2) {
            // SAFETY: as above.
            unsafe { libc::kill(boot.launcher_pid, libc::SIGKILL) };
            launcher_killed = true;
        }
        if started.elapsed() > deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "node processes (launcher pid {}) still running after {:?}",
                    boot.launcher_pid, deadline
                ),
            ));
        }
        thread::sleep(Duration::from_millis(2));
    }
}

/// Whether some socket listens on `addr:port` (or on the wildcard address at that port).
pub fn is_listening(addr: Ipv4Addr, port: u16) -> bool {
    listens("/proc/net/tcp", addr, port)
}

/// Whether something listens on `addr:port` in the network namespace of process `pid`.
pub fn is_listening_in(pid: i32, addr: Ipv4Addr, port: u16) -> bool {
    listens(&format!("/proc/{pid}/net/tcp"), addr, port)
}

/// Whether the TCP table at `path` has a socket listening on `addr:port` (or on any address).
fn listens(path: &str, addr: Ipv4Addr, port: u16) -> bool {
    let Ok(table) = fs::read_to_string(path) else {
        return false;
    };
    table.lines().skip(1).any(|line| {
        let mut fields = line.split_whitespace();
        let (Some(local), Some(_remote), Some(state)) =
            (fields.nth(1), fields.next(), fields.next())
        else {
            return false;
        };
        if state != "0A" {
            return false;
        }
        let Some((ip_hex, port_hex)) = local.split_once(':') else {
            return false;
        };
        let (Ok(ip), Ok(p)) = (
            u32::from_str_radix(ip_hex, 16),
            u16::from_str_radix(port_hex, 16),
        ) else {
            return false;
        };
        // The kernel prints the network-order address as a native integer.
        let ip = Ipv4Addr::from(ip.to_ne_bytes());
        p == port && (ip == addr || ip.is_unspecified())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sees_a_listener_on_loopback() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(is_listening(Ipv4Addr::LOCALHOST, port));
        assert!(!is_listening(Ipv4Addr::new(127, 0, 0, 2), port));
        // A port held by a socket that is bound but not listening: deterministic, unlike a port
        // just freed, which anyone on the machine may take again.
        let bound = tokio::net::TcpSocket::new_v4().unwrap();
        bound.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let held = bound.local_addr().unwrap().port();
        assert!(!is_listening(Ipv4Addr::LOCALHOST, held));
    }
}
