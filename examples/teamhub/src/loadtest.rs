//! `teamhub loadtest`: N users sign in, each holding a live socket, and post
//! chat messages, move cards and read cards through the gateway for a
//! while. Reports what was sent against what was delivered live, the post →
//! live delivery latency, and the gateway's request latency, in all and by
//! kind of request: a post goes gateway → chat → boards (gRPC, the
//! membership check) and commits to chat's database; a move goes gateway →
//! boards and commits; a read goes gateway → boards.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use mamey_core::BoxError;
use serde_json::json;
use tokio::sync::Mutex;

use crate::client::{Api, Live};
use crate::deploy::Deployment;
use crate::system;

/// What to run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Users, each posting and moving its card in a loop.
    pub users: usize,
    /// How long they do.
    pub duration: Duration,
    /// The gateway; `None` starts the embedded system in this process.
    pub target: Option<String>,
    /// Requests per second over all users; `None`: as fast as answers come.
    pub rate: Option<u32>,
    /// Which requests the users send.
    pub mix: Mix,
}

/// Which requests the users send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mix {
    /// Of every ten, six posts, two card moves and two card reads.
    All,
    /// Card reads only: the gateway and one service, nothing written.
    Reads,
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct Report {
    /// Users.
    pub users: usize,
    /// Seconds the load ran.
    pub seconds: f64,
    /// Requests sent through the gateway during the load.
    pub requests: u64,
    /// Requests answered with an unexpected status.
    pub failed: u64,
    /// Messages posted.
    pub messages: u64,
    /// Card moves.
    pub moves: u64,
    /// Messages and moves found in the services afterwards (chat history,
    /// board state).
    pub processed: u64,
    /// Live notifications expected: each message to every member but its
    /// author, each move to every member.
    pub expected: u64,
    /// Live notifications received.
    pub delivered: u64,
    /// Post → live delivery, microseconds: p50, p99.
    pub delivery_us: (u64, u64),
    /// Seconds deliveries kept arriving after the load stopped (a backlog).
    pub drained: f64,
    /// Gateway request latency, microseconds: p50, p99.
    pub request_us: (u64, u64),
    /// The same by kind of request: the kind, how many, p50, p99.
    pub by_kind: Vec<(Request, u64, (u64, u64))>,
}

/// A kind of request the users send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Request {
    /// `POST /api/chat/channels/{channel}/messages`: gateway → chat →
    /// boards (gRPC), a commit.
    Post,
    /// `POST /api/boards/cards/{id}/move`: gateway → boards, a commit.
    Move,
    /// `GET /api/boards/cards/{id}`: gateway → boards, a read.
    Read,
}

impl Request {
    const ALL: [Self; 3] = [Self::Post, Self::Move, Self::Read];

    /// The `n`th request of a user in `mix`.
    fn nth(mix: Mix, n: u64) -> Self {
        match (mix, n % 10) {
            (Mix::Reads, _) | (Mix::All, 2 | 7) => Self::Read,
            (Mix::All, 0 | 5) => Self::Move,
            (Mix::All, _) => Self::Post,
        }
    }
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Post => "post (gateway -> chat -> boards gRPC, commit)",
            Self::Move => "move (gateway -> boards, commit)",
            Self::Read => "read (gateway -> boards)",
        })
    }
}

impl Report {
    /// Expected notifications that never arrived.
    #[must_use]
    pub fn lost(&self) -> u64 {
        self.expected.saturating_sub(self.delivered)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "users {}  duration {:.1} s  requests {} ({:.0}/s, {} failed)",
            self.users,
            self.seconds,
            self.requests,
            self.requests as f64 / self.seconds.max(0.001),
            self.failed
        )?;
        writeln!(
            f,
            "sent: {} messages + {} card moves; processed {}; live delivered {} of {} expected (lost {})",
            self.messages,
            self.moves,
            self.processed,
            self.delivered,
            self.expected,
            self.lost()
        )?;
        if self.messages > 0 {
            writeln!(
                f,
                "post -> live delivery: p50 {:.2} ms  p99 {:.2} ms  (backlog drained {:.1} s after the load)",
                ms(self.delivery_us.0),
                ms(self.delivery_us.1),
                self.drained
            )?;
        }
        write!(
            f,
            "gateway request latency: p50 {:.2} ms  p99 {:.2} ms",
            ms(self.request_us.0),
            ms(self.request_us.1)
        )?;
        for (kind, count, (p50, p99)) in &self.by_kind {
            write!(
                f,
                "\n  {kind}: {count} requests, p50 {:.2} ms  p99 {:.2} ms",
                ms(*p50),
                ms(*p99)
            )?;
        }
        Ok(())
    }
}

