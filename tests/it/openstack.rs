//! OpenStack against its fake (testbed::fake_openstack): every method, `nodeup deploy` from a
//! `clouds.yaml` entry, floating IPs, a lost create answer, tokens that expire mid-run, servers
//! that go to ERROR, a quota, a flavor not offered, and cleanup after SIGKILL.

use std::time::Duration;

use nodeup::driver::{NodeDriver, ProviderError};
use nodeup::model::{CreateNode, CreateVolume, NodeAuth, NodeState};
use nodeup::providers::openstack::{config, OpenStackDriver, OpenStackSettings};
use testbed::fake_openstack::{FakeOpenStack, Fault, OpenStackConfig, RouteFault};
use testbed::TestBed;

use crate::{assert_ok, stderr_of};

/// The fake cloud over the bed's local nodes.
async fn cloud(bed: &TestBed, config: OpenStackConfig) -> FakeOpenStack {
    FakeOpenStack::start(bed.driver().clone(), config)
        .await
        .unwrap()
}

/// A driver of the fake's `clouds.yaml` entry (its password, or its application credential).
fn driver(fake: &FakeOpenStack, password: bool) -> OpenStackDriver {
    let cloud = config::from_yaml(&fake.clouds_yaml("fake", password), "fake").unwrap();
    let mut driver = OpenStackDriver::with_cloud(cloud, OpenStackSettings::default()).unwrap();
    driver.client_mut().http_mut().retry.min_delay = Duration::from_millis(10);
    driver
}

fn debian(bed: &TestBed, name: &str) -> CreateNode {
    CreateNode {
        name: name.into(),
        image: Some("Debian 12".into()),
        size: Some("d2-2".into()),
        auth: Some(NodeAuth::SshKey(bed.client_public_key().into())),
        ..Default::default()
    }
}

