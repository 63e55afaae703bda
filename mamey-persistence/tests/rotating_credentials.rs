//! The Postgres plug-in with rotating credentials (`postgres.credentials`)
//! against a real server (`DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`; skipped when it is away
//! unless `MAMEY_REQUIRE_SERVICES=1`). The test plays the issuer — what
//! mamey-secrets does with a vault's dynamic credentials: it creates login
//! roles, hands them out one after the other through a
//! `CredentialSources` source, and revokes each old role once the pool has
//! moved on — while tasks query without pause. Also what
//! `postgres.credentials` and `postgres.password` do to the configuration.
#![cfg(feature = "postgres")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use common::eventually;
use common::pg::{Schema, pool};
use mamey_core::credentials::{CredentialSources, Credentials};
use mamey_core::{BoxError, InitContext, Plugin, Service, ServiceBuilder};
use mamey_persistence::postgres::{PgPool, Postgres};
use sqlx::ConnectOptions;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The issuer's part (mamey-secrets' `Secrets` with a vault): provides the
/// sources.
struct Issuer(CredentialSources);

impl Plugin for Issuer {
    fn name(&self) -> &'static str {
        "issuer"
    }

    async fn init(&mut self, ctx: &mut InitContext<'_>) -> Result<(), BoxError> {
        ctx.provide(self.0.clone())?;
        Ok(())
    }
}

/// A service for one test: no signal handling, no configuration files,
/// `vars` as its whole environment.
fn test_service<K: Into<String>, V: Into<String>>(
    vars: impl IntoIterator<Item = (K, V)>,
) -> ServiceBuilder {
    Service::builder("rotation-test")
        .handle_signals(false)
        .config_dir("/nonexistent-mamey-config")
        .env_vars(vars)
}

async fn build_error(builder: ServiceBuilder) -> String {
    builder.build().await.map(|_| ()).unwrap_err().to_string()
}

/// The plug-in under test: with the outbox when it is built, so that its
/// listener, which holds a connection of its own, follows the rotations
/// too.
fn postgres() -> Postgres {
    #[cfg(feature = "outbox")]
    return Postgres::new().outbox();
    #[cfg(not(feature = "outbox"))]
    Postgres::new()
}

async fn execute(pool: &PgPool, statement: &str) {
    sqlx::query(statement)
        .execute(pool)
        .await
        .unwrap_or_else(|e| panic!("{statement}: {e}"));
}

/// Connections the server has open for `role`.
async fn connections_of(admin: &PgPool, role: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE usename = $1")
        .bind(role)
        .fetch_one(admin)
        .await
        .unwrap()
}

