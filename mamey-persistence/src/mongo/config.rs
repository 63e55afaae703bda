//! The `mongo` section, and the names it checks: databases and collections.

use std::time::Duration;

use mamey_core::config::{ConfigSection, Secret};
use serde::{Deserialize, Serialize};

/// The `mongo` section.
///
/// ```toml
/// [mongo]
/// url = "mongodb://127.0.0.1:27017"
/// database = "orders"            # default: the service name (`app.name`)
/// max_pool_size = 10
/// min_pool_size = 0
/// connect_timeout = "10s"
/// server_selection_timeout = "5s"
/// max_idle_time = "10m"
/// ping_timeout = "2s"
/// transactions = "auto"          # or "on", "off"
/// outbox_collection = "mamey_outbox"
/// inbox_collection = "mamey_inbox"
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MongoConfig {
    /// Connection string, `mongodb://` or `mongodb+srv://` (it may hold a
    /// password, so it never prints). Its path names only the database that
    /// authenticates (`authSource`), not the one the service uses.
    /// Default: `mongodb://127.0.0.1:27017`.
    pub url: Secret<String>,
    /// The database of the service. Default: the service name (`app.name`)
    /// with the characters MongoDB forbids in database names
    /// (`/\. "$*<>:|?`) replaced by `_`, cut to 63 bytes.
    pub database: Option<String>,
    /// Connections per server the driver opens at most (at least 1).
    /// Default: `10`.
    pub max_pool_size: u32,
    /// Connections per server the driver keeps open when idle. Default: `0`.
    pub min_pool_size: u32,
    /// How long the first contact may take before the service fails to
    /// start; also the driver's timeout for opening each connection.
    /// Default: `10s`.
    #[serde(with = "mamey_core::config::duration")]
    pub connect_timeout: Duration,
    /// How long an operation waits for a suitable server (a primary, for
    /// writes) before it fails as unavailable. Default: `5s`.
    #[serde(with = "mamey_core::config::duration")]
    pub server_selection_timeout: Duration,
    /// Idle connections close after this. Default: `10m`.
    #[serde(with = "mamey_core::config::duration")]
    pub max_idle_time: Duration,
    /// The readiness check fails when `ping` takes longer. Default: `2s`.
    #[serde(with = "mamey_core::config::duration")]
    pub ping_timeout: Duration,
    /// Whether units of work run in transactions. Default: `auto`.
    pub transactions: Transactions,
    /// The outbox collection. Default: `mamey_outbox`.
    pub outbox_collection: String,
    /// The inbox collection. Default: `mamey_inbox`.
    pub inbox_collection: String,
}

impl Default for MongoConfig {
    fn default() -> Self {
        Self {
            url: Secret::new("mongodb://127.0.0.1:27017".into()),
            database: None,
            max_pool_size: 10,
            min_pool_size: 0,
            connect_timeout: Duration::from_secs(10),
            server_selection_timeout: Duration::from_secs(5),
            max_idle_time: Duration::from_secs(600),
            ping_timeout: Duration::from_secs(2),
            transactions: Transactions::Auto,
            outbox_collection: "mamey_outbox".into(),
            inbox_collection: "mamey_inbox".into(),
        }
    }
}

impl ConfigSection for MongoConfig {
    const KEY: &'static str = "mongo";
}

/// `mongo.transactions`: whether [`MongoDatabase::begin`](super::MongoDatabase::begin)
/// starts a transaction. MongoDB has them only on a replica set (a single
/// node is enough) or behind `mongos`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transactions {
    /// Transactions where the server has them. On a standalone server the
    /// service starts with a warning, and the outbox and inbox refuse to
    /// write outside a transaction.
    #[default]
    Auto,
    /// Transactions always: the service does not start on a standalone
    /// server.
    On,
    /// Never: units of work write at once, and the outbox and inbox accept
    /// that — a message staged is not atomic with the state change (see the
    /// [module docs](super)).
    Off,
}

