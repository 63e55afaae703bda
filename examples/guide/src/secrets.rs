//! The chapter "Secrets" (`docs/src/secrets.md`).

use mamey_core::cqrs::{Command, DispatcherBuilder};

// ANCHOR: service
use mamey_core::Service;
use mamey_persistence::postgres::Postgres;
use mamey_secrets::Secrets;

/// The program.
#[tokio::main]
pub async fn main() -> Result<(), mamey_core::ServiceError> {
    Service::builder("orders")
        .version(env!("CARGO_PKG_VERSION"))
        .plugin(Secrets::new()) // first: overlay, CredentialSources
        .plugin(Postgres::new()) // follows `orders` (postgres.credentials)
        .build()
        .await?
        .run()
        .await
}
// ANCHOR_END: service

// ANCHOR: runtime
use mamey_core::config::Secret;
use mamey_secrets::{SecretError, SecretRef, SecretStore};

/// The `mail/smtp` secret.
#[derive(Debug, serde::Deserialize)]
pub struct Smtp {
    user: String,
    password: Secret<String>, // wrap secret fields so they never print
}

/// Reads secrets, once and as they change.
pub async fn read_secrets(store: &SecretStore) -> Result<(), SecretError> {
    let smtp: Smtp = store.read("mail/smtp").await?; // typed
    let meta = store
        .read_data(&SecretRef::new("orders/meta").mount("kv").version(3)) // Vault: mount, pinned version
        .await?; // keys and values
    let password: Option<Secret<String>> = meta.get("password");
    tracing::info!(user = smtp.user, has_password = password.is_some(), "read");

    let mut smtp_watch = store.watch("mail/smtp").await?; // the value now…
    tokio::spawn(async move {
        while smtp_watch.changed().await.is_ok() {
            // …and each change
            let smtp: Result<Smtp, _> = smtp_watch.read();
            if let Ok(smtp) = smtp {
                reconnect(&smtp.user, smtp.password.expose()); // reconnect with the new password
            }
        }
    });
    Ok(())
}
// ANCHOR_END: runtime

/// Reconnects to the mail server.
pub fn reconnect(user: &str, password: &str) {
    tracing::info!(user, with_password = !password.is_empty(), "reconnecting");
}

/// Store a card number.
#[derive(Debug)]
pub struct StoreCard {
    /// The card's number.
    pub number: String,
}
impl Command for StoreCard {}

// ANCHOR: transit
use mamey_core::Error;
use mamey_core::cqrs::Res;
use mamey_secrets::vault::Transit;

async fn store_card(card: StoreCard, Res(transit): Res<Transit>) -> Result<(), Error> {
    let ciphertext = transit.encrypt("orders", card.number.as_bytes()).await?; // "vault:v1:…"
    // store the ciphertext; later:
    let plaintext = transit.decrypt("orders", &ciphertext).await?; // Secret<Vec<u8>>
    tracing::info!(bytes = plaintext.expose().len(), "card stored");
    Ok(())
}
// ANCHOR_END: transit

/// Registers `store_card`.
pub fn handlers(d: &mut DispatcherBuilder) {
    d.command(store_card);
}
