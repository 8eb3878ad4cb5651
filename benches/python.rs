//! `cargo bench --bench python`: 1, 10 and 100 deployments from Python, side by side in one run
//! against the same sshd with the same steps (append a key, upload a file, run a two-line script):
//!
//! - `nodeup run` (the Rust CLI), the yardstick;
//! - `nodeup.run(...)` from Python: the same work through the package (within 10 % of the CLI);
//! - `nodeup.libcloud.deploy_node(driver, ...)`, the drop-in, one call per host in a pool of threads;
//! - Libcloud's own `driver.deploy_node(...)` with paramiko, the same way.
//!
//! The two `deploy_node` rows share a Libcloud driver whose `create_node` hands out a running host
//! (no machine is made), so both spend their time on the SSH part. Every host is one test-bed sshd
//! behind its own relay, [`ROUND_TRIP`] away, as a machine in another region would be. The Python
//! `deploy_node` rows upload to a path of their own per deployment (paramiko checks the size after
//! writing, which a neighbour's write to the same path on the one sshd would change). Each client
//! runs each count [`REPEATS`] times in turns; the table shows medians. The Python
//! rows are timed inside the interpreter (`benches/python_deploy.py`); its start and imports are
//! measured on their own line. The extension is built with `maturin develop --release` first.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use testbed::relay::{Faults, Relay};
use testbed::usage::{measure, Usage};
use testbed::{NodeSpec, TestBed};

/// How many deployments each run makes.
const RUNS: [usize; 3] = [1, 10, 100];

/// How often each client runs each count, in turns; the table shows the medians.
const REPEATS: usize = 3;

/// The round trip between the client and every host (the relays' delay).
const ROUND_TRIP: Duration = Duration::from_millis(20);

/// The size of the uploaded file.
const PAYLOAD_BYTES: usize = 64 << 10;

/// The script every deployment runs.
const SCRIPT: &str = "#!/bin/sh\necho one\necho two\n";

/// How many connections the host's sshd takes while they authenticate (all 100 at once).
const MAX_STARTUPS: &str = "300";

/// What one client did in one run.
#[derive(Clone, Copy)]
struct Row {
    client: &'static str,
    hosts: usize,
    wall: f64,
    cpu: f64,
    ok: bool,
}

/// The bench's files and hosts.
struct Bench {
    bed: TestBed,
    relays: Vec<Relay>,
    host_keys: Vec<String>,
    public: PathBuf,
    payload: PathBuf,
    python: PathBuf,
}

impl Bench {
    async fn new(python: PathBuf) -> Bench {
        let bed = TestBed::new().expect("test bed");
        let dir = bed.dir().to_path_buf();
        let public = dir.join("client.pub");
        std::fs::write(&public, bed.client_public_key()).expect("public key");
        let payload = dir.join("payload.bin");
        let data: Vec<u8> = (0..PAYLOAD_BYTES).map(|i| (i % 251) as u8).collect();
        std::fs::write(&payload, data).expect("payload");
        Bench {
            bed,
            relays: Vec::new(),
            host_keys: Vec::new(),
            public,
            payload,
            python,
        }
    }

    /// One relay per host, each to the node, with the round trip set.
    async fn relays(&mut self, node: std::net::SocketAddr, count: usize) {
        for _ in self.relays.len()..count {
            let relay = Relay::start(node).await.expect("relay");
            relay.set_faults(Faults {
                delay: ROUND_TRIP / 2,
                ..Faults::default()
            });
            self.relays.push(relay);
        }
    }

    /// The first `count` hosts as an inventory, and a known_hosts file listing each one's key.
    fn files(&self, count: usize) -> (PathBuf, PathBuf) {
        let (mut hosts, mut known) = (String::new(), String::new());
        for relay in &self.relays[..count] {
            let port = relay.addr().port();
            hosts.push_str(&format!("root@127.0.0.1:{port}\n"));
            for key in &self.host_keys {
                known.push_str(&format!("[127.0.0.1]:{port} {key}\n"));
            }
        }
        let dir = self.bed.dir();
        let paths = (
            dir.join(format!("hosts-{count}")),
            dir.join(format!("known-{count}")),
        );
        std::fs::write(&paths.0, hosts).expect("inventory");
        std::fs::write(&paths.1, known).expect("known_hosts");
        paths
    }

    /// The step file the CLI runs: the same three steps.
    fn stepfile(&self) -> PathBuf {
        let path = self.bed.dir().join("steps.toml");
        let text = format!(
            "[[step]]\nssh-key = \"{}\"\n\n[[step]]\nfile = \"{}\"\ntarget = \"/tmp/payload.bin\"\n\n\
             [[step]]\ninline = '''{SCRIPT}'''\n",
            self.public.display(),
            self.payload.display()
        );
        std::fs::write(&path, text).expect("step file");
        path
    }

    fn environment(&self, cmd: &mut Command) {
        cmd.env("NODEUP_STATE_DIR", self.bed.nodeup_state_dir())
            .env("HOME", self.bed.dir())
            .env_remove("NODEUP_PROVIDER");
    }

    async fn cli(&self, count: usize) -> Row {
        let (hosts, known) = self.files(count);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_nodeup"));
        cmd.arg("run")
            .arg(self.stepfile())
            .arg("--inventory")
            .arg(hosts)
            .arg("--known-hosts")
            .arg(known)
            .arg("--key")
            .arg(self.bed.client_key())
            .args(["--parallel", &count.to_string()]);
        self.environment(&mut cmd);
        let usage = off_runtime(cmd).await;
        Row {
            client: "nodeup run (Rust CLI)",
            hosts: count,
            wall: usage.wall.as_secs_f64(),
            cpu: usage.cpu.as_secs_f64(),
            ok: usage.ok,
        }
    }