impl MongoConfig {
    /// The first problem with the configuration, as the key and what it
    /// expects; the URL is checked when it is parsed.
    pub(crate) fn problem(&self) -> Option<(&'static str, String)> {
        if let Some(database) = &self.database
            && let Err(why) = check_database_name(database)
        {
            return Some(("mongo.database", why));
        }
        if self.max_pool_size == 0 || self.min_pool_size > self.max_pool_size {
            return Some((
                "mongo.max_pool_size",
                "expected at least 1, and at least `mongo.min_pool_size`".into(),
            ));
        }
        for (key, name) in [
            ("mongo.outbox_collection", &self.outbox_collection),
            ("mongo.inbox_collection", &self.inbox_collection),
        ] {
            if let Err(why) = check_collection_name(name) {
                return Some((key, why));
            }
        }
        None
    }

    /// The database to use: `mongo.database`, or the service's name made
    /// valid.
    pub(crate) fn database_name(&self, service: &str) -> String {
        self.database
            .clone()
            .unwrap_or_else(|| database_name(service))
    }
}

/// Characters MongoDB forbids in database names (on any platform).
const FORBIDDEN_IN_DATABASE: &[char] = &[
    '/', '\\', '.', ' ', '"', '$', '*', '<', '>', ':', '|', '?', '\0',
];

/// The longest database name MongoDB takes, in bytes.
const MAX_DATABASE_NAME: usize = 63;

/// A database name made from a service name: each character MongoDB forbids
/// replaced by `_`, cut to 63 bytes (on a character boundary); `mamey` when
/// nothing is left.
///
/// ```
/// use mamey_persistence::mongo::database_name;
///
/// assert_eq!(database_name("orders"), "orders");
/// assert_eq!(database_name("shop.orders api"), "shop_orders_api");
/// ```
#[must_use]
pub fn database_name(service: &str) -> String {
    let mut name: String = service
        .chars()
        .map(|c| {
            if FORBIDDEN_IN_DATABASE.contains(&c) {
                '_'
            } else {
                c
            }
        })
        .collect();
    if name.len() > MAX_DATABASE_NAME {
        let mut end = MAX_DATABASE_NAME;
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        name.truncate(end);
    }
    if name.is_empty() {
        name.push_str("mamey");
    }
    name
}

fn check_database_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_DATABASE_NAME {
        return Err(format!(
            "expected a database name of 1 to {MAX_DATABASE_NAME} bytes"
        ));
    }
    match name.chars().find(|c| FORBIDDEN_IN_DATABASE.contains(c)) {
        Some(c) => Err(format!(
            "expected a database name without {c:?} (MongoDB forbids any of `/\\. \"$*<>:|?`)"
        )),
        None => Ok(()),
    }
}

