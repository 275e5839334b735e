//! Password hashing with argon2id, off the async runtime and bounded: at most
//! `auth.hashing_threads` hashes run at once (each on a blocking thread) and at most
//! `auth.hashing_queue` more wait; past that the request is refused at once, so a login flood
//! cannot starve other requests of threads or memory. New hashes (registrations, password
//! resets, upgrades) may take at most half of those places: a flood of registrations (each a
//! hash, even for an email already taken) cannot refuse every login.

use std::sync::Arc;

use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};
use infra::secrecy::{ExposeSecret, SecretString};
use infra::settings::AuthSettings;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Shortest and longest password, in characters.
pub const MIN_LENGTH: usize = 12;
pub const MAX_LENGTH: usize = 128;

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("too many password hashes are waiting")]
    Busy,
    #[error("password hashing failed: {0}")]
    Failed(String),
}

/// Checks a new password's length (in characters, as the contract counts).
pub fn check_length(password: &str) -> Result<(), String> {
    let length = password.chars().count();
    if !(MIN_LENGTH..=MAX_LENGTH).contains(&length) {
        return Err(format!(
            "must be {MIN_LENGTH} to {MAX_LENGTH} characters long"
        ));
    }
    Ok(())
}

#[derive(Clone)]
pub struct Passwords {
    params: Params,
    running: Arc<Semaphore>,
    waiting: Arc<Semaphore>,
    /// The share of `waiting` new hashes may hold: half, at least one.
    new_hashes: Arc<Semaphore>,
    /// A hash of a random password, verified against when an account does not exist so
    /// that the answer takes as long as for a wrong password.
    decoy: Arc<String>,
}

impl Passwords {
    pub fn new(settings: &AuthSettings) -> Result<Self, HashError> {
        let params = Params::new(
            settings.argon2_memory_kib,
            settings.argon2_iterations,
            settings.argon2_parallelism,
            None,
        )
        .map_err(|e| HashError::Failed(e.to_string()))?;
        let decoy = hasher(&params)
            .hash_password(uuid::Uuid::new_v4().as_bytes())
            .map_err(|e| HashError::Failed(e.to_string()))?
            .to_string();
        let places = settings.hashing_threads.max(1) + settings.hashing_queue;
        Ok(Self {
            params,
            running: Arc::new(Semaphore::new(settings.hashing_threads.max(1))),
            waiting: Arc::new(Semaphore::new(places)),
            new_hashes: Arc::new(Semaphore::new((places / 2).max(1))),
            decoy: Arc::new(decoy),
        })
    }

    /// The PHC string of a new hash (salted).
    pub async fn hash(&self, password: &SecretString) -> Result<String, HashError> {
        let share = self
            .new_hashes
            .clone()
            .try_acquire_owned()
            .map_err(|_| HashError::Busy)?;
        let password = password.clone();
        let params = self.params.clone();
        self.bounded(Some(share), move || {
            hasher(&params)
                .hash_password(password.expose_secret().as_bytes())
                .map(|h| h.to_string())
                .map_err(|e| HashError::Failed(e.to_string()))
        })
        .await?
    }

    /// Whether `password` matches `stored`; with no stored hash, a decoy is checked so the
    /// time taken does not tell whether the account exists.
    pub async fn verify(
        &self,
        password: &SecretString,
        stored: Option<String>,
    ) -> Result<bool, HashError> {
        let password = password.clone();
        let exists = stored.is_some();
        let stored = stored.unwrap_or_else(|| self.decoy.as_str().to_owned());
        let params = self.params.clone();
        let matched = self
            .bounded(None, move || {
                hasher(&params)
                    .verify_password(password.expose_secret().as_bytes(), stored.as_str())
                    .is_ok()
            })
            .await?;
        Ok(exists && matched)
    }

    /// Whether `stored` was made otherwise than a new hash would be (another algorithm,
    /// version or cost): it still verifies, and is replaced at the next successful login. A
    /// string that is no PHC hash is left alone (it verifies nothing anyway).
    pub fn outdated(&self, stored: &str) -> bool {
        let Ok(hash) = argon2::PasswordHash::new(stored) else {
            return false;
        };
        let Ok(params) = Params::try_from(&hash) else {
            return true;
        };
        hash.algorithm != Algorithm::Argon2id.ident()
            || hash.version != Some(Version::V0x13.into())
            || (params.m_cost(), params.t_cost(), params.p_cost())
                != (
                    self.params.m_cost(),
                    self.params.t_cost(),
                    self.params.p_cost(),
                )
    }

