//! NephoScale against its fake (testbed::fake_nephoscale): every method, the credentials, lost and
//! failed answers, and `nodeup deploy` end to end.

use std::time::Duration;

use nodeup::driver::{NodeDriver, ProviderError};
use nodeup::model::{CreateNode, NodeAuth, NodeState};
use nodeup::providers::nephoscale::{Credentials, NephoScaleDriver};
use testbed::fake_nephoscale::{FakeNephoScale, Fault, NephoConfig, RouteFault};
use testbed::TestBed;

use crate::assert_ok;

fn driver(fake: &FakeNephoScale) -> NephoScaleDriver {
    let env: std::collections::BTreeMap<String, String> = fake.env().into_iter().collect();
    let mut driver = NephoScaleDriver::new(Credentials {
        endpoint: env["NEPHOSCALE_ENDPOINT"].clone(),
        username: env["NEPHOSCALE_USERNAME"].clone(),
        password: env["NEPHOSCALE_PASSWORD"].clone(),
    })
    .unwrap();
    driver.client_mut().http_mut().retry.min_delay = Duration::from_millis(10);
    driver.set_job_wait(Duration::from_secs(20));
    driver
}

fn request(bed: &TestBed, name: &str) -> CreateNode {
    CreateNode {
        name: name.into(),
        image: Some("Linux Ubuntu Server 10.04 LTS 64-bit".into()),
        size: Some("CS1 - 1GB, 1Core, 50GB".into()),
        location: Some("RIC-1".into()),
        auth: Some(NodeAuth::SshKey(bed.client_public_key().into())),
        ..Default::default()
    }
}

/// Polls until the server's power is on.
async fn running(driver: &NephoScaleDriver, id: &str) -> nodeup::model::Node {
    for _ in 0..200 {
        let node = driver.get_node(id).await.unwrap();
        if node.state == NodeState::Running {
            return node;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("server {id} never ran");
}

/// Every method against the fake: the catalog (Libcloud's recorded answers), keys of both kinds,
/// a server created (found by name after its job), renamed, stopped and started, logged in to
/// with its server key, and destroyed with the keys nodeup made for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_method_list_against_the_fake() {
    let bed = TestBed::new().unwrap();
    let fake = FakeNephoScale::start(bed.driver().clone(), NephoConfig::default())
        .await
        .unwrap();
    let ns = driver(&fake);
    let zones = ns.list_locations().await.unwrap();
    let names: Vec<&str> = zones.iter().map(|z| z.name.as_str()).collect();
    assert_eq!(names, ["SJC-1", "RIC-1"]);
    assert_eq!(zones[0].country.as_deref(), Some("SJC"));
    assert_eq!(ns.list_images(None, None).await.unwrap().len(), 18);
    let sizes = ns.list_sizes(None).await.unwrap();
    assert_eq!(sizes.len(), 13);
    assert!(sizes
        .iter()
        .any(|s| s.id == "3" && s.ram_mib == 1024 && s.vcpus == Some(1)));

    let other =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE1Pq5nfxo0Gf9Zl8Ck7wJk0Q0d3gq2Tq2xC8o5k0yXr x";
    let pair = ns
        .import_key_pair_from_string("laptop", other, None)
        .await
        .unwrap();
    let pairs = ns.list_key_pairs(None).await.unwrap();
    assert_eq!(pairs.len(), 1);
    assert_eq!(pairs[0].public_key, other);
    let console = ns
        .ex_create_password_key("ops-console", "s3cret")
        .await
        .unwrap();
    let passwords = ns.ex_list_password_keys().await.unwrap();
    assert_eq!(passwords[0].password.as_deref(), Some("s3cret"));
    assert_eq!(ns.ex_list_keys().await.unwrap().len(), 2);
    ns.ex_delete_password_key(console).await.unwrap();
    ns.delete_key_pair(&pair).await.unwrap();
    assert!(ns.ex_list_keys().await.unwrap().is_empty());

    let created = ns.create_node(&request(&bed, "web-1")).await.unwrap();
    assert_eq!(created.name, "web-1");
    assert_eq!(created.size.as_deref(), Some("3"));
    assert_eq!(created.extra["zone"], "RIC-1");
    assert_eq!(created.private_ips.len(), 1, "{created:?}");
    let node = running(&ns, &created.id).await;
    assert_eq!(node.extra["location"], zones[1].id.as_str(), "its zone");
    let names_in = |nodes: Vec<nodeup::model::Node>| -> Vec<String> {
        nodes.into_iter().map(|n| n.name).collect()
    };
    for ric in [zones[1].id.as_str(), "RIC-1"] {
        assert_eq!(names_in(ns.list_nodes_in(ric).await.unwrap()), ["web-1"]);
    }
    assert!(ns.list_nodes_in("SJC-1").await.unwrap().is_empty());
    let ip = node.public_ips[0];
    let machine = fake.node_of("web-1").expect("the server's machine");
    let (machine_ip, out) = crate::ssh_root_on(&bed, &machine.id, "id -un").await;
    assert_eq!(crate::stdout(&out), "root\n", "the server key logs in");
    assert_eq!(ip, machine_ip);
    assert_eq!(
        fake.key_names(),
        ["nodeup-web-1", "nodeup-web-1-console"],
        "the deploy key and a console key"
    );

    ns.ex_rename_node(&node, "web-one").await.unwrap();
    let renamed = ns.get_node(&node.id).await.unwrap();
    assert_eq!(renamed.name, "web-one");
    ns.stop_node(&renamed).await.unwrap();
    assert_eq!(
        ns.get_node(&node.id).await.unwrap().state,
        NodeState::Unknown
    );
    assert_eq!(
        ns.get_node(&node.id).await.unwrap().extra["power_status"],
        "off"
    );
    ns.start_node(&renamed).await.unwrap();
    ns.reboot_node(&renamed).await.unwrap();
    assert_eq!(
        ns.get_node(&node.id).await.unwrap().state,
        NodeState::Running
    );

    ns.destroy_node(&renamed).await.unwrap();
    assert!(ns.list_nodes().await.unwrap().is_empty());
    assert!(fake.server_names().is_empty());
    assert!(
        bed.driver().list_nodes().await.unwrap().is_empty(),
        "no local node left"
    );
}

/// Wrong credentials are the provider-neutral error, naming where they come from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_refused_as_such() {
    let bed = TestBed::new().unwrap();
    let fake = FakeNephoScale::start(bed.driver().clone(), NephoConfig::default())
        .await
        .unwrap();
    let env: std::collections::BTreeMap<String, String> = fake.env().into_iter().collect();
    let ns = NephoScaleDriver::new(Credentials {
        endpoint: env["NEPHOSCALE_ENDPOINT"].clone(),
        username: env["NEPHOSCALE_USERNAME"].clone(),
        password: "wrong".into(),
    })
    .unwrap();
    let e = ns.list_nodes().await.unwrap_err();
    assert!(
        matches!(&e, ProviderError::InvalidCredentials { check, .. } if check.contains("NEPHOSCALE_PASSWORD")),
        "{e}"
    );
    let e = ns.create_node(&request(&bed, "never")).await.unwrap_err();
    assert!(matches!(e, ProviderError::InvalidCredentials { .. }), "{e}");
    assert_eq!(fake.creates(), 0);
}

