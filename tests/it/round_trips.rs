//! Round trips, counted exactly where they can be: at the test bed's relay (with a delay, so that a
//! client waiting for its server shows as a pause), the times nodeup waited for the node, beside
//! the OpenSSH client doing the same work. Not timed: a count cannot be made flaky by a slow
//! machine, and a change that adds a round trip fails here.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use nodeup::deploy::{FileStep, ScriptStep, SshKeyStep, Step};
use nodeup::engine::{run_steps, DeployOptions};
use testbed::{Faults, NodeSpec, Relay, TestBed, TestNode};

use crate::{assert_ok, existing_machine, strict_options};

/// The one-way delay: long enough that a pause of the client's own (scheduling, signing) or of
/// the node's (starting a command on a loaded machine) is never taken for a wait, short enough to
/// keep the test quick. At 50 ms, a loaded CI machine moved counts by one.
const DELAY: Duration = Duration::from_millis(80);

/// How many times the OpenSSH client's work is counted. Its count moves by one from run to run
/// (whether the server's first messages come in one piece, whether its window opens before the
/// input is sent), while nodeup's does not: the comparison takes OpenSSH's best login and its
/// worst deployment, so that neither way does chance decide.
const OPENSSH_RUNS: usize = 3;

/// The round trips of nodeup's login: TCP, key exchange (2), the userauth service, the key's
/// probe and its signature, and the probe command (a channel and a command) that proves the
/// account works. The benchmark (`cargo bench --bench wan`) reached this.
const LOGIN_BUDGET: u32 = 8;

/// The round trips of the 3-step deployment (key, file, script): the login, one each for the key
/// and the file, two for the script (it runs, then its private directory is removed). OpenSSH
/// doing the same work in one command waits for 10: its login has one more (a `none`
/// authentication first), and its command one more (sshd opens a channel's window for input only
/// once the command started; nodeup's commands go to channels made ready ahead).
const DEPLOY_BUDGET: u32 = LOGIN_BUDGET + 4;

struct Bench {
    bed: TestBed,
    node: TestNode,
    relay: Relay,
    known_hosts: std::path::PathBuf,
}

impl Bench {
    async fn new() -> Bench {
        let bed = TestBed::new().unwrap();
        let node = bed.node(NodeSpec::new("turns")).await.unwrap();
        let relay = Relay::start(node.addr()).await.unwrap();
        relay.set_faults(Faults {
            delay: DELAY,
            ..Faults::default()
        });
        let host = format!("[127.0.0.1]:{}", relay.addr().port());
        let keys = std::fs::read_to_string(node.known_hosts()).unwrap();
        let text: String = keys
            .lines()
            .filter_map(|l| l.split_once(' ').map(|(_, key)| format!("{host} {key}\n")))
            .collect();
        let known_hosts = bed.dir().join("known_hosts-relay");
        std::fs::write(&known_hosts, text).unwrap();
        Bench {
            bed,
            node,
            relay,
            known_hosts,
        }
    }

    /// The round trips of the connections accepted since `before` connections.
    fn turns_since(&self, before: usize) -> Vec<u32> {
        self.relay.turns()[before..].to_vec()
    }

    async fn nodeup(&self, steps: &Step) -> Vec<u32> {
        let before = self.relay.turns().len();
        let target = existing_machine(self.relay.addr(), "root");
        let options = strict_options(&self.bed, &self.known_hosts);
        let creds = options.credentials().unwrap();
        if let Err(e) = run_steps(&target, steps, &creds, &options).await {
            panic!("{}", nodeup::engine::error_chain(&e.cause));
        }
        self.turns_since(before)
    }

    /// The round trips of [`OPENSSH_RUNS`] runs of the OpenSSH client running `command`.
    fn openssh_runs(&self, command: &str, stdin: Option<&Path>) -> Vec<u32> {
        (0..OPENSSH_RUNS)
            .flat_map(|_| self.openssh(command, stdin))
            .collect()
    }