/// Polls until the server is in `state`.
async fn until(os: &OpenStackDriver, id: &str, state: NodeState) -> nodeup::model::Node {
    for _ in 0..400 {
        let node = os.get_node(id).await.unwrap();
        if node.state == state {
            return node;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("server {id} never reached {state:?}");
}

/// Writes the fake's `clouds.yaml` (entry `fake`, the user's password) in the bed; the
/// variables that point OpenStack's tools at it.
fn clouds_env(bed: &TestBed, fake: &FakeOpenStack) -> Vec<(String, String)> {
    let path = crate::write_file(bed.dir(), "clouds.yaml", &fake.clouds_yaml("fake", true));
    vec![("OS_CLIENT_CONFIG_FILE".into(), path.display().to_string())]
}

/// `nodeup ARGS` with the fake's clouds.yaml and the bed's key.
fn nodeup_os(bed: &TestBed, fake: &FakeOpenStack, args: &[&str]) -> std::process::Command {
    let mut cmd = crate::nodeup_on(bed, args);
    cmd.envs(clouds_env(bed, fake))
        .arg("--key")
        .arg(bed.client_key());
    cmd
}

/// A step file for `count` Debian 12 servers on d2-2 named `name`, from the entry `fake`.
fn step_file(bed: &TestBed, name: &str, count: usize, options: &str, script: &str) -> String {
    let path = crate::write_file(
        bed.dir(),
        &format!("{name}.toml"),
        &format!(
            "[provider]\ncloud = \"fake\"\n\n[node]\nprovider = \"openstack\"\n\
             name = \"{name}-{{index}}\"\ncount = {count}\nimage = \"Debian 12\"\n\
             size = \"d2-2\"\noptions = {{ {options} }}\n\n[[step]]\ninline = '''{script}'''\n"
        ),
    );
    path.display().to_string()
}

/// The catalog (flavors, the newest of two images of a name, an image not active, zones), key
/// pairs generated and imported, a server created by image and flavor name and logged in to with
/// its key pair, rebooted, stopped and started on its machine, a volume attached, detached,
/// snapshotted and deleted, and the server destroyed with the key pair nodeup imported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_method_against_the_fake() {
    let bed = TestBed::new().unwrap();
    let fake = cloud(&bed, OpenStackConfig::default()).await;
    let os = driver(&fake, false);
    let sizes = os.list_sizes(None).await.unwrap();
    assert_eq!(sizes.len(), 4);
    assert!(sizes
        .iter()
        .any(|s| s.name == "b3-8" && s.ram_mib == 8192 && s.vcpus == Some(2)));
    let images = os.list_images(None, None).await.unwrap();
    assert_eq!(images.len(), 3, "the active ones: {images:?}");
    let newest = os.get_image("Debian 12").await.unwrap();
    assert_eq!(newest.extra["created_at"], "2025-11-03T08:00:00Z");
    let e = os.get_image("Debian 13").await.unwrap_err().to_string();
    assert!(e.contains("queued") && e.contains("not active"), "{e}");
    let zones = os.list_locations().await.unwrap();
    assert_eq!(zones[0].id, "nova");
    let regions = os.ex_list_regions().await.unwrap();
    assert_eq!(regions[0].id, fake.region());

    let made = os.create_key_pair("laptop", None).await.unwrap();
    assert!(made
        .private_key
        .as_deref()
        .unwrap()
        .contains("OPENSSH PRIVATE KEY"));
    let other =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE1Pq5nfxo0Gf9Zl8Ck7wJk0Q0d3gq2Tq2xC8o5k0yXr x";
    os.import_key_pair_from_string("desk", other, None)
        .await
        .unwrap();
    assert_eq!(os.get_key_pair("desk").await.unwrap().public_key, other);
    assert_eq!(os.list_key_pairs(None).await.unwrap().len(), 2);
    os.delete_key_pair(&made).await.unwrap();
    assert!(matches!(
        os.get_key_pair("laptop").await,
        Err(ProviderError::NotFound { .. })
    ));

    let mut request = debian(&bed, "web-1");
    request.run = Some("run-1".into());
    let created = os.create_node(&request).await.unwrap();
    let node = until(&os, &created.id, NodeState::Running).await;
    assert_eq!(node.run(), Some("run-1"));
    assert_eq!(node.image.as_deref(), Some(newest.id.as_str()));
    let machine = fake.node_of("web-1").unwrap();
    assert_eq!(
        node.public_ips, machine.public_ips,
        "Ext-Net gives the machine's address"
    );
    let (_, out) = crate::ssh_root_on(&bed, &machine.id, "id -un").await;
    assert_eq!(crate::stdout(&out), "root\n", "the imported key logs in");
    let imported: Vec<String> = fake
        .keypair_names()
        .into_iter()
        .filter(|k| k.starts_with("nodeup-"))
        .collect();
    assert_eq!(imported.len(), 1);

    os.reboot_node(&node).await.unwrap();
    until(&os, &node.id, NodeState::Running).await;
    os.stop_node(&node).await.unwrap();
    until(&os, &node.id, NodeState::Stopped).await;
    let e = nodeup::error_chain(&os.stop_node(&node).await.unwrap_err());
    assert!(e.contains("409") && e.contains("vm_state stopped"), "{e}");
    os.start_node(&node).await.unwrap();
    until(&os, &node.id, NodeState::Running).await;
    os.ex_reboot_node(&node, true).await.unwrap();
    until(&os, &node.id, NodeState::Running).await;
    let (_, out) = crate::ssh_root_on(&bed, &machine.id, "echo back").await;
    assert_eq!(crate::stdout(&out), "back\n", "the machine is up again");

    let volume = os
        .create_volume(&CreateVolume {
            size_gb: 10,
            name: "data".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    os.attach_volume(&node, &volume).await.unwrap();
    let attached = os.get_volume(&volume.id).await.unwrap();
    assert_eq!(attached.attached_to.as_deref(), Some(node.id.as_str()));
    assert_eq!(attached.state, "in-use");
    let snapshot = os
        .create_volume_snapshot(&attached, Some("nightly"), None)
        .await
        .unwrap();
    assert_eq!(os.list_volume_snapshots(&attached).await.unwrap().len(), 1);
    os.detach_volume(&attached, None).await.unwrap();
    os.destroy_volume_snapshot(&snapshot).await.unwrap();
    os.destroy_volume(&attached).await.unwrap();
    assert!(os.list_volumes().await.unwrap().is_empty());

    os.destroy_node(&node).await.unwrap();
    assert!(os.list_nodes().await.unwrap().is_empty());
    assert!(fake.node_of("web-1").is_none());
    assert_eq!(
        fake.keypair_names(),
        ["desk"],
        "the imported key pair went with it"
    );
    assert!(
        crate::bed_leftovers(&bed).is_empty(),
        "{:?}",
        crate::bed_leftovers(&bed)
    );
}

/// `nodeup deploy` from a clouds.yaml entry (named in the step file, the file found through
/// OS_CLIENT_CONFIG_FILE), by image and flavor name: the step ran on the server's machine; a
/// failing step destroys its server; a wrong password exits 2 naming the entry, before anything
/// is created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_from_a_clouds_yaml_entry() {
    let bed = TestBed::new().unwrap();
    let fake = cloud(&bed, OpenStackConfig::default()).await;
    let file = step_file(&bed, "web", 1, "", "echo deployed > /tmp/mark; id -un");
    let out = nodeup_os(
        &bed,
        &fake,
        &["deploy", &file, "--json", "--keep-on-failure"],
    )
    .output()
    .unwrap();
    assert_ok(&out);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["steps"][0]["stdout"], "root\n", "{report}");
    let machine = bed.adopt(fake.node_of("web-1").unwrap());
    assert_eq!(machine.read_file("/tmp/mark").unwrap(), b"deployed\n");
    // The API calls of one deploy, counted exactly (only the wait's polls depend on timing).
    let mut calls = fake.calls();
    let polls = calls
        .remove("GET /compute/v2.1/servers/detail")
        .unwrap_or(0);
    assert!((1..=20).contains(&polls), "{polls} polls");
    let once: std::collections::BTreeMap<String, u32> = [
        "POST /identity/v3/auth/tokens",
        "GET /image/v2/images",
        "GET /compute/v2.1/flavors/detail",
        "POST /compute/v2.1/os-keypairs",
        "POST /compute/v2.1/servers",
    ]
    .into_iter()
    .map(|c| (c.to_string(), 1))
    .collect();
    assert_eq!(calls, once, "one of each, and nothing else");
    fake.reset_calls();

    let failing = step_file(&bed, "bad", 1, "", "exit 3");
    let out = nodeup_os(&bed, &fake, &["deploy", &failing])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    assert_eq!(fake.server_names(), ["web-1"], "the failed server is gone");

    let wrong = fake.clouds_yaml("fake", true).replace(
        &format!("password: {}", fake.account().password),
        "password: wrong",
    );
    let path = crate::write_file(bed.dir(), "wrong.yaml", &wrong);
    let creates = fake.creates();
    let out = crate::nodeup_on(&bed, &["deploy", &file, "--key"])
        .arg(bed.client_key())
        .env("OS_CLIENT_CONFIG_FILE", &path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
    let text = stderr_of(&out);
    assert!(
        text.contains("clouds.yaml entry \"fake\"") && text.contains("wrong.yaml"),
        "{text}"
    );
    assert_eq!(fake.creates(), creates, "nothing was created");
}

/// The `OS_*` variables of an openrc file, without any clouds.yaml: `nodeup list` sees the
/// servers; an entry that is not in clouds.yaml is named with the ones that are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_os_variables_and_a_missing_entry() {
    let bed = TestBed::new().unwrap();
    let fake = cloud(&bed, OpenStackConfig::default()).await;
    let os = driver(&fake, true);
    let node = os.create_node(&debian(&bed, "listed")).await.unwrap();
    let out = crate::nodeup_on(
        &bed,
        &["nodes", "list", "--provider", "openstack", "--json"],
    )
    .envs(fake.env())
    .output()
    .unwrap();
    assert_ok(&out);
    assert!(
        crate::stdout(&out).contains("\"listed\""),
        "{}",
        crate::stdout(&out)
    );

    let out = crate::nodeup_on(&bed, &["nodes", "list", "--provider", "openstack"])
        .envs(clouds_env(&bed, &fake))
        .env("OS_CLOUD", "production")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
    let text = stderr_of(&out);
    assert!(
        text.contains("no cloud \"production\"") && text.contains("fake"),
        "{text}"
    );
    until(&os, &node.id, NodeState::Running).await;
    os.destroy_node(&node).await.unwrap();
}

/// A server on the private network gets a floating IP from Ext-Net (the only address that
/// reaches it), is deployed through it, and the floating IP is released with the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_floating_ip_is_allocated_and_released() {
    let bed = TestBed::new().unwrap();
    let config = OpenStackConfig {
        private_network: true,
        ..OpenStackConfig::default()
    };
    let fake = cloud(&bed, config).await;
    let options = "networks = [\"private\"], floating_ip_network = \"Ext-Net\"";
    let file = step_file(&bed, "float", 1, options, "hostname");
    let out = nodeup_os(&bed, &fake, &["deploy", &file, "--json"])
        .output()
        .unwrap();
    assert_ok(&out);
    let floating = fake.floating_ips();
    assert_eq!(floating.len(), 1);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let node = &report["node"];
    assert_eq!(
        node["public_ips"],
        serde_json::json!([floating[0]]),
        "{report}"
    );
    assert!(
        node["private_ips"][0]
            .as_str()
            .unwrap()
            .starts_with("10.0.0."),
        "{report}"
    );

    let os = driver(&fake, true);
    let listed = os.list_nodes().await.unwrap();
    os.destroy_node(&listed[0]).await.unwrap();
    assert!(fake.floating_ips().is_empty(), "released with the server");
    assert!(fake.server_names().is_empty());

    let multiple = step_file(&bed, "many", 1, "", "true");
    let out = nodeup_os(&bed, &fake, &["deploy", &multiple])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "nothing was created: {}",
        stderr_of(&out)
    );
    let text = stderr_of(&out);
    assert!(
        text.contains("Multiple possible networks") && text.contains("networks = ["),
        "{text}"
    );
}

