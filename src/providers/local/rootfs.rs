//! A new local node's own files: what its overlay's upper layer starts with. Users, sudo, sshd's
//! configuration and host keys, authorized keys, hostname. Written before the first boot; the host's
//! own files are never touched.

use std::ffi::CString;
use std::fs;
use std::io;
use std::net::Ipv4Addr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::chown;
use std::path::Path;

use russh::keys::ssh_key::LineEnding;
use russh::keys::{Algorithm, EcdsaCurve, PrivateKey};

use super::state::set_mode;

/// The login user every local image has besides root.
pub const LOGIN_USER: &str = "debian";

/// Where the cloud-init stand-in of the `cloud-debian` image reads its status (`running`, `done`,
/// `error`; `done` when missing): write it inside the node to hold cloud-init at `running`.
pub const CLOUD_INIT_STATUS: &str = "/run/nodeup-cloud-init-status";

/// The `cloud-debian` image's stand-in for cloud-init: `cloud-init status [--wait]` as the real
/// one answers it (`status: running|done|error`; exit 1 on error), from [`CLOUD_INIT_STATUS`].
const CLOUD_INIT_STAND_IN: &str = r#"#!/bin/sh
# nodeup's local cloud-debian image: a stand-in for cloud-init's `status` command.
status_file=@STATUS@
if [ "$1" != status ]; then
	echo "cloud-init (nodeup stand-in): only 'status [--wait]' is known" >&2
	exit 3
fi
while :; do
	status=$(cat "$status_file" 2>/dev/null || echo done)
	if [ "$status" = running ] && [ "$2" = --wait ]; then
		printf .
		sleep 0.2
		continue
	fi
	[ "$2" = --wait ] && echo
	echo "status: $status"
	[ "$status" = error ] && exit 1
	exit 0
done
"#;

/// The node's own `reboot`, `shutdown`, `halt`, `poweroff` and `systemctl`: they ask the node's
/// PID 1 to boot it again (SIGUSR1) or to end it (SIGUSR2), as those commands ask a machine's
/// init, and refuse a user who is not root as theirs do.
const POWER_COMMANDS: &str = r#"#!/bin/sh
# nodeup's local node: reboot, shutdown, halt, poweroff and systemctl (power verbs only), which
# ask the node's PID 1 to boot it again or to end it.
name=${0##*/}
verb=
case $name in
reboot) verb=reboot ;;
halt | poweroff) verb=halt ;;
shutdown)
	verb=halt
	for arg in "$@"; do
		case $arg in -r | --reboot) verb=reboot ;; esac
	done
	;;
systemctl)
	case ${1:-} in
	reboot) verb=reboot ;;
	halt | poweroff) verb=halt ;;
	*)
		echo "System has not been booted with systemd as init system (PID 1). Can't operate." >&2
		echo "Failed to connect to bus: Host is down" >&2
		exit 1
		;;
	esac
	;;
esac
if [ "$(id -u)" != 0 ]; then
	echo "$name: must be superuser (Failed to $verb system: Access denied)" >&2
	exit 1
fi
if [ "$verb" = reboot ]; then
	kill -USR1 1
else
	kill -USR2 1
fi
"#;

/// Where the node's power commands go ([`POWER_COMMANDS`]), under its root.
const POWER_COMMAND_PATHS: [&str; 5] = [
    "usr/sbin/reboot",
    "usr/sbin/shutdown",
    "usr/sbin/halt",
    "usr/sbin/poweroff",
    "usr/bin/systemctl",
];

/// The images the local provider offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Image {
    /// Root may log in with a key; the login user is root.
    Debian,
    /// Behaves like cloud images: root's login prints cloud-init's refusal; the login user is
    /// `debian`, with passwordless sudo.
    CloudDebian,
}

impl Image {
    /// Every image, in listing order.
    pub const ALL: [Image; 2] = [Image::Debian, Image::CloudDebian];

    /// The image's id.
    pub fn id(self) -> &'static str {
        match self {
            Image::Debian => "debian",
            Image::CloudDebian => "cloud-debian",
        }
    }

    /// The image by id.
    pub fn parse(id: &str) -> Option<Image> {
        Image::ALL.into_iter().find(|i| i.id() == id)
    }

    /// The user a deployment logs in as by default.
    pub fn login_user(self) -> &'static str {
        match self {
            Image::Debian => "root",
            Image::CloudDebian => LOGIN_USER,
        }
    }
}

