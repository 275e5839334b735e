//! Ed25519 signing keys: loaded from a directory of PKCS#8 PEM files (one per key, named
//! `<kid>.pem`), the public halves published as a JWKS.
//!
//! Rotation without downtime (`docs/security.md`): put the new key's file beside the old one
//! on every command API instance and restart them one by one (both keys are in the JWKS, the
//! old one still signs); then name the new key in `auth.signing_kid`; remove the old file once
//! the last token it signed has expired (`auth.access_ttl_secs`).

use std::path::{Path, PathBuf};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use jsonwebtoken::EncodingKey;
use serde_json::{json, Value};

const PEM_BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
const PEM_END: &str = "-----END PRIVATE KEY-----";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("reading signing keys from {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not an Ed25519 private key in PKCS#8 PEM form")]
    NotAKey { path: PathBuf },
    #[error("no signing key in {0} (and generating one is switched off)")]
    None(PathBuf),
    #[error("the signing key {0:?} named in auth.signing_kid is not in the key directory")]
    UnknownKid(String),
    #[error("generating a signing key failed")]
    Generate,
}

/// One private key and its id.
pub struct SigningKey {
    pub kid: String,
    pub encoding: EncodingKey,
    /// The raw 32-byte Ed25519 public key.
    pub public: Vec<u8>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// From PKCS#8 DER (v1 as `openssl genpkey -algorithm ed25519` writes it, or v2).
    pub fn from_pkcs8(kid: &str, der: &[u8]) -> Option<Self> {
        let pair = Ed25519KeyPair::from_pkcs8(der).ok()?;
        Some(Self {
            kid: kid.to_owned(),
            encoding: EncodingKey::from_ed_der(der),
            public: pair.public_key().as_ref().to_vec(),
        })
    }

    /// This key's public half as a JWK.
    pub fn jwk(&self) -> Value {
        json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "alg": "EdDSA",
            "use": "sig",
            "kid": self.kid,
            "x": URL_SAFE_NO_PAD.encode(&self.public),
        })
    }
}

/// The keys a command API instance holds; one of them signs.
#[derive(Debug)]
pub struct SigningKeys {
    keys: Vec<SigningKey>,
    current: usize,
}

impl SigningKeys {
    /// Loads every `*.pem` in `dir`. `signing_kid` names the key that signs; empty means the
    /// last by name (name keys by date, e.g. `2026-12-01.pem`). With `generate` and no key in
    /// the directory, one is generated and written there first (local use only: instances
    /// sharing a directory then share it, others would each make their own).
    pub fn load(dir: &Path, signing_kid: &str, generate: bool) -> Result<Self, KeyError> {
        let io = |source| KeyError::Io {
            path: dir.to_owned(),
            source,
        };
        if generate {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut keys = read_dir(dir)?;
        if keys.is_empty() && generate {
            let kid = chrono::Utc::now().format("%Y-%m-%dT%H%M%S").to_string();
            write_new_key(&dir.join(format!("{kid}.pem")))?;
            keys = read_dir(dir)?;
        }
        Self::from_keys(keys, signing_kid).map_err(|e| match e {
            KeyError::None(_) => KeyError::None(dir.to_owned()),
            other => other,
        })
    }

    pub fn from_keys(mut keys: Vec<SigningKey>, signing_kid: &str) -> Result<Self, KeyError> {
        keys.sort_by(|a, b| a.kid.cmp(&b.kid));
        if keys.is_empty() {
            return Err(KeyError::None(PathBuf::new()));
        }
        let current = if signing_kid.is_empty() {
            keys.len() - 1
        } else {
            keys.iter()
                .position(|k| k.kid == signing_kid)
                .ok_or_else(|| KeyError::UnknownKid(signing_kid.to_owned()))?
        };
        Ok(Self { keys, current })
    }

    /// The key new tokens are signed with.
    pub fn current(&self) -> &SigningKey {
        &self.keys[self.current]
    }

    pub fn all(&self) -> &[SigningKey] {
        &self.keys
    }

    /// `{"keys": [...]}`: every key's public half, so tokens signed by a key being retired
    /// still verify until they expire.
    pub fn jwks(&self) -> Value {
        json!({ "keys": self.keys.iter().map(SigningKey::jwk).collect::<Vec<_>>() })
    }
}

fn read_dir(dir: &Path) -> Result<Vec<SigningKey>, KeyError> {
    let io = |source| KeyError::Io {
        path: dir.to_owned(),
        source,
    };
    let mut keys = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("pem") {
            continue;
        }
        let Some(kid) = path.file_stem().and_then(|s| s.to_str()).map(str::to_owned) else {
            continue;
        };
        let text = std::fs::read_to_string(&path).map_err(|source| KeyError::Io {
            path: path.clone(),
            source,
        })?;
        let key = pem_der(&text)
            .and_then(|der| SigningKey::from_pkcs8(&kid, &der))
            .ok_or_else(|| KeyError::NotAKey { path: path.clone() })?;
        keys.push(key);
    }
    Ok(keys)
}

