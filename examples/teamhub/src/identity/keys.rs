//! The signing key: an EC P-256 private key (secret `teamhub/signing`),
//! the ES256 issuer of access tokens made from it, and its public half as a
//! JWK set (`GET /.well-known/jwks.json`). [`signing_secret`] makes a fresh
//! key pair for the launchers.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mamey_core::cqrs::{Query, Res};
use mamey_core::{BoxError, Error, Identity};
use mamey_http::JwtIssuer;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The `iss` of access tokens (`http.jwt.issuer` of every service).
const ISSUER: &str = "teamhub-identity";
/// The `aud` of access tokens (`http.jwt.audiences` of every service).
const AUDIENCE: &str = "teamhub";

/// Makes a fresh EC P-256 key pair for the secrets `teamhub/signing` and
/// `teamhub/jwt`: the private key (PKCS#8 PEM), the public key (SPKI PEM,
/// what `http.jwt.public_key_pem` takes) and a new key id.
///
/// # Errors
/// The key could not be generated.
pub fn signing_secret() -> Result<(String, String, String), BoxError> {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    Ok((
        pair.serialize_pem(),
        pair.public_key_pem(),
        mamey_core::new_id(),
    ))
}

/// The secret `teamhub/signing`.
#[derive(Deserialize)]
pub(super) struct SigningSecret {
    /// The EC P-256 private key, PKCS#8 PEM.
    pub(super) private_key_pem: mamey_core::config::Secret<String>,
    /// The `kid` of the tokens it signs, and of its JWK.
    pub(super) key_id: String,
}

/// Issues the access tokens: ES256, `sub` the user id. Built once, when the
/// service is built; a resource.
#[derive(Clone, Debug)]
pub(super) struct AccessTokens {
    issuer: JwtIssuer,
    ttl: Duration,
}

impl AccessTokens {
    /// Tokens signed with `secret`'s key, valid for `ttl`.
    ///
    /// # Errors
    /// The key is not an EC P-256 private key in PKCS#8 PEM.
    pub(super) fn new(secret: &SigningSecret, ttl: Duration) -> Result<Self, Error> {
        let issuer = JwtIssuer::es256(secret.private_key_pem.expose())?
            .key_id(&secret.key_id)
            .issuer(ISSUER)
            .audience(AUDIENCE)
            .ttl(ttl);
        Ok(Self { issuer, ttl })
    }

    /// A token for `user`.
    ///
    /// # Errors
    /// Signing failed.
    pub(super) fn issue(&self, user: i64) -> Result<String, Error> {
        self.issuer.issue(&Identity::new(user.to_string()))
    }

    /// How long a token is valid, in seconds.
    pub(super) fn ttl_seconds(&self) -> u64 {
        self.ttl.as_secs()
    }
}

/// `GET /.well-known/jwks.json`: the key that signs access tokens.
#[derive(Debug, Deserialize, ToSchema)]
pub(super) struct GetSigningKeys {}

impl Query for GetSigningKeys {
    type Output = JwkSet;
}

/// A JSON Web Key Set (RFC 7517); a resource, made once from the signing
/// key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub(super) struct JwkSet {
    /// The keys: the one signing key.
    pub(super) keys: Vec<Jwk>,
}

/// The public half of an EC P-256 signing key as a JWK (RFC 7518 §6.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub(super) struct Jwk {
    /// `EC`.
    pub(super) kty: String,
    /// `P-256`.
    pub(super) crv: String,
    /// `ES256`.
    pub(super) alg: String,
    /// `sig`.
    #[serde(rename = "use")]
    pub(super) use_: String,
    /// The key id tokens name in their `kid` header.
    pub(super) kid: String,
    /// The point's x coordinate, base64url without padding.
    pub(super) x: String,
    /// The point's y coordinate, base64url without padding.
    pub(super) y: String,
}

impl JwkSet {
    /// The set of `secret`'s public key.
    ///
    /// # Errors
    /// The key is not an EC P-256 private key in PEM.
    pub(super) fn of(secret: &SigningSecret) -> Result<Self, Error> {
        let not_p256 = |why: String| {
            Error::internal(format!(
                "the signing key is not an EC P-256 private key: {why}"
            ))
        };
        let pair = rcgen::KeyPair::from_pem(secret.private_key_pem.expose())
            .map_err(|e| not_p256(e.to_string()))?;
        if pair.algorithm() != &rcgen::PKCS_ECDSA_P256_SHA256 {
            return Err(not_p256("another algorithm".into()));
        }
        let (x, y) = coordinates(pair.public_key_raw())
            .ok_or_else(|| not_p256("the public point is not 65 bytes, 0x04 || x || y".into()))?;
        Ok(Self {
            keys: vec![Jwk {
                kty: "EC".into(),
                crv: "P-256".into(),
                alg: "ES256".into(),
                use_: "sig".into(),
                kid: secret.key_id.clone(),
                x: URL_SAFE_NO_PAD.encode(x),
                y: URL_SAFE_NO_PAD.encode(y),
            }],
        })
    }
}

/// The x and y of an uncompressed SEC1 P-256 point (`0x04 || x || y`).
fn coordinates(point: &[u8]) -> Option<(&[u8], &[u8])> {
    match point.split_first() {
        Some((0x04, xy)) if xy.len() == 64 => Some(xy.split_at(32)),
        _ => None,
    }
}

