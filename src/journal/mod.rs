//! The journal: a durable record of every run of nodeup and of every node it creates, written
//! before the fact, so that a run killed at any point (SIGKILL, out of memory, a crashed CI runner)
//! leaves nothing that nodeup does not know about.
//!
//! - A run ([`Journal::begin_run`]) records who owns it: host, pid and the pid's start time (a
//!   reused pid is not mistaken for the owner), and renews a lease while it lives.
//! - A node ([`Journal::begin_node`]) is recorded, and its name locked, before `create_node` is
//!   called; its provider id, addresses, state and each step's result follow.
//! - Nodes whose run's owner is dead and that were neither finished, kept nor destroyed are
//!   orphans ([`Journal::orphans`]); `engine::cleanup` destroys them.
//!
//! The journal is SQLite by default (`$NODEUP_STATE_DIR/journal.db`), PostgreSQL for teams
//! (`NODEUP_JOURNAL=postgres://...`, or `[journal] url` in nodeup's config file).

mod schema;
pub mod store;
mod views;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::driver::ProviderConfig;
use crate::life::Stage;
use crate::model::Node;
use store::{Param, Store};

pub use store::redact_url;
pub use views::{NodeView, RunDetail, RunView, StepView};

/// The journal file's name in the state directory.
pub const JOURNAL_FILE: &str = "journal.db";
/// How often a live run renews its lease.
const LEASE_RENEW: Duration = Duration::from_secs(10);
/// How long a run on another machine may go without renewing its lease before it counts as dead.
pub const LEASE_TTL: Duration = Duration::from_secs(60);
/// How many runs `nodeup journal` lists by default.
pub const DEFAULT_RUN_LIMIT: i64 = 50;
/// The longest error text kept for a node or step.
const MAX_ERROR_CHARS: usize = 500;
/// How many times taking a name lock is attempted when it changes hands meanwhile.
const LOCK_ATTEMPTS: usize = 3;

/// What went wrong with the journal. Each message names the journal and the fix.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The file exists but is not a SQLite database.
    #[error(
        "journal {journal} is not a nodeup journal (the file is not a SQLite database): move it \
         away, or point NODEUP_JOURNAL at another file"
    )]
    NotADatabase {
        /// The file.
        journal: String,
    },
    /// The path is not a file a journal can be: a device, a FIFO, a directory.
    #[error(
        "journal {journal} is {what}, not a file: point NODEUP_JOURNAL at a file (it is made \
         when missing), or unset it for the default"
    )]
    NotAFile {
        /// The path.
        journal: String,
        /// What it is.
        what: &'static str,
    },
    /// The file is a SQLite database, but damaged (truncated, overwritten).
    #[error(
        "journal {journal} is damaged: move it away (nodeup makes a new one; `sqlite3 FILE \
         .recover` may save what it held), or point NODEUP_JOURNAL at another file"
    )]
    Damaged {
        /// The file.
        journal: String,
        /// What SQLite said.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The file or its directory cannot be written.
    #[error(
        "journal {journal} cannot be written (read-only file or directory): make it writable, or \
         point NODEUP_JOURNAL (or NODEUP_STATE_DIR) at a writable place"
    )]
    ReadOnly {
        /// The file.
        journal: String,
    },
    /// A newer nodeup wrote it.
    #[error(
        "journal {journal} was written by a newer nodeup (schema version {found}; this nodeup \
         knows up to {known}): upgrade nodeup, or use another journal"
    )]
    Newer {
        /// Where the journal is (a path, or a URL without its password).
        journal: String,
        /// Its schema version.
        found: i64,
        /// The newest version this nodeup knows.
        known: i64,
    },
    /// PostgreSQL cannot be reached.
    #[error(
        "journal {journal}: cannot connect to PostgreSQL ({message}): check the URL \
         (NODEUP_JOURNAL or [journal] url), that the server runs and lets this user in"
    )]
    Unreachable {
        /// The URL, without its password.
        journal: String,
        /// Why.
        message: String,
    },
    /// The journal URL does not parse.
    #[error(
        "journal {journal}: not a PostgreSQL URL ({message}): write \
         postgres://user:password@host:port/database"
    )]
    BadUrl {
        /// The URL, without its password.
        journal: String,
        /// Why.
        message: String,
    },
    /// Another live run is deploying a node of this name.
    #[error("{0}")]
    NameLocked(Box<NameHeld>),
    /// No run (or more than one) has this id.
    #[error("journal {journal}: {message}")]
    NoSuchRun {
        /// Where the journal is (a path, or a URL without its password).
        journal: String,
        /// What matched.
        message: String,
    },
    /// A stored state this nodeup does not know (a newer nodeup wrote it, or the file was
    /// edited): nothing is guessed about the node.
    #[error(
        "journal {journal}: {what} {id} has the state {found:?}, which this nodeup does not know: \
         upgrade nodeup, or correct the record"
    )]
    UnknownState {
        /// Where the journal is (a path, or a URL without its password).
        journal: String,
        /// What has it: run, node or step.
        what: &'static str,
        /// Which one.
        id: String,
        /// The state stored.
        found: String,
    },
    /// nodeup's config file is wrong.
    #[error("{path}: {message}")]
    Config {
        /// The file.
        path: String,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// Another run takes and gives up the lock on a name faster than this one can look.
    #[error("journal {journal}: the lock on {name:?} keeps changing hands; try again")]
    LockContended {
        /// Where the journal is (a path, or a URL without its password).
        journal: String,
        /// The node name locked.
        name: String,
    },
    /// The database failed; `source` says how.
    #[error("journal {journal}: {doing} failed")]
    Database {
        /// Where the journal is (a path, or a URL without its password).
        journal: String,
        /// What was being done (`PostgreSQL`, `opening`, ...).
        doing: String,
        /// What the database (or the system) said.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl JournalError {
    /// A database failure of `journal` while `doing` something.
    pub fn database(
        journal: &str,
        doing: &str,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        JournalError::Database {
            journal: journal.into(),
            doing: doing.into(),
            source: Box::new(source),
        }
    }
}

/// Who holds the name a deploy asked for.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "node name {name:?} on {provider}{} is being deployed by run {run} (host {host}, pid {pid}, \
     since {since}): wait for it to finish, or choose another name",
    if .location.is_empty() { String::new() } else { format!(" in {}", .location) }
)]
pub struct NameHeld {
    /// The provider the name is locked on.
    pub provider: String,
    /// The location ("" for none).
    pub location: String,
    /// The node name locked.
    pub name: String,
    /// The run that holds it.
    pub run: String,
    /// The host the holding run runs on.
    pub host: String,
    /// The holding run's process id on that host.
    pub pid: i64,
    /// Since when (UTC).
    pub since: String,
}