/// What a node's files are made from.
#[derive(Debug, Clone)]
pub struct Rootfs<'a> {
    /// The hostname.
    pub name: &'a str,
    /// The address sshd listens on.
    pub address: Ipv4Addr,
    /// The port sshd listens on.
    pub port: u16,
    /// The image.
    pub image: Image,
    /// The image's own login user ([`LOGIN_USER`] unless the node was given another).
    pub user: &'a str,
    /// An SSH public key (one OpenSSH line) for the login user.
    pub ssh_key: Option<&'a str>,
    /// A password for the login user; turns on password authentication.
    pub password: Option<&'a str>,
    /// A pre-authentication banner.
    pub banner: Option<&'a str>,
    /// sshd_config settings that replace the defaults (or add to them).
    pub sshd_config: &'a [(String, String)],
}

impl Rootfs<'_> {
    /// Writes the node's files under `upper` and returns its host public keys.
    pub fn write(&self, upper: &Path) -> io::Result<Vec<String>> {
        let etc = upper.join("etc");
        mkdir(&etc, 0o755)?;
        fs::write(etc.join("hostname"), format!("{}\n", self.name))?;
        fs::write(
            etc.join("hosts"),
            format!(
                "127.0.0.1\tlocalhost\n{}\t{}\n::1\tlocalhost ip6-localhost ip6-loopback\n",
                self.address, self.name
            ),
        )?;
        let (uid, gid) = self.write_accounts(&etc)?;

        let sudoers = etc.join("sudoers.d");
        mkdir(&sudoers, 0o750)?;
        let rule = sudoers.join("90-nodeup-login-user");
        fs::write(&rule, format!("{} ALL=(ALL) NOPASSWD:ALL\n", self.user))?;
        set_mode(&rule, 0o440)?;

        let ssh = etc.join("ssh");
        mkdir(&ssh, 0o755)?;
        make_opaque(&ssh)?;
        let host_keys = write_host_keys(&ssh)?;
        if let Some(banner) = self.banner {
            fs::write(ssh.join("banner"), banner)?;
        }
        fs::write(ssh.join("sshd_config"), self.sshd_config_text())?;

        // Home directories of the node's own: nothing of the host's /root or /home shows through.
        let root_home = upper.join("root");
        mkdir(&root_home, 0o700)?;
        make_opaque(&root_home)?;
        let home = upper.join("home");
        mkdir(&home, 0o755)?;
        make_opaque(&home)?;
        let user_home = home.join(self.user);
        mkdir(&user_home, 0o755)?;
        chown(&user_home, Some(uid), Some(gid))?;

        write_power_commands(upper)?;

        if self.image == Image::CloudDebian {
            let bin = upper.join("usr/bin");
            fs::create_dir_all(&bin)?;
            let stand_in = bin.join("cloud-init");
            fs::write(
                &stand_in,
                CLOUD_INIT_STAND_IN.replace("@STATUS@", CLOUD_INIT_STATUS),
            )?;
            set_mode(&stand_in, 0o755)?;
        }

        if let Some(key) = self.ssh_key {
            let key = key.trim();
            match self.image {
                Image::Debian => authorize(&root_home, key, 0, 0)?,
                Image::CloudDebian => {
                    authorize(&user_home, key, uid, gid)?;
                    // What cloud-init's disable_root writes: root's key "works", then refuses.
                    let refusal = format!(
                        "no-port-forwarding,no-agent-forwarding,no-X11-forwarding,command=\"echo \
                         'Please login as the user \\\"{}\\\" rather than the user \
                         \\\"root\\\".';echo;sleep 10;exit 142\" {key}",
                        self.user
                    );
                    authorize(&root_home, &refusal, 0, 0)?;
                }
            }
        }
        Ok(host_keys)
    }

    /// passwd, group and shadow: the host's accounts (with every password hash blanked) plus the
    /// login user. Returns the login user's uid and gid.
    fn write_accounts(&self, etc: &Path) -> io::Result<(u32, u32)> {
        let passwd = fs::read_to_string("/etc/passwd")?;
        let group = fs::read_to_string("/etc/group")?;
        let shadow = fs::read_to_string("/etc/shadow").unwrap_or_default();
        let user = self.user;
        let is_login_user = |line: &&str| line.split(':').next() == Some(user);

        let used_ids = |text: &str, field: usize| -> Vec<u32> {
            text.lines()
                .filter_map(|l| l.split(':').nth(field)?.parse().ok())
                .collect()
        };
        let uids = used_ids(&passwd, 2);
        let gids = used_ids(&group, 2);
        let id = (1000..60000)
            .find(|n| !uids.contains(n) && !gids.contains(n))
            .ok_or_else(|| io::Error::other("no free uid for the login user"))?;

        let mut passwd_out: String = passwd
            .lines()
            .filter(|l| !is_login_user(l))
            .map(|l| format!("{l}\n"))
            .collect();
        passwd_out.push_str(&format!(
            "{user}:x:{id}:{id}:Debian:/home/{user}:/bin/bash\n"
        ));
        let mut group_out: String = group
            .lines()
            .filter(|l| !is_login_user(l))
            .map(|l| format!("{l}\n"))
            .collect();
        group_out.push_str(&format!("{user}:x:{id}:\n"));

        let hash = match self.password {
            Some(pw) => Some(
                sha_crypt::sha512_simple(pw, &sha_crypt::Sha512Params::default())
                    .map_err(|e| io::Error::other(format!("hashing the password: {e:?}")))?,
            ),
            None => None,
        };
        let password_user = match self.image {
            Image::CloudDebian => user,
            Image::Debian => self.image.login_user(),
        };
        let mut shadow_out = String::new();
        for line in shadow.lines().filter(|l| !is_login_user(l)) {
            let mut fields: Vec<&str> = line.split(':').collect();
            if fields.len() > 1 {
                // "*": no password, yet not locked, so that key logins work (UsePAM no).
                fields[1] = match (&hash, fields[0] == password_user) {
                    (Some(h), true) => h.as_str(),
                    _ => "*",
                };
            }
            shadow_out.push_str(&fields.join(":"));
            shadow_out.push('\n');
        }
        let user_pw = match (&hash, password_user == user) {
            (Some(h), true) => h.as_str(),
            _ => "*",
        };
        shadow_out.push_str(&format!("{user}:{user_pw}:19000:0:99999:7:::\n"));

        fs::write(etc.join("passwd"), passwd_out)?;
        fs::write(etc.join("group"), group_out)?;
        let shadow_path = etc.join("shadow");
        fs::write(&shadow_path, shadow_out)?;
        set_mode(&shadow_path, 0o640)?;
        let shadow_gid = group
            .lines()
            .find(|l| l.starts_with("shadow:"))
            .and_then(|l| l.split(':').nth(2)?.parse().ok())
            .unwrap_or(0);
        chown(&shadow_path, Some(0), Some(shadow_gid))?;
        Ok((id, id))
    }

    fn sshd_config_text(&self) -> String {
        let root_login = match (self.image, self.password.is_some()) {
            (Image::Debian, true) => "yes",
            _ => "prohibit-password",
        };
        let password_auth = if self.password.is_some() { "yes" } else { "no" };
        let mut settings: Vec<(String, String)> = [
            ("ListenAddress", format!("{}:{}", self.address, self.port)),
            ("HostKey", "/etc/ssh/ssh_host_ed25519_key".to_string()),
            ("HostKey", "/etc/ssh/ssh_host_ecdsa_key".to_string()),
            ("PidFile", "none".to_string()),
            ("UsePAM", "no".to_string()),
            ("PermitRootLogin", root_login.to_string()),
            ("PasswordAuthentication", password_auth.to_string()),
            ("KbdInteractiveAuthentication", "no".to_string()),
            ("AcceptEnv", "LANG LC_*".to_string()),
            ("PrintMotd", "no".to_string()),
            ("Subsystem", "sftp /usr/lib/openssh/sftp-server".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        if self.banner.is_some() {
            settings.push(("Banner".into(), "/etc/ssh/banner".into()));
        }
        for (key, value) in self.sshd_config {
            // sshd keeps the first value it reads, so an override replaces the default in place.
            match settings
                .iter_mut()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
            {
                Some(slot) => slot.1 = value.clone(),
                None => settings.push((key.clone(), value.clone())),
            }
        }
        let mut text = String::from("# Written by nodeup for this local node.\n");
        for (k, v) in settings {
            text.push_str(&format!("{k} {v}\n"));
        }
        text
    }
}

/// Writes the node's power commands into its upper layer, where they hide the host's (the
/// host's files underneath are never touched: the upper layer is a plain directory of the node's).
fn write_power_commands(upper: &Path) -> io::Result<()> {
    for path in POWER_COMMAND_PATHS {
        let file = upper.join(path);
        if let Some(dir) = file.parent() {
            fs::create_dir_all(dir)?;
        }
        fs::write(&file, POWER_COMMANDS)?;
        set_mode(&file, 0o755)?;
    }
    Ok(())
}

fn write_host_keys(ssh: &Path) -> io::Result<Vec<String>> {
    let mut rng = rand::rng();
    let mut public = Vec::new();
    for (file, algorithm) in [
        ("ssh_host_ed25519_key", Algorithm::Ed25519),
        (
            "ssh_host_ecdsa_key",
            Algorithm::Ecdsa {
                curve: EcdsaCurve::NistP256,
            },
        ),
    ] {
        let key = PrivateKey::random(&mut rng, algorithm)
            .map_err(|e| io::Error::other(format!("generating a host key: {e}")))?;
        let private = key
            .to_openssh(LineEnding::LF)
            .map_err(|e| io::Error::other(format!("encoding a host key: {e}")))?;
        let path = ssh.join(file);
        write_private(&path, private.as_bytes())?;
        let line = key
            .public_key()
            .to_openssh()
            .map_err(|e| io::Error::other(format!("encoding a host key: {e}")))?;
        fs::write(ssh.join(format!("{file}.pub")), format!("{line}\n"))?;
        public.push(line);
    }
    Ok(public)
}

/// Writes `~/.ssh/authorized_keys` (0700 directory, 0600 file) under `home`, owned by uid:gid.
fn authorize(home: &Path, line: &str, uid: u32, gid: u32) -> io::Result<()> {
    let dir = home.join(".ssh");
    mkdir(&dir, 0o700)?;
    chown(&dir, Some(uid), Some(gid))?;
    let file = dir.join("authorized_keys");
    write_private(&file, format!("{line}\n").as_bytes())?;
    chown(&file, Some(uid), Some(gid))
}

/// Creates a file readable by its owner alone, from the first byte on.
fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)
}

