//! SlipStream against its fake (testbed::fake_slipstream): every method, sessions (password, API
//! key, cookie file, expiry), the 409 of a profile without a key, lost and failed answers, and
//! `nodeup deploy` end to end.

use std::time::Duration;

use nodeup::driver::{NodeDriver, ProviderError};
use nodeup::model::{CreateNode, Node, NodeAuth};
use nodeup::providers::slipstream::{Credentials, Login, RunState, SlipStreamDriver};
use testbed::fake_slipstream::{FakeSlipStream, Fault, RouteFault, SlipConfig};
use testbed::TestBed;

use crate::assert_ok;

fn endpoint(fake: &FakeSlipStream) -> String {
    fake.env()
        .into_iter()
        .find(|(k, _)| k == "SLIPSTREAM_ENDPOINT")
        .map(|(_, v)| v)
        .unwrap()
}

fn with_login(
    fake: &FakeSlipStream,
    login: Option<Login>,
    cookie_file: Option<std::path::PathBuf>,
) -> SlipStreamDriver {
    let mut driver = SlipStreamDriver::new(Credentials {
        endpoint: endpoint(fake),
        login,
        cookie_file,
    })
    .unwrap();
    driver.client_mut().http_mut().retry.min_delay = Duration::from_millis(10);
    driver
}

fn password(fake: &FakeSlipStream) -> Option<Login> {
    let a = fake.account();
    Some(Login::Password {
        username: a.username.clone(),
        password: a.password.clone(),
    })
}

fn component(name: &str) -> CreateNode {
    CreateNode {
        name: name.into(),
        image: Some("apps/Debian/debian".into()),
        location: Some("exoscale-ch-gva".into()),
        ..Default::default()
    }
}

async fn ready(ss: &SlipStreamDriver, node: &Node) -> Node {
    let state = ss
        .ex_wait_node_in_state(
            node,
            &[RunState::Ready],
            Duration::from_millis(50),
            Duration::from_secs(30),
            false,
        )
        .await
        .unwrap();
    assert_eq!(state, RunState::Ready);
    ss.get_node(&node.id).await.unwrap()
}

/// The clouds, the App Store, a module's nodes, and a key imported into the profile (returned).
async fn catalog_and_keys(
    ss: &SlipStreamDriver,
    fake: &FakeSlipStream,
    public_key: &str,
) -> nodeup::model::KeyPair {
    let clouds: Vec<String> = ss
        .list_locations()
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.id)
        .collect();
    assert_eq!(
        clouds,
        ["ec2-eu-west", "exoscale-ch-gva"],
        "the profile's clouds"
    );
    let images = ss.list_images(None, None).await.unwrap();
    assert_eq!(images.len(), 2);
    assert_eq!(
        images[1].id, "apps/WordPress/wordpress/1871",
        "with its version"
    );
    let wordpress = ss.get_image("apps/WordPress/wordpress").await.unwrap();
    assert_eq!(wordpress.extra["nodes"], serde_json::json!(["web"]));
    let sizes = ss.list_sizes(Some("exoscale-ch-gva")).await.unwrap();
    let types: Vec<&str> = sizes
        .iter()
        .filter_map(|s| s.extra["instance_type"].as_str())
        .collect();
    assert_eq!(types, ["micro", "small", "large"]);
    assert!(sizes.iter().all(|s| s.extra["cloud"] == "exoscale-ch-gva"));
    assert_eq!(sizes[1].ram_mib, 2048);
    assert_eq!(ss.list_sizes(None).await.unwrap().len(), 6, "both clouds");
    assert!(ss.list_key_pairs(None).await.unwrap().is_empty());
    let pair = ss
        .import_key_pair_from_string("ci", public_key, None)
        .await
        .unwrap();
    assert_eq!(ss.list_key_pairs(None).await.unwrap().len(), 1);
    assert_eq!(fake.profile_keys().len(), 1);
    pair
}

