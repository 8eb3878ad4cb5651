//! `nodeup ovh consumer-key`: ask OVH for a consumer key and print the URL that validates it;
//! `nodeup ovh projects`: the Public Cloud projects the credentials reach.

use anyhow::anyhow;
use clap::{Args, Subcommand};

use nodeup::providers::ovh::{Client, Credentials, OvhDriver};

use super::Failure;

/// `nodeup ovh` subcommands.
#[derive(Debug, Subcommand)]
pub enum OvhCommand {
    /// Ask for a consumer key (with OVH_ENDPOINT, OVH_APPLICATION_KEY and OVH_APPLICATION_SECRET or
    /// ovh.conf) and print the URL to open to validate it.
    ConsumerKey(ConsumerKeyArgs),
    /// List the Public Cloud project ids these credentials reach (for OVH_CLOUD_PROJECT_SERVICE).
    Projects,
}

/// `nodeup ovh consumer-key`.
#[derive(Debug, Args)]
pub struct ConsumerKeyArgs {
    /// An access rule METHOD:PATH (repeatable); default: every method on /cloud/* and
    /// /dedicated/server/*.
    #[arg(long = "rule", value_name = "METHOD:PATH")]
    rules: Vec<String>,
}

/// Runs `nodeup ovh ...`.
pub async fn run(cmd: OvhCommand) -> Result<(), Failure> {
    match cmd {
        OvhCommand::ConsumerKey(args) => consumer_key(args).await,
        OvhCommand::Projects => {
            let client = Client::new(Credentials::from_env()?)?;
            for project in OvhDriver::list_projects(&client).await? {
                crate::outln!("{project}");
            }
            Ok(())
        }
    }
}

async fn consumer_key(args: ConsumerKeyArgs) -> Result<(), Failure> {
    let mut rules: Vec<(String, String)> = Vec::new();
    for rule in &args.rules {
        let (method, path) = rule
            .split_once(':')
            .filter(|(m, p)| ["GET", "POST", "PUT", "DELETE"].contains(m) && p.starts_with('/'))
            .ok_or_else(|| {
                Failure::Usage(anyhow!(
                    "--rule {rule:?}: write METHOD:PATH, e.g. GET:/cloud/*"
                ))
            })?;
        rules.push((method.to_string(), path.to_string()));
    }
    if rules.is_empty() {
        for path in ["/cloud/*", "/dedicated/server/*"] {
            for method in ["GET", "POST", "PUT", "DELETE"] {
                rules.push((method.to_string(), path.to_string()));
            }
        }
    }
    let mut creds = Credentials::from_env()?;
    creds.consumer_key = None;
    let client = Client::new(creds)?;
    let rules: Vec<(&str, &str)> = rules
        .iter()
        .map(|(m, p)| (m.as_str(), p.as_str()))
        .collect();
    let (key, url) = client
        .request_consumer_key(&rules)
        .await
        .map_err(|e| Failure::from(e.into_provider("POST /auth/credential".into())))?;
    crate::outln!("consumer key: {key}");
    crate::outln!("validate it by opening: {url}");
    crate::outln!("then: export OVH_CONSUMER_KEY={key}");
    Ok(())
}
