//! Rotating credentials (`postgres.credentials`): the pool connects with
//! the current credentials of a named source — a vault's dynamic database
//! credentials, issued by the plug-in that provides
//! [`CredentialSources`] — and follows each rotation without failing work
//! in flight.
//!
//! How a rotation goes:
//!
//! 1. The issuer publishes new credentials; the old ones stay valid a while
//!    longer (a lease's grace), then the issuer revokes them.
//! 2. The follower task ([`RotatingCredentials::follow`], spawned at start)
//!    hands the pool the new credentials
//!    ([`Pool::set_connect_options`](sqlx::Pool::set_connect_options)), so
//!    every connection opened from then on uses them, and records the
//!    rotation's instant and the user it retired.
//! 3. The pool's hooks retire connections opened before that instant: an
//!    idle one is closed instead of being handed out (`before_acquire`); one
//!    checked out at the rotation finishes its work and is closed when
//!    released (`after_release`). The pool opens new connections in their
//!    place, with the new credentials. A connection whose opening began
//!    before the rotation and ended after it (`after_connect` asks it its
//!    user) serves the checkout it was opened for and is closed on release
//!    too. Nothing fails: no connection is cut under a query or a
//!    transaction.
//! 4. The outbox listener, which holds a connection of its own for as long
//!    as it listens, is told to reconnect; it takes a fresh connection from
//!    the pool and wakes the relay for anything staged meanwhile.
//!
//! So once the work in flight at a rotation has finished — well within the
//! old credentials' grace — no connection uses them any more.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use mamey_core::credentials::{CredentialSources, Credentials};
use mamey_core::{BoxError, InitContext};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use super::PgPool;

/// How far past a rotation connections still count as opened before it.
/// The pool stamps a connection's creation just after its `after_connect`
/// hook returns, and the hooks see its age a moment after sqlx measured
/// it: a thread paused in between would otherwise let a connection opened
/// with the old credentials look new. Connections opened in this margin
/// with the new credentials are merely replaced once.
const STRADDLE: Duration = Duration::from_millis(100);

/// Rotated-out user names remembered, to recognise a connection opened
/// with them (see [`Retirement::users`]).
const RETIRED_USERS: usize = 16;

/// `options` with the user and password of `credentials`.
pub(super) fn with_credentials(
    options: PgConnectOptions,
    credentials: &Credentials,
) -> PgConnectOptions {
    options
        .username(&credentials.username)
        .password(credentials.password.expose())
}

/// A pool's source of rotating credentials: what it connects with now, and
/// the rotations it has followed.
pub(super) struct RotatingCredentials {
    /// The source's name (`postgres.credentials`).
    name: String,
    source: watch::Receiver<Credentials>,
    /// `postgres.url`'s options, whose user and password each rotation
    /// replaces.
    base: PgConnectOptions,
    /// The credentials the pool opens connections with.
    current: Credentials,
    /// Shared with the pool's hooks.
    retirement: Arc<Mutex<Retirement>>,
}

impl fmt::Debug for RotatingCredentials {
    // `PgConnectOptions`'s own `Debug` prints the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RotatingCredentials")
            .field("name", &self.name)
            .field("username", &self.current.username)
            .finish_non_exhaustive()
    }
}

impl RotatingCredentials {
    /// The source `name` of the [`CredentialSources`] resource, to connect
    /// to `base` with.
    ///
    /// # Errors
    /// No plug-in before this one provides [`CredentialSources`] (the error
    /// says to add the issuer), or none of its sources is called `name` (a
    /// configuration error naming `postgres.credentials` and the sources
    /// there are).
    pub(super) fn new(
        ctx: &InitContext<'_>,
        name: &str,
        base: PgConnectOptions,
    ) -> Result<Self, BoxError> {
        let sources = ctx.resource::<CredentialSources>().map_err(|mut missing| {
            missing.hint = Some(
                "`postgres.credentials` names a source of rotating credentials: add the plug-in \
                 that issues them — `Secrets` from mamey-secrets, with \
                 `secrets.vault.database.<name>` — before `postgres`"
                    .into(),
            );
            missing
        })?;
        let Some(mut source) = sources.get(name) else {
            let names: Vec<&str> = sources.names().collect();
            let available = if names.is_empty() {
                "there are none".to_owned()
            } else {
                format!("available: {}", names.join(", "))
            };
            return Err(ctx
                .config()
                .invalid(
                    "postgres.credentials",
                    format!(
                        "expected the name of a credentials source; there is no `{name}` \
                         ({available})"
                    ),
                )
                .into());
        };
        let current = source.borrow_and_update().clone();
        Ok(Self {
            name: name.to_owned(),
            source,
            base,
            current,
            retirement: Arc::default(),
        })
    }

