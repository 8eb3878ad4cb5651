//! OpenSSH client config and jump hosts from the command line: `~/.ssh/config` with `Include` and
//! `Host` patterns, `--ssh-config`, `ProxyJump`, `--jump`, `[ssh] jump`, and what is refused.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use testbed::{NodeSpec, TestBed, TestNode};

/// `nodeup ARGS` with `home` as the user's home: nothing but what the test gives (no --key, no
/// --known-hosts).
fn nodeup(bed: &TestBed, home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nodeup"))
        .args(args)
        .env("HOME", home)
        .env("NODEUP_STATE_DIR", bed.nodeup_state_dir())
        .env_remove("SSH_AUTH_SOCK")
        .env_remove("NODEUP_PROVIDER")
        .output()
        .unwrap()
}

/// A step file that records who ran it where.
fn stepfile(bed: &TestBed, ssh_section: &str) -> PathBuf {
    let path = bed
        .dir()
        .join(format!("who-{:08x}.toml", rand::random::<u32>()));
    let text = format!(
        "{ssh_section}\n[[step]]\ninline = \"id -un > /root/who; hostname >> /root/who\"\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn show(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `Host` lines for `node` under `alias`: its address, port, root, the test bed's key only, and
/// its own known_hosts.
fn host_block(bed: &TestBed, alias: &str, node: &TestNode) -> String {
    format!(
        "Host {alias}\n  HostName {}\n  Port {}\n  User root\n  IdentityFile {}\n  \
         IdentitiesOnly yes\n  UserKnownHostsFile {}\n  StrictHostKeyChecking yes\n",
        node.ip(),
        node.addr().port(),
        bed.client_key().display(),
        node.known_hosts().display()
    )
}

/// `~/.ssh/config` includes `conf.d/*.conf`, where `web-*` (but not `web-old`) names the node:
/// `run --host web-1` logs in with the config's address, port, user, key and known_hosts; the
/// command line's `--known-hosts` wins over the config's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_reaches_an_alias_from_an_included_config() {
    let bed = TestBed::new().unwrap();
    let node = bed.node(NodeSpec::new("web").port(2222)).await.unwrap();
    let home = bed.dir().join("home");
    write(
        &home.join(".ssh/config"),
        "Include conf.d/*.conf\nHost *\n  User nobody\n  ConnectTimeout 5\n  ForwardX11 yes\n",
    );
    let block = host_block(&bed, "web-* !web-old", &node);
    write(&home.join(".ssh/conf.d/web.conf"), &block);
    let steps = stepfile(&bed, "");
    let steps = steps.to_str().unwrap();

    let out = nodeup(&bed, &home, &["-v", "run", steps, "--host", "web-1"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(node.read_file("/root/who").unwrap(), b"root\nweb\n");
    // What the config sets and nodeup does not apply is said once, with -v.
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        said.matches("not applied by nodeup: forwardx11").count(),
        1,
        "{said}"
    );

    let out = nodeup(&bed, &home, &["run", steps, "--host", "web-old"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot resolve web-old"),
        "{}",
        show(&out)
    );

    let empty = bed.dir().join("empty_known_hosts");
    std::fs::write(&empty, "").unwrap();
    let args = ["run", steps, "--host", "web-1", "--known-hosts"];
    let out = nodeup(
        &bed,
        &home,
        &[&args[..], &[empty.to_str().unwrap()]].concat(),
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("host-key checking is strict"),
        "{}",
        show(&out)
    );
}

/// A config naming the bastion `jumpbox` and the private node `inside`, reached through it by
/// `ProxyJump`; both checked against `known_hosts`.
fn proxy_jump_config(
    bed: &TestBed,
    bastion: &TestNode,
    private: &TestNode,
    known_hosts: &Path,
) -> PathBuf {
    let config = bed.dir().join("ssh_config");
    write(
        &config,
        &format!(
            "{}{}  ProxyJump jumpbox\n",
            host_block(bed, "jumpbox", bastion),
            host_block(bed, "inside", private)
        )
        .replace(
            &private.known_hosts().display().to_string(),
            &known_hosts.display().to_string(),
        ),
    );
    config
}

/// A private node behind a bastion, three ways: `ProxyJump` in a config given with
/// `--ssh-config` (the bastion itself an alias there), `--jump` on the command line, and
/// `[ssh] jump` in the step file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_node_is_reached_by_proxy_jump_jump_and_the_step_file() {
    let bed = TestBed::new().unwrap();
    let bastion = bed.node(NodeSpec::new("bastion").linked()).await.unwrap();
    let private = bed
        .node(NodeSpec::new("private").behind(&bastion))
        .await
        .unwrap();
    let known_hosts = bed.dir().join("known_hosts-both");
    let both = [&bastion, &private]
        .map(|n| std::fs::read_to_string(n.known_hosts()).unwrap())
        .concat();
    std::fs::write(&known_hosts, both).unwrap();
    let config = proxy_jump_config(&bed, &bastion, &private, &known_hosts);
    let home = bed.dir().join("home");
    let steps = stepfile(&bed, "");
    let steps = steps.to_str().unwrap();
    let config = config.to_str().unwrap();

    let out = nodeup(
        &bed,
        &home,
        &["run", steps, "-F", config, "--host", "inside"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(private.read_file("/root/who").unwrap(), b"root\nprivate\n");

    let (key, hosts) = (
        bed.client_key().to_str().unwrap(),
        known_hosts.to_str().unwrap(),
    );
    let target = format!("root@{}", private.ip());
    let hop = format!("root@{}", bastion.ip());
    let plain = [
        "run",
        steps,
        "--ssh-config",
        "none",
        "--key",
        key,
        "--known-hosts",
        hosts,
    ];
    let direct = [&plain[..], &["--host", &target, "--timeout", "2s"]].concat();
    let out = nodeup(&bed, &home, &direct);
    assert_eq!(
        out.status.code(),
        Some(1),
        "no way there without a jump: {}",
        show(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("No route to host"),
        "{}",
        show(&out)
    );
    let jumped = [&plain[..], &["--host", &target, "--jump", &hop]].concat();
    private.exec("rm /root/who").unwrap();
    let out = nodeup(&bed, &home, &jumped);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(private.read_file("/root/who").unwrap(), b"root\nprivate\n");

    let in_file = stepfile(&bed, &format!("[ssh]\njump = [\"{hop}\"]\n"));
    let with_file = [&plain[..], &["--host", &target]].concat();
    let with_file: Vec<&str> = with_file
        .iter()
        .map(|a| {
            if *a == steps {
                in_file.to_str().unwrap()
            } else {
                a
            }
        })
        .collect();
    private.exec("rm /root/who").unwrap();
    let out = nodeup(&bed, &home, &with_file);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(private.read_file("/root/who").unwrap(), b"root\nprivate\n");
}

/// `ProxyCommand` for the host, a `Match` block, a malformed `--jump`: each is a usage error
/// naming the file or flag and the fix, before any connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_nodeup_cannot_honour_is_refused_up_front() {
    let bed = TestBed::new().unwrap();
    let home = bed.dir().join("home");
    let steps = stepfile(&bed, "");
    let steps = steps.to_str().unwrap();
    let config = bed.dir().join("proxy_config");
    write(
        &config,
        "Host pc\n  HostName 127.0.0.1\n  ProxyCommand nc %h %p\n",
    );
    let out = nodeup(
        &bed,
        &home,
        &["run", steps, "-F", config.to_str().unwrap(), "--host", "pc"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(stderr.contains("ProxyCommand applies to pc"), "{stderr}");
    assert!(stderr.contains(config.to_str().unwrap()), "{stderr}");

    write(
        &home.join(".ssh/config"),
        "Host a\n  User x\nMatch exec true\n  User y\n",
    );
    let out = nodeup(&bed, &home, &["run", steps, "--host", "127.0.0.1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(stderr.contains("`Match` block"), "{stderr}");

    let out = nodeup(
        &bed,
        &home,
        &[
            "run",
            steps,
            "-F",
            "none",
            "--host",
            "127.0.0.1",
            "--jump",
            "@bastion",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        stderr.contains("--jump: jump host \"@bastion\""),
        "{stderr}"
    );
}
