//! `cargo bench --bench openstack`: create and deploy 1 and 10 servers on `testbed
//! fake-openstack` (a local node per server), by `nodeup deploy` from a `clouds.yaml` entry and by
//! Libcloud's OpenStack driver `deploy_node` (its 2.0 API: Glance and Neutron; a thread pool for
//! 10, as its users write it), side by side in one run against the same cloud. The same work:
//! find Debian 12 by name (the newest), the d2-2 flavor, import the key, create, wait until
//! active, log in as root, append a key, upload 1 MiB, run a two-line script. Printed: wall time,
//! the client's CPU time, and the API calls each made (counted at the fake), by call. The cloud
//! is [`API_ROUND_TRIP`] away behind the test bed's relay (its catalog points there too).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nodeup::driver::NodeDriver;
use nodeup::providers::openstack::{config, OpenStackDriver, OpenStackSettings};
use testbed::fake_openstack::{FakeOpenStack, OpenStackConfig};
use testbed::relay::{Faults, Relay};
use testbed::usage::{measure, print_api_runs, ApiRun, Usage};
use testbed::TestBed;

/// How many servers each run deploys.
const FLEETS: [usize; 2] = [1, 10];

/// The round trip to the cloud's APIs, as from a machine in another region (the relay's delay).
const API_ROUND_TRIP: Duration = Duration::from_millis(60);

/// The size of the uploaded file.
const PAYLOAD_BYTES: usize = 1 << 20;

/// The script both run.
const SCRIPT: &str = "echo one\necho two\n";

/// Libcloud's OpenStack driver doing the same deployment.
const LIBCLOUD_SCRIPT: &str = r##"
import sys
from concurrent.futures import ThreadPoolExecutor
from libcloud.compute.providers import get_driver
from libcloud.compute.types import Provider
from libcloud.compute.deployment import (
    MultiStepDeployment, SSHKeyDeployment, FileDeployment, ScriptDeployment)

(base, user, password, project, region, key, pub, payload, count, prefix,
 script) = sys.argv[1:12]
count = int(count)
cls = get_driver(Provider.OPENSTACK)
driver = cls(user, password, ex_force_auth_url=base, ex_force_auth_version="3.x_password",
             ex_tenant_name=project, ex_domain_name="Default", ex_force_service_region=region,
             api_version="2.0")
image = max([i for i in driver.list_images() if i.name == "Debian 12"],
            key=lambda i: i.extra.get("created") or i.extra.get("created_at") or "")
size = [s for s in driver.list_sizes() if s.name == "d2-2"][0]
keyname = prefix + "-key"
driver.import_key_pair_from_file(keyname, pub)
public = open(pub).read()

def one(i):
    steps = MultiStepDeployment([
        SSHKeyDeployment(public),
        FileDeployment(payload, "/tmp/payload.bin"),
        ScriptDeployment("#!/bin/sh\n" + script),
    ])
    driver.deploy_node(name="%s-%d" % (prefix, i), image=image, size=size, deploy=steps,
                       ssh_username="root", ssh_key=key, ex_keyname=keyname,
                       ssh_interface="public_ips", timeout=300)
    return steps.steps[-1].exit_status == 0

with ThreadPoolExecutor(count) as pool:
    ok = all(pool.map(one, range(1, count + 1)))
sys.exit(0 if ok else 1)
"##;

/// The step file nodeup deploys: the same three steps.
fn stepfile(dir: &Path, payload: &Path, public: &Path, count: usize) -> PathBuf {
    let path = dir.join(format!("openstack-{count}.toml"));
    let text = format!(
        "[provider]\ncloud = \"fake\"\n\n[node]\nprovider = \"openstack\"\n\
         name = \"nodeup-{count}-{{index}}\"\ncount = {count}\nimage = \"Debian 12\"\n\
         size = \"d2-2\"\n\n[[step]]\nssh-key = \"{}\"\n\n[[step]]\nfile = \"{}\"\n\
         target = \"/tmp/payload.bin\"\n\n[[step]]\ninline = '''{SCRIPT}'''\n",
        public.display(),
        payload.display()
    );
    std::fs::write(&path, text).expect("step file");
    path
}

