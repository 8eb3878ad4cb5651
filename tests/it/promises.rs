//! What the README promises, each with a test that fails when the promise breaks: signals on
//! `deploy`, output streamed as it comes, `run` on several hosts at once, the default known_hosts,
//! the environment variables for passphrases and passwords, `nodes create` waiting or not, the
//! ssh-key step making `~/.ssh`, the script's private directory removed after a failure.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use nodeup::driver::NodeDriver;
use serde_json::Value;
use testbed::{NodeSpec, TestBed};

use crate::{
    bed_leftovers, keygen, nodeup_on as nodeup, signal, spawn_until, stderr_of as stderr,
    write_file as write, StderrLines,
};

/// Spawns `deploy FILE --key KEY` and reads its stderr until a line contains `until`.
fn deploy_until(bed: &TestBed, file: &Path, until: &str) -> (Child, Vec<String>, StderrLines) {
    let mut cmd = nodeup(bed, &["deploy", file.to_str().unwrap(), "--key"]);
    cmd.arg(bed.client_key());
    spawn_until(cmd, until)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_during_a_step_destroys_the_node_and_two_name_what_is_left() {
    let bed = TestBed::new().unwrap();
    let file = write(
        bed.dir(),
        "long.toml",
        "[node]\nname = \"sig\"\n\n[[step]]\ninline = \"sleep 60\"\n",
    );
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let (mut child, _, lines) = deploy_until(&bed, &file, "step 1/1: script");
        signal(&child, sig);
        let rest: Vec<String> = lines.map_while(Result::ok).collect();
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(1), "signal {sig}: {rest:?}");
        assert!(
            bed.driver().list_nodes().await.unwrap().is_empty(),
            "signal {sig}: the node is destroyed: {rest:?}"
        );
        assert!(bed_leftovers(&bed).is_empty(), "{:?}", bed_leftovers(&bed));
    }
    // Twice: stop at once, naming the node; `nodes destroy` removes it.
    let (mut child, _, lines) = deploy_until(&bed, &file, "step 1/1: script");
    signal(&child, libc::SIGINT);
    std::thread::sleep(Duration::from_millis(2));
    signal(&child, libc::SIGTERM);
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    child.wait().unwrap();
    let named = rest
        .iter()
        .find(|l| l.contains("may be left; destroy it with `nodeup nodes destroy"))
        .unwrap_or_else(|| panic!("nothing named: {rest:?}"));
    let id = named
        .split("nodes destroy ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap();
    if bed
        .driver()
        .list_nodes()
        .await
        .unwrap()
        .iter()
        .any(|n| n.id == id)
    {
        let out = nodeup(&bed, &["nodes", "destroy", id]).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    assert!(bed_leftovers(&bed).is_empty(), "{:?}", bed_leftovers(&bed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_output_reaches_stderr_while_the_step_runs() {
    let bed = TestBed::new().unwrap();
    let file = write(
        bed.dir(),
        "stream.toml",
        "[node]\nname = \"stream\"\n\n[[step]]\ninline = \"echo a; sleep 2; echo b\"\n",
    );
    let (mut child, _, lines) = deploy_until(&bed, &file, "step 1/1: script");
    let (mut a_at, mut done_at) = (None, None);
    for line in lines.map_while(Result::ok) {
        if line == "  | a" {
            a_at = Some(Instant::now());
        }
        if line.contains("step 1/1: script done") {
            done_at = Some(Instant::now());
        }
    }
    assert!(child.wait().unwrap().success());
    let (a_at, done_at) = (
        a_at.expect("\"a\" was shown"),
        done_at.expect("the step ended"),
    );
    assert!(
        done_at - a_at >= Duration::from_millis(1000),
        "\"a\" was shown only {:?} before the step ended: output was held back",
        done_at - a_at
    );
    let node = bed.driver().find("stream").await.unwrap();
    bed.driver().destroy_node(&node).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_works_on_both_hosts_at_the_same_moment() {
    let bed = TestBed::new().unwrap();
    let (a, b) = tokio::join!(
        bed.node(NodeSpec::new("both-a")),
        bed.node(NodeSpec::new("both-b")),
    );
    let nodes = [a.unwrap(), b.unwrap()];
    let known: String = nodes
        .iter()
        .map(|n| std::fs::read_to_string(n.known_hosts()).unwrap())
        .collect();
    let known_hosts = write(bed.dir(), "known_hosts", &known);
    // Each host says it started, then waits to be let go: one host after the other would never
    // get the second going, and the step would time out.
    let file = write(
        bed.dir(),
        "meet.toml",
        "[[step]]\ninline = \"touch /tmp/started; while [ ! -e /tmp/go ]; do sleep 0.05; done; echo met\"\ntimeout = \"20s\"\n",
    );
    let child = nodeup(
        &bed,
        &[
            "run",
            file.to_str().unwrap(),
            "--host",
            &format!("root@{}", nodes[0].ip()),
            "--host",
            &format!("root@{}", nodes[1].ip()),
            "--json",
            "--key",
        ],
    )
    .arg(bed.client_key())
    .arg("--known-hosts")
    .arg(&known_hosts)
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let started = Instant::now();
    while !nodes.iter().all(|n| n.read_file("/tmp/started").is_ok()) {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "both steps never ran at the same moment"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for node in &nodes {
        node.exec("touch /tmp/go").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    for result in report["nodes"].as_array().unwrap() {
        assert_eq!(result["steps"][0]["stdout"], "met\n");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_known_hosts_records_the_key_and_forgets_it_on_destroy() {
    let bed = TestBed::new().unwrap();
    let known_hosts = bed.nodeup_state_dir().join("known_hosts");
    let file = write(
        bed.dir(),
        "fail.toml",
        "[node]\nname = \"kh\"\n\n[[step]]\ninline = \"sleep 2; exit 5\"\n",
    );
    // No --known-hosts: nodeup's own file. While the failing step runs, the key is recorded.
    let (mut child, seen, lines) = deploy_until(&bed, &file, "step 1/1: script");
    let node = bed.driver().find("kh").await.unwrap();
    let address = node.public_ips[0].to_string();
    let recorded = std::fs::read_to_string(&known_hosts).unwrap();
    let key_blob = node.extra["host_keys"][0]
        .as_str()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string();
    assert!(
        recorded
            .lines()
            .any(|l| l.starts_with(&address) && l.contains(&key_blob)),
        "recorded before the destroy: {recorded} {seen:?}"
    );
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert_eq!(child.wait().unwrap().code(), Some(1), "{rest:?}");
    assert!(rest.iter().any(|l| l.contains("was destroyed")), "{rest:?}");
    let after = std::fs::read_to_string(&known_hosts).unwrap();
    assert!(
        !after.contains(&address),
        "forgotten after the destroy: {after}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passphrases_and_passwords_come_from_the_environment() {
    let bed = TestBed::new().unwrap();
    let dir = bed.dir();
    let file = write(
        dir,
        "env.toml",
        "[node]\nname = \"env-key\"\n\n[[step]]\ninline = \"id -un\"\n",
    );
    let encrypted = keygen(dir, "enc", "sesame");
    let out = nodeup(&bed, &["deploy", file.to_str().unwrap(), "--json", "--key"])
        .arg(&encrypted)
        .env("NODEUP_KEY_PASSPHRASE", "sesame")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["steps"][0]["stdout"], "root\n");

    // A password: no key at all (HOME has none), the node's password from the environment.
    let file = write(
        dir,
        "pw.toml",
        "[node]\nname = \"env-pw\"\noptions = { password = \"open-sesame-42\" }\n\n[[step]]\ninline = \"id -un\"\n",
    );
    let out = nodeup(&bed, &["deploy", file.to_str().unwrap(), "--json"])
        .env("NODEUP_SSH_PASSWORD", "open-sesame-42")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["steps"][0]["stdout"], "root\n");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        !printed.contains("open-sesame-42"),
        "no password on stdout: {printed}"
    );
    let out = nodeup(
        &bed,
        &[
            "deploy",
            file.to_str().unwrap(),
            "--name",
            "env-pw2",
            "--timeout",
            "5s",
        ],
    )
    .env("NODEUP_SSH_PASSWORD", "wrong")
    .output()
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "a wrong password is refused: {}",
        stderr(&out)
    );
    for node in bed.driver().list_nodes().await.unwrap() {
        bed.driver().destroy_node(&node).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_create_waits_or_not() {
    let bed = TestBed::new().unwrap();
    // --no-wait: back at once, the node still booting (its sshd listens 3 s late).
    let out = nodeup(
        &bed,
        &[
            "nodes",
            "create",
            "--name",
            "nowait",
            "--option",
            "listen_delay_ms=3000",
            "--no-wait",
            "--json",
        ],
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let node: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(node["state"], "pending");
    assert_eq!(bed.driver().find("nowait").await.unwrap().id, node["id"]);
    // --wait-timeout shorter than the boot: it fails, says so, and destroys the node.
    let out = nodeup(
        &bed,
        &[
            "nodes",
            "create",
            "--name",
            "late",
            "--option",
            "listen_delay_ms=3000",
            "--wait-timeout",
            "1s",
        ],
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("was destroyed"), "{}", stderr(&out));
    assert!(bed.driver().find("late").await.is_err());
    // Waiting long enough: running.
    let out = nodeup(
        &bed,
        &[
            "nodes",
            "create",
            "--name",
            "waited",
            "--option",
            "listen_delay_ms=500",
            "--wait-timeout",
            "30s",
            "--json",
        ],
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let node: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(node["state"], "running");
    for node in bed.driver().list_nodes().await.unwrap() {
        bed.driver().destroy_node(&node).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_key_makes_its_directory_and_a_failed_script_leaves_no_directory() {
    let bed = TestBed::new().unwrap();
    let node = bed.node(NodeSpec::new("keys")).await.unwrap();
    let known = node.known_hosts().to_str().unwrap().to_string();
    let public = write(bed.dir(), "client.pub", bed.client_public_key());
    // Root's ~/.ssh is removed by the first step; the ssh-key step makes it again.
    let file = write(
        bed.dir(),
        "keys.toml",
        &format!(
            "[[step]]\ninline = \"rm -rf /root/.ssh\"\n\n[[step]]\nssh-key = \"{}\"\n\n[[step]]\ninline = \"echo before; exit 7\"\n",
            public.display()
        ),
    );
    let out = nodeup(
        &bed,
        &[
            "run",
            file.to_str().unwrap(),
            "--host",
            &format!("root@{}", node.ip()),
            "--known-hosts",
            &known,
            "--key",
        ],
    )
    .arg(bed.client_key())
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("exit status 7"), "{}", stderr(&out));
    let dir = node.metadata("/root/.ssh").unwrap();
    assert_eq!(dir.mode() & 0o7777, 0o700);
    let keys = node.metadata("/root/.ssh/authorized_keys").unwrap();
    assert_eq!(keys.mode() & 0o7777, 0o600);
    let text = String::from_utf8(node.read_file("/root/.ssh/authorized_keys").unwrap()).unwrap();
    assert_eq!(text.trim(), bed.client_public_key());
    // The key logs in again, and the failed script's private directory is gone.
    let listing = node.ssh_run("root", "ls -A /root").unwrap();
    assert!(
        listing.status.success(),
        "{}",
        String::from_utf8_lossy(&listing.stderr)
    );
    let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
    assert!(!listing.contains(".nodeup-"), "{listing}");
}
