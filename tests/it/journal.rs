//! The journal end to end: deploys killed with SIGKILL at points over their whole life, then
//! `nodeup cleanup --yes` (local nodes, the fake OVH API, SQLite and a real PostgreSQL); name
//! locks; `run` recorded; bad journals refused before anything is created.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;
use testbed::fake_ovh::{FakeOvh, Fault, OvhConfig, OvhFaults, RouteFault};
use testbed::postgres::Postgres;
use testbed::{NodeSpec, TestBed};

use crate::{bed_leftovers, nodeup_on, signal, spawn_until, stderr_of, stdout, write_file};

/// A point to kill a deploy at: after the progress line that contains `marker`, wait `delay_ms`.
type KillPoint = (&'static str, u64);

/// Twenty points over a local deploy's life: in the create call, waiting for the node, logging
/// in, mid-upload, mid-script.
const LOCAL_KILL_POINTS: [KillPoint; 20] = [
    ("creating node", 0),
    ("creating node", 1),
    ("creating node", 3),
    ("creating node", 6),
    ("creating node", 12),
    ("created node", 0),
    ("waiting for the node", 2),
    ("is running at", 0),
    ("is running at", 3),
    ("is running at", 10),
    ("logged in as", 0),
    ("step 1/2: file", 0),
    ("step 1/2: file", 20),
    ("step 1/2: file", 60),
    ("step 1/2: file", 120),
    ("step 1/2: file", 200),
    ("step 2/2: script", 0),
    ("step 2/2: script", 50),
    ("step 2/2: script", 300),
    ("step 2/2: script", 800),
];

/// The size of the file the matrix uploads: big enough that a kill lands mid-upload.
const UPLOAD_BYTES: usize = 48 << 20;

/// A step file for the matrix: a big upload, then a script that runs a while.
fn matrix_stepfile(bed: &TestBed) -> PathBuf {
    let payload = bed.dir().join("payload.bin");
    std::fs::write(&payload, vec![0x5a_u8; UPLOAD_BYTES]).unwrap();
    write_file(
        bed.dir(),
        "matrix.toml",
        "[node]\nprovider = \"local\"\nimage = \"debian\"\n\n[[step]]\nfile = \"payload.bin\"\n\
         target = \"/root/payload.bin\"\n\n[[step]]\ninline = \"sleep 5; echo finished\"\n",
    )
}

/// `nodeup` on the bed with our key and known_hosts, and the journal in `journal` (None: the
/// default SQLite file in the state directory).
fn nodeup(bed: &TestBed, journal: Option<&str>, args: &[&str]) -> Command {
    let mut cmd = nodeup_on(bed, args);
    if let Some(url) = journal {
        cmd.env("NODEUP_JOURNAL", url);
    }
    cmd
}

fn deploy_args<'a>(bed: &'a TestBed, file: &'a Path, name: &'a str) -> Vec<String> {
    vec![
        "deploy".into(),
        file.to_string_lossy().into_owned(),
        "--name".into(),
        name.into(),
        "--key".into(),
        bed.client_key().to_string_lossy().into_owned(),
    ]
}

/// Starts a deploy, kills it with SIGKILL at `point`, and reaps it.
fn kill_at(mut cmd: Command, (marker, delay_ms): KillPoint) {
    let (mut child, seen, _rest) = spawn_until(
        {
            cmd.stdout(std::process::Stdio::null());
            cmd
        },
        marker,
    );
    assert!(
        seen.last().is_some_and(|l| l.contains(marker)),
        "the deploy ended before {marker:?}: {seen:#?}"
    );
    std::thread::sleep(Duration::from_millis(delay_ms));
    signal(&child, libc::SIGKILL);
    let status = child.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL),
        "killed at {marker:?} + {delay_ms} ms, but it ended by itself: {seen:#?}"
    );
}

