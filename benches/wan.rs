//! A deployment over a slow link: the test bed's relay delays each direction by half a round trip
//! (and a TCP handshake by one) in front of a real sshd. A benchmark, not a test:
//! `cargo bench --bench wan` prints four tables from one run.
//!
//! 1. The 3-step deployment (append a key, upload a file, run a two-line script) by `nodeup run`,
//!    side by side with the OpenSSH client doing the same work in one connection and one command
//!    (the floor), at round trips of 0, 20, 50 and 150 ms: wall time, wall time in round trips,
//!    and the round trips each client waited for, counted at the relay.
//! 2. Uploads alone: `nodeup run` with one file step against OpenSSH `sftp` putting the same file.
//! 3. The same deployment to a private node through a bastion (the relay in front of the bastion,
//!    the private node on the bastion's own link): `nodeup run` against `ssh` with `ProxyJump`,
//!    both reading one ssh_config.
//! 4. A node whose sshd starts listening late: how long after it listens the first SSH
//!    connection reaches it.
//!
//! `NODEUP_BENCH_RUNS` (default 3) runs of each cell; the median is shown. `NODEUP_BENCH_RTTS`
//! (e.g. `50,150`) measures only those round trips.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nodeup::model::CreateNode;
use nodeup::providers::local::LocalOptions;
use testbed::{Faults, NodeSpec, Relay, TestBed, TestNode};

/// The round trips measured, in milliseconds.
const ROUND_TRIPS_MS: [u64; 4] = [0, 20, 50, 150];

/// The files uploaded: a label and a size in bytes.
const FILES: [(&str, usize); 3] = [("1 B", 1), ("8 MiB", 8 << 20), ("64 MiB", 64 << 20)];

/// The round trips at which uploads alone are compared with `sftp`.
const UPLOAD_ROUND_TRIPS_MS: [u64; 2] = [50, 150];

/// How late the slow node's sshd starts listening.
const LISTEN_DELAY: Duration = Duration::from_secs(2);

/// How often the slow node's sockets are looked at.
const SOCKET_POLL: Duration = Duration::from_millis(1);

/// The same two lines every client runs.
const SCRIPT: &str = "echo one\necho two\n";

/// One client's result in one cell: median wall time and round trips waited for.
#[derive(Debug, Clone, Copy)]
struct Cell {
    wall: Duration,
    turns: Option<u32>,
}

/// What the bench works with: the node, the relay in front of it, the files.
struct Bench {
    bed: TestBed,
    /// Kept for the relay's sake: dropped, the node would be destroyed.
    _node: TestNode,
    relay: Relay,
    known_hosts: PathBuf,
    runs: usize,
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let bench = runtime.block_on(Bench::new());
    let _guard = runtime.enter();
    println!("Relay delay per direction = round trip / 2; sshd on loopback behind it.\n");
    if std::env::var_os("NODEUP_BENCH_ONLY_LISTEN").is_none() {
        deployment_table(&bench);
        println!();
        upload_table(&bench);
        println!();
        let through = runtime.block_on(Through::new(&bench));
        jump_table(&bench, &through);
        println!();
    }
    runtime.block_on(listen_table(&bench.bed));
}

