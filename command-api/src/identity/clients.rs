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

/// Client ids the command API uses for itself: no configured client may take one (it would
/// share their actor and idempotency scope).
pub const RESERVED: [&str; 2] = ["payments-webhook", "bootstrap"];

#[derive(Default)]
pub struct Clients {
    /// Every secret a client may use: several while one is being rotated.
    digests: HashMap<String, Vec<[u8; 32]>>,
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
            if RESERVED.contains(&id) {
                return Err(ClientsError(format!("{id:?} is reserved")));
            }
            if secret.trim().chars().count() < 16 {
                return Err(ClientsError(format!(
                    "the secret of {id} is shorter than 16 characters"
                )));
            }
            digests
                .entry(id.to_owned())
                .or_insert_with(Vec::new)
                .push(Sha256::digest(secret.trim().as_bytes()).into());
        }
        Ok(Self { digests })
    }

    /// Whether `secret` is one of the client's. Unknown clients cost a comparison too.
    pub fn verify(&self, client_id: &str, secret: &str) -> bool {
        let offered: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        match self.digests.get(client_id) {
            Some(digests) => digests.iter().fold(false, |any, expected| {
                verify_slices_are_equal(&offered, expected).is_ok() | any
            }),
            None => {
                let _ = verify_slices_are_equal(&offered, &[0u8; 32]);
                false
            }
        }
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
    fn two_secrets_of_one_client_both_work_during_a_rotation() {
        let clients = Clients::parse(&[
            secret("process-manager=0123456789abcdef"),
            secret("process-manager=fedcba9876543210"),
        ])
        .unwrap();
        assert!(clients.verify("process-manager", "0123456789abcdef"));
        assert!(clients.verify("process-manager", "fedcba9876543210"));
        assert!(!clients.verify("process-manager", "0000000000000000"));
    }

    #[test]
    fn malformed_entries_short_secrets_and_reserved_ids_are_refused() {
        for entry in [
            "no-equals",
            "Bad Id=0123456789abcdef",
            "pm=short",
            "payments-webhook=0123456789abcdef",
            "bootstrap=0123456789abcdef",
        ] {
            assert!(Clients::parse(&[secret(entry)]).is_err(), "{entry}");
        }
    }
}
