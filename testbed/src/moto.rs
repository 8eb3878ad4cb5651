//! moto's server (AWS's APIs, emulated by others from AWS's behaviour), started for a test on a
//! loopback port from the tests' virtualenv, with the images of `testbed/fixtures/ec2/amis.json`,
//! and stopped (by its process id) when dropped, even when the test panics.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long moto's server may take to listen (it imports all of moto first).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How often the harness looks whether it listens.
const START_POLL: Duration = Duration::from_millis(100);

/// The IAM calls that make the one user a checking server lets in: the user, a policy that
/// allows everything, and its access key (read from the last answer).
const SETUP_CALLS: [&str; 3] = [
    "Action=CreateUser&UserName=nodeup-tests",
    "Action=PutUserPolicy&UserName=nodeup-tests&PolicyName=all&PolicyDocument=%7B%22Version%22%3A%222012-10-17%22%2C%22Statement%22%3A%5B%7B%22Effect%22%3A%22Allow%22%2C%22Action%22%3A%22*%22%2C%22Resource%22%3A%22*%22%7D%5D%7D",
    "Action=CreateAccessKey&UserName=nodeup-tests",
];

/// The region the tests use.
pub const REGION: &str = "eu-west-1";

/// The access key id moto takes from anyone (while it checks no credentials).
pub const ACCESS_KEY_ID: &str = "testing";

/// Its secret.
pub const SECRET_ACCESS_KEY: &str = "testing";

/// A running moto server.
pub struct Moto {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Moto {
    /// Starts `moto_server` on a free loopback port and waits until it listens.
    ///
    /// # Errors
    /// The virtualenv is missing (the message says how to make it), or the server did not start.
    pub fn start() -> io::Result<Moto> {
        Self::start_with(None)
    }

    /// Starts a server that checks credentials and signatures as AWS does (moto's IAM access
    /// control), with one user allowed everything; returns it and that user's access key id and
    /// secret.
    ///
    /// # Errors
    /// As [`Moto::start`], or the user could not be made.
    pub async fn start_checking_credentials() -> io::Result<(Moto, String, String)> {
        let moto = Self::start_with(Some(SETUP_CALLS.len()))?;
        let mut created = String::new();
        for call in SETUP_CALLS {
            created = moto.iam(call).await?;
        }
        let field = |name: &str| {
            let open = format!("<{name}>");
            created
                .split(&open)
                .nth(1)
                .and_then(|rest| rest.split(&format!("</{name}>")).next())
                .map(str::to_string)
                .ok_or_else(|| {
                    io::Error::other(format!("moto's CreateAccessKey: no {name}: {created}"))
                })
        };
        let (id, secret) = (field("AccessKeyId")?, field("SecretAccessKey")?);
        Ok((moto, id, secret))
    }

    /// One unauthenticated IAM call (while moto lets the first few through).
    async fn iam(&self, form: &str) -> io::Result<String> {
        let answer = reqwest::Client::new()
            .post(format!("{}/", self.url()))
            .header("content-type", "application/x-www-form-urlencoded")
            .header(
                "authorization",
                "AWS4-HMAC-SHA256 Credential=setup/20240101/us-east-1/iam/aws4_request, \
                 SignedHeaders=host, Signature=0",
            )
            .body(format!("{form}&Version=2010-05-08"))
            .send()
            .await
            .map_err(io::Error::other)?;
        let ok = answer.status().is_success();
        let text = answer.text().await.map_err(io::Error::other)?;
        if !ok {
            return Err(io::Error::other(format!(
                "moto's IAM refused {form}: {text}"
            )));
        }
        // The last call's answer is the one read: CreateAccessKey's.
        Ok(text)
    }

    fn start_with(unchecked_calls: Option<usize>) -> io::Result<Moto> {
        let program = crate::python::tool("moto_server")?;
        let dir = tempfile::Builder::new().prefix("nodeup-moto-").tempdir()?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let log = std::fs::File::create(dir.path().join("moto.log"))?;
        let amis = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/ec2/amis.json");
        let mut command = Command::new(program);
        if let Some(calls) = unchecked_calls {
            command.env("INITIAL_NO_AUTH_ACTION_COUNT", calls.to_string());
        }
        let child = command
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("MOTO_AMIS_PATH", amis)
            // EC2 refuses an instance type it does not offer; moto does only when told to.
            .env("MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION", "true")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let mut moto = Moto {
            child,
            addr,
            _dir: dir,
        };
        moto.wait_listening()?;
        Ok(moto)
    }

    fn wait_listening(&mut self) -> io::Result<()> {
        let started = Instant::now();
        while started.elapsed() < START_TIMEOUT {
            if let Some(status) = self.child.try_wait()? {
                let log =
                    std::fs::read_to_string(self._dir.path().join("moto.log")).unwrap_or_default();
                return Err(io::Error::other(format!(
                    "moto_server ended ({status}): {log}"
                )));
            }
            if TcpStream::connect_timeout(&self.addr, START_POLL).is_ok() {
                return Ok(());
            }
            std::thread::sleep(START_POLL);
        }
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "moto_server did not listen on {} within {START_TIMEOUT:?}",
                self.addr
            ),
        ))
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The variables an AWS client needs to talk to `endpoint` (this server, or a front of it)
    /// with moto's test credentials, in [`REGION`], never reaching for an instance's metadata.
    pub fn env_for(endpoint: &str) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL_EC2", endpoint),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID),
            ("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY),
            ("AWS_REGION", REGION),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("AWS_CONFIG_FILE", "/dev/null"),
            ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