/// A fleet of 5 while Nova loses the first create's answer (after making the server) and
/// throttles, and every token expires a second after it is issued: five servers, each made once,
/// each deployed; the tokens renewed on the way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_of_five_through_lost_answers_and_expiring_tokens() {
    let bed = TestBed::new().unwrap();
    let config = OpenStackConfig {
        token_lifetime: Duration::from_millis(1200),
        build_time: Duration::from_millis(1500),
        ..OpenStackConfig::default()
    };
    let fake = cloud(&bed, config).await;
    fake.set_faults(vec![
        RouteFault::new("POST", "/servers", Fault::LoseAnswer, 1),
        RouteFault::new("GET", "/servers/*", Fault::TooMany { retry_after: 0 }, 3),
        RouteFault::new("GET", "/flavors/detail", Fault::Error500, 2),
    ]);
    let file = step_file(&bed, "fleet", 5, "", "hostname > /tmp/who");
    let out = nodeup_os(&bed, &fake, &["deploy", &file, "--json"])
        .output()
        .unwrap();
    assert_ok(&out);
    assert_eq!(fake.faults_fired().lost_answers, 1);
    assert_eq!(
        fake.creates(),
        5,
        "the lost create was found, not sent again"
    );
    let mut names = fake.server_names();
    names.sort();
    assert_eq!(
        names,
        ["fleet-1", "fleet-2", "fleet-3", "fleet-4", "fleet-5"]
    );
    assert!(
        fake.tokens_issued() >= 2,
        "renewed: {}",
        fake.tokens_issued()
    );
    for name in &names {
        let machine = bed.adopt(fake.node_of(name).unwrap());
        assert!(!machine.read_file("/tmp/who").unwrap().is_empty());
    }
    let calls = fake.calls();
    assert_eq!(calls.get("GET /image/v2/images"), Some(&1), "{calls:?}");
    assert_eq!(
        calls.get("POST /compute/v2.1/os-keypairs"),
        Some(&1),
        "{calls:?}"
    );
    let os = driver(&fake, true);
    for node in os.list_nodes().await.unwrap() {
        os.destroy_node(&node).await.unwrap();
    }
}