#[allow(clippy::cast_precision_loss)]
fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// Counters shared by the users' tasks.
#[derive(Default)]
struct Tally {
    requests: AtomicU64,
    failed: AtomicU64,
    messages: AtomicU64,
    moves: AtomicU64,
    delivered: AtomicU64,
    request_us: Mutex<HashMap<Request, Vec<u64>>>,
    delivery_us: Mutex<Vec<u64>>,
}

/// Runs the load and reports.
///
/// # Errors
/// The system could not be started or the users set up.
pub async fn run(settings: Settings) -> Result<Report, BoxError> {
    let users = settings.users.max(2);
    let (base, embedded) = match &settings.target {
        Some(url) => (url.clone(), None),
        None => {
            let data = std::env::temp_dir().join(format!("teamhub-load-{}", std::process::id()));
            let deploy = Deployment::embedded(&data)
                .service_env(crate::gateway::NAME, "MAMEY__HTTP__ADDRESS", "127.0.0.1:0")
                .env("MAMEY__LOGGING__LEVEL", "warn");
            let built = system::embedded(&deploy).await?;
            // The load tool owns Ctrl-C: stopping it stops the system with it.
            let running = built.group.handle_signals(false).start().await?;
            (format!("http://{}", built.gateway), Some((running, data)))
        }
    };
    let outcome = drive(&base, users, &settings).await;
    if let Some((running, data)) = embedded {
        running.stop().await?;
        let _ = std::fs::remove_dir_all(data);
    }
    outcome
}

/// One user: their API, their card, their live socket.
struct User {
    api: Api,
    id: i64,
    card: i64,
}

