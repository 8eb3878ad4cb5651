//! `cargo bench --bench ec2`: create and deploy 1 and 10 EC2 nodes through `testbed fake-ec2`
//! (moto's EC2 API, a local node per instance), by `nodeup deploy` and by Libcloud's EC2 driver
//! `deploy_node` (in a thread pool for 10, as its users write it), side by side in one run against
//! the same endpoint. The same work: find Debian 12 by name, import the key, launch, wait until
//! running, log in as `admin`, append a key, upload 1 MiB, run a two-line script. Printed: wall
//! time, the client's CPU time, and the API calls each made (counted at the front), by action.
//! The API is [`API_ROUND_TRIP`] away behind the test bed's relay, so that a call costs what it
//! costs from a real machine.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nodeup::driver::NodeDriver;
use nodeup::providers::ec2::{Access, Ec2Driver, Ec2Settings};
use testbed::fake_ec2::FakeEc2;
use testbed::moto::{Moto, REGION};
use testbed::relay::{Faults, Relay};
use testbed::usage::{measure, print_api_runs, ApiRun, Usage};
use testbed::TestBed;

/// How many nodes each run deploys.
const FLEETS: [usize; 2] = [1, 10];

/// The round trip to EC2's API, as from a machine in another region (the relay's delay).
const API_ROUND_TRIP: Duration = Duration::from_millis(60);

/// The size of the uploaded file.
const PAYLOAD_BYTES: usize = 1 << 20;

/// The script both run.
const SCRIPT: &str = "echo one\necho two\n";

/// Libcloud's EC2 driver doing the same deployment: the newest Debian 12 by name, the key
/// imported, `deploy_node` per node (a thread pool for several), with Libcloud's defaults.
const LIBCLOUD_SCRIPT: &str = r##"
import sys
from concurrent.futures import ThreadPoolExecutor
from libcloud.compute.providers import get_driver
from libcloud.compute.types import Provider
from libcloud.compute.deployment import (
    MultiStepDeployment, SSHKeyDeployment, FileDeployment, ScriptDeployment)

port, key, pub, payload, count, prefix, script = sys.argv[1:8]
count = int(count)
cls = get_driver(Provider.EC2)
driver = cls("testing", "testing", region="eu-west-1", host="127.0.0.1", port=int(port), secure=False)
images = driver.list_images(ex_owner="136693071363", ex_filters={"name": "debian-12-amd64*"})
image = max(images, key=lambda i: i.extra.get("creation_date") or "")
size = [s for s in driver.list_sizes() if s.id == "t3.micro"][0]
keyname = prefix + "-key"
driver.import_key_pair_from_file(keyname, pub)
public = open(pub).read()

def one(i):
    steps = MultiStepDeployment([
        SSHKeyDeployment(public),
        FileDeployment(payload, "/tmp/payload.bin"),
        ScriptDeployment("#!/bin/sh\n" + script),
    ])
    node = driver.deploy_node(name="%s-%d" % (prefix, i), image=image, size=size, deploy=steps,
                              ssh_username="admin", ssh_key=key, ex_keyname=keyname)
    return steps.steps[-1].exit_status == 0

with ThreadPoolExecutor(count) as pool:
    ok = all(pool.map(one, range(1, count + 1)))
sys.exit(0 if ok else 1)
"##;

/// The step file nodeup deploys: the same three steps.
fn stepfile(dir: &Path, payload: &Path, public: &Path, count: usize) -> PathBuf {
    let path = dir.join(format!("ec2-{count}.toml"));
    let text = format!(
        "[node]\nprovider = \"ec2\"\nname = \"nodeup-{count}-{{index}}\"\ncount = {count}\n\
         image = \"debian-12-amd64\"\nsize = \"t3.micro\"\n\n\
         [[step]]\nssh-key = \"{}\"\n\n[[step]]\nfile = \"{}\"\ntarget = \"/tmp/payload.bin\"\n\n\
         [[step]]\ninline = '''{SCRIPT}'''\n",
        public.display(),
        payload.display()
    );
    std::fs::write(&path, text).expect("step file");
    path
}

