//! deploy_node on local nodes (real sshd): steps, users, retries, failures, cancellation, resume.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nodeup::deploy::{FileStep, ScriptStep, SshKeyStep, Step};
use nodeup::driver::NodeDriver;
use nodeup::engine::{
    deploy_node, destroy_at_exit, run_steps, AtExit, Cause, DeployOptions, Event, Target,
};
use nodeup::journal::{Journal, Location};
use nodeup::model::{CreateNode, Node, NodeAuth};
use nodeup::ssh::{self, ExitStatus, Password};
use testbed::{Faults, NodeSpec, RelayedDriver, TestBed};

use crate::{assert_ok, keygen, stdout};

fn options(bed: &TestBed) -> DeployOptions {
    DeployOptions {
        ssh_keys: vec![bed.client_key().to_path_buf()],
        known_hosts: bed.dir().join("known_hosts"),
        timeout: Duration::from_secs(60),
        poll_period: Duration::from_millis(200),
        journal: Some(Journal::at(Location::Sqlite(bed.dir().join("journal.db")))),
        ..Default::default()
    }
}

fn request(bed: &TestBed, name: &str, image: &str) -> CreateNode {
    CreateNode {
        name: name.into(),
        image: Some(image.into()),
        auth: Some(NodeAuth::SshKey(bed.client_public_key().into())),
        ..Default::default()
    }
}