async fn drive(base: &str, users: usize, settings: &Settings) -> Result<Report, BoxError> {
    let anonymous = Api::new(base);
    let run = format!("{:x}", crate::ids::next());
    eprintln!("setting up {users} users at {base}");
    let mut sessions = Vec::with_capacity(users);
    for i in 0..users {
        let email = format!("load-{run}-{i}@example.com");
        anonymous
            .sign_up(&email, &format!("load{run}u{i}"), "load-test-password")
            .await?;
        let session = anonymous.sign_in(&email, "load-test-password").await?;
        sessions.push(session);
    }
    let owner = anonymous.with_token(&sessions[0].access_token);
    let workspace = owner
        .create(
            "/api/boards/workspaces",
            &json!({ "name": format!("load {run}") }),
        )
        .await?;
    for session in &sessions[1..] {
        owner
            .call(
                Method::POST,
                &format!("/api/boards/workspaces/{workspace}/members"),
                Some(&json!({ "userId": session.user_id })),
            )
            .await?
            .expect(StatusCode::NO_CONTENT)?;
    }
    let board = owner
        .create(
            &format!("/api/boards/workspaces/{workspace}/boards"),
            &json!({ "name": "load" }),
        )
        .await?;
    let channel = format!("board:{board}");
    let mut team = Vec::with_capacity(users);
    let mut sockets = Vec::with_capacity(users);
    for session in &sessions {
        let api = anonymous.with_token(&session.access_token);
        let card = api
            .create(
                &format!("/api/boards/boards/{board}/cards"),
                &json!({ "title": format!("card of {}", session.user_id) }),
            )
            .await?;
        sockets.push(api.live().await?.without_history());
        team.push(User {
            api,
            id: session.user_id,
            card,
        });
    }
    // The set-up's own notifications are not counted: read each socket
    // until it has been quiet for 300 ms.
    for socket in &mut sockets {
        while socket.next(Duration::from_millis(300)).await?.is_some() {}
    }

    let tally = Arc::new(Tally::default());
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let sent_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let readers: Vec<_> = sockets
        .into_iter()
        .map(|socket| {
            tokio::spawn(read_live(
                socket,
                Arc::clone(&tally),
                Arc::clone(&sent_at),
                Arc::clone(&stop),
            ))
        })
        .collect();
    let pause = settings
        .rate
        .map(|rate| Duration::from_secs_f64(users as f64 / f64::from(rate.max(1))));
    let writers: Vec<_> = team
        .into_iter()
        .enumerate()
        .map(|(i, user)| {
            let (tally, sent_at, channel) =
                (Arc::clone(&tally), Arc::clone(&sent_at), channel.clone());
            let (duration, run, mix) = (settings.duration, run.clone(), settings.mix);
            tokio::spawn(async move {
                let mut n = 0_u64;
                let mut ticks = pause.map(tokio::time::interval);
                while start.elapsed() < duration {
                    if let Some(ticks) = &mut ticks {
                        ticks.tick().await;
                    }
                    n += 1;
                    match Request::nth(mix, n) {
                        Request::Move => {
                            let list = if (n / 5) % 2 == 1 { "doing" } else { "todo" };
                            let body = json!({ "list": list });
                            let path = format!("/api/boards/cards/{}/move", user.card);
                            let sent = (Request::Move, Method::POST, path.as_str(), Some(&body));
                            if timed(&tally, &user.api, sent, StatusCode::NO_CONTENT).await {
                                tally.moves.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Request::Read => {
                            let path = format!("/api/boards/cards/{}", user.card);
                            let sent = (Request::Read, Method::GET, path.as_str(), None);
                            timed(&tally, &user.api, sent, StatusCode::OK).await;
                        }
                        Request::Post => {
                            let tag = format!("lt-{run}-{i}-{n}");
                            sent_at.lock().await.insert(tag.clone(), Instant::now());
                            let body = json!({ "text": tag });
                            let path = format!("/api/chat/channels/{channel}/messages");
                            let sent = (Request::Post, Method::POST, path.as_str(), Some(&body));
                            if timed(&tally, &user.api, sent, StatusCode::CREATED).await {
                                tally.messages.fetch_add(1, Ordering::Relaxed);
                            } else {
                                sent_at.lock().await.remove(&tag);
                            }
                        }
                    }
                }
                user.id
            })
        })
        .collect();

    let progress = {
        let tally = Arc::clone(&tally);
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_secs(1)).await;
                eprint!(
                    "\r{:>4.0} s  requests {:>7}  messages {:>6}  moves {:>5}  delivered {:>7}  failed {}",
                    start.elapsed().as_secs_f64(),
                    tally.requests.load(Ordering::Relaxed),
                    tally.messages.load(Ordering::Relaxed),
                    tally.moves.load(Ordering::Relaxed),
                    tally.delivered.load(Ordering::Relaxed),
                    tally.failed.load(Ordering::Relaxed),
                );
            }
            eprintln!();
        })
    };
    for writer in writers {
        writer.await?;
    }
    let seconds = start.elapsed().as_secs_f64();
    let members = users as u64;
    let (messages, moves) = (
        tally.messages.load(Ordering::Relaxed),
        tally.moves.load(Ordering::Relaxed),
    );
    let expected = messages * (members - 1) + moves * members;
    // Deliveries still on their way (a backlog drains after the load):
    // wait while they keep coming, until 5 s pass without one, for at most
    // 2 minutes. What has not come by then is lost.
    let deadline = Instant::now() + Duration::from_secs(120);
    let (mut last, mut last_change) = (tally.delivered.load(Ordering::Relaxed), Instant::now());
    while last < expected
        && Instant::now() < deadline
        && last_change.elapsed() < Duration::from_secs(5)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = tally.delivered.load(Ordering::Relaxed);
        if now != last {
            (last, last_change) = (now, Instant::now());
        }
    }
    let drained = start.elapsed().as_secs_f64() - seconds;
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        reader.abort();
    }
    let _ = progress.await;

    let processed = count_processed(&owner, &channel, &run).await? + moves;
    let requests = tally.requests.load(Ordering::Relaxed);
    let failed = tally.failed.load(Ordering::Relaxed);
    let delivered = tally.delivered.load(Ordering::Relaxed);
    let delivery_us = percentiles(&mut tally.delivery_us.lock().await);
    let mut by_request = tally.request_us.lock().await;
    let mut all: Vec<u64> = by_request.values().flatten().copied().collect();
    let request_us = percentiles(&mut all);
    let by_kind = Request::ALL
        .into_iter()
        .filter_map(|kind| {
            let samples = by_request.get_mut(&kind)?;
            Some((kind, samples.len() as u64, percentiles(samples)))
        })
        .collect();
    Ok(Report {
        users,
        seconds,
        requests,
        failed,
        messages,
        moves,
        processed,
        expected,
        delivered,
        delivery_us,
        drained,
        request_us,
        by_kind,
    })
}