/// Where a journal lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A SQLite file (the embedded default).
    Sqlite(PathBuf),
    /// A PostgreSQL URL (`postgres://user:password@host/db`), shared by a team.
    Postgres(String),
}

impl Location {
    /// The embedded default: `journal.db` in nodeup's state directory.
    pub fn default_sqlite() -> Location {
        Location::Sqlite(crate::state_dir().join(JOURNAL_FILE))
    }

    /// A `postgres://` (or `postgresql://`) URL, a `sqlite:PATH`, or a path.
    pub fn parse(text: &str) -> Location {
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            Location::Postgres(text.to_string())
        } else {
            Location::Sqlite(PathBuf::from(text.strip_prefix("sqlite:").unwrap_or(text)))
        }
    }

    /// [`Location::parse`] of what a user wrote (`NODEUP_JOURNAL`, `[journal] url`, named `from`):
    /// a libpq `key=value` connection string is refused, with the URL to write instead, rather
    /// than taken for the name of a SQLite file.
    ///
    /// # Errors
    /// [`JournalError::BadUrl`] for a `key=value` string (its password masked).
    pub fn parse_given(text: &str, from: &str) -> Result<Location, JournalError> {
        let looks_like_keywords = text.split_whitespace().any(|word| {
            word.split_once('=').is_some_and(|(key, _)| {
                matches!(
                    key.to_ascii_lowercase().as_str(),
                    "host" | "hostaddr" | "port" | "dbname" | "user" | "password" | "sslmode"
                )
            })
        });
        if looks_like_keywords && !text.contains("://") {
            return Err(JournalError::BadUrl {
                journal: redact_url(text),
                message: format!(
                    "{from} holds a libpq key=value string, which nodeup does not read"
                ),
            });
        }
        Ok(Location::parse(text))
    }

    /// Where the journal is, for messages (never a password).
    pub fn describe(&self) -> String {
        match self {
            Location::Sqlite(path) => path.display().to_string(),
            Location::Postgres(url) => redact_url(url),
        }
    }

    /// The journal the user asked for: `NODEUP_JOURNAL` (`off` for none), else `[journal] url` in
    /// nodeup's config file (`$NODEUP_CONFIG`, else `~/.config/nodeup/config.toml`), else the
    /// embedded default.
    ///
    /// # Errors
    /// A config file that exists but cannot be read or does not parse.
    pub fn from_env() -> Result<Option<Location>, JournalError> {
        if let Some(value) = std::env::var("NODEUP_JOURNAL")
            .ok()
            .filter(|v| !v.is_empty())
        {
            if value == "off" {
                return Ok(None);
            }
            return Location::parse_given(&value, "NODEUP_JOURNAL").map(Some);
        }
        match config_file()? {
            Some(ConfigFile {
                journal: Some(JournalConfig { url }),
            }) => Location::parse_given(&url, "[journal] url").map(Some),
            _ => Ok(Some(Location::default_sqlite())),
        }
    }
}

/// nodeup's config file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    journal: Option<JournalConfig>,
}

