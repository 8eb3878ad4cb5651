//! `nodeup reinstall SERVICE_NAME --image-url URL --image-type qcow2|raw ...`: reinstall an OVH
//! dedicated server with your own image, then run a post-install step file on it.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use clap::Args;
use serde::Serialize;

use nodeup::baremetal::{Byoi, Checksum, ImageType};
use nodeup::deploy::stepfile::{self, parse_positive_duration};
use nodeup::engine;
use nodeup::engine::reinstall::{
    cancel, check_arguments, key_dir, reinstall, ReinstallError, ReinstallEvent, ReinstallOptions,
    ReinstallProgress,
};
use nodeup::engine::settings::Purpose;
use nodeup::providers::ovh::dedicated::{Generation, OvhDedicated};
use nodeup::providers::ovh::{Client, Credentials};

use super::common::SshArgs;
use super::output::{self, print_json};
use super::Failure;

/// `nodeup reinstall`.
#[derive(Debug, Args)]
pub struct ReinstallArgs {
    /// The dedicated server's service name (e.g. ns1234567.ip-1-2-3.eu).
    pub service: String,
    /// Where OVH downloads the image from.
    #[arg(long, required_unless_present = "cancel")]
    pub image_url: Option<String>,
    /// qcow2, raw, or ova (--api legacy only).
    #[arg(long, required_unless_present = "cancel")]
    pub image_type: Option<ImageType>,
    /// Cancel the server's reinstall that has not finished (OVH's legacy BYOI call: the server
    /// goes to rescue mode), instead of starting one.
    #[arg(long, conflicts_with_all = ["image_url", "then"])]
    pub cancel: bool,
    /// A description of the deployment (--api legacy keeps it).
    #[arg(long)]
    pub description: Option<String>,
    /// The disk group to install on, on a server with several.
    #[arg(long, value_name = "ID")]
    pub disk_group: Option<u64>,
    /// Metadata for the config drive, K=V (repeatable).
    #[arg(long = "metadata", value_name = "K=V")]
    pub metadata: Vec<String>,
    /// Write no config drive: the image must let you in by itself (no key, hostname or user data
    /// is set).
    #[arg(long)]
    pub no_config_drive: bool,
    /// The image's checksum, TYPE:HEX (md5, sha1, sha256, sha512).
    #[arg(long)]
    pub checksum: Option<Checksum>,
    /// An HTTP header for the download, K=V (repeatable).
    #[arg(long = "http-header", value_name = "K=V")]
    pub http_headers: Vec<String>,
    /// The hostname the config drive sets.
    #[arg(long)]
    pub hostname: Option<String>,
    /// A public key file for root (its private half, the same path without .pub, logs in after);
    /// default: a fresh ed25519 key nodeup makes for this reinstall and keeps.
    #[arg(long, value_name = "PUB")]
    pub ssh_key: Option<PathBuf>,
    /// A user-data script the config drive runs at first boot.
    #[arg(long, value_name = "FILE")]
    pub user_data: Option<PathBuf>,
    /// A step file to run once the server is back.
    #[arg(long, value_name = "STEPFILE")]
    pub then: Option<PathBuf>,
    /// The API: `current` (reinstall with byoi_64 / byolinux_64) or `legacy` (bringYourOwnImage).
    #[arg(long, default_value = "current")]
    pub api: String,
    /// The operating system for the current API: byoi_64 or byolinux_64.
    #[arg(long, default_value = "byolinux_64")]
    pub os: String,
    /// How often to ask OVH how the install goes.
    #[arg(long, default_value = "10s", value_parser = parse_positive_duration)]
    pub poll: Duration,
    /// Give up following the install after this long.
    #[arg(long, default_value = "60m", value_parser = parse_positive_duration)]
    pub install_timeout: Duration,
    /// Do not ask for confirmation (the reinstall erases the server).
    #[arg(long)]
    pub yes: bool,
    /// Accept an image URL on a loopback or private address (a mirror the server reaches over
    /// the vRack, or a test API); OVH itself downloads from the internet.
    #[arg(long)]
    pub allow_private_url: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    /// How to log in afterwards (the step file's `[ssh]` and the OpenSSH client config apply as
    /// for `deploy`; `--known-hosts` is where the server's new host key is recorded).
    #[command(flatten)]
    pub ssh: SshArgs,
}