impl Bench {
    async fn new() -> Bench {
        let bed = TestBed::new().expect("test bed");
        let node = bed.node(NodeSpec::new("wan")).await.expect("node");
        let relay = Relay::start(node.addr()).await.expect("relay");
        let known_hosts = bed.dir().join("known_hosts-relay");
        let keys = std::fs::read_to_string(node.known_hosts()).expect("known_hosts");
        let host = format!("[127.0.0.1]:{}", relay.addr().port());
        let text: String = keys
            .lines()
            .filter_map(|l| l.split_once(' ').map(|(_, key)| format!("{host} {key}\n")))
            .collect();
        std::fs::write(&known_hosts, text).expect("known_hosts");
        let runs = std::env::var("NODEUP_BENCH_RUNS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(3);
        Bench {
            bed,
            _node: node,
            relay,
            known_hosts,
            runs,
        }
    }

    fn set_round_trip(&self, ms: u64) {
        self.relay.set_faults(Faults {
            delay: Duration::from_millis(ms) / 2,
            ..Faults::default()
        });
    }

    fn payload(&self, size: usize) -> PathBuf {
        let path = self.bed.dir().join(format!("payload-{size}"));
        if !path.exists() {
            let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            std::fs::write(&path, data).expect("payload");
        }
        path
    }

    /// A step file: the key, the file, the script; or the file alone.
    fn stepfile(&self, payload: &Path, all_three: bool) -> PathBuf {
        let name = format!(
            "steps-{}-{all_three}.toml",
            payload.display().to_string().len()
        );
        let path = self.bed.dir().join(name);
        let key = self.bed.client_key().with_extension("pub");
        let mut text = String::new();
        if all_three {
            let _ = writeln!(
                text,
                "[[step]]\nssh-key = {:?}\n",
                key.display().to_string()
            );
        }
        let _ = writeln!(
            text,
            "[[step]]\nfile = {:?}\ntarget = \"/root/payload.bin\"\nmode = \"0644\"\n",
            payload.display().to_string()
        );
        if all_three {
            let _ = writeln!(text, "[[step]]\ninline = {SCRIPT:?}");
        }
        std::fs::write(&path, text).expect("step file");
        path
    }

    fn nodeup(&self, stepfile: &Path) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_nodeup"));
        cmd.arg("run")
            .arg(stepfile)
            .arg("--host")
            .arg(format!("root@{}", self.relay.addr()))
            .arg("--known-hosts")
            .arg(&self.known_hosts)
            .arg("--key")
            .arg(self.bed.client_key())
            .env("NODEUP_STATE_DIR", self.bed.nodeup_state_dir())
            .env("HOME", self.bed.dir())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd
    }

    /// OpenSSH's options: the relay's address, the node's key checked under the relay's name.
    fn openssh_options(&self, cmd: &mut Command) {
        cmd.args([
            "-F",
            "/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
        ])
        .args(["-o", "StrictHostKeyChecking=yes"])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", self.known_hosts.display()))
        .arg("-o")
        .arg(format!("Port={}", self.relay.addr().port()))
        .arg("-i")
        .arg(self.bed.client_key());
    }

    /// The floor: the same work in one connection and one command.
    fn openssh_exec(&self, payload: &Path) -> Command {
        let mut cmd = Command::new("ssh");
        self.openssh_options(&mut cmd);
        cmd.arg("root@127.0.0.1")
            .arg(self.exec_command())
            .stdin(std::fs::File::open(payload).expect("payload"))
            .stdout(Stdio::null());
        cmd
    }

    /// The one command OpenSSH runs for the 3 steps: the key appended, the file from its input,
    /// the script.
    fn exec_command(&self) -> String {
        format!(
            "umask 077; mkdir -p ~/.ssh && printf '%s\\n' {} >> ~/.ssh/authorized_keys && \
             cat > /root/payload.bin && chmod 0644 /root/payload.bin && sh -c {}",
            nodeup::ssh::quote(self.bed.client_public_key()),
            nodeup::ssh::quote(SCRIPT)
        )
    }

    /// `sftp` putting the file.
    fn openssh_sftp(&self, payload: &Path) -> Command {
        let batch = self.bed.dir().join("sftp-batch");
        std::fs::write(
            &batch,
            format!("put {} /root/payload-sftp.bin\n", payload.display()),
        )
        .expect("batch");
        let mut cmd = Command::new("sftp");
        self.openssh_options(&mut cmd);
        cmd.arg("-b")
            .arg(&batch)
            .arg("root@127.0.0.1")
            .stdout(Stdio::null());
        cmd
    }

    /// Runs `make()`'s command `self.runs` times; the median wall time and the round trips the
    /// last run's connections waited for.
    fn measure(&self, make: impl Fn() -> Command) -> Cell {
        self.measure_at(&self.relay, make)
    }

