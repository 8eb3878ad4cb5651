//! The fake OVH API behaves as OVH does, proven from the outside: signatures checked by an
//! independent signer, faults that fire and are counted, retries that honour them, and the
//! instance, volume and key rules of the real API; reboot, stop and start reach the instance's
//! machine.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nodeup::driver::{NodeDriver, ProviderError};
use nodeup::model::{CreateNode, CreateVolume, NodeState};
use nodeup::providers::ovh::{Credentials, OvhDriver, Secret};
use serde_json::Value;
use sha1::Digest;
use testbed::fake_ovh::{FakeOvh, Fault, OvhConfig, OvhFaults, RouteFault};
use testbed::TestBed;

const IMAGE: &str = "Debian 12";

fn driver(fake: &FakeOvh) -> OvhDriver {
    let a = fake.account();
    let mut ovh = OvhDriver::new(
        Credentials {
            endpoint: fake.base_url(),
            application_key: a.application_key.clone(),
            application_secret: Secret(a.application_secret.clone()),
            consumer_key: Some(Secret(a.consumer_key.clone())),
        },
        &a.project,
    )
    .unwrap();
    ovh.client_mut().http_mut().retry.min_delay = Duration::from_millis(10);
    ovh
}

/// OVH's signature, written here from the documentation alone (neither nodeup's nor the fake's).
fn independent_signature(
    secret: &str,
    consumer: &str,
    method: &str,
    url: &str,
    body: &str,
    ts: i64,
) -> String {
    let digest = sha1::Sha1::digest(format!("{secret}+{consumer}+{method}+{url}+{body}+{ts}"));
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("$1${hex}")
}

#[test]
fn the_independent_signer_passes_ovhs_known_answers() {
    let (secret, consumer) = (
        "9ufkBmLaTQ9nz5yMUlg79taH0GNnzDjk",
        "5mBuy6SUQcRw2ZUxg0cG68BoDKpED4KY",
    );
    let url = "https://eu.api.ovh.com/1.0/auth";
    assert_eq!(
        independent_signature(secret, consumer, "GET", url, "", 1457018875),
        "$1$e9556054b6309771395efa467c22e627407461ad"
    );
    assert_eq!(
        independent_signature(
            secret,
            consumer,
            "POST",
            url,
            r#"{"a":"b","c":"d"}"#,
            1457018875
        ),
        "$1$ec2fb5c7a81f64723c77d2e5b609ae6f58a84fc1"
    );
}

/// One raw request to the fake, signed over (`signed_method`, `signed_url`, `signed_body`) but
/// sending (`url`, `body`): what a tampering proxy would do.
struct Raw<'a> {
    fake: &'a FakeOvh,
    application_key: String,
    timestamp: i64,
}

impl Raw<'_> {
    async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        body: &str,
        signed_url: &str,
        signed_body: &str,
    ) -> (u16, Value) {
        let a = self.fake.account();
        let signature = independent_signature(
            &a.application_secret,
            &a.consumer_key,
            method.as_str(),
            signed_url,
            signed_body,
            self.timestamp,
        );
        let mut request = reqwest::Client::new()
            .request(method, url)
            .header("X-Ovh-Application", &self.application_key)
            .header("X-Ovh-Consumer", &a.consumer_key)
            .header("X-Ovh-Timestamp", self.timestamp.to_string())
            .header("X-Ovh-Signature", signature);
        if !body.is_empty() {
            request = request
                .header("Content-Type", "application/json")
                .body(body.to_string());
        }
        let answer = request.send().await.unwrap();
        let status = answer.status().as_u16();
        (status, answer.json().await.unwrap_or(Value::Null))
    }
}

