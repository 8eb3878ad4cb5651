//! EC2 against moto (AWS's API as emulated by others, its server started per test from the
//! tests' virtualenv), and through `testbed fake-ec2` (moto's answers, with a local node for each
//! instance) end to end on real sshd.

use std::time::Duration;

use nodeup::driver::{NodeDriver, ProviderError};
use nodeup::model::{CreateNode, CreateVolume, NodeAuth, NodeState};
use nodeup::providers::ec2::{Access, Ec2Driver, Ec2Settings};
use testbed::fake_ec2::{FakeEc2, Fault, RouteFault};
use testbed::moto::{Moto, REGION};
use testbed::TestBed;

use crate::{assert_ok, stderr_of};

/// A driver for the EC2 API at `endpoint`, with moto's test credentials.
fn driver(endpoint: &str, settings: Ec2Settings) -> Ec2Driver {
    let mut driver = Ec2Driver::with_access(
        Access {
            access_key_id: "testing".into(),
            secret_access_key: "testing".into(),
            session_token: None,
            region: REGION.into(),
            endpoint: Some(endpoint.into()),
        },
        settings,
    )
    .unwrap();
    driver.client_mut().http_mut().retry.min_delay = Duration::from_millis(10);
    driver
}

fn debian(name: &str, bed: &TestBed) -> CreateNode {
    CreateNode {
        name: name.into(),
        image: Some("debian-12-amd64".into()),
        size: Some("t3.micro".into()),
        auth: Some(NodeAuth::SshKey(bed.client_public_key().into())),
        ..Default::default()
    }
}

