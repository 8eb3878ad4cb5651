//! The test bed's fault-injecting relay, in front of a real sshd.

use std::time::{Duration, Instant};

use testbed::{Faults, NodeSpec, Relay, TestBed, TestNode};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::{assert_ok, stdout};

/// OpenSSH as root to `node` through `relay`, the host key checked under the node's own name.
fn through(node: &TestNode, relay: &Relay) -> std::process::Command {
    let known_host = match node.addr().port() {
        22 => node.ip().to_string(),
        port => format!("[{}]:{port}", node.ip()),
    };
    node.ssh_with(
        "root",
        &[
            ("Hostname", &relay.addr().ip().to_string()),
            ("Port", &relay.addr().port().to_string()),
            ("HostKeyAlias", &known_host),
        ],
    )
}

async fn read_banner(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 8];
    stream.read_exact(&mut buf).await?;
    Ok(buf)
}

// Multi-threaded: the relay runs on the runtime while the test blocks on the ssh client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_ssh_with_delay() {
    let bed = TestBed::new().unwrap();
    let node = bed.node(NodeSpec::new("relayed")).await.unwrap();
    let relay = Relay::start(node.addr()).await.unwrap();
    let delay = Duration::from_millis(150);
    relay.set_faults(Faults {
        delay,
        ..Faults::default()
    });

    let started = Instant::now();
    let mut stream = TcpStream::connect(relay.addr()).await.unwrap();
    assert_eq!(read_banner(&mut stream).await.unwrap(), b"SSH-2.0-");
    // The banner crossed the relay once: at least one one-way delay (a lower bound only).
    assert!(started.elapsed() >= delay);

    // A whole OpenSSH session through the delayed relay.
    let out = through(&node, &relay)
        .args(["--", "head -c 100000 /dev/zero | wc -c"])
        .output()
        .unwrap();
    assert_ok(&out);
    assert_eq!(stdout(&out).trim(), "100000");
    assert_eq!(relay.accepted(), 2);
}

#[tokio::test]
async fn refuses_for_a_while_then_relays() {
    let bed = TestBed::new().unwrap();
    let node = bed.node(NodeSpec::new("refuser")).await.unwrap();
    let relay = Relay::start_refusing(node.addr(), Duration::from_secs(2))
        .await
        .unwrap();
    let err = TcpStream::connect(relay.addr()).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut stream = loop {
        match TcpStream::connect(relay.addr()).await {
            Ok(s) => break s,
            Err(e) if Instant::now() < deadline => {
                assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("still refused: {e}"),
        }
    };
    assert_eq!(read_banner(&mut stream).await.unwrap(), b"SSH-2.0-");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resets_after_n_bytes() {
    let bed = TestBed::new().unwrap();
    let node = bed.node(NodeSpec::new("resetter")).await.unwrap();
    let relay = Relay::start(node.addr()).await.unwrap();
    relay.set_faults(Faults {
        reset_after: Some(5),
        ..Faults::default()
    });
    let mut stream = TcpStream::connect(relay.addr()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    let err = loop {
        match stream.read(&mut buf).await {
            Ok(0) => panic!("closed cleanly after {got:?}; expected a reset"),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => break e,
        }
    };
    assert_eq!(got, b"SSH-2");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);

    // OpenSSH sees the reset as a failed connection, not a hang.
    relay.set_faults(Faults {
        reset_after: Some(2000),
        ..Faults::default()
    });
    let out = through(&node, &relay)
        .args(["--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(255));
}

#[tokio::test]
async fn blackhole_accepts_and_never_answers() {
    let bed = TestBed::new().unwrap();
    let node = bed.node(NodeSpec::new("silent")).await.unwrap();
    let relay = Relay::start(node.addr()).await.unwrap();
    relay.set_faults(Faults {
        blackhole: true,
        ..Faults::default()
    });
    let mut stream = TcpStream::connect(relay.addr()).await.unwrap();
    let read = tokio::time::timeout(Duration::from_millis(500), read_banner(&mut stream)).await;
    assert!(read.is_err(), "no byte may come: {read:?}");
    // Faults apply per connection: the next one, without them, gets the banner.
    relay.set_faults(Faults::default());
    let mut stream = TcpStream::connect(relay.addr()).await.unwrap();
    assert_eq!(read_banner(&mut stream).await.unwrap(), b"SSH-2.0-");
}