/// One unit of work as `pool`'s current user, recorded in `table`: a
/// statement, or (`slow`) a transaction that holds its connection a while,
/// so that rotations happen while it is in flight. Returns the user.
async fn work(pool: &PgPool, table: &str, slow: bool) -> Result<String, sqlx::Error> {
    let insert = format!("INSERT INTO {table} (role) VALUES (current_user) RETURNING role");
    if !slow {
        return sqlx::query_scalar(&insert).fetch_one(pool).await;
    }
    let mut tx = pool.begin().await?;
    let role: String = sqlx::query_scalar(&insert).fetch_one(&mut *tx).await?;
    sqlx::query("SELECT pg_sleep(0.02)")
        .execute(&mut *tx)
        .await?;
    sqlx::query_scalar::<_, String>(&insert)
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(role)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queries_never_fail_while_the_credentials_rotate() {
    let Some(admin) = pool().await else { return };
    let mut schema = Schema::new(&admin).await;
    let name = schema.name.clone();
    let hits = schema.table("hits");
    execute(
        &admin,
        &format!("CREATE TABLE {hits} (id bigserial PRIMARY KEY, role text NOT NULL)"),
    )
    .await;
    #[cfg(feature = "outbox")]
    let outbox_table = {
        // Made by the test: the roles may use the table, not create it.
        let table = schema.table("mamey_outbox");
        mamey_persistence::postgres::PgOutbox::new(admin.clone(), &table)
            .create_table()
            .await
            .unwrap();
        table
    };

    // The issuer's roles: the first, and four rotations.
    let id = &mamey_core::new_id()[..8];
    let roles: Vec<String> = (1..=5).map(|n| format!("rot_{id}_{n}")).collect();
    for role in &roles {
        // Dropped at the end, also when the test fails (after the schema,
        // and with it every right on its objects).
        schema.also_at_the_end(format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'"
        ));
        schema.also_at_the_end(format!("DROP ROLE IF EXISTS \"{role}\""));
        for statement in [
            format!("CREATE ROLE \"{role}\" LOGIN PASSWORD 'pw-{role}'"),
            format!("GRANT USAGE ON SCHEMA {name} TO \"{role}\""),
            format!(
                "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {name} TO \"{role}\""
            ),
            format!("GRANT USAGE ON ALL SEQUENCES IN SCHEMA {name} TO \"{role}\""),
        ] {
            execute(&admin, &statement).await;
        }
    }
    let issue = |role: &str| Credentials::new(role, format!("pw-{role}"));

    let (issuer, source) = watch::channel(issue(&roles[0]));
    #[cfg_attr(not(feature = "outbox"), allow(unused_mut))]
    let mut vars = vec![
        ("MAMEY__POSTGRES__URL", schema.url()),
        ("MAMEY__POSTGRES__CREDENTIALS", "orders-db".to_owned()),
        ("MAMEY__POSTGRES__MAX_CONNECTIONS", "8".to_owned()),
    ];
    #[cfg(feature = "outbox")]
    vars.push(("MAMEY__POSTGRES__OUTBOX_TABLE", outbox_table));
    let service = test_service(vars)
        .plugin(Issuer(
            CredentialSources::new().with_source("orders-db", source),
        ))
        .plugin(postgres())
        .build()
        .await
        .unwrap();
    let pool = service.resources().get::<PgPool>().unwrap();
    let running = service.start().await.unwrap();

    // Work without pause, from several tasks (stopped also when the test
    // fails, before the schema is dropped).
    let stop = CancellationToken::new();
    let _stop_on_failure = stop.clone().drop_guard();
    let used = Arc::new(Mutex::new(BTreeSet::<String>::new()));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let done = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for worker in 0..6 {
        let (pool, hits, stop) = (pool.clone(), hits.clone(), stop.clone());
        let (used, failures, done) = (used.clone(), failures.clone(), done.clone());
        workers.push(tokio::spawn(async move {
            while !stop.is_cancelled() {
                match work(&pool, &hits, worker % 2 == 1).await {
                    Ok(role) => {
                        used.lock().unwrap().insert(role);
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(error) => failures.lock().unwrap().push(error.to_string()),
                }
            }
        }));
    }
    let first = roles[0].clone();
    eventually("work as the first role", async || {
        used.lock().unwrap().contains(&first)
    })
    .await;

    for pair in roles.windows(2) {
        let (old, new) = (&pair[0], &pair[1]);
        issuer.send_replace(issue(new));

        // The pool has moved on: a fresh connection is the new role's, the
        // workers use it, and no connection of the old role is left — none
        // idle in the pool, none of the outbox listener.
        eventually(&format!("a fresh connection as {new}"), async || {
            let mut connection = pool.acquire().await.unwrap();
            let user: String = sqlx::query_scalar("SELECT current_user::text")
                .fetch_one(&mut *connection)
                .await
                .unwrap();
            user == *new
        })
        .await;
        eventually(&format!("the workers to work as {new}"), async || {
            used.lock().unwrap().contains(new)
        })
        .await;
        eventually(&format!("no connection as {old} left"), async || {
            connections_of(&admin, old).await == 0
        })
        .await;

        // The issuer revokes the old credentials: any connection still
        // using them, or opened with them, would fail from now on.
        for statement in [
            format!("ALTER ROLE \"{old}\" NOLOGIN"),
            format!("REVOKE ALL ON ALL TABLES IN SCHEMA {name} FROM \"{old}\""),
            format!("REVOKE ALL ON ALL SEQUENCES IN SCHEMA {name} FROM \"{old}\""),
            format!("REVOKE USAGE ON SCHEMA {name} FROM \"{old}\""),
        ] {
            execute(&admin, &statement).await;
        }
        let terminated: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1",
        )
        .bind(old)
        .fetch_all(&admin)
        .await
        .unwrap();
        assert!(
            terminated.is_empty(),
            "{} connection(s) as {old} reopened after the pool moved on",
            terminated.len()
        );
    }

    // Work goes on after the last revocation.
    let so_far = done.load(Ordering::Relaxed);
    eventually("more work after the last revocation", async || {
        done.load(Ordering::Relaxed) >= so_far + 50
    })
    .await;
    stop.cancel();
    for worker in workers {
        worker.await.unwrap();
    }
    running.stop().await.unwrap();

    let recorded: Vec<String> =
        sqlx::query_scalar(&format!("SELECT DISTINCT role FROM {hits} ORDER BY role"))
            .fetch_all(&admin)
            .await
            .unwrap();
    let failures = std::mem::take(&mut *failures.lock().unwrap());
    assert!(
        failures.is_empty(),
        "{} of {} units of work failed, e.g. {}",
        failures.len(),
        done.load(Ordering::Relaxed) + failures.len() as u64,
        failures[0]
    );
    let used = std::mem::take(&mut *used.lock().unwrap());
    let issued: BTreeSet<String> = roles.iter().cloned().collect();
    assert_eq!(used, issued, "every role worked, and no other");
    assert_eq!(recorded, roles);
}