/// Every method against moto: the catalog (images by name, the newest release, with their login
/// users; instance types; zones; regions), key pairs, an instance created (tagged, with its
/// imported key and idempotency token), listed by zone, rebooted, stopped, started and
/// destroyed (its imported key going with it), volumes and snapshots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_method_against_moto() {
    let bed = TestBed::new().unwrap();
    let moto = Moto::start().unwrap();
    let ec2 = driver(&moto.url(), Ec2Settings::default());

    let image = ec2.get_image("debian-12-amd64").await.unwrap();
    assert_eq!(
        image.name, "debian-12-amd64-20240717-1811",
        "the newest release"
    );
    assert_eq!(image.extra["login_user"], "admin");
    let ubuntu = ec2
        .get_image("ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64")
        .await
        .unwrap();
    assert_eq!(ubuntu.extra["login_user"], "ubuntu");
    let images = ec2.list_images(None, None).await.unwrap();
    assert!(images
        .iter()
        .any(|i| i.extra.get("login_user") == Some(&"ec2-user".into())));
    let missing = ec2.get_image("debian-99").await.unwrap_err();
    assert!(missing.to_string().contains("no image named"), "{missing}");
    let sizes = ec2.list_sizes(None).await.unwrap();
    let micro = sizes.iter().find(|s| s.id == "t3.micro").unwrap();
    assert_eq!((micro.vcpus, micro.ram_mib), (Some(2), 1024));
    let zones = ec2.list_locations().await.unwrap();
    assert!(zones.iter().any(|z| z.id == "eu-west-1a"), "{zones:?}");
    assert!(ec2
        .ex_list_regions()
        .await
        .unwrap()
        .iter()
        .any(|r| r.id == REGION));

    let made = ec2.create_key_pair("made-here", None).await.unwrap();
    assert!(made.private_key.is_some());
    assert!(made.public_key.starts_with("ssh-"), "{}", made.public_key);
    let imported = ec2
        .import_key_pair_from_string("laptop", bed.client_public_key(), None)
        .await
        .unwrap();
    assert_eq!(imported.name, "laptop");
    let names: Vec<String> = ec2
        .list_key_pairs(None)
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.name)
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    ec2.delete_key_pair(&made).await.unwrap();
    ec2.delete_key_pair(&imported).await.unwrap();

    let mut request = debian("web-1", &bed);
    request.location = Some("eu-west-1b".into());
    request.run = Some("0123456789ab".into());
    let node = ec2.create_node(&request).await.unwrap();
    assert!(node.id.starts_with("i-"));
    assert_eq!(node.name, "web-1");
    assert_eq!(node.image.as_deref(), Some(image.id.as_str()));
    assert_eq!(node.extra["location"], "eu-west-1b");
    assert_eq!(node.extra["run"], "0123456789ab");
    assert_eq!(node.login_user(), Some("admin"));
    let key = node.extra["key_name"].as_str().unwrap().to_string();
    assert!(key.starts_with("nodeup-"), "{key}");
    let listed = ec2.list_nodes_in("eu-west-1b").await.unwrap();
    let listed: Vec<&str> = listed.iter().map(|n| n.id.as_str()).collect();
    assert_eq!(listed, [node.id.as_str()]);
    assert!(ec2.list_nodes_in("eu-west-1a").await.unwrap().is_empty());
    ec2.reboot_node(&node).await.unwrap();
    ec2.stop_node(&node).await.unwrap();
    assert_eq!(
        ec2.get_node(&node.id).await.unwrap().state,
        NodeState::Stopped
    );
    ec2.start_node(&node).await.unwrap();

    let volume = ec2
        .create_volume(&CreateVolume {
            size_gb: 10,
            name: "data".into(),
            location: Some("eu-west-1b".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(volume.name, "data");
    ec2.attach_volume(&node, &volume).await.unwrap();
    let attached = ec2.get_volume(&volume.id).await.unwrap();
    assert_eq!(attached.attached_to.as_deref(), Some(node.id.as_str()));
    assert_eq!(attached.extra["device"], "/dev/sdf");
    let snapshot = ec2
        .create_volume_snapshot(&attached, Some("before"), Some("a test"))
        .await
        .unwrap();
    assert_eq!(ec2.list_volume_snapshots(&attached).await.unwrap().len(), 1);
    assert_eq!(
        ec2.get_snapshot(&snapshot.id).await.unwrap().volume_id,
        volume.id
    );
    ec2.destroy_volume_snapshot(&snapshot).await.unwrap();
    ec2.detach_volume(&attached, Some(&node)).await.unwrap();
    ec2.destroy_volume(&attached).await.unwrap();
    assert!(matches!(
        ec2.get_volume(&volume.id).await,
        Err(ProviderError::NotFound { .. })
    ));

    ec2.destroy_node(&node).await.unwrap();
    assert!(ec2.list_nodes().await.unwrap().is_empty());
    assert!(matches!(
        ec2.get_node(&node.id).await,
        Err(ProviderError::NotFound { .. })
    ));
    assert!(
        ec2.list_key_pairs(None)
            .await
            .unwrap()
            .iter()
            .all(|k| k.name != key),
        "the imported key went with its last instance"
    );
    ec2.destroy_node(&node).await.unwrap();
}

/// Wrong credentials: moto refuses them when told to check (as AWS does); nodeup exits 2 naming
/// the variables, and creates nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_credentials_deploy_exits_2_naming_the_variables() {
    let bed = TestBed::new().unwrap();
    let step = crate::write_file(
        bed.dir(),
        "ec2.toml",
        "[node]\nprovider = \"ec2\"\nname = \"never\"\nimage = \"debian-12-amd64\"\n\n\
         [[step]]\ninline = \"true\"\n",
    );
    let out = crate::nodeup_on(&bed, &["deploy", step.to_str().unwrap()])
        .env("AWS_REGION", REGION)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", bed.dir().join("no-config"))
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            bed.dir().join("no-credentials"),
        )
        .env("AWS_ENDPOINT_URL_EC2", "http://127.0.0.1:1")
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_PROFILE")
        .output()
        .unwrap();
    let text = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("AWS_ACCESS_KEY_ID"), "{text}");
    assert!(text.contains("nothing was created"), "{text}");
}

