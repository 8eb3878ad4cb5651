//! `nodeup run` on fleets of 1,000 and 10,000 hosts: peak memory (RSS) and client CPU per host,
//! and Libcloud doing the same work (paramiko, a thread pool as its users write it) beside it.
//!
//! One test-bed sshd listens on 0.0.0.0, so it answers on every 127.x.y.z: each host of the
//! inventory is a distinct address, host keys are checked strictly against a known_hosts file that
//! lists every one. Each host runs a script that sleeps, so that `--parallel` connections are open
//! at once. A benchmark, not a test: `cargo bench --bench fleet` prints a table.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use testbed::usage::{measure, Usage};
use testbed::{NodeSpec, TestBed};

/// (hosts, --parallel): the memory runs.
const MEMORY_RUNS: [(usize, usize); 2] = [(1_000, 1_000), (10_000, 500)];
/// How long each host's script sleeps in the memory runs: long enough that `--parallel`
/// connections are open at once.
const HOLD_SECS: u32 = 3;
/// The CPU comparison with Libcloud: hosts, and threads (Libcloud) or --parallel (nodeup).
const CPU_RUN: (usize, usize) = (300, 50);
/// How many connections nodeup sets up at once in these runs (sshd is told to take them).
const MAX_STARTUPS: &str = "100";

/// The memory runs: [`MEMORY_RUNS`], or `NODEUP_BENCH_RUNS=hosts:parallel,...` to explore.
fn memory_runs() -> Vec<(usize, usize)> {
    match std::env::var("NODEUP_BENCH_RUNS") {
        Ok(runs) => runs
            .split(',')
            .filter_map(|r| r.split_once(':'))
            .filter_map(|(h, p)| Some((h.parse().ok()?, p.parse().ok()?)))
            .collect(),
        Err(_) => MEMORY_RUNS.to_vec(),
    }
}

/// The i-th distinct loopback address (127.20.0.1 onwards).
fn address(i: usize) -> String {
    format!(
        "127.{}.{}.{}",
        20 + i / 62_500,
        (i / 250) % 250,
        i % 250 + 1
    )
}

/// An inventory of `n` hosts and a known_hosts file with the node's key for each.
fn fleet_files(dir: &Path, n: usize, port: u16, host_key: &str) -> (PathBuf, PathBuf) {
    let (mut inventory, mut known) = (String::new(), String::new());
    for i in 0..n {
        let _ = writeln!(inventory, "root@{}:{port}", address(i));
        let _ = writeln!(known, "[{}]:{port} {host_key}", address(i));
    }
    let inventory_path = dir.join(format!("hosts-{n}.txt"));
    let known_path = dir.join(format!("known-{n}"));
    std::fs::write(&inventory_path, inventory).expect("inventory");
    std::fs::write(&known_path, known).expect("known_hosts");
    (inventory_path, known_path)
}

fn nodeup_run(bed: &TestBed, step: &Path, files: &(PathBuf, PathBuf), parallel: usize) -> Usage {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nodeup"));
    cmd.arg("run")
        .arg(step)
        .arg("--inventory")
        .arg(&files.0)
        .arg("--known-hosts")
        .arg(&files.1)
        .arg("--key")
        .arg(bed.client_key())
        .args([
            "--parallel",
            &parallel.to_string(),
            "--max-startups",
            MAX_STARTUPS,
        ])
        .env("NODEUP_STATE_DIR", bed.nodeup_state_dir())
        .env("HOME", bed.dir());
    measure(cmd)
}

/// The Python that does with Libcloud what `nodeup run` does: per host, connect with paramiko
/// (Libcloud's ParamikoSSHClient), upload the script and run it (ScriptDeployment), in a pool of
/// threads as Libcloud users write it.
const LIBCLOUD_SCRIPT: &str = r##"
import sys
from concurrent.futures import ThreadPoolExecutor
import paramiko
from libcloud.compute.ssh import ParamikoSSHClient
from libcloud.compute.deployment import ScriptDeployment

hosts_file, known_hosts, key, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])

def one(line):
    host, port = line.split("@")[1].rsplit(":", 1)
    client = ParamikoSSHClient(host, port=int(port), username="root", key_files=key, timeout=30)
    client.connect()
    step = ScriptDeployment("#!/bin/sh\ntrue\n")
    step.run(None, client)
    client.close()
    return step.exit_status == 0

hosts = [l.strip() for l in open(hosts_file) if l.strip()]
with ThreadPoolExecutor(threads) as pool:
    ok = all(pool.map(one, hosts))
sys.exit(0 if ok else 1)
"##;

fn row(label: &str, hosts: usize, parallel: usize, usage: &Usage) {
    println!(
        "| {label} | {hosts} | {parallel} | {:.1} | {:.0} | {:.1} | {:.2} | {} |",
        usage.wall.as_secs_f64(),
        hosts as f64 / usage.wall.as_secs_f64(),
        usage.peak_rss_mb,
        usage.cpu.as_secs_f64() * 1000.0 / hosts as f64,
        if usage.ok { "ok" } else { "FAILED" }
    );
}

#[tokio::main]
async fn main() {
    let bed = TestBed::new().expect("test bed");
    let port = std::net::TcpListener::bind("0.0.0.0:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let node = bed
        .node(
            NodeSpec::new("fleet-bench")
                .port(port)
                .sshd("ListenAddress", &format!("0.0.0.0:{port}"))
                .sshd("MaxStartups", "2000")
                .sshd("MaxSessions", "10"),
        )
        .await
        .expect("node");
    let known = std::fs::read_to_string(node.known_hosts()).expect("node key");
    let host_key = known
        .lines()
        .next()
        .and_then(|l| l.split_once(' '))
        .map(|(_, key)| key.to_string())
        .expect("a key line");
    let dir = bed.dir().to_path_buf();
    let hold = dir.join("hold.toml");
    std::fs::write(&hold, format!("[[step]]\ninline = \"sleep {HOLD_SECS}\"\n")).expect("step");
    let quick = dir.join("quick.toml");
    std::fs::write(&quick, "[[step]]\ninline = \"true\"\n").expect("step");

    println!("| client | hosts | parallel | wall (s) | hosts/s | peak RSS (MB) | client CPU per host (ms) | result |");
    println!("|---|---|---|---|---|---|---|---|");
    for (hosts, parallel) in memory_runs() {
        let files = fleet_files(&dir, hosts, port, &host_key);
        let usage = nodeup_run(&bed, &hold, &files, parallel);
        row(
            &format!("nodeup (script sleeps {HOLD_SECS} s)"),
            hosts,
            parallel,
            &usage,
        );
    }
    let (hosts, parallel) = CPU_RUN;
    let files = fleet_files(&dir, hosts, port, &host_key);
    let usage = nodeup_run(&bed, &quick, &files, parallel);
    row("nodeup", hosts, parallel, &usage);
    if let Some(python) = testbed::python::with_libcloud() {
        let script = dir.join("libcloud_fleet.py");
        std::fs::write(&script, LIBCLOUD_SCRIPT).expect("script");
        let mut cmd = Command::new(python);
        cmd.arg(&script)
            .arg(&files.0)
            .arg(&files.1)
            .arg(bed.client_key())
            .arg(parallel.to_string());
        let usage = measure(cmd);
        row("Libcloud 3 + paramiko", hosts, parallel, &usage);
    } else {
        println!("(Libcloud not in the tests' virtualenv: bash .ci/run makes it)");
    }
}