    /// Runs `work` on a blocking thread once a running place is free, refusing it (`Busy`)
    /// when every waiting place is taken. The places (and `held`) go with the work, not with
    /// the caller: a caller that goes away (a client that disconnects) cannot free them while
    /// the hash still runs. Before, it did, and clients that hung up at once got unbounded
    /// hashes running past the limit.
    async fn bounded<T: Send + 'static>(
        &self,
        held: Option<OwnedSemaphorePermit>,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HashError> {
        let queued = self
            .waiting
            .clone()
            .try_acquire_owned()
            .map_err(|_| HashError::Busy)?;
        // From here: the wait for a hashing thread counts, so saturation shows in the metric.
        let started = std::time::Instant::now();
        let running = self
            .running
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| HashError::Busy)?;
        let result = tokio::task::spawn_blocking(move || {
            let _places = (held, queued, running);
            work()
        })
        .await
        .map_err(|e| HashError::Failed(e.to_string()));
        metrics::histogram!("password_hash_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        result
    }
}

fn hasher(params: &Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> AuthSettings {
        let mut settings = infra::settings::Settings::load_from(None).unwrap().auth;
        settings.argon2_memory_kib = 1024;
        settings.argon2_iterations = 1;
        settings.hashing_threads = 1;
        settings.hashing_queue = 0;
        settings
    }

    #[tokio::test]
    async fn a_hash_made_with_other_costs_is_outdated() {
        let current = Passwords::new(&settings()).unwrap();
        let secret = SecretString::from("correct horse battery".to_owned());
        let fresh = current.hash(&secret).await.unwrap();
        assert!(!current.outdated(&fresh));
        let mut cheaper = settings();
        cheaper.argon2_memory_kib = 512;
        let old = Passwords::new(&cheaper)
            .unwrap()
            .hash(&secret)
            .await
            .unwrap();
        assert!(current.outdated(&old));
        // Still verified under the current settings: the hash carries its own costs.
        assert!(current.verify(&secret, Some(old)).await.unwrap());
        let mut slower = settings();
        slower.argon2_iterations = 2;
        let old = Passwords::new(&slower)
            .unwrap()
            .hash(&secret)
            .await
            .unwrap();
        assert!(current.outdated(&old));
        assert!(!current.outdated("not a hash"));
    }

    #[tokio::test]
    async fn a_hash_verifies_its_password_only() {
        let passwords = Passwords::new(&settings()).unwrap();
        let secret = SecretString::from("correct horse battery".to_owned());
        let hash = passwords.hash(&secret).await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"), "{hash}");
        assert!(!hash.contains("correct"));
        assert!(passwords.verify(&secret, Some(hash.clone())).await.unwrap());
        let wrong = SecretString::from("correct horse battery!".to_owned());
        assert!(!passwords.verify(&wrong, Some(hash)).await.unwrap());
        assert!(!passwords.verify(&secret, None).await.unwrap());
    }

    #[tokio::test]
    async fn past_the_queue_a_hash_is_refused_at_once() {
        let passwords = Passwords::new(&settings()).unwrap();
        let _held = passwords.waiting.clone().try_acquire_owned().unwrap();
        let secret = SecretString::from("correct horse battery".to_owned());
        assert!(matches!(
            passwords.hash(&secret).await,
            Err(HashError::Busy)
        ));
    }

    /// Registrations cannot take every place: with their half in use, another new hash is
    /// refused and a login's check still goes through. Before, a flood of registrations of a
    /// taken email (each a hash) had every login answered 503.
    #[tokio::test]
    async fn new_hashes_take_at_most_half_of_the_places_and_checks_keep_the_rest() {
        let mut settings = settings();
        settings.hashing_queue = 3;
        let passwords = Passwords::new(&settings).unwrap();
        let _registrations = passwords
            .new_hashes
            .clone()
            .try_acquire_many_owned(2)
            .unwrap();
        let secret = SecretString::from("correct horse battery".to_owned());
        assert!(matches!(
            passwords.hash(&secret).await,
            Err(HashError::Busy)
        ));
        assert!(!passwords.verify(&secret, None).await.unwrap());
    }

    #[test]
    fn lengths_are_counted_in_characters() {
        assert!(check_length(&"é".repeat(12)).is_ok());
        assert!(check_length(&"a".repeat(11)).is_err());
        assert!(check_length(&"a".repeat(129)).is_err());
        assert!(check_length(&"a".repeat(128)).is_ok());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hash_whose_caller_went_away_keeps_its_places_until_it_ends() {
        let passwords = Arc::new(Passwords::new(&settings()).unwrap());
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let first = {
            let passwords = passwords.clone();
            tokio::spawn(async move {
                passwords
                    .bounded(None, move || {
                        hold.recv().ok();
                    })
                    .await
            })
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while passwords.running.available_permits() > 0 {
            assert!(std::time::Instant::now() < deadline, "the work never ran");
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        // The caller goes away; its work runs on, and so still holds the only place.
        first.abort();
        assert!(first.await.is_err());
        assert!(matches!(
            passwords.bounded(None, || ()).await,
            Err(HashError::Busy)
        ));
        release.send(()).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while passwords.bounded(None, || ()).await.is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "the place never came back"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
}
