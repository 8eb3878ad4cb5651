//! OVH dedicated servers: the server's address, and reinstalling it with your own image (BYOI)
//! through both API generations: the legacy `bringYourOwnImage` call (POST, GET status, DELETE) and
//! the current `reinstall` call (`byoi_64` / `byolinux_64`) with its task and install status.
//! [`OvhDedicated`] is OVH's [`BareMetal`] capability, which `engine::reinstall` drives.

use async_trait::async_trait;
use reqwest::Method;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{segment, ApiError, CallError, Client, PROVIDER};
use crate::baremetal::{BareMetal, Byoi, ImageType, InstallHandle, InstallProgress, Server};
use crate::driver::ProviderError;

/// The legacy status: `doing`, `done` or `error`, with a message.
#[derive(Debug, Clone, Deserialize)]
pub struct LegacyStatus {
    /// doing, done or error.
    pub status: String,
    /// What OVH says.
    #[serde(default)]
    pub message: String,
}

/// A dedicated-server task.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    /// Its id.
    pub task_id: u64,
    /// reinstallServer, hardReboot ...
    pub function: String,
    /// init, todo, doing, done, cancelled, customerError, ovhError.
    pub status: String,
    /// What OVH says.
    pub comment: Option<String>,
}

/// Progress of an install.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstallStatus {
    /// Seconds since it started.
    pub elapsed_time: u64,
    /// Its steps.
    #[serde(default)]
    pub progress: Vec<InstallStep>,
}

/// One step of an install.
#[derive(Debug, Clone, Deserialize)]
pub struct InstallStep {
    /// What it does.
    pub comment: String,
    /// todo, doing, done, error.
    pub status: String,
    /// Its error, if any.
    #[serde(default)]
    pub error: Option<String>,
}

fn path(service: &str, rest: &str) -> String {
    format!("/dedicated/server/{}{rest}", segment(service))
}

fn decode<T: for<'de> Deserialize<'de>>(value: Value, what: &str) -> Result<T, CallError> {
    serde_json::from_value(value).map_err(|e| CallError::Decode(format!("{what}: {e}")))
}

impl Client {
    /// `GET /dedicated/server/{service}`.
    pub async fn dedicated_server(&self, service: &str) -> Result<Server, CallError> {
        decode(
            self.call(Method::GET, &path(service, ""), None).await?,
            "server",
        )
    }

    /// Legacy: `POST /dedicated/server/{service}/bringYourOwnImage`.
    pub async fn byoi_start_legacy(&self, service: &str, byoi: &Byoi) -> Result<(), CallError> {
        self.call(
            Method::POST,
            &path(service, "/bringYourOwnImage"),
            Some(&legacy_body(byoi)),
        )
        .await
        .map(|_| ())
    }

    /// Legacy: `GET .../bringYourOwnImage`.
    pub async fn byoi_status_legacy(&self, service: &str) -> Result<LegacyStatus, CallError> {
        decode(
            self.call(Method::GET, &path(service, "/bringYourOwnImage"), None)
                .await?,
            "BYOI status",
        )
    }

    /// Legacy: `DELETE .../bringYourOwnImage` (erases the status; puts the server in rescue mode).
    pub async fn byoi_clear_legacy(&self, service: &str) -> Result<(), CallError> {
        self.call(Method::DELETE, &path(service, "/bringYourOwnImage"), None)
            .await
            .map(|_| ())
    }

    /// Current: `POST /dedicated/server/{service}/reinstall` with `byoi_64` or `byolinux_64`.
    pub async fn byoi_start_current(
        &self,
        service: &str,
        operating_system: &str,
        byoi: &Byoi,
    ) -> Result<Task, CallError> {
        let body = current_body(operating_system, byoi);
        decode(
            self.call(Method::POST, &path(service, "/reinstall"), Some(&body))
                .await?,
            "task",
        )
    }

    /// Current: `GET .../task/{id}`.
    pub async fn dedicated_task(&self, service: &str, id: u64) -> Result<Task, CallError> {
        decode(
            self.call(Method::GET, &path(service, &format!("/task/{id}")), None)
                .await?,
            "task",
        )
    }

