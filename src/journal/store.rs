//! Where the journal lives: SQLite (embedded, one file) or PostgreSQL (shared). Both run the same
//! SQL (written with `$1` placeholders; SQLite reads them as `?1`) over two value types, integers
//! and text, so the journal's logic is written once.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::JournalError;

/// How long SQLite waits for another nodeup process's write to finish before giving up.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// The pause between tries of switching a new SQLite journal to WAL while another process is
/// doing the same (SQLite answers that switch "database is locked" without waiting).
const WAL_SWITCH_PAUSE: Duration = Duration::from_millis(10);

/// How many times the switch to WAL is tried again (about the busy timeout in all).
const WAL_SWITCH_RETRIES: usize = 3000;
/// How long connecting to PostgreSQL may take.
const POSTGRES_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The key of the advisory lock that serializes schema migrations in PostgreSQL.
const MIGRATION_LOCK_KEY: i64 = 0x6e6f_6465_7570; // "nodeup"

/// A parameter of a statement (typed, so that a NULL has a type PostgreSQL accepts).
#[derive(Debug, Clone)]
pub enum Param {
    /// A 64-bit integer.
    Int(Option<i64>),
    /// Text.
    Text(Option<String>),
}

impl From<i64> for Param {
    fn from(v: i64) -> Self {
        Param::Int(Some(v))
    }
}

impl From<Option<i64>> for Param {
    fn from(v: Option<i64>) -> Self {
        Param::Int(v)
    }
}

impl From<&str> for Param {
    fn from(v: &str) -> Self {
        Param::Text(Some(v.to_string()))
    }
}

impl From<String> for Param {
    fn from(v: String) -> Self {
        Param::Text(Some(v))
    }
}

impl From<Option<String>> for Param {
    fn from(v: Option<String>) -> Self {
        Param::Text(v)
    }
}

/// A value read back.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// NULL.
    Null,
    /// An integer.
    Int(i64),
    /// Text.
    Text(String),
}

/// One row read back, its cells found by column name (as the query names or aliases them).
#[derive(Debug, Clone)]
pub struct Row {
    columns: Arc<[String]>,
    cells: Vec<Cell>,
}

impl Row {
    /// A row of `cells` under `columns`.
    pub fn new(columns: Arc<[String]>, cells: Vec<Cell>) -> Self {
        Row { columns, cells }
    }

    fn cell(&self, column: &str) -> Option<&Cell> {
        let i = self.columns.iter().position(|c| c == column);
        debug_assert!(i.is_some(), "no column {column:?} in {:?}", self.columns);
        i.and_then(|i| self.cells.get(i))
    }

    /// Column `column` as text (`None` for NULL).
    pub fn text(&self, column: &str) -> Option<String> {
        match self.cell(column) {
            Some(Cell::Text(s)) => Some(s.clone()),
            Some(Cell::Int(n)) => Some(n.to_string()),
            _ => None,
        }
    }

    /// Column `column` as text, "" for NULL.
    pub fn string(&self, column: &str) -> String {
        self.text(column).unwrap_or_default()
    }

    /// Column `column` as an integer (`None` for NULL or text).
    pub fn int(&self, column: &str) -> Option<i64> {
        match self.cell(column) {
            Some(Cell::Int(n)) => Some(*n),
            _ => None,
        }
    }
}

/// A journal database.
#[async_trait::async_trait]
pub trait Store: Send + Sync {
    /// Runs one statement; how many rows it changed.
    async fn execute(&self, sql: &str, params: Vec<Param>) -> Result<u64, JournalError>;
    /// Runs one query; its rows.
    async fn query(&self, sql: &str, params: Vec<Param>) -> Result<Vec<Row>, JournalError>;
    /// Runs several statements without parameters, in one call.
    async fn batch(&self, sql: &str) -> Result<(), JournalError>;
    /// The statements that open a transaction no other nodeup process runs at the same time.
    fn begin_exclusive(&self) -> String;
    /// Where it is, for messages (a path, or a URL without its password).
    fn describe(&self) -> String;
}

