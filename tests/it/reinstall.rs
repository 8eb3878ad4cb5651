//! `nodeup reinstall` against the fake OVH API: a dedicated server (a local node) reinstalled from
//! an image served on loopback, through both API generations, then provisioned.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use axum::extract::Path as UrlPath;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use nodeup::driver::NodeDriver;
use serde_json::Value;
use sha2::Digest;
use testbed::fake_ovh::{FakeOvh, OvhConfig};
use testbed::TestBed;

/// Serves `dir` on 127.0.0.1: `/images/NAME`, and `/private/NAME` only with `Authorization: Bearer t`.
async fn image_server(dir: PathBuf) -> (String, tokio::task::JoinHandle<()>) {
    let public_dir = dir.clone();
    let app = axum::Router::new()
        .route(
            "/images/{name}",
            get(move |UrlPath(name): UrlPath<String>| {
                let dir = public_dir.clone();
                async move { std::fs::read(dir.join(name)).map_err(|_| StatusCode::NOT_FOUND) }
            }),
        )
        .route(
            "/private/{name}",
            get(move |UrlPath(name): UrlPath<String>, headers: HeaderMap| {
                let dir = dir.clone();
                async move {
                    if headers.get("authorization").and_then(|v| v.to_str().ok())
                        != Some("Bearer t")
                    {
                        return Err(StatusCode::UNAUTHORIZED);
                    }
                    std::fs::read(dir.join(name)).map_err(|_| StatusCode::NOT_FOUND)
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, task)
}

struct Setup {
    bed: TestBed,
    fake: FakeOvh,
    images: String,
    _server: tokio::task::JoinHandle<()>,
    qcow2_sha256: String,
    raw_sha1: String,
    server_ip: String,
}

async fn setup() -> Setup {
    let bed = TestBed::new().unwrap();
    let fake = FakeOvh::start(bed.driver().clone(), OvhConfig::default())
        .await
        .unwrap();
    let node = fake.add_dedicated("ns1").await.unwrap();
    let dir = bed.dir().join("images");
    std::fs::create_dir(&dir).unwrap();
    let made = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(dir.join("debian.qcow2"))
        .arg("1M")
        .status()
        .unwrap();
    assert!(made.success());
    std::fs::write(dir.join("disk.raw"), vec![0u8; 64 * 1024]).unwrap();
    let qcow2_sha256 = hex(&sha2::Sha256::digest(
        std::fs::read(dir.join("debian.qcow2")).unwrap(),
    ));
    let raw_sha1 = hex(&sha1::Sha1::digest(
        std::fs::read(dir.join("disk.raw")).unwrap(),
    ));
    let (images, server) = image_server(dir).await;
    Setup {
        bed,
        fake,
        images,
        _server: server,
        qcow2_sha256,
        raw_sha1,
        server_ip: node.public_ips[0].to_string(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `nodeup reinstall ARGS`, with the image server on loopback allowed (as a vRack mirror would be).
fn nodeup(s: &Setup, args: &[&str]) -> Output {
    let mut all = args.to_vec();
    all.push("--allow-private-url");
    nodeup_strict(s, &all)
}

/// `nodeup reinstall ARGS`, with no URL allowed that OVH itself could not fetch.
fn nodeup_strict(s: &Setup, args: &[&str]) -> Output {
    reinstall_cmd(s, args).output().unwrap()
}

/// The `nodeup reinstall ARGS` command against the fake, polling every 100 ms, with the trace on.
fn reinstall_cmd(s: &Setup, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nodeup"));
    cmd.arg("reinstall")
        .args(args)
        .args(["--poll", "100ms"])
        .arg("--known-hosts")
        .arg(s.bed.dir().join("known_hosts"))
        .env("NODEUP_STATE_DIR", s.bed.nodeup_state_dir())
        .env("NODEUP_DEBUG", s.bed.dir().join("trace"))
        .env("HOME", s.bed.dir())
        .current_dir(s.bed.dir())
        .stdin(Stdio::null());
    for (k, v) in s.fake.env() {
        cmd.env(k, v);
    }
    cmd
}

/// The debug trace shows the download header's name, never its value (a secret).
#[track_caller]
fn assert_header_hidden(s: &Setup) {
    let trace = std::fs::read_to_string(s.bed.dir().join("trace")).unwrap();
    assert!(trace.contains("Authorization"), "{trace}");
    assert!(
        !trace.contains("Bearer t"),
        "the header's value leaked: {trace}"
    );
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn current_api_reinstall_then_a_post_install_step_file() {
    let s = setup().await;
    let dir = s.bed.dir();
    // known_hosts: the server's old key, and another host's, which must stay.
    let old = s.bed.driver().list_nodes().await.unwrap()[0].extra["host_keys"][0]
        .as_str()
        .unwrap()
        .to_string();
    let other =
        "10.9.9.9 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
    std::fs::write(
        dir.join("known_hosts"),
        format!("{} {old}\n{other}\n", s.server_ip),
    )
    .unwrap();
    let user_data = write(
        dir,
        "user-data.sh",
        "#!/bin/sh\necho configured > /root/first-boot\n",
    );
    let then = write(
        dir,
        "post.toml",
        "[[step]]\ninline = \"hostname; cat /root/first-boot; echo done > /root/post-install\"\n",
    );
    let url = format!("{}/images/debian.qcow2", s.images);
    let checksum = format!("sha256:{}", s.qcow2_sha256);
    let out = nodeup(
        &s,
        &[
            "ns1",
            "--image-url",
            &url,
            "--image-type",
            "qcow2",
            "--checksum",
            &checksum,
            "--hostname",
            "metal-1",
            "--user-data",
            &user_data,
            "--then",
            &then,
            "--http-header",
            "Authorization=Bearer t",
            "--yes",
            "--json",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_header_hidden(&s);
    assert!(
        stderr.contains("erases everything"),
        "the user is warned: {stderr}"
    );
    // OVH's status and message are shown as they change (the download is too quick to see here).
    assert!(
        stderr.contains("] doing: Installing image"),
        "status shown: {stderr}"
    );
    assert!(stderr.contains("] done: "), "status shown: {stderr}");
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["user"], "root");
    assert_eq!(result["steps"][0]["stdout"], "metal-1\nconfigured\n");

    let node = s
        .bed
        .adopt(s.bed.driver().list_nodes().await.unwrap()[0].clone());
    assert_eq!(node.read_file("/root/post-install").unwrap(), b"done\n");
    // The config-drive key nodeup made, kept with tight modes.
    let key = Path::new(result["key"].as_str().unwrap());
    assert_eq!(
        std::fs::metadata(key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let root_keys =
        String::from_utf8(node.read_file("/root/.ssh/authorized_keys").unwrap()).unwrap();
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    assert!(root_keys.contains(public.split_whitespace().nth(1).unwrap()));
    // The new host key replaced the old one for this server only.
    let known = std::fs::read_to_string(dir.join("known_hosts")).unwrap();
    assert!(
        !known.contains(old.split_whitespace().nth(1).unwrap()),
        "{known}"
    );
    let new_key = node.node.extra["host_keys"]
        .as_array()
        .unwrap()
        .iter()
        .any(|k| known.contains(k.as_str().unwrap().split_whitespace().nth(1).unwrap()));
    assert!(new_key, "the new key is recorded: {known}");
    assert!(known.contains(other), "other hosts are untouched: {known}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_api_reinstall_with_a_private_url_and_a_raw_image() {
    let s = setup().await;
    let dir = s.bed.dir();
    let then = write(dir, "post.toml", "[[step]]\ninline = \"uname -n\"\n");
    let key = crate::keygen(dir, "mine", "");
    let url = format!("{}/private/disk.raw", s.images);
    let checksum = format!("sha1:{}", s.raw_sha1);
    let out = nodeup(
        &s,
        &[
            "ns1",
            "--api",
            "legacy",
            "--image-url",
            &url,
            "--image-type",
            "raw",
            "--checksum",
            &checksum,
            "--http-header",
            "Authorization=Bearer t",
            "--ssh-key",
            key.with_extension("pub").to_str().unwrap(),
            "--then",
            &then,
            "--yes",
            "--json",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["steps"][0]["exit_status"], 0);
    assert_header_hidden(&s);
    let node = s
        .bed
        .adopt(s.bed.driver().list_nodes().await.unwrap()[0].clone());
    let root_keys =
        String::from_utf8(node.read_file("/root/.ssh/authorized_keys").unwrap()).unwrap();
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    assert!(
        root_keys.contains(public.split_whitespace().nth(1).unwrap()),
        "the user's key is root's"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_checksum_format_and_url_end_with_ovhs_message_and_the_fix() {
    let s = setup().await;
    let qcow2 = format!("{}/images/debian.qcow2", s.images);
    let raw = format!("{}/images/disk.raw", s.images);
    let wrong = format!("sha256:{}", "0".repeat(64));
    let cases: [(Vec<&str>, &str, &str); 4] = [
        (
            vec![
                "--image-url",
                &qcow2,
                "--image-type",
                "qcow2",
                "--checksum",
                &wrong,
            ],
            "Bad sha256 for downloaded file, got:",
            "--checksum",
        ),
        (
            vec![
                "--api",
                "legacy",
                "--image-url",
                &qcow2,
                "--image-type",
                "qcow2",
                "--checksum",
                &wrong,
            ],
            "Bad sha256 for downloaded file, got : ",
            "--checksum",
        ),
        (
            vec!["--image-url", &raw, "--image-type", "qcow2"],
            "image provided format is raw which does not match expected qcow2 format",
            "--image-type",
        ),
        (
            vec![
                "--api",
                "legacy",
                "--image-url",
                "http://127.0.0.1:9/nothing.qcow2",
                "--image-type",
                "qcow2",
            ],
            "Could not download image located : http://127.0.0.1:9/nothing.qcow2",
            "reachable",
        ),
    ];
    for (args, message, fix) in cases {
        let mut all = vec!["ns1"];
        all.extend(args);
        all.push("--yes");
        let out = nodeup(&s, &all);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{all:?}: {stderr}");
        assert!(stderr.contains(message), "expected {message:?}: {stderr}");
        assert!(stderr.contains(fix), "expected the fix {fix:?}: {stderr}");
    }
    // The server was never taken down: it still answers on its old system.
    assert_eq!(
        s.bed.driver().list_nodes().await.unwrap()[0].state,
        nodeup::model::NodeState::Running
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_arguments_are_refused_before_any_api_call() {
    let s = setup().await;
    let dir = s.bed.dir();
    let url = format!("{}/images/debian.qcow2", s.images);
    let bad_key = write(dir, "bad.pub", "not a key");
    let cases: [(Vec<&str>, &str); 7] = [
        (
            vec!["--image-url", &url, "--image-type", "vhd", "--yes"],
            "unknown image type",
        ),
        (
            vec![
                "--image-url",
                &url,
                "--image-type",
                "qcow2",
                "--checksum",
                "sha256:abc",
                "--yes",
            ],
            "64 hex digits",
        ),
        (
            vec![
                "--image-url",
                &url,
                "--image-type",
                "qcow2",
                "--checksum",
                "crc:00",
                "--yes",
            ],
            "md5, sha1, sha256 or sha512",
        ),
        (
            vec![
                "--image-url",
                &url,
                "--image-type",
                "qcow2",
                "--ssh-key",
                &bad_key,
                "--yes",
            ],
            "does not parse",
        ),
        (
            vec![
                "--image-url",
                &url,
                "--image-type",
                "qcow2",
                "--user-data",
                "/nonexistent",
                "--yes",
            ],
            "/nonexistent",
        ),
        (
            vec!["--image-url", "ftp://x/y", "--image-type", "qcow2", "--yes"],
            "http:// or https://",
        ),
        (
            vec!["--image-url", &url, "--image-type", "qcow2"],
            "pass --yes",
        ),
    ];
    for (args, expected) in cases {
        let mut all = vec!["ns1"];
        all.extend(args);
        let out = nodeup(&s, &all);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{all:?}: {stderr}");
        assert!(stderr.contains(expected), "expected {expected:?}: {stderr}");
    }
    // URLs OVH cannot fetch: no host, this machine, a private network.
    for bad in [
        "http://",
        "http://127.0.0.1/x.qcow2",
        "http://localhost/x.qcow2",
        "http://10.0.0.5/x.qcow2",
    ] {
        let out = nodeup_strict(
            &s,
            &["ns1", "--image-url", bad, "--image-type", "qcow2", "--yes"],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad}: {stderr}");
        assert!(
            stderr.contains("has no host") || stderr.contains("OVH cannot reach"),
            "{bad}: {stderr}"
        );
    }
    // Service names that are not ones: refused before any file is written.
    for service in ["../../escape", "", "a/b"] {
        let out = nodeup(
            &s,
            &[
                service,
                "--image-url",
                &url,
                "--image-type",
                "qcow2",
                "--yes",
            ],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{service:?}: {stderr}");
        assert!(
            stderr.contains("is not a dedicated server's service name"),
            "{stderr}"
        );
    }
    let state = s.bed.nodeup_state_dir();
    assert!(!state.join("reinstall").exists(), "no key was made");
    assert!(!state.parent().unwrap().join("escape").exists());
    assert_eq!(s.fake.authenticated_requests(), 0, "no API call was made");

    // A server these credentials do not have: said as such, and no key is made for it.
    let out = nodeup(
        &s,
        &[
            "ns9.unknown",
            "--image-url",
            &url,
            "--image-type",
            "qcow2",
            "--yes",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("no dedicated server \"ns9.unknown\""),
        "{stderr}"
    );
    assert!(!state.join("reinstall").exists(), "no key was made");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_during_the_install_says_it_goes_on_and_how_to_follow_it() {
    use std::io::{BufRead, BufReader};
    let s = setup().await;
    let url = format!("{}/images/debian.qcow2", s.images);
    let mut cmd = reinstall_cmd(
        &s,
        &[
            "ns1",
            "--image-url",
            &url,
            "--image-type",
            "qcow2",
            "--yes",
            "--allow-private-url",
        ],
    );
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    for line in lines.by_ref() {
        if line.unwrap().contains("OVH accepted the reinstall") {
            break;
        }
    }
    // SAFETY: kill(2) on the child we spawned and have not reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let rest = rest.join("\n");
    assert!(rest.contains("cannot be stopped and goes on"), "{rest}");
    assert!(
        rest.contains("/dedicated/server/ns1/install/status"),
        "{rest}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_field_of_the_byoi_guide_reaches_ovh_and_the_server() {
    let s = setup().await;
    let dir = s.bed.dir();
    // An OVA: a tar archive holding the disk.
    let made = Command::new("tar")
        .args(["cf", "images/disk.ova", "-C", "images", "debian.qcow2"])
        .current_dir(dir)
        .status()
        .unwrap();
    assert!(made.success());
    let url = format!("{}/images/disk.ova", s.images);
    let out = nodeup(
        &s,
        &[
            "ns1",
            "--api",
            "legacy",
            "--image-url",
            &url,
            "--image-type",
            "ova",
            "--description",
            "golden image",
            "--disk-group",
            "2",
            "--metadata",
            "role=web",
            "--metadata",
            "tier=front",
            "--yes",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let sent = s.fake.last_reinstall_request("ns1").unwrap();
    assert_eq!(sent["type"], "ova");
    assert_eq!(sent["description"], "golden image");
    assert_eq!(sent["diskGroupId"], 2);
    assert_eq!(
        sent["configdrive"]["userMetadatas"],
        serde_json::json!([{"key": "role", "value": "web"}, {"key": "tier", "value": "front"}])
    );
    let node = s
        .bed
        .adopt(s.bed.driver().list_nodes().await.unwrap()[0].clone());
    let meta: Value = serde_json::from_slice(
        &node
            .read_file("/var/lib/cloud/instance/meta_data.json")
            .unwrap(),
    )
    .unwrap();
    assert_eq!(meta["meta"]["role"], "web");

    // No config drive: nothing is set, and with no steps nodeup does not log in.
    let key = s
        .bed
        .nodeup_state_dir()
        .join("reinstall/ns1/id_ed25519.pub");
    let key_before = std::fs::read_to_string(&key).unwrap();
    let url = format!("{}/images/debian.qcow2", s.images);
    let out = nodeup(
        &s,
        &[
            "ns1",
            "--api",
            "legacy",
            "--image-url",
            &url,
            "--image-type",
            "qcow2",
            "--no-config-drive",
            "--yes",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("not logged in"), "{stderr}");
    let sent = s.fake.last_reinstall_request("ns1").unwrap();
    assert_eq!(sent["configdrive"], serde_json::json!({"enable": false}));
    assert_eq!(
        std::fs::read_to_string(&key).unwrap(),
        key_before,
        "no key was made for a server that gets none"
    );

    // The current API takes no OVA: refused before any call.
    let calls = s.fake.authenticated_requests();
    let out = nodeup(
        &s,
        &["ns1", "--image-url", &url, "--image-type", "ova", "--yes"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs --api legacy"));
    assert_eq!(s.fake.authenticated_requests(), calls);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_legacy_reinstall_can_be_cancelled() {
    let s = setup().await;
    let before = s.bed.driver().list_nodes().await.unwrap()[0].extra["host_keys"].clone();
    let url = format!("{}/images/debian.qcow2", s.images);
    let mut cmd = reinstall_cmd(
        &s,
        &[
            "ns1",
            "--api",
            "legacy",
            "--image-url",
            &url,
            "--image-type",
            "qcow2",
            "--yes",
            "--allow-private-url",
        ],
    );
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    let running = cmd.spawn().unwrap();
    let started = std::time::Instant::now();
    while !s.fake.installing("ns1") {
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // --cancel needs the legacy call, which is the one that can be cancelled.
    let out = nodeup(&s, &["ns1", "--cancel"]);
    assert_eq!(out.status.code(), Some(2));
    let out = nodeup(&s, &["ns1", "--cancel", "--api", "legacy"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("cancelled the reinstall of ns1"),
        "{stderr}"
    );
    let first = running.wait_with_output().unwrap();
    assert_ne!(
        first.status.code(),
        Some(0),
        "the cancelled reinstall does not succeed"
    );
    assert!(!s.fake.installing("ns1"));
    // Give the fake's install time to pass: the cancelled install never lands.
    std::thread::sleep(std::time::Duration::from_millis(2000));
    let after = s.bed.driver().list_nodes().await.unwrap()[0].extra["host_keys"].clone();
    assert_eq!(after, before, "the server was not reinstalled");
}
