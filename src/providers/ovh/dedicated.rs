//! OVH dedicated servers: the server's address, and reinstalling it with your own image (BYOI)
//! through both API generations: the legacy `bringYourOwnImage` call (POST, GET status, DELETE) and
//! the current `reinstall` call (`byoi_64` / `byolinux_64`) with its task and install status.

use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{ApiError, CallError, Client};

/// A dedicated server, as `GET /dedicated/server/{name}` describes it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Server {
    /// Its service name.
    pub name: String,
    /// The address to log in to.
    pub ip: String,
    /// Its reverse DNS name.
    pub reverse: Option<String>,
    /// ok, hacked, ...
    pub state: Option<String>,
    /// poweron or poweroff.
    pub power_state: Option<String>,
    /// Its datacenter.
    pub datacenter: Option<String>,
    /// The installed OS.
    pub os: Option<String>,
}

/// The image's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageType {
    /// A qcow2 image.
    Qcow2,
    /// A raw disk image.
    Raw,
}

impl std::str::FromStr for ImageType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "qcow2" => Ok(ImageType::Qcow2),
            "raw" => Ok(ImageType::Raw),
            other => Err(format!("unknown image type {other:?}: use qcow2 or raw")),
        }
    }
}

impl ImageType {
    /// The name OVH uses.
    pub fn as_str(self) -> &'static str {
        match self {
            ImageType::Qcow2 => "qcow2",
            ImageType::Raw => "raw",
        }
    }
}

/// A checksum of the image: its type and hex digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checksum {
    /// md5, sha1, sha256 or sha512.
    pub kind: String,
    /// Lower-case hex.
    pub hex: String,
}

impl std::str::FromStr for Checksum {
    type Err = String;
    /// Parses `TYPE:HEX`, checking the hex length against the type.
    fn from_str(s: &str) -> Result<Self, String> {
        let (kind, hex) = s
            .split_once(':')
            .ok_or_else(|| format!("{s:?}: write TYPE:HEX, e.g. sha256:9f86d08..."))?;
        let kind = kind.to_ascii_lowercase();
        let len = match kind.as_str() {
            "md5" => 32,
            "sha1" => 40,
            "sha256" => 64,
            "sha512" => 128,
            other => {
                return Err(format!(
                    "checksum type {other:?} is not one OVH checks: use md5, sha1, sha256 or sha512"
                ))
            }
        };
        let hex = hex.to_ascii_lowercase();
        if hex.len() != len || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(format!(
                "a {kind} checksum is {len} hex digits; {:?} is not",
                hex
            ));
        }
        Ok(Checksum { kind, hex })
    }
}

/// What a BYOI reinstall installs.
#[derive(Debug, Clone)]
pub struct Byoi {
    /// Where OVH downloads the image from.
    pub image_url: String,
    /// Its format.
    pub image_type: ImageType,
    /// Its checksum, checked by OVH after the download.
    pub checksum: Option<Checksum>,
    /// HTTP headers for the download (an Authorization header, say).
    pub http_headers: Vec<(String, String)>,
    /// The hostname the config drive sets.
    pub hostname: Option<String>,
    /// The SSH public key the config drive installs for root.
    pub ssh_key: String,
    /// A user-data script the config drive runs at first boot.
    pub user_data: Option<String>,
}

impl Byoi {
    /// Checks what OVH would reject, before any call.
    pub fn validate(&self) -> Result<(), String> {
        let url = self.image_url.as_str();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!(
                "--image-url {url:?}: give an http:// or https:// URL OVH can download the image from"
            ));
        }
        russh::keys::PublicKey::from_openssh(self.ssh_key.trim())
            .map_err(|e| format!("the SSH public key does not parse: {e}"))?;
        if let Some(h) = &self.hostname {
            let valid = !h.is_empty()
                && h.len() <= 253
                && h.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                        && !l.starts_with('-')
                        && !l.ends_with('-')
                });
            if !valid {
                return Err(format!("--hostname {h:?} is not a valid hostname"));
            }
        }
        for (k, _) in &self.http_headers {
            if k.is_empty() || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                return Err(format!(
                    "--http-header {k:?}: a header name is letters, digits and -"
                ));
            }
        }
        Ok(())
    }
}

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
    format!("/dedicated/server/{service}{rest}")
}

fn decode<T: for<'de> Deserialize<'de>>(value: Value, what: &str) -> Result<T, CallError> {
    serde_json::from_value(value).map_err(|e| CallError::Decode {
        what: what.into(),
        detail: e.to_string(),
    })
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
        let mut configdrive = json!({"enable": true, "sshKey": byoi.ssh_key.trim()});
        if let Some(h) = &byoi.hostname {
            configdrive["hostname"] = json!(h);
        }
        if let Some(u) = &byoi.user_data {
            configdrive["userData"] = json!(u);
        }
        let mut body = json!({
            "URL": byoi.image_url,
            "type": byoi.image_type.as_str(),
            "configdrive": configdrive,
            "description": "nodeup",
            "httpHeader": byoi.http_headers.iter().map(|(k, v)| json!({"key": k, "value": v})).collect::<Vec<_>>(),
        });
        if let Some(c) = &byoi.checksum {
            body["checkSum"] = json!(c.hex);
            body["checkSumType"] = json!(c.kind);
        }
        self.call(
            Method::POST,
            &path(service, "/bringYourOwnImage"),
            Some(&body),
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
        let mut customizations = json!({
            "imageURL": byoi.image_url,
            "imageType": byoi.image_type.as_str(),
            "sshKey": byoi.ssh_key.trim(),
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
        if let Some(h) = &byoi.hostname {
            customizations["hostname"] = json!(h);
        }
        if let Some(u) = &byoi.user_data {
            customizations["configDriveUserData"] = json!(u);
        }
        let body = json!({"operatingSystem": operating_system, "customizations": customizations});
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
    fn checksums_are_checked_before_any_call() {
        let ok: Checksum = format!("sha256:{}", "ab".repeat(32)).parse().unwrap();
        assert_eq!(ok.kind, "sha256");
        assert!("sha256:abc"
            .parse::<Checksum>()
            .unwrap_err()
            .contains("64 hex digits"));
        assert!(format!("md5:{}", "z".repeat(32))
            .parse::<Checksum>()
            .is_err());
        assert!("crc32:1234"
            .parse::<Checksum>()
            .unwrap_err()
            .contains("md5, sha1, sha256 or sha512"));
        assert!("nocolon".parse::<Checksum>().is_err());
        assert!("vhd".parse::<ImageType>().is_err());
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
