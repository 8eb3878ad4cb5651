//! Waiting until nodes run and have an address: one `list_nodes` call per poll for all of them,
//! polls that start fast and slow down to the poll period, a node in error ending the wait at once.

use std::net::IpAddr;
use std::time::Duration;

use tokio::time::Instant;

use crate::driver::{NodeDriver, ProviderError};
pub use crate::model::Interface;
use crate::model::{Node, NodeState};

/// How to wait.
#[derive(Debug, Clone)]
pub struct WaitOptions {
    /// Give up after this long.
    pub timeout: Duration,
    /// The longest pause between two polls (the first polls come sooner).
    pub poll_period: Duration,
    /// Which addresses count.
    pub interface: Interface,
    /// Only IPv4 addresses count (Libcloud's `force_ipv4`, on by default as there): a node that
    /// runs with IPv6 addresses alone is an error ([`WaitError::OnlyIpv6`]) that says how to allow
    /// them.
    pub force_ipv4: bool,
    /// List only the nodes of this location (Libcloud's `ex_list_nodes_kwargs`): one smaller list
    /// call per poll where the provider filters by location.
    pub location: Option<String>,
}

impl Default for WaitOptions {
    fn default() -> Self {
        WaitOptions {
            timeout: DEFAULT_WAIT,
            poll_period: DEFAULT_POLL,
            interface: Interface::Public,
            force_ipv4: true,
            location: None,
        }
    }
}

/// How long [`wait_until_running`] waits unless told otherwise: Libcloud's `wait_until_running`
/// timeout (`deploy_node` waits less: [`crate::engine::DeployOptions::timeout`]).
pub const DEFAULT_WAIT: Duration = Duration::from_secs(600);

/// The longest pause between polls of [`wait_until_running`] unless told otherwise: Libcloud's
/// `wait_period` there. The first polls come sooner (100 ms, doubling), so that a node that runs
/// at once is not waited for a whole period.
pub const DEFAULT_POLL: Duration = Duration::from_secs(3);

/// The pause after the first poll; each next one doubles, up to the poll period, so that a node
/// that runs at once is not waited for a whole period.
pub const FIRST_POLL_PAUSE: Duration = Duration::from_millis(100);

/// How long a node may run with IPv6 addresses alone, under `force_ipv4`, before that is an error
/// (a provider may give the IPv4 address a little after the IPv6 one).
pub const IPV6_ONLY_GRACE: Duration = Duration::from_secs(20);

/// A node that runs, with its addresses on the chosen interface, IPv4 first.
#[derive(Debug, Clone)]
pub struct Ready {
    /// The node as last listed.
    pub node: Node,
    /// Its addresses: IPv4 ones first, then IPv6.
    pub addresses: Vec<IpAddr>,
}

/// Why a wait ended without every node ready.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    /// Time ran out.
    #[error("timed out after {after:?} waiting for {}", describe(.waiting))]
    Timeout {
        /// The limit.
        after: Duration,
        /// The nodes not ready, with their last state (`None`: not listed).
        waiting: Vec<(String, Option<NodeState>)>,
    },
    /// A node went into the error state.
    #[error("node {name} ({id}) failed: {reason}")]
    NodeFailed {
        /// Its id.
        id: String,
        /// Its name.
        name: String,
        /// What the provider said.
        reason: String,
    },
    /// A node that was listed is gone.
    #[error("node {0} disappeared while starting")]
    Gone(String),
    /// A node runs with IPv6 addresses alone, and only IPv4 ones count (`force_ipv4`).
    #[error(
        "node {name} ({id}) runs with IPv6 addresses only ({addresses}), and only IPv4 addresses \
         are used: set `force_ipv4 = false` under [ssh] (or --force-ipv4 false) to log in over \
         IPv6"
    )]
    OnlyIpv6 {
        /// Its id.
        id: String,
        /// Its name.
        name: String,
        /// Its addresses.
        addresses: String,
    },
    /// Listing nodes failed.
    #[error(transparent)]
    Provider(#[from] ProviderError),
}