/// `[journal]` in the config file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JournalConfig {
    /// A PostgreSQL URL or a SQLite path.
    url: String,
}

/// Where nodeup's config file is looked for.
fn config_path() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("NODEUP_CONFIG") {
        return Some(PathBuf::from(path));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("nodeup/config.toml"))
}

fn config_file() -> Result<Option<ConfigFile>, JournalError> {
    let Some(path) = config_path() else {
        return Ok(None);
    };
    let error = |message: String| JournalError::Config {
        path: path.display().to_string(),
        message,
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(error(format!("cannot read nodeup's config file: {e}"))),
    };
    toml::from_str(&text).map(Some).map_err(|e| {
        error(format!(
            "{} (the config file takes `[journal] url = \"postgres://...\"`)",
            e.message()
        ))
    })
}

/// The process that owns a run: where it runs and which process it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Owner {
    /// The host name of the machine the owner runs on.
    pub host: String,
    /// The kernel boot and PID namespace: only processes in the same one can check the pid.
    #[serde(skip)]
    pub pid_space: String,
    /// The owner's process id, in its pid namespace.
    pub pid: i64,
    /// The pid's start time (clock ticks since boot).
    #[serde(skip)]
    pub pid_start: i64,
}

impl Owner {
    /// This process.
    pub fn this() -> Owner {
        let pid = std::process::id() as i32;
        Owner {
            host: crate::procfs::host_name(),
            pid_space: crate::procfs::pid_space(),
            pid: pid.into(),
            pid_start: crate::procfs::start_time(pid).unwrap_or(0) as i64,
        }
    }

    /// The owner recorded in a row's `host`, `pid_space`, `pid` and `pid_start` columns.
    fn of(row: &store::Row) -> Owner {
        Owner {
            host: row.string("host"),
            pid_space: row.string("pid_space"),
            pid: row.int("pid").unwrap_or(0),
            pid_start: row.int("pid_start").unwrap_or(0),
        }
    }

    /// Whether the owner still runs: its pid (with its start time) when it shares this pid space,
    /// else whether it renewed its lease (`heartbeat`, Unix ms) within [`LEASE_TTL`].
    pub fn is_alive(&self, heartbeat: i64) -> bool {
        if self.pid_space == crate::procfs::pid_space() {
            return crate::procfs::is_running(self.pid as i32, self.pid_start as u64);
        }
        now_ms() - heartbeat < LEASE_TTL.as_millis() as i64
    }
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Unix milliseconds as people read them (UTC).
pub fn show_time(ms: i64) -> String {
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64))
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEnd {
    /// Everything succeeded.
    Done,
    /// Something failed.
    Failed,
    /// It was cancelled.
    Cancelled,
}

impl RunEnd {
    /// The state the run is left in.
    pub fn state(self) -> RunState {
        match self {
            RunEnd::Done => RunState::Done,
            RunEnd::Failed => RunState::Failed,
            RunEnd::Cancelled => RunState::Cancelled,
        }
    }
}

/// Where a run is: as recorded, or `crashed` when it is recorded running and its owner is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunState {
    /// Its owner works on it.
    Running,
    /// Everything succeeded.
    Done,
    /// Something failed.
    Failed,
    /// It was cancelled.
    Cancelled,
    /// Its owner died while it ran (never stored: read from a `running` run whose owner is gone).
    Crashed,
}

/// The states a run is stored in.
const STORED_RUN_STATES: [RunState; 4] = [
    RunState::Running,
    RunState::Done,
    RunState::Failed,
    RunState::Cancelled,
];

impl RunState {
    /// The word for it, as stored and printed.
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Done => "done",
            RunState::Failed => "failed",
            RunState::Cancelled => "cancelled",
            RunState::Crashed => "crashed",
        }
    }

    /// A stored state read back.
    fn parse(text: &str) -> Option<RunState> {
        STORED_RUN_STATES.into_iter().find(|s| s.as_str() == text)
    }
}

impl std::fmt::Display for RunState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a step ended, as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepStatus {
    /// It succeeded.
    Ok,
    /// It failed.
    Failed,
}

