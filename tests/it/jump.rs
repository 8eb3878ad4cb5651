//! Jump hosts: private nodes (a network namespace linked to a bastion node only) reached through
//! a chain of bastions, each hop's host key checked.

use std::path::PathBuf;
use std::time::Duration;

use nodeup::deploy::{FileStep, ScriptStep, Step};
use nodeup::engine::{run_steps, Cause, DeployOptions};
use nodeup::ssh::{Hop, Jump};
use testbed::{NodeSpec, TestBed, TestNode};

use crate::{existing_machine, strict_options};

/// One known_hosts file with the keys of all of `nodes`.
fn known_hosts_of(bed: &TestBed, nodes: &[&TestNode]) -> PathBuf {
    let path = bed.dir().join(format!("known_hosts-{}", rand_suffix()));
    let text: String = nodes
        .iter()
        .map(|n| std::fs::read_to_string(n.known_hosts()).unwrap())
        .collect();
    std::fs::write(&path, text).unwrap();
    path
}

fn rand_suffix() -> String {
    format!("{:08x}", rand::random::<u32>())
}

fn hop(node: &TestNode) -> Hop {
    Hop::new(Some("root"), &node.ip().to_string(), node.addr().port())
}

/// A bastion linked to this machine, a second node behind it, a private node behind the second.
async fn two_hops(bed: &TestBed) -> (TestNode, TestNode, TestNode) {
    let outer = bed.node(NodeSpec::new("outer").linked()).await.unwrap();
    let inner = bed
        .node(NodeSpec::new("inner").behind(&outer))
        .await
        .unwrap();
    let private = bed
        .node(NodeSpec::new("private").behind(&inner))
        .await
        .unwrap();
    (outer, inner, private)
}

/// Options for a private node: short deadlines (a direct attempt fails at once, the way is
/// unreachable, and must not be retried for minutes).
fn private_options(bed: &TestBed, known_hosts: &std::path::Path) -> DeployOptions {
    DeployOptions {
        timeout: Duration::from_secs(20),
        ssh_timeout: Duration::from_secs(5),
        ..strict_options(bed, known_hosts)
    }
}

/// Three nodes: a bastion linked to this machine, a second behind it, and a private node behind
/// the second. This machine reaches neither of the last two; through the chain, the steps run on
/// the private node, over one connection to the chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_node_is_reached_through_two_bastions_only() {
    let bed = TestBed::new().unwrap();
    let (outer, inner, private) = two_hops(&bed).await;
    let known_hosts = known_hosts_of(&bed, &[&outer, &inner, &private]);
    let payload = bed.dir().join("payload");
    std::fs::write(&payload, b"through two hops\n").unwrap();
    let steps = Step::Multi(vec![
        Step::File(FileStep {
            mode: Some(0o640),
            ..FileStep::new(&payload, "/root/payload")
        }),
        Step::Script(ScriptStep::inline("hostname; cat /root/payload")),
    ]);
    let target = existing_machine(private.addr(), "root");

    let mut direct = private_options(&bed, &known_hosts);
    direct.timeout = Duration::from_secs(1);
    let creds = direct.credentials().unwrap();
    let failed = run_steps(&target, &steps, &creds, &direct)
        .await
        .expect_err("this machine has no way to the private node");
    let Cause::Login(e) = &failed.cause else {
        panic!("not a login failure: {}", failed.cause)
    };
    assert!(
        matches!(e, nodeup::ssh::Error::Connect { source, .. }
            if matches!(source.kind(), std::io::ErrorKind::HostUnreachable
                | std::io::ErrorKind::NetworkUnreachable)),
        "{e:?}"
    );
    assert!(
        private.metadata("/root/payload").is_err(),
        "nothing ran directly"
    );

    let jump = Jump::new(vec![hop(&outer), hop(&inner)]);
    let through = DeployOptions {
        jump: Some(jump.clone()),
        ..private_options(&bed, &known_hosts)
    };
    let run = run_steps(&target, &steps, &creds, &through)
        .await
        .unwrap_or_else(|f| panic!("{}", f.cause));
    assert_eq!(run.steps[1].stdout.text(), "private\nthrough two hops\n");
    assert_eq!(
        private.read_file("/root/payload").unwrap(),
        b"through two hops\n"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = private
        .metadata("/root/payload")
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o640);
    assert_eq!(jump.connections(), 1, "one connection carried the chain");

    // Destroyed, the nodes leave no link and no route on this machine.
    for node in [&private, &inner, &outer] {
        nodeup::driver::NodeDriver::destroy_node(bed.driver(), &node.node)
            .await
            .unwrap();
    }
    assert_no_link_or_route_left(&[&private, &inner, &outer]);
}