    /// The options to connect with: the URL's, with the current
    /// credentials.
    pub(super) fn options(&self) -> PgConnectOptions {
        with_credentials(self.base.clone(), &self.current)
    }

    /// `options` with the hooks that retire the connections opened before
    /// the latest rotation, or opened with rotated-out credentials.
    pub(super) fn retire_stale(&self, options: PgPoolOptions) -> PgPoolOptions {
        let (connected, acquiring, released) = (
            Arc::clone(&self.retirement),
            Arc::clone(&self.retirement),
            Arc::clone(&self.retirement),
        );
        options
            // A connection that began before a rotation may finish after it,
            // with the old credentials and a creation time past the rotation:
            // ask it who it is. Refusing it would stall the acquire until its
            // timeout (sqlx 0.8.6, after an `after_connect` error); instead
            // it serves the one checkout it was opened for — its credentials
            // are still in their grace — and the cutoff moves past it, so it
            // closes when released. Only once the pool has rotated: one
            // round trip on opening, none per query.
            .after_connect(move |connection, _| {
                let retirement = Arc::clone(&connected);
                Box::pin(async move {
                    if lock(&retirement).users.is_empty() {
                        return Ok(());
                    }
                    let user: Result<String, _> = sqlx::query_scalar("SELECT current_user::text")
                        .fetch_one(&mut *connection)
                        .await;
                    let mut retirement = lock(&retirement);
                    match user {
                        Ok(user) if !retirement.users.contains(&user) => {}
                        // Opened with rotated-out credentials — or unknown,
                        // the connection failing already (an error here too
                        // would stall the acquire): used once, then closed.
                        user => {
                            retirement.retire_until(Instant::now());
                            tracing::debug!(
                                ?user,
                                "a connection opened across a rotation closes after its first use"
                            );
                        }
                    }
                    Ok(())
                })
            })
            // Decided before the first await, so the connection's age is
            // measured against the clock read here.
            .before_acquire(move |_, meta| {
                let keep = !lock(&acquiring).retires(meta.age);
                Box::pin(std::future::ready(Ok(keep)))
            })
            .after_release(move |_, meta| {
                let keep = !lock(&released).retires(meta.age);
                Box::pin(std::future::ready(Ok(keep)))
            })
    }

    /// Follows the source until `stop`: on each rotation, hands `pool` the
    /// new credentials, retires the connections opened with the old ones
    /// (see the module's documentation) and wakes `listener` to reconnect.
    /// Ends early, with a warning, if the issuer drops the source: the pool
    /// keeps the last credentials.
    pub(super) async fn follow(
        mut self,
        pool: PgPool,
        listener: Option<Arc<Notify>>,
        stop: CancellationToken,
    ) {
        loop {
            let changed = tokio::select! {
                biased;
                () = stop.cancelled() => return,
                changed = self.source.changed() => changed,
            };
            if changed.is_err() {
                tracing::warn!(
                    source = %self.name,
                    username = %self.current.username,
                    "the credentials source closed (its issuer stopped); postgres keeps the last credentials"
                );
                return;
            }
            let credentials = self.source.borrow_and_update().clone();
            if credentials == self.current {
                continue;
            }
            self.rotate(&pool, credentials);
            if let Some(listener) = &listener {
                // A permit is kept if the listener is between connections:
                // it then reconnects once more, which is harmless.
                listener.notify_one();
            }
            tracing::info!(
                source = %self.name,
                username = %self.current.username,
                "postgres credentials rotated: new connections use them; those opened before close once their work is done"
            );
        }
    }