/// Whether MongoDB takes `name` for a collection: not empty, no `$` or NUL,
/// not in the `system.` namespace, and short (MongoDB's limit is on the
/// whole `database.collection` namespace; 120 bytes leaves room).
pub(crate) fn check_collection_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 120 {
        return Err("expected a collection name of 1 to 120 bytes".into());
    }
    if name.contains(['$', '\0']) || name.starts_with("system.") {
        return Err(
            "expected a collection name without `$` or NUL, not starting with `system.`".into(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use mamey_core::config::Config;

    use super::*;

    fn section(vars: &[(&str, &str)]) -> Result<MongoConfig, String> {
        let config = Config::loader("orders")
            .dir("/nonexistent-mamey-config")
            .env_vars(vars.iter().copied())
            .load()
            .map_err(|e| e.to_string())?;
        config.section::<MongoConfig>().map_err(|e| e.to_string())
    }

    #[test]
    fn the_defaults_are_the_documented_ones() {
        let config = section(&[]).unwrap();
        assert_eq!(config, MongoConfig::default());
        assert_eq!(config.url.expose(), "mongodb://127.0.0.1:27017");
        assert_eq!(config.database, None);
        assert_eq!(config.database_name("orders"), "orders");
        assert_eq!((config.max_pool_size, config.min_pool_size), (10, 0));
        assert_eq!(config.connect_timeout, Duration::from_secs(10));
        assert_eq!(config.server_selection_timeout, Duration::from_secs(5));
        assert_eq!(config.max_idle_time, Duration::from_secs(600));
        assert_eq!(config.ping_timeout, Duration::from_secs(2));
        assert_eq!(config.transactions, Transactions::Auto);
        assert_eq!(config.outbox_collection, "mamey_outbox");
        assert_eq!(config.inbox_collection, "mamey_inbox");
        assert_eq!(config.problem(), None);
    }

    #[test]
    fn keys_are_read_from_the_environment() {
        let config = section(&[
            ("MAMEY__MONGO__DATABASE", "shop"),
            ("MAMEY__MONGO__TRANSACTIONS", "off"),
            ("MAMEY__MONGO__PING_TIMEOUT", "500ms"),
        ])
        .unwrap();
        assert_eq!(config.database_name("orders"), "shop");
        assert_eq!(config.transactions, Transactions::Off);
        assert_eq!(config.ping_timeout, Duration::from_millis(500));
    }

    #[test]
    fn the_url_never_prints() {
        let config = section(&[("MAMEY__MONGO__URL", "mongodb://app:hunter2@db:27017")]).unwrap();
        assert_eq!(config.url.expose(), "mongodb://app:hunter2@db:27017");
        assert!(!format!("{config:?}").contains("hunter2"));
    }

    #[test]
    fn misspelt_keys_and_unknown_modes_name_the_key() {
        let error = section(&[("MAMEY__MONGO__DATABSE", "shop")]).unwrap_err();
        assert!(error.contains("mongo.databse"), "{error}");
        let error = section(&[("MAMEY__MONGO__TRANSACTIONS", "maybe")]).unwrap_err();
        assert!(error.contains("mongo.transactions"), "{error}");
        assert!(error.contains("MAMEY__MONGO__TRANSACTIONS"), "{error}");
    }

    #[test]
    fn invalid_values_are_problems_naming_the_key() {
        let with = |f: fn(&mut MongoConfig)| {
            let mut config = MongoConfig::default();
            f(&mut config);
            config.problem().map(|(key, _)| key)
        };
        assert_eq!(
            with(|c| c.database = Some("shop.eu".into())),
            Some("mongo.database")
        );
        assert_eq!(
            with(|c| c.database = Some(String::new())),
            Some("mongo.database")
        );
        assert_eq!(
            with(|c| c.database = Some("x".repeat(64))),
            Some("mongo.database")
        );
        assert_eq!(with(|c| c.max_pool_size = 0), Some("mongo.max_pool_size"));
        assert_eq!(with(|c| c.min_pool_size = 11), Some("mongo.max_pool_size"));
        assert_eq!(
            with(|c| c.outbox_collection = "a$b".into()),
            Some("mongo.outbox_collection")
        );
        assert_eq!(
            with(|c| c.inbox_collection = "system.x".into()),
            Some("mongo.inbox_collection")
        );
        assert_eq!(
            with(|c| c.inbox_collection = String::new()),
            Some("mongo.inbox_collection")
        );
        let (_, why) = MongoConfig {
            database: Some("shop.eu".into()),
            ..MongoConfig::default()
        }
        .problem()
        .unwrap();
        assert!(why.contains("'.'"), "{why}");
    }

    #[test]
    fn service_names_become_valid_database_names() {
        assert_eq!(database_name("orders"), "orders");
        assert_eq!(database_name("orders-api_v2"), "orders-api_v2");
        assert_eq!(database_name("shop.orders"), "shop_orders");
        assert_eq!(
            database_name(r#"a/b\c d"e$f*g<h>i:j|k?l"#),
            "a_b_c_d_e_f_g_h_i_j_k_l"
        );
        assert_eq!(database_name(""), "mamey");
        let long = database_name(&"x".repeat(100));
        assert_eq!(long.len(), 63);
        // Cut on a character boundary: 'é' is two bytes.
        let accented = database_name(&"é".repeat(40));
        assert_eq!(accented, "é".repeat(31));
        for name in [long, accented, database_name("a.b c")] {
            assert_eq!(check_database_name(&name), Ok(()), "{name}");
        }
    }
}