impl StepStatus {
    /// The word for it, as stored and printed.
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Ok => "ok",
            StepStatus::Failed => "failed",
        }
    }

    fn parse(text: &str) -> Option<StepStatus> {
        [StepStatus::Ok, StepStatus::Failed]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

impl std::fmt::Display for StepStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a run is, recorded when it begins.
#[derive(Debug, Clone, Default)]
pub struct RunStart {
    /// The command (`deploy`, `run`, `deploy_node` for the library, ...).
    pub command: String,
    /// The step file, when there is one.
    pub stepfile: Option<PathBuf>,
    /// The step file's SHA-256, hex.
    pub stepfile_hash: Option<String>,
}

impl RunStart {
    /// A run of `command` with `stepfile`, its hash taken now.
    pub fn with_stepfile(command: &str, stepfile: &Path) -> RunStart {
        use sha2::Digest;
        let hash = std::fs::read(stepfile)
            .ok()
            .map(|bytes| hex(&sha2::Sha256::digest(bytes)));
        RunStart {
            command: command.into(),
            stepfile: Some(std::path::absolute(stepfile).unwrap_or(stepfile.to_path_buf())),
            stepfile_hash: hash,
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A node (or, for `run`, a host) about to be worked on.
#[derive(Debug, Clone, Default)]
pub struct NodeIntent {
    /// The provider; `None` for a host that exists already.
    pub provider: Option<String>,
    /// The provider's settings (never credentials), to reach it again for cleanup.
    pub settings: ProviderConfig,
    /// The location ("" for the provider's default).
    pub location: String,
    /// The node's name (or the host as given).
    pub name: String,
    /// Its address, when known already.
    pub address: Option<String>,
    /// How many steps it will run.
    pub steps: usize,
}

struct Shared {
    location: Location,
    store: tokio::sync::OnceCell<Arc<dyn Store>>,
    owner: Owner,
}

/// A handle on the journal: cheap to clone; opened on first use. A handle may be bound to a run
/// ([`Journal::begin_run`]); nodes recorded through it belong to that run.
#[derive(Clone)]
pub struct Journal {
    shared: Arc<Shared>,
    run: Option<Arc<RunInner>>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("location", &self.shared.location.describe())
            .field("run", &self.run_id())
            .finish()
    }
}

struct RunInner {
    id: String,
    next_seq: AtomicI64,
    heartbeat: tokio::task::JoinHandle<()>,
}

impl Drop for RunInner {
    fn drop(&mut self) {
        self.heartbeat.abort();
    }
}

impl Journal {
    /// The journal at `location`, opened (and its schema brought up to date) on first use.
    pub fn at(location: Location) -> Journal {
        Journal {
            shared: Arc::new(Shared {
                location,
                store: tokio::sync::OnceCell::new(),
                owner: Owner::this(),
            }),
            run: None,
        }
    }

    /// The embedded default: SQLite in nodeup's state directory.
    pub fn embedded() -> Journal {
        Journal::at(Location::default_sqlite())
    }

    /// The journal the user configured ([`Location::from_env`]); `None` when turned off.
    ///
    /// # Errors
    /// A config file that cannot be read or does not parse.
    pub fn from_env() -> Result<Option<Journal>, JournalError> {
        Ok(Location::from_env()?.map(Journal::at))
    }

    /// Where it is, for messages.
    pub fn describe(&self) -> String {
        self.shared.location.describe()
    }

    /// The run this handle is bound to.
    pub fn run_id(&self) -> Option<&str> {
        self.run.as_deref().map(|r| r.id.as_str())
    }

    async fn store(&self) -> Result<Arc<dyn Store>, JournalError> {
        self.shared
            .store
            .get_or_try_init(|| async {
                let store: Arc<dyn Store> = match &self.shared.location {
                    Location::Sqlite(path) => Arc::new(store::Sqlite::open(path).await?),
                    Location::Postgres(url) => Arc::new(store::Postgres::connect(url).await?),
                };
                schema::migrate(store.as_ref()).await?;
                Ok(store)
            })
            .await
            .cloned()
    }

    /// Opens the journal now (it is otherwise opened on first use), so that a bad journal is
    /// reported before anything else happens.
    ///
    /// # Errors
    /// The journal cannot be opened, read or brought up to date.
    pub async fn check(&self) -> Result<(), JournalError> {
        self.store().await.map(|_| ())
    }

    /// Records the start of a run owned by this process; the handle returned is bound to it and
    /// renews its lease while it lives.
    ///
    /// # Errors
    /// The journal cannot be opened or written.
    pub async fn begin_run(&self, start: RunStart) -> Result<Journal, JournalError> {
        let store = self.store().await?;
        let id = format!("{:012x}", rand::random::<u64>() >> 16);
        let owner = &self.shared.owner;
        let now = now_ms();
        store
            .execute(
                "INSERT INTO runs (id, command, stepfile, stepfile_hash, host, pid_space, pid,
                 pid_start, started, heartbeat, state) VALUES ($1, $2, $3, $4, $5, $6, $7, $8,
                 $9, $10, 'running')",
                vec![
                    id.clone().into(),
                    start.command.into(),
                    start.stepfile.map(|p| p.display().to_string()).into(),
                    start.stepfile_hash.into(),
                    owner.host.clone().into(),
                    owner.pid_space.clone().into(),
                    owner.pid.into(),
                    owner.pid_start.into(),
                    now.into(),
                    now.into(),
                ],
            )
            .await?;
        let heartbeat = tokio::spawn(renew_lease(store, id.clone()));
        Ok(Journal {
            shared: self.shared.clone(),
            run: Some(Arc::new(RunInner {
                id,
                next_seq: AtomicI64::new(1),
                heartbeat,
            })),
        })
    }

    /// Records how the bound run ended, and gives up the name locks it still holds. Does nothing
    /// on a handle bound to no run.
    pub async fn finish_run(&self, end: RunEnd) {
        let Some(run) = &self.run else { return };
        let outcome = async {
            let store = self.store().await?;
            store
                .execute(
                    "UPDATE runs SET state = $1, finished = $2 WHERE id = $3",
                    vec![
                        end.state().as_str().into(),
                        now_ms().into(),
                        run.id.clone().into(),
                    ],
                )
                .await?;
            store
                .execute(
                    "DELETE FROM locks WHERE run_id = $1",
                    vec![run.id.clone().into()],
                )
                .await
        };
        if let Err(e) = outcome.await {
            tracing::warn!(
                "recording the end of run {}: {}",
                run.id,
                crate::error_chain(&e)
            );
        }
    }

    /// Records a node before it is created (or a host before it is logged in to), taking the lock
    /// on its (provider, location, name) when there is a provider. A handle bound to no run
    /// begins one of its own (`command`), which ends with the node.
    ///
    /// # Errors
    /// [`JournalError::NameLocked`] when a live run holds the name; any failure to write: a
    /// node must never be created that the journal cannot record.
    pub async fn begin_node(
        &self,
        intent: &NodeIntent,
        command: &str,
    ) -> Result<NodeEntry, JournalError> {
        let (journal, owns_run) = match &self.run {
            Some(_) => (self.clone(), false),
            None => {
                let start = RunStart {
                    command: command.into(),
                    ..Default::default()
                };
                (self.begin_run(start).await?, true)
            }
        };
        let run = journal.run.clone().expect("bound to a run");
        let seq = run.next_seq.fetch_add(1, Ordering::Relaxed);
        let store = journal.store().await?;
        let lock = match &intent.provider {
            Some(provider) => {
                let key = LockKey {
                    provider: provider.clone(),
                    location: intent.location.clone(),
                    name: intent.name.clone(),
                };
                take_lock(store.as_ref(), &key, &run.id).await?;
                Some(key)
            }
            None => None,
        };
        let settings = serde_json::to_string(&intent.settings).unwrap_or_default();
        let now = now_ms();
        let state = match intent.provider {
            Some(_) => Stage::Creating,
            None => Stage::LoggingIn,
        };
        store
            .execute(
                "INSERT INTO nodes (run_id, seq, provider, settings, location, name, addresses,
                 state, steps, created, updated) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,
                 $11)",
                vec![
                    run.id.clone().into(),
                    seq.into(),
                    intent.provider.clone().into(),
                    intent.provider.as_ref().map(|_| settings).into(),
                    intent.location.clone().into(),
                    intent.name.clone().into(),
                    intent.address.clone().into(),
                    state.as_str().into(),
                    (intent.steps as i64).into(),
                    now.into(),
                    now.into(),
                ],
            )
            .await?;
        Ok(NodeEntry {
            journal,
            store,
            run,
            seq,
            lock,
            owns_run,
        })
    }
}