/// A token is kept while valid; one the cloud stops honouring before its time (revoked, or the
/// clock) gets the refused call a new token; one near its end is renewed before it ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_is_renewed_once() {
    let bed = TestBed::new().unwrap();
    let fake = cloud(&bed, OpenStackConfig::default()).await;
    let os = driver(&fake, true);
    os.list_nodes().await.unwrap();
    assert_eq!(os.client().tokens_issued(), 1);
    os.list_nodes().await.unwrap();
    assert_eq!(os.client().tokens_issued(), 1, "kept while valid");
    fake.expire_tokens();
    os.list_sizes(None).await.unwrap();
    assert_eq!(os.client().tokens_issued(), 2);

    // Renewed before it ends: a 2 s token is replaced once three quarters of its life are gone,
    // while it is still valid (no call is refused on the way).
    fake.configure(|c| c.token_lifetime = Duration::from_secs(2));
    fake.expire_tokens();
    os.list_nodes().await.unwrap();
    assert_eq!(os.client().tokens_issued(), 3);
    fake.reset_calls();
    tokio::time::sleep(Duration::from_millis(1600)).await;
    os.list_nodes().await.unwrap();
    assert_eq!(os.client().tokens_issued(), 4, "renewed ahead of its end");
    assert_eq!(
        fake.calls().get("GET /compute/v2.1/servers/detail"),
        Some(&1),
        "sent once: the old token was not tried and refused first"
    );
}