/// Runs `cmd` off the runtime (the fake serves on it), counting the fake's calls meanwhile.
async fn counted(fake: &FakeOpenStack, cmd: Command) -> (Usage, BTreeMap<String, u32>) {
    fake.reset_calls();
    let usage = tokio::task::spawn_blocking(move || measure(cmd))
        .await
        .expect("measure");
    (usage, fake.calls())
}

/// A driver of the fake (not timed).
fn driver(fake: &FakeOpenStack) -> OpenStackDriver {
    let cloud = config::from_yaml(&fake.clouds_yaml("fake", true), "fake").expect("cloud");
    OpenStackDriver::with_cloud(cloud, OpenStackSettings::default()).expect("driver")
}

/// Destroys every server and key pair (between runs, not timed).
async fn clean(fake: &FakeOpenStack) {
    let os = driver(fake);
    for node in os.list_nodes().await.expect("list") {
        os.destroy_node(&node).await.expect("destroy");
    }
    for pair in os.list_key_pairs(None).await.expect("key pairs") {
        os.delete_key_pair(&pair).await.expect("delete key pair");
    }
}

/// Libcloud's command for `count` servers.
fn libcloud(
    python: &Path,
    fake: &FakeOpenStack,
    bed: &TestBed,
    files: [&Path; 2],
    count: usize,
) -> Command {
    let account = fake.account();
    let base = fake.auth_url().trim_end_matches("/v3").to_string();
    let [public, payload] = files;
    let mut cmd = Command::new(python);
    cmd.arg("-c")
        .arg(LIBCLOUD_SCRIPT)
        .args([
            &base,
            &account.username,
            &account.password,
            &account.project_name,
        ])
        .arg(fake.region())
        .arg(bed.client_key())
        .arg(public)
        .arg(payload)
        .arg(count.to_string())
        .arg(format!("libcloud-{count}"))
        .arg(SCRIPT);
    cmd
}

#[tokio::main]
async fn main() {
    let bed = TestBed::new().expect("test bed");
    let fake = FakeOpenStack::start(bed.driver().clone(), OpenStackConfig::default())
        .await
        .expect("fake-openstack");
    let relay = Relay::start(fake.addr()).await.expect("relay");
    relay.set_faults(Faults {
        delay: API_ROUND_TRIP / 2,
        ..Faults::default()
    });
    fake.advertise(&format!("http://{}", relay.addr()));
    let dir = bed.dir();
    let payload = dir.join("payload.bin");
    std::fs::write(&payload, vec![0x5a_u8; PAYLOAD_BYTES]).expect("payload");
    let public = dir.join("client.pub");
    std::fs::write(&public, bed.client_public_key()).expect("public key");
    let clouds = dir.join("clouds.yaml");
    std::fs::write(&clouds, fake.clouds_yaml("fake", true)).expect("clouds.yaml");
    let python = testbed::python::with_libcloud();
    println!(
        "The cloud's APIs {} ms away (the test bed's relay, both clients through it); the servers \
         on loopback.\n",
        API_ROUND_TRIP.as_millis()
    );
    let mut rows = Vec::new();
    for count in FLEETS {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_nodeup"));
        cmd.arg("deploy")
            .arg(stepfile(dir, &payload, &public, count))
            .arg("--key")
            .arg(bed.client_key())
            .args(["--parallel", &count.to_string()])
            .env("NODEUP_STATE_DIR", bed.nodeup_state_dir())
            .env("HOME", dir)
            .env("OS_CLIENT_CONFIG_FILE", &clouds);
        let (usage, calls) = counted(&fake, cmd).await;
        rows.push(ApiRun {
            client: "nodeup",
            nodes: count,
            usage,
            calls,
        });
        clean(&fake).await;
        let Some(python) = &python else { continue };
        let cmd = libcloud(python, &fake, &bed, [&public, &payload], count);
        let (usage, calls) = counted(&fake, cmd).await;
        rows.push(ApiRun {
            client: "Libcloud 3.9 deploy_node",
            nodes: count,
            usage,
            calls,
        });
        clean(&fake).await;
    }
    if python.is_none() {
        println!("(Libcloud not in the tests' virtualenv: bash .ci/run makes it)");
    }
    print_api_runs(&rows, "servers");
}