/// Sends one request, recording its latency by kind; whether it got
/// `expected`.
async fn timed(
    tally: &Tally,
    api: &Api,
    (kind, method, path, body): (Request, Method, &str, Option<&serde_json::Value>),
    expected: StatusCode,
) -> bool {
    let started = Instant::now();
    let outcome = api.call(method, path, body).await;
    let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    tally.requests.fetch_add(1, Ordering::Relaxed);
    tally
        .request_us
        .lock()
        .await
        .entry(kind)
        .or_default()
        .push(us);
    let ok = matches!(&outcome, Ok(answer) if answer.status == expected);
    if !ok {
        tally.failed.fetch_add(1, Ordering::Relaxed);
    }
    ok
}

/// Counts a user's live notifications, timing the chat messages.
async fn read_live(
    mut socket: Live,
    tally: Arc<Tally>,
    sent_at: Arc<Mutex<HashMap<String, Instant>>>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::Relaxed) {
        let Ok(Some(item)) = socket.next(Duration::from_millis(200)).await else {
            continue;
        };
        let counted = match item["kind"].as_str() {
            Some("message_posted") => {
                let sent = match item["data"]["text"].as_str() {
                    Some(tag) => sent_at.lock().await.get(tag).copied(),
                    None => None,
                };
                if let Some(at) = sent {
                    let us = u64::try_from(at.elapsed().as_micros()).unwrap_or(u64::MAX);
                    tally.delivery_us.lock().await.push(us);
                }
                true
            }
            Some("card_moved") => true,
            _ => false,
        };
        if counted {
            tally.delivered.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The run's messages in the channel's history, each counted once.
async fn count_processed(api: &Api, channel: &str, run: &str) -> Result<u64, BoxError> {
    let prefix = format!("lt-{run}-");
    let (mut after, mut count) = (0_i64, 0_u64);
    loop {
        let page = api
            .get(&format!(
                "/api/chat/channels/{channel}/messages?after={after}&limit=100"
            ))
            .await?;
        let items = page["items"].as_array().cloned().unwrap_or_default();
        count += items
            .iter()
            .filter(|m| m["text"].as_str().is_some_and(|t| t.starts_with(&prefix)))
            .count() as u64;
        match page["next"].as_i64() {
            Some(next) if !items.is_empty() => after = next,
            _ => return Ok(count),
        }
    }
}

/// p50 and p99 of `samples`.
fn percentiles(samples: &mut [u64]) -> (u64, u64) {
    if samples.is_empty() {
        return (0, 0);
    }
    samples.sort_unstable();
    let at = |q: f64| {
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let index = ((samples.len() - 1) as f64 * q).round() as usize;
        samples[index.min(samples.len() - 1)]
    };
    (at(0.50), at(0.99))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn of_ten_requests_six_post_two_move_two_read_unless_only_reads() {
        let kinds: Vec<Request> = (1..=10).map(|n| Request::nth(Mix::All, n)).collect();
        let count = |kind| kinds.iter().filter(|k| **k == kind).count();
        assert_eq!(
            (
                count(Request::Post),
                count(Request::Move),
                count(Request::Read)
            ),
            (6, 2, 2)
        );
        assert!((1..=10).all(|n| Request::nth(Mix::Reads, n) == Request::Read));
    }

    #[test]
    fn percentiles_pick_ranks() {
        let mut samples: Vec<u64> = (1..=100).rev().collect();
        assert_eq!(percentiles(&mut samples), (51, 99));
        assert_eq!(percentiles(&mut []), (0, 0));
    }
}