/// Every method: clouds, the App Store, a module's nodes, profile keys, a component run (Ready,
/// its hostname parameter, its VM, logged in to with the profile's key), an application run with
/// two web VMs, and both destroyed with nothing left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_method_list_against_the_fake() {
    let bed = TestBed::new().unwrap();
    let fake = FakeSlipStream::start(bed.driver().clone(), SlipConfig::default())
        .await
        .unwrap();
    let ss = with_login(&fake, password(&fake), None);
    let pair = catalog_and_keys(&ss, &fake, bed.client_public_key()).await;

    let mut by_names = component("box-1");
    by_names.image = Some("debian".into());
    by_names.size = Some("small".into());
    let node = ss.create_node(&by_names).await.unwrap();
    assert_eq!(node.name, "box-1");
    assert_eq!(node.image.as_deref(), Some("apps/Debian/debian/1234"));
    assert_eq!(node.extra["location"], "exoscale-ch-gva");
    assert!(node.public_ips.is_empty(), "no address before Ready");
    let node = ready(&ss, &node).await;
    let hostname = ss
        .ex_get_node_parameter(&node, "machine:hostname", false)
        .await
        .unwrap();
    assert_eq!(node.public_ips[0].to_string(), hostname);
    let vms = ss
        .ex_list_virtual_machines(None, Some(&node))
        .await
        .unwrap();
    assert_eq!(vms.len(), 1);
    assert_eq!(vms[0].ip.as_deref(), Some(hostname.as_str()));
    let offer = vms[0].service_offer.as_ref().map(|o| o.href.clone());
    let small = ss.list_sizes(Some("exoscale-ch-gva")).await.unwrap()[1].clone();
    assert_eq!(offer, Some(small.id), "made with the small offer");
    let machine = fake.machines_of("box-1").remove(0);
    let (machine_ip, out) = crate::ssh_root_on(&bed, &machine.id, "id -un").await;
    assert_eq!(machine_ip.to_string(), hostname);
    assert_eq!(
        crate::stdout(&out),
        "root\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut app = CreateNode {
        name: "blog".into(),
        image: Some("apps/WordPress/wordpress".into()),
        location: Some("ec2-eu-west".into()),
        ..Default::default()
    };
    app.extra
        .insert("multiplicity".into(), serde_json::json!({"web": 2}));
    let blog = ss.create_node(&app).await.unwrap();
    let blog = ready(&ss, &blog).await;
    assert_eq!(blog.public_ips.len(), 1, "web.1's address");
    let on_ec2 = ss
        .ex_list_virtual_machines(Some("ec2-eu-west"), None)
        .await
        .unwrap();
    assert_eq!(on_ec2.len(), 2);
    let names: Vec<String> = ss
        .list_nodes()
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.name)
        .collect();
    assert_eq!(names, ["box-1", "blog"]);
    let on_ec2: Vec<String> = ss
        .list_nodes_in("ec2-eu-west")
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.name)
        .collect();
    assert_eq!(on_ec2, ["blog"]);

    ss.destroy_node(&node).await.unwrap();
    ss.destroy_node(&blog).await.unwrap();
    assert!(ss.list_nodes().await.unwrap().is_empty());
    assert!(fake.active_runs().is_empty());
    assert!(
        bed.driver().list_nodes().await.unwrap().is_empty(),
        "no VM left"
    );
    ss.delete_key_pair(&pair).await.unwrap();
    assert!(fake.profile_keys().is_empty());
}

/// Sessions: an API key logs in and the cookie file keeps the session (0600) for a driver that
/// has nothing else; once the session expired, that driver is told so, while one with
/// credentials logs in again by itself. Wrong credentials are the provider-neutral error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_from_keys_cookie_files_and_expiry() {
    let bed = TestBed::new().unwrap();
    let fake = FakeSlipStream::start(bed.driver().clone(), SlipConfig::default())
        .await
        .unwrap();
    let cookies = bed.dir().join("slipstream-cookies.txt");
    let a = fake.account().clone();
    let keyed = with_login(
        &fake,
        Some(Login::ApiKey {
            key: a.key.clone(),
            secret: a.secret.clone(),
        }),
        Some(cookies.clone()),
    );
    assert!(keyed.list_nodes().await.unwrap().is_empty());
    assert_eq!(fake.logins(), 1);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&cookies).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    let cookie_only = with_login(&fake, None, Some(cookies.clone()));
    assert!(cookie_only.list_images(None, None).await.unwrap().len() == 2);
    assert_eq!(fake.logins(), 1, "the cookie file's session was used");

    fake.expire_sessions();
    let e = cookie_only.list_nodes().await.unwrap_err();
    assert!(matches!(e, ProviderError::InvalidCredentials { .. }), "{e}");
    let again = with_login(&fake, password(&fake), None);
    again.list_nodes().await.unwrap();
    fake.expire_sessions();
    again.list_nodes().await.unwrap();
    assert_eq!(fake.logins(), 3, "logged in again once the session expired");

    let wrong = with_login(
        &fake,
        Some(Login::Password {
            username: a.username.clone(),
            password: "nope".into(),
        }),
        None,
    );
    let e = wrong.list_nodes().await.unwrap_err();
    assert!(
        matches!(&e, ProviderError::InvalidCredentials { check, .. } if check.contains("SLIPSTREAM_PASSWORD")),
        "{e}"
    );
}

