//! The command API's JWKS as another service fetches it (over HTTP, or from a `file://` URL
//! when the public keys are distributed as configuration): parsed strictly (Ed25519 `OKP` keys
//! with a `kid` only), fetched at most every [`MIN_REFETCH`], so a flood of tokens naming an
//! unknown key cannot turn into a flood of fetches.

use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::Value;
use tokio::sync::Mutex;

/// The shortest time between two fetches.
pub const MIN_REFETCH: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("fetching {url}")]
    Fetch {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url} answered {status}")]
    Status { url: String, status: u16 },
    #[error("the JWKS holds no usable Ed25519 key")]
    Empty,
    #[error("reading {path}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not JSON")]
    NotJson {
        path: String,
        #[source]
        source: serde_json::Error,
    },
}

pub struct JwksSource {
    url: String,
    http: reqwest::Client,
    last: Mutex<Option<Instant>>,
}

impl JwksSource {
    pub fn new(url: &str) -> Result<Self, reqwest::Error> {
        Ok(Self {
            url: url.to_owned(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()?,
            last: Mutex::new(None),
        })
    }

    /// Fetches the keys unless the last fetch was less than [`MIN_REFETCH`] ago or another is
    /// under way (requests naming an unknown key do not queue behind a slow fetch).
    pub async fn fetch_if_due(&self) -> Result<Option<Vec<(String, Vec<u8>)>>, JwksError> {
        let Ok(mut last) = self.last.try_lock() else {
            return Ok(None);
        };
        if last.is_some_and(|at| at.elapsed() < MIN_REFETCH) {
            return Ok(None);
        }
        *last = Some(Instant::now());
        let document = match self.url.strip_prefix("file://") {
            Some(path) => read_file(path).await?,
            None => self.fetch().await?,
        };
        let keys = parse(&document);
        if keys.is_empty() {
            return Err(JwksError::Empty);
        }
        Ok(Some(keys))
    }

    async fn fetch(&self) -> Result<Value, JwksError> {
        let fetch = |source| JwksError::Fetch {
            url: self.url.clone(),
            source,
        };
        let response = self.http.get(&self.url).send().await.map_err(fetch)?;
        if !response.status().is_success() {
            return Err(JwksError::Status {
                url: self.url.clone(),
                status: response.status().as_u16(),
            });
        }
        response.json().await.map_err(fetch)
    }
}

/// A JWKS document from a file (`file://` URLs): keys distributed as configuration.
async fn read_file(path: &str) -> Result<Value, JwksError> {
    let text = tokio::fs::read_to_string(path)
        .await
        .map_err(|source| JwksError::File {
            path: path.to_owned(),
            source,
        })?;
    serde_json::from_str(&text).map_err(|source| JwksError::NotJson {
        path: path.to_owned(),
        source,
    })
}

/// `(kid, raw public key)` of every Ed25519 signing key in a JWKS document; others are skipped.
pub fn parse(document: &Value) -> Vec<(String, Vec<u8>)> {
    document["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|k| k["kty"] == "OKP" && k["crv"] == "Ed25519")
        .filter(|k| k["use"].is_null() || k["use"] == "sig")
        .filter_map(|k| {
            let kid = k["kid"].as_str().filter(|s| !s.is_empty())?;
            let x = URL_SAFE_NO_PAD.decode(k["x"].as_str()?).ok()?;
            (x.len() == 32).then(|| (kid.to_owned(), x))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::keys::{generate_pem, key_from_pem};
    use crate::auth::SigningKeys;
    use serde_json::json;

    #[test]
    fn a_published_jwks_parses_back_and_foreign_keys_are_skipped() {
        let key = key_from_pem("k1", &generate_pem().unwrap()).unwrap();
        let public = key.public.clone();
        let keys = SigningKeys::from_keys(vec![key], "").unwrap();
        let mut document = keys.jwks();
        document["keys"].as_array_mut().unwrap().extend([
            json!({"kty": "RSA", "kid": "rsa", "n": "AQAB", "e": "AQAB"}),
            json!({"kty": "OKP", "crv": "Ed25519", "x": "AAAA", "kid": "short"}),
            json!({"kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode([0u8; 32])}),
        ]);
        assert_eq!(parse(&document), vec![("k1".to_owned(), public)]);
        assert!(parse(&json!({})).is_empty());
    }
}
