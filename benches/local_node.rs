//! How long a local node takes from `create_node` to accepting SSH (sshd's banner read over TCP).
//! A benchmark, not a test: run `cargo bench --bench local_node`; it prints a table. Target: < 300 ms.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use nodeup::model::CreateNode;
use nodeup::providers::local::LocalOptions;
use testbed::TestBed;

/// Polls until sshd sends its banner; returns when it did.
fn wait_banner(addr: SocketAddr, deadline: Instant) {
    loop {
        if let Ok(mut stream) = TcpStream::connect(addr) {
            let mut banner = [0u8; 8];
            if stream.read_exact(&mut banner).is_ok() && &banner == b"SSH-2.0-" {
                return;
            }
        }
        assert!(Instant::now() < deadline, "no SSH banner from {addr}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn stats(label: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let pick = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    let ms = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1000.0);
    println!(
        "| {label:<34} | {:>3} | {:>7} | {:>7} | {:>7} | {:>7} |",
        samples.len(),
        ms(samples[0]),
        ms(pick(0.5)),
        ms(pick(0.9)),
        ms(samples[samples.len() - 1])
    );
}

#[tokio::main]
async fn main() {
    let bed = TestBed::new().expect("test bed");
    let driver = bed.driver();
    let runs = 20;
    println!(
        "| {:<34} | {:>3} | {:>7} | {:>7} | {:>7} | {:>7} |",
        "create_node -> SSH banner (ms)", "n", "min", "median", "p90", "max"
    );
    println!(
        "|{:-<36}|{:-<5}|{:-<9}|{:-<9}|{:-<9}|{:-<9}|",
        "", "", "", "", "", ""
    );

    let mut one_at_a_time = Vec::new();
    for i in 0..runs {
        let request = CreateNode {
            name: format!("bench-{i}"),
            ..Default::default()
        };
        let started = Instant::now();
        let node = driver
            .create_node_with(&request, &LocalOptions::default())
            .await
            .expect("create");
        let addr = SocketAddr::new(node.public_ips[0], node.ssh_port());
        wait_banner(addr, started + Duration::from_secs(30));
        one_at_a_time.push(started.elapsed());
    }
    stats("one at a time", one_at_a_time);
    driver.destroy_all_blocking().expect("destroy");

    let started = Instant::now();
    let mut burst = tokio::task::JoinSet::new();
    for i in 0..10 {
        let driver = driver.clone();
        burst.spawn(async move {
            let request = CreateNode {
                name: format!("burst-{i}"),
                ..Default::default()
            };
            let node = driver
                .create_node_with(&request, &LocalOptions::default())
                .await
                .expect("create");
            let addr = SocketAddr::new(node.public_ips[0], node.ssh_port());
            tokio::task::spawn_blocking(move || {
                wait_banner(addr, started + Duration::from_secs(60))
            })
            .await
            .expect("wait");
            started.elapsed()
        });
    }
    let burst = burst.join_all().await;
    stats("10 at once (from the burst start)", burst);

    let started = Instant::now();
    driver.destroy_all_blocking().expect("destroy");
    println!(
        "\ndestroying 10 nodes: {:.1} ms",
        started.elapsed().as_secs_f64() * 1000.0
    );
}