fn describe(waiting: &[(String, Option<NodeState>)]) -> String {
    waiting
        .iter()
        .map(|(id, state)| match state {
            Some(state) => format!("node {id} (still {state})"),
            None => format!("node {id} (not listed)"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn only_ipv6_error(node: &Node, interface: Interface) -> WaitError {
    let ips = match interface {
        Interface::Public => &node.public_ips,
        Interface::Private => &node.private_ips,
    };
    WaitError::OnlyIpv6 {
        id: node.id.clone(),
        name: node.name.clone(),
        addresses: ips
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// Orders addresses IPv4 first, then IPv6, keeping the provider's order within each.
pub fn preferred(addresses: &[IpAddr]) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = addresses.iter().filter(|a| a.is_ipv4()).copied().collect();
    out.extend(addresses.iter().filter(|a| a.is_ipv6()));
    out
}

/// What is known of one node being waited for, from poll to poll.
#[derive(Default, Clone)]
struct Watch {
    /// It was listed once (so that disappearing is an error).
    seen: bool,
    /// Since when it runs with IPv6 addresses only, under `force_ipv4`.
    only_ipv6_since: Option<Instant>,
}

/// Waits until every node in `ids` is `Running` with an address on the chosen interface.
pub async fn wait_until_running(
    driver: &dyn NodeDriver,
    ids: &[String],
    options: &WaitOptions,
) -> Result<Vec<Ready>, WaitError> {
    let started = Instant::now();
    let mut pause = FIRST_POLL_PAUSE.min(options.poll_period);
    let mut watches = vec![Watch::default(); ids.len()];
    loop {
        let nodes = match &options.location {
            Some(location) => driver.list_nodes_in(location).await?,
            None => driver.list_nodes().await?,
        };
        let mut ready = Vec::with_capacity(ids.len());
        let mut waiting = Vec::new();
        for (id, watch) in ids.iter().zip(watches.iter_mut()) {
            let node = nodes.iter().find(|n| &n.id == id);
            match check(id, node, watch, options)? {
                Some(r) => ready.push(r),
                None => waiting.push((id.clone(), node.map(|n| n.state))),
            }
        }
        if waiting.is_empty() {
            return Ok(ready);
        }
        if started.elapsed() + pause > options.timeout {
            return Err(WaitError::Timeout {
                after: options.timeout,
                waiting,
            });
        }
        tracing::debug!(?waiting, "waiting for nodes");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(options.poll_period);
    }
}

/// One node of a poll (`None`: not listed): ready, still to wait for, or an error (gone after
/// it was seen, in error, or IPv6 alone past the grace under `force_ipv4`).
fn check(
    id: &str,
    node: Option<&Node>,
    watch: &mut Watch,
    options: &WaitOptions,
) -> Result<Option<Ready>, WaitError> {
    let Some(node) = node else {
        return match watch.seen {
            true => Err(WaitError::Gone(id.to_string())),
            false => Ok(None),
        };
    };
    watch.seen = true;
    if node.state == NodeState::Error {
        let reason = node.error().unwrap_or("the provider gave no reason");
        return Err(WaitError::NodeFailed {
            id: id.to_string(),
            name: node.name.clone(),
            reason: reason.to_string(),
        });
    }
    let mut addresses = preferred(match options.interface {
        Interface::Public => &node.public_ips,
        Interface::Private => &node.private_ips,
    });
    let only_ipv6 = !addresses.is_empty() && addresses.iter().all(IpAddr::is_ipv6);
    if options.force_ipv4 {
        addresses.retain(IpAddr::is_ipv4);
    }
    if options.force_ipv4 && only_ipv6 && node.state == NodeState::Running {
        let since = *watch.only_ipv6_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= IPV6_ONLY_GRACE.min(options.timeout) {
            return Err(only_ipv6_error(node, options.interface));
        }
    }
    Ok(
        (node.state == NodeState::Running && !addresses.is_empty()).then(|| Ready {
            node: node.clone(),
            addresses,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::CreateNode;
    use crate::providers::dummy::DummyDriver;

    async fn two(driver: &DummyDriver) -> Vec<String> {
        let mut ids = Vec::new();
        for name in ["a", "b"] {
            let node = driver
                .create_node(&CreateNode {
                    name: name.into(),
                    ..Default::default()
                })
                .await
                .unwrap();
            ids.push(node.id);
        }
        ids
    }

    #[tokio::test(start_paused = true)]
    async fn returns_when_all_run_and_prefers_ipv4() {
        let driver = DummyDriver::new();
        let ids = two(&driver).await;
        let ready = wait_until_running(&driver, &ids, &WaitOptions::default())
            .await
            .unwrap();
        assert_eq!(ready.len(), 2);
        assert!(ready[0].addresses[0].is_ipv4());
        let mixed: Vec<IpAddr> = vec!["::1".parse().unwrap(), "10.0.0.1".parse().unwrap()];
        assert_eq!(preferred(&mixed)[0], "10.0.0.1".parse::<IpAddr>().unwrap());
        let v6_only: Vec<IpAddr> = vec!["2001:db8::1".parse().unwrap()];
        assert_eq!(preferred(&v6_only), v6_only);
    }

    #[tokio::test(start_paused = true)]
    async fn force_ipv4_and_a_location_narrow_what_counts() {
        let driver = DummyDriver::new();
        let ids = two(&driver).await;
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        driver.set_public_ips(&ids[1], vec![v6]).unwrap();
        let allow_v6 = WaitOptions {
            force_ipv4: false,
            ..Default::default()
        };
        let ready = wait_until_running(&driver, &ids, &allow_v6).await.unwrap();
        assert_eq!(
            ready[1].addresses,
            vec![v6],
            "IPv6 alone counts when allowed"
        );
        // By default, as Libcloud's, only IPv4 counts: an IPv6-only node is an error that says
        // how to allow it, after a grace (the IPv4 address may come later), not at the timeout.
        let started = Instant::now();
        let err = wait_until_running(&driver, &ids, &WaitOptions::default())
            .await
            .unwrap_err();
        assert!(started.elapsed() < DEFAULT_WAIT);
        let text = err.to_string();
        assert!(
            text.contains(&format!("({}) runs with IPv6 addresses only", ids[1])),
            "{text}"
        );
        assert!(text.contains("force_ipv4 = false"), "{text}");
        // Listing one location: nodes elsewhere are not listed.
        let here = WaitOptions {
            location: Some("1".into()),
            ..allow_v6.clone()
        };
        assert_eq!(
            wait_until_running(&driver, &ids, &here)
                .await
                .unwrap()
                .len(),
            2
        );
        let elsewhere = WaitOptions {
            timeout: Duration::from_secs(10),
            location: Some("mars".into()),
            ..Default::default()
        };
        let err = wait_until_running(&driver, &ids, &elsewhere)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("(not listed)"), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn times_out_naming_the_nodes_still_pending() {
        let driver = DummyDriver::new();
        let ids = two(&driver).await;
        driver.set_state(&ids[1], NodeState::Pending).unwrap();
        let options = WaitOptions {
            timeout: Duration::from_secs(30),
            ..Default::default()
        };
        let started = Instant::now();
        let err = wait_until_running(&driver, &ids, &options)
            .await
            .unwrap_err();
        assert!(started.elapsed() <= Duration::from_secs(30));
        let text = err.to_string();
        assert!(
            text.contains(&format!("node {} (still pending)", ids[1])),
            "{text}"
        );
        assert!(!text.contains(&format!("node {} (", ids[0])), "{text}");
    }

    #[tokio::test(start_paused = true)]
    async fn an_error_state_ends_the_wait_at_once() {
        let driver = DummyDriver::new();
        let ids = two(&driver).await;
        driver.set_state(&ids[0], NodeState::Pending).unwrap();
        driver.set_state(&ids[1], NodeState::Error).unwrap();
        let started = Instant::now();
        let err = wait_until_running(&driver, &ids, &WaitOptions::default())
            .await
            .unwrap_err();
        assert!(matches!(err, WaitError::NodeFailed { .. }), "{err}");
        assert_eq!(started.elapsed(), Duration::ZERO);
    }
}