/// What `nodeup reinstall --json` prints.
#[derive(Debug, Default, Serialize)]
struct ReinstallJson<'a> {
    /// Whether the reinstall (and the steps after it) succeeded.
    ok: bool,
    /// The server, as OVH describes it.
    #[serde(skip_serializing_if = "Option::is_none")]
    server: Option<&'a nodeup::baremetal::Server>,
    /// The API used: `current` or `legacy`.
    #[serde(skip_serializing_if = "Option::is_none")]
    api: Option<&'a str>,
    /// How long OVH's install took, in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    install_time: Option<f64>,
    /// The private key nodeup made for root, when it made one.
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'a std::path::Path>,
    /// The user logged in as afterwards (`null` when nodeup did not log in).
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    /// The steps' results.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    steps: Vec<output::StepReport>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Runs `nodeup reinstall`.
pub async fn run(args: ReinstallArgs) -> Result<(), Failure> {
    let generation = generation(&args)?;
    if args.cancel {
        return run_cancel(&args, generation).await;
    }
    let started_at_ovh = Arc::new(AtomicBool::new(false));
    let options = build_options(&args, started_at_ovh.clone())?;
    let client = Client::new(Credentials::from_env()?)?;
    let provider = OvhDedicated::new(client, generation);
    // Everything OVH would reject, and every local file, is checked before any API call.
    check_arguments(&provider, &options).map_err(|e| Failure::Usage(e.into()))?;
    confirm(&args)?;
    watch_ctrl_c(args.service.clone(), started_at_ovh);
    match reinstall(&provider, &options).await {
        Ok(report) => {
            let login = match &report.user {
                Some(user) => format!("logged in as {user}; {} steps", report.steps.len()),
                None => "no config drive and no steps: not logged in".into(),
            };
            eprintln!(
                "reinstalled {} ({}) in {:.0}s; {login}",
                report.server.name,
                report.server.ip,
                report.install_time.as_secs_f64(),
            );
            if args.json {
                print_json(&ReinstallJson {
                    ok: true,
                    server: Some(&report.server),
                    api: Some(&args.api),
                    install_time: Some(report.install_time.as_secs_f64()),
                    key: report.key.as_deref(),
                    user: report.user.as_deref(),
                    steps: output::StepReport::all(&report.steps),
                    error: None,
                });
            }
            Ok(())
        }
        Err(e) => {
            if args.json {
                print_json(&ReinstallJson {
                    error: Some(engine::error_chain(&e)),
                    ..ReinstallJson::default()
                });
            }
            let before = e.is_before_any_call()
                || matches!(&e, ReinstallError::Provider(p) if !matches!(p, nodeup::driver::ProviderError::Failed { .. }));
            let e = anyhow::Error::new(e);
            Err(if before {
                Failure::Usage(e)
            } else {
                Failure::Failed(e)
            })
        }
    }
}

/// The reinstall's options from the command line; local files are read here.
fn build_options(
    args: &ReinstallArgs,
    started_at_ovh: Arc<AtomicBool>,
) -> Result<ReinstallOptions, Failure> {
    let usage = |e: String| Failure::Usage(anyhow!(e));
    let http_headers = pairs("--http-header", &args.http_headers)?;
    let user_metadata = pairs("--metadata", &args.metadata)?;
    let user_data = args
        .user_data
        .as_ref()
        .map(|p| {
            std::fs::read_to_string(p)
                .map_err(|e| usage(format!("--user-data {}: cannot read it: {e}", p.display())))
        })
        .transpose()?;
    let then = args
        .then
        .as_ref()
        .map(|p| stepfile::load(p).map_err(|e| Failure::Usage(e.into())))
        .transpose()?;
    let (ssh_key, login_key, key_dir) = match &args.ssh_key {
        // No config drive: no key goes on the server; the deploy options' keys log in.
        _ if args.no_config_drive => (String::new(), None, None),
        Some(path) => {
            let key = std::fs::read_to_string(path)
                .map_err(|e| usage(format!("--ssh-key {}: cannot read it: {e}", path.display())))?;
            let private = path.with_extension("");
            (
                key.trim().to_string(),
                private.exists().then_some(private),
                None,
            )
        }
        // Made by the engine once the server is known to exist.
        None => (
            String::new(),
            None,
            Some(
                key_dir(&nodeup::state_dir(), &args.service)
                    .map_err(|e| Failure::Usage(e.into()))?,
            ),
        ),
    };
    let byoi = Byoi {
        image_url: args.image_url.clone().unwrap_or_default(),
        image_type: args.image_type.unwrap_or(ImageType::Qcow2),
        checksum: args.checksum.clone(),
        http_headers,
        description: args.description.clone(),
        disk_group_id: args.disk_group,
        config_drive: !args.no_config_drive,
        hostname: args.hostname.clone(),
        ssh_key,
        user_data,
        user_metadata,
    };
    let started = Instant::now();
    let mut deploy = args.ssh.options(then.as_ref(), Purpose::Reinstall)?;
    deploy.output = Some(output::script_output(None));
    deploy.progress = Some(output::progress(None, started));
    Ok(ReinstallOptions {
        service: args.service.clone(),
        byoi,
        allow_private_url: args.allow_private_url,
        poll_period: args.poll,
        install_timeout: args.install_timeout,
        login_key,
        key_dir,
        then: then.map(|f| f.steps),
        deploy,
        events: Some(progress_events(args.service.clone(), started_at_ovh)),
    })
}

