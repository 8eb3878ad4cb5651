//! `nodeup deploy` and `nodeup run` end to end: the binary, the deploy-scripts/ step files, local
//! nodes of a test bed, and what a user would check on the nodes.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use nodeup::driver::NodeDriver;
use nodeup::model::Node;
use serde_json::Value;
use testbed::{NodeSpec, TestBed, TestNode};

use crate::stdout;

fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy-scripts")
}

fn nodeup(bed: &TestBed, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nodeup"))
        .args(args)
        .arg("--key")
        .arg(bed.client_key())
        .arg("--known-hosts")
        .arg(bed.dir().join("known_hosts"))
        .env("NODEUP_STATE_DIR", bed.nodeup_state_dir())
        .env_remove("NODEUP_PROVIDER")
        .output()
        .unwrap()
}

fn deploy_json(bed: &TestBed, stepfile: &Path, name: &str) -> (Value, TestNode) {
    let out = nodeup(
        bed,
        &[
            "deploy",
            stepfile.to_str().unwrap(),
            "--name",
            name,
            "--json",
        ],
    );
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        stdout(&out)
    );
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["ok"], true);
    let node: Node = serde_json::from_value(result["node"].clone()).unwrap();
    assert_eq!(node.name, name);
    (result, bed.adopt(node))
}

