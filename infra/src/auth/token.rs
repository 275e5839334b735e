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
    /// By kid: the raw public key (to tell a key replaced under its kid) and its decoder.
    keys: RwLock<HashMap<String, (Vec<u8>, DecodingKey)>>,
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

    /// Replaces the trusted keys: `(kid, raw Ed25519 public key)`. The remembered tokens are
    /// forgotten when any key is removed, added or replaced under its kid.
    pub fn replace_keys(&self, keys: Vec<(String, Vec<u8>)>) {
        let decoded: HashMap<String, (Vec<u8>, DecodingKey)> = keys
            .into_iter()
            .map(|(kid, public)| {
                let key = DecodingKey::from_ed_der(&public);
                (kid, (public, key))
            })
            .collect();
        if let Ok(mut guard) = self.keys.write() {
            let changed = guard.len() != decoded.len()
                || decoded.iter().any(|(kid, (public, _))| {
                    guard.get(kid).is_none_or(|(known, _)| known != public)
                });
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
        let (_, key) = keys.get(kid).ok_or(TokenError::UnknownKey)?;
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
#[path = "token_tests.rs"]
mod tests;
