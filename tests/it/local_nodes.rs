//! The local provider through the test bed: isolation, users, reboot, knobs, teardown.

use std::io::Read;
use std::net::TcpStream;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use nodeup::driver::{NodeDriver, ProviderError};
use nodeup::model::{CreateNode, NodeAuth, NodeState};
use testbed::{NodeSpec, TestBed, TestNode};

use crate::{assert_ok, stdout};

fn boot_id(node: &TestNode) -> String {
    String::from_utf8(node.read_file("/proc/sys/kernel/random/boot_id").unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_are_apart_and_leave_nothing_behind() {
    let bed = TestBed::new().unwrap();
    let (a, b, c) = tokio::join!(
        bed.node(NodeSpec::new("alpha")),
        bed.node(NodeSpec::new("beta").image("cloud-debian")),
        bed.node(NodeSpec::new("gamma").image("cloud-debian")),
    );
    let nodes = [a.unwrap(), b.unwrap(), c.unwrap()];

    let mut ips: Vec<_> = nodes.iter().map(|n| n.ip()).collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 3, "each node has its own address: {ips:?}");
    for (node, user) in nodes.iter().zip(["root", "debian", "debian"]) {
        assert_eq!(node.node.state, NodeState::Running);
        assert_eq!(node.node.login_user(), Some(user));
        let out = node.ssh_run(user, "hostname; id -un").unwrap();
        assert_ok(&out);
        assert_eq!(stdout(&out), format!("{}\n{user}\n", node.node.name));
    }

    // A file written on one node is on neither the others nor the host.
    let marker = format!("/opt/nodeup-marker-{}", nodes[1].id());
    let out = nodes[1]
        .ssh_run(
            "debian",
            &format!("echo beta-was-here | sudo tee {marker} >/dev/null"),
        )
        .unwrap();
    assert_ok(&out);
    assert_eq!(nodes[1].read_file(&marker).unwrap(), b"beta-was-here\n");
    for other in [&nodes[0], &nodes[2]] {
        let err = other.read_file(&marker).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    }
    assert!(
        !Path::new(&marker).exists(),
        "the host must not see {marker}"
    );

    // The host's /root and /etc/ssh do not show through.
    let out = nodes[0].exec("ls -A /root; ls /etc/ssh").unwrap();
    assert_ok(&out);
    let listing = stdout(&out);
    assert!(listing.contains("sshd_config"), "{listing}");
    assert!(
        !listing.contains("ssh_host_rsa_key"),
        "host keys leaked: {listing}"
    );

    let footprints: Vec<_> = nodes.iter().map(|n| n.footprint().unwrap()).collect();
    for node in &nodes {
        bed.driver().destroy_node(&node.node).await.unwrap();
    }
    for (node, footprint) in nodes.iter().zip(footprints) {
        assert_eq!(
            footprint.leftovers(),
            Vec::<String>::new(),
            "{}",
            node.node.name
        );
        assert!(matches!(
            bed.driver().get_node(node.id()).await,
            Err(ProviderError::NotFound { .. })
        ));
    }
    assert!(bed.driver().list_nodes().await.unwrap().is_empty());
}

#[tokio::test]
async fn cloud_image_refuses_root_like_cloud_init() {
    let bed = TestBed::new().unwrap();
    let node = bed
        .node(NodeSpec::new("cloudy").image("cloud-debian"))
        .await
        .unwrap();
    let out = node.ssh_run("root", "id").unwrap();
    assert_eq!(out.status.code(), Some(142));
    assert_eq!(
        stdout(&out),
        "Please login as the user \"debian\" rather than the user \"root\".\n\n"
    );
    let out = node.ssh_run("debian", "sudo -n id -u").unwrap();
    assert_ok(&out);
    assert_eq!(stdout(&out), "0\n");

    let ssh_dir = node.metadata("/home/debian/.ssh").unwrap();
    assert_eq!(ssh_dir.permissions().mode() & 0o777, 0o700);
    let keys = node.metadata("/home/debian/.ssh/authorized_keys").unwrap();
    assert_eq!(keys.permissions().mode() & 0o777, 0o600);
    let debian_uid = stdout(&node.exec("id -u debian").unwrap());
    assert_eq!(keys.uid().to_string(), debian_uid.trim());
}

#[tokio::test]
async fn reboot_keeps_files_and_host_keys_and_changes_the_boot_id() {
    let bed = TestBed::new().unwrap();
    let mut node = bed.node(NodeSpec::new("rebooter")).await.unwrap();
    let out = node
        .ssh_run("root", "echo kept > /etc/kept; echo gone > /tmp/gone")
        .unwrap();
    assert_ok(&out);
    let first_boot = boot_id(&node);

    bed.driver().reboot_node(&node.node).await.unwrap();
    node.wait_running(Duration::from_secs(20)).await.unwrap();
    assert_ne!(boot_id(&node), first_boot);
    // The known_hosts file holds the keys from creation: a strict login proves they were kept.
    let out = node.ssh_run("root", "cat /etc/kept; ls /tmp").unwrap();
    assert_ok(&out);
    assert_eq!(stdout(&out), "kept\n");

    bed.driver().stop_node(&node.node).await.unwrap();
    node.refresh().await.unwrap();
    assert_eq!(node.node.state, NodeState::Stopped);
    assert!(TcpStream::connect(node.addr()).is_err());
    bed.driver().start_node(&node.node).await.unwrap();
    node.wait_running(Duration::from_secs(20)).await.unwrap();
    let out = node.ssh_run("root", "cat /etc/kept").unwrap();
    assert_ok(&out);
}

#[tokio::test]
async fn a_late_sshd_is_pending_until_it_listens() {
    let bed = TestBed::new().unwrap();
    let mut node = bed
        .node(
            NodeSpec::new("late")
                .listen_delay(Duration::from_millis(1500))
                .no_wait(),
        )
        .await
        .unwrap();
    assert_eq!(node.node.state, NodeState::Pending);
    assert!(
        TcpStream::connect(node.addr()).is_err(),
        "nothing listens yet"
    );
    node.wait_running(Duration::from_secs(20)).await.unwrap();
    let out = node.ssh_run("root", "true").unwrap();
    assert_ok(&out);
}

#[tokio::test]
async fn sshd_knobs_port_banner_password_and_root_login() {
    let bed = TestBed::new().unwrap();
    let node = bed
        .node(
            NodeSpec::new("knobs")
                .port(2200)
                .banner("authorized use only\n")
                .sshd("PermitRootLogin", "no"),
        )
        .await
        .unwrap();
    assert_eq!(node.addr().port(), 2200);
    assert_eq!(node.node.extra["ssh_port"], 2200);
    let out = node.ssh_run("root", "true").unwrap();
    assert_eq!(out.status.code(), Some(255), "root login is off");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("authorized use only"), "banner: {stderr}");
    assert!(stderr.contains("Permission denied"), "{stderr}");

    let node = bed
        .node(
            NodeSpec::new("pw")
                .image("cloud-debian")
                .without_key()
                .password("s3cret pass"),
        )
        .await
        .unwrap();
    let askpass = bed.dir().join("askpass");
    std::fs::write(&askpass, "#!/bin/sh\necho 's3cret pass'\n").unwrap();
    std::fs::set_permissions(&askpass, std::fs::Permissions::from_mode(0o700)).unwrap();
    let login = || {
        let mut cmd = node.ssh_with(
            "debian",
            &[("BatchMode", "no"), ("PubkeyAuthentication", "no")],
        );
        cmd.env("SSH_ASKPASS", &askpass)
            .env("SSH_ASKPASS_REQUIRE", "force")
            .args(["--", "id -un"]);
        cmd.output().unwrap()
    };
    let out = login();
    assert_ok(&out);
    assert_eq!(stdout(&out), "debian\n");
    // The key of the test bed was not installed.
    let out = node.ssh_run("debian", "true").unwrap();
    assert_eq!(out.status.code(), Some(255));
    // No password hash of the host is in the node.
    let shadow = String::from_utf8(node.read_file("/etc/shadow").unwrap()).unwrap();
    for line in shadow.lines() {
        let mut fields = line.split(':');
        let (user, hash) = (fields.next().unwrap(), fields.next().unwrap());
        if user != "debian" {
            assert_eq!(hash, "*", "{user}");
        }
    }
}

