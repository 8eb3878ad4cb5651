//! `nodeup run STEPFILE --host [user@]address[:port] ...`: the same steps on machines that already
//! exist, all at once, output prefixed by the host.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::anyhow;
use clap::Args;
use serde_json::{json, Value};

use nodeup::deploy::{stepfile, Step};
use nodeup::engine::{self, run_steps, Target};
use nodeup::journal::{NodeIntent, NodeState, RunEnd, RunStart};
use nodeup::ssh::HostKeyPolicy;

use super::deploy::{cancel_on_signals, options, SshArgs};
use super::output::{self, print_json};
use super::Failure;

/// `nodeup run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The step file.
    pub stepfile: PathBuf,
    /// A machine: [user@]address[:port], IPv6 as [address]:port (repeatable).
    #[arg(long = "host", value_name = "HOST", required = true)]
    pub hosts: Vec<String>,
    #[command(flatten)]
    pub ssh: SshArgs,
}

/// A `--host` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSpec {
    /// The user, when given.
    pub user: Option<String>,
    /// The address or name.
    pub host: String,
    /// The port, when given.
    pub port: Option<u16>,
}

/// Parses `[user@]address[:port]`, with `[v6address]:port`.
pub fn parse_host(text: &str) -> Result<HostSpec, String> {
    let (user, rest) = match text.rsplit_once('@') {
        Some((user, rest)) if !user.is_empty() => (Some(user.to_string()), rest),
        Some(_) => return Err(format!("{text:?}: the user before @ is empty")),
        None => (None, text),
    };
    let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
        let (host, after) = inner
            .split_once(']')
            .ok_or_else(|| format!("{text:?}: a [ without its ]"))?;
        match after.strip_prefix(':') {
            Some(p) => (host.to_string(), Some(p)),
            None if after.is_empty() => (host.to_string(), None),
            None => return Err(format!("{text:?}: unexpected {after:?} after ]")),
        }
    } else if rest.matches(':').count() > 1 {
        // A bare IPv6 address.
        (rest.to_string(), None)
    } else {
        match rest.split_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (rest.to_string(), None),
        }
    };
    if host.is_empty() {
        return Err(format!("{text:?}: no address"));
    }
    let port = port
        .map(|p| {
            p.parse::<u16>()
                .map_err(|_| format!("{text:?}: {p:?} is not a port"))
        })
        .transpose()?;
    Ok(HostSpec { user, host, port })
}

/// Runs `nodeup run`.
pub async fn run(args: RunArgs) -> Result<(), Failure> {
    let file = stepfile::load(&args.stepfile).map_err(|e| Failure::Usage(e.into()))?;
    let hosts = resolve_hosts(&args.hosts, file.ssh.port).await?;
    // Machines that exist already are checked strictly, against the user's own known_hosts.
    let mut options = options(&file, &args.ssh, HostKeyPolicy::Strict);
    if args.ssh.known_hosts.is_none() && file.ssh.known_hosts.is_none() {
        if let Some(home) = std::env::var_os("HOME") {
            options.known_hosts = PathBuf::from(home).join(".ssh/known_hosts");
        }
    }
    let creds = options
        .credentials()
        .map_err(|e| Failure::Usage(anyhow::Error::new(e)))?;
    if creds.is_empty() {
        return Err(Failure::Usage(anyhow!(
            "no way to log in: give a private key file (--key), NODEUP_SSH_PASSWORD, or run an ssh-agent"
        )));
    }
    let journal = super::journal::begin_run(RunStart::with_stepfile("run", &args.stepfile)).await?;
    cancel_on_signals(options.cancel.clone(), super::deploy::Created::default());

    let started = Instant::now();
    let several = hosts.len() > 1;
    let creds = Arc::new(creds);
    let steps = Arc::new(file.steps.clone());
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (text, spec, addr)) in hosts.into_iter().enumerate() {
        let mut options = options.clone();
        let prefix = several.then(|| text.clone());
        options.progress = Some(output::progress(prefix.clone(), started));
        options.output = Some(output::script_output(prefix.clone()));
        let mut users = vec![spec.user.clone().unwrap_or(options.ssh_username.clone())];
        for user in &options.alternate_usernames {
            if !users.contains(user) {
                users.push(user.clone());
            }
        }
        let entry = match &journal {
            Some(journal) => Some(
                journal
                    .begin_node(&host_intent(&text, addr, &steps), "run")
                    .await?,
            ),
            None => None,
        };
        let target = Target {
            addr,
            users,
            pinned_host_keys: Vec::new(),
            node: None,
            journal: entry,
        };
        let (creds, steps) = (creds.clone(), steps.clone());
        tasks.spawn(async move {
            let cancel = options.cancel.clone();
            let result = tokio::select! {
                _ = cancel.cancelled() => None,
                r = run_steps(&target, &steps, &creds, &options) => Some(r),
            };
            if let Some(entry) = &target.journal {
                match &result {
                    Some(Ok(_)) => entry.finish(NodeState::Done).await,
                    Some(Err(f)) => entry.failed(&engine::error_chain(&f.cause)).await,
                    None => entry.finish(NodeState::Cancelled).await,
                }
            }
            (i, text, result)
        });
    }
    let mut results: Vec<(usize, Value, bool)> = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (i, host, result) =
            joined.map_err(|e| Failure::Failed(anyhow!("a task failed: {e}")))?;
        let (value, ok) = host_result(&host, result, started);
        results.push((i, value, ok));
    }
    results.sort_by_key(|r| r.0);
    let failed = results.iter().filter(|r| !r.2).count();
    if args.ssh.json {
        print_json(&results.iter().map(|r| r.1.clone()).collect::<Vec<_>>());
    }
    if let Some(journal) = &journal {
        let end = match failed {
            0 => RunEnd::Done,
            _ if options.cancel.is_cancelled() => RunEnd::Cancelled,
            _ => RunEnd::Failed,
        };
        journal.finish_run(end).await;
    }
    if failed > 0 {
        return Err(Failure::Failed(anyhow!(
            "{failed} of {} hosts failed",
            results.len()
        )));
    }
    Ok(())
}