async fn server_time(fake: &FakeOvh) -> i64 {
    reqwest::Client::new()
        .get(format!("{}/auth/time", fake.base_url()))
        .header("X-Ovh-Application", &fake.account().application_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fake_refuses_tampered_unsigned_and_stale_requests() {
    let bed = TestBed::new().unwrap();
    let fake = FakeOvh::start(bed.driver().clone(), OvhConfig::default())
        .await
        .unwrap();
    let a = fake.account().clone();
    let base = fake.base_url();
    let regions = format!("{base}/cloud/project/{}/region", a.project);
    let keys = format!("{base}/cloud/project/{}/sshkey", a.project);
    let raw = Raw {
        fake: &fake,
        application_key: a.application_key.clone(),
        timestamp: server_time(&fake).await,
    };
    let get = reqwest::Method::GET;
    // Signed right: accepted.
    let (status, body) = raw.send(get.clone(), &regions, "", &regions, "").await;
    assert_eq!(status, 200, "{body}");
    // Another URL than the one signed.
    let (status, body) = raw.send(get.clone(), &keys, "", &regions, "").await;
    assert_eq!(
        (status, body["errorCode"].as_str()),
        (400, Some("INVALID_SIGNATURE"))
    );
    // Another body than the one signed.
    let key = bed.client_public_key();
    let sent = format!(r#"{{"name":"evil","publicKey":"{key}"}}"#);
    let signed = format!(r#"{{"name":"good","publicKey":"{key}"}}"#);
    let (status, body) = raw
        .send(reqwest::Method::POST, &keys, &sent, &keys, &signed)
        .await;
    assert_eq!(
        (status, body["errorCode"].as_str()),
        (400, Some("INVALID_SIGNATURE"))
    );
    assert!(fake.key_names().is_empty(), "nothing was created");
    // A wrong application key.
    let wrong_app = Raw {
        application_key: "not-the-app".into(),
        ..raw
    };
    let (status, body) = wrong_app
        .send(get.clone(), &regions, "", &regions, "")
        .await;
    assert_eq!(
        (status, body["errorCode"].as_str()),
        (403, Some("INVALID_KEY"))
    );
    // This machine's clock, not the server's: the fake runs an hour ahead.
    let local = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let stale = Raw {
        fake: &fake,
        application_key: a.application_key.clone(),
        timestamp: local,
    };
    let (status, body) = stale.send(get, &regions, "", &regions, "").await;
    assert_eq!(
        (status, body["errorCode"].as_str()),
        (400, Some("QUERY_TIME_OUT"))
    );
    // Refused credentials are the provider-neutral error, which says what to check.
    let wrong = OvhDriver::new(
        Credentials {
            endpoint: fake.base_url(),
            application_key: a.application_key.clone(),
            application_secret: Secret(a.application_secret.clone()),
            consumer_key: Some(Secret("not-the-consumer-key".into())),
        },
        &a.project,
    )
    .unwrap();
    let err = wrong.list_locations().await.unwrap_err();
    assert!(
        matches!(&err, ProviderError::InvalidCredentials { check, .. } if check.contains("OVH_CONSUMER_KEY")),
        "{err}"
    );
    assert!(!err.to_string().contains("not-the-consumer-key"), "{err}");
    // nodeup's client uses the server-time delta, so its requests are on time.
    let before = fake.authenticated_requests();
    assert_eq!(driver(&fake).list_locations().await.unwrap().len(), 6);
    assert_eq!(fake.authenticated_requests(), before + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_honour_retry_after_and_lost_reads_and_deletes() {
    let bed = TestBed::new().unwrap();
    let fake = FakeOvh::start(bed.driver().clone(), OvhConfig::default())
        .await
        .unwrap();
    let ovh = driver(&fake);
    let node = ovh
        .create_node(&crate::ovh_request(&bed, "retried"))
        .await
        .unwrap();
    fake.set_faults(OvhFaults {
        routes: vec![
            RouteFault::new("GET", "/flavor", Fault::TooMany { retry_after: 1 }, 1),
            RouteFault::new("GET", "/region", Fault::LoseAnswer, 1),
            RouteFault::new("DELETE", "/instance/*", Fault::LoseAnswer, 1),
        ],
        ..Default::default()
    });
    // 429 with Retry-After: 1 → the retry waits at least that second.
    let started = Instant::now();
    assert_eq!(ovh.list_sizes(None).await.unwrap().len(), 18);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    // A read whose answer was lost is sent again.
    assert_eq!(ovh.list_locations().await.unwrap().len(), 6);
    // A DELETE whose answer was lost is sent again, answered 404, and counts as done.
    ovh.destroy_node(&node).await.unwrap();
    let fired = fake.faults_fired();
    assert_eq!((fired.error_429, fired.lost_answers), (1, 2), "{fired:?}");
    assert!(fake.instance_names().is_empty());
    assert!(
        bed.driver().list_nodes().await.unwrap().is_empty(),
        "its machine is gone"
    );
}

async fn boot_id(bed: &TestBed, name: &str) -> String {
    let node = bed
        .driver()
        .list_nodes()
        .await
        .unwrap()
        .into_iter()
        .find(|n| n.name == name)
        .unwrap();
    let out = bed
        .adopt(node)
        .exec("cat /proc/sys/kernel/random/boot_id")
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Waits until the instance reaches `state` as the driver reports it.
async fn wait_state(ovh: &OvhDriver, id: &str, state: NodeState) {
    for _ in 0..200 {
        if ovh.get_node(id).await.unwrap().state == state {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{id} never reached {state}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reboot_stop_and_start_reach_the_instances_machine() {
    let bed = TestBed::new().unwrap();
    let fake = FakeOvh::start(bed.driver().clone(), OvhConfig::default())
        .await
        .unwrap();
    let ovh: Arc<OvhDriver> = Arc::new(driver(&fake));
    let node = ovh
        .create_node(&crate::ovh_request(&bed, "power"))
        .await
        .unwrap();
    wait_state(&ovh, &node.id, NodeState::Running).await;
    let machine = format!("ovh-{}", &node.id[..8]);
    let first = boot_id(&bed, &machine).await;
    ovh.reboot_node(&node).await.unwrap();
    assert_ne!(
        boot_id(&bed, &machine).await,
        first,
        "the machine booted again"
    );
    // OVH's reboot needs its type: without one it is refused.
    let path = format!(
        "/cloud/project/{}/instance/{}/reboot",
        fake.account().project,
        node.id
    );
    let err = ovh
        .client()
        .call(reqwest::Method::POST, &path, None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("Invalid parameter type"), "{err}");

    ovh.stop_node(&node).await.unwrap();
    wait_state(&ovh, &node.id, NodeState::Stopped).await;
    let local = bed.driver().find(&machine).await.unwrap();
    assert_eq!(local.state, NodeState::Stopped, "the machine is off");
    ovh.start_node(&node).await.unwrap();
    wait_state(&ovh, &node.id, NodeState::Running).await;
    let local = bed.driver().find(&machine).await.unwrap();
    assert_ne!(local.state, NodeState::Stopped, "the machine is on again");
    ovh.destroy_node(&node).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_and_volumes_must_be_in_the_instances_region() {
    let bed = TestBed::new().unwrap();
    let fake = FakeOvh::start(bed.driver().clone(), OvhConfig::default())
        .await
        .unwrap();
    let ovh = driver(&fake);
    // A key imported for SBG5 only cannot go on an instance in GRA1.
    let path = format!("/cloud/project/{}/sshkey", fake.account().project);
    let key = ovh
        .client()
        .call(
            reqwest::Method::POST,
            &path,
            Some(&serde_json::json!({"name": "sbg-only", "publicKey": bed.client_public_key(), "region": "SBG5"})),
        )
        .await
        .unwrap();
    let request = |extra: Vec<(String, Value)>| CreateNode {
        name: "regional".into(),
        image: Some(IMAGE.into()),
        size: Some("b2-7".into()),
        location: Some("GRA11".into()),
        extra: extra.into_iter().collect(),
        ..Default::default()
    };
    let err = ovh
        .create_node(&request(vec![("ssh_key_id".into(), key["id"].clone())]))
        .await
        .unwrap_err();
    let err = nodeup::engine::error_chain(&err);
    assert!(err.contains("not available in region GRA11"), "{err}");
    assert!(fake.instance_names().is_empty());

    // A volume in SBG5 cannot be attached to an instance in GRA1.
    let node = ovh.create_node(&request(vec![])).await.unwrap();
    let volume = ovh
        .create_volume(&CreateVolume {
            size_gb: 10,
            name: "far".into(),
            location: Some("SBG5".into()),
            volume_type: None,
            description: None,
            snapshot: None,
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let err = ovh.attach_volume(&node, &volume).await.unwrap_err();
    assert!(matches!(err, ProviderError::Failed { .. }), "{err}");
    let err = nodeup::engine::error_chain(&err);
    assert!(err.contains("is in region \"SBG5\""), "{err}");
    ovh.destroy_node(&node).await.unwrap();
}

/// What the seed does with keys and shared volumes: `ssh_key_name` takes a key by its name (the
/// key stays when the node goes, it is the user's); the key a deploy imported (`nodeup-...`) goes
/// with the last instance that uses it; a volume attached to several instances is detached from
/// one only when the node is named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_by_name_imported_keys_released_and_shared_volumes() {
    let bed = TestBed::new().unwrap();
    let fake = FakeOvh::start(bed.driver().clone(), OvhConfig::default())
        .await
        .unwrap();
    let ovh = driver(&fake);
    let laptop = ovh
        .import_key_pair_from_string("laptop", bed.client_public_key(), Some("GRA11"))
        .await
        .unwrap();
    let mut by_name = crate::ovh_request(&bed, "by-name");
    by_name.auth = None;
    by_name
        .extra
        .insert("ssh_key_name".into(), Value::from("laptop"));
    let first = ovh.create_node(&by_name).await.unwrap();
    assert_eq!(first.extra["ssh_key_id"], laptop.extra["id"]);
    let mut unknown = by_name.clone();
    unknown.name = "unknown-key".into();
    unknown
        .extra
        .insert("ssh_key_name".into(), Value::from("desktop"));
    let err = nodeup::engine::error_chain(&ovh.create_node(&unknown).await.unwrap_err());
    assert!(
        err.contains("desktop") && err.contains("ssh_key_name"),
        "{err}"
    );

    let other = crate::keygen(bed.dir(), "other", "");
    let mut imported = crate::ovh_request(&bed, "imported");
    imported.auth = Some(nodeup::model::NodeAuth::SshKey(
        std::fs::read_to_string(other.with_extension("pub")).unwrap(),
    ));
    let second = ovh.create_node(&imported).await.unwrap();
    let key_names = || async {
        let mut names: Vec<String> = ovh
            .list_key_pairs(None)
            .await
            .unwrap()
            .into_iter()
            .map(|k| k.name)
            .collect();
        names.sort();
        names
    };
    let names = key_names().await;
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names[1].starts_with("nodeup-"), "{names:?}");

    let shared = ovh
        .create_volume(&CreateVolume {
            size_gb: 10,
            name: "shared".into(),
            location: Some("GRA11".into()),
            volume_type: Some("classic-multiattach".into()),
            description: None,
            snapshot: None,
        })
        .await
        .unwrap();
    crate::ovh::wait_volume(&ovh, &shared.id, "available").await;
    for node in [&first, &second] {
        ovh.attach_volume(node, &shared).await.unwrap();
    }
    let err = ovh.detach_volume(&shared, None).await.unwrap_err();
    assert!(matches!(err, ProviderError::InvalidRequest { .. }), "{err}");
    assert!(err.to_string().contains("attached to 2 instances"), "{err}");
    ovh.detach_volume(&shared, Some(&second)).await.unwrap();
    ovh.detach_volume(&shared, None).await.unwrap();
    crate::ovh::wait_volume(&ovh, &shared.id, "available").await;
    ovh.destroy_volume(&shared).await.unwrap();

    ovh.destroy_node(&second).await.unwrap();
    assert_eq!(key_names().await, ["laptop"], "the imported key went");
    ovh.destroy_node(&first).await.unwrap();
    assert_eq!(key_names().await, ["laptop"], "the user's key stays");
}