/// `nodeup deploy` of Debian 12 by name through fake-ec2: the instance's machine is logged in to
/// as the image's user (admin, tried first; root would be refused, as on AWS), the step runs
/// there, and a node whose step fails is destroyed (exit 1), its machine with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_by_image_name_through_fake_ec2() {
    let bed = TestBed::new().unwrap();
    let moto = Moto::start().unwrap();
    let fake = FakeEc2::start(&moto.url(), bed.driver().clone())
        .await
        .unwrap();
    let step = crate::write_file(
        bed.dir(),
        "ec2.toml",
        "[node]\nprovider = \"ec2\"\nname = \"web-1\"\nimage = \"debian-12-amd64\"\n\
         size = \"t3.micro\"\n\n[[step]]\ninline = \"id -un; echo deployed > /tmp/mark\"\n",
    );
    let out = crate::nodeup_with(
        &bed,
        &fake.env(),
        &[
            "deploy",
            step.to_str().unwrap(),
            "--key",
            bed.client_key().to_str().unwrap(),
            "--json",
            "--keep-on-failure",
        ],
    );
    assert_ok(&out);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["user"], "admin", "{report}");
    assert_eq!(report["steps"][0]["stdout"], "admin\n");
    let machines = fake.machines();
    assert_eq!(machines.len(), 1);
    let (id, machine) = machines.iter().next().unwrap();
    let on_machine = bed.adopt(machine.clone());
    assert_eq!(on_machine.read_file("/tmp/mark").unwrap(), b"deployed\n");
    let ec2 = driver(&fake.url(), Ec2Settings::default());
    let node = ec2.get_node(id).await.unwrap();
    assert_eq!(
        node.public_ips, machine.public_ips,
        "the machine's address is the instance's"
    );

    let failing = crate::write_file(
        bed.dir(),
        "fail.toml",
        "[node]\nprovider = \"ec2\"\nname = \"web-2\"\nimage = \"debian-12-amd64\"\n\n\
         [[step]]\ninline = \"exit 3\"\n",
    );
    let out = crate::nodeup_with(
        &bed,
        &fake.env(),
        &[
            "deploy",
            failing.to_str().unwrap(),
            "--key",
            bed.client_key().to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    let names: Vec<String> = ec2
        .list_nodes()
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.name)
        .collect();
    assert_eq!(names, ["web-1"], "the failed node is gone");
    assert_eq!(fake.machines().len(), 1);
}

/// With moto checking credentials and signatures as AWS does: nodeup's SigV4 signing is
/// accepted; a wrong secret is AWS's AuthFailure, exit 2 naming the variables.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signatures_are_checked_and_wrong_credentials_exit_2() {
    let bed = TestBed::new().unwrap();
    let (moto, id, secret) = Moto::start_checking_credentials().await.unwrap();
    let access = |secret: &str| Access {
        access_key_id: id.clone(),
        secret_access_key: secret.into(),
        session_token: None,
        region: REGION.into(),
        endpoint: Some(moto.url()),
    };
    let ec2 = Ec2Driver::with_access(access(&secret), Ec2Settings::default()).unwrap();
    assert!(ec2.list_nodes().await.unwrap().is_empty());
    assert_eq!(
        ec2.get_image("debian-12-amd64").await.unwrap().extra["login_user"],
        "admin"
    );
    let wrong = Ec2Driver::with_access(access("not-the-secret"), Ec2Settings::default()).unwrap();
    let e = wrong.list_nodes().await.unwrap_err();
    assert!(
        matches!(&e, ProviderError::InvalidCredentials { check, .. } if check.contains("AWS_SECRET_ACCESS_KEY")),
        "{e}"
    );
    assert!(e.to_string().contains("AuthFailure"), "{e}");

    let mut env = Moto::env_for(&moto.url());
    env.retain(|(k, _)| !k.starts_with("AWS_ACCESS_KEY_ID") && !k.starts_with("AWS_SECRET"));
    env.push(("AWS_ACCESS_KEY_ID".into(), id.clone()));
    env.push(("AWS_SECRET_ACCESS_KEY".into(), "not-the-secret".into()));
    let out = crate::nodeup_with(&bed, &env, &["nodes", "list", "--provider", "ec2"]);
    let text = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("AuthFailure") && text.contains("AWS_ACCESS_KEY_ID"),
        "{text}"
    );
    assert!(!text.contains("not-the-secret"), "{text}");
}