/// `nodeup cleanup --yes --json`: exits 0, and each orphan's outcome.
fn cleanup(bed: &TestBed, journal: Option<&str>, extra_env: &[(String, String)]) -> Value {
    let mut cmd = nodeup(bed, journal, &["cleanup", "--yes", "--json"]);
    cmd.envs(extra_env.iter().cloned());
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn orphan_count(bed: &TestBed, journal: Option<&str>) -> u64 {
    let out = nodeup(bed, journal, &["journal", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let runs: Value = serde_json::from_slice(&out.stdout).unwrap();
    runs.as_array()
        .unwrap()
        .iter()
        .map(|r| r["orphans"].as_u64().unwrap())
        .sum()
}

/// Runs the local fault matrix with the journal in `journal`: after each kill, cleanup leaves no
/// node, sshd, mount or address claim, and the journal no orphan.
fn local_fault_matrix(bed: &TestBed, journal: Option<&str>) {
    let file = matrix_stepfile(bed);
    for (i, point) in LOCAL_KILL_POINTS.into_iter().enumerate() {
        let name = format!("kill-{i}");
        let args = deploy_args(bed, &file, &name);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        kill_at(nodeup(bed, journal, &args), point);
        let report = cleanup(bed, journal, &[]);
        let nodes = report["nodes"].as_array().unwrap();
        assert_eq!(
            nodes.len(),
            1,
            "one orphan after kill {i} {point:?}: {report}"
        );
        assert_eq!(nodes[0]["name"], name.as_str());
        let result = nodes[0]["result"].as_str().unwrap();
        eprintln!("kill {i} at {point:?}: {result}");
        if i >= 5 {
            // The create had answered: there was a node to destroy.
            assert_eq!(result, "destroyed", "kill {i} {point:?}: {report}");
        } else {
            assert!(["destroyed", "gone"].contains(&result), "{report}");
        }
        let left = bed_leftovers(bed);
        assert!(left.is_empty(), "after kill {i} {point:?}: {left:#?}");
        assert_eq!(orphan_count(bed, journal), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_twenty_points_then_cleanup_leaves_nothing() {
    let bed = TestBed::new().unwrap();
    tokio::task::block_in_place(|| local_fault_matrix(&bed, None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_matrix_with_the_journal_in_postgresql() {
    let pg = Postgres::start().unwrap();
    let bed = TestBed::new().unwrap();
    let url = pg.url();
    tokio::task::block_in_place(|| local_fault_matrix(&bed, Some(&url)));
    // The record is in PostgreSQL, not in the SQLite default.
    assert!(!bed.nodeup_state_dir().join("journal.db").exists());
}

/// The OVH deploys of the matrix: Debian 12 in GRA11 running a script that takes a while.
fn ovh_stepfile(bed: &TestBed) -> PathBuf {
    write_file(
        bed.dir(),
        "ovh.toml",
        "[node]\nprovider = \"ovh\"\nimage = \"Debian 12\"\nsize = \"b2-7\"\nlocation = \"GRA11\"\n\n\
         [[step]]\ninline = \"sleep 5; echo finished\"\n",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_on_the_fake_ovh_api_even_with_the_create_call_in_flight() {
    let bed = TestBed::new().unwrap();
    let fake = FakeOvh::start(bed.driver().clone(), OvhConfig::default())
        .await
        .unwrap();
    let file = ovh_stepfile(&bed);
    let env = fake.env();
    let points: [(KillPoint, bool); 6] = [
        // POST /instance is in flight: the instance exists, its answer is held.
        (("creating node", 400), true),
        (("creating node", 0), false),
        (("created node", 0), false),
        (("is running at", 0), false),
        (("logged in as", 0), false),
        (("step 1/1: script", 300), false),
    ];
    for (i, (point, slow_create)) in points.into_iter().enumerate() {
        let slow = RouteFault::new("POST", "/instance", Fault::SlowAnswer { millis: 3000 }, 1);
        fake.set_faults(OvhFaults {
            routes: if slow_create { vec![slow] } else { vec![] },
            ..Default::default()
        });
        let name = format!("ovh-kill-{i}");
        let args = deploy_args(&bed, &file, &name);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut cmd = nodeup(&bed, None, &args);
        cmd.envs(env.iter().cloned());
        tokio::task::block_in_place(|| kill_at(cmd, point));
        if slow_create {
            assert_eq!(fake.faults_fired().slow_answers, 1);
            assert_eq!(fake.instance_names(), [name.as_str()], "the POST made it");
        }
        let report = tokio::task::block_in_place(|| cleanup(&bed, None, &env));
        let nodes = report["nodes"].as_array().unwrap();
        assert_eq!(nodes.len(), 1, "{report}");
        if slow_create {
            assert_eq!(nodes[0]["result"], "destroyed", "found by name: {report}");
            assert!(nodes[0]["message"].as_str().unwrap().contains("destroyed"));
        }
        assert!(
            fake.instance_names().is_empty(),
            "after kill {i} {point:?}: {:?}",
            fake.instance_names()
        );
    }
    for _ in 0..100 {
        if bed_leftovers(&bed).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(bed_leftovers(&bed).is_empty(), "{:#?}", bed_leftovers(&bed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_deploys_of_one_name_make_one_node_and_the_second_names_the_first() {
    let bed = TestBed::new().unwrap();
    let file = write_file(
        bed.dir(),
        "twice.toml",
        "[node]\nprovider = \"local\"\nimage = \"debian\"\n\n[[step]]\ninline = \"sleep 2\"\n",
    );
    let args = deploy_args(&bed, &file, "twice");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (mut first, _seen, rest) = spawn_until(nodeup(&bed, None, &args), "creating node");
    let second = nodeup(&bed, None, &args).output().unwrap();
    let stderr = stderr_of(&second);
    assert_eq!(second.status.code(), Some(2), "{stderr}");
    let pid = first.id().to_string();
    assert!(
        stderr.contains("node name \"twice\" on local is being deployed by run")
            && stderr.contains(&format!("pid {pid}, since"))
            && stderr.contains("wait for it to finish, or choose another name"),
        "{stderr}"
    );
    for _ in rest {}
    assert!(first.wait().unwrap().success());
    let nodes = nodeup(&bed, None, &["nodes", "list", "--json"])
        .output()
        .unwrap();
    let nodes: Value = serde_json::from_slice(&nodes.stdout).unwrap();
    let names: Vec<&str> = nodes
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["twice"], "exactly one node");
    // The name is free again once the first run ended: a third deploy gets past the lock and
    // meets the node itself.
    let third = nodeup(&bed, None, &args).output().unwrap();
    assert!(
        stderr_of(&third).contains("a local node named \"twice\" exists already"),
        "{}",
        stderr_of(&third)
    );
    let out = nodeup(&bed, None, &["nodes", "destroy", "twice"])
        .output()
        .unwrap();
    crate::assert_ok(&out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_on_two_hosts_is_recorded_with_each_step() {
    let bed = TestBed::new().unwrap();
    let specs = ["audit-a", "audit-b"].map(|n| NodeSpec::new(n).image("cloud-debian"));
    let (nodes, _) = crate::known_nodes(&bed, specs.to_vec()).await;
    let file = write_file(
        bed.dir(),
        "audit.toml",
        "[[step]]\ninline = \"hostname\"\n\n[[step]]\ninline = \"exit 3\"\nexit_codes = [0, 3]\n",
    );
    let hosts: Vec<String> = nodes.iter().map(|n| format!("debian@{}", n.ip())).collect();
    let known_hosts = bed.dir().join("known_hosts");
    let args = [
        "run",
        file.to_str().unwrap(),
        "--host",
        &hosts[0],
        "--host",
        &hosts[1],
        "--key",
        bed.client_key().to_str().unwrap(),
        "--known-hosts",
        known_hosts.to_str().unwrap(),
    ];
    let out = nodeup(&bed, None, &args).output().unwrap();
    crate::assert_ok(&out);
    let runs: Value = serde_json::from_slice(
        &nodeup(&bed, None, &["journal", "--json"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let run = &runs[0];
    assert_eq!(run["command"], "run");
    assert_eq!(run["state"], "done");
    assert_eq!(run["nodes"], 2);
    let id = run["id"].as_str().unwrap();
    // One run in detail, by a prefix of its id.
    let detail = nodeup(&bed, None, &["journal", &id[..6], "--json"])
        .output()
        .unwrap();
    crate::assert_ok(&detail);
    let detail: Value = serde_json::from_slice(&detail.stdout).unwrap();
    assert!(detail["stepfile"].as_str().unwrap().ends_with("audit.toml"));
    assert_eq!(detail["stepfile_hash"].as_str().unwrap().len(), 64);
    let recorded = detail["node_list"].as_array().unwrap();
    assert_eq!(recorded.len(), 2);
    for host in &hosts {
        let node = recorded
            .iter()
            .find(|n| n["name"] == host.as_str())
            .unwrap();
        assert_eq!(node["state"], "done");
        assert_eq!(node["login_user"], "debian");
        assert_eq!(node["orphan"], false);
        let steps = node["results"].as_array().unwrap();
        assert_eq!(steps.len(), 2, "{node}");
        assert_eq!(steps[0]["kind"], "script");
        assert_eq!(steps[0]["status"], "ok");
        assert_eq!(steps[0]["exit_status"], 0);
        assert_eq!(steps[1]["exit_status"], 3);
    }
    // The text view names both hosts and each step.
    let text = stdout(&nodeup(&bed, None, &["journal", id]).output().unwrap());
    for host in &hosts {
        assert!(text.contains(&format!("node {host}")), "{text}");
    }
    assert!(text.contains("step 2 script: ok exit 3"), "{text}");
}

/// Asserts exit 2 with every piece of `expected` in stderr, and that nothing was created.
fn assert_refused(bed: &TestBed, out: &Output, expected: &[&str]) {
    let stderr = stderr_of(out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    for piece in expected {
        assert!(stderr.contains(piece), "expected {piece:?} in {stderr}");
    }
    assert!(!stderr.contains("creating node"), "{stderr}");
    assert!(bed_leftovers(bed).is_empty(), "{:#?}", bed_leftovers(bed));
}

/// A deploy of a node named `never` on the bed: its arguments.
fn never_args(bed: &TestBed) -> Vec<String> {
    let file = write_file(
        bed.dir(),
        "ok.toml",
        "[node]\nprovider = \"local\"\nimage = \"debian\"\n\n[[step]]\ninline = \"true\"\n",
    );
    deploy_args(bed, &file, "never")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_that_is_not_a_database_or_is_newer_is_refused() {
    let bed = TestBed::new().unwrap();
    let args = never_args(&bed);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();

    // Not a database.
    let junk = write_file(
        bed.dir(),
        "junk.db",
        &"this is not a database\n".repeat(200),
    );
    let junk = junk.to_str().unwrap();
    let out = nodeup(&bed, Some(junk), &args).output().unwrap();
    assert_refused(
        &bed,
        &out,
        &[junk, "is not a nodeup journal", "move it away"],
    );

    // Written by a newer nodeup.
    let newer = bed.dir().join("newer.db");
    let newer_str = newer.to_str().unwrap();
    crate::assert_ok(
        &nodeup(&bed, Some(newer_str), &["journal"])
            .output()
            .unwrap(),
    );
    let db = rusqlite::Connection::open(&newer).unwrap();
    db.execute(
        "UPDATE nodeup_meta SET value = '99' WHERE key = 'schema_version'",
        [],
    )
    .unwrap();
    drop(db);
    let out = nodeup(&bed, Some(newer_str), &args).output().unwrap();
    assert_refused(
        &bed,
        &out,
        &[
            newer_str,
            "written by a newer nodeup (schema version 99",
            "upgrade nodeup",
        ],
    );

    // Not a file at all: a device, a FIFO, a directory (exit 2 and the fix, not "disk I/O error").
    let fifo = bed.dir().join("journal.fifo");
    let fifo_c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo(3) on a NUL-terminated path we own.
    assert_eq!(unsafe { libc::mkfifo(fifo_c.as_ptr(), 0o600) }, 0);
    for (path, what) in [
        ("/dev/null", "a character device"),
        (fifo.to_str().unwrap(), "a FIFO"),
        (bed.dir().to_str().unwrap(), "a directory"),
    ] {
        let out = nodeup(&bed, Some(path), &args).output().unwrap();
        assert_refused(&bed, &out, &[path, what, "point NODEUP_JOURNAL at a file"]);
    }

    // A journal cut in half (a full disk, a copy that stopped): damaged, with what to do.
    let cut = bed.dir().join("cut.db");
    let cut_str = cut.to_str().unwrap();
    let db = rusqlite::Connection::open(&newer).unwrap();
    db.execute(
        "UPDATE nodeup_meta SET value = '1' WHERE key = 'schema_version'",
        [],
    )
    .unwrap();
    db.execute_batch("CREATE TABLE filler(x); INSERT INTO filler VALUES (zeroblob(200000));")
        .unwrap();
    drop(db);
    let whole = std::fs::read(&newer).unwrap();
    std::fs::write(&cut, &whole[..whole.len() / 2]).unwrap();
    let out = nodeup(&bed, Some(cut_str), &args).output().unwrap();
    assert_refused(&bed, &out, &[cut_str, "is damaged", "move it away"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_journal_is_refused() {
    let bed = TestBed::new().unwrap();
    let args = never_args(&bed);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // The journal's directory mounted read-only (in a mount namespace of its own, which
    // ends with the process).
    let ro = bed.dir().join("ro");
    std::fs::create_dir(&ro).unwrap();
    crate::assert_ok(
        &nodeup(&bed, Some(ro.join("j.db").to_str().unwrap()), &["journal"])
            .output()
            .unwrap(),
    );
    let ro_db = ro.join("j.db");
    let mut cmd = Command::new("unshare");
    let script = format!(
        "mount --bind {d} {d} && mount -o remount,bind,ro {d} && exec \"$@\"",
        d = ro.display()
    );
    cmd.args(["-m", "--propagation", "private", "sh", "-c", &script, "sh"]);
    cmd.arg(env!("CARGO_BIN_EXE_nodeup")).args(&args);
    cmd.env("NODEUP_STATE_DIR", bed.nodeup_state_dir())
        .env("HOME", bed.dir())
        .env("NODEUP_JOURNAL", &ro_db)
        .stdin(std::process::Stdio::null());
    let out = cmd.output().unwrap();
    assert_refused(
        &bed,
        &out,
        &[
            ro_db.to_str().unwrap(),
            "cannot be written",
            "make it writable",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_postgresql_is_named_without_its_password() {
    let bed = TestBed::new().unwrap();
    let args = never_args(&bed);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://deploy:hunter2secret@127.0.0.1:{port}/nodeup");
    let out = nodeup(&bed, Some(&url), &args).output().unwrap();
    assert_refused(
        &bed,
        &out,
        &[
            &format!("postgres://deploy:***@127.0.0.1:{port}/nodeup"),
            "cannot connect to PostgreSQL",
        ],
    );
    assert!(!stderr_of(&out).contains("hunter2secret"));
    assert!(!bed
        .nodeup_state_dir()
        .join("local/nodes")
        .read_dir()
        .is_ok_and(|mut d| d.next().is_some()));
}

#[tokio::test]
async fn the_config_file_names_the_journal() {
    let bed = TestBed::new().unwrap();
    let team = bed.dir().join("team.db");
    let config = write_file(
        bed.dir(),
        "config.toml",
        &format!("[journal]\nurl = \"sqlite:{}\"\n", team.display()),
    );
    let out = nodeup(&bed, None, &["journal"])
        .env("NODEUP_CONFIG", &config)
        .output()
        .unwrap();
    crate::assert_ok(&out);
    assert!(stdout(&out).contains(&format!("no runs in the journal {}", team.display())));
    assert!(team.exists());

    let bad = write_file(bed.dir(), "bad.toml", "[journal]\nuri = \"x\"\n");
    let out = nodeup(&bed, None, &["journal"])
        .env("NODEUP_CONFIG", &bad)
        .output()
        .unwrap();
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(bad.to_str().unwrap()) && stderr.contains("unknown field `uri`"),
        "{stderr}"
    );
}

/// Eight handles on one journal (as eight nodeup processes would have) race for one name: exactly
/// one wins, the others are told who holds it; none sees "database is locked".
async fn one_winner_among_racers(location: nodeup::journal::Location) {
    use nodeup::journal::{Journal, JournalError, NodeIntent, RunStart};
    let racers = (0..8).map(|_| {
        let journal = Journal::at(location.clone());
        tokio::spawn(async move {
            let run = journal.begin_run(RunStart::default()).await?;
            let intent = NodeIntent {
                provider: Some("dummy".into()),
                name: "contended".into(),
                ..Default::default()
            };
            run.begin_node(&intent, "race").await.map(|_| ())
        })
    });
    let outcomes = futures::future::join_all(racers).await;
    let mut won = 0;
    for outcome in outcomes {
        match outcome.unwrap() {
            Ok(()) => won += 1,
            Err(JournalError::NameLocked(_)) => {}
            Err(e) => panic!("{}", nodeup::error_chain(&e)),
        }
    }
    assert_eq!(won, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_for_one_name_in_sqlite_and_postgresql_one_wins() {
    use nodeup::journal::Location;
    let dir = tempfile::tempdir().unwrap();
    one_winner_among_racers(Location::Sqlite(dir.path().join("race.db"))).await;
    let pg = Postgres::start().unwrap();
    one_winner_among_racers(Location::Postgres(pg.url())).await;
}
