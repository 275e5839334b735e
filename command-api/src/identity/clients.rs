//! Machine clients and their secrets (`auth.clients`): the client-credentials grant checks a
//! secret by comparing SHA-256 digests in constant time; the secrets themselves are not kept.

use std::collections::HashMap;

use aws_lc_rs::constant_time::verify_slices_are_equal;
use infra::auth::is_client_id;
use infra::secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
#[error("auth.clients: {0}")]
pub struct ClientsError(String);

#[derive(Default)]
pub struct Clients {
    digests: HashMap<String, [u8; 32]>,
}

impl Clients {
    /// From `client_id=secret` entries; secrets shorter than 16 characters are refused.
    pub fn parse(entries: &[SecretString]) -> Result<Self, ClientsError> {
        let mut digests = HashMap::new();
        for entry in entries {
            let (id, secret) = entry
                .expose_secret()
                .split_once('=')
                .ok_or_else(|| ClientsError("an entry is not `client_id=secret`".into()))?;
            let id = id.trim();
            if !is_client_id(id) {
                return Err(ClientsError(format!(
                    "{id:?} is not a client id ([a-z0-9._-], 1 to 64)"
                )));
            }
            if secret.trim().chars().count() < 16 {
                return Err(ClientsError(format!(
                    "the secret of {id} is shorter than 16 characters"
                )));
            }
            digests.insert(
                id.to_owned(),
                Sha256::digest(secret.trim().as_bytes()).into(),
            );
        }
        Ok(Self { digests })
    }

    /// Whether `secret` is the client's. Unknown clients cost the same comparison.
    pub fn verify(&self, client_id: &str, secret: &str) -> bool {
        let offered: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        let (known, expected) = match self.digests.get(client_id) {
            Some(digest) => (true, *digest),
            None => (false, [0u8; 32]),
        };
        let equal = verify_slices_are_equal(&offered, &expected).is_ok();
        known && equal
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> SecretString {
        SecretString::from(s.to_owned())
    }

    #[test]
    fn a_client_is_known_by_its_secret_only() {
        let clients = Clients::parse(&[secret("process-manager=0123456789abcdef")]).unwrap();
        assert!(clients.verify("process-manager", "0123456789abcdef"));
        assert!(!clients.verify("process-manager", "0123456789abcdeF"));
        assert!(!clients.verify("someone", "0123456789abcdef"));
    }

    #[test]
    fn malformed_entries_and_short_secrets_are_refused() {
        for entry in ["no-equals", "Bad Id=0123456789abcdef", "pm=short"] {
            assert!(Clients::parse(&[secret(entry)]).is_err(), "{entry}");
        }
    }
}
