//! `nodeup nodes ...` end to end: the binary, a test bed's state directory, OpenSSH to log in.

use std::process::{Command, Output};

use serde_json::Value;
use testbed::TestBed;

use crate::{assert_ok, stdout};

fn nodeup(bed: &TestBed, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nodeup"))
        .args(args)
        .env("NODEUP_STATE_DIR", bed.nodeup_state_dir())
        .env_remove("NODEUP_PROVIDER")
        .output()
        .unwrap()
}

fn ssh(bed: &TestBed, node: &Value, user: &str, command: &str) -> Output {
    let node: nodeup::model::Node = serde_json::from_value(node.clone()).unwrap();
    testbed::openssh(
        std::net::SocketAddr::new(node.public_ips[0], node.ssh_port()),
        user,
        bed.client_key(),
        &bed.dir().join("cli_known_hosts"),
        &[("StrictHostKeyChecking", "accept-new")],
    )
    .args(["--", command])
    .output()
    .unwrap()
}

#[test]
fn create_list_reboot_destroy() {
    let bed = TestBed::new().unwrap();
    let pubkey = bed.client_key().with_extension("pub");
    let out = nodeup(
        &bed,
        &[
            "nodes",
            "create",
            "--name",
            "web-1",
            "--image",
            "cloud-debian",
            "--ssh-key",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "--ssh-key needs a value");

    let out = nodeup(
        &bed,
        &[
            "nodes",
            "create",
            "--provider",
            "local",
            "--name",
            "web-1",
            "--image",
            "cloud-debian",
            "--ssh-key",
            pubkey.to_str().unwrap(),
            "--json",
        ],
    );
    assert_ok(&out);
    let node: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(node["name"], "web-1");
    assert_eq!(node["state"], "running");
    assert_eq!(node["image"], "cloud-debian");
    assert_eq!(node["size"], "small");
    assert_eq!(node["extra"]["login_user"], "debian");
    assert!(node["id"].as_str().unwrap().starts_with("loc-"));
    assert!(node["private_ips"].as_array().unwrap().is_empty());

    let out = ssh(&bed, &node, "debian", "hostname");
    assert_ok(&out);
    assert_eq!(stdout(&out), "web-1\n");

    let out = nodeup(&bed, &["nodes", "list", "--json"]);
    assert_ok(&out);
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["id"], node["id"]);

    let out = nodeup(&bed, &["nodes", "list"]);
    assert_ok(&out);
    let table = stdout(&out);
    assert!(table.starts_with("ID"), "{table}");
    assert!(
        table.contains("web-1") && table.contains("running"),
        "{table}"
    );

    let boot_id = |bed: &TestBed| {
        stdout(&ssh(
            bed,
            &node,
            "debian",
            "cat /proc/sys/kernel/random/boot_id",
        ))
    };
    let before = boot_id(&bed);
    assert_ok(&nodeup(&bed, &["nodes", "reboot", "web-1"]));
    let mut after = String::new();
    for _ in 0..100 {
        after = boot_id(&bed);
        if !after.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(!after.is_empty() && after != before, "{before} / {after}");

    let out = nodeup(&bed, &["nodes", "destroy", node["id"].as_str().unwrap()]);
    assert_ok(&out);
    let out = nodeup(&bed, &["nodes", "list", "--json"]);
    assert_eq!(stdout(&out).trim(), "[]");
    let out = nodeup(&bed, &["nodes", "destroy", "web-1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no local node named"));
}

#[test]
fn bad_input_exits_2_and_creates_nothing() {
    let bed = TestBed::new().unwrap();
    let private = bed.client_key().to_str().unwrap().to_string();
    for (args, expected) in [
        (
            vec!["nodes", "create", "--name", "bad name!"],
            "not a valid hostname",
        ),
        (
            vec!["nodes", "create", "--name", "x", "--ssh-key", &private],
            "is a private key",
        ),
        (
            vec![
                "nodes",
                "create",
                "--name",
                "x",
                "--ssh-key",
                "/nonexistent.pub",
            ],
            "/nonexistent.pub",
        ),
        (
            vec!["nodes", "create", "--name", "x", "--provider", "nimbus"],
            "no such provider",
        ),
    ] {
        let out = nodeup(&bed, &args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    let out = nodeup(&bed, &["nodes", "list", "--json"]);
    assert_eq!(stdout(&out).trim(), "[]");
}
