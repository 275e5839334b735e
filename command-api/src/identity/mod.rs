//! Identity on the command API: accounts (password hashes beside the user's events), the
//! token endpoint and its grants, refresh-token families, password reset, the JWKS, machine
//! clients, the bootstrap admin and the abuse limits. Verifying tokens is shared with the
//! query API (`infra::auth`); deciding what a principal may do is the core's policy
//! (`crate::core::policy`).

pub mod bootstrap;
pub mod clients;
pub mod http;
pub mod limits;
pub mod passwords;
mod rehash;
pub mod resets;
pub mod routes;
pub mod store;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use infra::auth::{Principal, SigningKeys, Verifier};
use infra::settings::{secret_list, AuthSettings};
use sqlx::PgPool;

use clients::Clients;
use http::AuthProblem;
use limits::{FailureLimiter, RateLimiter};
use passwords::Passwords;

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(transparent)]
    Keys(#[from] infra::auth::KeyError),
    #[error(transparent)]
    Clients(#[from] clients::ClientsError),
    #[error("reading auth.clients_file")]
    ClientsFile(#[source] std::io::Error),
    #[error(transparent)]
    Hashing(#[from] passwords::HashError),
    #[error(transparent)]
    TrustedProxies(#[from] infra::http::TrustedProxiesError),
}

/// Everything identity needs at run time, shared by the handlers.
pub struct Identity {
    pub pool: PgPool,
    pub keys: SigningKeys,
    pub verifier: Arc<Verifier>,
    pub passwords: Passwords,
    pub clients: Clients,
    pub issuer: String,
    pub audience: String,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    pub reset_ttl: Duration,
    pub failures_by_account: FailureLimiter,
    pub failures_by_address: FailureLimiter,
    /// Commands per principal (`sub`); services have their own, higher rate.
    pub commands: RateLimiter<String>,
    pub service_commands: RateLimiter<String>,
    /// Unauthenticated work (registration, reset requests) per client address.
    pub anonymous: RateLimiter<IpAddr>,
    /// Whose `X-Forwarded-For` names the client address.
    pub proxies: infra::http::TrustedProxies,
    /// One lock per account whose password a registration replay is checking
    /// ([`Self::password_check_turn`]).
    replay_checks: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Identity {
    pub fn new(pool: PgPool, settings: &AuthSettings) -> Result<Self, IdentityError> {
        let keys = SigningKeys::load(
            std::path::Path::new(&settings.keys_dir),
            &settings.signing_kid,
            settings.generate_key,
        )?;
        let verifier = Verifier::new(&settings.issuer, &settings.audience).with_keys(&keys);
        let client_entries = secret_list(&settings.clients, &settings.clients_file)
            .map_err(IdentityError::ClientsFile)?;
        let window = Duration::from_secs(settings.login_window_secs.max(1));
        Ok(Self {
            pool,
            verifier: Arc::new(verifier),
            keys,
            passwords: Passwords::new(settings)?,
            clients: Clients::parse(&client_entries)?,
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            access_ttl: Duration::from_secs(settings.access_ttl_secs),
            refresh_ttl: Duration::from_secs(settings.refresh_ttl_secs),
            reset_ttl: Duration::from_secs(settings.reset_token_ttl_secs),
            failures_by_account: FailureLimiter::new(settings.login_failures_per_account, window),
            failures_by_address: FailureLimiter::new(settings.login_failures_per_address, window),
            commands: RateLimiter::per_second(
                settings.commands_per_second,
                settings.commands_burst,
            ),
            service_commands: RateLimiter::per_second(
                settings.service_commands_per_second,
                settings.service_commands_per_second,
            ),
            anonymous: RateLimiter::per_minute(settings.anonymous_per_minute),
            proxies: infra::http::TrustedProxies::parse(&settings.trusted_proxies)?,
            replay_checks: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// An access token for the principal.
    pub fn access_token(
        &self,
        principal: &Principal,
    ) -> Result<infra::auth::Issued, infra::auth::TokenError> {
        infra::auth::token::issue(
            &self.keys,
            &self.issuer,
            &self.audience,
            principal,
            self.access_ttl,
        )
    }

    /// Whether this principal may send another command now; else how long to wait.
    pub fn admit_command(&self, principal: &Principal) -> Result<(), Duration> {
        if principal.has(infra::auth::Role::Service) {
            self.service_commands.check(&principal.sub())
        } else {
            self.commands.check(&principal.sub())
        }
    }

    /// Counts a check of a password from `address` against an account (`None`: the name
    /// given is no account's), before the check runs: `Err` (how long to wait) past either
    /// failure limit. Every way of checking a password goes through here, so that none of them
    /// is a way to guess around the login limits. The attempt stays counted unless the
    /// returned check passes or is shed ([`PasswordCheck::shed`]: the hashing queue full, the
    /// database failing).
    pub fn begin_password_check<'a>(
        &'a self,
        address: &'a str,
        account: Option<&'a str>,
    ) -> Result<PasswordCheck<'a>, Duration> {
        self.failures_by_address.attempt(address)?;
        if let Some(account) = account {
            if let Err(wait) = self.failures_by_account.attempt(account) {
                self.failures_by_address.succeeded(address, false);
                return Err(wait);
            }
        }
        Ok(PasswordCheck {
            identity: self,
            address,
            account,
            matched: false,
            settled: false,
        })
    }

    /// The turn of one check of `account`'s password by a registration replay: replays of one
    /// account are checked one at a time, so each sees the failures counted before it
    /// ([`Self::password_checks_blocked`]) and concurrent guesses cannot slip past the limit,
    /// while several sends of one registration at once all get their answer (a login's
    /// reservation would refuse the ones past the limit).
    pub async fn password_check_turn(&self, account: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let turn = {
            let mut checks = self
                .replay_checks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            checks.entry(account.to_owned()).or_default().clone()
        };
        turn.lock_owned().await
    }

    /// For a check taken in turn ([`Self::password_check_turn`]): how long to wait if the
    /// address or the account is blocked already. A mismatch is counted after the check
    /// ([`Self::password_check_failed`]).
    pub fn password_checks_blocked(&self, address: &str, account: &str) -> Option<Duration> {
        self.failures_by_address
            .blocked(address)
            .or_else(|| self.failures_by_account.blocked(account))
    }

    /// Counts a password that did not match against the address and the account.
    pub fn password_check_failed(&self, address: &str, account: &str) {
        // Past the limit the key is blocked already; nothing more to count.
        let _ = self.failures_by_address.attempt(address);
        let _ = self.failures_by_account.attempt(account);
    }

    /// Housekeeping every few minutes: forget idle rate-limit keys, purge dead tokens.
    pub async fn upkeep(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_secs(300));
        loop {
            tick.tick().await;
            self.commands.sweep();
            self.service_commands.sweep();
            self.anonymous.sweep();
            self.failures_by_account.sweep();
            self.failures_by_address.sweep();
            // Turns nobody holds or waits for.
            self.replay_checks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .retain(|_, turn| Arc::strong_count(turn) > 1);
            match store::purge(&self.pool).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(purged = n, "purged expired tokens and messages"),
                Err(error) => tracing::warn!(
                    error = &error as &dyn std::error::Error,
                    "purging expired tokens failed"
                ),
            }
        }
    }
}

/// A login's counted attempt ([`Identity::begin_password_check`]). It stays counted unless
/// the check passes or is shed, or its password matched and the login is dropped before it
/// ends. Any other login dropped on the way keeps it, even one still waiting for a hashing
/// thread: giving those back would let a client that drops its requests have passwords
/// hashed without limit (a hash runs to its end once started).
#[must_use = "a password check is settled: passed, failed or shed"]
pub struct PasswordCheck<'a> {
    identity: &'a Identity,
    address: &'a str,
    account: Option<&'a str>,
    /// The password matched: from here, ending any way but `failed` gives the attempt back.
    matched: bool,
    settled: bool,
}

impl PasswordCheck<'_> {
    /// The password matched; the login may still fail (a deactivated account, a reset race)
    /// or be dropped before it answers.
    pub fn matched(&mut self) {
        self.matched = true;
    }

    /// The password did not match (or opened no session): the attempt stays counted.
    pub fn failed(mut self) {
        self.settled = true;
    }

    /// The password matched: the attempt is not a failure, and the account's failures are
    /// forgotten.
    pub fn passed(mut self) {
        self.settled = true;
        self.identity
            .failures_by_address
            .succeeded(self.address, false);
        if let Some(account) = self.account {
            self.identity.failures_by_account.succeeded(account, true);
        }
    }

    /// No password was checked, or the right one was and the login failed after it (the
    /// hashing queue full, a database error): the attempt is given back, once. Returns
    /// `error`, for `map_err`.
    pub fn shed<E: Into<AuthProblem>>(&mut self, error: E) -> AuthProblem {
        if !self.settled {
            self.settled = true;
            self.give_back();
        }
        error.into()
    }

    fn give_back(&self) {
        self.identity
            .failures_by_address
            .succeeded(self.address, false);
        if let Some(account) = self.account {
            self.identity.failures_by_account.succeeded(account, false);
        }
    }
}

impl Drop for PasswordCheck<'_> {
    /// Dropped unsettled (the request ended) after its password matched: no failure.
    fn drop(&mut self) {
        if self.matched && !self.settled {
            self.give_back();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Limits of two failures per account, on a pool never connected to, with a fresh key.
    fn identity(keys: &std::path::Path) -> Identity {
        let mut settings = infra::settings::Settings::load_from(None).unwrap().auth;
        settings.keys_dir = keys.to_string_lossy().into_owned();
        settings.generate_key = true;
        settings.login_failures_per_account = 2;
        settings.login_failures_per_address = 100;
        let pool = sqlx::postgres::PgPoolOptions::new()
            .connect_lazy("postgres://unused@127.0.0.1:1/unused")
            .unwrap();
        Identity::new(pool, &settings).unwrap()
    }

    /// A login whose password matched and whose request ended before it answered (the client
    /// gave up while its session was being opened) is no failure; one dropped before its
    /// password was checked stays counted.
    #[tokio::test]
    async fn a_login_dropped_after_its_password_matched_is_no_failure() {
        let keys = std::env::temp_dir().join(format!("identity-keys-{}", uuid::Uuid::new_v4()));
        let identity = identity(&keys);
        for _ in 0..3 {
            let mut check = identity
                .begin_password_check("10.0.0.1", Some("owner@example.com"))
                .unwrap();
            check.matched();
            drop(check);
        }
        for _ in 0..2 {
            drop(
                identity
                    .begin_password_check("10.0.0.1", Some("other@example.com"))
                    .unwrap(),
            );
        }
        let owner = identity.begin_password_check("10.0.0.1", Some("owner@example.com"));
        let other = identity.begin_password_check("10.0.0.1", Some("other@example.com"));
        assert!(owner.is_ok(), "the owner was locked out");
        assert!(other.is_err(), "dropped unchecked logins were given back");
        drop((owner, other));
        std::fs::remove_dir_all(&keys).unwrap();
    }
}