/// After `nodes` were destroyed: none of their links is left on this machine, nor a route of
/// theirs.
fn assert_no_link_or_route_left(nodes: &[&TestNode]) {
    let routes = std::process::Command::new("ip")
        .args(["-4", "route", "show"])
        .output();
    let links = std::process::Command::new("ip")
        .args(["link", "show"])
        .output();
    let (routes, links) = (
        crate::stdout(&routes.unwrap()),
        crate::stdout(&links.unwrap()),
    );
    for node in nodes {
        let link = format!("nu{}", node.id().trim_start_matches("loc-"));
        assert!(!links.contains(&link), "{links}");
        assert!(!routes.contains(&link), "{routes}");
        // Tests running meanwhile may have been given the same /30 again: the route must be
        // gone unless a node holds the address now.
        let std::net::IpAddr::V4(ip) = node.ip() else {
            panic!("a linked node has an IPv4 address")
        };
        let subnet = u32::from(ip) & !3;
        let claim = std::net::Ipv4Addr::from(
            u32::from(std::net::Ipv4Addr::new(127, 100, 0, 0))
                + (subnet - u32::from(std::net::Ipv4Addr::new(100, 64, 0, 0))) / 4,
        );
        let held = std::path::Path::new(nodeup::providers::local::CLAIMS_DIR)
            .join(claim.to_string())
            .exists();
        let subnet = std::net::Ipv4Addr::from(subnet);
        assert!(
            held || !routes.contains(&format!("unreachable {subnet}/30")),
            "{routes}"
        );
    }
}

/// A middle hop whose key is not the one recorded for it is refused, with the hop named, and
/// nothing reaches the node behind it; one whose key is unknown is refused with what works for a
/// hop, which then works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_middle_hop_with_a_wrong_or_unknown_key_is_refused() {
    let bed = TestBed::new().unwrap();
    let (outer, inner, private) = two_hops(&bed).await;
    // The inner hop's address recorded with the outer hop's keys: an impostor, as far as nodeup
    // can tell.
    let outer_keys = std::fs::read_to_string(outer.known_hosts()).unwrap();
    let forged = outer_keys.replace(&outer.ip().to_string(), &inner.ip().to_string());
    let known_hosts = bed.dir().join("known_hosts-forged");
    let private_keys = std::fs::read_to_string(private.known_hosts()).unwrap();
    std::fs::write(&known_hosts, format!("{outer_keys}{forged}{private_keys}")).unwrap();
    let options = DeployOptions {
        jump: Some(Jump::new(vec![hop(&outer), hop(&inner)])),
        ..private_options(&bed, &known_hosts)
    };
    let creds = options.credentials().unwrap();
    let steps = Step::Script(ScriptStep::inline("touch /root/reached"));
    let started = std::time::Instant::now();
    let failed = run_steps(
        &existing_machine(private.addr(), "root"),
        &steps,
        &creds,
        &options,
    )
    .await
    .expect_err("the middle hop's key is not the recorded one");
    let message = failed.cause.to_string();
    let named = format!("jump host root@{}:22", inner.ip());
    assert!(message.contains(&named), "{message}");
    assert!(message.contains("has changed"), "{message}");
    assert!(
        started.elapsed() < options.timeout,
        "refused at once, not retried"
    );
    assert!(private.metadata("/root/reached").is_err());

    // The inner hop's key unknown: the message names what works for a hop (the host-key policy
    // does not apply to hops), and what it names does work.
    let known_hosts = bed.dir().join("known_hosts-unknown");
    std::fs::write(&known_hosts, format!("{outer_keys}{private_keys}")).unwrap();
    let options = DeployOptions {
        jump: Some(Jump::new(vec![hop(&outer), hop(&inner)])),
        ..private_options(&bed, &known_hosts)
    };
    let machine = existing_machine(private.addr(), "root");
    let failed = run_steps(&machine, &steps, &options.credentials().unwrap(), &options)
        .await
        .expect_err("the inner hop's key is unknown");
    let message = nodeup::error_chain(&failed.cause);
    for expected in [
        named.as_str(),
        "is not in",
        "ssh-keyscan",
        "StrictHostKeyChecking accept-new",
    ] {
        assert!(message.contains(expected), "{expected:?} in {message}");
    }
    assert!(!message.contains("use the accept-new policy"), "{message}");
    let mut trusting = hop(&inner);
    trusting.accept_new = true;
    let options = DeployOptions {
        jump: Some(Jump::new(vec![hop(&outer), trusting])),
        ..options
    };
    run_steps(&machine, &steps, &options.credentials().unwrap(), &options)
        .await
        .expect("accept-new for that hop");
    assert!(private.metadata("/root/reached").is_ok());
    let learned = std::fs::read_to_string(&known_hosts).unwrap();
    assert!(learned.contains(&inner.ip().to_string()), "{learned}");
}

