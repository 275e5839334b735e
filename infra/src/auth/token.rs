//! Access tokens: issuing (command API) and verifying (both APIs).

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::jwks::JwksSource;
use super::{Principal, Role, SigningKeys, Subject};

/// Longest lifetime of an access token, whatever the settings say.
pub const MAX_ACCESS_TTL: Duration = Duration::from_secs(15 * 60);
/// The `typ` of access tokens (RFC 9068).
pub const TOKEN_TYPE: &str = "at+jwt";
/// Most verified tokens remembered per process.
const VERIFIED_CAPACITY: u64 = 100_000;
/// Clock skew tolerated on `exp`, `nbf` and `iat`.
pub const LEEWAY_SECS: u64 = 30;

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    /// `user:<id>` or `service:<client_id>`.
    pub sub: String,
    pub roles: Vec<String>,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub jti: String,
}

/// A signed access token and how long it lives.
#[derive(Debug, Clone)]
pub struct Issued {
    pub token: String,
    pub expires_in: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the token is malformed or its signature, algorithm or claims are not accepted")]
    Invalid,
    #[error("the token has expired")]
    Expired,
    #[error("the token's key id is not known")]
    UnknownKey,
    #[error("signing failed")]
    Signing(#[source] jsonwebtoken::errors::Error),
}

/// Signs access tokens with the current key.
pub fn issue(
    keys: &SigningKeys,
    issuer: &str,
    audience: &str,
    principal: &Principal,
    ttl: Duration,
) -> Result<Issued, TokenError> {
    let ttl = ttl.min(MAX_ACCESS_TTL);
    let now = chrono::Utc::now().timestamp();
    let claims = Claims {
        iss: issuer.to_owned(),
        aud: audience.to_owned(),
        sub: principal.sub(),
        roles: principal
            .roles
            .iter()
            .map(|r| r.as_str().to_owned())
            .collect(),
        iat: now,
        nbf: now,
        exp: now + ttl.as_secs() as i64,
        jti: Uuid::now_v7().to_string(),
    };
    let key = keys.current();
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(key.kid.clone());
    header.typ = Some(TOKEN_TYPE.to_owned());
    let token =
        jsonwebtoken::encode(&header, &claims, &key.encoding).map_err(TokenError::Signing)?;
    Ok(Issued {
        token,
        expires_in: ttl.as_secs(),
    })
}

/// Verifies access tokens against a set of public keys: the command API's own, or a JWKS
/// fetched from it (refreshed when a token names a key not seen yet, at most every few
/// seconds, so rotated keys are picked up without a restart).
pub struct Verifier {
    keys: RwLock<HashMap<String, DecodingKey>>,
    validation: Validation,
    source: Option<JwksSource>,
    /// Tokens already verified, by their exact text, with the principal and expiry: a client
    /// sends the same token for up to 15 minutes, and checking an Ed25519 signature costs
    /// more than serving a cached read. Emptied whenever the trusted keys change, so a
    /// removed key's tokens stop working at once.
    verified: moka::sync::Cache<String, (Principal, i64)>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").finish_non_exhaustive()
    }
}

