//! The request bodies nodeup sends to OpenStack's services, typed: Keystone's token request,
//! Nova's server, key pair, action and volume attachment, Neutron's floating IP, Cinder's volume
//! and snapshot. Fields that are not given are left out, as the services expect.

use std::collections::BTreeMap;

use serde::Serialize;

use super::config::{Auth, Domain, Named};

/// A user, project or domain reference: by id, or by name (in a domain).
#[derive(Debug, Serialize)]
pub struct Reference<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    domain: Option<Box<Reference<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    password: Option<&'a str>,
}

impl<'a> Reference<'a> {
    fn domain(domain: &'a Domain) -> Self {
        let (id, name) = match domain {
            Domain::Id(id) => (Some(id.as_str()), None),
            Domain::Name(name) => (None, Some(name.as_str())),
        };
        Reference {
            id,
            name,
            domain: None,
            password: None,
        }
    }

    fn named(named: &'a Named) -> Self {
        match named {
            Named::Id(id) => Reference {
                id: Some(id),
                name: None,
                domain: None,
                password: None,
            },
            Named::Name { name, domain } => Reference {
                id: None,
                name: Some(name),
                domain: Some(Box::new(Reference::domain(domain))),
                password: None,
            },
        }
    }
}

/// `POST /v3/auth/tokens`.
#[derive(Debug, Serialize)]
pub struct TokenRequest<'a> {
    auth: TokenAuth<'a>,
}

#[derive(Debug, Serialize)]
struct TokenAuth<'a> {
    identity: Identity<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<Scope<'a>>,
}

#[derive(Debug, Serialize)]
struct Identity<'a> {
    methods: [&'static str; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    password: Option<PasswordMethod<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    application_credential: Option<ApplicationCredential<'a>>,
}

#[derive(Debug, Serialize)]
struct PasswordMethod<'a> {
    user: Reference<'a>,
}

#[derive(Debug, Serialize)]
struct ApplicationCredential<'a> {
    id: &'a str,
    secret: &'a str,
}

#[derive(Debug, Serialize)]
struct Scope<'a> {
    project: Reference<'a>,
}

impl<'a> TokenRequest<'a> {
    /// The request for these credentials: a password scoped to its project, or an application
    /// credential (whose project is its own).
    pub fn new(auth: &'a Auth) -> Self {
        let (identity, scope) = match auth {
            Auth::Password {
                user,
                password,
                project,
            } => {
                let mut user = Reference::named(user);
                user.password = Some(password);
                let identity = Identity {
                    methods: ["password"],
                    password: Some(PasswordMethod { user }),
                    application_credential: None,
                };
                let project = Reference::named(project);
                (identity, Some(Scope { project }))
            }
            Auth::ApplicationCredential { id, secret } => {
                let identity = Identity {
                    methods: ["application_credential"],
                    password: None,
                    application_credential: Some(ApplicationCredential { id, secret }),
                };
                (identity, None)
            }
        };
        TokenRequest {
            auth: TokenAuth { identity, scope },
        }
    }
}

/// `POST /servers`.
#[derive(Debug, Serialize)]
pub struct ServerRequest<'a> {
    /// The server.
    pub server: NewServer<'a>,
}

/// A server to create.
#[derive(Debug, Default, Serialize)]
pub struct NewServer<'a> {
    /// Its name.
    pub name: &'a str,
    /// The image's id.
    #[serde(rename = "imageRef")]
    pub image_ref: &'a str,
    /// The flavor's id.
    #[serde(rename = "flavorRef")]
    pub flavor_ref: &'a str,
    /// Its metadata.
    pub metadata: BTreeMap<String, String>,
    /// The networks, by id (Nova picks when none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<NetworkRef<'a>>,
    /// Security groups, by name.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub security_groups: Vec<NameRef<'a>>,
    /// The key pair.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_name: Option<&'a str>,
    /// User data, base64.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_data: Option<String>,
    /// The availability zone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub availability_zone: Option<&'a str>,
    /// A config drive.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub config_drive: bool,
}

/// A network of a new server.
#[derive(Debug, Serialize)]
pub struct NetworkRef<'a> {
    /// The network's id.
    pub uuid: &'a str,
}

/// Something named (a security group).
#[derive(Debug, Serialize)]
pub struct NameRef<'a> {
    /// Its name.
    pub name: &'a str,
}