/// The SQLite journal: one file, WAL mode, a busy timeout, one connection per process. Calls
/// queue for the connection before they take a blocking thread, so that a fleet of hundreds of
/// members uses one such thread at a time rather than hundreds waiting on a lock.
pub struct Sqlite {
    path: PathBuf,
    conn: Arc<tokio::sync::Mutex<rusqlite::Connection>>,
}

impl Sqlite {
    /// Opens (creating it and its directory, 0700, when missing) the journal file at `path`.
    pub async fn open(path: &Path) -> Result<Sqlite, JournalError> {
        let path = path.to_path_buf();
        let opened = path.clone();
        let conn = tokio::task::spawn_blocking(move || open_sqlite(&opened))
            .await
            .map_err(|e| JournalError::database(&path.display().to_string(), "opening", e))??;
        Ok(Sqlite {
            path,
            conn: Arc::new(tokio::sync::Mutex::new(conn)),
        })
    }

    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, JournalError> {
        let mut conn = self.conn.clone().lock_owned().await;
        let path = self.path.clone();
        let outcome = tokio::task::spawn_blocking(move || f(&mut conn))
            .await
            .map_err(|e| JournalError::database(&self.describe(), "a query", e))?;
        outcome.map_err(|e| sqlite_error(&path, e))
    }
}

fn open_sqlite(path: &Path) -> Result<rusqlite::Connection, JournalError> {
    if let Err(crate::files::FileError::NotRegular { what, .. }) = crate::files::check_regular(path)
    {
        return Err(JournalError::NotAFile {
            journal: path.display().to_string(),
            what,
        });
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.is_dir() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| {
                    let what = format!("creating {}", dir.display());
                    JournalError::database(&path.display().to_string(), &what, e)
                })?;
        }
    }
    // Mode 0600 (SQLite would make it 0644, and it names hosts, users and errors); SQLite gives
    // its -wal and -shm files the same mode.
    crate::files::create_private(path).map_err(|e| {
        let journal = path.display().to_string();
        if e.kind() == std::io::ErrorKind::PermissionDenied {
            JournalError::ReadOnly { journal }
        } else {
            JournalError::database(&journal, "creating the file", e)
        }
    })?;
    let conn = rusqlite::Connection::open(path).map_err(|e| sqlite_error(path, e))?;
    conn.busy_timeout(SQLITE_BUSY_TIMEOUT)
        .map_err(|e| sqlite_error(path, e))?;
    // Reading the mode reads the file: a file that is not a database fails here.
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .map_err(|e| sqlite_error(path, e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        use backon::BlockingRetryable as _;
        let switch = || conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get::<_, String>(0));
        switch
            .retry(
                backon::ConstantBuilder::default()
                    .with_delay(WAL_SWITCH_PAUSE)
                    .with_max_times(WAL_SWITCH_RETRIES),
            )
            .sleep(std::thread::sleep)
            .when(|e| e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy))
            .call()
            .map_err(|e| sqlite_error(path, e))?;
    }
    conn.execute_batch("PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;")
        .map_err(|e| sqlite_error(path, e))?;
    Ok(conn)
}

use std::os::unix::fs::DirBuilderExt;

/// SQLite's errors, with the ones a user can fix said in words.
fn sqlite_error(path: &Path, e: rusqlite::Error) -> JournalError {
    use rusqlite::ErrorCode;
    let journal = path.display().to_string();
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => JournalError::NotADatabase { journal },
        Some(ErrorCode::DatabaseCorrupt) | Some(ErrorCode::SystemIoFailure) => {
            JournalError::Damaged {
                journal,
                source: Box::new(e),
            }
        }
        Some(ErrorCode::ReadOnly)
        | Some(ErrorCode::CannotOpen)
        | Some(ErrorCode::PermissionDenied)
            if !writable(path) =>
        {
            JournalError::ReadOnly { journal }
        }
        _ => JournalError::database(&journal, "SQLite", e),
    }
}

