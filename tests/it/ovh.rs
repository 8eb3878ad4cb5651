//! The OVH driver and `nodeup deploy` against the fake OVH API, whose instances are local nodes.

use std::process::{Command, Output};
use std::sync::Arc;

use nodeup::driver::{NodeDriver, ProviderError};
use nodeup::model::{CreateNode, CreateVolume};
use nodeup::providers::ovh::{Credentials, OvhDriver, Secret};
use serde_json::Value;
use testbed::fake_ovh::{FakeOvh, Fault, OvhConfig, OvhFaults, RouteFault};
use testbed::TestBed;

const IMAGE: &str = "Debian 12";

fn driver(fake: &FakeOvh) -> OvhDriver {
    let a = fake.account();
    let creds = Credentials {
        endpoint: fake.base_url(),
        application_key: a.application_key.clone(),
        application_secret: Secret(a.application_secret.clone()),
        consumer_key: Some(Secret(a.consumer_key.clone())),
    };
    OvhDriver::new(creds, &a.project).unwrap()
}

fn stepfile(bed: &TestBed, name: &str, script: &str) -> std::path::PathBuf {
    let path = bed.dir().join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "[node]\nprovider = \"ovh\"\nname = \"{name}\"\nimage = \"{IMAGE}\"\nsize = \"b2-7\"\nlocation = \"GRA11\"\n\n[[step]]\ninline = \"{script}\"\n"
        ),
    )
    .unwrap();
    path
}

