//! A driver that puts a fault-injecting relay in front of every local node it creates, and reports
//! the relay's address as the node's: what a deployment sees when the network between it and the
//! node misbehaves.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Mutex;

use async_trait::async_trait;
use nodeup::driver::{Features, NodeDriver, ProviderError, Result};
use nodeup::model::{CreateNode, Node};
use nodeup::providers::local::LocalDriver;

use crate::relay::{Faults, Relay};

/// Local nodes behind relays.
pub struct RelayedDriver {
    inner: LocalDriver,
    relays: Mutex<HashMap<String, std::sync::Arc<Relay>>>,
    first_connection: Option<Faults>,
}

impl RelayedDriver {
    /// Relays in front of `inner`'s nodes; the first connection through each gets
    /// `first_connection` faults (if any), the others none.
    pub fn new(inner: LocalDriver, first_connection: Option<Faults>) -> Self {
        RelayedDriver {
            inner,
            relays: Mutex::new(HashMap::new()),
            first_connection,
        }
    }

    /// The relay in front of a node.
    pub fn relay(&self, id: &str) -> Option<std::sync::Arc<Relay>> {
        self.relays
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    fn through_relay(&self, mut node: Node) -> Node {
        if let Some(relay) = self.relay(&node.id) {
            node.public_ips = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
            node.extra
                .insert("ssh_port".into(), relay.addr().port().into());
        }
        node
    }
}

#[async_trait]
impl NodeDriver for RelayedDriver {
    fn name(&self) -> &str {
        "relayed-local"
    }

    fn features(&self) -> Features {
        self.inner.features()
    }

    async fn list_nodes(&self) -> Result<Vec<Node>> {
        Ok(self
            .inner
            .list_nodes()
            .await?
            .into_iter()
            .map(|n| self.through_relay(n))
            .collect())
    }

    async fn create_node(&self, request: &CreateNode) -> Result<Node> {
        let node = self.inner.create_node(request).await?;
        let target = SocketAddr::new(node.public_ips[0], node.ssh_port());
        let relay = Relay::start(target)
            .await
            .map_err(|e| ProviderError::Failed {
                provider: self.name().into(),
                context: "starting a relay".into(),
                source: Box::new(e),
            })?;
        if let Some(faults) = &self.first_connection {
            relay.set_faults_once(faults.clone());
        }
        self.relays
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(node.id.clone(), std::sync::Arc::new(relay));
        Ok(self.through_relay(node))
    }

    async fn destroy_node(&self, node: &Node) -> Result<()> {
        self.inner.destroy_node(node).await?;
        self.relays
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&node.id);
        Ok(())
    }
}