    /// [`Bench::measure`], the round trips counted at `relay`.
    fn measure_at(&self, relay: &Relay, make: impl Fn() -> Command) -> Cell {
        let mut walls = Vec::new();
        let mut turns = None;
        for _ in 0..self.runs {
            let before = relay.turns().len();
            let started = Instant::now();
            let status = make().status().expect("spawn");
            walls.push(started.elapsed());
            assert!(status.success(), "a client failed: {status}");
            let counted = relay.turns();
            turns = (counted.len() > before).then(|| counted[before..].iter().sum());
        }
        walls.sort();
        Cell {
            wall: walls[walls.len() / 2],
            turns,
        }
    }
}

fn seconds(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64())
}

/// Wall time in round trips ("–" on loopback).
fn in_round_trips(d: Duration, rtt_ms: u64) -> String {
    if rtt_ms == 0 {
        "–".into()
    } else {
        format!("{:.1}", d.as_secs_f64() * 1000.0 / rtt_ms as f64)
    }
}

fn turns(cell: &Cell) -> String {
    cell.turns.map_or("–".into(), |t| t.to_string())
}

/// The round trips to measure: `NODEUP_BENCH_RTTS`, or all of `all`.
fn round_trips(all: &[u64]) -> Vec<u64> {
    match std::env::var("NODEUP_BENCH_RTTS") {
        Ok(list) => list
            .split(',')
            .filter_map(|v| v.trim().parse().ok())
            .filter(|v| all.contains(v))
            .collect(),
        Err(_) => all.to_vec(),
    }
}

fn deployment_table(bench: &Bench) {
    println!("3-step deployment (key, file, script); one node; nodeup run vs one OpenSSH exec:\n");
    println!("| round trip | file | nodeup (s) | nodeup (RTTs) | nodeup turns | OpenSSH exec (s) | OpenSSH (RTTs) | OpenSSH turns | nodeup / OpenSSH |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for rtt in round_trips(&ROUND_TRIPS_MS) {
        bench.set_round_trip(rtt);
        for (label, size) in FILES {
            let payload = bench.payload(size);
            let steps = bench.stepfile(&payload, true);
            let nodeup = bench.measure(|| bench.nodeup(&steps));
            let openssh = bench.measure(|| bench.openssh_exec(&payload));
            println!(
                "| {rtt} ms | {label} | {} | {} | {} | {} | {} | {} | {:.2} |",
                seconds(nodeup.wall),
                in_round_trips(nodeup.wall, rtt),
                turns(&nodeup),
                seconds(openssh.wall),
                in_round_trips(openssh.wall, rtt),
                turns(&openssh),
                nodeup.wall.as_secs_f64() / openssh.wall.as_secs_f64(),
            );
        }
    }
}

/// A private node behind a bastion, the relay in front of the bastion, and one ssh_config that
/// names both (`ProxyJump bastion` for the private node), read by nodeup and OpenSSH alike.
struct Through {
    _bastion: TestNode,
    _private: TestNode,
    relay: Relay,
    config: PathBuf,
}

impl Through {
    async fn new(bench: &Bench) -> Through {
        let bed = &bench.bed;
        let bastion = bed
            .node(NodeSpec::new("bastion").linked())
            .await
            .expect("bastion");
        let private = bed
            .node(NodeSpec::new("private").behind(&bastion))
            .await
            .expect("private node");
        let relay = Relay::start(bastion.addr()).await.expect("relay");
        let known_hosts = bed.dir().join("known_hosts-through");
        let bastion_keys = std::fs::read_to_string(bastion.known_hosts()).expect("known_hosts");
        let relayed = format!("[127.0.0.1]:{}", relay.addr().port());
        let mut text: String = bastion_keys
            .lines()
            .filter_map(|l| {
                l.split_once(' ')
                    .map(|(_, key)| format!("{relayed} {key}\n"))
            })
            .collect();
        text.push_str(&std::fs::read_to_string(private.known_hosts()).expect("known_hosts"));
        std::fs::write(&known_hosts, text).expect("known_hosts");
        let common = format!(
            "  User root\n  IdentityFile {}\n  IdentitiesOnly yes\n  UserKnownHostsFile {}\n  \
             StrictHostKeyChecking yes\n  BatchMode yes\n",
            bed.client_key().display(),
            known_hosts.display()
        );
        let config = bed.dir().join("ssh_config-through");
        std::fs::write(
            &config,
            format!(
                "Host bastion\n  HostName 127.0.0.1\n  Port {}\n{common}\
                 Host private\n  HostName {}\n  ProxyJump bastion\n{common}",
                relay.addr().port(),
                private.ip()
            ),
        )
        .expect("ssh_config");
        Through {
            _bastion: bastion,
            _private: private,
            relay,
            config,
        }
    }

