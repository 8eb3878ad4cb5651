//! Deploying to many nodes at once, as Libcloud's numbers were measured (README: 1 node 0.35 s; 100
//! nodes in parallel threads 4.8–7.1 s wall, about 4 s of client CPU): the steps are append a key,
//! upload 1 MiB, run a two-line script, on nodes that already run (real sshd on loopback).
//! A benchmark, not a test: `cargo bench --bench deploy` prints a table.

use std::sync::Arc;
use std::time::{Duration, Instant};

use nodeup::deploy::{FileStep, ScriptStep, SshKeyStep, Step};
use nodeup::driver::NodeDriver;
use nodeup::engine::{run_steps, DeployOptions, Target};
use nodeup::model::{CreateNode, NodeAuth};
use nodeup::providers::local::LocalOptions;
use testbed::TestBed;

fn cpu_time() -> Duration {
    // SAFETY: getrusage fills the struct we own.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
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
    println!("| nodes at once | wall (s) | client CPU (s) | per node wall (ms) |");
    println!("|---|---|---|---|");
    for n in [1usize, 10, 50, 100] {
        let mut targets = Vec::new();
        for i in 0..n {
            let request = CreateNode {
                name: format!("bench-{n}-{i}"),
                auth: Some(NodeAuth::SshKey(key.clone())),
                ..Default::default()
            };
            let node = bed
                .driver()
                .create_node_with(&request, &LocalOptions::default())
                .await
                .expect("create");
            // The keys the provider reports, as deploy_node uses them (addresses are reused).
            let pinned = node.host_keys();
            targets.push(Target {
                addr: std::net::SocketAddr::new(node.public_ips[0], node.ssh_port()),
                users: vec!["root".into()],
                pinned_host_keys: pinned,
                node: None,
            });
        }
        // Wait until every sshd listens: creation is not what is measured.
        for node in bed.driver().list_nodes().await.expect("list") {
            let addr = std::net::SocketAddr::new(node.public_ips[0], node.ssh_port());
            while std::net::TcpStream::connect(addr).is_err() {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let (cpu, started) = (cpu_time(), Instant::now());
        let mut runs = tokio::task::JoinSet::new();
        for target in targets {
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
        let (wall, cpu) = (started.elapsed(), cpu_time() - cpu);
        assert_eq!(ok, n, "every deployment succeeds");
        println!(
            "| {n} | {:.2} | {:.3} | {:.0} |",
            wall.as_secs_f64(),
            cpu.as_secs_f64(),
            wall.as_secs_f64() * 1000.0 / n as f64
        );
        bed.driver().destroy_all_blocking().expect("destroy");
    }
}
