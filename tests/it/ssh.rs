//! nodeup's SSH layer against real sshd nodes: host keys, auth, exec, sftp.

use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nodeup::ssh::{
    ConnectOptions, Credentials, Error, ErrorClass, ExecOptions, ExitStatus, HostKeyCheck,
    HostKeyPolicy, SshSession, Stream, UploadOptions,
};
use testbed::{NodeSpec, TestBed, TestNode};

/// A connection as `user` with the test bed's key, trusting the node's key on first use.
pub async fn login(bed: &TestBed, node: &TestNode, user: &str) -> Result<SshSession, Error> {
    let check = HostKeyCheck {
        policy: HostKeyPolicy::AcceptNew,
        known_hosts: bed.dir().join("known_hosts"),
        pinned: vec![],
        ..Default::default()
    };
    let creds = Credentials::from_key_files(&[bed.client_key().to_path_buf()], None)?;
    SshSession::connect(&ConnectOptions::new(node.addr(), user, check), &creds).await
}

#[tokio::test]
async fn exec_streams_and_keeps_exit_status_and_output() {
    let bed = TestBed::new().unwrap();
    let node = bed.node(NodeSpec::new("exec")).await.unwrap();
    let ssh = login(&bed, &node, "root").await.unwrap();

    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink_seen = seen.clone();
    let options = ExecOptions {
        sink: Some(Arc::new(move |stream, data: &[u8]| {
            sink_seen.lock().unwrap().push((stream, data.to_vec()));
        })),
        max_output: 1000,
        ..Default::default()
    };
    let out = ssh
        .exec(
            "echo out; echo err >&2; printf '\\377'; head -c 5000 /dev/zero | tr '\\0' x; exit 3",
            &options,
        )
        .await
        .unwrap();
    assert_eq!(out.status, Some(ExitStatus::Code(3)));
    assert_eq!(out.stderr.bytes(), b"err\n");
    assert_eq!(out.stdout.total(), 4 + 1 + 5000);
    assert_eq!(out.stdout.bytes().len(), 1000);
    assert_eq!(out.stdout.dropped(), 4005);
    let seen = seen.lock().unwrap().clone();
    assert!(seen
        .iter()
        .any(|(s, d)| *s == Stream::Stderr && d == b"err\n"));
    let streamed: usize = seen
        .iter()
        .filter(|(s, _)| *s == Stream::Stdout)
        .map(|(_, d)| d.len())
        .sum();
    assert_eq!(
        streamed, 5005,
        "everything is streamed, even what is not kept"
    );

    // Streamed as it comes: the first line arrives while the command still runs.
    let started = tokio::time::Instant::now();
    let first_line_at = Arc::new(Mutex::new(None));
    let mark = first_line_at.clone();
    let options = ExecOptions {
        sink: Some(Arc::new(move |_, data: &[u8]| {
            if data.starts_with(b"a") {
                mark.lock().unwrap().get_or_insert(started.elapsed());
            }
        })),
        ..Default::default()
    };
    let out = ssh.exec("echo a; sleep 2; echo b", &options).await.unwrap();
    let ended = started.elapsed();
    assert_eq!(out.stdout.text(), "a\nb\n");
    let first = first_line_at
        .lock()
        .unwrap()
        .expect("the first line was streamed");
    assert!(
        ended - first >= std::time::Duration::from_millis(1000),
        "\"a\" came at {first:?}, the command ended at {ended:?}: output was held back"
    );

    // Output that arrives right before exit is kept.
    let out = ssh
        .exec("echo last words; exit 0", &ExecOptions::default())
        .await
        .unwrap();
    assert_eq!(out.stdout.text(), "last words\n");

    let out = ssh
        .exec("kill -TERM $$", &ExecOptions::default())
        .await
        .unwrap();
    assert!(
        matches!(out.status, Some(ExitStatus::Signal { ref name, .. }) if name == "TERM"),
        "{out:?}"
    );

    let out = ssh
        .exec(
            "cat",
            &ExecOptions {
                stdin: Some(b"fed in".to_vec()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(out.stdout.text(), "fed in");
}

#[tokio::test]
async fn a_command_past_its_time_is_ended_on_the_node() {
    let bed = TestBed::new().unwrap();
    let node = bed.node(NodeSpec::new("sleepy")).await.unwrap();
    let ssh = login(&bed, &node, "root").await.unwrap();
    let options = ExecOptions {
        timeout: Some(Duration::from_millis(500)),
        ..Default::default()
    };
    let err = ssh
        .exec("echo started; exec sleep 77", &options)
        .await
        .unwrap_err();
    match &err {
        Error::CommandTimeout { output, .. } => assert_eq!(output.stdout.text(), "started\n"),
        other => panic!("{other}"),
    }
    assert_eq!(err.class(), ErrorClass::Fatal);
    let mut gone = false;
    for _ in 0..50 {
        let out = node.exec("pgrep -x sleep || true").unwrap();
        if out.stdout.is_empty() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "the remote command must be ended");
    // The session is still usable.
    let out = ssh.exec("true", &ExecOptions::default()).await.unwrap();
    assert_eq!(out.status, Some(ExitStatus::Code(0)));
}

#[tokio::test]
async fn uploads_are_atomic_with_mode_and_parents() {
    let bed = TestBed::new().unwrap();
    let node = bed.node(NodeSpec::new("sftp")).await.unwrap();
    let ssh = login(&bed, &node, "root").await.unwrap();
    let opts = UploadOptions {
        mode: Some(0o640),
        create_parents: true,
        sudo: false,
    };
    ssh.upload(b"first\n", "/opt/app/conf/app.conf", &opts)
        .await
        .unwrap();
    assert_eq!(
        node.read_file("/opt/app/conf/app.conf").unwrap(),
        b"first\n"
    );
    assert_eq!(
        node.metadata("/opt/app/conf/app.conf").unwrap().mode() & 0o7777,
        0o640
    );
    assert_eq!(
        node.metadata("/opt/app/conf").unwrap().mode() & 0o777,
        0o755
    );
    // Replacing an existing file: a new file renamed over the old one, never a write in place
    // (a reader sees the whole old file or the whole new one).
    let old_inode = node.metadata("/opt/app/conf/app.conf").unwrap().ino();
    ssh.upload(
        b"second\n",
        "/opt/app/conf/app.conf",
        &UploadOptions {
            mode: Some(0o600),
            create_parents: false,
            sudo: false,
        },
    )
    .await
    .unwrap();
    assert_eq!(
        node.read_file("/opt/app/conf/app.conf").unwrap(),
        b"second\n"
    );
    assert_ne!(
        node.metadata("/opt/app/conf/app.conf").unwrap().ino(),
        old_inode,
        "the upload replaced the file rather than rewriting it"
    );
    assert_eq!(
        node.metadata("/opt/app/conf/app.conf").unwrap().mode() & 0o7777,
        0o600
    );
    let listing = node.exec("ls -A /opt/app/conf").unwrap();
    assert_eq!(
        String::from_utf8_lossy(&listing.stdout),
        "app.conf\n",
        "no temporary file left"
    );

    ssh.append(b"more\n", "/opt/app/conf/app.conf")
        .await
        .unwrap();
    assert_eq!(
        node.read_file("/opt/app/conf/app.conf").unwrap(),
        b"second\nmore\n"
    );
    assert_eq!(
        ssh.read_file("/opt/app/conf/app.conf")
            .await
            .unwrap()
            .unwrap(),
        b"second\nmore\n"
    );
    ssh.remove_file("/opt/app/conf/app.conf").await.unwrap();
    ssh.remove_file("/opt/app/conf/app.conf").await.unwrap();
    assert!(ssh
        .read_file("/opt/app/conf/app.conf")
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn host_keys_are_checked() {
    let bed = TestBed::new().unwrap();
    let node = bed.node(NodeSpec::new("keyed")).await.unwrap();
    let creds = Credentials::from_key_files(&[bed.client_key().to_path_buf()], None).unwrap();
    let known_hosts = bed.dir().join("kh");
    let check = |policy, pinned: Vec<String>| HostKeyCheck {
        policy,
        known_hosts: known_hosts.clone(),
        pinned,
        ..Default::default()
    };

    // Strict and unknown: refused before login.
    let err = SshSession::connect(
        &ConnectOptions::new(node.addr(), "root", check(HostKeyPolicy::Strict, vec![])),
        &creds,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::HostKeyUnknown { .. }), "{err}");
    assert_eq!(err.class(), ErrorClass::Fatal);

    // Pinned to the keys the provider reported: accepted, and recorded.
    let pinned: Vec<String> = node.node.extra["host_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    SshSession::connect(
        &ConnectOptions::new(node.addr(), "root", check(HostKeyPolicy::Strict, pinned)),
        &creds,
    )
    .await
    .unwrap();
    SshSession::connect(
        &ConnectOptions::new(node.addr(), "root", check(HostKeyPolicy::Strict, vec![])),
        &creds,
    )
    .await
    .unwrap();

    // The recorded key differs from the one the node presents (an impostor, or a re-created
    // node the provider does not vouch for): refused, with the fix.
    crate::keygen(bed.dir(), "impostor", "");
    let other = std::fs::read_to_string(bed.dir().join("impostor.pub")).unwrap();
    let other = other
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    std::fs::write(&known_hosts, format!("{} {other}\n", node.ip())).unwrap();
    for policy in [HostKeyPolicy::AcceptNew, HostKeyPolicy::Strict] {
        let err = SshSession::connect(
            &ConnectOptions::new(node.addr(), "root", check(policy, vec![])),
            &creds,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, Error::HostKeyChanged { .. }), "{err}");
        assert!(err.to_string().contains("ssh-keygen -R"), "{err}");
    }
}

#[tokio::test]
async fn auth_failures_say_what_was_tried() {
    let bed = TestBed::new().unwrap();
    let node = bed
        .node(
            NodeSpec::new("guarded")
                .image("cloud-debian")
                .password("pw 1"),
        )
        .await
        .unwrap();
    let err = login(&bed, &node, "nobody").await.unwrap_err();
    assert!(matches!(err, Error::AuthRejected { .. }), "{err}");
    assert_eq!(err.class(), ErrorClass::NextUser);
    assert!(err.to_string().contains("publickey"), "{err}");

    let check = HostKeyCheck {
        policy: HostKeyPolicy::AcceptNew,
        known_hosts: bed.dir().join("known_hosts"),
        pinned: vec![],
        ..Default::default()
    };
    let creds = Credentials {
        password: Some(nodeup::ssh::Password("pw 1".into())),
        ..Default::default()
    };
    let ssh = SshSession::connect(&ConnectOptions::new(node.addr(), "debian", check), &creds)
        .await
        .unwrap();
    let out = ssh.exec("id -un", &ExecOptions::default()).await.unwrap();
    assert_eq!(out.stdout.text(), "debian\n");
}

#[tokio::test]
async fn the_agent_signs_for_keys_it_holds() {
    let bed = TestBed::new().unwrap();
    let node = bed.node(NodeSpec::new("agented")).await.unwrap();
    let socket = bed.dir().join("agent.sock");
    // A real ssh-agent in the foreground (-D) on a socket of ours, holding the test bed's key;
    // killed when the test ends, however it ends.
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _agent = Kill(
        std::process::Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    for _ in 0..100 {
        if socket.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let added = std::process::Command::new("ssh-add")
        .arg(bed.client_key())
        .env("SSH_AUTH_SOCK", &socket)
        .output()
        .unwrap();
    assert!(added.status.success(), "{added:?}");

    let check = HostKeyCheck {
        policy: HostKeyPolicy::AcceptNew,
        known_hosts: bed.dir().join("known_hosts"),
        pinned: vec![],
        ..Default::default()
    };
    let creds = Credentials {
        agent: Some(socket.clone()),
        ..Default::default()
    };
    let ssh = SshSession::connect(&ConnectOptions::new(node.addr(), "root", check), &creds)
        .await
        .unwrap();
    let out = ssh.exec("id -un", &ExecOptions::default()).await.unwrap();
    assert_eq!(out.stdout.text(), "root\n");
}

/// An OpenSSH user certificate beside the key file (`KEY-cert.pub`) is offered as `ssh` offers
/// it: a node that trusts the CA, with no authorized_keys entry, lets the key in with it only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_beside_the_key_logs_in_where_the_ca_is_trusted() {
    let bed = TestBed::new().unwrap();
    let node = bed
        .node(
            NodeSpec::new("cert")
                .without_key()
                .sshd("TrustedUserCAKeys", "/etc/ssh/nodeup_user_ca.pub"),
        )
        .await
        .unwrap();
    let keygen = |args: &[&str]| {
        let out = std::process::Command::new("ssh-keygen")
            .args(args)
            .current_dir(bed.dir())
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    };
    keygen(&["-q", "-t", "ed25519", "-N", "", "-C", "ca", "-f", "ca"]);
    keygen(&["-q", "-t", "ed25519", "-N", "", "-C", "user", "-f", "user"]);
    keygen(&[
        "-q",
        "-s",
        "ca",
        "-I",
        "deployer@example",
        "-n",
        "root",
        "user.pub",
    ]);
    let ca = std::fs::read(bed.dir().join("ca.pub")).unwrap();
    std::fs::write(node.root().unwrap().join("etc/ssh/nodeup_user_ca.pub"), ca).unwrap();

    let key = bed.dir().join("user");
    let connect = || async {
        let creds = Credentials::from_key_files(std::slice::from_ref(&key), None).unwrap();
        let check = HostKeyCheck {
            policy: HostKeyPolicy::Strict,
            known_hosts: node.known_hosts().to_path_buf(),
            ..Default::default()
        };
        SshSession::connect(&ConnectOptions::new(node.addr(), "root", check), &creds).await
    };
    let ssh = connect().await.unwrap();
    let out = ssh.exec("id -un", &ExecOptions::default()).await.unwrap();
    assert_eq!(out.stdout.text().trim(), "root");
    ssh.close().await;

    // Without the certificate, the plain key is not authorized.
    std::fs::remove_file(bed.dir().join("user-cert.pub")).unwrap();
    let err = connect().await.unwrap_err();
    assert!(matches!(err, Error::AuthRejected { .. }), "{err}");
}

/// A server that takes passwords only through keyboard-interactive (PAM asking "Password:") gets
/// the password there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyboard_interactive_is_answered_with_the_password() {
    let bed = TestBed::new().unwrap();
    let node = bed
        .node(
            NodeSpec::new("kbdint")
                .image("cloud-debian")
                .password("pw 2")
                .sshd("UsePAM", "yes")
                .sshd("PasswordAuthentication", "no")
                .sshd("KbdInteractiveAuthentication", "yes"),
        )
        .await
        .unwrap();
    let connect = |password: &str| {
        let check = HostKeyCheck {
            policy: HostKeyPolicy::Strict,
            known_hosts: node.known_hosts().to_path_buf(),
            ..Default::default()
        };
        let creds = Credentials {
            password: Some(nodeup::ssh::Password(password.into())),
            ..Default::default()
        };
        let options = ConnectOptions::new(node.addr(), "debian", check);
        async move { SshSession::connect(&options, &creds).await }
    };
    let ssh = connect("pw 2").await.unwrap();
    let out = ssh.exec("id -un", &ExecOptions::default()).await.unwrap();
    assert_eq!(out.stdout.text(), "debian\n");
    ssh.close().await;

    let err = connect("wrong").await.unwrap_err();
    assert!(err.to_string().contains("keyboard-interactive"), "{err}");
}