    /// Current: `GET .../install/status`; `None` when no install is under way (404).
    pub async fn install_status(&self, service: &str) -> Result<Option<InstallStatus>, CallError> {
        match self
            .call(Method::GET, &path(service, "/install/status"), None)
            .await
        {
            Ok(v) => decode(v, "install status").map(Some),
            Err(CallError::Api(ApiError { status: 404, .. })) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// The legacy call's body (OVH's BYOI guide).
fn legacy_body(byoi: &Byoi) -> Value {
    let mut configdrive = json!({"enable": byoi.config_drive});
    if byoi.config_drive {
        configdrive["sshKey"] = json!(byoi.ssh_key.trim());
        if let Some(h) = &byoi.hostname {
            configdrive["hostname"] = json!(h);
        }
        if let Some(u) = &byoi.user_data {
            configdrive["userData"] = json!(u);
        }
        if !byoi.user_metadata.is_empty() {
            configdrive["userMetadatas"] = byoi
                .user_metadata
                .iter()
                .map(|(k, v)| json!({"key": k, "value": v}))
                .collect();
        }
    }
    let mut body = json!({
        "URL": byoi.image_url,
        "type": byoi.image_type.as_str(),
        "configdrive": configdrive,
        "description": byoi.description.as_deref().unwrap_or(DEFAULT_DESCRIPTION),
        "httpHeader": byoi.http_headers.iter().map(|(k, v)| json!({"key": k, "value": v})).collect::<Vec<_>>(),
    });
    if let Some(c) = &byoi.checksum {
        body["checkSum"] = json!(c.hex);
        body["checkSumType"] = json!(c.kind);
    }
    if let Some(group) = byoi.disk_group_id {
        body["diskGroupId"] = json!(group);
    }
    body
}

/// The current call's body.
fn current_body(operating_system: &str, byoi: &Byoi) -> Value {
    let mut customizations = json!({
        "imageURL": byoi.image_url,
        "imageType": byoi.image_type.as_str(),
    });
    if let Some(c) = &byoi.checksum {
        customizations["imageCheckSum"] = json!(c.hex);
        customizations["imageCheckSumType"] = json!(c.kind);
    }
    if !byoi.http_headers.is_empty() {
        customizations["httpHeaders"] = byoi
            .http_headers
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect::<serde_json::Map<_, _>>()
            .into();
    }
    if byoi.config_drive {
        customizations["sshKey"] = json!(byoi.ssh_key.trim());
        if let Some(h) = &byoi.hostname {
            customizations["hostname"] = json!(h);
        }
        if let Some(u) = &byoi.user_data {
            customizations["configDriveUserData"] = json!(u);
        }
        if !byoi.user_metadata.is_empty() {
            customizations["configDriveMetadata"] = byoi
                .user_metadata
                .iter()
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect::<serde_json::Map<_, _>>()
                .into();
        }
    }
    let mut body = json!({"operatingSystem": operating_system, "customizations": customizations});
    if let Some(group) = byoi.disk_group_id {
        body["storage"] = json!([{"diskGroupId": group}]);
    }
    body
}

/// The description a legacy deployment gets unless one is given.
const DEFAULT_DESCRIPTION: &str = "nodeup";

/// Which API generation reinstalls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Generation {
    /// `POST /dedicated/server/{name}/bringYourOwnImage` (OVH's BYOI guide).
    Legacy,
    /// `POST /dedicated/server/{name}/reinstall` with this operating system (`byoi_64`,
    /// `byolinux_64`).
    Current(String),
}

/// OVH's dedicated servers as a [`BareMetal`] provider, through one API generation.
#[derive(Debug)]
pub struct OvhDedicated {
    client: Client,
    generation: Generation,
}

impl OvhDedicated {
    /// Reinstalls through `generation` with this client.
    pub fn new(client: Client, generation: Generation) -> Self {
        OvhDedicated { client, generation }
    }
}

fn call(context: &str) -> impl FnOnce(CallError) -> ProviderError + '_ {
    move |e| e.into_provider(context.to_string())
}

#[async_trait]
impl BareMetal for OvhDedicated {
    fn name(&self) -> &str {
        PROVIDER
    }

    fn check(&self, byoi: &Byoi) -> Result<(), String> {
        match (&self.generation, byoi.image_type) {
            (Generation::Current(_), ImageType::Ova) => Err(
                "OVH's current reinstall takes qcow2 or raw images: an ova needs --api legacy"
                    .into(),
            ),
            _ => Ok(()),
        }
    }

    async fn server(&self, service: &str) -> Result<Server, ProviderError> {
        self.client
            .dedicated_server(service)
            .await
            .map_err(call("GET /dedicated/server"))
    }

    async fn start(&self, service: &str, byoi: &Byoi) -> Result<InstallHandle, ProviderError> {
        match &self.generation {
            Generation::Legacy => {
                self.client
                    .byoi_start_legacy(service, byoi)
                    .await
                    .map_err(call("POST bringYourOwnImage"))?;
                Ok(InstallHandle::Status)
            }
            Generation::Current(os) => Ok(InstallHandle::Task(
                self.client
                    .byoi_start_current(service, os, byoi)
                    .await
                    .map_err(call("POST reinstall"))?
                    .task_id,
            )),
        }
    }

    async fn progress(
        &self,
        service: &str,
        handle: &InstallHandle,
    ) -> Result<InstallProgress, ProviderError> {
        match handle {
            InstallHandle::Status => self.legacy_progress(service).await,
            InstallHandle::Task(id) => self.task_progress(service, *id).await,
        }
    }