/// The API generation `--api` and `--os` name.
fn generation(args: &ReinstallArgs) -> Result<Generation, Failure> {
    let usage = |e: String| Failure::Usage(anyhow!(e));
    match args.api.as_str() {
        "legacy" => Ok(Generation::Legacy),
        "current" if ["byoi_64", "byolinux_64"].contains(&args.os.as_str()) => {
            Ok(Generation::Current(args.os.clone()))
        }
        "current" => Err(usage(format!(
            "--os {:?}: use byoi_64 or byolinux_64",
            args.os
        ))),
        other => Err(usage(format!("--api {other:?}: use current or legacy"))),
    }
}

/// `K=V` arguments of `flag`, as pairs.
fn pairs(flag: &str, values: &[String]) -> Result<Vec<(String, String)>, Failure> {
    values
        .iter()
        .map(|h| {
            h.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| Failure::Usage(anyhow!("{flag} {h:?}: write NAME=VALUE")))
        })
        .collect()
}

/// `nodeup reinstall SERVICE --cancel`.
async fn run_cancel(args: &ReinstallArgs, generation: Generation) -> Result<(), Failure> {
    if generation != Generation::Legacy {
        return Err(Failure::Usage(anyhow!(
            "--cancel stops a reinstall of OVH's legacy BYOI call: pass --api legacy (the current \
             reinstall cannot be cancelled)"
        )));
    }
    let provider = OvhDedicated::new(Client::new(Credentials::from_env()?)?, generation);
    match cancel(&provider, &args.service).await {
        Ok(()) => {
            eprintln!(
                "cancelled the reinstall of {}; OVH puts the server in rescue mode",
                args.service
            );
            Ok(())
        }
        Err(e @ ReinstallError::Invalid(_)) => Err(Failure::Usage(e.into())),
        Err(e) => Err(Failure::Failed(e.into())),
    }
}

/// Says what the reinstall erases and asks for the server's name, unless --yes.
fn confirm(args: &ReinstallArgs) -> Result<(), Failure> {
    let usage = |e: &str| Failure::Usage(anyhow!(e.to_string()));
    eprintln!(
        "reinstalling {} erases everything on its disks and installs {}",
        args.service,
        args.image_url.as_deref().unwrap_or_default()
    );
    if args.yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(usage(
            "a reinstall erases the server: pass --yes to confirm",
        ));
    }
    eprint!("type the server's name to go on: ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    if answer.trim() != args.service {
        return Err(usage("not confirmed: nothing was done"));
    }
    Ok(())
}

/// Progress lines on stderr; marks when OVH has accepted the reinstall.
fn progress_events(service: String, started_at_ovh: Arc<AtomicBool>) -> ReinstallProgress {
    Arc::new(move |e| match e {
        ReinstallEvent::KeyMade { path } => {
            eprintln!("root's key for the new system: {} (kept)", path.display())
        }
        ReinstallEvent::Started { server } => {
            started_at_ovh.store(true, Ordering::SeqCst);
            eprintln!(
                "OVH accepted the reinstall of {} ({}); it takes about 10 minutes",
                server.name, server.ip
            )
        }
        ReinstallEvent::Status {
            status,
            message,
            elapsed,
        } => {
            eprintln!("[{:>4}s] {status}: {message}", elapsed.as_secs())
        }
        ReinstallEvent::Installed { elapsed } => eprintln!(
            "[{:>4}s] installed; waiting for {service} to boot and answer SSH",
            elapsed.as_secs()
        ),
    })
}

/// Ctrl+C cannot stop an install that OVH has started: say so, and how to follow it.
fn watch_ctrl_c(watched: String, started_at_ovh: Arc<AtomicBool>) {
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            if started_at_ovh.load(Ordering::SeqCst) {
                eprintln!(
                    "stopping nodeup; OVH's install of {watched} cannot be stopped and goes on: \
                     follow it with GET /dedicated/server/{watched}/install/status (or its task) \
                     or in the OVH control panel, then log in as root"
                );
            } else {
                eprintln!("stopping nodeup; nothing was asked of OVH yet");
            }
            std::process::exit(130);
        }
    });
}
