//! A throwaway PostgreSQL cluster for tests: `initdb` and `pg_ctl` from Debian's `postgresql`
//! package, in a temporary directory, run as the `postgres` user (PostgreSQL refuses root),
//! listening on a loopback port and a unix socket in that directory. Dropping it stops the server
//! (`pg_ctl stop -m immediate`) and removes the directory, also when a test fails.

use std::ffi::CString;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Where Debian installs PostgreSQL's server programs, one directory per major version.
const PG_LIB: &str = "/usr/lib/postgresql";
/// The database user the cluster is made with (trust authentication, loopback only).
pub const PG_USER: &str = "nodeup";
/// How long `pg_ctl` waits for the server to start or stop, in seconds.
const PG_CTL_WAIT_SECS: &str = "60";
/// How many ports are tried should another process take the one picked.
const PORT_ATTEMPTS: usize = 3;

/// A running throwaway cluster.
pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    ids: (u32, u32),
}

fn server_bin() -> io::Result<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir(PG_LIB)
        .map_err(|e| {
            io::Error::other(format!(
                "{PG_LIB}: {e}: install PostgreSQL (apt-get install postgresql)"
            ))
        })?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("initdb").is_file())
        .collect();
    versions.sort();
    versions
        .pop()
        .ok_or_else(|| io::Error::other(format!("no initdb under {PG_LIB}")))
}

/// The uid and gid of the `postgres` user.
fn postgres_ids() -> io::Result<(u32, u32)> {
    let name = CString::new("postgres").expect("no NUL");
    // SAFETY: getpwnam with a NUL-terminated name; the result is read at once, before any other
    // call could reuse its static buffer.
    let entry = unsafe { libc::getpwnam(name.as_ptr()) };
    if entry.is_null() {
        return Err(io::Error::other(
            "no `postgres` user: install PostgreSQL (apt-get install postgresql)",
        ));
    }
    // SAFETY: checked non-null above.
    Ok(unsafe { ((*entry).pw_uid, (*entry).pw_gid) })
}

fn free_port() -> io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Postgres {
    /// Makes a cluster and starts it.
    ///
    /// # Errors
    /// PostgreSQL is not installed, or initdb or the server fails (its log is in the message).
    pub fn start() -> io::Result<Postgres> {
        let bin = server_bin()?;
        let ids = postgres_ids()?;
        let dir = tempfile::Builder::new().prefix("nodeup-pg-").tempdir()?;
        std::os::unix::fs::chown(dir.path(), Some(ids.0), Some(ids.1))?;
        let mut pg = Postgres {
            dir,
            bin,
            port: 0,
            ids,
        };
        pg.run(
            "initdb",
            &[
                "-D",
                &pg.data().to_string_lossy(),
                "-U",
                PG_USER,
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        )?;
        let mut last = None;
        for _ in 0..PORT_ATTEMPTS {
            pg.port = free_port()?;
            match pg.pg_ctl_start() {
                Ok(()) => return Ok(pg),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("the server did not start")))
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn pg_ctl_start(&self) -> io::Result<()> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log");
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data().to_string_lossy(),
                "-l",
                &log.to_string_lossy(),
                "-w",
                "-t",
                PG_CTL_WAIT_SECS,
                "-o",
                &options,
                "start",
            ],
        )
        .map_err(|e| {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            io::Error::other(format!("{e}\nserver log:\n{log}"))
        })
    }

    /// Runs one of PostgreSQL's programs as the `postgres` user.
    fn run(&self, program: &str, args: &[&str]) -> io::Result<()> {
        let out = Command::new(self.bin.join(program))
            .args(args)
            .uid(self.ids.0)
            .gid(self.ids.1)
            .current_dir(self.dir.path())
            .env("HOME", self.dir.path())
            .stdin(Stdio::null())
            .output()?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "{program} failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(())
    }

    /// A URL nodeup connects with: the `postgres` database on the loopback port.
    pub fn url(&self) -> String {
        format!("postgres://{PG_USER}@127.0.0.1:{}/postgres", self.port)
    }

    /// The loopback port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory of the cluster (its unix socket is here).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.port == 0 {
            return;
        }
        let data = self.data().to_string_lossy().into_owned();
        if let Err(e) = self.run(
            "pg_ctl",
            &[
                "-D",
                &data,
                "-m",
                "immediate",
                "-w",
                "-t",
                PG_CTL_WAIT_SECS,
                "stop",
            ],
        ) {
            eprintln!("stopping the test PostgreSQL: {e}");
        }
    }
}
