//! The test bed's fakes on their own: `testbed fake-ovh [--listen 127.0.0.1:PORT] [--dedicated
//! NAME ...]` (a dedicated server per `--dedicated`), `testbed fake-nephoscale [--listen ...]`,
//! `testbed fake-slipstream [--listen ...]`, `testbed fake-ec2 [--listen ...] [--moto URL]` (in
//! front of moto's server: the one at URL, else one it starts from the tests' virtualenv),
//! `testbed fake-openstack [--listen ...] [--private-network] [--clouds-yaml FILE]` (writes a
//! `clouds.yaml` with an entry `fake` when asked). Each
//! prints, as lines a shell can `eval`, the
//! variables a client needs, then serves until killed (Ctrl+C or SIGTERM), destroying the local
//! nodes behind its machines on the way out.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use testbed::fake_ec2::FakeEc2;
use testbed::fake_nephoscale::{FakeNephoScale, NephoConfig};
use testbed::fake_openstack::{FakeOpenStack, OpenStackConfig};
use testbed::fake_ovh::{FakeOvh, OvhConfig};
use testbed::fake_slipstream::{FakeSlipStream, SlipConfig};
use testbed::moto::Moto;
use testbed::TestBed;

/// Fake provider APIs over local nodes, for trying nodeup (and its seeds' clients) by hand.
#[derive(Debug, Parser)]
#[command(name = "testbed")]
struct Cli {
    #[command(subcommand)]
    fake: Command,
}

/// Where a fake listens.
#[derive(Debug, Args)]
struct Listen {
    /// The address to serve on (port 0: any free port, printed in the variables).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
}

/// The fakes, one subcommand each.
#[derive(Debug, Subcommand)]
enum Command {
    /// The OVH API (Public Cloud, dedicated servers' reinstall), signed requests checked.
    #[command(name = "fake-ovh")]
    Ovh {
        #[command(flatten)]
        listen: Listen,
        /// A dedicated server of this service name, backed by a local node (repeatable).
        #[arg(long = "dedicated", value_name = "NAME")]
        dedicated: Vec<String>,
    },
    /// The NephoScale API, with Libcloud's recorded catalog.
    #[command(name = "fake-nephoscale")]
    Nephoscale {
        #[command(flatten)]
        listen: Listen,
        /// The account's user name (made up when not given).
        #[arg(long, requires = "password")]
        username: Option<String>,
        /// The account's password (made up when not given).
        #[arg(long, requires = "username")]
        password: Option<String>,
    },
    /// The SlipStream API (sessions, App Store modules, runs).
    #[command(name = "fake-slipstream")]
    Slipstream {
        #[command(flatten)]
        listen: Listen,
        /// The account's user name (made up when not given).
        #[arg(long, requires = "password")]
        username: Option<String>,
        /// The account's password (made up when not given).
        #[arg(long, requires = "username")]
        password: Option<String>,
        /// Ids and session cookies from a counter, so that recorded requests replay.
        #[arg(long)]
        counted_ids: bool,
    },
    /// An OpenStack cloud (Keystone, Nova, Glance, Neutron, Cinder), a local node per server.
    #[command(name = "fake-openstack")]
    Openstack {
        #[command(flatten)]
        listen: Listen,
        /// A private network besides Ext-Net (servers on it are reached by floating IPs).
        #[arg(long)]
        private_network: bool,
        /// Writes a clouds.yaml with an entry `fake` (the user's password) to FILE.
        #[arg(long, value_name = "FILE")]
        clouds_yaml: Option<std::path::PathBuf>,
    },
    /// AWS EC2: moto's EC2 API, with a local node for each instance.
    #[command(name = "fake-ec2")]
    Ec2 {
        #[command(flatten)]
        listen: Listen,
        /// moto's server to front (else one is started from the tests' virtualenv).
        #[arg(long, value_name = "URL")]
        moto: Option<String>,
    },
}

impl Command {
    fn name(&self) -> &'static str {
        match self {
            Command::Ovh { .. } => "fake-ovh",
            Command::Nephoscale { .. } => "fake-nephoscale",
            Command::Slipstream { .. } => "fake-slipstream",
            Command::Ec2 { .. } => "fake-ec2",
            Command::Openstack { .. } => "fake-openstack",
        }
    }
}