/// Two private nodes behind one bastion share its connection; when the bastion goes down in the
/// middle of a step, the deployment resumes through a new connection once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_shares_the_bastion_and_outlives_its_reboot() {
    let bed = TestBed::new().unwrap();
    let bastion = bed.node(NodeSpec::new("bastion").linked()).await.unwrap();
    let first = bed
        .node(NodeSpec::new("first").behind(&bastion))
        .await
        .unwrap();
    let second = bed
        .node(NodeSpec::new("second").behind(&bastion))
        .await
        .unwrap();
    let known_hosts = known_hosts_of(&bed, &[&bastion, &first, &second]);
    let jump = Jump::new(vec![hop(&bastion)]);
    let options = DeployOptions {
        jump: Some(jump.clone()),
        ..private_options(&bed, &known_hosts)
    };
    let creds = options.credentials().unwrap();
    let steps = Step::Script(ScriptStep {
        env: vec![("N".into(), "1".into())],
        ..ScriptStep::inline("echo $((N + 1)) > /root/count")
    });
    let (to_first, to_second) = (
        existing_machine(first.addr(), "root"),
        existing_machine(second.addr(), "root"),
    );
    let (a, b) = tokio::join!(
        run_steps(&to_first, &steps, &creds, &options),
        run_steps(&to_second, &steps, &creds, &options),
    );
    a.unwrap_or_else(|f| panic!("{}", f.cause));
    b.unwrap_or_else(|f| panic!("{}", f.cause));
    assert_eq!(first.read_file("/root/count").unwrap(), b"2\n");
    assert_eq!(second.read_file("/root/count").unwrap(), b"2\n");
    assert_eq!(
        jump.connections(),
        1,
        "both nodes went through one connection"
    );

    // A step that outlives the bastion's boot: the bastion reboots while it runs.
    let slow = Step::Multi(vec![
        Step::Script(ScriptStep::inline("sleep 2; echo once >> /root/slow")),
        Step::Script(ScriptStep::inline("echo after >> /root/slow")),
    ]);
    let driver = bed.driver().clone();
    let node = bastion.node.clone();
    let reboot = async {
        tokio::time::sleep(Duration::from_millis(700)).await;
        nodeup::driver::NodeDriver::reboot_node(&driver, &node)
            .await
            .unwrap();
    };
    let (run, ()) = tokio::join!(run_steps(&to_first, &slow, &creds, &options), reboot,);
    let run = run.unwrap_or_else(|f| panic!("{}", f.cause));
    assert!(
        run.reconnects >= 1,
        "the lost bastion was a lost connection"
    );
    assert!(jump.connections() >= 2, "connected again after the reboot");
    let slow_log = String::from_utf8(first.read_file("/root/slow").unwrap()).unwrap();
    assert!(slow_log.ends_with("after\n"), "{slow_log}");
}