/// Whether this process may write the file (or create it in its directory).
fn writable(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let probe = if path.exists() {
        path.to_path_buf()
    } else {
        path.parent().map(Path::to_path_buf).unwrap_or_default()
    };
    let Ok(c) = std::ffi::CString::new(probe.as_os_str().as_bytes()) else {
        return false;
    };
    let dir_ok = path.parent().is_none_or(|dir| {
        std::ffi::CString::new(dir.as_os_str().as_bytes())
            .is_ok_and(|d| unsafe { libc::access(d.as_ptr(), libc::W_OK) } == 0)
    });
    // SAFETY: `c` is a NUL-terminated path that outlives the call.
    dir_ok && unsafe { libc::access(c.as_ptr(), libc::W_OK) } == 0
}

fn sqlite_params(params: Vec<Param>) -> Vec<rusqlite::types::Value> {
    use rusqlite::types::Value;
    params
        .into_iter()
        .map(|p| match p {
            Param::Int(Some(n)) => Value::Integer(n),
            Param::Text(Some(s)) => Value::Text(s),
            Param::Int(None) | Param::Text(None) => Value::Null,
        })
        .collect()
}

/// `$1` placeholders as SQLite's numbered `?1`.
fn sqlite_sql(sql: &str) -> String {
    sql.replace('$', "?")
}

#[async_trait::async_trait]
impl Store for Sqlite {
    async fn execute(&self, sql: &str, params: Vec<Param>) -> Result<u64, JournalError> {
        let sql = sqlite_sql(sql);
        self.with(move |conn| {
            let n = conn.execute(&sql, rusqlite::params_from_iter(sqlite_params(params)))?;
            Ok(n as u64)
        })
        .await
    }

    async fn query(&self, sql: &str, params: Vec<Param>) -> Result<Vec<Row>, JournalError> {
        let sql = sqlite_sql(sql);
        self.with(move |conn| {
            let mut statement = conn.prepare(&sql)?;
            let names: Arc<[String]> = (statement.column_names())
                .map(|name| name.to_string())
                .collect();
            let columns = names.len();
            let rows =
                statement.query_map(rusqlite::params_from_iter(sqlite_params(params)), |row| {
                    (0..columns)
                        .map(|i| {
                            Ok(match row.get_ref(i)? {
                                rusqlite::types::ValueRef::Integer(n) => Cell::Int(n),
                                rusqlite::types::ValueRef::Text(t) => {
                                    Cell::Text(String::from_utf8_lossy(t).into_owned())
                                }
                                _ => Cell::Null,
                            })
                        })
                        .collect::<rusqlite::Result<Vec<Cell>>>()
                        .map(|cells| Row::new(names.clone(), cells))
                })?;
            rows.collect()
        })
        .await
    }

    async fn batch(&self, sql: &str) -> Result<(), JournalError> {
        let sql = sql.to_string();
        self.with(move |conn| conn.execute_batch(&sql)).await
    }

    fn begin_exclusive(&self) -> String {
        "BEGIN IMMEDIATE".into()
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}

/// The PostgreSQL journal: one connection per process, TLS (rustls, the web's root
/// certificates) when the server offers it or `sslmode=require` asks for it.
pub struct Postgres {
    client: tokio_postgres::Client,
    shown: String,
}

impl Postgres {
    /// Connects to `url` (`postgres://user:password@host:port/database?sslmode=...`).
    pub async fn connect(url: &str) -> Result<Postgres, JournalError> {
        let shown = redact_url(url);
        let unreachable = |message: String| JournalError::Unreachable {
            journal: shown.clone(),
            message,
        };
        let mut config: tokio_postgres::Config =
            url.parse()
                .map_err(|e: tokio_postgres::Error| JournalError::BadUrl {
                    journal: shown.clone(),
                    message: e.to_string(),
                })?;
        config.connect_timeout(POSTGRES_CONNECT_TIMEOUT);
        config.application_name("nodeup");
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let tls_config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| unreachable(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls_config);
        let (client, connection) = config
            .connect(tls)
            .await
            .map_err(|e| unreachable(crate::error_chain(&e)))?;
        let journal = shown.clone();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!("journal {journal}: connection lost: {e}");
            }
        });
        Ok(Postgres { client, shown })
    }

    fn fail(&self, e: tokio_postgres::Error) -> JournalError {
        JournalError::database(&self.shown, "PostgreSQL", e)
    }
}

