//! The journal's tables, as numbered migrations: version N of the schema is the first N entries
//! of [`MIGRATIONS`]. The same SQL runs in SQLite and PostgreSQL (integers are BIGINT, times are
//! Unix milliseconds, everything else is TEXT).

use super::store::{Param, Store};
use super::JournalError;

/// The table that holds the schema version.
const META: &str =
    "CREATE TABLE IF NOT EXISTS nodeup_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)";

/// Each migration, in order.
pub const MIGRATIONS: &[&str] = &[
    // 1: runs, the nodes and hosts they touched, each step's result, and name locks.
    "CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        command TEXT NOT NULL,
        stepfile TEXT,
        stepfile_hash TEXT,
        host TEXT NOT NULL,
        pid_space TEXT NOT NULL,
        pid BIGINT NOT NULL,
        pid_start BIGINT NOT NULL,
        started BIGINT NOT NULL,
        heartbeat BIGINT NOT NULL,
        finished BIGINT,
        state TEXT NOT NULL
    );
    CREATE TABLE nodes (
        run_id TEXT NOT NULL REFERENCES runs(id),
        seq BIGINT NOT NULL,
        provider TEXT,
        settings TEXT,
        location TEXT NOT NULL,
        name TEXT NOT NULL,
        provider_id TEXT,
        addresses TEXT,
        login_user TEXT,
        state TEXT NOT NULL,
        step BIGINT,
        steps BIGINT,
        error TEXT,
        created BIGINT NOT NULL,
        updated BIGINT NOT NULL,
        PRIMARY KEY (run_id, seq)
    );
    CREATE INDEX nodes_state ON nodes (state);
    CREATE TABLE steps (
        run_id TEXT NOT NULL,
        seq BIGINT NOT NULL,
        idx BIGINT NOT NULL,
        kind TEXT NOT NULL,
        status TEXT NOT NULL,
        exit_status BIGINT,
        duration_ms BIGINT NOT NULL,
        note TEXT,
        finished BIGINT NOT NULL
    );
    CREATE INDEX steps_node ON steps (run_id, seq);
    CREATE TABLE locks (
        provider TEXT NOT NULL,
        location TEXT NOT NULL,
        name TEXT NOT NULL,
        run_id TEXT NOT NULL,
        since BIGINT NOT NULL,
        PRIMARY KEY (provider, location, name)
    );",
];

/// The schema version this nodeup writes.
pub fn current() -> i64 {
    MIGRATIONS.len() as i64
}

async fn version(store: &dyn Store) -> Result<i64, JournalError> {
    let rows = store
        .query(
            "SELECT value FROM nodeup_meta WHERE key = $1",
            vec![Param::from("schema_version")],
        )
        .await?;
    let text = rows.first().and_then(|r| r.text("value"));
    Ok(text.and_then(|v| v.parse().ok()).unwrap_or(0))
}

/// Brings the schema up to date, inside a transaction no other nodeup runs at the same time;
/// refuses a journal written by a newer nodeup.
pub async fn migrate(store: &dyn Store) -> Result<(), JournalError> {
    store.batch(&store.begin_exclusive()).await?;
    let outcome = apply(store).await;
    let end = if outcome.is_ok() {
        "COMMIT"
    } else {
        "ROLLBACK"
    };
    let ended = store.batch(end).await;
    outcome.and(ended)
}

async fn apply(store: &dyn Store) -> Result<(), JournalError> {
    store.batch(META).await?;
    let found = version(store).await?;
    if found > current() {
        return Err(JournalError::Newer {
            journal: store.describe(),
            found,
            known: current(),
        });
    }
    for migration in &MIGRATIONS[found as usize..] {
        store.batch(migration).await?;
    }
    if found < current() {
        store
            .execute(
                "INSERT INTO nodeup_meta (key, value) VALUES ($1, $2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                vec!["schema_version".into(), current().to_string().into()],
            )
            .await?;
    }
    Ok(())
}