/// Renews a run's lease every [`LEASE_RENEW`] until the run's handle is dropped.
async fn renew_lease(store: Arc<dyn Store>, id: String) {
    loop {
        tokio::time::sleep(LEASE_RENEW).await;
        let renewed = store
            .execute(
                "UPDATE runs SET heartbeat = $1 WHERE id = $2",
                vec![now_ms().into(), id.clone().into()],
            )
            .await;
        if let Err(e) = renewed {
            tracing::warn!("renewing the lease of run {id}: {}", crate::error_chain(&e));
        }
    }
}

/// What a name lock is on.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LockKey {
    provider: String,
    location: String,
    name: String,
}

impl LockKey {
    fn params(&self) -> Vec<Param> {
        vec![
            self.provider.clone().into(),
            self.location.clone().into(),
            self.name.clone().into(),
        ]
    }
}

/// Who holds a lock, with the run's owner.
struct Holder {
    run: String,
    since: i64,
    owner: Owner,
    heartbeat: i64,
    running: bool,
}

impl Holder {
    fn is_alive(&self) -> bool {
        self.running && self.owner.is_alive(self.heartbeat)
    }
}

async fn holder(store: &dyn Store, key: &LockKey) -> Result<Option<Holder>, JournalError> {
    let rows = store
        .query(
            "SELECT l.run_id AS run_id, l.since AS since, r.host AS host,
             r.pid_space AS pid_space, r.pid AS pid, r.pid_start AS pid_start,
             r.heartbeat AS heartbeat, r.state AS state
             FROM locks l LEFT JOIN runs r ON r.id = l.run_id
             WHERE l.provider = $1 AND l.location = $2 AND l.name = $3",
            key.params(),
        )
        .await?;
    Ok(rows.first().map(|r| Holder {
        run: r.string("run_id"),
        since: r.int("since").unwrap_or(0),
        owner: Owner::of(r),
        heartbeat: r.int("heartbeat").unwrap_or(0),
        running: r.text("state").as_deref() == Some(RunState::Running.as_str()),
    }))
}