    fn set_round_trip(&self, ms: u64) {
        self.relay.set_faults(Faults {
            delay: Duration::from_millis(ms) / 2,
            ..Faults::default()
        });
    }

    fn nodeup(&self, bench: &Bench, stepfile: &Path) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_nodeup"));
        cmd.arg("run")
            .arg(stepfile)
            .arg("--ssh-config")
            .arg(&self.config)
            .arg("--host")
            .arg("private")
            .env("NODEUP_STATE_DIR", bench.bed.nodeup_state_dir())
            .env("HOME", bench.bed.dir())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd
    }

    /// The same work as [`Bench::openssh_exec`], through `ProxyJump`.
    fn openssh(&self, bench: &Bench, payload: &Path) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.arg("-F")
            .arg(&self.config)
            .arg("private")
            .arg(bench.exec_command())
            .stdin(std::fs::File::open(payload).expect("payload"))
            .stdout(Stdio::null());
        cmd
    }
}

fn jump_table(bench: &Bench, through: &Through) {
    println!("3-step deployment to a private node through a bastion (the round trip is to the bastion; the bastion's link to the node is local); nodeup run vs ssh with ProxyJump, one ssh_config:\n");
    println!("| round trip | nodeup (s) | nodeup turns at the bastion | ssh -J exec (s) | ssh turns | nodeup / OpenSSH |");
    println!("|---|---|---|---|---|---|");
    let payload = bench.payload(FILES[0].1);
    let steps = bench.stepfile(&payload, true);
    for rtt in round_trips(&ROUND_TRIPS_MS) {
        through.set_round_trip(rtt);
        let nodeup = bench.measure_at(&through.relay, || through.nodeup(bench, &steps));
        let openssh = bench.measure_at(&through.relay, || through.openssh(bench, &payload));
        println!(
            "| {rtt} ms | {} | {} | {} | {} | {:.2} |",
            seconds(nodeup.wall),
            turns(&nodeup),
            seconds(openssh.wall),
            turns(&openssh),
            nodeup.wall.as_secs_f64() / openssh.wall.as_secs_f64(),
        );
    }
}

fn upload_table(bench: &Bench) {
    println!("Upload alone (login included): nodeup run with one file step vs sftp put:\n");
    println!("| round trip | file | nodeup (s) | sftp (s) | nodeup throughput / sftp's |");
    println!("|---|---|---|---|---|");
    for rtt in round_trips(&UPLOAD_ROUND_TRIPS_MS) {
        bench.set_round_trip(rtt);
        for (label, size) in FILES.into_iter().skip(1) {
            let payload = bench.payload(size);
            let steps = bench.stepfile(&payload, false);
            let nodeup = bench.measure(|| bench.nodeup(&steps));
            let sftp = bench.measure(|| bench.openssh_sftp(&payload));
            println!(
                "| {rtt} ms | {label} | {} | {} | {:.0} % |",
                seconds(nodeup.wall),
                seconds(sftp.wall),
                100.0 * sftp.wall.as_secs_f64() / nodeup.wall.as_secs_f64(),
            );
        }
    }
}