/// A build that goes to ERROR: the deploy fails with Nova's fault message and the server is
/// deleted; a quota used up and a flavor not offered are refused before anything is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_say_what_to_do_and_leave_nothing() {
    let bed = TestBed::new().unwrap();
    let config = OpenStackConfig {
        failing_builds: 1,
        ..OpenStackConfig::default()
    };
    let fake = cloud(&bed, config).await;
    let file = step_file(&bed, "doomed", 1, "", "true");
    let out = nodeup_os(&bed, &fake, &["deploy", &file]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    let text = stderr_of(&out);
    assert!(text.contains("No valid host was found"), "{text}");
    assert!(
        fake.server_names().is_empty(),
        "the server in ERROR is deleted"
    );

    fake.configure(|c| c.max_servers = Some(0));
    let out = nodeup_os(&bed, &fake, &["deploy", &file]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "nothing was created: {}",
        stderr_of(&out)
    );
    let text = stderr_of(&out);
    assert!(
        text.contains("Quota exceeded for instances") && text.contains("quota"),
        "{text}"
    );
    fake.configure(|c| c.max_servers = None);

    let creates = fake.creates();
    let big = crate::write_file(
        bed.dir(),
        "big.toml",
        "[provider]\ncloud = \"fake\"\n\n[node]\nprovider = \"openstack\"\nname = \"big\"\n\
         image = \"Debian 12\"\nsize = \"x9-999\"\n\n[[step]]\ninline = \"true\"\n",
    );
    let out = nodeup_os(&bed, &fake, &["deploy", big.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "nothing was created: {}",
        stderr_of(&out)
    );
    let text = stderr_of(&out);
    assert!(
        text.contains("x9-999") && text.contains("not offered"),
        "{text}"
    );
    assert_eq!(fake.creates(), creates);
    assert!(fake.server_names().is_empty());
    assert!(
        crate::bed_leftovers(&bed).is_empty(),
        "{:?}",
        crate::bed_leftovers(&bed)
    );
}

/// A deploy killed with SIGKILL in its script: `nodeup cleanup --yes` finds its server (by the
/// journal, the name and the run in its metadata) and leaves zero servers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_after_sigkill_leaves_no_server() {
    let bed = TestBed::new().unwrap();
    let fake = cloud(&bed, OpenStackConfig::default()).await;
    let file = step_file(&bed, "busy", 1, "", "sleep 60");
    let cmd = nodeup_os(&bed, &fake, &["deploy", &file]);
    let (mut child, _, _rest) = crate::spawn_until(cmd, "step 1/1: script");
    crate::signal(&child, libc::SIGKILL);
    child.wait().unwrap();
    assert_eq!(fake.server_names(), ["busy-1"]);
    let out = crate::nodeup_on(&bed, &["cleanup", "--yes", "--json"])
        .envs(clouds_env(&bed, &fake))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert!(fake.server_names().is_empty());
    assert!(
        fake.keypair_names().is_empty(),
        "{:?}",
        fake.keypair_names()
    );
    assert!(
        crate::bed_leftovers(&bed).is_empty(),
        "{:?}",
        crate::bed_leftovers(&bed)
    );
}