/// Takes the lock on `key` for `run`: inserted when free; taken over (with a warning) when its
/// holder is dead; refused when a live run holds it. Compare-and-swap, so two takers never both win.
async fn take_lock(store: &dyn Store, key: &LockKey, run: &str) -> Result<(), JournalError> {
    for _ in 0..LOCK_ATTEMPTS {
        let mut params = key.params();
        params.extend([Param::from(run), now_ms().into()]);
        let inserted = store
            .execute(
                "INSERT INTO locks (provider, location, name, run_id, since)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                params,
            )
            .await?;
        if inserted == 1 {
            return Ok(());
        }
        let Some(holder) = holder(store, key).await? else {
            continue;
        };
        if holder.is_alive() {
            return Err(JournalError::NameLocked(Box::new(NameHeld {
                provider: key.provider.clone(),
                location: key.location.clone(),
                name: key.name.clone(),
                run: holder.run,
                host: holder.owner.host,
                pid: holder.owner.pid,
                since: show_time(holder.since),
            })));
        }
        let mut params = key.params();
        params.extend([Param::from(run), now_ms().into(), holder.run.clone().into()]);
        let taken = store
            .execute(
                "UPDATE locks SET run_id = $4, since = $5
                 WHERE provider = $1 AND location = $2 AND name = $3 AND run_id = $6",
                params,
            )
            .await?;
        if taken == 1 {
            tracing::warn!(
                "taking over the name {:?} from run {} (host {}, pid {}), whose owner is gone; \
                 `nodeup cleanup` removes what that run left",
                key.name,
                holder.run,
                holder.owner.host,
                holder.owner.pid
            );
            return Ok(());
        }
    }
    Err(JournalError::LockContended {
        journal: store.describe(),
        name: key.name.clone(),
    })
}

/// One node (or host) of a run, as recorded. Updates after creation never fail the deployment:
/// a failure to write is logged, and the node goes on.
#[derive(Clone)]
pub struct NodeEntry {
    journal: Journal,
    store: Arc<dyn Store>,
    run: Arc<RunInner>,
    seq: i64,
    lock: Option<LockKey>,
    owns_run: bool,
}

impl std::fmt::Debug for NodeEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NodeEntry({}#{})", self.run.id, self.seq)
    }
}

/// What one step did, as the journal keeps it (never its output).
#[derive(Debug, Clone)]
pub struct StepRecord {
    /// 1-based.
    pub index: usize,
    /// The step's kind.
    pub kind: String,
    /// Whether it succeeded.
    pub ok: bool,
    /// For scripts: the exit status.
    pub exit_status: Option<i64>,
    /// How long it took.
    pub duration: Duration,
    /// The step's note, or why it failed (shortened).
    pub note: String,
}

impl NodeEntry {
    /// The run this node belongs to.
    pub fn run_id(&self) -> &str {
        &self.run.id
    }

    async fn update(&self, what: &str, sets: &str, mut params: Vec<Param>) {
        let n = params.len();
        let sql = format!(
            "UPDATE nodes SET {sets}, updated = ${} WHERE run_id = ${} AND seq = ${}",
            n + 1,
            n + 2,
            n + 3
        );
        params.extend([
            Param::from(now_ms()),
            self.run.id.clone().into(),
            self.seq.into(),
        ]);
        if let Err(e) = self.store.execute(&sql, params).await {
            tracing::warn!("journal: recording {what}: {}", crate::error_chain(&e));
        }
    }

    /// The provider answered: its id for the node, and its addresses so far.
    pub async fn created(&self, node: &Node) {
        self.update(
            "the new node",
            "provider_id = $1, addresses = $2, state = $3",
            vec![
                node.id.clone().into(),
                addresses(node).into(),
                Stage::Waiting.as_str().into(),
            ],
        )
        .await;
    }

    /// The node runs and is being logged in to at `address`.
    pub async fn running(&self, address: &str) {
        self.update(
            "the node's address",
            "addresses = $1, state = $2",
            vec![address.into(), Stage::LoggingIn.as_str().into()],
        )
        .await;
    }

    /// Logged in as `user`.
    pub async fn logged_in(&self, user: &str) {
        self.update(
            "the login user",
            "login_user = $1, state = $2",
            vec![user.into(), Stage::Provisioning.as_str().into()],
        )
        .await;
    }

    /// Step `index` (1-based) of `total` starts.
    pub async fn step_started(&self, index: usize, total: usize) {
        self.update(
            "the step",
            "step = $1, steps = $2, state = $3",
            vec![
                (index as i64).into(),
                (total as i64).into(),
                Stage::Provisioning.as_str().into(),
            ],
        )
        .await;
    }