    /// The legacy call's `DELETE .../bringYourOwnImage`: erases the deployment status and puts
    /// the server in rescue mode. The current API has no cancel.
    async fn cancel(&self, service: &str) -> Result<(), ProviderError> {
        self.client
            .byoi_clear_legacy(service)
            .await
            .map_err(call("DELETE bringYourOwnImage"))
    }
}

impl OvhDedicated {
    async fn legacy_progress(&self, service: &str) -> Result<InstallProgress, ProviderError> {
        let s = self
            .client
            .byoi_status_legacy(service)
            .await
            .map_err(call("GET bringYourOwnImage"))?;
        Ok(match s.status.as_str() {
            "done" => InstallProgress::Done {
                status: s.status,
                message: s.message,
            },
            "error" => InstallProgress::Failed {
                fix: fix_for(&s.message),
                message: s.message,
            },
            _ => InstallProgress::Running {
                status: s.status,
                message: s.message,
            },
        })
    }

    async fn task_progress(
        &self,
        service: &str,
        id: u64,
    ) -> Result<InstallProgress, ProviderError> {
        let t = self
            .client
            .dedicated_task(service, id)
            .await
            .map_err(call("GET task"))?;
        let mut message = t.comment.clone().unwrap_or_default();
        if let Ok(Some(progress)) = self.client.install_status(service).await {
            if let Some(step) = progress
                .progress
                .iter()
                .find(|p| p.status == "doing" || p.error.is_some())
            {
                message = step.error.clone().unwrap_or(step.comment.clone());
            }
        }
        Ok(match t.status.as_str() {
            "done" => InstallProgress::Done {
                status: t.status,
                message,
            },
            "customerError" | "ovhError" | "cancelled" => {
                let message = t.comment.unwrap_or(message);
                InstallProgress::Failed {
                    fix: fix_for(&message),
                    message,
                }
            }
            _ => InstallProgress::Running {
                status: t.status,
                message,
            },
        })
    }
}

/// What to tell the user to fix, for an error message OVH gives about a BYOI install.
pub fn fix_for(message: &str) -> &'static str {
    let m = message.to_ascii_lowercase();
    if m.contains("checksum") || m.contains("bad sha") || m.contains("bad md5") {
        "the checksum does not match the image OVH downloaded: compute it over the file at the URL \
         (e.g. `sha256sum IMAGE`) and pass it as --checksum TYPE:HEX"
    } else if m.contains("format") {
        "the image is not in the format given: check it with `qemu-img info IMAGE` and pass the \
         right --image-type (qcow2 or raw)"
    } else if m.contains("too big") {
        "the image is too large for OVH to download into memory: shrink it (a raw image compresses \
         poorly: convert it to qcow2 with `qemu-img convert -O qcow2`)"
    } else if m.contains("download") {
        "OVH could not download the image: make sure the URL is reachable from the internet, \
         and pass what it needs (an Authorization header) with --http-header"
    } else if m.contains("configdrive") || m.contains("gpt") || m.contains("write") {
        "the image could not be written to the server's disk: check that it is a bootable disk \
         image no larger than the disk"
    } else {
        "see OVH's message; the server may need a new reinstall"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_carry_every_field_of_the_guide() {
        let byoi = Byoi {
            image_url: "https://x/y.ova".into(),
            image_type: ImageType::Ova,
            checksum: None,
            http_headers: vec![],
            description: Some("golden".into()),
            disk_group_id: Some(2),
            config_drive: true,
            hostname: Some("h".into()),
            ssh_key: "ssh-ed25519 AAAA".into(),
            user_data: None,
            user_metadata: vec![("role".into(), "web".into())],
        };
        let legacy = legacy_body(&byoi);
        assert_eq!(legacy["type"], "ova");
        assert_eq!(legacy["description"], "golden");
        assert_eq!(legacy["diskGroupId"], 2);
        assert_eq!(
            legacy["configdrive"]["userMetadatas"],
            json!([{"key": "role", "value": "web"}])
        );
        let current = current_body("byolinux_64", &byoi);
        assert_eq!(current["storage"], json!([{"diskGroupId": 2}]));
        assert_eq!(
            current["customizations"]["configDriveMetadata"],
            json!({"role": "web"})
        );
        let off = Byoi {
            config_drive: false,
            ..byoi
        };
        assert_eq!(legacy_body(&off)["configdrive"], json!({"enable": false}));
        assert!(current_body("byolinux_64", &off)["customizations"]
            .get("sshKey")
            .is_none());
    }

    #[test]
    fn ovh_messages_map_to_fixes() {
        assert!(
            fix_for("Bad sha256 for downloaded file, got : a while expecting b.")
                .contains("--checksum")
        );
        assert!(
            fix_for("image provided format is raw which does not match expected qcow2 format")
                .contains("--image-type")
        );
        assert!(
            fix_for("Could not download, qcow2 image is too big to download in memory.")
                .contains("too large")
        );
        assert!(fix_for("Could not download image located : http://x").contains("reachable"));
    }
}
