//! Deploying to many nodes at once, as Libcloud's numbers were measured (README: 1 node 0.35 s; 100
//! nodes in parallel threads 4.8–7.1 s wall, about 4 s of client CPU): the steps are append a key,
//! upload 1 MiB, run a two-line script, on nodes that already run (real sshd on loopback).
//! The OpenSSH client does the same work on the same nodes, in one connection and one command
//! per node, side by side. A benchmark, not a test: `cargo bench --bench deploy` prints a table.

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nodeup::deploy::{FileStep, ScriptStep, SshKeyStep, Step};
use nodeup::engine::{run_steps, DeployOptions, Target};
use nodeup::model::{CreateNode, NodeAuth};
use nodeup::providers::local::LocalOptions;
use testbed::TestBed;

/// CPU time of this process (`RUSAGE_SELF`) or of its reaped children (`RUSAGE_CHILDREN`).
fn cpu_time(who: i32) -> Duration {
    // SAFETY: getrusage fills the struct we own.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(who, &mut usage) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// The sizes of the runs: nodes deployed to at once.
const FLEETS: [usize; 4] = [1, 10, 50, 100];

/// The same work with the OpenSSH client, as one connection and one command per node (the floor:
/// no upload protocol, no separate steps): append the key, write the payload from stdin, run the
/// two lines.
async fn openssh_run(
    bed: &TestBed,
    target: &Target,
    known_hosts: &Path,
    key: &str,
    payload: &Path,
) -> bool {
    let command = format!(
        "umask 077; mkdir -p ~/.ssh && printf '%s\\n' {} >> ~/.ssh/authorized_keys && cat > /root/payload.bin && sh -c 'echo one; echo two'",
        nodeup::ssh::quote(key.trim())
    );
    let mut cmd = testbed::openssh(target.addr, "root", bed.client_key(), known_hosts, &[]);
    cmd.arg(command).stdout(Stdio::null());
    let Ok(file) = std::fs::File::open(payload) else {
        return false;
    };
    cmd.stdin(file);
    let mut cmd = tokio::process::Command::from(cmd);
    matches!(cmd.status().await, Ok(status) if status.success())
}

/// One row: wall and client CPU for nodeup, then for the OpenSSH client, on the same nodes.
struct Row {
    nodeup: (Duration, Duration),
    openssh: (Duration, Duration),
}

#[tokio::main]
async fn main() {
    let bed = TestBed::new().expect("test bed");
    let payload = bed.dir().join("payload.bin");
    std::fs::write(&payload, vec![7u8; 1024 * 1024]).expect("payload");
    let key = std::fs::read_to_string(bed.client_key().with_extension("pub")).expect("key");
    let steps = Arc::new(Step::Multi(vec![
        Step::SshKey(SshKeyStep::new(&key)),
        Step::File(FileStep::new(&payload, "/root/payload.bin")),
        Step::Script(ScriptStep::inline("#!/bin/sh\necho one\necho two\n")),
    ]));
    let options = DeployOptions {
        ssh_keys: vec![bed.client_key().to_path_buf()],
        known_hosts: bed.dir().join("known_hosts"),
        ..Default::default()
    };
    let creds = Arc::new(options.credentials().expect("credentials"));
    println!("| nodes at once | nodeup wall (s) | OpenSSH wall (s) | nodeup / OpenSSH | nodeup CPU (s) | OpenSSH CPU (s) |");
    println!("|---|---|---|---|---|---|");
    for n in FLEETS {
        let targets = fleet(&bed, n, &key).await;
        let known_hosts = bed.dir().join(format!("known_hosts-openssh-{n}"));
        let lines: String = targets
            .iter()
            .flat_map(|t| {
                let host = match t.addr.port() {
                    22 => t.addr.ip().to_string(),
                    port => format!("[{}]:{port}", t.addr.ip()),
                };
                t.pinned_host_keys
                    .iter()
                    .map(move |k| format!("{host} {k}\n"))
            })
            .collect();
        std::fs::write(&known_hosts, lines).expect("known_hosts");

        let (cpu, started) = (cpu_time(libc::RUSAGE_SELF), Instant::now());
        let mut runs = tokio::task::JoinSet::new();
        for target in targets.clone() {
            let (steps, creds, options) = (steps.clone(), creds.clone(), options.clone());
            runs.spawn(async move {
                match run_steps(&target, &steps, &creds, &options).await {
                    Ok(_) => true,
                    Err(e) => {
                        eprintln!("{}: {}", target.addr, nodeup::engine::error_chain(&e.cause));
                        false
                    }
                }
            });
        }
        let ok = runs.join_all().await.into_iter().filter(|ok| *ok).count();
        let nodeup = (started.elapsed(), cpu_time(libc::RUSAGE_SELF) - cpu);
        assert_eq!(ok, n, "every nodeup deployment succeeds");

        let (cpu, started) = (cpu_time(libc::RUSAGE_CHILDREN), Instant::now());
        let runs = targets
            .iter()
            .map(|t| openssh_run(&bed, t, &known_hosts, &key, &payload));
        let ok = futures::future::join_all(runs)
            .await
            .into_iter()
            .filter(|ok| *ok)
            .count();
        let openssh = (started.elapsed(), cpu_time(libc::RUSAGE_CHILDREN) - cpu);
        assert_eq!(ok, n, "every OpenSSH run succeeds");
        print_row(n, &Row { nodeup, openssh });
        bed.driver().destroy_all_blocking().expect("destroy");
    }
}

fn print_row(n: usize, row: &Row) {
    println!(
        "| {n} | {:.2} | {:.2} | {:.2} | {:.3} | {:.3} |",
        row.nodeup.0.as_secs_f64(),
        row.openssh.0.as_secs_f64(),
        row.nodeup.0.as_secs_f64() / row.openssh.0.as_secs_f64(),
        row.nodeup.1.as_secs_f64(),
        row.openssh.1.as_secs_f64(),
    );
}

/// `n` running local nodes (root logs in with the test bed's key), as targets with the host keys
/// the provider reports; returns once every sshd listens (creation is not what is measured).
async fn fleet(bed: &TestBed, n: usize, key: &str) -> Vec<Target> {
    let mut targets = Vec::new();
    for i in 0..n {
        let request = CreateNode {
            name: format!("bench-{n}-{i}"),
            auth: Some(NodeAuth::SshKey(key.to_string())),
            ..Default::default()
        };
        let node = bed
            .driver()
            .create_node_with(&request, &LocalOptions::default())
            .await
            .expect("create");
        targets.push(Target {
            addr: std::net::SocketAddr::new(node.public_ips[0], node.ssh_port()),
            users: vec!["root".into()],
            pinned_host_keys: node.host_keys(),
            node: None,
            journal: None,
            created: false,
            driver: None,
            ssh: Default::default(),
        });
    }
    for target in &targets {
        while std::net::TcpStream::connect(target.addr).is_err() {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    targets
}