/// The DER inside a `PRIVATE KEY` PEM block.
fn pem_der(text: &str) -> Option<Vec<u8>> {
    let start = text.find(PEM_BEGIN)? + PEM_BEGIN.len();
    let end = text[start..].find(PEM_END)? + start;
    let body: String = text[start..end].split_whitespace().collect();
    STANDARD.decode(body).ok()
}

/// A new Ed25519 key as PKCS#8 PEM text.
pub fn generate_pem() -> Result<String, KeyError> {
    let document =
        Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| KeyError::Generate)?;
    let encoded = STANDARD.encode(document.as_ref());
    let mut pem = String::from(PEM_BEGIN);
    pem.push('\n');
    for line in encoded.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str(PEM_END);
    pem.push('\n');
    Ok(pem)
}

/// Writes a new key to `path`, readable by its owner only.
pub fn write_new_key(path: &Path) -> Result<(), KeyError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let pem = generate_pem()?;
    let io = |source| KeyError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    file.write_all(pem.as_bytes()).map_err(io)
}

/// Parses a generated PEM (for tests and tools that hold keys in memory).
pub fn key_from_pem(kid: &str, pem: &str) -> Option<SigningKey> {
    pem_der(pem).and_then(|der| SigningKey::from_pkcs8(kid, &der))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_loads_and_publishes_its_public_half() {
        let key = key_from_pem("k1", &generate_pem().unwrap()).unwrap();
        assert_eq!(key.public.len(), 32);
        let jwk = key.jwk();
        assert_eq!(jwk["kid"], "k1");
        assert_eq!(jwk["crv"], "Ed25519");
        assert_eq!(
            URL_SAFE_NO_PAD.decode(jwk["x"].as_str().unwrap()).unwrap(),
            key.public
        );
    }

    #[test]
    fn a_pkcs8_v1_key_loads_and_junk_does_not() {
        // The form `openssl genpkey -algorithm ed25519` writes: no public key inside.
        let v1 = Ed25519KeyPair::generate_pkcs8v1(&SystemRandom::new()).unwrap();
        assert!(SigningKey::from_pkcs8("v1", v1.as_ref()).is_some());
        let junk = format!("{PEM_BEGIN}\nAAAA\n{PEM_END}\n");
        assert!(key_from_pem("junk", &junk).is_none());
    }

    #[test]
    fn the_named_key_signs_else_the_last_by_name() {
        let make = |kid: &str| key_from_pem(kid, &generate_pem().unwrap()).unwrap();
        let keys = SigningKeys::from_keys(vec![make("b"), make("a")], "").unwrap();
        assert_eq!(keys.current().kid, "b");
        assert_eq!(keys.jwks()["keys"].as_array().unwrap().len(), 2);
        let keys = SigningKeys::from_keys(vec![make("b"), make("a")], "a").unwrap();
        assert_eq!(keys.current().kid, "a");
        assert!(matches!(
            SigningKeys::from_keys(vec![make("a")], "zz"),
            Err(KeyError::UnknownKid(_))
        ));
    }
}