    /// A step's result.
    pub async fn step_finished(&self, step: &StepRecord) {
        let recorded = self
            .store
            .execute(
                "INSERT INTO steps (run_id, seq, idx, kind, status, exit_status, duration_ms,
                 note, finished) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                vec![
                    self.run.id.clone().into(),
                    self.seq.into(),
                    (step.index as i64).into(),
                    step.kind.clone().into(),
                    if step.ok {
                        StepStatus::Ok
                    } else {
                        StepStatus::Failed
                    }
                    .as_str()
                    .into(),
                    step.exit_status.into(),
                    (step.duration.as_millis() as i64).into(),
                    shorten(&step.note).into(),
                    now_ms().into(),
                ],
            )
            .await;
        if let Err(e) = recorded {
            tracing::warn!(
                "journal: recording the result of step {}: {}",
                step.index,
                crate::error_chain(&e)
            );
        }
    }

    /// The deployment failed (what becomes of the node is recorded next, with [`Self::finish`]).
    pub async fn failed(&self, error: &str) {
        self.update(
            "the failure",
            "state = $1, error = $2",
            vec![Stage::Failed.as_str().into(), shorten(error).into()],
        )
        .await;
    }

    /// What finally became of the node: `Done`, `Kept`, `Destroyed`, or `Cancelled` (destroying it
    /// failed). Gives up its name lock when the state is settled, and ends the run when the
    /// entry began it.
    pub async fn finish(&self, state: Stage) {
        self.update("the node's end", "state = $1", vec![state.as_str().into()])
            .await;
        if let (Some(key), true) = (&self.lock, state.is_settled()) {
            let mut params = key.params();
            params.push(self.run.id.clone().into());
            let released = self
                .store
                .execute(
                    "DELETE FROM locks WHERE provider = $1 AND location = $2 AND name = $3
                     AND run_id = $4",
                    params,
                )
                .await;
            if let Err(e) = released {
                tracing::warn!(
                    "journal: releasing the name {:?}: {}",
                    key.name,
                    crate::error_chain(&e)
                );
            }
        }
        if self.owns_run {
            let end = match state {
                Stage::Done => RunEnd::Done,
                Stage::Cancelled => RunEnd::Cancelled,
                _ => RunEnd::Failed,
            };
            self.journal.finish_run(end).await;
        }
    }
}

