//! The distributed system — every service its own process, two replicas of
//! boards and notifications — over the real servers (Postgres, RabbitMQ,
//! Redis, etcd, OpenBao), driven through the gateway. It also kills a
//! boards replica and closes every RabbitMQ connection mid-scenario.
//!
//! Needs the servers (`scripts/services.sh up`, `up etcd`, `up openbao`);
//! without them it skips, unless `MAMEY_REQUIRE_SERVICES=1`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod scenario;

use std::collections::BTreeMap;
use std::time::Duration;

use http::StatusCode;
use mamey_core::BoxError;
use serde_json::{Value, json};
use teamhub::local::{LocalSystem, Options};

/// Whether every server answers on its port; else why not.
fn servers() -> Result<(), String> {
    for (name, port) in [
        ("PostgreSQL", 5432),
        ("RabbitMQ", 5672),
        ("Redis", 6379),
        ("etcd", 2379),
        ("OpenBao", 8200),
    ] {
        let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        if std::net::TcpStream::connect_timeout(&address, Duration::from_secs(1)).is_err() {
            return Err(format!("{name} is not listening on 127.0.0.1:{port}"));
        }
    }
    Ok(())
}

/// Board events' sequence numbers, per board, in the order a socket got
/// them.
fn sequences(received: &[Value]) -> BTreeMap<i64, Vec<i64>> {
    let mut per_board: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for n in received {
        if let (Some(board), Some(seq)) = (n["boardId"].as_i64(), n["seq"].as_i64()) {
            per_board.entry(board).or_default().push(seq);
        }
    }
    per_board
}

/// Every connection to this run's databases is made by a login role that
/// OpenBao issued (`v-…`), a member of the role that owns the database —
/// none by the admin user.
async fn database_users_come_from_openbao(run: &str) -> Result<(), BoxError> {
    use sqlx::Connection;
    let admin = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let mut connection = sqlx::PgConnection::connect(&admin).await?;
    let sessions: Vec<(String, String, bool)> = sqlx::query_as(
        "SELECT datname::text, usename::text, pg_has_role(usename, datname, 'MEMBER') \
         FROM pg_stat_activity WHERE datname LIKE $1",
    )
    .bind(format!("teamhub\\_{run}\\_%"))
    .fetch_all(&mut connection)
    .await?;
    connection.close().await?;
    let databases: std::collections::BTreeSet<&str> =
        sessions.iter().map(|(d, _, _)| d.as_str()).collect();
    assert_eq!(databases.len(), 5, "sessions: {sessions:?}");
    for (database, user, member) in &sessions {
        assert!(
            user.starts_with("v-") && *member,
            "{database} is used by {user}, not a role OpenBao issued for it"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_distributed_system_survives_a_crash_and_a_broker_disconnect() -> Result<(), BoxError> {
    if let Err(why) = servers() {
        assert!(
            std::env::var("MAMEY_REQUIRE_SERVICES").as_deref() != Ok("1"),
            "MAMEY_REQUIRE_SERVICES=1 but {why}"
        );
        eprintln!("skipped: {why}");
        return Ok(());
    }
    let run = scenario::run_id();
    let log_dir = std::env::temp_dir().join(format!("teamhub-distributed-{run}"));
    let options = Options {
        exe: env!("CARGO_BIN_EXE_teamhub").into(),
        replicas: 2,
        gateway_port: 0,
        run_id: Some(run.clone()),
        log_dir: log_dir.clone(),
        env: vec![
            ("MAMEY__LOGGING__LEVEL".into(), "info,sqlx=warn".into()),
            // A crashed replica's registration lapses quickly.
            ("MAMEY__DISCOVERY__ETCD__LEASE_TTL".into(), "3s".into()),
        ],
    };
    let mut system = LocalSystem::start(&options).await?;
    let outcome = async {
        let mut world = scenario::set_up(system.gateway()).await?;
        scenario::strangers_are_kept_out(&world).await?;
        scenario::a_new_card_is_assigned(&mut world).await?;

        // A boards replica crashes: requests keep succeeding through the
        // other.
        system.kill_one(teamhub::boards::NAME).await?;
        let as_a = world.as_a();
        for i in 0..20 {
            as_a.get(&format!("/api/boards/boards/{}", world.board))
                .await?;
            as_a.create(
                &format!("/api/boards/boards/{}/cards", world.board),
                &json!({ "title": format!("after the crash {i}") }),
            )
            .await?;
        }

        // Every RabbitMQ connection is closed: nothing is lost.
        let closed = tokio::process::Command::new("rabbitmqctl")
            .args(["close_all_connections", "teamhub test"])
            .output()
            .await?;
        assert!(closed.status.success(), "rabbitmqctl: {closed:?}");
        scenario::children_drive_their_parent(&world).await?;
        scenario::deleting_a_card_settles_its_parent(&mut world).await?;
        scenario::chat_is_live_and_pages(&mut world).await?;
        scenario::the_feed_lists_it(&world).await?;

        // Every card made after the crash reached both sockets, and each
        // socket got every board's events in order.
        let cards: Vec<i64> = as_a
            .get(&format!("/api/boards/boards/{}", world.board))
            .await?["cards"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["id"].as_i64())
            .collect();
        for live in [&mut world.a_live, &mut world.b_live] {
            for card in &cards {
                if !live
                    .received()
                    .iter()
                    .any(|n| scenario::is_about(n, "card_created", *card))
                {
                    live.until(scenario::WAIT, |n| {
                        scenario::is_about(n, "card_created", *card)
                    })
                    .await?;
                }
            }
            for (board, seqs) in sequences(live.received()) {
                assert!(
                    seqs.windows(2).all(|w| w[0] < w[1]),
                    "board {board}'s events out of order or repeated: {seqs:?}"
                );
            }
        }
        let answer = world
            .api
            .call(http::Method::GET, "/api/boards/workspaces/1", None)
            .await?;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
        database_users_come_from_openbao(&run).await?;
        Ok::<_, BoxError>(())
    }
    .await;
    system.stop().await;
    if outcome.is_ok() {
        let _ = std::fs::remove_dir_all(&log_dir);
    } else {
        eprintln!("process logs kept in {}", log_dir.display());
    }
    outcome
}