/// fake-openstack on `listen`, with a private network when asked.
async fn serve_openstack(
    listen: SocketAddr,
    driver: nodeup::providers::local::LocalDriver,
    private_network: bool,
) -> std::io::Result<FakeOpenStack> {
    let config = OpenStackConfig {
        private_network,
        ..OpenStackConfig::default()
    };
    FakeOpenStack::start_on(listen, driver, config).await
}

/// The variables a client of fake-openstack needs: the `OS_*` ones, or, when a `clouds.yaml`
/// is asked for, that file (written, with its entry `fake`) and the entry's name.
fn openstack_env(
    served: &FakeOpenStack,
    clouds_yaml: Option<&std::path::Path>,
) -> Result<Vec<(String, String)>, String> {
    let Some(path) = clouds_yaml else {
        return Ok(served.env());
    };
    std::fs::write(path, served.clouds_yaml("fake", true))
        .map_err(|e| format!("fake-openstack: writing {}: {e}", path.display()))?;
    Ok(vec![
        ("OS_CLIENT_CONFIG_FILE".into(), path.display().to_string()),
        ("OS_CLOUD".into(), "fake".into()),
    ])
}

/// A fake being served: kept (and so serving) until the process is told to end.
type Serving = Box<dyn std::any::Any + Send>;

async fn start(fake: &Command, bed: &TestBed) -> Result<(Serving, Vec<(String, String)>), String> {
    let driver = bed.driver().clone();
    let failed = |addr: SocketAddr| {
        move |e: std::io::Error| format!("{}: listening on {addr}: {e}", fake.name())
    };
    match fake {
        Command::Openstack {
            listen,
            private_network,
            clouds_yaml,
        } => {
            let served = serve_openstack(listen.listen, driver, *private_network)
                .await
                .map_err(failed(listen.listen))?;
            let env = openstack_env(&served, clouds_yaml.as_deref())?;
            Ok((Box::new(served), env))
        }
        Command::Ovh { listen, dedicated } => {
            let served = FakeOvh::start_on(listen.listen, driver, OvhConfig::default())
                .await
                .map_err(failed(listen.listen))?;
            for name in dedicated {
                served
                    .add_dedicated(name)
                    .await
                    .map_err(|e| format!("fake-ovh: dedicated server {name}: {e}"))?;
            }
            let env = served.env();
            Ok((Box::new(served), env))
        }
        Command::Nephoscale {
            listen,
            username,
            password,
        } => {
            let config = NephoConfig {
                account: username.clone().zip(password.clone()),
                ..NephoConfig::default()
            };
            let served = FakeNephoScale::start_on(listen.listen, driver, config)
                .await
                .map_err(failed(listen.listen))?;
            let env = served.env();
            Ok((Box::new(served), env))
        }
        Command::Slipstream {
            listen,
            username,
            password,
            counted_ids,
        } => {
            let config = SlipConfig {
                account: username.clone().zip(password.clone()),
                counted_ids: *counted_ids,
                ..SlipConfig::default()
            };
            let served = FakeSlipStream::start_on(listen.listen, driver, config)
                .await
                .map_err(failed(listen.listen))?;
            let env = served.env();
            Ok((Box::new(served), env))
        }
        Command::Ec2 { listen, moto } => {
            let started = match moto {
                Some(_) => None,
                None => Some(Moto::start().map_err(|e| format!("fake-ec2: moto: {e}"))?),
            };
            let url = moto
                .clone()
                .or(started.as_ref().map(Moto::url))
                .unwrap_or_default();
            let served = FakeEc2::start_on(listen.listen, &url, driver)
                .await
                .map_err(failed(listen.listen))?;
            let env = served.env();
            Ok((Box::new((served, started)), env))
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let name = cli.fake.name();
    let bed = match TestBed::new() {
        Ok(bed) => bed,
        Err(e) => {
            eprintln!("{name}: setting up local nodes: {e}");
            return ExitCode::from(1);
        }
    };
    let (serving, env) = match start(&cli.fake, &bed).await {
        Ok(started) => started,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(1);
        }
    };
    for (name, value) in env {
        println!("export {name}={}", nodeup::ssh::quote(&value));
    }
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => {
            eprintln!("{name}: {e}");
            return ExitCode::from(1);
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    drop(serving);
    drop(bed);
    ExitCode::SUCCESS
}