/// A database URL without its password (`postgres://user:***@host/db`).
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("***"));
            }
            // libpq also takes the password as a query parameter (`?password=...`).
            let pairs: Vec<(String, String)> = parsed
                .query_pairs()
                .map(|(k, v)| {
                    let secret = k.eq_ignore_ascii_case("password");
                    (
                        k.into_owned(),
                        if secret { "***".into() } else { v.into_owned() },
                    )
                })
                .collect();
            if !pairs.is_empty() {
                parsed.query_pairs_mut().clear().extend_pairs(pairs);
            }
            parsed.to_string()
        }
        // Not a URL: a key=value string, shown without any password=... value.
        Err(_) => url
            .split_whitespace()
            .map(|part| {
                if part.to_ascii_lowercase().starts_with("password=") {
                    "password=***"
                } else {
                    part
                }
            })
            .collect::<Vec<_>>()
            .join(" "),
    }
}

type PgParam = Box<dyn tokio_postgres::types::ToSql + Sync + Send>;

fn postgres_params(params: Vec<Param>) -> Vec<PgParam> {
    params
        .into_iter()
        .map(|p| -> PgParam {
            match p {
                Param::Int(v) => Box::new(v),
                Param::Text(v) => Box::new(v),
            }
        })
        .collect()
}

fn postgres_cell(row: &tokio_postgres::Row, i: usize) -> Result<Cell, tokio_postgres::Error> {
    use tokio_postgres::types::Type;
    let column_type = row.columns()[i].type_().clone();
    Ok(if column_type == Type::INT8 {
        row.try_get::<_, Option<i64>>(i)?
            .map_or(Cell::Null, Cell::Int)
    } else if column_type == Type::INT4 {
        row.try_get::<_, Option<i32>>(i)?
            .map_or(Cell::Null, |n| Cell::Int(n.into()))
    } else {
        row.try_get::<_, Option<String>>(i)?
            .map_or(Cell::Null, Cell::Text)
    })
}

#[async_trait::async_trait]
impl Store for Postgres {
    async fn execute(&self, sql: &str, params: Vec<Param>) -> Result<u64, JournalError> {
        let params = postgres_params(params);
        let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params
            .iter()
            .map(|p| p.as_ref() as &(dyn tokio_postgres::types::ToSql + Sync))
            .collect();
        self.client
            .execute(sql, &refs)
            .await
            .map_err(|e| self.fail(e))
    }

    async fn query(&self, sql: &str, params: Vec<Param>) -> Result<Vec<Row>, JournalError> {
        let params = postgres_params(params);
        let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params
            .iter()
            .map(|p| p.as_ref() as &(dyn tokio_postgres::types::ToSql + Sync))
            .collect();
        let rows = self
            .client
            .query(sql, &refs)
            .await
            .map_err(|e| self.fail(e))?;
        let Some(first) = rows.first() else {
            return Ok(Vec::new());
        };
        let names: Arc<[String]> = first
            .columns()
            .iter()
            .map(|c| c.name().to_string())
            .collect();
        rows.iter()
            .map(|row| {
                (0..row.len())
                    .map(|i| postgres_cell(row, i))
                    .collect::<Result<Vec<_>, _>>()
                    .map(|cells| Row::new(names.clone(), cells))
                    .map_err(|e| self.fail(e))
            })
            .collect()
    }

    async fn batch(&self, sql: &str) -> Result<(), JournalError> {
        self.client
            .batch_execute(sql)
            .await
            .map_err(|e| self.fail(e))
    }

    fn begin_exclusive(&self) -> String {
        format!("BEGIN; SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})")
    }

    fn describe(&self) -> String {
        self.shown.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_password() {
        assert_eq!(
            redact_url("postgres://deploy:s3cret@db.example:5432/nodeup"),
            "postgres://deploy:***@db.example:5432/nodeup"
        );
        assert_eq!(
            redact_url("host=db user=deploy password=s3cret dbname=nodeup"),
            "host=db user=deploy password=*** dbname=nodeup"
        );
        assert_eq!(redact_url("postgres://db/nodeup"), "postgres://db/nodeup");
    }

    #[test]
    fn placeholders_for_sqlite() {
        assert_eq!(sqlite_sql("a = $1 AND b = $12"), "a = ?1 AND b = ?12");
    }
}