/// The typed options: tags, user data, the root volume's size, spot, and SSH opened to an
/// address range through the `nodeup-ssh` group, made once, shared, and removed with the last
/// node in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_tags_and_the_ssh_group() {
    let bed = TestBed::new().unwrap();
    let moto = Moto::start().unwrap();
    let ec2 = driver(&moto.url(), Ec2Settings::default());
    let with_options = |name: &str| {
        let mut request = debian(name, &bed);
        request.extra = serde_json::from_value(serde_json::json!({
            "allow_ssh_from": "198.51.100.7/32",
            "tags": {"team": "web"},
            "user_data": "#cloud-config\npackages: [nginx]\n",
            "root_volume_gb": 30,
            "spot": true,
        }))
        .unwrap();
        request
    };
    let first = ec2.create_node(&with_options("opt-1")).await.unwrap();
    let second = ec2.create_node(&with_options("opt-2")).await.unwrap();
    assert_eq!(first.extra["tags"]["team"], "web");
    assert_eq!(
        first.extra["security_groups"],
        serde_json::json!(["nodeup-ssh"])
    );
    let groups = || async {
        let params =
            nodeup::providers::ec2::api::Params::new().filter("group-name", &["nodeup-ssh"]);
        let doc: nodeup::providers::ec2::xml::DescribeSecurityGroups = ec2
            .client()
            .call("DescribeSecurityGroups", &params, || "groups".into())
            .await
            .unwrap();
        doc.security_group_info.item
    };
    let found = groups().await;
    assert_eq!(found.len(), 1, "one group, shared");
    let rule = &found[0].ip_permissions.item[0];
    assert_eq!((rule.from_port, rule.to_port), (Some(22), Some(22)));
    assert_eq!(rule.ip_ranges.item[0].cidr_ip, "198.51.100.7/32");
    let root = ec2
        .list_volumes()
        .await
        .unwrap()
        .into_iter()
        .find(|v| v.attached_to.as_deref() == Some(first.id.as_str()))
        .expect("the root volume");
    assert_eq!(root.size_gb, 30);
    let bad = CreateNode {
        extra: serde_json::from_value(serde_json::json!({"allow_ssh_from": "everywhere"})).unwrap(),
        ..debian("bad", &bed)
    };
    let e = ec2.create_node(&bad).await.unwrap_err();
    assert!(e.to_string().contains("allow_ssh_from"), "{e}");
    let unknown = CreateNode {
        extra: serde_json::from_value(serde_json::json!({"security_groups": ["x"]})).unwrap(),
        ..debian("bad", &bed)
    };
    let e = ec2.create_node(&unknown).await.unwrap_err();
    assert!(
        e.to_string().contains("security_group_ids"),
        "lists the valid keys: {e}"
    );

    ec2.destroy_node(&first).await.unwrap();
    assert_eq!(groups().await.len(), 1, "still used by the second");
    ec2.destroy_node(&second).await.unwrap();
    assert!(
        groups().await.is_empty(),
        "removed with the last node in it"
    );
    assert!(ec2.list_nodes().await.unwrap().is_empty());
}

/// `nodeup` through fake-ec2 with the bed's key.
fn nodeup_ec2(bed: &TestBed, fake: &FakeEc2, args: &[&str]) -> std::process::Command {
    let mut cmd = crate::nodeup_on(bed, args);
    cmd.envs(fake.env()).arg("--key").arg(bed.client_key());
    cmd
}

/// A step file for `count` Debian 12 nodes named `name`, SSH opened to this machine (as
/// fake-ec2's checkip service sees it), running `script`.
fn fleet_file(
    bed: &TestBed,
    fake: &FakeEc2,
    name: &str,
    count: usize,
    script: &str,
) -> std::path::PathBuf {
    crate::write_file(
        bed.dir(),
        &format!("{name}.toml"),
        &format!(
            "[node]\nprovider = \"ec2\"\nname = \"{name}-{{index}}\"\ncount = {count}\n\
             image = \"debian-12-amd64\"\noptions = {{ allow_ssh_from = \"here\" }}\n\n\
             [provider]\ncheckip_url = \"{}\"\n\n[[step]]\ninline = '''{script}'''\n",
            fake.checkip_url()
        ),
    )
}