/// OpenStack's own client library, as its users call it, against the fake: the catalog, a key
/// pair, a server on the private network waited for, a floating IP on its port, reboot, stop and
/// start waited for by status, a volume attached and detached, the server deleted; Nova's 404 and
/// 400 and Keystone's 401 as openstacksdk's own exceptions.
const OPENSTACKSDK: &str = r##"
import sys, openstack
from keystoneauth1 import exceptions as ks
pub = open(sys.argv[1]).read().strip()
conn = openstack.connect(cloud="fake")
print("flavors", sorted(f.name for f in conn.compute.flavors()))
print("images", sorted((i.name, i.status) for i in conn.image.images()))
ext = conn.network.find_network("Ext-Net")
private = conn.network.find_network("private")
print("external", ext.is_router_external, "private", private.is_router_external)
conn.compute.create_keypair(name="sdk", public_key=pub)
image = conn.image.find_image("Ubuntu 24.04")
flavor = conn.compute.find_flavor("d2-2")
server = conn.compute.create_server(name="sdk-1", image_id=image.id, flavor_id=flavor.id,
                                    networks=[{"uuid": private.id}], key_name="sdk")
server = conn.compute.wait_for_server(server, wait=60, interval=0.2)
port = next(conn.network.ports(device_id=server.id))
ip = conn.network.create_ip(floating_network_id=ext.id, port_id=port.id, description="sdk")
server = conn.compute.get_server(server.id)
kinds = sorted(a["OS-EXT-IPS:type"] for n in server.addresses.values() for a in n)
print("status", server.status, "addresses", kinds)
print("floating", ip.floating_ip_address, ip.status)
sys.stdout.flush()
input()
conn.compute.reboot_server(server, "HARD")
conn.compute.wait_for_server(server, status="ACTIVE", wait=60, interval=0.2)
conn.compute.stop_server(server)
conn.compute.wait_for_server(server, status="SHUTOFF", wait=60, interval=0.2)
conn.compute.start_server(server)
conn.compute.wait_for_server(server, status="ACTIVE", wait=60, interval=0.2)
vol = conn.block_storage.create_volume(size=1, name="sdk-vol")
vol = conn.block_storage.wait_for_status(vol, "available", wait=30, interval=0.2)
conn.compute.create_volume_attachment(server, volume_id=vol.id)
print("attached", conn.block_storage.get_volume(vol.id).status)
conn.compute.delete_volume_attachment(server, vol.id)
conn.block_storage.delete_volume(vol)
conn.network.delete_ip(ip)
conn.compute.delete_server(server)
conn.compute.wait_for_delete(server, wait=30, interval=0.2)
print("servers", [s.name for s in conn.compute.servers()])
try:
    conn.compute.get_server("no-such-server")
except openstack.exceptions.NotFoundException as e:
    print("missing", e.status_code)
try:
    conn.compute.create_server(name="q", image_id="nope", flavor_id=flavor.id,
                               networks=[{"uuid": private.id}])
except openstack.exceptions.BadRequestException as e:
    print("bad image", e.details)
bad = openstack.connect(auth_url=conn.config.auth["auth_url"], username="x", password="y",
                        project_name="p", user_domain_name="Default",
                        project_domain_name="Default", region_name=conn.config.region_name)
try:
    list(bad.compute.servers())
except ks.Unauthorized as e:
    print("unauthorized", e.http_status)
"##;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openstack_s_own_clients_work_against_the_fake() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let bed = TestBed::new().unwrap();
    let config = OpenStackConfig {
        private_network: true,
        ..OpenStackConfig::default()
    };
    let fake = cloud(&bed, config).await;
    let public = crate::write_file(bed.dir(), "client.pub", bed.client_public_key());
    let python = testbed::python::tool("python").expect("the tests' virtualenv: bash .ci/run");
    let mut child = tokio::process::Command::new(python)
        .args(["-c", OPENSTACKSDK])
        .arg(&public)
        .envs(clouds_env(&bed, &fake))
        .env("OS_CLOUD", "fake")
        .env("HOME", bed.dir())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut text = String::new();
    while let Some(line) = lines.next_line().await.unwrap() {
        text.push_str(&line);
        text.push('\n');
        if line.starts_with("floating ") {
            break;
        }
    }
    // Through the floating IP openstacksdk put on the server, the key it imported logs in.
    let address = text
        .lines()
        .last()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .to_string();
    let machine = fake.node_of("sdk-1").expect("the server's machine");
    assert_eq!(machine.public_ips[0].to_string(), address, "{text}");
    let (_, out) = crate::ssh_root_on(&bed, &machine.id, "id -un").await;
    assert_eq!(crate::stdout(&out), "root\n");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"\n").await.unwrap();
    drop(stdin);
    while let Some(line) = lines.next_line().await.unwrap() {
        text.push_str(&line);
        text.push('\n');
    }
    assert!(child.wait().await.unwrap().success(), "{text}");
    for expected in [
        "flavors ['b3-8', 'c3-4', 'd2-2', 's1-2']\n",
        "images [('Debian 12', 'active'), ('Debian 12', 'active'), ('Debian 13', 'queued'), \
         ('Ubuntu 24.04', 'active')]\n",
        "external True private False\n",
        "status ACTIVE addresses ['fixed', 'floating']\n",
        "attached in-use\n",
        "servers []\n",
        "missing 404\n",
        "bad image Can not find requested image\n",
        "unauthorized 401\n",
    ] {
        assert!(text.contains(expected), "{expected:?} in:\n{text}");
    }
    assert!(fake.node_of("sdk-1").is_none());

    // The `openstack` command line reads the same clouds.yaml.
    let cli = testbed::python::tool("openstack").unwrap();
    let out = tokio::process::Command::new(cli)
        .args(["flavor", "show", "b3-8", "-f", "json"])
        .envs(clouds_env(&bed, &fake))
        .env("OS_CLOUD", "fake")
        .env("HOME", bed.dir())
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let flavor: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(flavor["ram"], 8192);
    assert_eq!(flavor["vcpus"], 2);
}

