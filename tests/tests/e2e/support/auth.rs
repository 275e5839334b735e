//! Identity for the tests: every service the harness starts gets the same test configuration
//! ([`configure`]): one signing key directory made once per test run, a bootstrap admin, the
//! process manager's client secret, a webhook secret and registry credentials. These are test
//! fixtures, not deployment secrets; a real stack gets random ones (`infra/local/stack.sh`).

use std::path::PathBuf;
use std::sync::OnceLock;

use infra::secrecy::SecretString;
use infra::settings::Settings;
use serde_json::json;

pub const ADMIN_EMAIL: &str = "admin@example.com";
pub const ADMIN_PASSWORD: &str = "test-admin-password";
pub const PM_CLIENT_ID: &str = "process-manager";
pub const PM_SECRET: &str = "test-process-manager-secret";
pub const WEBHOOK_SECRET: &str = "test-webhook-secret";
pub const WEBHOOK_PREVIOUS_SECRET: &str = "test-webhook-previous-secret";
pub const REGISTRY_USER: &str = "registry";
pub const REGISTRY_PASSWORD: &str = "test-registry-password";
/// The password every test customer registers with.
pub const CUSTOMER_PASSWORD: &str = "customer-password-1";

/// The signing keys of this test run: made once, before any service starts, so that every
/// service (in this process or spawned) loads the same key.
pub fn keys_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.data/test-keys");
        std::fs::create_dir_all(&dir).expect("create the test key directory");
        let key = dir.join("test-1.pem");
        if !key.exists() {
            infra::auth::keys::write_new_key(&key).expect("write a test key");
        }
        // The query APIs read the public half from a file, so they need no command API.
        let keys = infra::auth::SigningKeys::load(&dir, "", false).expect("load the test key");
        std::fs::write(dir.join("jwks.json"), keys.jwks().to_string()).expect("write the JWKS");
        dir
    })
    .clone()
}

/// The test identity configuration on `settings`.
pub fn configure(settings: &mut Settings) {
    let auth = &mut settings.auth;
    auth.keys_dir = keys_dir().display().to_string();
    auth.jwks_url = format!("file://{}", keys_dir().join("jwks.json").display());
    auth.generate_key = false;
    // No bootstrap admin by default: its events would be in every test's store. Tests act
    // as admin with a minted token ([`admin_token`]); the bootstrap has its own test.
    auth.bootstrap_admin_email = String::new();
    auth.clients = SecretString::from(format!("{PM_CLIENT_ID}={PM_SECRET}"));
    // Cheaper hashing keeps the many registrations of the suite quick; the production cost
    // is measured by the benchmarks.
    auth.argon2_memory_kib = 4096;
    auth.argon2_iterations = 1;
    // The suite sends many commands as one admin; the limit has its own test.
    auth.commands_per_second = 100_000;
    auth.commands_burst = 100_000;
    auth.anonymous_per_minute = 100_000;
    // Loads register many users at once; the queue's 503 has its own test.
    auth.hashing_queue = 100_000;
    settings.projector.client_id = PM_CLIENT_ID.to_owned();
    settings.projector.client_secret = SecretString::from(PM_SECRET.to_owned());
    settings.webhook.secrets =
        SecretString::from(format!("{WEBHOOK_SECRET},{WEBHOOK_PREVIOUS_SECRET}"));
    settings.schema_registry.user = REGISTRY_USER.to_owned();
    settings.schema_registry.password = SecretString::from(REGISTRY_PASSWORD.to_owned());
}

/// The environment that gives a spawned service the same configuration.
pub fn env(settings: &Settings) -> Vec<(String, String)> {
    use infra::secrecy::ExposeSecret;
    let auth = &settings.auth;
    [
        ("APP__AUTH__KEYS_DIR", auth.keys_dir.clone()),
        ("APP__AUTH__GENERATE_KEY", auth.generate_key.to_string()),
        ("APP__AUTH__JWKS_URL", auth.jwks_url.clone()),
        (
            "APP__AUTH__BOOTSTRAP_ADMIN_EMAIL",
            auth.bootstrap_admin_email.clone(),
        ),
        (
            "APP__AUTH__BOOTSTRAP_ADMIN_PASSWORD",
            auth.bootstrap_admin_password.expose_secret().to_owned(),
        ),
        (
            "APP__AUTH__CLIENTS",
            auth.clients.expose_secret().to_owned(),
        ),
        (
            "APP__AUTH__ARGON2_MEMORY_KIB",
            auth.argon2_memory_kib.to_string(),
        ),
        (
            "APP__AUTH__ARGON2_ITERATIONS",
            auth.argon2_iterations.to_string(),
        ),
        (
            "APP__AUTH__COMMANDS_PER_SECOND",
            auth.commands_per_second.to_string(),
        ),
        ("APP__AUTH__COMMANDS_BURST", auth.commands_burst.to_string()),
        (
            "APP__AUTH__ANONYMOUS_PER_MINUTE",
            auth.anonymous_per_minute.to_string(),
        ),
        ("APP__AUTH__HASHING_QUEUE", auth.hashing_queue.to_string()),
        (
            "APP__PROJECTOR__CLIENT_ID",
            settings.projector.client_id.clone(),
        ),
        (
            "APP__PROJECTOR__CLIENT_SECRET",
            settings.projector.client_secret.expose_secret().to_owned(),
        ),
        (
            "APP__WEBHOOK__SECRETS",
            settings.webhook.secrets.expose_secret().to_owned(),
        ),
        (
            "APP__SCHEMA_REGISTRY__USER",
            settings.schema_registry.user.clone(),
        ),
        (
            "APP__SCHEMA_REGISTRY__PASSWORD",
            settings.schema_registry.password.expose_secret().to_owned(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// Logs in with a password; returns the access and refresh tokens.
pub async fn login(
    client: &reqwest::Client,
    command_url: &str,
    email: &str,
    password: &str,
) -> (String, String) {
    let response = client
        .post(format!("{command_url}/v1/auth/token"))
        .json(&json!({"grant_type": "password", "email": email, "password": password}))
        .send()
        .await
        .expect("token request");
    let status = response.status();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    assert_eq!(status, 200, "login of {email} failed: {body}");
    (
        body["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned(),
        body["refresh_token"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

/// The process manager's credentials, as the tests configure them.
pub fn pm_credentials() -> projections::ClientCredentials {
    projections::ClientCredentials {
        client_id: PM_CLIENT_ID.to_owned(),
        client_secret: SecretString::from(PM_SECRET.to_owned()),
    }
}

/// An access token for `principal`, signed with the test key: for tests that need a token
/// the token endpoint would not give (a service, an expired one is made by hand).
pub fn mint(principal: &infra::auth::Principal) -> String {
    let keys = infra::auth::SigningKeys::load(&keys_dir(), "", false).expect("load the test key");
    let defaults = Settings::load_from(None).expect("default settings").auth;
    infra::auth::token::issue(
        &keys,
        &defaults.issuer,
        &defaults.audience,
        principal,
        std::time::Duration::from_secs(600),
    )
    .expect("sign a token")
    .token
}

/// An admin token for the query API, where no login is at hand.
pub fn admin_token() -> String {
    mint(&infra::auth::Principal::new(
        infra::auth::Subject::User(uuid::Uuid::nil()),
        [infra::auth::Role::Admin],
    ))
}