/// A fleet of 5 through fake-ec2 while EC2 throttles: every node made once and provisioned, the
/// throttled calls waited out and sent again; then all destroyed with nothing left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_of_five_waits_out_throttling() {
    let bed = TestBed::new().unwrap();
    let moto = Moto::start().unwrap();
    let fake = FakeEc2::start(&moto.url(), bed.driver().clone())
        .await
        .unwrap();
    let throttled = Fault::TooMany { retry_after: 0 };
    fake.set_faults(vec![
        RouteFault::new("POST", "RunInstances", throttled, 2),
        RouteFault::new("POST", "DescribeInstances", throttled, 3),
    ]);
    let file = fleet_file(&bed, &fake, "web", 5, "hostname > /tmp/who; id -un");
    let out = nodeup_ec2(&bed, &fake, &["deploy", file.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let fired = fake.faults_fired();
    assert_eq!(fired.error_429, 5, "{fired:?}");
    let calls = fake.calls();
    assert_eq!(
        calls["RunInstances"],
        5 + 2,
        "each node launched once: {calls:?}"
    );
    for once in ["DescribeImages", "ImportKeyPair", "CreateSecurityGroup"] {
        assert_eq!(
            calls.get(once),
            Some(&1),
            "{once}: once for the fleet, not per node: {calls:?}"
        );
    }
    let machines = fake.machines();
    assert_eq!(machines.len(), 5);
    for machine in machines.values() {
        let node = bed.adopt(machine.clone());
        assert_eq!(
            node.read_file("/tmp/who").unwrap(),
            format!("{}\n", machine.name).into_bytes(),
            "the script ran on each instance's own machine"
        );
    }
    let ec2 = driver(&fake.url(), Ec2Settings::default());
    let nodes = ec2.list_nodes().await.unwrap();
    assert_eq!(nodes.len(), 5);
    for node in &nodes {
        assert_eq!(
            node.extra["security_groups"],
            serde_json::json!(["nodeup-ssh"])
        );
        ec2.destroy_node(node).await.unwrap();
    }
    assert!(fake.machines().is_empty());
    assert!(
        crate::bed_leftovers(&bed).is_empty(),
        "{:?}",
        crate::bed_leftovers(&bed)
    );
}

/// A `RunInstances` whose answer is lost after moto launched the instance: nodeup finds it by
/// its idempotency token instead of launching another, and the deploy goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_create_answer_gives_one_instance() {
    let bed = TestBed::new().unwrap();
    let moto = Moto::start().unwrap();
    let fake = FakeEc2::start(&moto.url(), bed.driver().clone())
        .await
        .unwrap();
    fake.set_faults(vec![RouteFault::new(
        "POST",
        "RunInstances",
        Fault::LoseAnswer,
        1,
    )]);
    let file = fleet_file(&bed, &fake, "once", 1, "true");
    let out = nodeup_ec2(
        &bed,
        &fake,
        &["deploy", file.to_str().unwrap(), "--keep-on-failure"],
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert_eq!(fake.faults_fired().lost_answers, 1);
    assert_eq!(
        fake.calls()["RunInstances"],
        1,
        "found by its token, not sent again"
    );
    let ec2 = driver(&fake.url(), Ec2Settings::default());
    let nodes = ec2.list_nodes().await.unwrap();
    assert_eq!(nodes.len(), 1);
    ec2.destroy_node(&nodes[0]).await.unwrap();
}

/// Deploys killed with SIGKILL, one in its script and one while `RunInstances` is in flight (its
/// answer held): `nodeup cleanup --yes` leaves no instance of theirs, found by id and by name and
/// run tag; an instance of the same name that another run made stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_after_sigkill_leaves_no_instance() {
    let bed = TestBed::new().unwrap();
    let moto = Moto::start().unwrap();
    let fake = FakeEc2::start(&moto.url(), bed.driver().clone())
        .await
        .unwrap();
    let ec2 = driver(&fake.url(), Ec2Settings::default());
    let mut other = debian("held-1", &bed);
    other.run = Some("another-run".into());
    let kept = ec2.create_node(&other).await.unwrap();

    let file = fleet_file(&bed, &fake, "busy", 1, "sleep 60");
    let cmd = nodeup_ec2(&bed, &fake, &["deploy", file.to_str().unwrap()]);
    let (mut child, _, _rest) = crate::spawn_until(cmd, "step 1/1: script");
    crate::signal(&child, libc::SIGKILL);
    child.wait().unwrap();

    fake.set_faults(vec![RouteFault::new(
        "POST",
        "RunInstances",
        Fault::SlowAnswer { millis: 5_000 },
        1,
    )]);
    let file = fleet_file(&bed, &fake, "held", 1, "true");
    let cmd = nodeup_ec2(&bed, &fake, &["deploy", file.to_str().unwrap()]);
    let (mut child, _, _rest) = crate::spawn_until(cmd, "creating node");
    while fake.machines().len() < 3 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    crate::signal(&child, libc::SIGKILL);
    child.wait().unwrap();
    assert_eq!(ec2.list_nodes().await.unwrap().len(), 3);

    let out = crate::nodeup_on(&bed, &["cleanup", "--yes", "--json"])
        .envs(fake.env())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let left: Vec<String> = ec2
        .list_nodes()
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.id)
        .collect();
    assert_eq!(
        left,
        [kept.id.as_str()],
        "only the other run's instance stays"
    );
    assert_eq!(fake.machines().len(), 1);
    ec2.destroy_node(&kept).await.unwrap();
}

