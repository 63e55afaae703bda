//! Dynamic credentials from OpenBao all the way into the Postgres pool:
//! several workers query through rotations, and none of their queries fails.
#![cfg(feature = "vault")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use common::{Bao, Cleanup, config_dir};
use mamey_core::Service;
use mamey_core::credentials::CredentialSources;
use mamey_persistence::postgres::{PgPool, Postgres};
use mamey_secrets::Secrets;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_on_dynamic_credentials_answers_every_query_across_rotations() {
    let Some(bao) = Bao::connect().await else {
        return;
    };
    let mut cleanup = Cleanup::new(&bao);
    // Leases of 2 s, at most 4 s: a rotation every ~2-3 s.
    let (mount, role) = common::database_engine(&bao, &mut cleanup, 2, 4).await;
    let dir = config_dir(&format!(
        "[secrets]\nbackend = \"vault\"\n[secrets.vault]\naddress = \"{}\"\nauth = {{ method = \"token\", token = \"mamey-dev-root\" }}\nrenew_at = 0.5\n\
         [secrets.vault.database.orders]\nmount = \"{mount}\"\nrole = \"{role}\"\n\n\
         [postgres]\nurl = \"{}\"\ncredentials = \"orders\"\nmax_connections = 4\n",
        common::ADDRESS,
        common::POSTGRES_URL,
    ));
    let service = Service::builder("dynamic-pool")
        .config_dir(dir.path())
        .handle_signals(false)
        .plugin(Secrets::new())
        .plugin(Postgres::new())
        .build()
        .await;
    cleanup
        .around(async {
            let service = service.unwrap();
            let pool: PgPool = service.resources().get().unwrap();
            let sources: CredentialSources = service.resources().get().unwrap();
            let mut orders = sources.get("orders").unwrap();
            let running = service.start().await.unwrap();

            let stop = Arc::new(AtomicBool::new(false));
            let (queries, failures) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
            let workers: Vec<_> = (0..6)
                .map(|_| {
                    let (pool, stop) = (pool.clone(), Arc::clone(&stop));
                    let (queries, failures) = (Arc::clone(&queries), Arc::clone(&failures));
                    tokio::spawn(async move {
                        let mut users = std::collections::BTreeSet::new();
                        while !stop.load(Ordering::Relaxed) {
                            let result: Result<String, _> =
                                sqlx::query_scalar("SELECT current_user::text")
                                    .fetch_one(&pool)
                                    .await;
                            queries.fetch_add(1, Ordering::Relaxed);
                            match result {
                                Ok(user) => {
                                    users.insert(user);
                                }
                                Err(error) => {
                                    failures.fetch_add(1, Ordering::Relaxed);
                                    eprintln!("query failed: {error}");
                                }
                            }
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                        users
                    })
                })
                .collect();

            // Two rotations, each within the lease's maximum.
            let mut issued = vec![orders.borrow_and_update().username.clone()];
            for _ in 0..2 {
                tokio::time::timeout(Duration::from_secs(8), orders.changed())
                    .await
                    .expect("new credentials before the maximum time to live")
                    .unwrap();
                issued.push(orders.borrow_and_update().username.clone());
            }
            // Let the pool move onto the last pair before stopping.
            let last = issued.last().cloned().unwrap();
            common::eventually(10, "the pool to use the latest credentials", || {
                let pool = pool.clone();
                let last = last.clone();
                async move {
                    let user: String = sqlx::query_scalar("SELECT current_user::text")
                        .fetch_one(&pool)
                        .await
                        .ok()?;
                    (user == last).then_some(())
                }
            })
            .await;
            stop.store(true, Ordering::Relaxed);
            let mut used = std::collections::BTreeSet::new();
            for worker in workers {
                used.extend(worker.await.unwrap());
            }
            running.stop().await.unwrap();

            let (queries, failures) = (
                queries.load(Ordering::Relaxed),
                failures.load(Ordering::Relaxed),
            );
            assert_eq!(failures, 0, "{failures} of {queries} queries failed");
            assert!(queries > 100, "only {queries} queries");
            assert!(
                used.len() >= 2,
                "the pool served as {used:?}, issued {issued:?}"
            );
            assert!(
                used.iter().all(|u| issued.contains(u)),
                "used {used:?}, issued {issued:?}"
            );
        })
        .await;
}