fn nodeup(bed: &TestBed, fake: &FakeOvh, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nodeup"));
    cmd.args(args)
        .arg("--key")
        .arg(bed.client_key())
        .arg("--known-hosts")
        .arg(bed.dir().join("known_hosts"))
        .env("NODEUP_STATE_DIR", bed.nodeup_state_dir())
        .env("HOME", bed.dir())
        .current_dir(bed.dir());
    for (k, v) in fake.env() {
        cmd.env(k, v);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_on_ovh_logs_in_as_the_image_user_and_cleans_up_on_failure() {
    let bed = TestBed::new().unwrap();
    let fake = FakeOvh::start(bed.driver().clone(), OvhConfig::default())
        .await
        .unwrap();
    let trace = bed.dir().join("trace");
    let file = stepfile(&bed, "ovh-web", "id -un; hostname");
    let out = nodeup(
        &bed,
        &fake,
        &[("NODEUP_DEBUG", trace.to_str().unwrap())],
        &["deploy", file.to_str().unwrap(), "--json"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        result["user"], "debian",
        "root is refused; the image's user works"
    );
    assert_eq!(result["node"]["provider"], "ovh");
    assert_eq!(result["node"]["extra"]["login_user"], "debian");
    assert_eq!(result["node"]["state"], "running");
    assert!(result["steps"][0]["stdout"]
        .as_str()
        .unwrap()
        .starts_with("debian\novh-"));
    assert_eq!(fake.instance_names(), ["ovh-web"]);

    // The trace: runnable curl lines, and no secret in it.
    let text = std::fs::read_to_string(&trace).unwrap();
    assert!(text.contains("curl -sS -X POST"), "{text}");
    let a = fake.account();
    for secret in [&a.consumer_key, &a.application_secret] {
        assert!(
            !text.contains(secret.as_str()),
            "a secret leaked into the trace"
        );
    }
    assert!(text.contains("X-Ovh-Signature: ***"));

    // A failing step: the instance and its machine are destroyed.
    let file = stepfile(&bed, "ovh-bad", "echo nope >&2; exit 4");
    let out = nodeup(&bed, &fake, &[], &["deploy", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("was destroyed"));
    assert_eq!(fake.instance_names(), ["ovh-web"]);
    assert_eq!(
        bed.driver().list_nodes().await.unwrap().len(),
        1,
        "no local node left behind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_pairs_volumes_and_snapshots_round_trip() {
    let bed = TestBed::new().unwrap();
    let fake = FakeOvh::start(bed.driver().clone(), OvhConfig::default())
        .await
        .unwrap();
    let ovh = driver(&fake);

    let imported = ovh
        .import_key_pair_from_string("mine", bed.client_public_key(), None)
        .await
        .unwrap();
    assert_eq!(imported.public_key, bed.client_public_key());
    let created = ovh
        .create_key_pair("generated", Some("SBG5"))
        .await
        .unwrap();
    // The private half returned is the one whose public half OVH now holds.
    let private =
        russh::keys::PrivateKey::from_openssh(created.private_key.as_deref().unwrap()).unwrap();
    let derived = private.public_key().to_openssh().unwrap();
    let blob = |k: &str| k.split_whitespace().nth(1).unwrap().to_string();
    assert_eq!(blob(&derived), blob(&created.public_key));
    assert_eq!(
        blob(&ovh.get_key_pair("generated").await.unwrap().public_key),
        blob(&derived)
    );
    let names: Vec<String> = ovh
        .list_key_pairs(None)
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.name)
        .collect();
    assert_eq!(names, ["mine", "generated"]);
    assert_eq!(
        ovh.get_key_pair("mine").await.unwrap().public_key,
        bed.client_public_key()
    );
    ovh.delete_key_pair(&imported).await.unwrap();
    assert!(matches!(
        ovh.get_key_pair("mine").await,
        Err(ProviderError::NotFound { .. })
    ));

    let volume = ovh
        .create_volume(&CreateVolume {
            size_gb: 10,
            name: "data".into(),
            location: Some("GRA11".into()),
            volume_type: Some("high-speed".into()),
            description: Some("app data".into()),
            snapshot: None,
        })
        .await
        .unwrap();
    assert_eq!(volume.extra["type"], "high-speed");
    assert_eq!(volume.state, "creating", "a new volume is being created");
    let node = ovh
        .create_node(&CreateNode {
            size: Some("d2-2".into()),
            ..crate::ovh_request(&bed, "with-volume")
        })
        .await
        .unwrap();
    let err = ovh.attach_volume(&node, &volume).await.unwrap_err();
    let err = nodeup::engine::error_chain(&err);
    assert!(err.contains("is not available"), "{err}");
    let volume = wait_volume(&ovh, &volume.id, "available").await;
    ovh.attach_volume(&node, &volume).await.unwrap();
    let attached = ovh.get_volume(&volume.id).await.unwrap();
    assert_eq!(attached.attached_to.as_deref(), Some(node.id.as_str()));
    assert_eq!(attached.state, "in-use");
    let snapshot = ovh
        .create_volume_snapshot(&volume, Some("nightly"), Some("before the upgrade"))
        .await
        .unwrap();
    assert_eq!(ovh.list_volume_snapshots(&volume).await.unwrap().len(), 1);
    assert_eq!(
        ovh.get_snapshot(&snapshot.id)
            .await
            .unwrap()
            .name
            .as_deref(),
        Some("nightly")
    );
    assert_eq!(snapshot.extra["description"], "before the upgrade");
    // A volume made from the snapshot.
    let restored = ovh
        .create_volume(&CreateVolume {
            size_gb: 10,
            name: "restored".into(),
            location: Some("GRA11".into()),
            snapshot: Some(snapshot.id.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        fake.volume_snapshot_of(&restored.id).as_deref(),
        Some(snapshot.id.as_str())
    );
    ovh.destroy_volume(&restored).await.unwrap();
    ovh.destroy_volume_snapshot(&snapshot).await.unwrap();
    assert!(ovh.list_snapshots().await.unwrap().is_empty());
    ovh.detach_volume(&volume, Some(&node)).await.unwrap();
    ovh.destroy_volume(&volume).await.unwrap();
    assert!(ovh.list_volumes().await.unwrap().is_empty());

    let err = ovh
        .create_image(&node, "golden", Some("described"))
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::NotSupported { .. }), "{err}");
    let image = ovh.create_image(&node, "golden", None).await.unwrap();
    assert_eq!(image.name, "golden");
    ovh.delete_image(&image).await.unwrap();
    assert!(ovh
        .list_images(None, None)
        .await
        .unwrap()
        .iter()
        .all(|i| i.name != "golden"));
    assert_eq!(ovh.list_locations().await.unwrap().len(), 6);
    // Sizes per region, with bandwidth and price; images per region and size.
    let sizes = ovh.list_sizes(Some("GRA11")).await.unwrap();
    assert_eq!(sizes.len(), 3);
    let b2 = sizes.iter().find(|s| s.name == "b2-7").unwrap();
    assert_eq!(
        (b2.vcpus, b2.bandwidth_mbps, b2.price),
        (Some(2), Some(250), Some(0.0681))
    );
    assert_eq!(ovh.get_size(&b2.id).await.unwrap().name, "b2-7");
    assert_eq!(ovh.list_sizes(None).await.unwrap().len(), 18);
    let images = ovh.list_images(Some("SBG5"), Some(&b2.id)).await.unwrap();
    assert_eq!(images.len(), 1);
    assert_eq!(images[0].name, "Debian 12");
    assert_eq!(ovh.list_nodes_in("GRA11").await.unwrap().len(), 1);
    assert!(ovh.list_nodes_in("SBG5").await.unwrap().is_empty());
    // Keys by region: the one made for SBG5, the deploy key imported for GRA11.
    let names = |keys: Vec<nodeup::model::KeyPair>| -> Vec<String> {
        keys.into_iter().map(|k| k.name).collect()
    };
    assert_eq!(
        names(ovh.list_key_pairs(Some("SBG5")).await.unwrap()),
        ["generated"]
    );
    let gra = names(ovh.list_key_pairs(Some("GRA11")).await.unwrap());
    assert_eq!(gra.len(), 1);
    assert!(gra[0].starts_with("nodeup-"), "{gra:?}");
    assert_eq!(ovh.list_key_pairs(None).await.unwrap().len(), 2);
    ovh.destroy_node(&node).await.unwrap();
    assert!(
        bed.driver().list_nodes().await.unwrap().is_empty(),
        "DELETE destroyed the machine"
    );
    // OVH lists a deleted instance as DELETING for a while, as terminated.
    assert_eq!(fake.deleting_names(), ["with-volume"]);
    let listed = ovh.list_nodes().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].state, nodeup::model::NodeState::Terminated);
    assert_eq!(listed[0].extra["status"], "DELETING");
}

/// Polls a volume until it reaches `state`.
pub(crate) async fn wait_volume(
    ovh: &OvhDriver,
    id: &str,
    state: &str,
) -> nodeup::model::StorageVolume {
    for _ in 0..100 {
        let volume = ovh.get_volume(id).await.unwrap();
        if volume.state == state {
            return volume;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("volume {id} never reached {state}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_429_500_and_a_lost_answer_still_give_exactly_one_instance() {
    let bed = TestBed::new().unwrap();
    let config = OvhConfig {
        faults: OvhFaults {
            error_500: 0.25,
            error_429: 0.25,
            // The instance is created, but the answer is lost on the way.
            routes: vec![RouteFault::new("POST", "/instance", Fault::LoseAnswer, 1)],
            ..Default::default()
        },
        ..Default::default()
    };
    let fake = FakeOvh::start(bed.driver().clone(), config).await.unwrap();
    let mut ovh = driver(&fake);
    ovh.client_mut().http_mut().retry.min_delay = std::time::Duration::from_millis(10);
    let ovh: Arc<dyn NodeDriver> = Arc::new(ovh);
    let node = ovh
        .create_node(&crate::ovh_request(&bed, "exactly-one"))
        .await
        .unwrap();
    assert_eq!(fake.instance_names(), ["exactly-one"]);
    assert_eq!(bed.driver().list_nodes().await.unwrap().len(), 1);
    // Each kind of fault really fired (a fault that stops firing would make this test moot).
    let fired = fake.faults_fired();
    assert!(fired.error_500 >= 1, "{fired:?}");
    assert!(fired.error_429 >= 1, "{fired:?}");
    assert_eq!(fired.lost_answers, 1, "{fired:?}");
    let listed = ovh.get_node(&node.id).await.unwrap();
    assert_eq!(listed.name, "exactly-one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_give_a_clear_error_and_create_nothing() {
    let bed = TestBed::new().unwrap();
    let fake = FakeOvh::start(bed.driver().clone(), OvhConfig::default())
        .await
        .unwrap();
    let file = stepfile(&bed, "never", "true");
    let out = nodeup(
        &bed,
        &fake,
        &[("OVH_CONSUMER_KEY", "not-the-key")],
        &["deploy", file.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("INVALID_CREDENTIAL") && stderr.contains("This credential is not valid"),
        "{stderr}"
    );
    assert!(stderr.contains("X-Ovh-QueryID: FR."), "{stderr}");
    assert!(
        stderr.contains("OVH_CONSUMER_KEY"),
        "says what to fix: {stderr}"
    );
    assert!(!stderr.contains("not-the-key"), "no secret in errors");

    let out = nodeup(
        &bed,
        &fake,
        &[("OVH_APPLICATION_SECRET", "wrong")],
        &["deploy", file.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("INVALID_SIGNATURE"));

    let out = nodeup(
        &bed,
        &fake,
        &[("OVH_CLOUD_PROJECT_SERVICE", "")],
        &["deploy", file.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(fake.instance_names().is_empty());
    assert!(bed.driver().list_nodes().await.unwrap().is_empty());
}

// Multi-threaded: the fake serves while the test waits for the nodeup process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ovh_conf_files_are_read_like_ovhs_clients_do() {
    let bed = TestBed::new().unwrap();
    let fake = FakeOvh::start(bed.driver().clone(), OvhConfig::default())
        .await
        .unwrap();
    let a = fake.account();
    std::fs::write(
        bed.dir().join("ovh.conf"),
        format!(
            "[default]\nendpoint={}\n\n[{}]\napplication_key={}\napplication_secret={}\nconsumer_key={}\n",
            fake.base_url(), fake.base_url(), a.application_key, a.application_secret, a.consumer_key
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_nodeup"))
        .args(["sizes", "--provider", "ovh", "--json"])
        .env("HOME", bed.dir())
        .env("OVH_CLOUD_PROJECT_SERVICE", &a.project)
        .env_remove("OVH_ENDPOINT")
        .env_remove("OVH_APPLICATION_KEY")
        .env_remove("OVH_APPLICATION_SECRET")
        .env_remove("OVH_CONSUMER_KEY")
        .current_dir(bed.dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sizes: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        sizes.as_array().unwrap().len(),
        18,
        "3 flavors in each of 6 regions"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_key_prints_the_key_and_the_validation_url() {
    let bed = TestBed::new().unwrap();
    let fake = FakeOvh::start(bed.driver().clone(), OvhConfig::default())
        .await
        .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nodeup"));
    cmd.args(["ovh", "consumer-key", "--rule", "GET:/cloud/*"])
        .current_dir(bed.dir())
        .env("HOME", bed.dir());
    for (k, v) in fake.env() {
        cmd.env(k, v);
    }
    let out = cmd.env_remove("OVH_CONSUMER_KEY").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("consumer key: {}", fake.account().consumer_key)),
        "{text}"
    );
    assert!(text.contains("credentialToken="), "{text}");
    // What was asked for is what the user gave.
    let asked = fake.credential_requests();
    assert_eq!(asked.len(), 1);
    assert_eq!(
        asked[0]["accessRules"],
        serde_json::json!([{"method": "GET", "path": "/cloud/*"}])
    );
    let out = Command::new(env!("CARGO_BIN_EXE_nodeup"))
        .args(["ovh", "consumer-key", "--rule", "FETCH:/x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_from_the_user_stay_inside_their_path_segment() {
    let bed = TestBed::new().unwrap();
    let fake = FakeOvh::start(bed.driver().clone(), OvhConfig::default())
        .await
        .unwrap();
    let ovh = driver(&fake);
    // Unencoded, this would be GET /cloud/project/P/instance/../region, which lists regions.
    for id in ["../region", "x?y=z", "..", "a/b"] {
        let err = ovh.get_node(id).await.unwrap_err();
        assert!(
            matches!(err, ProviderError::NotFound { .. }),
            "{id:?}: {err}"
        );
    }
}

/// Clouds give a new instance an address an older, deleted machine had. nodeup created the node a
/// moment ago, so a key recorded for that address before it first logged in is the old machine's:
/// it is replaced, with a warning naming both keys. For `run` (machines that were there before),
/// a changed key is still refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_node_on_a_reused_address_replaces_the_stale_key_but_run_still_refuses() {
    let bed = TestBed::new().unwrap();
    let fake = FakeOvh::start(bed.driver().clone(), OvhConfig::default())
        .await
        .unwrap();
    // Another machine's key, recorded for every address a local node may get.
    let stale_key = bed.client_public_key().to_string();
    let known_hosts = bed.dir().join("known_hosts");
    let lines: String = (1..512u32)
        .map(|n| {
            let ip =
                std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(127, 100, 0, 0)) + n);
            format!("{ip} {stale_key}\n")
        })
        .collect();
    std::fs::write(&known_hosts, lines).unwrap();

    let file = stepfile(&bed, "ovh-reused", "hostname");
    let out = nodeup(
        &bed,
        &fake,
        &[],
        &["deploy", file.to_str().unwrap(), "--json"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ip = result["node"]["public_ips"][0]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        stderr.contains("a new node at an address another machine had"),
        "{stderr}"
    );
    let stale_fp = russh::keys::PublicKey::from_openssh(&stale_key)
        .unwrap()
        .fingerprint(russh::keys::HashAlg::Sha256)
        .to_string();
    assert!(
        stderr.contains(&stale_fp),
        "the warning names the old key: {stderr}"
    );
    let text = std::fs::read_to_string(&known_hosts).unwrap();
    let entries: Vec<&str> = text
        .lines()
        .filter(|l| l.split_whitespace().next() == Some(ip.as_str()))
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert!(!entries[0].contains(stale_key.split_whitespace().nth(1).unwrap()));

    // A machine nodeup did not create, at an address with another key recorded: refused.
    let other = bed.node(testbed::NodeSpec::new("was-there")).await.unwrap();
    let step = bed.dir().join("run.toml");
    std::fs::write(&step, "[[step]]\ninline = \"true\"\n").unwrap();
    let out = nodeup(
        &bed,
        &fake,
        &[],
        &[
            "run",
            step.to_str().unwrap(),
            "--host",
            &format!("root@{}", other.ip()),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("has changed"), "{stderr}");
}