/// A clouds.yaml in the current directory with its password in secure.yaml beside it (as
/// openstacksdk reads them), and a cloud behind a private certificate authority trusted through
/// the entry's `cacert`: refused without it, with the hint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secure_yaml_in_the_current_directory_and_cacert() {
    let bed = TestBed::new().unwrap();
    let fake = cloud(&bed, OpenStackConfig::default()).await;
    let front = testbed::tls::TlsFront::start(fake.addr()).await.unwrap();
    fake.advertise(&front.url());
    let password = format!("      password: {}\n", fake.account().password);
    let clouds = fake.clouds_yaml("fake", true).replace(&password, "");
    assert!(!clouds.contains(&fake.account().password));
    crate::write_file(bed.dir(), "clouds.yaml", &clouds);
    crate::write_file(
        bed.dir(),
        "secure.yaml",
        &format!("clouds:\n  fake:\n    auth:\n{password}"),
    );
    let list = ["nodes", "list", "--provider", "openstack", "--json"];
    let out = crate::nodeup_on(&bed, &list)
        .env("OS_CLOUD", "fake")
        .output()
        .unwrap();
    let text = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("certificate is not trusted"), "{text}");

    let with_ca = format!("{clouds}    cacert: {}\n", front.ca_file().display());
    crate::write_file(bed.dir(), "clouds.yaml", &with_ca);
    let out = crate::nodeup_on(&bed, &list)
        .env("OS_CLOUD", "fake")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert_eq!(crate::stdout(&out).trim(), "[]");
    assert_eq!(
        fake.tokens_issued(),
        1,
        "the password from secure.yaml was taken"
    );
}

/// The server options reach Nova as it takes them (security groups, user data, metadata, the
/// zone), and one it refuses is named in the error, with nothing left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_options_reach_nova() {
    let bed = TestBed::new().unwrap();
    let fake = cloud(&bed, OpenStackConfig::default()).await;
    let os = driver(&fake, true);
    let mut request = debian(&bed, "opts");
    request.location = Some("nova".into());
    request.extra = serde_json::from_value(serde_json::json!({
        "security_groups": ["default"],
        "user_data": "#cloud-config\npackages: [htop]\n",
        "metadata": {"team": "web"},
        "config_drive": true,
        "networks": ["Ext-Net"],
    }))
    .unwrap();
    let node = os.create_node(&request).await.unwrap();
    until(&os, &node.id, NodeState::Running).await;
    os.destroy_node(&node).await.unwrap();

    request.extra =
        serde_json::from_value(serde_json::json!({"security_groups": ["web"]})).unwrap();
    let e = nodeup::error_chain(&os.create_node(&request).await.unwrap_err());
    assert!(e.contains("security_group with name or id 'web'"), "{e}");
    request.extra = serde_json::from_value(serde_json::json!({"colour": "red"})).unwrap();
    let e = os.create_node(&request).await.unwrap_err().to_string();
    assert!(
        e.contains("`colour` is unknown") && e.contains("floating_ip_network"),
        "{e}"
    );
    assert!(fake.server_names().is_empty());
}
