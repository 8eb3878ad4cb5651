//! Cinder volumes and snapshots, attached to servers through Nova.

use std::collections::BTreeMap;

use reqwest::Method;
use serde::Deserialize;
use serde_json::Value;

use super::api::Service;
use super::bodies;
use super::{invalid, not_found, OpenStackDriver};
use crate::driver::{ProviderError, Result};
use crate::model::{CreateVolume, Node, StorageVolume, VolumeSnapshot};
use crate::providers::kit::segment;

/// A Cinder volume.
#[derive(Debug, Deserialize)]
struct Volume {
    id: String,
    #[serde(default)]
    name: Option<String>,
    size: u64,
    status: String,
    #[serde(default)]
    attachments: Vec<Attachment>,
    #[serde(default)]
    availability_zone: Option<String>,
    #[serde(default)]
    volume_type: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    snapshot_id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Attachment {
    server_id: String,
    #[serde(default)]
    device: Option<String>,
}

/// A Cinder snapshot.
#[derive(Debug, Deserialize)]
struct Snapshot {
    id: String,
    #[serde(default)]
    name: Option<String>,
    volume_id: String,
    size: u64,
    status: String,
    #[serde(default)]
    created_at: Option<String>,
    #[serde(default)]
    description: Option<String>,
}

fn to_volume(v: Volume) -> StorageVolume {
    let mut extra = BTreeMap::new();
    let mut put = |key: &str, value: Option<String>| {
        if let Some(value) = value {
            extra.insert(key.to_string(), Value::from(value));
        }
    };
    put("location", v.availability_zone);
    put("type", v.volume_type);
    put("description", v.description);
    put("snapshot", v.snapshot_id);
    put(
        "device",
        v.attachments.first().and_then(|a| a.device.clone()),
    );
    StorageVolume {
        id: v.id,
        name: v.name.unwrap_or_default(),
        size_gb: v.size,
        state: v.status,
        attached_to: v.attachments.first().map(|a| a.server_id.clone()),
        extra,
    }
}

fn to_snapshot(s: Snapshot) -> VolumeSnapshot {
    let mut extra = BTreeMap::new();
    if let Some(d) = s.description {
        extra.insert("description".into(), Value::from(d));
    }
    VolumeSnapshot {
        id: s.id,
        name: s.name,
        volume_id: s.volume_id,
        size_gb: s.size,
        state: s.status,
        created: s.created_at,
        extra,
    }
}

impl OpenStackDriver {
    /// Every volume of the project.
    pub(super) async fn volumes(&self) -> Result<Vec<StorageVolume>> {
        let path = format!("/volumes/detail?limit={}", super::driver::PAGE_SIZE);
        let volumes: Vec<Volume> = self
            .list_all(Service::Volume, &path, "volumes", "listing volumes")
            .await?;
        Ok(volumes.into_iter().map(to_volume).collect())
    }

    /// One volume.
    pub(super) async fn volume(&self, id: &str) -> Result<StorageVolume> {
        #[derive(Deserialize)]
        struct One {
            volume: Volume,
        }
        let path = format!("/volumes/{}", segment(id));
        let one: One = self
            .call(Service::Volume, Method::GET, &path, None, || {
                format!("looking up volume {id}")
            })
            .await
            .map_err(|e| match e {
                ProviderError::NotFound { .. } => not_found("volume", id),
                e => e,
            })?;
        Ok(to_volume(one.volume))
    }

    pub(super) async fn make_volume(&self, request: &CreateVolume) -> Result<StorageVolume> {
        #[derive(Deserialize)]
        struct One {
            volume: Volume,
        }
        if request.size_gb == 0 {
            return Err(invalid(format!(
                "volume {:?}: give a size of at least 1 GB",
                request.name
            )));
        }
        let volume = bodies::json(&bodies::VolumeRequest {
            volume: bodies::NewVolume {
                size: request.size_gb,
                name: &request.name,
                availability_zone: request.location.as_deref(),
                volume_type: request.volume_type.as_deref(),
                description: request.description.as_deref(),
                snapshot_id: request.snapshot.as_deref(),
            },
        });
        let one: One = self
            .call(
                Service::Volume,
                Method::POST,
                "/volumes",
                Some(&volume),
                || format!("creating volume {}", request.name),
            )
            .await?;
        Ok(to_volume(one.volume))
    }

    pub(super) async fn attach(&self, node: &Node, volume: &StorageVolume) -> Result<()> {
        let path = format!("/servers/{}/os-volume_attachments", segment(&node.id));
        let body = bodies::json(&bodies::AttachmentRequest {
            attachment: bodies::Attachment {
                volume_id: &volume.id,
            },
        });
        let _: Value = self
            .call(Service::Compute, Method::POST, &path, Some(&body), || {
                format!("attaching volume {} to server {}", volume.id, node.name)
            })
            .await?;
        Ok(())
    }

    pub(super) async fn detach(&self, volume: &StorageVolume, node: Option<&Node>) -> Result<()> {
        let server = match node {
            Some(node) => node.id.clone(),
            None => self.volume(&volume.id).await?.attached_to.ok_or_else(|| {
                invalid(format!("volume {} is not attached to a server", volume.id))
            })?,
        };
        let path = format!(
            "/servers/{}/os-volume_attachments/{}",
            segment(&server),
            segment(&volume.id)
        );
        let _: Value = self
            .call(Service::Compute, Method::DELETE, &path, None, || {
                format!("detaching volume {} from server {server}", volume.id)
            })
            .await?;
        Ok(())
    }

    pub(super) async fn delete_volume(&self, volume: &StorageVolume) -> Result<()> {
        let path = format!("/volumes/{}", segment(&volume.id));
        let _: Value = self
            .call(Service::Volume, Method::DELETE, &path, None, || {
                format!("deleting volume {}", volume.id)
            })
            .await?;
        Ok(())
    }

    pub(super) async fn snapshot(
        &self,
        volume: &StorageVolume,
        name: Option<&str>,
        description: Option<&str>,
    ) -> Result<VolumeSnapshot> {
        #[derive(Deserialize)]
        struct One {
            snapshot: Snapshot,
        }
        // `force`: a snapshot of a volume in use, as Libcloud's driver takes it.
        let body = bodies::json(&bodies::SnapshotRequest {
            snapshot: bodies::NewSnapshot {
                volume_id: &volume.id,
                name,
                description,
                force: true,
            },
        });
        let one: One = self
            .call(
                Service::Volume,
                Method::POST,
                "/snapshots",
                Some(&body),
                || format!("taking a snapshot of volume {}", volume.id),
            )
            .await?;
        Ok(to_snapshot(one.snapshot))
    }

    pub(super) async fn snapshots(&self) -> Result<Vec<VolumeSnapshot>> {
        let path = format!("/snapshots/detail?limit={}", super::driver::PAGE_SIZE);
        let snapshots: Vec<Snapshot> = self
            .list_all(Service::Volume, &path, "snapshots", "listing snapshots")
            .await?;
        Ok(snapshots.into_iter().map(to_snapshot).collect())
    }

    pub(super) async fn delete_snapshot(&self, snapshot: &VolumeSnapshot) -> Result<()> {
        let path = format!("/snapshots/{}", segment(&snapshot.id));
        let _: Value = self
            .call(Service::Volume, Method::DELETE, &path, None, || {
                format!("deleting snapshot {}", snapshot.id)
            })
            .await?;
        Ok(())
    }
}