fn kinds(result: &Value) -> Vec<&str> {
    result["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["kind"].as_str().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_deploys_a_key_a_file_and_a_script() {
    let bed = TestBed::new().unwrap();
    let (result, node) = deploy_json(&bed, &scripts().join("hello.toml"), "hello-it");
    assert_eq!(
        result["user"], "debian",
        "root is refused; the alternate user works"
    );
    assert_eq!(kinds(&result), ["ssh-key", "file", "script"]);
    // The JSON node is the node the provider has.
    let listed = bed.driver().get_node(&node.node.id).await.unwrap();
    assert_eq!(listed.public_ips, node.node.public_ips);
    assert_eq!(result["node"]["state"], "running");

    let motd = node.metadata("/etc/motd").unwrap();
    assert_eq!((motd.mode() & 0o7777, motd.uid()), (0o644, 0));
    assert_eq!(
        node.read_file("/etc/motd").unwrap(),
        std::fs::read(scripts().join("files/motd")).unwrap()
    );
    let team = std::fs::read_to_string(scripts().join("keys/team.pub")).unwrap();
    let keys =
        String::from_utf8(node.read_file("/home/debian/.ssh/authorized_keys").unwrap()).unwrap();
    assert!(keys.lines().any(|l| l == team.trim()), "{keys}");
    let expected = "hello, world, from hello-it as debian\nhello, and everyone in it, from hello-it as debian\n";
    assert_eq!(result["steps"][2]["stdout"], expected);
    assert_eq!(result["steps"][2]["exit_status"], 0);
    assert_eq!(
        node.read_file("/home/debian/hello.txt").unwrap(),
        expected.as_bytes()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_serves_a_site_checked_with_curl_from_the_host() {
    let bed = TestBed::new().unwrap();
    let (result, node) = deploy_json(&bed, &scripts().join("web.toml"), "web-it");
    assert_eq!(kinds(&result), ["file", "script"]);
    let url = format!("http://{}:8080/", node.ip());
    let curl = Command::new("curl")
        .args(["-sS", "--max-time", "10", &url])
        .output()
        .unwrap();
    assert!(
        curl.status.success(),
        "{}",
        String::from_utf8_lossy(&curl.stderr)
    );
    assert_eq!(
        curl.stdout,
        std::fs::read(scripts().join("site/index.html")).unwrap()
    );
    assert!(result["steps"][1]["stdout"]
        .as_str()
        .unwrap()
        .contains(&url));

    // The server dies with its node.
    let footprint = node.footprint().unwrap();
    bed.driver().destroy_node(&node.node).await.unwrap();
    assert!(
        footprint.leftovers().is_empty(),
        "{:?}",
        footprint.leftovers()
    );
    let curl = Command::new("curl")
        .args(["-sS", "--max-time", "2", &url])
        .output()
        .unwrap();
    assert!(!curl.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_shows_sudo_env_and_accepted_exit_codes() {
    let bed = TestBed::new().unwrap();
    let (result, node) = deploy_json(&bed, &scripts().join("app.toml"), "app-it");
    assert_eq!(kinds(&result), ["script", "script", "script"]);
    assert_eq!(result["steps"][0]["stdout"], "settings written by root\n");
    assert_eq!(
        result["steps"][1]["exit_status"], 3,
        "an accepted exit status"
    );
    assert_eq!(
        result["steps"][2]["stdout"],
        "debian\ncannot write /etc/app.env, as it should be\n"
    );
    assert_eq!(
        node.read_file("/etc/app.env").unwrap(),
        b"APP_ENV=production\nAPP_NAME=my app\n"
    );
    let env = node.metadata("/etc/app.env").unwrap();
    assert_eq!((env.mode() & 0o777, env.uid()), (0o640, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_step_exits_1_and_leaves_no_node_unless_kept() {
    let bed = TestBed::new().unwrap();
    let file = bed.dir().join("failing.toml");
    std::fs::write(
        &file,
        "[node]\nname = \"failing\"\n\n[[step]]\ninline = \"echo ok\"\n\n[[step]]\ninline = \"echo out; echo broken >&2; exit 5\"\n",
    )
    .unwrap();
    let out = nodeup(&bed, &["deploy", file.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("was destroyed"), "{stderr}");
    assert!(
        stderr.contains("step 2 (script)") && stderr.contains("exit status 5"),
        "{stderr}"
    );
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["ok"], false);
    assert_eq!(result["failed_step"]["index"], 2);
    assert_eq!(result["failed_step"]["exit_status"], 5);
    assert_eq!(result["failed_step"]["stderr"], "broken\n");
    assert_eq!(result["steps"].as_array().unwrap().len(), 1);
    assert!(
        bed.driver().list_nodes().await.unwrap().is_empty(),
        "no node is left"
    );
    // It logged in (step 1 ran), so its host key was recorded; destroyed, the key is forgotten.
    let address = result["node"]["public_ips"][0]
        .as_str()
        .unwrap()
        .to_string();
    let known = std::fs::read_to_string(bed.dir().join("known_hosts")).unwrap_or_default();
    assert!(!known.contains(&address), "{known}");

    let out = nodeup(
        &bed,
        &["deploy", file.to_str().unwrap(), "--keep-on-failure"],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("was kept"), "{stderr}");
    let nodes = bed.driver().list_nodes().await.unwrap();
    assert_eq!(nodes.len(), 1);
    assert!(
        stderr.contains(&format!("nodeup nodes destroy {}", nodes[0].id)),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_malformed_step_file_exits_2_and_creates_nothing() {
    let bed = TestBed::new().unwrap();
    let cases = [
        (
            "[node]\nname = \"x\"\n\n[[step]]\ninline = \"true\"\ncolour = \"blue\"\n",
            "bad.toml:6:1: unknown field `colour`",
        ),
        (
            "[[step]]\nfile = \"nowhere.txt\"\ntarget = \"/etc/x\"\n",
            "bad.toml:2:8: step 1: `file`: cannot read",
        ),
        (
            "[[step]]\ninline = \"true\"\ntimeout = \"soon\"\n",
            "bad.toml:3:11: step 1: `timeout`",
        ),
        (
            "[node]\nname = \"x\"\n[[step]]\nscript = \"s.sh\"\nmode = \"0644\"\n",
            "bad.toml:5:8: step 1: `mode` does not apply to a script step",
        ),
    ];
    for (text, expected) in cases {
        let file = bed.dir().join("bad.toml");
        std::fs::write(&file, text).unwrap();
        let out = nodeup(&bed, &["deploy", file.to_str().unwrap(), "--name", "never"]);
        assert_eq!(out.status.code(), Some(2), "{text}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(expected),
            "expected {expected:?} in {stderr}"
        );
    }
    assert!(bed.driver().list_nodes().await.unwrap().is_empty());
    let dirs = std::fs::read_dir(bed.driver().state_dir().join("nodes"))
        .unwrap()
        .count();
    assert_eq!(dirs, 0, "nothing was created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_provisions_two_existing_nodes_at_once() {
    let bed = TestBed::new().unwrap();
    let specs = ["exist-a", "exist-b"].map(|n| NodeSpec::new(n).image("cloud-debian"));
    let (nodes, _) = crate::known_nodes(&bed, specs.to_vec()).await;
    let hosts: Vec<String> = nodes.iter().map(|n| format!("debian@{}", n.ip())).collect();
    let out = nodeup(
        &bed,
        &[
            "run",
            scripts().join("app.toml").to_str().unwrap(),
            "--host",
            &hosts[0],
            "--host",
            &hosts[1],
            "--json",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (report["ok"].as_bool(), report["succeeded"].as_u64()),
        (Some(true), Some(2))
    );
    let results = report["nodes"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    for (result, host) in results.iter().zip(&hosts) {
        assert_eq!(result["host"], host.as_str());
        assert_eq!(result["ok"], true);
        assert_eq!(result["steps"][0]["stdout"], "settings written by root\n");
    }
    for node in &nodes {
        assert_eq!(
            node.read_file("/etc/app.env").unwrap(),
            b"APP_ENV=production\nAPP_NAME=my app\n"
        );
        assert!(
            stderr.contains(&format!("[debian@{}] settings written by root", node.ip())),
            "{stderr}"
        );
    }

    // A host whose key is not known is refused under the strict default.
    std::fs::write(bed.dir().join("known_hosts"), "").unwrap();
    let out = nodeup(
        &bed,
        &[
            "run",
            scripts().join("app.toml").to_str().unwrap(),
            "--host",
            &hosts[0],
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("host-key checking is strict"));
}

/// `reboot = true` in the middle of a 3-step file: the third step runs once, on a new boot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_file_reboots_the_node_between_steps() {
    let bed = TestBed::new().unwrap();
    let boot_id = "cat /proc/sys/kernel/random/boot_id";
    let stepfile = bed.dir().join("reboot.toml");
    std::fs::write(
        &stepfile,
        format!(
            "[node]\nprovider = \"local\"\nimage = \"debian\"\n\n\
             [[step]]\ninline = \"echo a >> /root/runs; {boot_id} > /root/boot-1\"\n\n\
             [[step]]\nreboot = true\ntimeout = \"2m\"\n\n\
             [[step]]\ninline = \"echo b >> /root/runs; {boot_id} > /root/boot-2\"\n"
        ),
    )
    .unwrap();
    let (result, node) = deploy_json(&bed, &stepfile, "cli-rebooter");
    assert_eq!(kinds(&result), ["script", "reboot", "script"]);
    assert_eq!(node.read_file("/root/runs").unwrap(), b"a\nb\n");
    assert_ne!(
        node.read_file("/root/boot-1").unwrap(),
        node.read_file("/root/boot-2").unwrap()
    );
}