/// Logs in with OpenSSH and a given key: proves the key works.
fn ssh_with_key(node: &Node, key: &Path, user: &str, command: &str) -> std::process::Output {
    let known_hosts = key.with_extension("known_hosts");
    testbed::openssh(
        std::net::SocketAddr::new(node.public_ips[0], node.ssh_port()),
        user,
        key,
        &known_hosts,
        &[("StrictHostKeyChecking", "accept-new")],
    )
    .args(["--", command])
    .output()
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_step_kinds_as_root() {
    let bed = TestBed::new().unwrap();
    let local = bed.dir().join("files");
    std::fs::create_dir(&local).unwrap();
    std::fs::write(local.join("motd"), "welcome\n").unwrap();
    std::fs::write(local.join("tool.sh"), "#!/bin/sh\necho tool\n").unwrap();
    std::fs::set_permissions(
        local.join("tool.sh"),
        std::fs::Permissions::from_mode(0o750),
    )
    .unwrap();
    let deployer = keygen(&local, "deployer", "");
    let deployer_pub = std::fs::read_to_string(deployer.with_extension("pub")).unwrap();

    let mut script = ScriptStep::inline(
        "#!/bin/sh\nprintf '%s|' \"$@\"; echo; echo \"env=$APP_ENV\"; echo warning >&2; pwd\n",
    );
    script.args = vec!["two words".into(), "it's".into(), "$(reboot)".into()];
    script.env = vec![("APP_ENV".into(), "production value".into())];
    let steps = Step::Multi(vec![
        Step::SshKey(SshKeyStep::new(&deployer_pub)),
        Step::File(FileStep {
            mode: Some(0o640),
            ..FileStep::new(local.join("motd"), "/etc/motd")
        }),
        Step::File(FileStep::new(
            local.join("tool.sh"),
            "/opt/tools/bin/tool.sh",
        )),
        Step::Script(script),
        Step::SshKey(SshKeyStep::new(&deployer_pub)),
    ]);
    let events = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = events.clone();
    let options = DeployOptions {
        progress: Some(Arc::new(move |e: &Event| {
            seen.lock().unwrap().push(format!("{e:?}"))
        })),
        ..options(&bed)
    };
    let driver: Arc<dyn NodeDriver> = Arc::new(bed.driver().clone());
    let done = deploy_node(
        driver,
        &request(&bed, "all-kinds", "debian"),
        &steps,
        &options,
    )
    .await
    .unwrap();
    assert_eq!(done.user, "root");
    assert_eq!(done.steps.len(), 5);
    assert_eq!(done.reconnects, 0);
    let node = bed.adopt(done.node.clone());

    assert_eq!(node.read_file("/etc/motd").unwrap(), b"welcome\n");
    let motd = node.metadata("/etc/motd").unwrap();
    assert_eq!((motd.mode() & 0o7777, motd.uid()), (0o640, 0));
    assert_eq!(
        node.metadata("/opt/tools/bin/tool.sh").unwrap().mode() & 0o7777,
        0o750
    );
    assert!(
        !Path::new("/opt/tools/bin/tool.sh").exists(),
        "the host is untouched"
    );

    let script = &done.steps[3];
    assert_eq!(script.status, Some(ExitStatus::Code(0)));
    assert_eq!(
        script.stdout.text(),
        "two words|it's|$(reboot)|\nenv=production value\n/root\n"
    );
    assert_eq!(script.stderr.text(), "warning\n");
    let leftovers = node.exec("ls -A /root").unwrap();
    assert!(
        !stdout(&leftovers).contains(".nodeup-"),
        "script directory removed: {}",
        stdout(&leftovers)
    );

    // The new key logs in; it was added once although the step ran twice.
    let out = ssh_with_key(&done.node, &deployer, "root", "id -un");
    assert_ok(&out);
    assert_eq!(stdout(&out), "root\n");
    let keys = String::from_utf8(node.read_file("/root/.ssh/authorized_keys").unwrap()).unwrap();
    assert_eq!(
        keys.matches(deployer_pub.split_whitespace().nth(1).unwrap())
            .count(),
        1
    );
    assert!(
        done.steps[4].note.contains("already"),
        "{}",
        done.steps[4].note
    );

    let events = events.lock().unwrap().join("\n");
    assert!(events.contains("LoggedIn(\"root\")"), "{events}");
    assert!(
        events.contains("StepStarted { index: 5, total: 5, kind: \"ssh-key\" }"),
        "{events}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_refused_then_the_login_user_works_with_sudo() {
    let bed = TestBed::new().unwrap();
    let local = bed.dir().join("files");
    std::fs::create_dir(&local).unwrap();
    std::fs::write(local.join("motd"), "managed by nodeup\n").unwrap();
    let extra = keygen(&local, "extra", "");
    let extra_pub = std::fs::read_to_string(extra.with_extension("pub")).unwrap();

    let mut as_root = ScriptStep::inline("id -u; echo root-was-here > /root/marker");
    as_root.sudo = true;
    let steps = Step::Multi(vec![
        // An authorized_keys without its final newline: the key must still go on a line of its own.
        Step::Script(ScriptStep::inline(
            "printf %s \"$(cat ~/.ssh/authorized_keys)\" > ~/.ssh/authorized_keys.new && mv ~/.ssh/authorized_keys.new ~/.ssh/authorized_keys",
        )),
        Step::SshKey(SshKeyStep::new(&extra_pub)),
        Step::File(FileStep { mode: Some(0o644), sudo: true, ..FileStep::new(local.join("motd"), "/etc/motd") }),
        Step::Script(as_root),
        Step::Script(ScriptStep::inline("id -un")),
    ]);
    let options = DeployOptions {
        alternate_usernames: vec!["debian".into()],
        try_image_user: false,
        ..options(&bed)
    };
    let driver: Arc<dyn NodeDriver> = Arc::new(bed.driver().clone());
    let started = std::time::Instant::now();
    let done = deploy_node(
        driver,
        &request(&bed, "sudoer", "cloud-debian"),
        &steps,
        &options,
    )
    .await
    .unwrap();
    assert_eq!(done.user, "debian");
    // The refusing root account sleeps 10 s after its message; the probe does not wait for it.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let node = bed.adopt(done.node.clone());

    let motd = node.metadata("/etc/motd").unwrap();
    assert_eq!((motd.mode() & 0o7777, motd.uid()), (0o644, 0));
    assert_eq!(node.read_file("/etc/motd").unwrap(), b"managed by nodeup\n");
    assert_eq!(done.steps[3].stdout.text(), "0\n");
    assert_eq!(node.read_file("/root/marker").unwrap(), b"root-was-here\n");
    assert_eq!(done.steps[4].stdout.text(), "debian\n");

    let keys =
        String::from_utf8(node.read_file("/home/debian/.ssh/authorized_keys").unwrap()).unwrap();
    let lines: Vec<&str> = keys.lines().collect();
    assert_eq!(lines.len(), 2, "{keys:?}");
    assert!(
        lines[1].starts_with("ssh-ed25519 ") && keys.ends_with('\n'),
        "{keys:?}"
    );
    let out = ssh_with_key(&done.node, &extra, "debian", "true");
    assert_ok(&out);
    let home = node.exec("ls -A /home/debian").unwrap();
    assert!(!stdout(&home).contains(".nodeup-"), "{}", stdout(&home));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_user_is_tried_and_every_attempt_is_reported() {
    let bed = TestBed::new().unwrap();
    let driver: Arc<dyn NodeDriver> = Arc::new(bed.driver().clone());
    let steps = Step::Script(ScriptStep::inline("id -un"));
    // root is refused by the image, "admin" does not exist: the image's user, debian, works.
    let options = DeployOptions {
        alternate_usernames: vec!["admin".into()],
        ..options(&bed)
    };
    let done = deploy_node(
        driver.clone(),
        &request(&bed, "imageuser", "cloud-debian"),
        &steps,
        &options,
    )
    .await
    .unwrap();
    assert_eq!(done.user, "debian");

    // Nobody gets in: the error names what each username got.
    let options = DeployOptions {
        alternate_usernames: vec!["admin".into()],
        try_image_user: false,
        timeout: Duration::from_secs(3),
        ..options
    };
    let err = deploy_node(
        driver.clone(),
        &request(&bed, "nobody", "cloud-debian"),
        &steps,
        &options,
    )
    .await
    .unwrap_err();
    assert!(matches!(err.cause, Cause::Login(_)), "{err}");
    let node = err.node.clone().expect("the error carries the node");
    let users: Vec<&str> = err.attempts.iter().map(|a| a.user.as_str()).collect();
    assert_eq!(users, ["root", "admin"]);
    assert!(
        err.attempts[0]
            .last_error
            .contains("Please login as the user"),
        "{:?}",
        err.attempts
    );
    assert!(
        err.attempts[1]
            .last_error
            .contains("authentication rejected"),
        "{:?}",
        err.attempts
    );
    assert!(
        err.attempts.iter().all(|a| a.tries >= 2),
        "users are tried again: {:?}",
        err.attempts
    );
    assert!(err.to_string().contains("logins tried"), "{err}");
    driver.destroy_node(&node).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sshd_listening_3s_late_is_waited_for() {
    let bed = TestBed::new().unwrap();
    let driver: Arc<dyn NodeDriver> = Arc::new(bed.driver().clone());
    let mut req = request(&bed, "late", "debian");
    req.extra.insert("listen_delay_ms".into(), 3000.into());
    let steps = Step::Script(ScriptStep::inline("echo up"));
    let started = std::time::Instant::now();
    let done = deploy_node(driver, &req, &steps, &options(&bed))
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_secs(3));
    assert_eq!(done.steps[0].stdout.text(), "up\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_script_fails_the_deployment_with_its_output_and_the_node() {
    let bed = TestBed::new().unwrap();
    let driver: Arc<dyn NodeDriver> = Arc::new(bed.driver().clone());
    let mut accepted = ScriptStep::inline("echo partial; exit 3");
    accepted.exit_codes = vec![0, 3];
    let steps = Step::Multi(vec![
        Step::Script(accepted),
        Step::Script(ScriptStep::inline(
            "echo before; echo 'disk full' >&2; exit 7",
        )),
        Step::Script(ScriptStep::inline("touch /root/never")),
    ]);
    let err = deploy_node(
        driver.clone(),
        &request(&bed, "failing", "debian"),
        &steps,
        &options(&bed),
    )
    .await
    .unwrap_err();
    assert_eq!(err.step, Some((2, "script")));
    let Cause::Step(step_error) = &err.cause else {
        panic!("{err}")
    };
    let (status, out, errout) = step_error.output().unwrap();
    assert_eq!(status, Some(&ExitStatus::Code(7)));
    assert_eq!(out.text(), "before\n");
    assert_eq!(errout.text(), "disk full\n");
    assert!(
        nodeup::engine::error_chain(&err).contains("disk full"),
        "{}",
        nodeup::engine::error_chain(&err)
    );
    assert_eq!(err.completed.len(), 1);
    assert_eq!(err.completed[0].status, Some(ExitStatus::Code(3)));
    let node = bed.adopt(err.node.clone().unwrap());
    assert!(
        node.read_file("/root/never").is_err(),
        "later steps do not run"
    );
    driver.destroy_node(&node.node).await.unwrap();
    assert!(driver.list_nodes().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_host_key_is_refused_at_once_unless_the_provider_vouches_for_it() {
    let bed = TestBed::new().unwrap();
    let node = bed.node(NodeSpec::new("victim")).await.unwrap();
    let steps = Step::Script(ScriptStep::inline("true"));
    let options = options(&bed);
    // known_hosts records another key for the node's address: the node presents a changed key.
    let bogus = keygen(bed.dir(), "bogus", "");
    let bogus = std::fs::read_to_string(bogus.with_extension("pub")).unwrap();
    std::fs::write(&options.known_hosts, format!("{} {bogus}", node.ip())).unwrap();
    let creds = options.credentials().unwrap();
    let mut target = Target {
        addr: node.addr(),
        users: vec!["root".into()],
        pinned_host_keys: vec![],
        node: None,
        journal: None,
        created: false,
        driver: None,
        ssh: Default::default(),
    };
    let started = std::time::Instant::now();
    let err = run_steps(&target, &steps, &creds, &options)
        .await
        .unwrap_err();
    assert!(
        matches!(err.cause, Cause::Login(ssh::Error::HostKeyChanged { .. })),
        "{:?}",
        err.cause
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "no retry on a changed key"
    );
    assert!(nodeup::engine::error_chain(&err.cause).contains("ssh-keygen -R"));

    // The provider reports the node's keys (a new node at a reused address): they win.
    target.pinned_host_keys = node.node.extra["host_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    run_steps(&target, &steps, &creds, &options).await.unwrap();
    let known = std::fs::read_to_string(&options.known_hosts).unwrap();
    assert!(
        !known.contains(bogus.split_whitespace().nth(1).unwrap()),
        "the stale key is gone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_keys_need_the_right_passphrase_before_anything_is_created() {
    let bed = TestBed::new().unwrap();
    let driver: Arc<dyn NodeDriver> = Arc::new(bed.driver().clone());
    let key = keygen(bed.dir(), "locked", "correct horse");
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let steps = Step::Script(ScriptStep::inline("echo unlocked"));
    let mut req = request(&bed, "locked", "debian");
    req.auth = Some(NodeAuth::SshKey(public));

    for passphrase in [None, Some("wrong")] {
        let options = DeployOptions {
            ssh_keys: vec![key.clone()],
            ssh_key_passphrase: passphrase.map(|p| Password(p.into())),
            ..options(&bed)
        };
        let err = deploy_node(driver.clone(), &req, &steps, &options)
            .await
            .unwrap_err();
        assert!(err.is_before_create(), "{err}");
        assert!(matches!(err.cause, Cause::Credentials(_)), "{err}");
        assert!(
            nodeup::engine::error_chain(&err).contains("locked"),
            "names the key file"
        );
        assert!(
            driver.list_nodes().await.unwrap().is_empty(),
            "nothing was created"
        );
    }
    let options = DeployOptions {
        ssh_keys: vec![key.clone()],
        ssh_key_passphrase: Some(Password("correct horse".into())),
        ..options(&bed)
    };
    let done = deploy_node(driver.clone(), &req, &steps, &options)
        .await
        .unwrap();
    assert_eq!(done.steps[0].stdout.text(), "unlocked\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_after_create_calls_the_hook_and_the_node_is_gone() {
    let bed = TestBed::new().unwrap();
    let driver: Arc<dyn NodeDriver> = Arc::new(bed.driver().clone());
    let steps = Step::Script(ScriptStep::inline("sleep 60"));
    let called = Arc::new(AtomicBool::new(false));
    let flag = called.clone();
    let destroy = destroy_at_exit();
    let hook: AtExit = Arc::new(move |driver, node| {
        flag.store(true, Ordering::SeqCst);
        destroy(driver, node)
    });
    let options = options(&bed);
    let cancel = options.cancel.clone();
    let options = DeployOptions {
        at_exit: Some(hook.clone()),
        progress: Some(Arc::new(move |e: &Event| {
            if matches!(e, Event::StepStarted { .. }) {
                cancel.cancel();
            }
        })),
        ..options
    };
    let err = deploy_node(
        driver.clone(),
        &request(&bed, "cancelled", "debian"),
        &steps,
        &options,
    )
    .await
    .unwrap_err();
    assert!(matches!(err.cause, Cause::Cancelled), "{err}");
    assert!(called.load(Ordering::SeqCst));
    assert!(err.node.is_some());
    assert!(
        driver.list_nodes().await.unwrap().is_empty(),
        "the hook destroyed the node"
    );

    // The deployment future dropped (a caller's own timeout): the hook runs too.
    called.store(false, Ordering::SeqCst);
    let mut req = request(&bed, "dropped", "debian");
    req.extra.insert("listen_delay_ms".into(), 60_000.into());
    let options = DeployOptions {
        at_exit: Some(hook),
        ..self::options(&bed)
    };
    let dropped = tokio::time::timeout(
        Duration::from_millis(1500),
        deploy_node(driver.clone(), &req, &steps, &options),
    )
    .await;
    assert!(dropped.is_err());
    for _ in 0..100 {
        if driver.list_nodes().await.unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(called.load(Ordering::SeqCst));
    assert!(
        driver.list_nodes().await.unwrap().is_empty(),
        "the hook destroyed the node"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_reset_mid_step_resumes_without_rerunning_steps() {
    let bed = TestBed::new().unwrap();
    let big: Vec<u8> = (0..2 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let local = bed.dir().join("big.bin");
    std::fs::write(&local, &big).unwrap();
    // The first connection is reset after 400 kB: in the middle of the upload.
    let faults = Faults {
        reset_after: Some(400_000),
        ..Faults::default()
    };
    let relayed = Arc::new(RelayedDriver::new(bed.driver().clone(), Some(faults)));
    let driver: Arc<dyn NodeDriver> = relayed.clone();
    let steps = Step::Multi(vec![
        Step::Script(ScriptStep::inline("echo a >> /root/runs")),
        Step::File(FileStep {
            mode: Some(0o600),
            ..FileStep::new(&local, "/srv/big.bin")
        }),
        Step::Script(ScriptStep::inline("echo b >> /root/runs")),
    ]);
    let done = deploy_node(
        driver,
        &request(&bed, "resumer", "debian"),
        &steps,
        &options(&bed),
    )
    .await
    .unwrap();
    assert_eq!(done.reconnects, 1);
    let relay = relayed.relay(&done.node.id).unwrap();
    assert!(relay.accepted() >= 2);
    let node = bed.adopt(bed.driver().get_node(&done.node.id).await.unwrap());
    assert_eq!(
        node.read_file("/root/runs").unwrap(),
        b"a\nb\n",
        "each step ran once"
    );
    assert!(
        node.read_file("/srv/big.bin").unwrap() == big,
        "the file arrived whole"
    );
    let listing = node.exec("ls -A /srv").unwrap();
    assert_eq!(stdout(&listing), "big.bin\n", "no temporary file left");
}

#[tokio::test]
async fn bad_steps_and_no_credentials_create_nothing() {
    let bed = TestBed::new().unwrap();
    let driver: Arc<dyn NodeDriver> = Arc::new(bed.driver().clone());
    let steps = Step::Multi(vec![
        Step::Script(ScriptStep::inline("true")),
        Step::File(FileStep::new(bed.dir().join("missing.conf"), "/etc/x")),
    ]);
    let err = deploy_node(
        driver.clone(),
        &request(&bed, "x", "debian"),
        &steps,
        &options(&bed),
    )
    .await
    .unwrap_err();
    assert!(err.is_before_create());
    let text = nodeup::engine::error_chain(&err);
    assert!(
        text.contains("step 2 (file)") && text.contains("missing.conf"),
        "{text}"
    );

    let steps = Step::Script(ScriptStep::inline("id -un"));
    let options = DeployOptions {
        ssh_keys: vec![],
        default_credentials: false,
        temporary_key: false,
        ..options(&bed)
    };
    let err = deploy_node(
        driver.clone(),
        &request(&bed, "x", "debian"),
        &steps,
        &options,
    )
    .await
    .unwrap_err();
    assert!(err.is_before_create());
    assert!(err.cause.to_string().contains("no way to log in"), "{err}");
    assert!(driver.list_nodes().await.unwrap().is_empty());

    // With a temporary key allowed, nodeup makes one, hands it to the provider and logs in.
    let options = DeployOptions {
        temporary_key: true,
        ..options
    };
    let mut req = request(&bed, "temp-key", "cloud-debian");
    req.auth = None;
    let done = deploy_node(driver.clone(), &req, &steps, &options)
        .await
        .unwrap();
    assert_eq!(done.steps[0].stdout.text(), "debian\n");
    let node = bed.adopt(done.node);
    let keys =
        String::from_utf8(node.read_file("/home/debian/.ssh/authorized_keys").unwrap()).unwrap();
    assert!(!keys.contains(bed.client_public_key().split_whitespace().nth(1).unwrap()));
    assert_eq!(keys.lines().count(), 1, "only the temporary key: {keys}");
}

/// A step of a library user's own: reads the hostname over the session, checks it against the
/// node it was given.
#[derive(Debug)]
struct Hostname;

#[async_trait::async_trait]
impl nodeup::deploy::CustomStep for Hostname {
    fn kind(&self) -> &'static str {
        "hostname"
    }

    async fn run(
        &self,
        ctx: &nodeup::deploy::Context<'_>,
    ) -> Result<nodeup::deploy::StepResult, nodeup::deploy::Error> {
        let out = ctx
            .session
            .exec("hostname", &ssh::ExecOptions::default())
            .await?;
        let name = out.stdout.text().trim().to_string();
        let expected = ctx.node.map(|n| n.name.clone()).unwrap_or_default();
        if name != expected {
            return Err(nodeup::deploy::Error::Custom {
                message: format!("hostname {name:?}, expected {expected:?}"),
                result: None,
            });
        }
        Ok(nodeup::deploy::StepResult {
            note: format!("hostname is {name}"),
            stdout: out.stdout,
            ..Default::default()
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_step_runs_among_the_others_and_failing_steps_can_rerun_the_deployment() {
    let bed = TestBed::new().unwrap();
    let driver: Arc<dyn NodeDriver> = Arc::new(bed.driver().clone());
    // Fails on its first run only: the marker survives on the node.
    let flaky = "if [ -e /root/ran-once ]; then echo second; else touch /root/ran-once; exit 1; fi";
    let steps = Step::Multi(vec![
        Step::Custom(Arc::new(Hostname)),
        Step::Script(ScriptStep::inline(flaky)),
    ]);
    let rerun = DeployOptions {
        retry_failed_steps: true,
        max_tries: 2,
        ..options(&bed)
    };
    let done = deploy_node(
        driver.clone(),
        &request(&bed, "custom", "debian"),
        &steps,
        &rerun,
    )
    .await
    .unwrap();
    assert_eq!(done.steps.len(), 2);
    assert_eq!(done.steps[0].kind, "hostname");
    assert_eq!(done.steps[0].note, "hostname is custom");
    assert_eq!(
        done.steps[1].stdout.text(),
        "second\n",
        "the deployment ran again"
    );
    driver.destroy_node(&done.node).await.unwrap();

    // By default a failed step fails the deployment: nodeup's resume is for lost connections.
    let err = deploy_node(
        driver.clone(),
        &request(&bed, "no-rerun", "debian"),
        &steps,
        &options(&bed),
    )
    .await
    .unwrap_err();
    assert_eq!(err.step.map(|s| s.0), Some(2));
    assert_eq!(err.completed.len(), 1, "the custom step had finished");
    driver
        .destroy_node(err.node.as_ref().unwrap())
        .await
        .unwrap();
}

/// The local provider, as one that cannot install a key or a password when creating a node.
struct NoCreateAuth(nodeup::providers::local::LocalDriver);

#[async_trait::async_trait]
impl NodeDriver for NoCreateAuth {
    fn name(&self) -> &str {
        "no-create-auth"
    }
    fn features(&self) -> nodeup::driver::Features {
        nodeup::driver::Features::default()
    }
    async fn list_nodes(&self) -> nodeup::driver::Result<Vec<Node>> {
        self.0.list_nodes().await
    }
    async fn create_node(&self, request: &CreateNode) -> nodeup::driver::Result<Node> {
        assert!(
            request.auth.is_none(),
            "no auth handed to a provider that cannot take it"
        );
        self.0.create_node(request).await
    }
    async fn destroy_node(&self, node: &Node) -> nodeup::driver::Result<()> {
        self.0.destroy_node(node).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_the_provider_cannot_install_is_still_used_to_log_in() {
    let bed = TestBed::new().unwrap();
    let driver: Arc<dyn NodeDriver> = Arc::new(NoCreateAuth(bed.driver().clone()));
    // The image has the password already (the account's, say); deploy_node logs in with it.
    let request = CreateNode {
        name: "pw-only".into(),
        image: Some("debian".into()),
        extra: [("password".to_string(), "s3same-pw".into())].into(),
        ..Default::default()
    };
    let options = DeployOptions {
        auth: Some(NodeAuth::Password("s3same-pw".into())),
        default_credentials: false,
        ..options(&bed)
    };
    let options = DeployOptions {
        ssh_keys: vec![],
        ..options
    };
    let steps = Step::Script(ScriptStep::inline("id -un"));
    let done = deploy_node(driver.clone(), &request, &steps, &options)
        .await
        .unwrap();
    assert_eq!(done.steps[0].stdout.text(), "root\n");
    assert_eq!(
        done.node.password(),
        Some("s3same-pw"),
        "recorded on the node"
    );
    driver.destroy_node(&done.node).await.unwrap();
}

/// `wait-cloud-init` waits while cloud-init runs (the cloud-debian image's stand-in, held at
/// `running`), fails on its error with the output, and says it skipped where there is none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_cloud_init_waits_for_it_and_fails_on_its_error() {
    use nodeup::deploy::CloudInitStep;
    use nodeup::providers::local::CLOUD_INIT_STATUS;

    let bed = TestBed::new().unwrap();
    let node = bed
        .node(NodeSpec::new("cloudy").image("cloud-debian"))
        .await
        .unwrap();
    let set_status = |status: &str| {
        assert_ok(
            &node
                .exec(&format!("echo {status} > {CLOUD_INIT_STATUS}"))
                .unwrap(),
        )
    };
    set_status("running");
    let options = crate::strict_options(&bed, node.known_hosts());
    let target = crate::existing_machine(node.addr(), "debian");
    let creds = options.credentials().unwrap();
    let steps = Step::Multi(vec![
        Step::WaitCloudInit(CloudInitStep::default()),
        Step::Script(ScriptStep::inline(&format!(
            "cat {CLOUD_INIT_STATUS} > ~/seen"
        ))),
    ]);
    let run = {
        let (target, steps, creds, options) = (&target, &steps, &creds, &options);
        async move { nodeup::engine::run_steps(target, steps, creds, options).await }
    };
    let finish_later = async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        set_status("done");
    };
    let (done, ()) = tokio::join!(run, finish_later);
    let done = done.unwrap_or_else(|e| panic!("{}", e.cause));
    assert_eq!(
        node.read_file("/home/debian/seen").unwrap(),
        b"done\n",
        "the next step ran only once cloud-init was done"
    );
    assert_eq!(done.steps[0].note, "cloud-init finished");
    assert!(done.steps[0].stdout.text().contains("status: done"));

    set_status("error");
    let failed = nodeup::engine::run_steps(&target, &steps, &creds, &options)
        .await
        .unwrap_err();
    let message = failed.cause.to_string();
    assert!(
        message.contains("cloud-init did not finish cleanly"),
        "{message}"
    );
    assert!(message.contains("status: error"), "{message}");
    assert_eq!(failed.step, Some((1, "wait-cloud-init")));

    // An image without cloud-init: nothing to wait for.
    let plain = bed.node(NodeSpec::new("plain")).await.unwrap();
    let target = crate::existing_machine(plain.addr(), "root");
    let options = crate::strict_options(&bed, plain.known_hosts());
    let wait = Step::WaitCloudInit(CloudInitStep::default());
    let done = nodeup::engine::run_steps(&target, &wait, &creds, &options)
        .await
        .unwrap_or_else(|e| panic!("{}", e.cause));
    assert_eq!(
        done.steps[0].note,
        "no cloud-init on the node: nothing to wait for"
    );
}

/// A reboot in the middle of a 3-step deployment: the node comes back with another boot id, the
/// third step runs once on the new boot; a node that does not come back in time fails the
/// deployment with that reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reboot_step_waits_for_a_new_boot_and_goes_on() {
    use nodeup::deploy::RebootStep;

    let bed = TestBed::new().unwrap();
    let driver: Arc<dyn NodeDriver> = Arc::new(bed.driver().clone());
    let boot_id = "cat /proc/sys/kernel/random/boot_id";
    let steps = Step::Multi(vec![
        Step::Script(ScriptStep::inline(&format!(
            "echo a >> /root/runs; {boot_id} > /root/boot-1"
        ))),
        Step::Reboot(RebootStep::default()),
        Step::Script(ScriptStep::inline(&format!(
            "echo b >> /root/runs; {boot_id} > /root/boot-2"
        ))),
    ]);
    let done = deploy_node(
        driver.clone(),
        &request(&bed, "rebooter", "debian"),
        &steps,
        &options(&bed),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(done.steps[1].kind, "reboot");
    assert!(
        done.steps[1].note.starts_with("rebooted"),
        "{}",
        done.steps[1].note
    );
    let node = bed.adopt(bed.driver().get_node(&done.node.id).await.unwrap());
    assert_eq!(
        node.read_file("/root/runs").unwrap(),
        b"a\nb\n",
        "each step ran once"
    );
    assert_ne!(
        node.read_file("/root/boot-1").unwrap(),
        node.read_file("/root/boot-2").unwrap(),
        "the third step ran on a new boot"
    );

    // A node that takes longer to come back than the step allows.
    let mut slow = request(&bed, "slow-rebooter", "debian");
    slow.extra
        .insert("listen_delay_ms".into(), serde_json::json!(3000));
    let steps = Step::Multi(vec![
        Step::Reboot(RebootStep {
            timeout: Some(Duration::from_secs(1)),
        }),
        Step::Script(ScriptStep::inline("touch /root/after")),
    ]);
    let failed = deploy_node(driver, &slow, &steps, &options(&bed))
        .await
        .unwrap_err();
    assert_eq!(failed.step, Some((1, "reboot")));
    let message = failed.to_string() + &nodeup::engine::error_chain(&failed.cause);
    assert!(message.contains("did not come back within 1s"), "{message}");
}

/// On a machine without a provider (`run`), the reboot step reboots it from inside, as a machine
/// does: the local node's own `reboot` boots it again (a new boot id, a fresh /tmp), and the
/// steps go on over a new session. Where the reboot cannot start (no sudo rights, every reboot
/// command failing), the step fails at once with what the commands said, not after its timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_reboots_from_inside_and_a_reboot_that_cannot_start_fails_at_once() {
    use nodeup::deploy::RebootStep;

    let bed = TestBed::new().unwrap();
    let node = bed
        .node(NodeSpec::new("inside").image("cloud-debian"))
        .await
        .unwrap();
    let options = crate::strict_options(&bed, node.known_hosts());
    let creds = options.credentials().unwrap();
    let target = crate::existing_machine(node.addr(), "debian");
    let boot_id = "cat /proc/sys/kernel/random/boot_id";
    let steps = Step::Multi(vec![
        Step::Script(ScriptStep::inline(&format!(
            "{boot_id} > ~/boot-1; touch /tmp/before"
        ))),
        Step::Reboot(RebootStep {
            timeout: Some(Duration::from_secs(60)),
        }),
        Step::Script(ScriptStep::inline(&format!(
            "{boot_id} > ~/boot-2; test ! -e /tmp/before && echo fresh-tmp"
        ))),
    ]);
    let done = nodeup::engine::run_steps(&target, &steps, &creds, &options)
        .await
        .unwrap_or_else(|e| panic!("{}", nodeup::engine::error_chain(&e.cause)));
    assert!(
        done.steps[1].note.starts_with("rebooted"),
        "{:?}",
        done.steps[1]
    );
    assert_eq!(done.steps[2].stdout.text(), "fresh-tmp\n");
    assert_ne!(
        node.read_file("/home/debian/boot-1").unwrap(),
        node.read_file("/home/debian/boot-2").unwrap(),
        "the last step ran on a new boot"
    );
    let home = node.exec("ls -A /home/debian").unwrap();
    assert!(
        !String::from_utf8_lossy(&home.stdout).contains(".nodeup-"),
        "the reboot's private directory is gone"
    );

    // No sudo rights: the reboot cannot start, and says so at once.
    let revoked = node.exec("rm /etc/sudoers.d/90-nodeup-login-user").unwrap();
    assert!(revoked.status.success());
    let reboot = Step::Reboot(RebootStep {
        timeout: Some(Duration::from_secs(120)),
    });
    let started = std::time::Instant::now();
    let failed = nodeup::engine::run_steps(&target, &reboot, &creds, &options)
        .await
        .unwrap_err();
    let message = nodeup::engine::error_chain(&failed.cause);
    assert!(
        message.contains("starting the node's own reboot"),
        "{message}"
    );
    assert!(message.contains("sudo"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(30), "{message}");

    // Root, but every reboot command fails: their output, at once.
    let root = crate::existing_machine(node.addr(), "root");
    let broken = "for c in /usr/sbin/reboot /usr/sbin/shutdown /usr/bin/systemctl; do \
                  printf '#!/bin/sh\\necho \"%s: refused by the test\" >&2\\nexit 1\\n' \"$c\" >\"$c\"; done";
    assert!(node.exec(broken).unwrap().status.success());
    let key = node
        .exec("cp /home/debian/.ssh/authorized_keys /root/.ssh/authorized_keys")
        .unwrap();
    assert!(key.status.success());
    let started = std::time::Instant::now();
    let failed = nodeup::engine::run_steps(&root, &reboot, &creds, &options)
        .await
        .unwrap_err();
    let message = nodeup::engine::error_chain(&failed.cause);
    assert!(
        message.contains("the node's own reboot failed"),
        "{message}"
    );
    assert!(
        message.contains("/usr/sbin/reboot: refused by the test")
            && message.contains("/usr/bin/systemctl: refused by the test"),
        "{message}"
    );
    assert!(started.elapsed() < Duration::from_secs(30), "{message}");
}