/// Runs `cmd` off the runtime (the front serves on it), counting the front's calls meanwhile.
async fn counted(fake: &FakeEc2, cmd: Command) -> (Usage, BTreeMap<String, u32>) {
    let before = fake.calls();
    let usage = tokio::task::spawn_blocking(move || measure(cmd))
        .await
        .expect("measure");
    let calls = fake
        .calls()
        .into_iter()
        .map(|(action, n)| {
            (
                action.clone(),
                n - before.get(&action).copied().unwrap_or(0),
            )
        })
        .filter(|(_, n)| *n > 0)
        .collect();
    (usage, calls)
}

/// One instance made and destroyed before anything is timed, so that no client pays for moto's
/// first answers in a region or the first machine's boot.
async fn warm_up(fake: &FakeEc2) {
    let request = nodeup::model::CreateNode {
        name: "warm-up".into(),
        image: Some("debian-12-amd64".into()),
        ..Default::default()
    };
    driver(fake).create_node(&request).await.expect("warm-up");
    destroy_all(fake).await;
}

/// A driver for the front with moto's test credentials.
fn driver(fake: &FakeEc2) -> Ec2Driver {
    Ec2Driver::with_access(
        Access {
            access_key_id: "testing".into(),
            secret_access_key: "testing".into(),
            session_token: None,
            region: REGION.into(),
            endpoint: Some(fake.url()),
        },
        Ec2Settings::default(),
    )
    .expect("driver")
}

/// Destroys every instance (between runs, not timed).
async fn destroy_all(fake: &FakeEc2) {
    let ec2 = driver(fake);
    for node in ec2.list_nodes().await.expect("list") {
        ec2.destroy_node(&node).await.expect("destroy");
    }
}

#[tokio::main]
async fn main() {
    let bed = TestBed::new().expect("test bed");
    let moto = Moto::start().expect("moto (make the virtualenv: bash .ci/run)");
    let fake = FakeEc2::start(&moto.url(), bed.driver().clone())
        .await
        .expect("fake-ec2");
    let dir = bed.dir();
    let payload = dir.join("payload.bin");
    std::fs::write(&payload, vec![0x5a_u8; PAYLOAD_BYTES]).expect("payload");
    let public = dir.join("client.pub");
    std::fs::write(&public, bed.client_public_key()).expect("public key");
    let python = testbed::python::with_libcloud();
    warm_up(&fake).await;
    let relay = Relay::start(
        fake.url()
            .trim_start_matches("http://")
            .parse()
            .expect("addr"),
    )
    .await
    .expect("relay");
    relay.set_faults(Faults {
        delay: API_ROUND_TRIP / 2,
        ..Faults::default()
    });
    let api = format!("http://{}", relay.addr());
    println!(
        "EC2's API {} ms away (the test bed's relay, both clients through it); the nodes on loopback.\n",
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
            .envs(Moto::env_for(&api));
        let (usage, calls) = counted(&fake, cmd).await;
        rows.push(ApiRun {
            client: "nodeup",
            nodes: count,
            usage,
            calls,
        });
        destroy_all(&fake).await;
        let Some(python) = &python else { continue };
        let mut cmd = Command::new(python);
        cmd.arg("-c")
            .arg(LIBCLOUD_SCRIPT)
            .arg(relay.addr().port().to_string())
            .arg(bed.client_key())
            .arg(&public)
            .arg(&payload)
            .arg(count.to_string())
            .arg(format!("libcloud-{count}"))
            .arg(SCRIPT);
        let (usage, calls) = counted(&fake, cmd).await;
        rows.push(ApiRun {
            client: "Libcloud 3.9 deploy_node",
            nodes: count,
            usage,
            calls,
        });
        destroy_all(&fake).await;
    }
    if python.is_none() {
        println!("(Libcloud not in the tests' virtualenv: bash .ci/run makes it)");
    }
    print_api_runs(&rows, "nodes");
}
