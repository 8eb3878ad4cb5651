//! The fakes as the seeds' own clients see them: requests recorded from those clients' code
//! (Apache Libcloud's NephoScale driver; SlipStream's slipstream-api client), by
//! `testbed/fixtures/replay/record_*.py`, are sent again byte for byte to a fresh fake, and its
//! answers checked: the statuses the client got, and what a user of that client would look at.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use testbed::fake_nephoscale::{FakeNephoScale, NephoConfig};
use testbed::replay::{recordings, send};
use testbed::TestBed;

fn fixtures(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testbed/fixtures/replay")
        .join(name)
}

/// The envelope's `data`, checking that it says success.
fn data(body: &[u8], what: &str) -> Value {
    let envelope: Value = serde_json::from_slice(body).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(envelope["success"], true, "{what}: {envelope}");
    envelope["data"].clone()
}

/// Libcloud's NephoScale driver sent its form bodies without a `Content-Type`, and wrote `None`
/// for the zone and keys it was not given: the fake takes them as the API did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libclouds_nephoscale_driver_is_answered_as_the_api_answered_it() {
    let bed = TestBed::new().unwrap();
    let config = NephoConfig {
        account: Some(("replay".into(), "replay-secret".into())),
        ..NephoConfig::default()
    };
    let fake = FakeNephoScale::start(bed.driver().clone(), config)
        .await
        .unwrap();
    let recorded = recordings(&fixtures("nephoscale")).unwrap();
    assert_eq!(recorded.len(), 21);
    let list_nodes = recorded
        .iter()
        .find(|r| r.name.ends_with("list-nodes"))
        .unwrap()
        .bytes
        .clone();
    for request in &recorded {
        if request.name.ends_with("list-nodes") {
            // The create jobs take a moment; the recording waited for them too.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            loop {
                let (_, body) = send(fake.addr(), &list_nodes).await.unwrap();
                if data(&body, "waiting").as_array().map_or(0, Vec::len) == 2 {
                    break;
                }
                assert!(tokio::time::Instant::now() < deadline, "no servers came");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let (status, body) = send(fake.addr(), &request.bytes).await.unwrap();
        assert_eq!(
            status,
            request.status,
            "{}: {}",
            request.name,
            String::from_utf8_lossy(&body)
        );
        check_nephoscale(&request.name, &body);
    }
}

/// What a user of Libcloud's driver looks at, per request.
fn check_nephoscale(name: &str, body: &[u8]) {
    let what = &name[3..];
    match what {
        "create-ssh-key" | "create-console-key" => {
            assert!(data(body, what)["id"].as_u64().is_some(), "{what}");
        }
        "create-node" | "create-node-defaults" => {
            assert_eq!(data(body, what)["resource_type"], "/job", "{what}");
        }
        "list-nodes" => {
            let servers = data(body, what);
            let servers = servers.as_array().unwrap();
            let defaults = servers.iter().find(|s| s["name"] == "replay-2").unwrap();
            // `None` for the keys and the zone: no keys, the default zone.
            assert_eq!(defaults["server_keys"], serde_json::json!([]), "{defaults}");
            assert_eq!(
                defaults["console_keys"],
                serde_json::json!([]),
                "{defaults}"
            );
            assert!(defaults["zone"]["id"].as_u64().is_some(), "{defaults}");
            let keyed = servers.iter().find(|s| s["name"] == "replay-1").unwrap();
            assert_eq!(keyed["server_keys"].as_array().map(Vec::len), Some(1));
        }
        "rename-node" => {
            data(body, what);
        }
        "wrong-credentials" => {}
        _ => {
            data(body, what);
        }
    }
}

