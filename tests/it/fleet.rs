//! Fleets on local nodes (real sshd): `deploy --count` with its failure policies and Ctrl+C,
//! `run` from inventories (a plain list, Ansible INI with --limit) and a provider's nodes, shards,
//! bounded connections counted at relays, the live view in a terminal, shared list calls, and a
//! 429 that slows a whole client.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use testbed::{Faults, Gauge, NodeSpec, Relay, TestBed, TestNode};

use crate::{bed_leftovers, nodeup_on, signal, stderr_of, write_file};

/// A step file for a fleet of `count` local debian nodes named `name`, running `script`.
fn fleet_file(bed: &TestBed, name: &str, count: usize, script: &str) -> PathBuf {
    write_file(
        bed.dir(),
        "fleet.toml",
        &format!(
            "[node]\nprovider = \"local\"\nname = \"{name}\"\nimage = \"debian\"\ncount = {count}\n\n\
             [[step]]\ninline = '''{script}'''\n"
        ),
    )
}

fn nodeup(bed: &TestBed, args: &[&str]) -> Command {
    let mut cmd = nodeup_on(bed, args);
    cmd.arg("--key").arg(bed.client_key());
    cmd
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", crate::stdout(out), stderr_of(out)))
}

async fn node_names(bed: &TestBed) -> Vec<String> {
    use nodeup::driver::NodeDriver;
    let mut names: Vec<String> = bed
        .driver()
        .list_nodes()
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.name)
        .collect();
    names.sort();
    names
}

