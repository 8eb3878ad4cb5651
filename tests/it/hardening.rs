//! Bad input, careless configuration, signals at awkward moments and concurrent deploys: each is
//! refused before anything is created (exit 2, the input and the fix named), or leaves nothing that
//! nodeup does not name.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use nodeup::driver::NodeDriver;
use testbed::fake_ovh::{FakeOvh, Fault, OvhConfig, OvhFaults, RouteFault};
use testbed::TestBed;

use crate::{
    bed_leftovers, keygen, nodeup_on as nodeup_cmd, signal, spawn_until, stderr_of as stderr,
    write_file as write,
};

const OVH_IMAGE: &str = "Debian 12";

#[track_caller]
fn assert_usage(out: &Output, expected: &[&str]) {
    let text = stderr(out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    for e in expected {
        assert!(text.contains(e), "expected {e:?} in: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_values_are_refused_before_a_local_node_is_created() {
    let bed = TestBed::new().unwrap();
    let dir = bed.dir();
    let key = bed.client_key().to_str().unwrap();
    let head = "[node]\nname = \"never\"\n";
    let bad_pub = write(dir, "bad.pub", "ssh-ed25519 not-base64 x\n");
    let cases: Vec<(String, Vec<&str>, Vec<String>)> = vec![
        (
            format!("{head}[[step]]\ninline = \"echo a\\u0000b\"\n"),
            vec![],
            vec!["NUL byte".into()],
        ),
        (
            format!("{head}[[step]]\ninline = \"true\"\nexit_codes = [0, 256]\n"),
            vec![],
            vec!["256 is not an exit status".into()],
        ),
        (
            format!("{head}[[step]]\ninline = \"true\"\n"),
            vec!["--timeout", "0"],
            vec!["--timeout".into(), "longer than zero".into()],
        ),
        (
            format!("{head}[[step]]\ninline = \"true\"\n"),
            vec!["--max-tries", "0"],
            vec!["--max-tries".into()],
        ),
        (
            format!("{head}[provider]\nfoo = 1\n\n[[step]]\ninline = \"true\"\n"),
            vec![],
            vec![
                "case.toml".into(),
                "[provider] `foo` is unknown".into(),
                "local takes no settings".into(),
            ],
        ),
        (
            format!("{head}[[step]]\nssh-key = \"bad.pub\"\n"),
            vec![],
            vec![
                format!("`ssh-key` {}", bad_pub.display()),
                "does not parse".into(),
            ],
        ),
    ];
    for (text, flags, expected) in cases {
        let file = write(dir, "case.toml", &text);
        let mut args = vec!["deploy", file.to_str().unwrap(), "--key", key];
        args.extend(flags);
        let out = nodeup_cmd(&bed, &args).output().unwrap();
        let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
        assert_usage(&out, &expected);
    }
    assert!(bed.driver().list_nodes().await.unwrap().is_empty());

    // A state directory that is a file: bad configuration (exit 2), named.
    let file = write(
        dir,
        "ok.toml",
        &format!("{head}[[step]]\ninline = \"true\"\n"),
    );
    let not_a_dir = write(dir, "state-file", "");
    let out = nodeup_cmd(&bed, &["deploy", file.to_str().unwrap(), "--key", key])
        .env("NODEUP_STATE_DIR", &not_a_dir)
        .output()
        .unwrap();
    assert_usage(&out, &["NODEUP_STATE_DIR", "state-file"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_files_warn_and_fail_with_the_fix_in_plain_text() {
    let bed = TestBed::new().unwrap();
    let dir = bed.dir();
    let file = write(dir, "s.toml", "[[step]]\ninline = \"true\"\n");
    // An encrypted key and no passphrase: the variable to set, not a flag that does not exist.
    let encrypted = keygen(dir, "enc", "sesame");
    let out = nodeup_cmd(
        &bed,
        &[
            "run",
            file.to_str().unwrap(),
            "--host",
            "127.0.0.1:1",
            "--key",
        ],
    )
    .arg(&encrypted)
    .env_remove("NODEUP_KEY_PASSPHRASE")
    .output()
    .unwrap();
    assert_usage(&out, &["NODEUP_KEY_PASSPHRASE"]);
    assert!(
        !stderr(&out).contains("--key-passphrase"),
        "{}",
        stderr(&out)
    );

    // A key others can read: used, with a warning (no colour codes off a terminal); a refused
    // connection says so.
    let open = dir.join("open_key");
    std::fs::copy(bed.client_key(), &open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = nodeup_cmd(
        &bed,
        &[
            "run",
            file.to_str().unwrap(),
            "--host",
            "127.0.0.1:1",
            "--timeout",
            "1s",
            "--key",
        ],
    )
    .arg(&open)
    .output()
    .unwrap();
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("can be read by others (mode 0644)"), "{text}");
    assert!(text.contains("chmod 600"), "{text}");
    assert!(text.contains("Connection refused"), "{text}");
    assert!(
        !text.contains('\x1b'),
        "colour codes off a terminal: {text:?}"
    );
}

/// A fake OVH API and the environment the binary needs for it.
struct Ovh {
    bed: TestBed,
    fake: FakeOvh,
}

impl Ovh {
    async fn start() -> Ovh {
        let bed = TestBed::new().unwrap();
        let fake = FakeOvh::start(bed.driver().clone(), OvhConfig::default())
            .await
            .unwrap();
        Ovh { bed, fake }
    }

    fn stepfile(&self, name: &str, extra: &str, script: &str) -> PathBuf {
        write(
            self.bed.dir(),
            &format!("{name}.toml"),
            &format!(
                "[node]\nprovider = \"ovh\"\nname = \"{name}\"\nimage = \"{OVH_IMAGE}\"\nsize = \"b2-7\"\nlocation = \"GRA11\"\n{extra}\n[[step]]\ninline = \"{script}\"\n"
            ),
        )
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = nodeup_cmd(&self.bed, args);
        cmd.arg("--key")
            .arg(self.bed.client_key())
            .arg("--known-hosts")
            .arg(self.bed.dir().join("known_hosts"));
        for (k, v) in self.fake.env() {
            cmd.env(k, v);
        }
        cmd
    }

    fn deploy(&self, file: &Path, flags: &[&str]) -> Output {
        let mut args = vec!["deploy", file.to_str().unwrap()];
        args.extend(flags);
        self.cmd(&args).output().unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ovh_configuration_mistakes_are_refused_before_any_call() {
    let o = Ovh::start().await;
    let file = o.stepfile("cfg", "", "true");
    let trace = o.bed.dir().join("trace");
    let f = file.to_str().unwrap();
    let run = |env: &[(&str, &str)]| {
        let mut cmd = o.cmd(&["deploy", f]);
        cmd.env("NODEUP_DEBUG", &trace);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    let out = run(&[("OVH_CLOUD_PROJECT_SERVICE", "../../me")]);
    assert_usage(
        &out,
        &[
            "\"../../me\" is not a Public Cloud project id",
            "nodeup ovh projects",
        ],
    );
    let consumer = format!("{}\n", o.fake.account().consumer_key);
    let out = run(&[("OVH_CONSUMER_KEY", &consumer)]);
    assert_usage(&out, &["OVH_CONSUMER_KEY", "newline"]);
    assert!(!stderr(&out).contains(&o.fake.account().consumer_key));

    let secret = o.stepfile(
        "sec",
        "\n[provider]\napplication_secret = \"s3cret\"\n",
        "true",
    );
    let out = o.deploy(&secret, &[]);
    assert_usage(
        &out,
        &[
            "sec.toml",
            "credentials never go in a step file",
            "OVH_APPLICATION_SECRET",
        ],
    );
    assert!(!stderr(&out).contains("s3cret"));

    // ./ovh.conf that is a directory, then one that is not text: named, not skipped.
    let conf = o.bed.dir().join("ovh.conf");
    std::fs::create_dir(&conf).unwrap();
    assert_usage(&run(&[]), &["ovh.conf: is not a file"]);
    std::fs::remove_dir(&conf).unwrap();
    std::fs::write(&conf, b"[default]\nendpoint=\xff\xfe\n").unwrap();
    assert_usage(&run(&[]), &["ovh.conf: cannot read it as text"]);
    std::fs::remove_file(&conf).unwrap();

    assert_eq!(o.fake.authenticated_requests(), 0, "no API call was made");
    let traced = std::fs::read_to_string(&trace).unwrap_or_default();
    assert!(
        !traced.contains("curl"),
        "no request was even tried: {traced}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ovh_unknown_project_location_and_image_leave_nothing() {
    let o = Ovh::start().await;
    let file = o.stepfile("miss", "", "true");
    let out = o
        .cmd(&["deploy", file.to_str().unwrap()])
        .env("OVH_CLOUD_PROJECT_SERVICE", "deadbeef".repeat(4))
        .output()
        .unwrap();
    assert_usage(
        &out,
        &[
            "project \"deadbeefdeadbeef",
            "was not found",
            "nodeup ovh projects",
        ],
    );
    let out = o.deploy(&file, &["--location", "MARS"]);
    assert_usage(
        &out,
        &["no location \"MARS\"", "GRA11", "nothing was created"],
    );
    let out = o.deploy(&file, &["--image", "nope"]);
    assert_usage(
        &out,
        &["no image \"nope\" in region GRA11", "nothing was created"],
    );
    // A name two images share: ambiguous, both listed with their ids. A size typo: the close one.
    let out = o.deploy(&file, &["--image", testbed::fake_ovh::TWIN_IMAGE]);
    let first = testbed::fake_ovh::image_id(testbed::fake_ovh::TWIN_IMAGE, "GRA11");
    assert_usage(
        &out,
        &[
            "image \"Ubuntu 24.04\" is ambiguous in region GRA11",
            &first,
            "give the id",
        ],
    );
    let out = o.deploy(&file, &["--size", "b2-8"]);
    assert_usage(
        &out,
        &["no size \"b2-8\" in region GRA11; did you mean b2-7"],
    );
    assert!(o.fake.key_names().is_empty(), "no key was imported");
    assert!(o.fake.instance_names().is_empty());

    // `nodeup ovh projects` lists what the credentials reach.
    let mut cmd = nodeup_cmd(&o.bed, &["ovh", "projects"]);
    for (k, v) in o.fake.env() {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        o.fake.account().project
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ovh_a_failed_create_removes_the_key_it_imported() {
    let o = Ovh::start().await;
    o.fake.set_faults(OvhFaults {
        routes: vec![RouteFault::new("POST", "/instance", Fault::Error500, 3)],
        ..Default::default()
    });
    let file = o.stepfile("fails", "", "true");
    let out = o.deploy(&file, &[]);
    let text = stderr(&out);
    assert_ne!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("nothing was created"), "{text}");
    assert_eq!(
        o.fake.faults_fired().error_500,
        3,
        "every create attempt failed"
    );
    assert!(o.fake.instance_names().is_empty());
    assert!(
        o.fake.key_names().is_empty(),
        "the key this run imported is gone: {:?}",
        o.fake.key_names()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ovh_one_name_is_one_instance_and_one_key_serves_concurrent_deploys() {
    let o = Ovh::start().await;
    // Taken before: refused, naming the instance.
    let first = o.stepfile("dup", "", "true");
    assert_eq!(o.deploy(&first, &[]).status.code(), Some(0));
    let out = o.deploy(&first, &[]);
    assert_usage(
        &out,
        &["an instance named \"dup\" exists already in region GRA11"],
    );
    assert_eq!(o.fake.instance_names(), ["dup"]);

    // Two at once with one name: exactly one instance; the other run exits 2 naming the name.
    let twin = o.stepfile("twin", "", "sleep 1");
    let a = o
        .cmd(&["deploy", twin.to_str().unwrap()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let b = o
        .cmd(&["deploy", twin.to_str().unwrap()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let mut codes = [a.status.code(), b.status.code()];
    codes.sort();
    assert_eq!(
        codes,
        [Some(0), Some(2)],
        "{}\n---\n{}",
        stderr(&a),
        stderr(&b)
    );
    let loser = if a.status.code() == Some(2) { &a } else { &b };
    assert!(stderr(loser).contains("\"twin\""), "{}", stderr(loser));
    let twins = o
        .fake
        .instance_names()
        .iter()
        .filter(|n| *n == "twin")
        .count();
    assert_eq!(twins, 1);

    // Two at once with one key and two names: both deploy; the key is imported once and reused.
    let keys_before = o.fake.key_names().len();
    let k1 = o.stepfile("k1", "", "true");
    let k2 = o.stepfile("k2", "", "true");
    // A key nodeup has not imported yet: a fresh one, shared by both runs.
    let key = keygen(o.bed.dir(), "shared_key", "");
    let spawn = |file: &Path| {
        let mut cmd = nodeup_cmd(&o.bed, &["deploy", file.to_str().unwrap(), "--key"]);
        cmd.arg(&key)
            .arg("--known-hosts")
            .arg(o.bed.dir().join("known_hosts"))
            .stderr(Stdio::piped());
        for (k, v) in o.fake.env() {
            cmd.env(k, v);
        }
        cmd.spawn().unwrap()
    };
    let (a, b) = (spawn(&k1), spawn(&k2));
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert_eq!(a.status.code(), Some(0), "{}", stderr(&a));
    assert_eq!(b.status.code(), Some(0), "{}", stderr(&b));
    assert_eq!(
        o.fake.key_names().len(),
        keys_before + 1,
        "{:?}",
        o.fake.key_names()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_quick_sigints_during_create_leave_only_named_nodes() {
    let bed = TestBed::new().unwrap();
    let file = write(
        bed.dir(),
        "slow.toml",
        "[node]\nname = \"race\"\n\n[[step]]\ninline = \"sleep 30\"\n",
    );
    const TRIALS: u64 = 20;
    let mut named_total = 0;
    for trial in 0..TRIALS {
        let spacing = Duration::from_millis(trial % 11);
        let mut cmd = nodeup_cmd(&bed, &["deploy", file.to_str().unwrap(), "--key"]);
        cmd.arg(bed.client_key());
        let (mut child, _, lines) = spawn_until(cmd, "creating node race");
        signal(&child, libc::SIGINT);
        std::thread::sleep(spacing);
        signal(&child, libc::SIGINT);
        let rest: Vec<String> = lines.map_while(Result::ok).collect();
        let status = child.wait().unwrap();
        assert!(!status.success(), "trial {trial}: {rest:?}");
        // Whatever is left was named, with the command that removes it.
        for node in bed.driver().list_nodes().await.unwrap() {
            let named = rest.iter().any(|l| {
                l.contains(&format!(
                    "`nodeup nodes destroy {} --provider local`",
                    node.id
                ))
            });
            assert!(
                named,
                "trial {trial}: node {} left unnamed: {rest:?}",
                node.id
            );
            named_total += 1;
            let out = nodeup_cmd(&bed, &["nodes", "destroy", &node.id])
                .output()
                .unwrap();
            assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        }
        let left = bed_leftovers(&bed);
        assert!(left.is_empty(), "trial {trial} ({spacing:?}): {left:?}");
    }
    eprintln!("{named_total} of {TRIALS} trials left a named node, destroyed as told");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incomplete_or_damaged_node_is_listed_and_destroyable() {
    let bed = TestBed::new().unwrap();
    // A node whose record was damaged while it runs.
    let node = bed.node(testbed::NodeSpec::new("damaged")).await.unwrap();
    let footprint = node.footprint().unwrap();
    let dir = bed.driver().node_dir(node.id());
    std::fs::write(dir.join("node.json"), "{ not json").unwrap();
    // A node directory its creator left before writing any record.
    let half = bed.dir().join("local/nodes/loc-0badc0de");
    std::fs::create_dir_all(half.join("upper")).unwrap();
    std::fs::write(half.join("console.log"), "").unwrap();

    let out = nodeup_cmd(&bed, &["nodes", "list", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let listed: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    for id in [node.id(), "loc-0badc0de"] {
        let entry = listed
            .iter()
            .find(|n| n["id"] == id)
            .unwrap_or_else(|| panic!("{id} not listed: {listed:?}"));
        assert_eq!(entry["state"], "error", "{entry}");
        assert!(entry["extra"]["error"]
            .as_str()
            .unwrap()
            .contains("nodeup nodes destroy"));
        let out = nodeup_cmd(&bed, &["nodes", "destroy", id])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    assert_eq!(
        footprint.leftovers(),
        Vec::<String>::new(),
        "the damaged node's sshd was stopped"
    );
    assert!(bed_leftovers(&bed).is_empty(), "{:?}", bed_leftovers(&bed));
    // An id that is not one names nothing, whatever it looks like.
    let out = nodeup_cmd(&bed, &["nodes", "destroy", "../local"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(bed.dir().join("local").is_dir());
}