impl Verifier {
    pub fn new(issuer: &str, audience: &str) -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        Self {
            keys: RwLock::new(HashMap::new()),
            validation,
            source: None,
            verified: moka::sync::Cache::builder()
                .max_capacity(VERIFIED_CAPACITY)
                .time_to_live(MAX_ACCESS_TTL)
                .build(),
        }
    }

    /// Trusts exactly these keys (the command API verifies with its own).
    pub fn with_keys(self, keys: &SigningKeys) -> Self {
        self.replace_keys(
            keys.all()
                .iter()
                .map(|k| (k.kid.clone(), k.public.clone()))
                .collect(),
        );
        self
    }

    /// Trusts the keys of a JWKS document, fetched now and again from `source`.
    pub fn with_source(mut self, source: JwksSource) -> Self {
        self.source = Some(source);
        self
    }

    /// Replaces the trusted keys: `(kid, raw Ed25519 public key)`.
    pub fn replace_keys(&self, keys: Vec<(String, Vec<u8>)>) {
        let decoded: HashMap<String, DecodingKey> = keys
            .into_iter()
            .map(|(kid, public)| (kid, DecodingKey::from_ed_der(&public)))
            .collect();
        if let Ok(mut guard) = self.keys.write() {
            let changed =
                guard.len() != decoded.len() || decoded.keys().any(|kid| !guard.contains_key(kid));
            *guard = decoded;
            if changed {
                self.verified.invalidate_all();
            }
        }
    }

    /// Fetches the JWKS now (if there is a source); `Ok(false)` when it was fetched too
    /// recently to ask again.
    pub async fn refresh(&self) -> Result<bool, super::jwks::JwksError> {
        let Some(source) = &self.source else {
            return Ok(false);
        };
        match source.fetch_if_due().await? {
            Some(keys) => {
                self.replace_keys(keys);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// The principal a bearer token stands for.
    pub async fn verify(&self, token: &str) -> Result<Principal, TokenError> {
        if let Some((principal, exp)) = self.verified.get(token) {
            if chrono::Utc::now().timestamp() < exp + LEEWAY_SECS as i64 {
                return Ok(principal);
            }
            self.verified.invalidate(token);
            return Err(TokenError::Expired);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Invalid)?;
        // Explicitly typed (RFC 8725 3.11): no other kind of JWT signed with these keys passes.
        if header.alg != Algorithm::EdDSA || header.typ.as_deref() != Some(TOKEN_TYPE) {
            return Err(TokenError::Invalid);
        }
        let kid = header.kid.ok_or(TokenError::Invalid)?;
        if !self.knows(&kid) {
            if let Err(error) = self.refresh().await {
                tracing::warn!(error = %crate::error_chain(&error), "fetching the JWKS failed");
            }
        }
        self.verify_with(token, &kid)
    }

    fn knows(&self, kid: &str) -> bool {
        self.keys
            .read()
            .map(|k| k.contains_key(kid))
            .unwrap_or(false)
    }

    fn verify_with(&self, token: &str, kid: &str) -> Result<Principal, TokenError> {
        let keys = self.keys.read().map_err(|_| TokenError::UnknownKey)?;
        let key = keys.get(kid).ok_or(TokenError::UnknownKey)?;
        let data =
            jsonwebtoken::decode::<Claims>(token, key, &self.validation).map_err(|e| {
                match e.kind() {
                    jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                    _ => TokenError::Invalid,
                }
            })?;
        let principal = principal(&data.claims)?;
        self.verified
            .insert(token.to_owned(), (principal.clone(), data.claims.exp));
        Ok(principal)
    }
}

/// The principal of verified claims; a lifetime over the maximum, an unknown subject form or
/// an unknown role make the token invalid.
fn principal(claims: &Claims) -> Result<Principal, TokenError> {
    let lifetime = claims.exp.saturating_sub(claims.iat);
    if lifetime <= 0 || lifetime as u64 > MAX_ACCESS_TTL.as_secs() + LEEWAY_SECS {
        return Err(TokenError::Invalid);
    }
    if claims.iat > chrono::Utc::now().timestamp() + LEEWAY_SECS as i64 {
        return Err(TokenError::Invalid);
    }
    let subject = Subject::parse(&claims.sub).ok_or(TokenError::Invalid)?;
    let roles = claims
        .roles
        .iter()
        .map(|r| Role::parse(r).ok_or(TokenError::Invalid))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Principal::new(subject, roles))
}

/// When a cached token should be replaced: a little before it expires.
pub fn renew_at(issued_at: Instant, expires_in: u64) -> Instant {
    issued_at + Duration::from_secs(expires_in.saturating_mul(4) / 5)
}

#[cfg(test)]
mod tests {
    use super::super::keys::{generate_pem, key_from_pem};
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;

    fn keys(kid: &str) -> SigningKeys {
        SigningKeys::from_keys(
            vec![key_from_pem(kid, &generate_pem().unwrap()).unwrap()],
            "",
        )
        .unwrap()
    }

    fn customer() -> Principal {
        Principal::new(Subject::User(Uuid::now_v7()), [Role::Customer])
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    fn sign(keys: &SigningKeys, header: &Header, claims: &Claims) -> String {
        jsonwebtoken::encode(header, claims, &keys.current().encoding).unwrap()
    }

    fn claims(principal: &Principal) -> Claims {
        let now = chrono::Utc::now().timestamp();
        Claims {
            iss: "iss".into(),
            aud: "aud".into(),
            sub: principal.sub(),
            roles: vec!["customer".into()],
            iat: now,
            nbf: now,
            exp: now + 300,
            jti: "j".into(),
        }
    }

    fn header(kid: &str) -> Header {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(kid.into());
        header.typ = Some(TOKEN_TYPE.into());
        header
    }

    #[test]
    fn an_issued_token_verifies_to_its_principal() {
        let keys = keys("k1");
        let verifier = Verifier::new("iss", "aud").with_keys(&keys);
        let who = customer();
        let issued = issue(&keys, "iss", "aud", &who, Duration::from_secs(900)).unwrap();
        assert_eq!(issued.expires_in, 900);
        assert_eq!(block_on(verifier.verify(&issued.token)).unwrap(), who);
        let too_long = issue(&keys, "iss", "aud", &who, Duration::from_secs(86_400)).unwrap();
        assert_eq!(too_long.expires_in, MAX_ACCESS_TTL.as_secs());
    }

    /// The forgery matrix: each of these must be refused.
    #[test]
    fn forged_or_unfit_tokens_are_refused() {
        let keys = keys("k1");
        let verifier = Verifier::new("iss", "aud").with_keys(&keys);
        let who = customer();
        let good = claims(&who);
        let now = good.iat;
        let mut cases: Vec<(&str, String)> = Vec::new();
        // alg none: header and claims, no signature.
        let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"at+jwt","kid":"k1"}"#);
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&good).unwrap());
        cases.push(("alg none", format!("{none_header}.{body}.")));
        // HS256 keyed with the public key (the classic confusion attack).
        let mut hs = Header::new(Algorithm::HS256);
        hs.kid = Some("k1".into());
        hs.typ = Some(TOKEN_TYPE.into());
        let hmac = jsonwebtoken::EncodingKey::from_secret(&keys.current().public).unwrap();
        cases.push(("hs256", jsonwebtoken::encode(&hs, &good, &hmac).unwrap()));
        // Tampered claims: a signed token whose payload was swapped.
        let signed = sign(&keys, &header("k1"), &good);
        let mut admin = good.clone();
        admin.roles = vec!["admin".into()];
        let parts: Vec<&str> = signed.split('.').collect();
        let swapped = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&admin).unwrap());
        cases.push(("tampered", format!("{}.{swapped}.{}", parts[0], parts[2])));
        // Signed by a key that is not trusted, under a known and an unknown kid.
        let stranger = self::keys("k1");
        cases.push(("foreign key", sign(&stranger, &header("k1"), &good)));
        cases.push(("unknown kid", sign(&keys, &header("k9"), &good)));
        let mut no_kid = header("k1");
        no_kid.kid = None;
        cases.push(("no kid", sign(&keys, &no_kid, &good)));
        let mut untyped = header("k1");
        untyped.typ = Some("JWT".into());
        cases.push(("another type of JWT", sign(&keys, &untyped, &good)));
        let with = |f: &dyn Fn(&mut Claims)| {
            let mut c = good.clone();
            f(&mut c);
            sign(&keys, &header("k1"), &c)
        };
        cases.push((
            "expired",
            with(&|c| {
                c.iat = now - 1000;
                c.nbf = now - 1000;
                c.exp = now - 100
            }),
        ));
        cases.push((
            "not yet valid",
            with(&|c| {
                c.nbf = now + 600;
                c.exp = now + 800
            }),
        ));
        cases.push(("wrong iss", with(&|c| c.iss = "other".into())));
        cases.push(("wrong aud", with(&|c| c.aud = "other".into())));
        cases.push(("too long", with(&|c| c.exp = now + 86_400)));
        cases.push((
            "issued in the future",
            with(&|c| {
                c.iat = now + 600;
                c.exp = now + 800
            }),
        ));
        cases.push(("unknown role", with(&|c| c.roles = vec!["root".into()])));
        cases.push(("bad subject", with(&|c| c.sub = "admin".into())));
        cases.push(("garbage", "not.a.token".into()));
        cases.push(("empty", String::new()));
        for (name, token) in cases {
            assert!(
                block_on(verifier.verify(&token)).is_err(),
                "{name} was accepted"
            );
        }
        assert!(block_on(verifier.verify(&sign(&keys, &header("k1"), &good))).is_ok());
    }

    #[test]
    fn a_remembered_token_stops_working_when_its_key_is_removed() {
        let keys = keys("k1");
        let verifier = Verifier::new("iss", "aud").with_keys(&keys);
        let token = issue(&keys, "iss", "aud", &customer(), Duration::from_secs(60)).unwrap();
        assert!(block_on(verifier.verify(&token.token)).is_ok());
        assert!(
            verifier.verified.get(&token.token).is_some(),
            "a verified token is remembered"
        );
        assert!(
            block_on(verifier.verify(&token.token)).is_ok(),
            "from the cache"
        );
        verifier.replace_keys(vec![(
            "k2".into(),
            self::keys("k2").current().public.clone(),
        )]);
        assert!(block_on(verifier.verify(&token.token)).is_err());
    }

    #[test]
    fn a_retired_key_still_verifies_while_it_is_listed() {
        let old = key_from_pem("2026-01", &generate_pem().unwrap()).unwrap();
        let new = key_from_pem("2026-02", &generate_pem().unwrap()).unwrap();
        let before = SigningKeys::from_keys(vec![old], "").unwrap();
        let token = issue(&before, "iss", "aud", &customer(), Duration::from_secs(60)).unwrap();
        let mut both = vec![new];
        both.extend(before.all().iter().map(|k| SigningKey {
            kid: k.kid.clone(),
            encoding: k.encoding.clone(),
            public: k.public.clone(),
        }));
        let after = SigningKeys::from_keys(both, "").unwrap();
        assert_eq!(after.current().kid, "2026-02");
        let verifier = Verifier::new("iss", "aud").with_keys(&after);
        assert!(block_on(verifier.verify(&token.token)).is_ok());
    }

    use super::super::SigningKey;
}