/// The signing key's JWK set.
pub(super) async fn signing_keys(
    _: GetSigningKeys,
    Res(keys): Res<JwkSet>,
) -> Result<JwkSet, Error> {
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> SigningSecret {
        let (private_pem, _, key_id) = signing_secret().unwrap();
        SigningSecret {
            private_key_pem: private_pem.into(),
            key_id,
        }
    }

    #[test]
    fn the_jwk_carries_the_public_point() {
        let secret = secret();
        let set = JwkSet::of(&secret).unwrap();
        let [key] = set.keys.as_slice() else {
            panic!("one key: {set:?}")
        };
        assert_eq!(
            (key.kty.as_str(), key.crv.as_str(), key.alg.as_str()),
            ("EC", "P-256", "ES256")
        );
        assert_eq!(key.kid, secret.key_id);
        let x = URL_SAFE_NO_PAD.decode(&key.x).unwrap();
        let y = URL_SAFE_NO_PAD.decode(&key.y).unwrap();
        let pair = rcgen::KeyPair::from_pem(secret.private_key_pem.expose()).unwrap();
        assert_eq!([&[4][..], &x, &y].concat(), pair.public_key_raw());
        let json = serde_json::to_value(&set).unwrap();
        assert_eq!(json["keys"][0]["use"], "sig");
        assert_eq!(json["keys"][0]["x"].as_str().map(str::len), Some(43));
    }

    /// A running service that verifies bearer tokens as teamhub's services
    /// do (`http.jwt` from `jwt`), answering `GET /who` with the caller's
    /// subject; and its address.
    async fn verifier(jwt: (&str, &str)) -> (mamey_core::RunningService, String) {
        use axum::routing::get;
        let service = mamey_core::Service::builder("verifier")
            .handle_signals(false)
            .env_vars([
                ("MAMEY__HTTP__ADDRESS", "127.0.0.1:0"),
                ("MAMEY__HTTP__JWT__ISSUER", ISSUER),
                ("MAMEY__HTTP__JWT__AUDIENCES", "[\"teamhub\"]"),
                jwt,
            ])
            .plugin(mamey_http::WebApi::new().router(axum::Router::new().route(
                "/who",
                get(|mamey_http::Caller(who): mamey_http::Caller| async move { who.subject }),
            )))
            .build()
            .await
            .unwrap();
        let mamey_http::HttpAddress(at) = service.resources().get().unwrap();
        (service.start().await.unwrap(), format!("http://{at}"))
    }

    /// `GET url` with `token`: the status and body.
    async fn get_as(url: &str, token: &str) -> (u16, String) {
        use http_body_util::BodyExt;
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<http_body_util::Full<bytes::Bytes>>();
        let request = http::Request::get(url)
            .header("authorization", format!("Bearer {token}"))
            .body(http_body_util::Full::default())
            .unwrap();
        let response = client.request(request).await.unwrap();
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn tokens_verify_with_the_public_key_and_with_the_key_set() {
        let (private_pem, public_pem, key_id) = signing_secret().unwrap();
        let secret = SigningSecret {
            private_key_pem: private_pem.into(),
            key_id,
        };
        let token = AccessTokens::new(&secret, Duration::from_secs(60))
            .unwrap()
            .issue(42)
            .unwrap();
        let forged = {
            let (other_pem, _, _) = signing_secret().unwrap();
            let other = SigningSecret {
                private_key_pem: other_pem.into(),
                key_id: secret.key_id.clone(),
            };
            AccessTokens::new(&other, Duration::from_secs(60))
                .unwrap()
                .issue(42)
                .unwrap()
        };

        // What every service does: the public key from `teamhub/jwt`.
        let (by_pem, at) = verifier(("MAMEY__HTTP__JWT__PUBLIC_KEY_PEM", &public_pem)).await;
        assert_eq!(
            get_as(&format!("{at}/who"), &token).await,
            (200, "42".into())
        );
        assert_eq!(get_as(&format!("{at}/who"), &forged).await.0, 401);

        // The JWK set, as a verifier fetching `jwks.json` sees it.
        let jwks = serde_json::to_string(&JwkSet::of(&secret).unwrap()).unwrap();
        let (publisher, keys_at) = {
            use axum::routing::get;
            let service = mamey_core::Service::builder("keys")
                .handle_signals(false)
                .env_vars([("MAMEY__HTTP__ADDRESS", "127.0.0.1:0")])
                .plugin(mamey_http::WebApi::new().router(
                    axum::Router::new().route("/jwks.json", get(move || async move { jwks })),
                ))
                .build()
                .await
                .unwrap();
            let mamey_http::HttpAddress(at) = service.resources().get().unwrap();
            (
                service.start().await.unwrap(),
                format!("http://{at}/jwks.json"),
            )
        };
        let (by_set, at) = verifier(("MAMEY__HTTP__JWT__JWKS_URL", &keys_at)).await;
        assert_eq!(
            get_as(&format!("{at}/who"), &token).await,
            (200, "42".into())
        );
        assert_eq!(get_as(&format!("{at}/who"), &forged).await.0, 401);
        for running in [by_pem, by_set, publisher] {
            running.stop().await.unwrap();
        }
    }

    #[test]
    fn other_keys_are_refused() {
        let rsa_like = SigningSecret {
            private_key_pem: "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
                .to_owned()
                .into(),
            key_id: "k".into(),
        };
        assert!(JwkSet::of(&rsa_like).is_err());
        assert!(coordinates(&[4; 64]).is_none());
        assert!(coordinates(&[[2].as_slice(), &[0; 64]].concat()).is_none());
    }
}