/// Libcloud's EC2 driver, as its users call it (Signature Version 2 in eu-west-1, its XML
/// parser), through fake-ec2: the newest Debian 12 found by name, `deploy_node` running a script
/// as `admin` on the instance's machine, the node listed and destroyed; a wrong secret refused
/// as EC2 refuses it.
const LIBCLOUD_DEPLOY: &str = r##"
import sys
from libcloud.compute.providers import get_driver
from libcloud.compute.types import Provider, InvalidCredsError
from libcloud.compute.deployment import ScriptDeployment
port, key, pub = int(sys.argv[1]), sys.argv[2], sys.argv[3]
cls = get_driver(Provider.EC2)
d = cls("testing", "testing", region="eu-west-1", host="127.0.0.1", port=port, secure=False)
assert d.signature_version == "2", d.signature_version
images = d.list_images(ex_owner="136693071363", ex_filters={"name": "debian-12-amd64*"})
image = max(images, key=lambda i: i.extra["creation_date"])
d.import_key_pair_from_file("libcloud", pub)
script = ScriptDeployment("#!/bin/sh\nid -un; echo out-of-band >&2; exit 3\n")
node = d.deploy_node(name="lc-1", image=image, size=[s for s in d.list_sizes() if s.id == "t3.micro"][0],
                     deploy=script, ssh_username="admin", ssh_key=key, ex_keyname="libcloud")
print("image", image.name)
print("user", script.stdout.strip(), "exit", script.exit_status, "stderr", script.stderr.strip())
print("ip", node.public_ips[0])
print("listed", [n.name for n in d.list_nodes() if n.state == "running"])
print("destroyed", d.destroy_node(node))
try:
    cls("testing", "wrong", region="eu-west-1", host="127.0.0.1", port=port, secure=False).list_nodes()
except InvalidCredsError as e:
    print("wrong secret", e)
"##;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libcloud_s_own_driver_deploys_through_fake_ec2() {
    let bed = TestBed::new().unwrap();
    let moto = Moto::start().unwrap();
    let fake = FakeEc2::start(&moto.url(), bed.driver().clone())
        .await
        .unwrap();
    let public = crate::write_file(bed.dir(), "client.pub", bed.client_public_key());
    let python = testbed::python::tool("python").expect("the tests' virtualenv: bash .ci/run");
    let port = fake.url().rsplit(':').next().unwrap().to_string();
    let out = tokio::process::Command::new(python)
        .args(["-c", LIBCLOUD_DEPLOY, &port])
        .arg(bed.client_key())
        .arg(&public)
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}{}", stderr_of(&out));
    assert!(
        text.contains("image debian-12-amd64-20240717-1811\n"),
        "{text}"
    );
    // Libcloud's deploy_node returns though the script failed (the silent failure its users
    // complain of); the fake gave it the script's real exit status and streams.
    assert!(
        text.contains("user admin exit 3 stderr out-of-band\n"),
        "{text}"
    );
    assert!(text.contains("ip 127."), "the machine's address: {text}");
    assert!(text.contains("listed ['lc-1']\n"), "{text}");
    assert!(text.contains("destroyed True\n"), "{text}");
    assert!(
        text.contains("wrong secret 'SignatureDoesNotMatch: The request signature"),
        "{text}"
    );
    assert!(
        fake.machines().is_empty(),
        "the machine went with the instance"
    );
}

/// A create EC2 refuses after nodeup imported the key and made the SSH group (an instance type
/// moto does not know): the error is EC2's, and the key pair and the group are gone again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_create_leaves_no_key_and_no_group() {
    let bed = TestBed::new().unwrap();
    let moto = Moto::start().unwrap();
    let ec2 = driver(&moto.url(), Ec2Settings::default());
    let request = CreateNode {
        size: Some("t9.nothing".into()),
        extra: serde_json::from_value(serde_json::json!({"allow_ssh_from": "198.51.100.7/32"}))
            .unwrap(),
        ..debian("refused", &bed)
    };
    let e = ec2.create_node(&request).await.unwrap_err();
    let text = nodeup::error_chain(&e);
    assert!(text.contains("t9.nothing"), "{text}");
    assert!(ec2.list_nodes().await.unwrap().is_empty());
    assert!(
        ec2.list_key_pairs(None).await.unwrap().is_empty(),
        "the imported key pair was deleted"
    );
    let params = nodeup::providers::ec2::api::Params::new().filter("group-name", &["nodeup-ssh"]);
    let doc: nodeup::providers::ec2::xml::DescribeSecurityGroups = ec2
        .client()
        .call("DescribeSecurityGroups", &params, || "groups".into())
        .await
        .unwrap();
    assert!(
        doc.security_group_info.item.is_empty(),
        "the group made for it was deleted"
    );
}