    /// The OpenSSH client running `command` (with `stdin`) through the relay.
    fn openssh(&self, command: &str, stdin: Option<&Path>) -> Vec<u32> {
        let before = self.relay.turns().len();
        let addr = SocketAddr::new([127, 0, 0, 1].into(), self.relay.addr().port());
        let mut cmd = testbed::openssh(addr, "root", self.bed.client_key(), &self.known_hosts, &[]);
        cmd.arg(command).stdout(Stdio::null());
        if let Some(path) = stdin {
            cmd.stdin(std::fs::File::open(path).unwrap());
        }
        assert_ok(&cmd.output().unwrap());
        self.turns_since(before)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_waits_for_no_more_round_trips_than_openssh_plus_three() {
    let bench = Bench::new().await;
    let payload = bench.bed.dir().join("payload.bin");
    std::fs::write(&payload, b"x").unwrap();
    let key = bench.bed.client_public_key().to_string();

    // Login alone (and the probe command) against OpenSSH logging in and running `true`.
    let login = bench.nodeup(&Step::Multi(Vec::new())).await;
    let openssh_login = bench.openssh_runs("true", None);
    assert_eq!(login.len(), 1, "one connection");
    assert!(
        login[0] <= *openssh_login.iter().min().unwrap(),
        "nodeup's login took {login:?} round trips, OpenSSH's {openssh_login:?}"
    );
    assert!(
        login[0] <= LOGIN_BUDGET,
        "login: {login:?} > {LOGIN_BUDGET}"
    );

    // The 3-step deployment against OpenSSH doing the same work in one command.
    let steps = Step::Multi(vec![
        Step::SshKey(SshKeyStep::new(&key)),
        Step::File(FileStep {
            mode: Some(0o640),
            ..FileStep::new(&payload, "/root/payload.bin")
        }),
        Step::Script(ScriptStep::inline("echo one\necho two\n")),
    ]);
    let deploy = bench.nodeup(&steps).await;
    let floor = bench.openssh_runs(
        &format!(
            "umask 077; mkdir -p ~/.ssh && printf '%s\\n' {} >> ~/.ssh/authorized_keys && \
             cat > /root/floor.bin && sh -c 'echo one; echo two'",
            nodeup::ssh::quote(&key)
        ),
        Some(&payload),
    );
    eprintln!("round trips: nodeup login {login:?}, OpenSSH `true` {openssh_login:?}, nodeup 3 steps {deploy:?}, OpenSSH floor {floor:?}");
    assert_eq!(deploy.len(), 1, "one connection for everything");
    // OpenSSH's own count depends on timing: 10 as a rule, but runs of 9 happen on a loaded
    // machine (3 of 3 in one run), so the comparison allows 3; the exact budget below is what
    // catches a regression of nodeup's.
    assert!(
        deploy[0] <= floor.iter().max().unwrap() + 3,
        "3 steps took {deploy:?} round trips; the floor is {floor:?}"
    );
    assert!(
        deploy[0] <= DEPLOY_BUDGET,
        "3 steps: {deploy:?} > {DEPLOY_BUDGET}"
    );

    // Each further step: a file costs one, a script two.
    let two_more = Step::Multi(vec![
        Step::SshKey(SshKeyStep::new(&key)),
        Step::File(FileStep::new(&payload, "/root/payload.bin")),
        Step::Script(ScriptStep::inline("echo one\necho two\n")),
        Step::File(FileStep::new(&payload, "/root/second.bin")),
        Step::Script(ScriptStep::inline("echo three\n")),
    ]);
    let more = bench.nodeup(&two_more).await;
    eprintln!("round trips: 5 steps {more:?}");
    assert!(
        more[0] <= DEPLOY_BUDGET + 3,
        "a file and a script more took {more:?} round trips, more than {DEPLOY_BUDGET} + 3"
    );

    // The work was done.
    assert_eq!(bench.node.read_file("/root/payload.bin").unwrap(), b"x");
    assert_eq!(bench.node.read_file("/root/second.bin").unwrap(), b"x");
}

/// What a node holds under `dir` whose name starts with `prefix`.
fn entries(node: &TestNode, dir: &str, prefix: &str) -> Vec<String> {
    let out = node
        .exec(&format!(
            "ls -A {dir} 2>/dev/null | grep '^{prefix}' || true"
        ))
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Commands and their input share one stream now: a connection lost in the middle ends the input
/// early, and that must never put half a file in place or run half a script.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_lost_mid_input_leaves_no_half_file_and_runs_no_half_script() {
    let bench = Bench::new().await;
    bench.relay.set_faults(Faults::default());
    let big: Vec<u8> = (0..2 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let local = bench.bed.dir().join("big.bin");
    std::fs::write(&local, &big).unwrap();
    let mut script = String::from("#!/bin/sh\n");
    while script.len() < 1024 * 1024 {
        script.push_str("# a long comment to make the script big enough to be cut short\n");
    }
    script.push_str("touch /root/half-script-ran\n");

    let lose_after = |bytes| {
        bench.relay.set_faults_once(Faults {
            reset_after: Some(bytes),
            ..Faults::default()
        })
    };
    let options = DeployOptions {
        max_tries: 1,
        ..strict_options(&bench.bed, &bench.known_hosts)
    };
    let creds = options.credentials().unwrap();
    let target = existing_machine(bench.relay.addr(), "root");
    for step in [
        Step::File(FileStep::new(&local, "/srv/big.bin")),
        Step::Script(ScriptStep::inline(&script)),
    ] {
        lose_after(400_000);
        let failed = run_steps(&target, &step, &creds, &options).await;
        let failure = failed.expect_err("the connection is lost mid-step");

        assert_eq!(failure.step.map(|s| s.0), Some(1), "{:?}", failure.cause);
    }
    // The node notices the input's early end a moment after the client does.
    let mut left = Vec::new();
    for _ in 0..50 {
        left = entries(&bench.node, "/srv", ".big.bin");
        left.extend(entries(&bench.node, "/root", ".nodeup-"));
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ps = bench.node.exec("ps -ef").unwrap();
    assert!(
        left.is_empty(),
        "temporary files left: {left:?}\n{}",
        String::from_utf8_lossy(&ps.stdout)
    );
    assert!(
        bench.node.metadata("/srv/big.bin").is_err(),
        "no half file in place"
    );
    assert!(
        bench.node.metadata("/root/half-script-ran").is_err(),
        "half a script never runs"
    );
}

/// A server that allows one session per connection (sshd's `MaxSessions 1`) refuses channels made
/// ahead: nodeup then opens one per command, and the deployment still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_session_per_connection_still_deploys() {
    let bed = TestBed::new().unwrap();
    let node = bed
        .node(NodeSpec::new("one-session").sshd("MaxSessions", "1"))
        .await
        .unwrap();
    let payload = bed.dir().join("payload.bin");
    std::fs::write(&payload, b"payload").unwrap();
    let steps = Step::Multi(vec![
        Step::SshKey(SshKeyStep::new(bed.client_public_key())),
        Step::File(FileStep::new(&payload, "/root/payload.bin")),
        Step::Script(ScriptStep::inline("echo ran > /root/ran\n")),
        Step::Script(ScriptStep::inline("exit 3\n")),
    ]);
    let options = strict_options(&bed, node.known_hosts());
    let target = existing_machine(node.addr(), "root");
    let creds = options.credentials().unwrap();
    let failed = run_steps(&target, &steps, &creds, &options)
        .await
        .expect_err("the last script exits 3");
    assert_eq!(failed.completed.len(), 3, "{}", failed.cause);
    assert!(
        failed.cause.to_string().contains("exit status 3"),
        "{}",
        failed.cause
    );
    assert_eq!(node.read_file("/root/payload.bin").unwrap(), b"payload");
    assert_eq!(node.read_file("/root/ran").unwrap(), b"ran\n");
}

/// A script's end is its own through the shell waiting on a ready channel: a signal is a signal,
/// an exit status the same number, not the shell's 128 + N.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_killed_by_a_signal_is_told_from_one_that_exits() {
    let bed = TestBed::new().unwrap();
    let node = bed.node(NodeSpec::new("signals")).await.unwrap();
    let options = strict_options(&bed, node.known_hosts());
    let target = existing_machine(node.addr(), "root");
    let creds = options.credentials().unwrap();
    let ended = |script: &str| {
        let steps = Step::Multi(vec![
            Step::Script(ScriptStep::inline("true")),
            Step::Script(ScriptStep::inline(script)),
        ]);
        let (target, creds, options) = (&target, &creds, &options);
        async move {
            let failed = run_steps(target, &steps, creds, options).await.unwrap_err();
            failed.cause.to_string()
        }
    };
    let killed = ended("kill -TERM $$").await;
    assert!(killed.contains("killed by signal TERM"), "{killed}");
    let exited = ended("exit 143").await;
    assert!(exited.contains("exit status 143"), "{exited}");
    assert!(
        entries(&node, "/root", ".nodeup-").is_empty(),
        "directories removed"
    );
}
