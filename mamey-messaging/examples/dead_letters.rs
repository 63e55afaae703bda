//! Lists a RabbitMQ dead-letter queue, or replays chosen messages to the
//! exchange and routing key they were first published to.
//!
//! ```text
//! cargo run -p mamey-messaging --example dead_letters --features rabbitmq -- <queue> [list]
//! cargo run -p mamey-messaging --example dead_letters --features rabbitmq -- <queue> replay <message-id>...
//! ```
//!
//! `<queue>` is the dead-letter queue's full name, e.g.
//! `billing/orders.order_placed.dlq`; the broker is `AMQP_URL` (default
//! `amqp://guest:guest@127.0.0.1:5672/%2f`). `list` leaves the queue as it
//! is; `replay` removes each message once the broker has confirmed its
//! replay.

use std::process::ExitCode;

use mamey_messaging::rabbitmq::{DeadLetterError, DeadLetterQueue, DeadLetterSummary};

/// At most this many messages are listed.
const LIST_LIMIT: usize = 100;

const USAGE: &str = "usage: dead_letters <dead-letter-queue> [list | replay <message-id>...]";

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (queue, command, ids) = match args.as_slice() {
        [queue] => (queue, "list", &[][..]),
        [queue, command, ids @ ..] => (queue, command.as_str(), ids),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    if !matches!(
        (command, ids.is_empty()),
        ("list", true) | ("replay", false)
    ) {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    }
    let url = std::env::var("AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned());
    match run(&url, queue, command, ids).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(url: &str, queue: &str, command: &str, ids: &[String]) -> Result<(), DeadLetterError> {
    let mut dead = DeadLetterQueue::connect(url, queue).await?;
    let result = if command == "list" {
        list(&mut dead).await
    } else {
        replay(&mut dead, ids).await
    };
    dead.close().await;
    result
}

async fn list(dead: &mut DeadLetterQueue) -> Result<(), DeadLetterError> {
    let waiting = dead.count().await?;
    let letters = dead.peek(LIST_LIMIT).await?;
    println!(
        "{waiting} message(s) in `{}`{}",
        dead.queue(),
        if letters.len() < usize::try_from(waiting).unwrap_or(usize::MAX) {
            format!(", the first {}:", letters.len())
        } else {
            String::new()
        }
    );
    for letter in &letters {
        print_letter(letter);
    }
    Ok(())
}

async fn replay(dead: &mut DeadLetterQueue, ids: &[String]) -> Result<(), DeadLetterError> {
    let wanted: Vec<&str> = ids.iter().map(String::as_str).collect();
    let replayed = dead.replay_ids(&wanted).await?;
    for letter in &replayed {
        print!("replayed ");
        print_letter(letter);
    }
    for id in wanted {
        if !replayed.iter().any(|letter| letter.message_id == id) {
            println!("not found: {id}");
        }
    }
    Ok(())
}

fn print_letter(letter: &DeadLetterSummary) {
    let route = letter.original.as_ref().map_or_else(
        || "(no original route)".to_owned(),
        |route| format!("{} / {}", route.exchange, route.routing_key),
    );
    println!(
        "{}  {}  {} bytes  to {route}  after {} attempt(s): {}",
        letter.message_id, letter.message_type, letter.body_size, letter.attempts, letter.reason
    );
}