/// A node whose sshd listens `LISTEN_DELAY` after it starts; `nodeup run` is started at once and
/// retries. The node's sockets are watched in /proc (no connection of the bench's own): the
/// moment the listening socket appears, and the moment the first connection to it does.
async fn listen_table(bed: &TestBed) {
    println!("Slow boot: sshd listens {LISTEN_DELAY:?} after the node starts; first connection after it listens:\n");
    println!("| run | first SSH connection after sshd listens (ms) |");
    println!("|---|---|");
    let runs = 5;
    let step = bed.dir().join("listen-step.toml");
    std::fs::write(&step, "[[step]]\ninline = \"true\"\n").expect("step file");
    let mut worst = Duration::ZERO;
    for i in 0..runs {
        let request = CreateNode {
            name: format!("slow-{i}"),
            auth: Some(nodeup::model::NodeAuth::SshKey(
                bed.client_public_key().to_string(),
            )),
            ..Default::default()
        };
        let options = LocalOptions {
            listen_delay: LISTEN_DELAY,
            ..LocalOptions::default()
        };
        let node = bed
            .driver()
            .create_node_with(&request, &options)
            .await
            .expect("create");
        let addr = SocketAddr::new(node.public_ips[0], node.ssh_port());
        let known_hosts = bed.dir().join(format!("known_hosts-slow-{i}"));
        let host = match addr.port() {
            22 => addr.ip().to_string(),
            port => format!("[{}]:{port}", addr.ip()),
        };
        let lines: String = node
            .host_keys()
            .iter()
            .map(|k| format!("{host} {k}\n"))
            .collect();
        std::fs::write(&known_hosts, lines).expect("known_hosts");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_nodeup"));
        cmd.arg("run")
            .arg(&step)
            .arg("--host")
            .arg(format!("root@{addr}"))
            .arg("--known-hosts")
            .arg(&known_hosts)
            .arg("--key")
            .arg(bed.client_key())
            .env("NODEUP_STATE_DIR", bed.nodeup_state_dir())
            .env("HOME", bed.dir())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = cmd.spawn().expect("nodeup");
        let lag = first_connection_lag(addr);
        assert!(child.wait().expect("wait").success(), "nodeup run failed");
        worst = worst.max(lag);
        println!("| {} | {:.0} |", i + 1, lag.as_secs_f64() * 1000.0);
        bed.driver().destroy_all_blocking().expect("destroy");
    }
    println!(
        "\nWorst: {:.0} ms (goal: under 250 ms).",
        worst.as_secs_f64() * 1000.0
    );
}

/// Watches /proc/net/tcp for `addr`: how long after its listening socket appeared the first
/// connection to it did (connections left from earlier nodes on the address do not count).
fn first_connection_lag(addr: SocketAddr) -> Duration {
    let deadline = Instant::now() + LISTEN_DELAY * 10;
    let stale = sockets(addr).1;
    let mut listening = None;
    loop {
        let (listen, connections) = sockets(addr);
        let now = Instant::now();
        if listen && listening.is_none() {
            listening = Some(now);
        }
        if connections.iter().any(|c| !stale.contains(c)) {
            return now - listening.unwrap_or(now);
        }
        assert!(now < deadline, "no connection to {addr}");
        std::thread::sleep(SOCKET_POLL);
    }
}

/// Whether `addr` has a listening socket, and the peers of its established (or being
/// established) connections.
fn sockets(addr: SocketAddr) -> (bool, Vec<String>) {
    let SocketAddr::V4(v4) = addr else {
        return (false, Vec::new());
    };
    let want = format!(
        "{:08X}:{:04X}",
        u32::from_le_bytes(v4.ip().octets()),
        v4.port()
    );
    let text = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let (mut listen, mut peers) = (false, Vec::new());
    for line in text.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() > 3 && fields[1] == want {
            // 0A is LISTEN; 01 ESTABLISHED, 03 SYN_RECV.
            match fields[3] {
                "0A" => listen = true,
                "01" | "03" => peers.push(fields[2].to_string()),
                _ => {}
            }
        }
    }
    (listen, peers)
}