    async fn python(&self, client: &'static str, mode: &str, count: usize) -> Row {
        let (hosts, known) = self.files(count);
        let result = self.bed.dir().join(format!("result-{mode}-{count}.json"));
        let _ = std::fs::remove_file(&result);
        let mut cmd = Command::new(&self.python);
        cmd.arg(script_path())
            .arg(mode)
            .arg(hosts)
            .arg(known)
            .arg(self.bed.client_key())
            .arg(std::fs::read_to_string(&self.public).expect("public key"))
            .arg(&self.payload)
            .arg(SCRIPT)
            .arg(&result);
        self.environment(&mut cmd);
        let usage = off_runtime(cmd).await;
        let timed: serde_json::Value = std::fs::read_to_string(&result)
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or_default();
        Row {
            client,
            hosts: count,
            wall: timed["wall"].as_f64().unwrap_or(f64::NAN),
            cpu: timed["cpu"].as_f64().unwrap_or(f64::NAN),
            ok: usage.ok && timed["ok"] == true,
        }
    }

    /// The interpreter's start with nodeup and Libcloud imported, which the Python rows leave out.
    async fn interpreter_start(&self) -> Usage {
        let mut cmd = Command::new(&self.python);
        cmd.args([
            "-c",
            "import nodeup, nodeup.libcloud, libcloud.compute.deployment",
        ]);
        off_runtime(cmd).await
    }
}

/// `benches/python_deploy.py`.
fn script_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/python_deploy.py")
}

/// Runs `cmd` off the runtime (the relays serve on it).
async fn off_runtime(cmd: Command) -> Usage {
    tokio::task::spawn_blocking(move || measure(cmd))
        .await
        .expect("measure")
}

/// Builds the package's extension into the tests' virtualenv, optimised as `pip install` builds it.
fn build_release_extension() -> bool {
    let Ok(maturin) = testbed::python::tool("maturin") else {
        return false;
    };
    let status = Command::new(maturin)
        .args(["develop", "--release", "--quiet", "--locked"])
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("python"))
        .env("VIRTUAL_ENV", testbed::python::venv())
        .status();
    matches!(status, Ok(s) if s.success())
}

fn print(rows: &[Row]) {
    println!(
        "| client | deployments | wall (s) | client CPU (s) | wall vs CLI | CPU vs CLI | result |"
    );
    println!("|---|---|---|---|---|---|---|");
    for row in rows {
        let cli = rows
            .iter()
            .find(|r| r.hosts == row.hosts && r.client.starts_with("nodeup run"))
            .expect("the CLI's row");
        println!(
            "| {} | {} | {:.2} | {:.3} | {:.2} | {:.2} | {} |",
            row.client,
            row.hosts,
            row.wall,
            row.cpu,
            row.wall / cli.wall,
            row.cpu / cli.cpu,
            if row.ok { "ok" } else { "FAILED" }
        );
    }
}

#[tokio::main]
async fn main() {
    let Some(python) = testbed::python::with_libcloud() else {
        println!("(Libcloud is not in the tests' virtualenv: bash .ci/run makes it)");
        return;
    };
    if !build_release_extension() {
        println!("(maturin develop --release failed: the Python package could not be built)");
        return;
    }
    let mut bench = Bench::new(python).await;
    let node = bench
        .bed
        .node(
            NodeSpec::new("python-bench")
                .sshd("MaxStartups", MAX_STARTUPS)
                .sshd("MaxSessions", "10"),
        )
        .await
        .expect("node");
    let keys = std::fs::read_to_string(node.known_hosts()).expect("node key");
    bench.host_keys = keys
        .lines()
        .filter_map(|l| l.split_once(' ').map(|(_, key)| key.to_string()))
        .collect();
    bench.relays(node.addr(), RUNS[RUNS.len() - 1]).await;
    let start = bench.interpreter_start().await;
    println!(
        "Every host {} ms away (a relay each, one sshd); Python's start with nodeup and Libcloud \
         imported, left out of the Python rows: {:.2} s wall, {:.3} s CPU.\n",
        ROUND_TRIP.as_millis(),
        start.wall.as_secs_f64(),
        start.cpu.as_secs_f64()
    );
    let mut rows = Vec::new();
    for count in RUNS {
        let mut runs = Vec::new();
        for _ in 0..REPEATS {
            runs.push([
                bench.cli(count).await,
                bench.python("nodeup.run (Python)", "run", count).await,
                bench
                    .python("nodeup.libcloud.deploy_node", "drop-in", count)
                    .await,
                bench
                    .python("Libcloud deploy_node + paramiko", "libcloud", count)
                    .await,
            ]);
        }
        rows.extend((0..runs[0].len()).map(|client| median(runs.iter().map(|r| r[client]))));
    }
    print(&rows);
}

/// The median wall and CPU of one client's runs; failed if any failed.
fn median(runs: impl Iterator<Item = Row>) -> Row {
    let runs: Vec<Row> = runs.collect();
    let middle = |f: fn(&Row) -> f64| {
        let mut values: Vec<f64> = runs.iter().map(f).collect();
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    Row {
        wall: middle(|r| r.wall),
        cpu: middle(|r| r.cpu),
        ok: runs.iter().all(|r| r.ok),
        ..runs[0]
    }
}
