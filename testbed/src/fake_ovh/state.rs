//! What the fake keeps, typed: the project's SSH keys, volumes, snapshots and images, each
//! serialized exactly as OVH answers them, and the generic handlers over such collections.

use serde::{Deserialize, Serialize};

use super::*;

/// One item of a collection: serialized as OVH answers it, found by its id.
pub(super) trait Item: Clone + Serialize {
    /// How OVH's 404 message names the id (`sshKeyId = ...`).
    const ID_NAME: &'static str;
    /// Its id.
    fn id(&self) -> &str;
}

/// An SSH key of the project.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct SshKey {
    pub(super) id: String,
    pub(super) name: String,
    pub(super) public_key: String,
    pub(super) regions: Vec<String>,
    #[serde(rename = "fingerPrint")]
    pub(super) fingerprint: String,
}

/// A block-storage volume.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Volume {
    pub(super) id: String,
    pub(super) name: Option<String>,
    pub(super) description: Option<String>,
    pub(super) region: String,
    pub(super) size: u64,
    /// creating, available, in-use.
    pub(super) status: String,
    #[serde(rename = "type")]
    pub(super) kind: String,
    pub(super) attached_to: Vec<String>,
    pub(super) bootable: bool,
    pub(super) creation_date: String,
    pub(super) snapshot_id: Option<String>,
}

/// A snapshot of a volume.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Snapshot {
    pub(super) id: String,
    pub(super) volume_id: String,
    pub(super) status: String,
    pub(super) region: String,
    pub(super) name: String,
    pub(super) description: String,
    pub(super) size: u64,
    pub(super) creation_date: String,
}

/// An image: public ones from the catalog, private ones from instance snapshots.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Image {
    pub(super) id: String,
    pub(super) name: String,
    pub(super) region: String,
    #[serde(rename = "type")]
    pub(super) kind: String,
    /// public or private.
    pub(super) visibility: String,
    pub(super) status: String,
    /// The login user.
    pub(super) user: String,
    #[serde(default)]
    pub(super) min_disk: u64,
    #[serde(default)]
    pub(super) min_ram: u64,
    #[serde(default)]
    pub(super) size: f64,
    #[serde(default)]
    pub(super) creation_date: Option<String>,
    #[serde(default)]
    pub(super) description: Option<String>,
}

impl Item for SshKey {
    const ID_NAME: &'static str = "sshKeyId";
    fn id(&self) -> &str {
        &self.id
    }
}

impl Item for Volume {
    const ID_NAME: &'static str = "volumeId";
    fn id(&self) -> &str {
        &self.id
    }
}

impl Item for Snapshot {
    const ID_NAME: &'static str = "snapshotId";
    fn id(&self) -> &str {
        &self.id
    }
}

impl Item for Image {
    const ID_NAME: &'static str = "imageId";
    fn id(&self) -> &str {
        &self.id
    }
}

/// Picks one collection out of the fake's data (settling what time has changed first).
pub(super) type Pick<T> = fn(&mut Data) -> &mut Vec<T>;

pub(super) fn keys(d: &mut Data) -> &mut Vec<SshKey> {
    &mut d.keys
}

pub(super) fn volumes(d: &mut Data) -> &mut Vec<Volume> {
    settle_volumes(d);
    &mut d.volumes
}

pub(super) fn snapshots(d: &mut Data) -> &mut Vec<Snapshot> {
    &mut d.snapshots
}

pub(super) fn images(d: &mut Data) -> &mut Vec<Image> {
    &mut d.images
}

/// Volumes whose creation time has passed become `available`.
pub(super) fn settle_volumes(data: &mut Data) {
    let now = Instant::now();
    let ready: Vec<String> = data
        .volume_ready
        .iter()
        .filter(|(_, at)| **at <= now)
        .map(|(id, _)| id.clone())
        .collect();
    for id in ready {
        data.volume_ready.remove(&id);
        if let Some(v) = data.volumes.iter_mut().find(|v| v.id == id) {
            if v.status == "creating" {
                v.status = "available".into();
            }
        }
    }
}

pub(super) fn list_items<T: Item>(fake: &Fake, pick: Pick<T>) -> Response {
    let mut data = fake.data.lock().unwrap_or_else(|e| e.into_inner());
    Json(pick(&mut data).clone()).into_response()
}

pub(super) fn get_item<T: Item>(fake: &Fake, pick: Pick<T>, id: &str) -> Response {
    let mut data = fake.data.lock().unwrap_or_else(|e| e.into_inner());
    match pick(&mut data).iter().find(|v| v.id() == id) {
        Some(v) => Json(v.clone()).into_response(),
        None => missing(&format!("{} = {id}", T::ID_NAME)),
    }
}

/// Deletes an item, unless `refuse` says why not.
pub(super) fn delete_item<T: Item>(
    fake: &Fake,
    pick: Pick<T>,
    id: &str,
    refuse: impl Fn(&T) -> Option<Response>,
) -> Response {
    let mut data = fake.data.lock().unwrap_or_else(|e| e.into_inner());
    let items = pick(&mut data);
    let Some(pos) = items.iter().position(|v| v.id() == id) else {
        return missing(&format!("{} = {id}", T::ID_NAME));
    };
    if let Some(refused) = refuse(&items[pos]) {
        return refused;
    }
    items.remove(pos);
    Json(Value::Null).into_response()
}
