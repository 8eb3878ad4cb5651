//! OVH dedicated servers: the server's address, and reinstalling it with your own image (BYOI)
//! through both API generations: the legacy `bringYourOwnImage` call (POST, GET status, DELETE) and
//! the current `reinstall` call (`byoi_64` / `byolinux_64`) with its task and install status.

use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{segment, ApiError, CallError, Client};

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

/// Checks a dedicated server's service name (host-like: `ns1234567.ip-1-2-3.eu`), before it goes
/// into a URL or names a directory.
pub fn validate_service_name(name: &str) -> Result<(), String> {
    if is_hostname(name) {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a dedicated server's service name: it looks like a host name \
             (e.g. ns1234567.ip-1-2-3.eu, letters, digits, '-' and '.'); GET /dedicated/server lists yours"
        ))
    }
}

/// Whether `name` is a valid DNS host name: dot-separated labels of 1 to 63 letters, digits and
/// '-', not starting or ending with '-', 253 characters at most.
fn is_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// Checks that OVH can fetch `url`: http or https with a host, and (unless `allow_private`) not
/// a loopback, private, link-local or otherwise non-public address, since OVH downloads the image
/// from the internet.
pub fn check_image_url(url: &str, allow_private: bool) -> Result<(), String> {
    let no_host = || format!("--image-url {url:?} has no host: give the server OVH downloads from");
    let parsed = reqwest::Url::parse(url).map_err(|e| match e {
        url::ParseError::EmptyHost => no_host(),
        e => format!(
            "--image-url {url:?} is not a URL ({e}): give an http:// or https:// URL OVH can \
             download the image from"
        ),
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "--image-url {url:?}: give an http:// or https:// URL OVH can download the image from"
        ));
    }
    let host = match parsed.host() {
        Some(host) if !host.to_string().is_empty() => host,
        _ => return Err(no_host()),
    };
    if allow_private {
        return Ok(());
    }
    let private = match host {
        url::Host::Domain(d) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            d == "localhost" || d.ends_with(".localhost")
        }
        url::Host::Ipv4(ip) => !is_public_v4(ip),
        url::Host::Ipv6(ip) => match ip.to_ipv4_mapped() {
            Some(v4) => !is_public_v4(v4),
            None => !is_public_v6(ip),
        },
    };
    if private {
        return Err(format!(
            "--image-url {url:?} names this machine or a private network, which OVH cannot reach: \
             serve the image at a public address (or pass --allow-private-url if the server can \
             reach it over a private network such as the vRack)"
        ));
    }
    Ok(())
}

fn is_public_v4(ip: std::net::Ipv4Addr) -> bool {
    let o = ip.octets();
    let shared = o[0] == 100 && (64..128).contains(&o[1]); // 100.64.0.0/10, carrier-grade NAT
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || shared
        || o[0] == 0)
}

fn is_public_v6(ip: std::net::Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    let unique_local = first & 0xfe00 == 0xfc00;
    let link_local = first & 0xffc0 == 0xfe80;
    !(ip.is_loopback() || ip.is_unspecified() || ip.is_multicast() || unique_local || link_local)
}

impl Byoi {
    /// Checks what OVH would reject, before any call. `allow_private_url` lets the image URL name
    /// a private or loopback address (a vRack mirror, a test API).
    pub fn validate(&self, allow_private_url: bool) -> Result<(), String> {
        check_image_url(&self.image_url, allow_private_url)?;
        russh::keys::PublicKey::from_openssh(self.ssh_key.trim())
            .map_err(|e| format!("the SSH public key does not parse: {e}"))?;
        if let Some(h) = &self.hostname {
            if !is_hostname(h) {
                return Err(format!("--hostname {h:?} is not a valid hostname"));
            }
        }
        for (k, v) in &self.http_headers {
            if k.is_empty() || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                return Err(format!(
                    "--http-header {k:?}: a header name is letters, digits and -"
                ));
            }
            if v.bytes().any(|b| b.is_ascii_control()) {
                return Err(format!(
                    "--http-header {k}=...: the value holds a newline or another control character"
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
    format!("/dedicated/server/{}{rest}", segment(service))
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
    fn service_names_are_host_like() {
        assert!(validate_service_name("ns1234567.ip-1-2-3.eu").is_ok());
        assert!(validate_service_name("ns1").is_ok());
        for bad in [
            "",
            "../../escape",
            "a/b",
            "ns1..eu",
            "-ns1",
            "ns 1",
            "ns1?x",
        ] {
            assert!(validate_service_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn image_urls_must_be_public() {
        for good in [
            "https://images.example.org/debian.qcow2",
            "http://51.68.1.2:8080/x.raw",
            "http://[2001:41d0::1]/x",
        ] {
            assert!(check_image_url(good, false).is_ok(), "{good}");
        }
        for bad in [
            "http://",
            "ftp://example.org/x",
            "http://127.0.0.1/x",
            "http://localhost/x",
            "http://a.localhost./x",
            "http://10.0.0.5/x",
            "http://192.168.1.1/x",
            "http://172.16.0.1/x",
            "http://169.254.169.254/x",
            "http://0.0.0.0/x",
            "http://100.64.0.1/x",
            "http://[::1]/x",
            "http://[fe80::1]/x",
            "http://[fd00::1]/x",
            "http://[::ffff:127.0.0.1]/x",
        ] {
            assert!(check_image_url(bad, false).is_err(), "{bad}");
        }
        assert!(check_image_url("http://127.0.0.1:9/x", true).is_ok());
        assert!(
            check_image_url("http://", true).is_err(),
            "a host is always needed"
        );
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
