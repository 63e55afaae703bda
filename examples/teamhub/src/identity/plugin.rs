//! The `[identity]` section and the plug-in that reads it when the service
//! is built: the signing key (read
//! once from the secret store, never per request), and the password
//! hasher.

use std::time::Duration;

use mamey_core::config::ConfigSection;
use mamey_core::{BoxError, InitContext, Plugin};
use mamey_secrets::SecretStore;
use serde::{Deserialize, Serialize};

use super::keys::{AccessTokens, JwkSet, SigningSecret};
use super::passwords::Passwords;

/// The `[identity]` section.
///
/// ```toml
/// [identity]
/// signing_secret = "teamhub/signing"   # keys `private_key_pem`, `key_id`
/// access_token_ttl = "15m"
/// refresh_token_ttl = "720h"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct IdentityConfig {
    /// The secret holding the signing key.
    signing_secret: String,
    /// How long an access token is valid.
    #[serde(with = "mamey_core::config::duration")]
    access_token_ttl: Duration,
    /// How long a refresh token is valid.
    #[serde(with = "mamey_core::config::duration")]
    refresh_token_ttl: Duration,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        Self {
            signing_secret: "teamhub/signing".into(),
            access_token_ttl: Duration::from_secs(15 * 60),
            refresh_token_ttl: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

impl ConfigSection for IdentityConfig {
    const KEY: &'static str = "identity";
}

/// How long refresh tokens are valid; a resource.
#[derive(Debug, Clone, Copy)]
pub(super) struct RefreshTtl(pub(super) Duration);

/// Reads `[identity]` and provides [`AccessTokens`], [`JwkSet`],
/// [`RefreshTtl`] and [`Passwords`]. Needs the `SecretStore` of the
/// secrets plug-in, added before it.
#[derive(Debug, Default)]
pub(super) struct Credentials;

impl Plugin for Credentials {
    fn name(&self) -> &'static str {
        "identity-credentials"
    }

    async fn init(&mut self, ctx: &mut InitContext<'_>) -> Result<(), BoxError> {
        let config = ctx.section::<IdentityConfig>()?;
        for (key, ttl) in [
            ("identity.access_token_ttl", config.access_token_ttl),
            ("identity.refresh_token_ttl", config.refresh_token_ttl),
        ] {
            if ttl < Duration::from_secs(1) {
                return Err(ctx.config().invalid(key, "expected at least 1s").into());
            }
        }

        let store = ctx.resource::<SecretStore>()?;
        let secret: SigningSecret = store
            .read(config.signing_secret.as_str())
            .await
            .map_err(|e| format!("reading the signing key `{}`: {e}", config.signing_secret))?;
        ctx.provide(AccessTokens::new(&secret, config.access_token_ttl)?)?;
        ctx.provide(JwkSet::of(&secret)?)?;
        ctx.provide(RefreshTtl(config.refresh_token_ttl))?;

        let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        ctx.provide(Passwords::new(cpus).await?)?;
        tracing::info!(key_id = %secret.key_id, "identity signs access tokens with this key");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_the_documented_ones() {
        let config = IdentityConfig::default();
        assert_eq!(config.access_token_ttl, Duration::from_secs(900));
        assert_eq!(config.refresh_token_ttl, Duration::from_secs(30 * 86_400));
        let parsed: IdentityConfig =
            serde_json::from_value(serde_json::json!({ "refresh_token_ttl": "720h" })).unwrap();
        assert_eq!(parsed, config);
    }
}