fn addresses(node: &Node) -> String {
    node.public_ips
        .iter()
        .chain(&node.private_ips)
        .map(|ip| ip.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

fn shorten(text: &str) -> String {
    match text.char_indices().nth(MAX_ERROR_CHARS) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intent(name: &str) -> NodeIntent {
        NodeIntent {
            provider: Some("dummy".into()),
            location: "here".into(),
            name: name.into(),
            steps: 2,
            ..Default::default()
        }
    }

    async fn set_owner(journal: &Journal, run: &str, sets: &str, params: Vec<Param>) {
        let store = journal.store().await.unwrap();
        let n = params.len();
        let mut params = params;
        params.push(run.into());
        let sql = format!("UPDATE runs SET {sets} WHERE id = ${}", n + 1);
        assert_eq!(store.execute(&sql, params).await.unwrap(), 1);
    }

    /// A pid that belonged to a process that has ended (reaped), with that process's start time.
    fn dead_pid() -> (i64, i64) {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        let start = crate::procfs::start_time(pid).unwrap_or(1);
        child.wait().unwrap();
        (pid.into(), start as i64)
    }

    #[tokio::test]
    async fn a_live_holder_refuses_the_name_and_a_dead_one_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let location = Location::Sqlite(dir.path().join("j.db"));
        let first = Journal::at(location.clone());
        let second = Journal::at(location);
        let run = first.begin_run(RunStart::default()).await.unwrap();
        let entry = run.begin_node(&intent("web-1"), "test").await.unwrap();
        let other = second.begin_run(RunStart::default()).await.unwrap();

        // The owner (this process) is alive.
        let err = other
            .begin_node(&intent("web-1"), "test")
            .await
            .unwrap_err();
        let run_id = run.run_id().unwrap().to_string();
        assert!(
            matches!(&err, JournalError::NameLocked(held)
                if held.run == run_id && held.pid == i64::from(std::process::id())),
            "{err}"
        );
        // Another location is another name.
        let mut elsewhere = intent("web-1");
        elsewhere.location = "there".into();
        other.begin_node(&elsewhere, "test").await.unwrap();

        // Same pid space, the pid gone: taken over.
        let (pid, start) = dead_pid();
        set_owner(
            &run,
            &run_id,
            "pid = $1, pid_start = $2",
            vec![pid.into(), start.into()],
        )
        .await;
        other.begin_node(&intent("web-1"), "test").await.unwrap();
        // The first run's node is now an orphan; the second's are not.
        entry.failed("killed").await;
        let orphans = first.orphans().await.unwrap();
        assert_eq!(orphans.len(), 1);
        assert_eq!(orphans[0].name, "web-1");
        assert_eq!(orphans[0].run, run_id);
    }

    #[tokio::test]
    async fn on_another_machine_the_lease_decides() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::at(Location::Sqlite(dir.path().join("j.db")));
        let run = journal.begin_run(RunStart::default()).await.unwrap();
        let run_id = run.run_id().unwrap().to_string();
        run.begin_node(&intent("db"), "test").await.unwrap();
        let other = journal.begin_run(RunStart::default()).await.unwrap();

        // Another machine whose lease is fresh: alive.
        let sets = "pid_space = $1, heartbeat = $2";
        let params = |at: i64| vec![Param::from("other-boot/pid:[1]"), at.into()];
        set_owner(&run, &run_id, sets, params(now_ms())).await;
        let err = other.begin_node(&intent("db"), "test").await.unwrap_err();
        assert!(matches!(err, JournalError::NameLocked(_)), "{err}");

        // Its lease ran out: taken over.
        let stale = now_ms() - 2 * LEASE_TTL.as_millis() as i64;
        set_owner(&run, &run_id, sets, params(stale)).await;
        other.begin_node(&intent("db"), "test").await.unwrap();
    }

    #[tokio::test]
    async fn a_settled_node_frees_its_name_and_its_run_ends_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::at(Location::Sqlite(dir.path().join("j.db")));
        // Not bound to a run: the entry begins one of its own and ends it.
        let entry = journal
            .begin_node(&intent("app"), "deploy_node")
            .await
            .unwrap();
        entry
            .step_finished(&StepRecord {
                index: 1,
                kind: "script".into(),
                ok: true,
                exit_status: Some(0),
                duration: Duration::from_millis(1500),
                note: String::new(),
            })
            .await;
        entry.finish(Stage::Done).await;
        let again = journal
            .begin_node(&intent("app"), "deploy_node")
            .await
            .unwrap();
        again.finish(Stage::Kept).await;
        let runs = journal.runs(None).await.unwrap();
        assert_eq!(runs.len(), 2);
        assert!(runs
            .iter()
            .all(|r| r.state != RunState::Running && r.finished_ms.is_some()));
        let detail = journal.run_detail(entry.run_id()).await.unwrap();
        assert_eq!(detail.run.command, "deploy_node");
        assert_eq!(detail.node_list[0].results[0].duration_s, 1.5);
        assert_eq!(detail.node_list[0].state, Stage::Done);
        assert!(journal.orphans().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn an_unknown_stored_state_is_reported_not_guessed() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::at(Location::Sqlite(dir.path().join("j.db")));
        let run = journal.begin_run(RunStart::default()).await.unwrap();
        let run_id = run.run_id().unwrap().to_string();
        run.begin_node(&intent("web"), "test").await.unwrap();
        let store = journal.store().await.unwrap();
        let set = |table: &'static str, state: &'static str| {
            let (store, run_id) = (store.clone(), run_id.clone());
            async move {
                let key = if table == "runs" { "id" } else { "run_id" };
                let sql = format!("UPDATE {table} SET state = $1 WHERE {key} = $2");
                store
                    .execute(&sql, vec![state.into(), run_id.into()])
                    .await
                    .unwrap();
            }
        };
        set("nodes", "exploded").await;
        for e in [
            journal.run_detail(&run_id).await.unwrap_err(),
            journal.runs(None).await.unwrap_err(),
            journal.orphans().await.unwrap_err(),
        ] {
            let text = e.to_string();
            assert!(
                matches!(e, JournalError::UnknownState { what: "node", .. }),
                "{text}"
            );
            assert!(
                text.contains("\"exploded\"") && text.contains(&run_id),
                "{text}"
            );
        }
        set("nodes", "waiting").await;
        set("runs", "paused").await;
        let e = journal.runs(None).await.unwrap_err();
        assert!(
            matches!(e, JournalError::UnknownState { what: "run", .. }),
            "{e}"
        );
        set("runs", "running").await;
        assert_eq!(
            journal.runs(None).await.unwrap()[0].state,
            RunState::Running
        );
    }

    #[test]
    fn locations() {
        assert_eq!(
            Location::parse("postgresql://u:pw@db/nodeup").describe(),
            "postgresql://u:***@db/nodeup"
        );
        let query = Location::parse("postgres://db/nodeup?sslmode=require&password=hunter2");
        assert!(
            !query.describe().contains("hunter2"),
            "{}",
            query.describe()
        );
        assert!(
            query.describe().contains("password=***"),
            "{}",
            query.describe()
        );
        let e = Location::parse_given("host=db password=hunter2 dbname=x", "NODEUP_JOURNAL")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("hunter2") && e.contains("key=value"), "{e}");
        assert!(
            e.contains("postgres://user:password@host:port/database"),
            "{e}"
        );
        assert_eq!(
            Location::parse("sqlite:/tmp/j.db"),
            Location::Sqlite("/tmp/j.db".into())
        );
        assert_eq!(Location::parse("j.db"), Location::Sqlite("j.db".into()));
    }
}
