//! EBS volumes and snapshots, and images made from an instance.

use std::collections::BTreeMap;

use serde_json::Value;

use super::api::Params;
use super::{invalid, xml, Ec2Driver};
use crate::driver::{NodeDriver, Result};
use crate::model::{CreateVolume, Node, NodeImage, StorageVolume, VolumeSnapshot};

/// The device names a volume may be attached as, in the order they are given out (EC2's
/// recommended range for EBS volumes on Linux).
const DEVICES: [&str; 11] = [
    "/dev/sdf", "/dev/sdg", "/dev/sdh", "/dev/sdi", "/dev/sdj", "/dev/sdk", "/dev/sdl", "/dev/sdm",
    "/dev/sdn", "/dev/sdo", "/dev/sdp",
];

fn to_volume(v: xml::Volume) -> StorageVolume {
    let mut extra = BTreeMap::new();
    extra.insert("location".into(), Value::from(v.availability_zone.clone()));
    if let Some(kind) = &v.volume_type {
        extra.insert("type".into(), Value::from(kind.clone()));
    }
    if let Some(snapshot) = &v.snapshot_id {
        extra.insert("snapshot".into(), Value::from(snapshot.clone()));
    }
    if let Some(a) = v.attachment_set.item.first() {
        extra.insert("device".into(), Value::from(a.device.clone()));
    }
    StorageVolume {
        name: xml::tag(&v.tag_set, "Name").unwrap_or("").to_string(),
        size_gb: v.size,
        state: v.status.clone(),
        attached_to: v.attachment_set.item.first().map(|a| a.instance_id.clone()),
        id: v.volume_id,
        extra,
    }
}

fn to_snapshot(s: xml::Snapshot) -> VolumeSnapshot {
    let mut extra = BTreeMap::new();
    if let Some(d) = &s.description {
        extra.insert("description".into(), Value::from(d.clone()));
    }
    VolumeSnapshot {
        name: xml::tag(&s.tag_set, "Name").map(str::to_string),
        volume_id: s.volume_id,
        size_gb: s.volume_size,
        state: s.status,
        created: s.start_time,
        id: s.snapshot_id,
        extra,
    }
}

impl Ec2Driver {
    /// The volumes the parameters select.
    pub(super) async fn volumes(&self, params: Params) -> Result<Vec<StorageVolume>> {
        let doc: xml::DescribeVolumes = self
            .client
            .call("DescribeVolumes", &params, || "listing volumes".into())
            .await?;
        Ok(doc.volume_set.item.into_iter().map(to_volume).collect())
    }

    /// Makes a volume in the request's zone (else the region's first), named by a tag.
    pub(super) async fn make_volume(&self, request: &CreateVolume) -> Result<StorageVolume> {
        let zone = match &request.location {
            Some(zone) => zone.clone(),
            None => self
                .list_locations()
                .await?
                .into_iter()
                .next()
                .map(|l| l.id)
                .ok_or_else(|| invalid("the region has no availability zone".into()))?,
        };
        let params = Params::new()
            .set("AvailabilityZone", zone)
            .set("Size", request.size_gb.to_string())
            .maybe("VolumeType", request.volume_type.clone())
            .maybe("SnapshotId", request.snapshot.clone())
            .tags(1, "volume", &[("Name".into(), request.name.clone())]);
        let made: xml::Volume = self
            .client
            .call("CreateVolume", &params, || {
                format!("creating volume {}", request.name)
            })
            .await?;
        let mut volume = to_volume(made);
        volume.name = request.name.clone();
        Ok(volume)
    }

    /// Attaches a volume as the node's first free device of [`DEVICES`].
    pub(super) async fn attach(&self, node: &Node, volume: &StorageVolume) -> Result<()> {
        let attached = self
            .volumes(Params::new().filter("attachment.instance-id", &[&node.id]))
            .await?;
        let used: Vec<String> = attached
            .iter()
            .filter_map(|v| v.extra.get("device").and_then(|d| d.as_str()))
            .map(str::to_string)
            .collect();
        let device = DEVICES
            .iter()
            .find(|d| !used.iter().any(|u| u == *d))
            .ok_or_else(|| invalid(format!("{} has no free device name left", node.id)))?;
        let params = Params::new()
            .set("VolumeId", volume.id.clone())
            .set("InstanceId", node.id.clone())
            .set("Device", *device);
        let _: xml::Attachment = self
            .client
            .call("AttachVolume", &params, || {
                format!("attaching {} to {}", volume.id, node.id)
            })
            .await?;
        Ok(())
    }

    /// Takes a snapshot, named by a tag.
    pub(super) async fn snapshot(
        &self,
        volume: &StorageVolume,
        name: Option<&str>,
        description: Option<&str>,
    ) -> Result<VolumeSnapshot> {
        let mut params = Params::new()
            .set("VolumeId", volume.id.clone())
            .maybe("Description", description);
        if let Some(name) = name {
            params = params.tags(1, "snapshot", &[("Name".into(), name.into())]);
        }
        let made: xml::Snapshot = self
            .client
            .call("CreateSnapshot", &params, || {
                format!("taking a snapshot of {}", volume.id)
            })
            .await?;
        let mut snapshot = to_snapshot(made);
        snapshot.name = name.map(str::to_string);
        Ok(snapshot)
    }

    /// The account's own snapshots the parameters select.
    pub(super) async fn snapshots(&self, params: Params) -> Result<Vec<VolumeSnapshot>> {
        let params = params.list("Owner", &["self"]);
        let doc: xml::DescribeSnapshots = self
            .client
            .call("DescribeSnapshots", &params, || "listing snapshots".into())
            .await?;
        Ok(doc.snapshot_set.item.into_iter().map(to_snapshot).collect())
    }

    /// Makes an image (AMI) from an instance.
    pub(super) async fn image_of(
        &self,
        node: &Node,
        name: &str,
        description: Option<&str>,
    ) -> Result<NodeImage> {
        let params = Params::new()
            .set("InstanceId", node.id.clone())
            .set("Name", name)
            .maybe("Description", description);
        let made: xml::CreatedImage = self
            .client
            .call("CreateImage", &params, || {
                format!("making an image of {}", node.id)
            })
            .await?;
        Ok(NodeImage {
            id: made.image_id,
            name: name.to_string(),
            extra: BTreeMap::new(),
        })
    }
}