#[tokio::test]
async fn an_unknown_source_is_a_config_error_naming_the_sources() {
    let (_issuer, source) = watch::channel(Credentials::new("v-orders-1", "pw"));
    let error = build_error(
        test_service([("MAMEY__POSTGRES__CREDENTIALS", "billing-db")])
            .plugin(Issuer(
                CredentialSources::new().with_source("orders-db", source),
            ))
            .plugin(Postgres::new()),
    )
    .await;
    assert!(error.contains("postgres.credentials"), "{error}");
    assert!(error.contains("MAMEY__POSTGRES__CREDENTIALS"), "{error}");
    assert!(error.contains("`billing-db`"), "{error}");
    assert!(error.contains("available: orders-db"), "{error}");
}

#[tokio::test]
async fn credentials_without_their_issuer_say_to_add_it() {
    let error = build_error(
        test_service([("MAMEY__POSTGRES__CREDENTIALS", "orders-db")]).plugin(Postgres::new()),
    )
    .await;
    assert!(error.contains("CredentialSources"), "{error}");
    assert!(error.contains("`Secrets`"), "{error}");
    assert!(error.contains("before `postgres`"), "{error}");
}

#[tokio::test]
async fn a_password_with_credentials_is_a_config_error() {
    let (_issuer, source) = watch::channel(Credentials::new("v-orders-1", "pw"));
    let error = build_error(
        test_service([
            ("MAMEY__POSTGRES__CREDENTIALS", "orders-db"),
            ("MAMEY__POSTGRES__PASSWORD", "hunter2"),
        ])
        .plugin(Issuer(
            CredentialSources::new().with_source("orders-db", source),
        ))
        .plugin(Postgres::new()),
    )
    .await;
    assert!(error.contains("postgres.password"), "{error}");
    assert!(!error.contains("hunter2"), "{error}");
}

/// Under the local server's trust authentication any password connects, so
/// this checks the pool's options: `postgres.password` replaced the URL's.
#[tokio::test]
async fn postgres_password_overrides_the_urls() {
    let Some(_admin) = pool().await else { return };
    let url = common::pg::url().replacen("postgres@", "postgres:fromurl@", 1);
    let service = test_service([
        ("MAMEY__POSTGRES__URL", url.as_str()),
        ("MAMEY__POSTGRES__PASSWORD", "fromconfig"),
    ])
    .plugin(Postgres::new())
    .build()
    .await
    .unwrap();
    let pool = service.resources().get::<PgPool>().unwrap();
    let options = pool.connect_options().to_url_lossy().to_string();
    assert!(
        options.contains(":fromconfig@"),
        "the password from the configuration"
    );
    assert!(!options.contains("fromurl"), "not the URL's");
    pool.close().await;
}
