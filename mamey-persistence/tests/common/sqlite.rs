//! A SQLite database file of one test's own, in a temporary directory
//! removed at the end.

use std::time::Duration;

use mamey_persistence::sqlite::SqlitePool;

pub struct Db {
    dir: tempfile::TempDir,
}

impl Db {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn url(&self) -> String {
        format!("sqlite://{}", self.dir.path().join("test.db").display())
    }

    /// A pool of its own on the file, as another process would have.
    pub async fn pool(&self) -> SqlitePool {
        let options = self
            .url()
            .parse::<sqlx::sqlite::SqliteConnectOptions>()
            .unwrap();
        SqlitePool::connect_with(
            options
                .create_if_missing(true)
                .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                .busy_timeout(Duration::from_secs(5)),
        )
        .await
        .unwrap()
    }
}