#[tokio::test]
async fn max_startups_drops_extra_unauthenticated_connections() {
    let bed = TestBed::new().unwrap();
    let node = bed
        .node(NodeSpec::new("crowded").sshd("MaxStartups", "1:100:1"))
        .await
        .unwrap();
    // One connection that never authenticates holds the only startup slot.
    let mut first = TcpStream::connect(node.addr()).unwrap();
    let mut banner = [0u8; 8];
    first.read_exact(&mut banner).unwrap();
    assert_eq!(&banner, b"SSH-2.0-");
    let out = node.ssh_run("root", "true").unwrap();
    assert_eq!(out.status.code(), Some(255));
    drop(first);
    let mut ok = false;
    for _ in 0..50 {
        if node.ssh_run("root", "true").unwrap().status.success() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "a login works once the slot is free");
}

#[tokio::test]
async fn bad_requests_are_refused_before_anything_is_created() {
    let bed = TestBed::new().unwrap();
    let driver = bed.driver();
    let cases = [
        (
            CreateNode {
                name: "bad_name".into(),
                ..Default::default()
            },
            "not a valid hostname",
        ),
        (
            CreateNode {
                name: "ok".into(),
                image: Some("ubuntu".into()),
                ..Default::default()
            },
            "no image \"ubuntu\"; there are Debian (root logs in with a key) (id debian)",
        ),
        (
            CreateNode {
                name: "ok".into(),
                auth: Some(NodeAuth::SshKey("ssh-ed25519 not-base64".into())),
                ..Default::default()
            },
            "does not parse",
        ),
        (
            CreateNode {
                name: "ok".into(),
                extra: [("colour".to_string(), "blue".into())].into(),
                ..Default::default()
            },
            "[node] options `colour` is unknown: the valid ones are listen_delay_ms, port",
        ),
    ];
    for (request, expected) in cases {
        let err = driver.create_node(&request).await.unwrap_err();
        assert!(matches!(err, ProviderError::InvalidRequest { .. }), "{err}");
        assert!(err.to_string().contains(expected), "{err}");
    }
    bed.node(NodeSpec::new("taken")).await.unwrap();
    let err = driver
        .create_node(&CreateNode {
            name: "taken".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("exists already"), "{err}");
    let dirs = std::fs::read_dir(driver.state_dir().join("nodes"))
        .unwrap()
        .count();
    assert_eq!(dirs, 1, "only the node that was asked for right exists");
}

#[tokio::test]
async fn a_crashed_runs_nodes_are_swept() {
    // A test bed whose owner died without dropping it.
    let bed = TestBed::new().unwrap();
    let node = bed.node(NodeSpec::new("orphan")).await.unwrap();
    let footprint = node.footprint().unwrap();
    let dir = bed.dir().to_path_buf();
    std::mem::forget(bed);
    let mut dead = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    dead.wait().unwrap();
    std::fs::write(dir.join("owner"), format!("{dead_pid} 1\n")).unwrap();

    testbed::sweep();
    assert_eq!(footprint.leftovers(), Vec::<String>::new());
    assert!(!dir.exists());
}

#[tokio::test]
async fn exec_and_files_from_outside() {
    let bed = TestBed::new().unwrap();
    let node = bed.node(NodeSpec::new("inside")).await.unwrap();
    let out = node
        .exec("hostname; echo 'from exec' > /root/note; chmod 0640 /root/note")
        .unwrap();
    assert_ok(&out);
    assert_eq!(stdout(&out), "inside\n");
    assert_eq!(node.read_file("/root/note").unwrap(), b"from exec\n");
    assert_eq!(
        node.metadata("/root/note").unwrap().permissions().mode() & 0o777,
        0o640
    );
    let out = node.ssh_run("root", "cat /root/note").unwrap();
    assert_eq!(stdout(&out), "from exec\n");
}

#[tokio::test]
async fn reinstall_gives_a_fresh_filesystem_new_host_keys_and_runs_user_data_once() {
    let bed = TestBed::new().unwrap();
    let mut node = bed
        .node(NodeSpec::new("metal").image("cloud-debian"))
        .await
        .unwrap();
    let out = node
        .ssh_run("debian", "echo old | sudo tee /etc/old-file")
        .unwrap();
    assert_ok(&out);
    let old_keys = node.node.extra["host_keys"].clone();
    let spec = nodeup::providers::local::Reinstall {
        hostname: Some("metal-fresh".into()),
        root_key: Some(bed.client_public_key().into()),
        user_data: Some(b"#!/bin/sh\necho ran >> /root/first-boot\n".to_vec()),
        metadata: vec![],
    };
    node.node = bed.driver().reinstall(&node.node, &spec).await.unwrap();
    assert_ne!(node.node.extra["host_keys"], old_keys, "new host keys");
    node.wait_running(Duration::from_secs(20)).await.unwrap();
    assert!(
        node.read_file("/etc/old-file").is_err(),
        "a fresh filesystem"
    );
    assert_eq!(node.read_file("/root/first-boot").unwrap(), b"ran\n");
    // The key went to root (the config drive's key), and the host keys are the new ones.
    let known = format!(
        "{} {}\n",
        node.ip(),
        node.node.extra["host_keys"][0].as_str().unwrap()
    );
    std::fs::write(node.known_hosts(), known).unwrap();
    let out = node.ssh_run("root", "hostname").unwrap();
    assert_ok(&out);
    assert_eq!(stdout(&out), "metal-fresh\n");
    // User data runs at the first boot only.
    bed.driver().reboot_node(&node.node).await.unwrap();
    node.wait_running(Duration::from_secs(20)).await.unwrap();
    assert_eq!(node.read_file("/root/first-boot").unwrap(), b"ran\n");
}

#[tokio::test]
async fn what_a_creator_killed_before_its_rename_left_is_swept() {
    let bed = TestBed::new().unwrap();
    // A creator killed between making its hidden directory and renaming it into place.
    let unborn = bed.dir().join("local/nodes/.new-loc-0badc0de");
    std::fs::create_dir_all(&unborn).unwrap();
    std::fs::write(unborn.join("name"), "half-made").unwrap();
    assert!(bed.driver().list_nodes().await.unwrap().is_empty());
    assert!(!unborn.exists());
    assert!(crate::bed_leftovers(&bed).is_empty());
}