/// A create whose answer is lost makes exactly one server, found by name; a read that fails with
/// a 500 is retried; a lost destroy answer still leaves nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_and_failed_answers_still_give_one_server_and_leave_nothing() {
    let bed = TestBed::new().unwrap();
    let fake = FakeNephoScale::start(bed.driver().clone(), NephoConfig::default())
        .await
        .unwrap();
    let ns = driver(&fake);
    fake.set_faults(vec![
        RouteFault::new("POST", "/server/cloud", Fault::LoseAnswer, 1),
        RouteFault::new("GET", "/server/cloud", Fault::Error500, 2),
    ]);
    let node = ns.create_node(&request(&bed, "db-1")).await.unwrap();
    assert_eq!(node.name, "db-1");
    let fired = fake.faults_fired();
    assert_eq!((fired.lost_answers, fired.error_500), (1, 2), "{fired:?}");
    assert_eq!(fake.creates(), 1, "sent once");
    assert_eq!(fake.server_names(), ["db-1"]);

    let node = running(&ns, &node.id).await;
    fake.set_faults(vec![RouteFault::new(
        "DELETE",
        "/server/cloud/*",
        Fault::LoseAnswer,
        1,
    )]);
    let _ = ns.destroy_node(&node).await;
    assert!(ns.list_nodes().await.unwrap().is_empty());
    assert!(fake.server_names().is_empty());
    assert!(bed.driver().list_nodes().await.unwrap().is_empty());
}

/// `nodeup deploy` with `provider = "nephoscale"`: the node is created, the steps run on it, and
/// `nodes destroy` removes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_end_to_end_on_the_fake() {
    let bed = TestBed::new().unwrap();
    let fake = FakeNephoScale::start(bed.driver().clone(), NephoConfig::default())
        .await
        .unwrap();
    let steps = bed.dir().join("nephoscale.toml");
    std::fs::write(
        &steps,
        "[node]\nprovider = \"nephoscale\"\nname = \"app-1\"\nimage = \"Linux Ubuntu Server 10.04 LTS 64-bit\"\n\
         size = \"CS05 - 0.5GB, 1Core, 25GB\"\nlocation = \"SJC-1\"\n\n\
         [[step]]\ninline = \"hostname > /root/ran; echo deployed\"\n",
    )
    .unwrap();
    let env = fake.env();
    let nodeup = |args: &[&str]| crate::nodeup_with(&bed, &env, args);
    let key = bed.client_key().to_str().unwrap();
    let out = nodeup(&["deploy", steps.to_str().unwrap(), "--key", key, "--json"]);
    assert_ok(&out);
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["steps"][0]["stdout"], "deployed\n");
    let machine = fake.node_of("app-1").expect("the server's machine");
    let pid = bed.driver().init_pid(&machine.id).unwrap().expect("booted");
    let ran = std::fs::read_to_string(format!("/proc/{pid}/root/root/ran")).unwrap();
    assert_eq!(
        ran,
        format!("{}\n", machine.name),
        "the step ran on the server's machine"
    );
    let listed = nodeup(&["nodes", "list", "--provider", "nephoscale", "--json"]);
    assert_ok(&listed);
    assert!(crate::stdout(&listed).contains("\"app-1\""));
    let gone = nodeup(&["nodes", "destroy", "app-1", "--provider", "nephoscale"]);
    assert_ok(&gone);
    assert!(fake.server_names().is_empty());
    assert!(fake.key_names().is_empty(), "{:?}", fake.key_names());
    assert!(bed.driver().list_nodes().await.unwrap().is_empty());
}