    /// Hands `pool` `credentials` and retires the current ones.
    fn rotate(&mut self, pool: &PgPool, credentials: Credentials) {
        let options = with_credentials(self.base.clone(), &credentials);
        let previous = std::mem::replace(&mut self.current, credentials);
        // Both under the lock, so a hook never sees the new retirement with
        // the old options or the other way round.
        let mut retirement = lock(&self.retirement);
        pool.set_connect_options(options);
        retirement.retire_until(Instant::now());
        // Static credentials rotate only the password: the user stays good.
        retirement
            .users
            .retain(|user| *user != self.current.username);
        if previous.username != self.current.username {
            retirement.users.push_back(previous.username);
            if retirement.users.len() > RETIRED_USERS {
                retirement.users.pop_front();
            }
        }
    }
}

/// Which connections the pool's hooks retire.
#[derive(Debug, Default)]
struct Retirement {
    /// Connections created before this instant close at their next acquire
    /// or release. `None` until the first rotation.
    opened_before: Option<Instant>,
    /// The user names rotated out, oldest first (at most
    /// [`RETIRED_USERS`]); never the current one.
    users: VecDeque<String>,
}

impl Retirement {
    /// Retires the connections opened before `instant` (and a margin).
    fn retire_until(&mut self, instant: Instant) {
        let cutoff = instant.checked_add(STRADDLE).unwrap_or(instant);
        self.opened_before = Some(self.opened_before.map_or(cutoff, |old| old.max(cutoff)));
    }

    /// Whether a connection `age` old goes.
    fn retires(&self, age: Duration) -> bool {
        self.opened_before.is_some_and(|cutoff| {
            Instant::now()
                .checked_sub(age)
                .is_none_or(|opened| opened < cutoff)
        })
    }
}

/// The state behind `mutex`; a hook that panicked holding it left it
/// consistent (every update is a plain assignment).
fn lock(mutex: &Mutex<Retirement>) -> MutexGuard<'_, Retirement> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use sqlx::ConnectOptions;

    use super::*;

    #[test]
    fn credentials_replace_the_urls_user_and_password() {
        let url: PgConnectOptions = "postgres://app:fromurl@db:5432/orders".parse().unwrap();
        let options = with_credentials(url, &Credentials::new("v-orders-1", "fromvault"));
        assert_eq!(options.get_username(), "v-orders-1");
        let url = options.to_url_lossy().to_string();
        assert!(url.contains(":fromvault@"), "{url}");
        assert!(!url.contains("fromurl"), "{url}");
    }

    #[tokio::test]
    async fn a_rotation_hands_the_pool_the_new_user_and_retires_the_old() {
        let base: PgConnectOptions = "postgres://app@db:5432/orders".parse().unwrap();
        let first = Credentials::new("v-1", "pw1");
        let (_issuer, source) = watch::channel(first.clone());
        let mut rotating = RotatingCredentials {
            name: "orders".into(),
            current: first,
            source,
            base,
            retirement: Arc::default(),
        };
        let pool = PgPoolOptions::new().connect_lazy_with(rotating.options());
        assert!(!lock(&rotating.retirement).retires(Duration::from_secs(3600)));

        rotating.rotate(&pool, Credentials::new("v-2", "pw2"));
        assert_eq!(pool.connect_options().get_username(), "v-2");
        {
            let mut retirement = lock(&rotating.retirement);
            assert_eq!(retirement.users, ["v-1"]);
            assert!(retirement.retires(Duration::from_secs(1)), "opened before");
            retirement.opened_before = Instant::now().checked_sub(Duration::from_secs(10));
            assert!(!retirement.retires(Duration::from_secs(1)), "opened after");
        }

        // Only the password changes: connections are replaced, the user
        // stays good.
        rotating.rotate(&pool, Credentials::new("v-2", "pw3"));
        assert_eq!(lock(&rotating.retirement).users, ["v-1"]);
        let url = pool.connect_options().to_url_lossy().to_string();
        assert!(url.contains(":pw3@"), "{url}");

        // Back to an earlier user: it is current, not retired.
        rotating.rotate(&pool, Credentials::new("v-1", "pw4"));
        assert_eq!(lock(&rotating.retirement).users, ["v-2"]);
    }
}
