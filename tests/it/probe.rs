//! The defects a probe of bad input and faults found (issue 25, section 4), each as the user met
//! it: endless files, huge ranges, closed pipes, secrets in URLs, odd modes, cancelled runs, racing
//! cleanups, silent waits, links in the log directory. And what follows the seed: a failed step
//! that runs the list again when asked, an endpoint behind a private certificate authority.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use nodeup::driver::NodeDriver;
use testbed::fake_nephoscale::{FakeNephoScale, NephoConfig};
use testbed::{NodeSpec, TestBed, TestNode};

use crate::{nodeup_on, signal, spawn_until, stderr_of, write_file};

/// How long a refusal may take before the command counts as hung.
const REFUSAL_DEADLINE: Duration = Duration::from_secs(20);

/// A password that must never be shown.
const SECRET: &str = "s3cr3t-Zq9";

/// Runs `cmd` to its end, or kills it after [`REFUSAL_DEADLINE`] and fails: what used to hang.
#[track_caller]
fn within_deadline(mut cmd: Command) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > REFUSAL_DEADLINE {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!(
                "still running after {REFUSAL_DEADLINE:?}: {}",
                stderr_of(&out)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// Asserts exit 2 with every piece of `expected` on stderr.
#[track_caller]
fn assert_refused(out: &Output, expected: &[&str]) {
    let text = stderr_of(out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    for piece in expected {
        assert!(text.contains(piece), "expected {piece:?} in: {text}");
    }
    assert!(!text.contains("panicked"), "{text}");
}

/// A step file that does nothing much.
fn noop(bed: &TestBed) -> String {
    write_file(bed.dir(), "noop.toml", "[[step]]\ninline = \"true\"\n")
        .to_string_lossy()
        .into_owned()
}

/// Makes a FIFO at `path`.
fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo(3) on a NUL-terminated path in the test's own directory.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

/// Items 1 and 2: an endless file, a FIFO or a directory given as an inventory, an included
/// config, a key or a cookie file is refused at once, named; so is a range above the bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_and_odd_files_and_huge_ranges_are_refused_at_once() {
    let bed = TestBed::new().unwrap();
    let dir = bed.dir();
    let step = noop(&bed);
    let fifo = dir.join("hosts.fifo");
    mkfifo(&fifo);
    let include = write_file(dir, "include.cfg", "Include /dev/zero\n");
    let identity = write_file(
        dir,
        "identity.cfg",
        "Host box\n  HostName 127.0.0.1\n  IdentityFile /dev/zero\n",
    );
    let keyed = write_file(
        dir,
        "keyed.ini",
        "[web]\nw1 ansible_host=127.0.0.1 ansible_ssh_private_key_file=/dev/zero\n",
    );
    let huge = write_file(dir, "huge.ini", "[web]\nweb[1:99999999999]\n");
    let run = |args: &[&str]| {
        let mut all = vec!["run", step.as_str()];
        all.extend(args);
        within_deadline(nodeup_on(&bed, &all))
    };
    let fifo_s = fifo.to_str().unwrap();
    let dir_s = dir.to_str().unwrap();
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (
            vec!["--inventory", "/dev/zero"],
            vec!["inventory /dev/zero", "a character device"],
        ),
        (vec!["--inventory", fifo_s], vec![fifo_s, "a FIFO"]),
        (vec!["--inventory", dir_s], vec![dir_s, "a directory"]),
        (
            vec!["--host", "box", "-F", include.to_str().unwrap()],
            vec!["/dev/zero", "included from", "a character device"],
        ),
        (
            vec!["--host", "box", "-F", identity.to_str().unwrap()],
            vec!["private key /dev/zero", "a character device"],
        ),
        (
            vec!["--inventory", keyed.to_str().unwrap()],
            vec!["private key /dev/zero", "a character device"],
        ),
        (
            vec!["--inventory", huge.to_str().unwrap()],
            vec!["huge.ini:2", "99999999999 hosts", "more than the 1000000"],
        ),
    ];
    for (args, expected) in cases {
        assert_refused(&run(&args), &expected);
    }

    let mut cmd = nodeup_on(&bed, &["nodes", "list", "--provider", "slipstream"]);
    cmd.env("SLIPSTREAM_ENDPOINT", "http://127.0.0.1:1")
        .env("SLIPSTREAM_COOKIE_FILE", "/dev/zero");
    assert_refused(
        &within_deadline(cmd),
        &["SLIPSTREAM_COOKIE_FILE", "/dev/zero is a character device"],
    );
}

/// Items 10 and 15 (inventories): `--limit` items that select nothing are refused; an inventory
/// with a byte-order mark, host-variable lines and an ungrouped range reads as written, and
/// errors name their line; a YAML inventory is named as such.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventories_read_as_written_and_limits_that_select_nothing_are_refused() {
    let bed = TestBed::new().unwrap();
    let node = bed.node(NodeSpec::new("inv-bom")).await.unwrap();
    let step = write_file(
        bed.dir(),
        "mark.toml",
        "[[step]]\ninline = \"echo \\\"$MARK\\\" > /tmp/mark\"\n[step.env]\nMARK = \"bom\"\n",
    );
    let inventory = write_file(
        bed.dir(),
        "bom.ini",
        &format!(
            "\u{feff}spare[1:3]\n\n[web]\nw1 ansible_host={}\n\n[web:vars]\nansible_user=root\n",
            node.ip()
        ),
    );
    let inventory = inventory.to_str().unwrap();
    let run = |args: &[&str]| {
        let mut cmd = nodeup_on(&bed, &["run", step.to_str().unwrap()]);
        cmd.args(args)
            .arg("--key")
            .arg(bed.client_key())
            .arg("--known-hosts")
            .arg(node.known_hosts());
        within_deadline(cmd)
    };
    let out = run(&["--inventory", inventory, "--limit", "web"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert_eq!(node.read_file("/tmp/mark").unwrap(), b"bom\n");
    let out = run(&["--inventory", inventory, "--limit", "nothere"]);
    assert_refused(&out, &["no machines selected"]);
    assert!(!stderr_of(&out).contains("is not a port"));

    for limit in ["!", ":", ",,", "", "&"] {
        let out = run(&["--inventory", inventory, "--limit", limit]);
        assert_refused(&out, &[&format!("--limit {limit:?}"), "write groups"]);
    }
    for (text, line) in [
        ("[web]\nw1\n\n[web:vars]\nnot a pair\n", "bad.ini:5"),
        (
            "[web]\nw0 ansible_host=127.0.0.1\nw1 ansible_port=http\n",
            "bad.ini:3",
        ),
    ] {
        let bad = write_file(bed.dir(), "bad.ini", text);
        assert_refused(&run(&["--inventory", bad.to_str().unwrap()]), &[line]);
    }
    let yaml = write_file(bed.dir(), "hosts.yml", "all:\n  hosts:\n    w1:\n");
    assert_refused(
        &run(&["--inventory", yaml.to_str().unwrap()]),
        &["hosts.yml:1", "YAML inventory", "INI"],
    );
}

/// Item 3: output to a closed pipe ends quietly (exit 0), to a full device is an error (exit 1);
/// never a panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_pipe_ends_quietly_and_a_full_disk_is_an_error() {
    let bed = TestBed::new().unwrap();
    for args in [
        &["nodes", "list", "--json", "--provider", "local"][..],
        &["journal", "--json"][..],
    ] {
        let mut child = nodeup_on(&bed, args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let text = stderr_of(&out);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {text}");
        assert!(!text.contains("panicked"), "{text}");

        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let out = nodeup_on(&bed, args).stdout(full).output().unwrap();
        let text = stderr_of(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {text}");
        assert!(text.contains("writing to standard output"), "{text}");
        assert!(!text.contains("panicked"), "{text}");
    }
}

/// Items 4 and 5: a password in an endpoint is refused (exit 2) without being shown, even in the
/// debug trace; a journal URL's password is masked; a libpq key=value string is refused and
/// makes no file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_in_endpoints_and_journal_urls_are_never_shown() {
    let bed = TestBed::new().unwrap();
    let with_secret = format!("http://user:{SECRET}@127.0.0.1:1/");
    for (provider, variable) in [
        ("nephoscale", "NEPHOSCALE_ENDPOINT"),
        ("slipstream", "SLIPSTREAM_ENDPOINT"),
        ("ovh", "OVH_ENDPOINT"),
    ] {
        let mut cmd = nodeup_on(&bed, &["nodes", "list", "--provider", provider]);
        cmd.env("NODEUP_DEBUG", "1")
            .env(variable, &with_secret)
            .envs([
                ("NEPHOSCALE_USERNAME", "u"),
                ("NEPHOSCALE_PASSWORD", "p"),
                ("SLIPSTREAM_USERNAME", "u"),
                ("SLIPSTREAM_PASSWORD", "p"),
                ("OVH_APPLICATION_KEY", "ak"),
                ("OVH_APPLICATION_SECRET", "as"),
                ("OVH_CONSUMER_KEY", "ck"),
                ("OVH_CLOUD_PROJECT_SERVICE", "p"),
            ]);
        let out = within_deadline(cmd);
        assert_refused(&out, &[variable, "credentials never go in an endpoint"]);
        assert!(!stderr_of(&out).contains(SECRET), "{}", stderr_of(&out));
    }

    let files_here = || std::fs::read_dir(bed.dir()).unwrap().count();
    let before = files_here();
    for journal in [
        format!("postgres://nodeup@127.0.0.1:1/db?password={SECRET}"),
        format!("postgresql://nodeup:{SECRET}@127.0.0.1:1/db"),
        format!("host=127.0.0.1 port=1 password={SECRET}"),
    ] {
        let mut cmd = nodeup_on(&bed, &["journal"]);
        cmd.env("NODEUP_JOURNAL", &journal);
        let out = within_deadline(cmd);
        let text = stderr_of(&out);
        assert_eq!(out.status.code(), Some(2), "{text}");
        assert!(!text.contains(SECRET), "{text}");
        assert!(text.contains("***"), "{text}");
    }
    assert_eq!(
        files_here(),
        before,
        "no SQLite file named after the string"
    );
}

/// Items 7, 11 and 15 (journal): the journal is 0600 in a 0700 directory and a known_hosts file
/// nodeup makes is 0600; a bare `mode = 644` is octal, as chmod reads it; journal ids are hex
/// (`%` and `_` are not wildcards) and `--limit 0` is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_files_octal_modes_and_journal_queries() {
    use std::os::unix::fs::PermissionsExt;
    let bed = TestBed::new().unwrap();
    let node = bed.node(NodeSpec::new("modes")).await.unwrap();
    write_file(bed.dir(), "payload.txt", "payload\n");
    let step = write_file(
        bed.dir(),
        "mode.toml",
        "[[step]]\nfile = \"payload.txt\"\ntarget = \"/root/payload.txt\"\nmode = 644\n",
    );
    let known_hosts = bed.dir().join("fresh").join("known_hosts");
    let host = format!("root@{}", node.ip());
    let state = bed.dir().join("new-state");
    let out = nodeup_on(&bed, &["run", step.to_str().unwrap(), "--host", &host])
        .env("NODEUP_STATE_DIR", &state)
        .arg("--key")
        .arg(bed.client_key())
        .arg("--known-hosts")
        .arg(&known_hosts)
        .args(["--host-key-policy", "accept-new"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o7777;
    let on_node = node.metadata("/root/payload.txt").unwrap();
    assert_eq!(on_node.permissions().mode() & 0o7777, 0o644);
    assert_eq!(mode(&known_hosts), 0o600);
    assert_eq!(mode(&state.join("journal.db")), 0o600);
    assert_eq!(mode(&state), 0o700);

    for id in ["%", "_"] {
        let out = nodeup_on(&bed, &["journal", id])
            .env("NODEUP_STATE_DIR", &state)
            .output()
            .unwrap();
        assert_refused(&out, &["hex digits"]);
    }
    let out = nodeup_on(&bed, &["journal", "--limit", "0"])
        .output()
        .unwrap();
    assert_refused(&out, &["--limit"]);
    let listed = nodeup_on(&bed, &["journal", "--json"])
        .env("NODEUP_STATE_DIR", &state)
        .output()
        .unwrap();
    let runs: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(runs.as_array().unwrap().len(), 1, "the run is there");
}

/// Items 8 and 12: Ctrl+C or SIGTERM on `run` ends the scripts on every node and removes their
/// directories (with dash as the nodes' sh); the summary counts the hosts as not run, not failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_run_ends_the_remote_scripts_and_removes_their_directories() {
    let bed = TestBed::new().unwrap();
    let (nodes, known_hosts) = crate::known_nodes(
        &bed,
        vec![NodeSpec::new("cancel-a"), NodeSpec::new("cancel-b")],
    )
    .await;
    let step = write_file(
        bed.dir(),
        "long.toml",
        "[[step]]\ninline = \"echo started; sleep 271\"\n",
    );
    for sig in [libc::SIGINT, libc::SIGTERM] {
        let mut cmd = nodeup_on(&bed, &["run", step.to_str().unwrap(), "--follow"]);
        for node in &nodes {
            cmd.arg("--host").arg(format!("root@{}", node.ip()));
        }
        cmd.arg("--key")
            .arg(bed.client_key())
            .arg("--known-hosts")
            .arg(&known_hosts);
        let (mut child, _, mut rest) = spawn_until(cmd, "started");
        for line in rest.by_ref() {
            if line.unwrap().contains("started") {
                break;
            }
        }
        signal(&child, sig);
        let tail: Vec<String> = rest.map_while(Result::ok).collect();
        assert_eq!(child.wait().unwrap().code(), Some(1), "{tail:#?}");
        let summary = tail.join("\n");
        assert!(summary.contains("0 failed, 2 not run"), "{summary}");
        assert!(!summary.contains("hosts failed"), "{summary}");
        for node in &nodes {
            let out = node
                .exec("pgrep -f 'slee[p] 271'; ls -a /root /tmp | grep nodeup-")
                .unwrap();
            assert_eq!(
                crate::stdout(&out),
                "",
                "left on {} (signal {sig})",
                node.ip()
            );
        }
    }
}

/// Item 9: two `cleanup --yes` at once both finish (exit 0), the orphan is destroyed once and
/// recorded as destroyed, and nothing is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_cleanups_at_once_both_finish_and_the_orphan_is_gone() {
    let bed = TestBed::new().unwrap();
    let step = write_file(
        bed.dir(),
        "orphan.toml",
        "[node]\nprovider = \"local\"\nimage = \"debian\"\nname = \"orphan\"\n\n\
         [[step]]\ninline = \"sleep 60\"\n",
    );
    let mut deploy = nodeup_on(&bed, &["deploy", step.to_str().unwrap()]);
    deploy.arg("--key").arg(bed.client_key());
    let (mut child, _, _rest) = spawn_until(deploy, "step 1/1: script");
    signal(&child, libc::SIGKILL);
    child.wait().unwrap();
    assert_eq!(bed.driver().list_nodes().await.unwrap().len(), 1);

    let cleanups: Vec<std::process::Child> = (0..2)
        .map(|_| {
            nodeup_on(&bed, &["cleanup", "--yes"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for cleanup in cleanups {
        let out = cleanup.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    }
    assert!(bed.driver().list_nodes().await.unwrap().is_empty());
    let out = nodeup_on(&bed, &["journal", "--json"]).output().unwrap();
    let runs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(runs[0]["orphans"], 0, "{runs}");
    let id = runs[0]["id"].as_str().unwrap();
    let out = nodeup_on(&bed, &["journal", id, "--json"])
        .output()
        .unwrap();
    let run: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(run["node_list"][0]["state"], "destroyed", "{run}");
    assert!(crate::bed_leftovers(&bed).is_empty());
}

/// Items 12, 13 and 15 (flags): a huge `--count` is refused before anything is made, a bad
/// `--name` is blamed on the name, not the step file; a login that keeps being refused says so
/// while it waits; `Port 0` is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_names_waits_and_port_zero_are_said_plainly() {
    let bed = TestBed::new().unwrap();
    let step = write_file(
        bed.dir(),
        "local.toml",
        "[node]\nprovider = \"local\"\nimage = \"debian\"\n\n[[step]]\ninline = \"true\"\n",
    );
    let step = step.to_str().unwrap();
    let out = nodeup_on(
        &bed,
        &["deploy", step, "--name", "web", "--count", "100000"],
    )
    .output()
    .unwrap();
    assert_refused(&out, &["--count", "more than the 10000"]);
    let out = nodeup_on(&bed, &["deploy", step, "--name", "bad name!"])
        .arg("--key")
        .arg(bed.client_key())
        .output()
        .unwrap();
    assert_refused(
        &out,
        &[
            "\"bad name!\"",
            "not a valid hostname",
            "nothing was created",
        ],
    );
    assert!(
        !stderr_of(&out).contains("local.toml"),
        "{}",
        stderr_of(&out)
    );
    assert!(bed.driver().list_nodes().await.unwrap().is_empty());

    let mut cmd = nodeup_on(&bed, &["run", step, "--host", "root@127.0.0.1:1"]);
    cmd.arg("--key").arg(bed.client_key());
    let asked = Instant::now();
    let (mut child, seen, _rest) = spawn_until(cmd, "trying again");
    let said = seen.join("\n");
    assert!(
        said.contains("127.0.0.1:1") && said.contains("Connection refused"),
        "{said}"
    );
    assert!(asked.elapsed() < REFUSAL_DEADLINE, "said at once: {said}");
    signal(&child, libc::SIGINT);
    assert_eq!(child.wait().unwrap().code(), Some(1));

    let config = write_file(
        bed.dir(),
        "port0.cfg",
        "Host zero\n  HostName 127.0.0.1\n  Port 0\n",
    );
    let out = within_deadline(nodeup_on(
        &bed,
        &[
            "run",
            step,
            "--host",
            "zero",
            "-F",
            config.to_str().unwrap(),
        ],
    ));
    assert_refused(&out, &["Port 0", "from 1 to 65535"]);
}

/// Item 14: a node's log in `--log-dir` that is a link is not followed, and that is said.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_in_the_log_dir_is_not_followed_and_is_said() {
    let bed = TestBed::new().unwrap();
    let node = bed.node(NodeSpec::new("logged")).await.unwrap();
    let logs = bed.dir().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let elsewhere = write_file(bed.dir(), "elsewhere.txt", "untouched\n");
    let host = format!("root@{}", node.ip());
    std::os::unix::fs::symlink(&elsewhere, logs.join(format!("{host}.log"))).unwrap();
    let step = write_file(
        bed.dir(),
        "echo.toml",
        "[[step]]\ninline = \"echo hello\"\n",
    );
    let out = nodeup_on(&bed, &["run", step.to_str().unwrap(), "--host", &host])
        .arg("--log-dir")
        .arg(&logs)
        .arg("--key")
        .arg(bed.client_key())
        .arg("--known-hosts")
        .arg(node.known_hosts())
        .output()
        .unwrap();
    let text = stderr_of(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("--log-dir") && text.contains("symbolic link"),
        "{text}"
    );
    assert_eq!(
        text.matches("symbolic link").count(),
        1,
        "warned once: {text}"
    );
    assert_eq!(std::fs::read_to_string(&elsewhere).unwrap(), "untouched\n");
}

/// `--retry-failed-steps` (and `[ssh] retry_failed_steps`): a failed step runs the whole list
/// again, up to `--max-tries` runs; without it a failed step fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_failed_steps_runs_the_list_again() {
    let bed = TestBed::new().unwrap();
    let node: TestNode = bed.node(NodeSpec::new("flaky")).await.unwrap();
    let flaky = |marker: &str, ssh: &str| {
        write_file(
            bed.dir(),
            &format!("{marker}.toml"),
            &format!(
                "{ssh}[[step]]\ninline = \"echo run >> /root/{marker}.runs\"\n\n[[step]]\n\
                 inline = \"[ -e /root/{marker} ] || {{ touch /root/{marker}; exit 3; }}\"\n"
            ),
        )
    };
    let host = format!("root@{}", node.ip());
    let run = |file: &Path, flags: &[&str]| {
        nodeup_on(&bed, &["run", file.to_str().unwrap(), "--host", &host])
            .args(flags)
            .arg("--key")
            .arg(bed.client_key())
            .arg("--known-hosts")
            .arg(node.known_hosts())
            .output()
            .unwrap()
    };
    let runs = |marker: &str| {
        String::from_utf8(node.read_file(&format!("/root/{marker}.runs")).unwrap())
            .unwrap()
            .lines()
            .count()
    };
    let out = run(&flaky("plain", ""), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    assert_eq!(runs("plain"), 1);

    let out = run(
        &flaky("flag", ""),
        &["--retry-failed-steps", "--max-tries", "2"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert_eq!(runs("flag"), 2, "the whole list ran again");

    let keyed = flaky(
        "keyed",
        "[ssh]\nretry_failed_steps = true\nmax_tries = 2\n\n",
    );
    let out = run(&keyed, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert_eq!(runs("keyed"), 2);
}

/// An endpoint behind a private certificate authority: refused with the hint, trusted through
/// `SSL_CERT_FILE`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_certificate_authority_is_trusted_through_ssl_cert_file() {
    let bed = TestBed::new().unwrap();
    let fake = FakeNephoScale::start(bed.driver().clone(), NephoConfig::default())
        .await
        .unwrap();
    let front = testbed::tls::TlsFront::start(fake.addr()).await.unwrap();
    let mut env: Vec<(String, String)> = fake
        .env()
        .into_iter()
        .filter(|(k, _)| k != "NEPHOSCALE_ENDPOINT")
        .collect();
    env.push(("NEPHOSCALE_ENDPOINT".into(), front.url()));
    let list = ["nodes", "list", "--provider", "nephoscale", "--json"];
    let out = crate::nodeup_with(&bed, &env, &list);
    let text = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("SSL_CERT_FILE"), "{text}");

    env.push((
        "SSL_CERT_FILE".into(),
        front.ca_file().to_string_lossy().into_owned(),
    ));
    let out = crate::nodeup_with(&bed, &env, &list);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert_eq!(crate::stdout(&out).trim(), "[]");
}
