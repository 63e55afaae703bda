//! A Postgres database for one test (`DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`), and what it made, removed
//! at the end.

use mamey_persistence::postgres::PgPool;

pub fn url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A pool on the test database, or `None` (the test skips) when Postgres is
/// down and `MAMEY_REQUIRE_SERVICES` is not set.
pub async fn pool() -> Option<PgPool> {
    match PgPool::connect(&url()).await {
        Ok(pool) => Some(pool),
        Err(error) if std::env::var("MAMEY_REQUIRE_SERVICES").as_deref() == Ok("1") => {
            panic!("Postgres is required (MAMEY_REQUIRE_SERVICES=1) but unreachable: {error}")
        }
        Err(error) => {
            eprintln!("SKIPPED: Postgres unreachable at {}: {error}", url());
            None
        }
    }
}

/// Runs its statements when dropped — also when the test fails — on a
/// connection of its own.
pub struct Cleanup(pub Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let statements = std::mem::take(&mut self.0);
        let cleaning = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                if let Ok(pool) = PgPool::connect(&url()).await {
                    for statement in statements {
                        let _ = sqlx::query(&statement).execute(&pool).await;
                    }
                    pool.close().await;
                }
            });
        });
        let _ = cleaning.join();
    }
}

/// A schema of this test's own, dropped with everything in it at the end.
pub struct Schema {
    pub name: String,
    _cleanup: Cleanup,
}

impl Schema {
    pub async fn new(pool: &PgPool) -> Self {
        let name = format!("it_{}", &mamey_core::new_id()[..8]);
        sqlx::query(&format!("CREATE SCHEMA {name}"))
            .execute(pool)
            .await
            .unwrap();
        let cleanup = Cleanup(vec![format!("DROP SCHEMA IF EXISTS {name} CASCADE")]);
        Self {
            name,
            _cleanup: cleanup,
        }
    }

    /// `schema.table`.
    pub fn table(&self, table: &str) -> String {
        format!("{}.{table}", self.name)
    }

    /// The test database's URL, with connections that use the schema
    /// first (so that sqlx's `_sqlx_migrations` table is the test's own).
    pub fn url(&self) -> String {
        let separator = if url().contains('?') { '&' } else { '?' };
        format!(
            "{}{separator}options=-c%20search_path%3D{}",
            url(),
            self.name
        )
    }

    /// Statements to run at the end, after the schema is dropped (e.g.
    /// `DROP ROLE`).
    pub fn also_at_the_end(&mut self, statement: String) {
        self._cleanup.0.push(statement);
    }
}
