//! Settings of identity (accounts, tokens, limits) and of the payments webhook, and how
//! secrets are read: given directly or from a file, never printed.

use secrecy::SecretString;
use serde::Deserialize;

/// Accounts and tokens (`docs/security.md`).
#[derive(Debug, Clone, Deserialize)]
pub struct AuthSettings {
    /// `iss` and `aud` of access tokens; both APIs accept only these.
    pub issuer: String,
    pub audience: String,
    /// Lifetime of an access token (at most 900 seconds, whatever is set).
    pub access_ttl_secs: u64,
    /// Lifetime of a refresh token; every use replaces it with a new one.
    pub refresh_ttl_secs: u64,
    /// Command API: directory of Ed25519 private keys, one `<kid>.pem` (PKCS#8) each.
    pub keys_dir: String,
    /// The key that signs; empty signs with the last by name.
    pub signing_kid: String,
    /// Generate a key when `keys_dir` holds none (local use; switch off in production).
    pub generate_key: bool,
    /// Query API: where the command API publishes its keys.
    pub jwks_url: String,
    /// Machine clients: `client_id=secret` pairs, comma-separated (e.g. the process manager).
    pub clients: SecretString,
    /// A file with one `client_id=secret` per line instead.
    pub clients_file: String,
    /// An admin account the command API creates at start if no account has this email.
    pub bootstrap_admin_email: String,
    pub bootstrap_admin_password: SecretString,
    /// argon2id cost: memory in KiB, passes, lanes.
    pub argon2_memory_kib: u32,
    pub argon2_iterations: u32,
    pub argon2_parallelism: u32,
    /// Password hashes computed at once (each on a blocking thread), and how many more may
    /// wait; past that a login or registration is answered 503 at once.
    pub hashing_threads: usize,
    pub hashing_queue: usize,
    /// Failed logins tolerated per account and per client address within the window; more
    /// are answered 429 until the window has passed.
    pub login_failures_per_account: u32,
    pub login_failures_per_address: u32,
    pub login_window_secs: u64,
    /// Commands per second (sustained, and burst) per principal; services get their own rate.
    pub commands_per_second: u32,
    pub commands_burst: u32,
    pub service_commands_per_second: u32,
    /// Registrations and password-reset requests per client address per minute.
    pub anonymous_per_minute: u32,
    /// Proxies (addresses or networks, comma-separated, like `10.0.0.0/8`) whose
    /// `X-Forwarded-For` names the client the per-address limits count: an ingress, and the
    /// query API for console logins. Empty trusts no one: the TCP peer is the client.
    pub trusted_proxies: String,
    /// How long a password-reset token stays usable.
    pub reset_token_ttl_secs: u64,
}

/// The payment provider's signed callbacks.
#[derive(Debug, Clone, Deserialize)]
pub struct WebhookSettings {
    /// HMAC-SHA256 secrets, comma-separated: the current one and, while rotating, the
    /// previous one. Empty refuses every callback.
    pub secrets: SecretString,
    /// A file with one secret per line instead.
    pub secrets_file: String,
    /// How far the signature's timestamp may be from now.
    pub tolerance_secs: u64,
}

/// A secret given directly or, if `file` is set, as the first line of that file.
pub fn secret_value(direct: &SecretString, file: &str) -> std::io::Result<SecretString> {
    use secrecy::ExposeSecret;
    if file.is_empty() {
        return Ok(SecretString::from(direct.expose_secret().to_owned()));
    }
    let text = std::fs::read_to_string(file)?;
    Ok(SecretString::from(
        text.trim_end_matches(['\n', '\r']).to_owned(),
    ))
}

/// Secrets given as a comma-separated list or, if `file` is set, one per line of that file.
pub fn secret_list(direct: &SecretString, file: &str) -> std::io::Result<Vec<SecretString>> {
    use secrecy::ExposeSecret;
    let text = if file.is_empty() {
        direct.expose_secret().replace(',', "\n")
    } else {
        std::fs::read_to_string(file)?
    };
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| SecretString::from(l.to_owned()))
        .collect())
}