/// A profile without an SSH key is SlipStream's 409 (its message passed on) when the check is
/// asked for (`check_ssh_key`; Libcloud's driver bypasses it by default); a create whose answer
/// is lost starts exactly one run; a 500 on a read is retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicts_lost_answers_and_500s() {
    let bed = TestBed::new().unwrap();
    let fake = FakeSlipStream::start(bed.driver().clone(), SlipConfig::default())
        .await
        .unwrap();
    let ss = with_login(&fake, password(&fake), None);
    let mut checked = component("nokey");
    checked
        .extra
        .insert("check_ssh_key".into(), serde_json::json!(true));
    let e = ss.create_node(&checked).await.unwrap_err();
    let said = nodeup::engine::error_chain(&e);
    assert!(
        said.contains("409") && said.contains("Missing SSH public key"),
        "{said}"
    );
    assert_eq!(fake.creates(), 0);

    fake.set_faults(vec![
        RouteFault::new("POST", "/run", Fault::LoseAnswer, 1),
        RouteFault::new("GET", "/run", Fault::Error500, 2),
    ]);
    let mut request = component("once");
    request.auth = Some(NodeAuth::SshKey(bed.client_public_key().into()));
    let node = ss.create_node(&request).await.unwrap();
    assert_eq!(node.name, "once");
    let fired = fake.faults_fired();
    assert_eq!((fired.lost_answers, fired.error_500), (1, 2), "{fired:?}");
    assert_eq!(fake.creates(), 1, "one run");
    assert_eq!(fake.active_runs(), ["once"]);
    let node = ready(&ss, &node).await;
    ss.destroy_node(&node).await.unwrap();
    assert!(fake.active_runs().is_empty());
    assert!(bed.driver().list_nodes().await.unwrap().is_empty());
}

/// `nodeup deploy` with `provider = "slipstream"`: the deploy key goes into the profile, the run
/// becomes Ready, nodeup logs in at its hostname and runs the step; `nodes destroy` ends the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_end_to_end_on_the_fake() {
    let bed = TestBed::new().unwrap();
    let fake = FakeSlipStream::start(bed.driver().clone(), SlipConfig::default())
        .await
        .unwrap();
    let steps = bed.dir().join("slipstream.toml");
    std::fs::write(
        &steps,
        "[node]\nprovider = \"slipstream\"\nname = \"svc-1\"\nimage = \"apps/Debian/debian\"\n\
         location = \"exoscale-ch-gva\"\n\n[[step]]\ninline = \"echo deployed > /root/ran; echo ok\"\n",
    )
    .unwrap();
    let env = fake.env();
    let nodeup = |args: &[&str]| crate::nodeup_with(&bed, &env, args);
    let key = bed.client_key().to_str().unwrap();
    let out = nodeup(&["deploy", steps.to_str().unwrap(), "--key", key, "--json"]);
    assert_ok(&out);
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["steps"][0]["stdout"], "ok\n");
    assert_eq!(
        fake.profile_keys().len(),
        1,
        "the deploy key went into the profile"
    );
    let machines = fake.machines_of("svc-1");
    let pid = bed
        .driver()
        .init_pid(&machines[0].id)
        .unwrap()
        .expect("booted");
    let ran = std::fs::read_to_string(format!("/proc/{pid}/root/root/ran")).unwrap();
    assert_eq!(ran, "deployed\n");
    let gone = nodeup(&["nodes", "destroy", "svc-1", "--provider", "slipstream"]);
    assert_ok(&gone);
    assert!(fake.active_runs().is_empty());
    assert!(bed.driver().list_nodes().await.unwrap().is_empty());
}

/// Keys: one made here (`create_key_pair`) whose private half logs in to a VM made after it; a
/// key given for one run is added to the profile for that run and taken out when the run is
/// destroyed, or when its create fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_made_here_and_keys_given_for_one_run() {
    let bed = TestBed::new().unwrap();
    let fake = FakeSlipStream::start(bed.driver().clone(), SlipConfig::default())
        .await
        .unwrap();
    let ss = with_login(&fake, password(&fake), None);
    let made = ss.create_key_pair("made-here", None).await.unwrap();
    let key_path = bed.dir().join("made-here");
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&key_path)
            .unwrap();
        file.write_all(made.private_key.as_deref().unwrap().as_bytes())
            .unwrap();
    }
    assert_eq!(fake.profile_keys().len(), 1);

    let mut request = component("keyed");
    request.auth = Some(NodeAuth::SshKey(bed.client_public_key().into()));
    let node = ss.create_node(&request).await.unwrap();
    let keys = fake.profile_keys();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(keys[1].ends_with("nodeup-run:keyed"), "{keys:?}");
    let node = ready(&ss, &node).await;
    let machine = fake.machines_of("keyed").remove(0);
    for key in [key_path.as_path(), bed.client_key()] {
        let (_, out) = crate::ssh_root_with(&bed, &machine.id, key, "id -un").await;
        assert_eq!(crate::stdout(&out), "root\n", "{}", crate::stderr_of(&out));
    }
    ss.destroy_node(&node).await.unwrap();
    assert_eq!(
        fake.profile_keys(),
        keys[..1],
        "the run's key is gone, the one made here stays"
    );

    fake.set_faults(vec![RouteFault::new("POST", "/run", Fault::Error500, 20)]);
    request.name = "refused".into();
    ss.create_node(&request).await.unwrap_err();
    assert_eq!(
        fake.profile_keys(),
        keys[..1],
        "the failed run's key is gone"
    );
    assert!(fake.active_runs().is_empty());
    ss.delete_key_pair(&made).await.unwrap();
    assert!(fake.profile_keys().is_empty());
}