/// A host of `run`, as the journal records it.
fn host_intent(text: &str, addr: SocketAddr, steps: &Step) -> NodeIntent {
    NodeIntent {
        name: text.to_string(),
        address: Some(addr.ip().to_string()),
        steps: steps.flatten().len(),
        ..Default::default()
    }
}

/// Each `--host` as given, parsed, with the address it resolves to (port: its own, else the
/// step file's, else 22).
async fn resolve_hosts(
    texts: &[String],
    default_port: Option<u16>,
) -> Result<Vec<(String, HostSpec, SocketAddr)>, Failure> {
    let mut hosts = Vec::new();
    for text in texts {
        let spec = parse_host(text).map_err(|e| Failure::Usage(anyhow!("--host {e}")))?;
        let port = spec.port.or(default_port).unwrap_or(22);
        let addr: SocketAddr = tokio::net::lookup_host((spec.host.as_str(), port))
            .await
            .ok()
            .and_then(|mut addrs| addrs.next())
            .ok_or_else(|| {
                Failure::Usage(anyhow!("--host {text}: cannot resolve {}", spec.host))
            })?;
        hosts.push((text.clone(), spec, addr));
    }
    Ok(hosts)
}

/// One host's outcome: said on stderr, as JSON, and whether it succeeded.
fn host_result(
    host: &str,
    result: Option<Result<engine::Run, engine::RunFailure>>,
    started: Instant,
) -> (Value, bool) {
    match result {
        None => {
            eprintln!("[{host}] cancelled");
            (
                json!({ "host": host, "ok": false, "error": "cancelled" }),
                false,
            )
        }
        Some(Ok(run)) => {
            eprintln!(
                "[{host}] done as {}: {} steps in {:.1}s",
                run.user,
                run.steps.len(),
                started.elapsed().as_secs_f64()
            );
            (
                json!({
                    "host": host, "ok": true, "user": run.user,
                    "reconnects": run.reconnects, "steps": output::steps_json(&run.steps),
                }),
                true,
            )
        }
        Some(Err(failure)) => {
            let error = engine::error_chain(&failure.cause);
            let at = failure
                .step
                .map(|(i, kind)| format!(" at step {i} ({kind})"))
                .unwrap_or_default();
            eprintln!("[{host}] failed{at}: {error}");
            (
                json!({
                    "host": host, "ok": false, "error": error,
                    "failed_step": output::failed_step_json(failure.step, &failure.cause),
                    "logins": failure.attempts,
                    "steps": output::steps_json(&failure.completed),
                }),
                false,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        let h = parse_host("debian@10.0.0.5:2222").unwrap();
        assert_eq!(
            h,
            HostSpec {
                user: Some("debian".into()),
                host: "10.0.0.5".into(),
                port: Some(2222)
            }
        );
        assert_eq!(parse_host("web-1").unwrap().port, None);
        assert_eq!(parse_host("[2001:db8::1]:22").unwrap().host, "2001:db8::1");
        assert_eq!(parse_host("root@2001:db8::1").unwrap().host, "2001:db8::1");
        assert!(parse_host("@x").is_err());
        assert!(parse_host("x:port").is_err());
        assert!(parse_host("[::1").is_err());
    }
}
