//! Bare metal: reinstalling a dedicated server with your own image, as a capability a provider
//! offers ([`BareMetal`]). This module knows no provider: it holds what such a reinstall is (the
//! image, its checksum, what the config drive sets), the checks made before any call, and the
//! trait the engine drives (`engine::reinstall`); OVH implements it in `providers::ovh::dedicated`.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::driver::ProviderError;

/// The image's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageType {
    /// A qcow2 image.
    Qcow2,
    /// A raw disk image.
    Raw,
    /// An OVA archive (OVH's legacy BYOI call only).
    Ova,
}

impl std::str::FromStr for ImageType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "qcow2" => Ok(ImageType::Qcow2),
            "raw" => Ok(ImageType::Raw),
            "ova" => Ok(ImageType::Ova),
            other => Err(format!(
                "unknown image type {other:?}: use qcow2, raw or ova"
            )),
        }
    }
}

impl ImageType {
    /// Its name, as providers write it.
    pub fn as_str(self) -> &'static str {
        match self {
            ImageType::Qcow2 => "qcow2",
            ImageType::Raw => "raw",
            ImageType::Ova => "ova",
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

/// Checks a dedicated server's service name (host-like: `ns1234567.ip-1-2-3.eu`), before it goes
/// into a URL or names a directory.
///
/// # Errors
/// The name is not host-like; the message says what one looks like.
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

/// What a reinstall with your own image installs, and what the config drive sets.
#[derive(Debug, Clone)]
pub struct Byoi {
    /// Where the server downloads the image from.
    pub image_url: String,
    /// Its format.
    pub image_type: ImageType,
    /// Its checksum, checked after the download.
    pub checksum: Option<Checksum>,
    /// HTTP headers for the download (an Authorization header, say): secrets.
    pub http_headers: Vec<(String, String)>,
    /// A description of the deployment (OVH's legacy call keeps it).
    pub description: Option<String>,
    /// The disk group to install on, on servers with several.
    pub disk_group_id: Option<u64>,
    /// Whether a config drive is written (hostname, SSH key, user data, metadata). Without one,
    /// the image must let you in by itself.
    pub config_drive: bool,
    /// The hostname the config drive sets.
    pub hostname: Option<String>,
    /// The SSH public key the config drive installs for root.
    pub ssh_key: String,
    /// A user-data script the config drive runs at first boot.
    pub user_data: Option<String>,
    /// Key/value metadata the config drive carries (`meta_data.json`).
    pub user_metadata: Vec<(String, String)>,
}

impl Byoi {
    /// Checks what a provider would reject, before any call. `allow_private_url` lets the image
    /// URL name a private or loopback address (a vRack mirror, a test API).
    ///
    /// # Errors
    /// What is wrong, naming the option and the fix.
    pub fn validate(&self, allow_private_url: bool) -> Result<(), String> {
        check_image_url(&self.image_url, allow_private_url)?;
        if self.config_drive {
            PublicKey::from_openssh(self.ssh_key.trim())
                .map_err(|e| format!("the SSH public key does not parse: {e}"))?;
        } else if self.hostname.is_some()
            || self.user_data.is_some()
            || !self.user_metadata.is_empty()
        {
            return Err(
                "--hostname, --user-data and --metadata go on the config drive: drop \
                        --no-config-drive, or them"
                    .into(),
            );
        }
        if let Some(h) = &self.hostname {
            if !is_hostname(h) {
                return Err(format!("--hostname {h:?} is not a valid hostname"));
            }
        }
        for (k, v) in self.http_headers.iter().chain(&self.user_metadata) {
            if k.is_empty()
                || !k
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(format!(
                    "{k:?}: a header or metadata name is letters, digits, - and _"
                ));
            }
            if v.bytes().any(|b| b.is_ascii_control()) {
                return Err(format!(
                    "{k}=...: the value holds a newline or another control character"
                ));
            }
        }
        Ok(())
    }
}

use russh::keys::PublicKey;

/// A dedicated server, as its provider describes it.
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

/// An install the provider accepted: what to follow it by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstallHandle {
    /// Followed by the server's own status.
    Status,
    /// Followed by a task of the provider's.
    Task(u64),
}

/// How an install goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstallProgress {
    /// Still going: the provider's status and message.
    Running {
        /// The provider's status word.
        status: String,
        /// What it says.
        message: String,
    },
    /// Installed; the server boots the new system.
    Done {
        /// The provider's status word.
        status: String,
        /// What it says.
        message: String,
    },
    /// The install failed.
    Failed {
        /// What the provider says.
        message: String,
        /// What to do about it.
        fix: &'static str,
    },
}

/// A provider that reinstalls dedicated servers with your own image: what `engine::reinstall`
/// drives. Every call names the server by its service name, checked with
/// [`validate_service_name`] first.
#[async_trait]
pub trait BareMetal: Send + Sync {
    /// The provider's name.
    fn name(&self) -> &str;

    /// Checks what this provider (or its API generation) refuses of `byoi`, beyond
    /// [`Byoi::validate`]; before any call.
    ///
    /// # Errors
    /// What it refuses, with the fix.
    fn check(&self, byoi: &Byoi) -> Result<(), String> {
        let _ = byoi;
        Ok(())
    }

    /// The server; `ProviderError::NotFound` when the credentials have no such server.
    async fn server(&self, service: &str) -> Result<Server, ProviderError>;

    /// Starts the reinstall.
    async fn start(&self, service: &str, byoi: &Byoi) -> Result<InstallHandle, ProviderError>;

    /// How the install goes.
    async fn progress(
        &self,
        service: &str,
        handle: &InstallHandle,
    ) -> Result<InstallProgress, ProviderError>;

    /// Cancels a reinstall that has not finished (where the provider can).
    async fn cancel(&self, service: &str) -> Result<(), ProviderError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_and_types_are_checked_before_any_call() {
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
        assert_eq!("ova".parse::<ImageType>(), Ok(ImageType::Ova));
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
}