fn mkdir(path: &Path, mode: u32) -> io::Result<()> {
    match fs::create_dir(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    set_mode(path, mode)
}

/// Marks an upper-layer directory opaque: the host's directory below it does not show through.
fn make_opaque(dir: &Path) -> io::Result<()> {
    let path = CString::new(dir.as_os_str().as_bytes())?;
    // SAFETY: both strings are NUL-terminated and live across the call; the value is one byte.
    let rc = unsafe {
        libc::setxattr(
            path.as_ptr(),
            c"trusted.overlay.opaque".as_ptr(),
            c"y".as_ptr().cast(),
            1,
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rootfs(overrides: &[(String, String)]) -> Rootfs<'_> {
        Rootfs {
            name: "web-1",
            address: Ipv4Addr::new(127, 100, 0, 2),
            port: 22,
            image: Image::CloudDebian,
            user: LOGIN_USER,
            ssh_key: None,
            password: None,
            banner: Some("hello"),
            sshd_config: overrides,
        }
    }

    #[test]
    fn overrides_replace_defaults_in_place() {
        let overrides = vec![
            ("permitrootlogin".to_string(), "no".to_string()),
            ("MaxStartups".to_string(), "1:100:1".to_string()),
        ];
        let text = rootfs(&overrides).sshd_config_text();
        assert!(text.contains("PermitRootLogin no\n"), "{text}");
        assert!(!text.contains("prohibit-password"), "{text}");
        assert!(text.contains("MaxStartups 1:100:1\n"));
        assert!(text.contains("ListenAddress 127.100.0.2:22\n"));
        assert!(text.contains("Banner /etc/ssh/banner\n"));
    }

    #[test]
    fn images_have_their_login_users() {
        assert_eq!(Image::parse("cloud-debian").unwrap().login_user(), "debian");
        assert_eq!(Image::parse("debian").unwrap().login_user(), "root");
        assert!(Image::parse("ubuntu").is_none());
    }
}