fn field<'a>(report: &'a Value, key: &str) -> Vec<&'a str> {
    report["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n[key].as_str().unwrap_or(""))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_count_five_makes_five_named_provisioned_nodes_and_a_summary() {
    let bed = TestBed::new().unwrap();
    let file = fleet_file(
        &bed,
        "web-{index:02}",
        1,
        "hostname > /etc/fleet-name; echo provisioned $(hostname)",
    );
    let logs = bed.dir().join("logs");
    let out = nodeup(
        &bed,
        &[
            "deploy",
            file.to_str().unwrap(),
            "--count",
            "5",
            "--json",
            "--log-dir",
            logs.to_str().unwrap(),
        ],
    )
    .output()
    .unwrap();
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let report = json(&out);
    assert_eq!(
        (report["total"].as_u64(), report["succeeded"].as_u64()),
        (Some(5), Some(5))
    );
    let names = ["web-01", "web-02", "web-03", "web-04", "web-05"];
    assert_eq!(field(&report, "name"), names);
    assert_eq!(field(&report, "fate"), ["stays"; 5]);
    assert_eq!(node_names(&bed).await, names);
    for entry in report["nodes"].as_array().unwrap() {
        let node: nodeup::model::Node = serde_json::from_value(entry["node"].clone()).unwrap();
        let name = node.name.clone();
        let node = bed.adopt(node);
        assert_eq!(
            node.read_file("/etc/fleet-name").unwrap(),
            format!("{name}\n").as_bytes()
        );
    }
    // Not a terminal: plain lines prefixed by the node, then the table and the counts.
    assert!(stderr.contains("[web-03] creating node web-03"), "{stderr}");
    assert!(stderr.contains("NODE    ADDRESS"), "{stderr}");
    assert!(
        stderr.contains("5 nodes: 5 ok, 0 failed, 0 not run"),
        "{stderr}"
    );
    // Each node's progress and output in a log of its own, readable by its owner only.
    let log = logs.join("web-03.log");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("step 1/1: script") && text.contains("provisioned web-03\n"),
        "{text}"
    );
    assert!(!text.contains("web-02"), "{text}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&log).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // The fleet is one run of the journal, with five nodes.
    let runs = json(&nodeup_on(&bed, &["journal", "--json"]).output().unwrap());
    assert_eq!(runs[0]["nodes"], 5);
    assert_eq!(runs[0]["state"], "done");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_five_failing_is_destroyed_and_the_others_stay() {
    let bed = TestBed::new().unwrap();
    let script = "[ \"$(hostname)\" != web-3 ] || { echo 'disk full' >&2; exit 4; }";
    let file = fleet_file(&bed, "web", 5, script);
    let out = nodeup(&bed, &["deploy", file.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let report = json(&out);
    assert_eq!(report["failed"], 1);
    let failed = &report["nodes"][2];
    assert_eq!(
        (failed["name"].as_str(), failed["fate"].as_str()),
        (Some("web-3"), Some("destroyed"))
    );
    assert_eq!(failed["failed_step"]["exit_status"], 4);
    assert_eq!(node_names(&bed).await, ["web-1", "web-2", "web-4", "web-5"]);
    assert!(
        stderr.contains("failed (destroyed)") && stderr.contains("| disk full"),
        "{stderr}"
    );
    assert!(stderr.contains("error: 1 of 5 nodes failed"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_failures_zero_starts_nothing_new_and_cancels_what_is_in_flight() {
    let bed = TestBed::new().unwrap();
    let file = fleet_file(
        &bed,
        "web",
        5,
        "[ \"$(hostname)\" != web-1 ] || exit 3; sleep 20",
    );
    let args = [
        file.to_str().unwrap(),
        "--parallel",
        "2",
        "--max-failures",
        "0",
        "--json",
    ];
    let out = nodeup(&bed, &[&["deploy"], &args[..]].concat())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    let report = json(&out);
    assert_eq!(
        field(&report, "fate"),
        [
            "destroyed",
            "destroyed",
            "not-created",
            "not-created",
            "not-created"
        ]
    );
    assert_eq!(report["not_run"], 3);
    assert!(node_names(&bed).await.is_empty());
    assert!(bed_leftovers(&bed).is_empty(), "{:#?}", bed_leftovers(&bed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_or_nothing_destroys_the_nodes_that_succeeded_too() {
    let bed = TestBed::new().unwrap();
    let file = fleet_file(
        &bed,
        "web",
        3,
        "[ \"$(hostname)\" != web-3 ] || { sleep 3; exit 3; }",
    );
    let out = nodeup(
        &bed,
        &[
            "deploy",
            file.to_str().unwrap(),
            "--all-or-nothing",
            "--json",
        ],
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    let report = json(&out);
    assert_eq!(field(&report, "fate"), ["destroyed"; 3]);
    assert_eq!(report["nodes"][0]["ok"], false, "undone");
    assert!(stderr_of(&out).contains("undone (destroyed)"));
    assert!(node_names(&bed).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_on_a_fleet_leaves_nothing() {
    let bed = TestBed::new().unwrap();
    let file = fleet_file(&bed, "web", 4, "sleep 60");
    let mut child = nodeup(&bed, &["deploy", file.to_str().unwrap()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut running = 0;
    for line in lines.by_ref() {
        if line.unwrap().contains("step 1/1: script") {
            running += 1;
            if running == 4 {
                break;
            }
        }
    }
    signal(&child, libc::SIGINT);
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert_eq!(child.wait().unwrap().code(), Some(1), "{rest:#?}");
    assert!(node_names(&bed).await.is_empty());
    assert!(bed_leftovers(&bed).is_empty(), "{:#?}", bed_leftovers(&bed));
}

/// Three debian nodes, and a known_hosts file that lists them.
async fn three_nodes(bed: &TestBed, names: [&str; 3]) -> (Vec<TestNode>, PathBuf) {
    crate::known_nodes(bed, names.map(NodeSpec::new).to_vec()).await
}

fn ran(node: &TestNode, marker: &str) -> bool {
    node.read_file(marker).is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_takes_a_plain_list_and_an_ansible_inventory_with_limit() {
    let bed = TestBed::new().unwrap();
    let (nodes, known_hosts) = three_nodes(&bed, ["inv-a", "inv-b", "inv-c"]).await;
    let known = known_hosts.to_str().unwrap();
    let plain = write_file(
        bed.dir(),
        "hosts.txt",
        &format!(
            "# two of them\nroot@{}\nroot@{}:22\n",
            nodes[0].ip(),
            nodes[1].ip()
        ),
    );
    let step = write_file(
        bed.dir(),
        "mark.toml",
        "[[step]]\ninline = \"touch /tmp/ran-$MARK\"\n[step.env]\nMARK = \"plain\"\n",
    );
    let out = nodeup(
        &bed,
        &[
            "run",
            step.to_str().unwrap(),
            "--inventory",
            plain.to_str().unwrap(),
            "--known-hosts",
            known,
        ],
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let marks: Vec<bool> = nodes.iter().map(|n| ran(n, "/tmp/ran-plain")).collect();
    assert_eq!(marks, [true, true, false]);

    // Ansible INI: groups, [group:vars], [all:vars] with the key file, --limit; no --key given.
    let ini = write_file(
        bed.dir(),
        "hosts.ini",
        &format!(
            "[web]\nw1 ansible_host={}\nw2 ansible_host={} ansible_port=22\n\n[db]\nd1 ansible_host={}\n\n\
             [web:vars]\nansible_user=root\n\n[all:vars]\nansible_user=root\nansible_ssh_private_key_file={}\n",
            nodes[0].ip(),
            nodes[1].ip(),
            nodes[2].ip(),
            bed.client_key().display()
        ),
    );
    let step = write_file(
        bed.dir(),
        "ini.toml",
        "[[step]]\ninline = \"touch /tmp/ran-ini\"\n",
    );
    let args = [
        "run",
        step.to_str().unwrap(),
        "--inventory",
        ini.to_str().unwrap(),
        "--limit",
        "web:!w2,db",
        "--known-hosts",
        known,
        "--json",
    ];
    let out = nodeup_on(&bed, &args).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert_eq!(field(&json(&out), "host"), ["w1", "d1"]);
    let marks: Vec<bool> = nodes.iter().map(|n| ran(n, "/tmp/ran-ini")).collect();
    assert_eq!(marks, [true, false, true]);

    // A bad inventory line is named, and nothing runs.
    let bad = write_file(bed.dir(), "bad.ini", "[web]\nw1 ansible_host\n");
    let out = nodeup(
        &bed,
        &[
            "run",
            step.to_str().unwrap(),
            "--inventory",
            bad.to_str().unwrap(),
        ],
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr_of(&out).contains("bad.ini:2: \"ansible_host\" is not key=value"),
        "{}",
        stderr_of(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_on_a_providers_nodes_by_glob() {
    let bed = TestBed::new().unwrap();
    let (nodes, _) = three_nodes(&bed, ["web-a", "web-b", "db-a"]).await;
    let step = write_file(
        bed.dir(),
        "glob.toml",
        "[[step]]\ninline = \"touch /tmp/ran-glob\"\n",
    );
    // Host keys come from the provider: no known_hosts given.
    let out = nodeup(
        &bed,
        &[
            "run",
            step.to_str().unwrap(),
            "--nodes",
            "local:web-*",
            "--json",
        ],
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let mut hosts = field(&json(&out), "host")
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
    hosts.sort();
    assert_eq!(hosts, ["web-a", "web-b"]);
    let marks: Vec<bool> = nodes.iter().map(|n| ran(n, "/tmp/ran-glob")).collect();
    assert_eq!(marks, [true, true, false]);
}

/// A free TCP port on every address.
fn free_port() -> u16 {
    std::net::TcpListener::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_cover_the_inventory_exactly_once() {
    let bed = TestBed::new().unwrap();
    // One sshd on 0.0.0.0 answers on every 127.x.y.z: seven hosts, one node.
    let port = free_port();
    let _node = bed
        .node(
            NodeSpec::new("anywhere")
                .sshd("ListenAddress", &format!("0.0.0.0:{port}"))
                .port(port),
        )
        .await
        .unwrap();
    let hosts: Vec<String> = (1..=7)
        .map(|i| format!("root@127.0.9.{i}:{port}"))
        .collect();
    let inventory = write_file(bed.dir(), "seven.txt", &hosts.join("\n"));
    let step = write_file(bed.dir(), "echo.toml", "[[step]]\ninline = \"true\"\n");
    let known = bed.dir().join("shard_known");
    let mut seen: Vec<String> = Vec::new();
    for k in 1..=3 {
        let shard = format!("{k}/3");
        let args = [
            "run",
            step.to_str().unwrap(),
            "--inventory",
            inventory.to_str().unwrap(),
            "--shard",
            &shard,
            "--host-key-policy",
            "accept-new",
            "--known-hosts",
            known.to_str().unwrap(),
            "--json",
        ];
        let out = nodeup(&bed, &args).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
        let part: Vec<String> = field(&json(&out), "host")
            .into_iter()
            .map(String::from)
            .collect();
        assert!(!part.is_empty());
        seen.extend(part);
    }
    seen.sort();
    let mut all = hosts.clone();
    all.sort();
    assert_eq!(seen, all, "every host once");
}

/// How long a client's close may take to be seen at the relay.
const CLOSE_SEEN: Duration = Duration::from_millis(50);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_two_never_has_more_than_two_connections_open() {
    let bed = TestBed::new().unwrap();
    let node = bed.node(NodeSpec::new("behind-relays")).await.unwrap();
    let gauge = Gauge::default();
    let mut relays = Vec::new();
    for _ in 0..6 {
        relays.push(
            Relay::start_counted(node.addr(), gauge.clone())
                .await
                .unwrap(),
        );
    }
    // Under load, a connection reset during the banner exchange is retried.
    relays[0].set_faults_once(Faults {
        reset_after: Some(10),
        ..Default::default()
    });
    let inventory: Vec<String> = relays
        .iter()
        .map(|r| format!("root@{}", r.addr()))
        .collect();
    let inventory = write_file(bed.dir(), "relayed.txt", &inventory.join("\n"));
    let step = write_file(bed.dir(), "slow.toml", "[[step]]\ninline = \"sleep 0.4\"\n");
    let known = bed.dir().join("relay_known");
    let args = [
        "run",
        step.to_str().unwrap(),
        "--inventory",
        inventory.to_str().unwrap(),
        "--parallel",
        "2",
        "--host-key-policy",
        "accept-new",
        "--known-hosts",
        known.to_str().unwrap(),
    ];
    let out = nodeup(&bed, &args).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    // A close takes a moment to reach the relay; a third connection for the 0.4 s script would
    // overlap the others far longer than that.
    assert_eq!(
        gauge.peak(CLOSE_SEEN),
        2,
        "at most two at once, and two were used"
    );
    assert_eq!(gauge.open(), 0);
    assert_eq!(
        relays[0].accepted(),
        2,
        "the reset connection was tried again"
    );
    assert!(relays[1..].iter().all(|r| r.accepted() == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_shows_the_live_view_then_the_summary() {
    let bed = TestBed::new().unwrap();
    let file = fleet_file(&bed, "tty-{index:02}", 20, "sleep 5");
    let socket = format!("nodeup-test-{}", std::process::id());
    let tmux = |args: &[&str]| {
        Command::new("tmux")
            .args(["-L", &socket])
            .args(args)
            .output()
            .unwrap()
    };
    let _server = KillTmux(socket.clone());
    let command = format!(
        "NODEUP_STATE_DIR={} HOME={} {} deploy {} --key {} --parallel 20; sleep 60",
        bed.nodeup_state_dir().display(),
        bed.dir().display(),
        env!("CARGO_BIN_EXE_nodeup"),
        file.display(),
        bed.client_key().display()
    );
    let started = tmux(&["new-session", "-d", "-x", "160", "-y", "50", &command]);
    assert!(started.status.success(), "{}", stderr_of(&started));
    let capture = || String::from_utf8_lossy(&tmux(&["capture-pane", "-p"]).stdout).into_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut live = String::new();
    while Instant::now() < deadline {
        live = capture();
        if live.contains("/20 ") && live.contains(": step 1/1: script") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // The bar with the counts by phase, and lines of nodes in flight.
    assert!(
        live.contains("/20 ") && live.contains("provisioning "),
        "{live}"
    );
    assert!(
        live.contains("tty-") && live.contains("step 1/1: script"),
        "{live}"
    );
    let mut end = String::new();
    while Instant::now() < deadline {
        end = capture();
        if end.contains("20 nodes:") {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        end.contains("20 nodes: 20 ok, 0 failed, 0 not run"),
        "{end}"
    );
    assert!(end.contains("20/20"), "the bar ends full: {end}");
    let out = nodeup_on(&bed, &["nodes", "list"]).output().unwrap();
    assert_eq!(crate::stdout(&out).matches("tty-").count(), 20);
}

/// Ends the test's own tmux server, also when the test fails.
struct KillTmux(String);

impl Drop for KillTmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.0, "kill-server"])
            .output();
    }
}

/// A driver that counts list calls. Its creates return together, once all of a fleet's are
/// done (`together`), so that what is counted is the sharing of the waits, not how far apart a
/// loaded machine spreads the creates (each create returning after the last list makes a
/// fresh one, rightly).
struct Counting {
    inner: nodeup::providers::local::LocalDriver,
    lists: AtomicUsize,
    together: tokio::sync::Barrier,
}

#[async_trait::async_trait]
impl nodeup::driver::NodeDriver for Counting {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn features(&self) -> nodeup::driver::Features {
        self.inner.features()
    }
    async fn list_nodes(&self) -> nodeup::driver::Result<Vec<nodeup::model::Node>> {
        self.lists.fetch_add(1, Ordering::SeqCst);
        self.inner.list_nodes().await
    }
    async fn create_node(
        &self,
        request: &nodeup::model::CreateNode,
    ) -> nodeup::driver::Result<nodeup::model::Node> {
        let node = self.inner.create_node(request).await;
        self.together.wait().await;
        node
    }
    async fn destroy_node(&self, node: &nodeup::model::Node) -> nodeup::driver::Result<()> {
        self.inner.destroy_node(node).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_waits_with_shared_list_calls() {
    use nodeup::deploy::{ScriptStep, Step};
    use nodeup::engine::fleet::{deploy_fleet, FleetHooks, FleetOptions};
    let bed = TestBed::new().unwrap();
    let driver = Arc::new(Counting {
        inner: bed.driver().clone(),
        lists: AtomicUsize::new(0),
        together: tokio::sync::Barrier::new(8),
    });
    let requests: Vec<nodeup::model::CreateNode> = (1..=8)
        .map(|i| crate::deploy_request(&bed, &format!("shared-{i}")))
        .collect();
    let options = nodeup::engine::DeployOptions {
        ssh_keys: vec![bed.client_key().to_path_buf()],
        known_hosts: bed.dir().join("known_hosts"),
        poll_period: Duration::from_secs(2),
        journal: None,
        ..Default::default()
    };
    let fleet = FleetOptions {
        parallel: Some(8),
        ..Default::default()
    };
    let steps = Step::Script(ScriptStep::inline("true"));
    let members = deploy_fleet(
        driver.clone(),
        requests,
        &steps,
        &options,
        &fleet,
        &FleetHooks::default(),
    )
    .await;
    assert!(members
        .iter()
        .all(|m| matches!(m.fate, nodeup::engine::fleet::Fate::Stays)));
    let lists = driver.lists.load(Ordering::SeqCst);
    assert!(lists <= 3, "8 nodes waited for with {lists} list calls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_holds_every_request_of_the_client() {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    let arrivals: Arc<Mutex<Vec<(Instant, String)>>> = Arc::default();
    let first = Arc::new(AtomicUsize::new(0));
    let (log, count) = (arrivals.clone(), first.clone());
    let app = axum::Router::new().route(
        "/{what}",
        axum::routing::get(
            move |axum::extract::Path(what): axum::extract::Path<String>| {
                let (log, count) = (log.clone(), count.clone());
                async move {
                    log.lock().unwrap().push((Instant::now(), what));
                    if count.fetch_add(1, Ordering::SeqCst) == 0 {
                        (
                            StatusCode::TOO_MANY_REQUESTS,
                            [("retry-after", "1")],
                            "slow down",
                        )
                            .into_response()
                    } else {
                        "ok".into_response()
                    }
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let client = nodeup::http::HttpClient::new().unwrap();
    let get = |path: &str| {
        let (client, url) = (client.clone(), format!("{base}/{path}"));
        async move {
            client
                .send(|| nodeup::http::Request::new(reqwest::Method::GET, url.clone()))
                .await
                .unwrap()
        }
    };
    let a = tokio::spawn(get("a"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Sent after the 429: held until its Retry-After is over, though it never got a 429 itself.
    let b = tokio::spawn(get("b"));
    assert_eq!(a.await.unwrap().status, 200);
    assert_eq!(b.await.unwrap().status, 200);
    let arrivals = arrivals.lock().unwrap().clone();
    let limited = arrivals[0].0;
    let b_at = arrivals.iter().find(|(_, w)| w == "b").unwrap().0;
    assert!(
        b_at - limited >= Duration::from_millis(950),
        "b came {:?} after the 429",
        b_at - limited
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_step_file_deploys_one_shard() {
    let bed = TestBed::new().unwrap();
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy-scripts/fleet.toml");
    let args = [
        "deploy",
        file.to_str().unwrap(),
        "--count",
        "6",
        "--shard",
        "2/3",
        "--json",
    ];
    let out = nodeup(&bed, &args).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert_eq!(field(&json(&out), "name"), ["web-02", "web-05"]);
    assert_eq!(node_names(&bed).await, ["web-02", "web-05"]);
    let motd = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy-scripts/files/motd"),
    )
    .unwrap();
    for entry in json(&out)["nodes"].as_array().unwrap() {
        let node: nodeup::model::Node = serde_json::from_value(entry["node"].clone()).unwrap();
        assert_eq!(bed.adopt(node).read_file("/etc/motd").unwrap(), motd);
    }
}