/// `POST /os-keypairs`: a key pair to import (`public_key`) or to generate.
#[derive(Debug, Serialize)]
pub struct KeypairRequest<'a> {
    /// The key pair.
    pub keypair: NewKeypair<'a>,
}

/// A key pair to make.
#[derive(Debug, Serialize)]
pub struct NewKeypair<'a> {
    /// Its name.
    pub name: &'a str,
    /// `ssh` (microversion 2.2).
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The public key to import; Nova generates one when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_key: Option<&'a str>,
}

/// `POST /servers/{id}/action`.
#[derive(Debug, Serialize)]
pub enum Action {
    /// A reboot.
    #[serde(rename = "reboot")]
    Reboot {
        /// `SOFT` or `HARD`.
        #[serde(rename = "type")]
        kind: &'static str,
    },
    /// Power off.
    #[serde(rename = "os-stop")]
    Stop(()),
    /// Power on.
    #[serde(rename = "os-start")]
    Start(()),
}

/// `POST /servers/{id}/os-volume_attachments`.
#[derive(Debug, Serialize)]
pub struct AttachmentRequest<'a> {
    /// The attachment.
    #[serde(rename = "volumeAttachment")]
    pub attachment: Attachment<'a>,
}

/// A volume to attach.
#[derive(Debug, Serialize)]
pub struct Attachment<'a> {
    /// The volume's id.
    #[serde(rename = "volumeId")]
    pub volume_id: &'a str,
}

/// `POST /floatingips`.
#[derive(Debug, Serialize)]
pub struct FloatingIpRequest<'a> {
    /// The floating IP.
    pub floatingip: NewFloatingIp<'a>,
}

/// A floating IP to allocate on a port.
#[derive(Debug, Serialize)]
pub struct NewFloatingIp<'a> {
    /// The external network it comes from.
    pub floating_network_id: &'a str,
    /// The port it is put on.
    pub port_id: &'a str,
    /// What it is for.
    pub description: String,
}

/// `POST /volumes`.
#[derive(Debug, Serialize)]
pub struct VolumeRequest<'a> {
    /// The volume.
    pub volume: NewVolume<'a>,
}

/// A volume to create.
#[derive(Debug, Serialize)]
pub struct NewVolume<'a> {
    /// Its size in GB.
    pub size: u64,
    /// Its name.
    pub name: &'a str,
    /// The availability zone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub availability_zone: Option<&'a str>,
    /// The volume type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume_type: Option<&'a str>,
    /// What it is for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<&'a str>,
    /// A snapshot to make it from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot_id: Option<&'a str>,
}

/// `POST /snapshots`.
#[derive(Debug, Serialize)]
pub struct SnapshotRequest<'a> {
    /// The snapshot.
    pub snapshot: NewSnapshot<'a>,
}

/// A snapshot to take.
#[derive(Debug, Serialize)]
pub struct NewSnapshot<'a> {
    /// The volume's id.
    pub volume_id: &'a str,
    /// Its name.
    pub name: Option<&'a str>,
    /// What it is for.
    pub description: Option<&'a str>,
    /// Of a volume in use too.
    pub force: bool,
}

/// A body as the JSON the client sends.
pub fn json<T: Serialize>(body: &T) -> serde_json::Value {
    serde_json::to_value(body).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_requests_are_keystone_s() {
        let auth = Auth::Password {
            user: Named::Name {
                name: "u".into(),
                domain: Domain::Name("Default".into()),
            },
            password: "p".into(),
            project: Named::Id("pid".into()),
        };
        let body = json(&TokenRequest::new(&auth));
        assert_eq!(
            body,
            serde_json::json!({"auth": {
                "identity": {"methods": ["password"],
                             "password": {"user": {"name": "u", "domain": {"name": "Default"},
                                                   "password": "p"}}},
                "scope": {"project": {"id": "pid"}},
            }})
        );
        let app = Auth::ApplicationCredential {
            id: "a".into(),
            secret: "s".into(),
        };
        let body = json(&TokenRequest::new(&app));
        assert_eq!(
            body["auth"]["identity"]["application_credential"]["id"],
            "a"
        );
        assert!(body["auth"].get("scope").is_none());
    }

    #[test]
    fn actions_are_nova_s() {
        assert_eq!(
            json(&Action::Reboot { kind: "HARD" }),
            serde_json::json!({"reboot": {"type": "HARD"}})
        );
        assert_eq!(
            json(&Action::Stop(())),
            serde_json::json!({"os-stop": null})
        );
    }
}