/// SlipStream's own client (slipstream-api 3.71.1, under the Libcloud driver the seed
/// documents) starts from the cloud entry point and searches CIMI collections with forms
/// (`$filter`); reads modules by versioned paths; lists locations from the profile's cloud
/// credentials and sizes from service offers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slipstreams_own_client_is_answered_as_the_api_answered_it() {
    use testbed::fake_slipstream::{FakeSlipStream, SlipConfig};

    let bed = TestBed::new().unwrap();
    let config = SlipConfig {
        account: Some(("replay".into(), "replay-secret".into())),
        counted_ids: true,
        ..SlipConfig::default()
    };
    let fake = FakeSlipStream::start(bed.driver().clone(), config)
        .await
        .unwrap();
    let recorded = recordings(&fixtures("slipstream")).unwrap();
    assert_eq!(recorded.len(), 44);
    for request in &recorded {
        let (mut status, mut body) = send(fake.addr(), &request.bytes).await.unwrap();
        // The client polled each run's state until Ready: so does the replay.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while request.name.ends_with("wait-ready") && body != b"Ready" {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{}: never Ready",
                request.name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
            (status, body) = send(fake.addr(), &request.bytes).await.unwrap();
        }
        assert_eq!(
            status,
            request.status,
            "{}: {}",
            request.name,
            String::from_utf8_lossy(&body)
        );
        check_slipstream(request, &body);
    }
    assert!(fake.active_runs().is_empty(), "both runs were terminated");
    assert!(fake.profile_keys().is_empty(), "the key was deleted again");
}

/// What the seed's client reads of an answer, by the request's first line.
fn check_slipstream(request: &testbed::replay::Recorded, body: &[u8]) {
    let text = String::from_utf8_lossy(&request.bytes);
    let first = text.lines().next().unwrap_or("").to_string();
    let json =
        || -> Value { serde_json::from_slice(body).unwrap_or_else(|e| panic!("{first}: {e}")) };
    let xml = String::from_utf8_lossy(body);
    let wants = |what: &str| assert!(xml.contains(what), "{first}: no {what} in {xml}");
    match first
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["GET", "/api/cloud-entry-point"] => {
            let cep = json();
            for collection in ["sessions", "serviceOffers", "virtualMachines"] {
                assert!(cep[collection]["href"].is_string(), "{cep}");
            }
        }
        ["PUT", "/api/session"] => assert_eq!(json()["count"], 1),
        ["PUT", path] if path.starts_with("/api/service-offer") => {
            let offers = json();
            let in_location = text.contains("connector%2Fhref");
            let wanted = if in_location { 3 } else { 6 };
            assert_eq!(offers["count"], wanted, "{first}: {offers}");
            for offer in offers["serviceOffers"].as_array().unwrap() {
                assert_eq!(offer["resource:type"], "VM");
                assert!(offer["resource:ram"].is_u64() && offer["price:unitCost"].is_f64());
            }
        }
        ["PUT", "/api/virtual-machine"] => {
            let vms = json();
            let wanted = if text.contains("%24filter=deployment") {
                1
            } else {
                2
            };
            assert_eq!(vms["count"], wanted, "{first}: {vms}");
            let vm = &vms["virtualMachines"][0];
            assert!(
                vm["serviceOffer"]["href"]
                    .as_str()
                    .is_some_and(|h| h.starts_with("service-offer/")),
                "{vm}"
            );
            assert!(vm["ip"].is_string(), "{vm}");
        }
        ["GET", "/appstore"] => {
            wants(r#"resourceUri="module/apps/Debian/debian/1234""#);
            wants(r#"version="1234""#);
        }
        ["GET", path] if path.starts_with("/module/") => {
            for attribute in ["parentUri=", "creation=", "lastModified=", "shortName="] {
                wants(attribute);
            }
        }
        ["GET", path] if path.starts_with("/user/") => {
            wants(r#"name="exoscale-ch-gva.username""#);
            wants(r#"name="General.ssh.public.key""#);
        }
        ["GET", path] if path.ends_with("machine:hostname") => {
            assert!(xml.parse::<std::net::IpAddr>().is_ok(), "{first}: {xml}");
        }
        ["GET", path] if path.starts_with("/run?") => {
            assert_eq!(xml.matches("<item ").count(), 2, "{xml}");
        }
        _ => {}
    }
}
