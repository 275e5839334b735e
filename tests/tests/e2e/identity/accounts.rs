//! Accounts: password reset (single use, expiring, revoking every session), failed-login
//! limits per account and per address, the bounded hashing queue, and the bootstrap admin.

use std::time::Duration;

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::app::{
    registration, spawn_app, spawn_app_with, unique_email, Answer, Auth, TestApp,
};
use crate::support::auth::{login, ADMIN_EMAIL, ADMIN_PASSWORD, CUSTOMER_PASSWORD};

async fn password_login(app: &TestApp, email: &str, password: &str) -> Answer {
    app.post_as(
        Auth::Anonymous,
        "/v1/auth/token",
        json!({"grant_type": "password", "email": email, "password": password}),
    )
    .await
}

/// The reset token queued for `email`, once the (asynchronous) request has queued it.
/// One hashing thread, a queue of one and a slow hash: a few requests that hash fill it.
fn slow_single_hasher(settings: &mut infra::settings::Settings) {
    settings.auth.hashing_threads = 1;
    settings.auth.hashing_queue = 1;
    settings.auth.argon2_memory_kib = 32_768;
    settings.auth.argon2_iterations = 3;
}

/// Asks for a reset of `email`'s password; returns the token the user would be mailed.
async fn requested_reset_token(app: &TestApp, email: &str) -> String {
    requested_reset_token_for(app, email, email).await
}

/// Requests a reset for `requested`; the token sent to `recipient`.
async fn requested_reset_token_for(app: &TestApp, requested: &str, recipient: &str) -> String {
    let answer = app
        .post_as(
            Auth::Anonymous,
            "/v1/auth/password-reset",
            json!({"email": requested}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.body);
    reset_token(app, recipient).await
}

/// Confirms a reset with `token` and a new password.
async fn confirm_reset(app: &TestApp, token: &str) -> Answer {
    app.post_as(
        Auth::Anonymous,
        "/v1/auth/password-reset/confirm",
        json!({"token": token, "new_password": "a-brand-new-password"}),
    )
    .await
}

async fn reset_token(app: &TestApp, email: &str) -> String {
    for _ in 0..100 {
        let token: Option<Value> = sqlx::query_scalar(
            "SELECT payload->'token' FROM notification_outbox
             WHERE kind = 'password_reset' AND recipient = $1 ORDER BY id DESC LIMIT 1",
        )
        .bind(email)
        .fetch_optional(&app.pool)
        .await
        .unwrap();
        if let Some(token) = token.and_then(|t| t.as_str().map(str::to_owned)) {
            return token;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no reset message was queued for {email}");
}

#[tokio::test]
async fn a_password_reset_is_single_use_and_ends_every_session() {
    let app = spawn_app().await;
    let customer = app.customer().await;
    let reset = |email: String| {
        app.post_as(
            Auth::Anonymous,
            "/v1/auth/password-reset",
            json!({"email": email}),
        )
    };
    // Known and unknown addresses get the same answer; only the known one gets a message.
    assert_eq!(
        reset(customer.email.clone()).await.status,
        StatusCode::ACCEPTED
    );
    assert_eq!(reset(unique_email()).await.status, StatusCode::ACCEPTED);
    let token = reset_token(&app, &customer.email).await;
    let stored: Vec<Vec<u8>> = sqlx::query_scalar("SELECT token_hash FROM password_reset_tokens")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored.len(), 1, "one token, for the known account");
    assert!(
        stored.iter().all(|h| h != token.as_bytes()),
        "the token is kept only hashed"
    );

    let confirm = |token: &str, password: &str| {
        app.post_as(
            Auth::Anonymous,
            "/v1/auth/password-reset/confirm",
            json!({"token": token, "new_password": password}),
        )
    };
    confirm(&token, "short")
        .await
        .assert_problem(422, "validation-failed");
    let done = confirm(&token, "a-brand-new-password").await;
    assert_eq!(done.status, StatusCode::NO_CONTENT, "{}", done.body);
    confirm(&token, "yet-another-password")
        .await
        .assert_problem(400, "invalid-reset-token");
    confirm("never-issued", "yet-another-password")
        .await
        .assert_problem(400, "invalid-reset-token");

    password_login(&app, &customer.email, CUSTOMER_PASSWORD)
        .await
        .assert_problem(401, "invalid-credentials");
    let ok = password_login(&app, &customer.email, "a-brand-new-password").await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    // The session from before the reset is over.
    app.post_as(
        Auth::Anonymous,
        "/v1/auth/token",
        json!({"grant_type": "refresh_token", "refresh_token": customer.refresh_token}),
    )
    .await
    .assert_problem(401, "invalid-grant");
}

/// A user without credentials (registered before accounts had passwords, the database since
/// migrated) sets a first password by a reset and logs in with it. Before, the reset answered
/// 204, used the token up and stored nothing: the account could never log in.
#[tokio::test]
async fn a_reset_gives_a_user_without_credentials_a_password() {
    let app = spawn_app().await;
    let customer = app.customer().await;
    sqlx::query("DELETE FROM credentials WHERE user_id::text = $1")
        .bind(&customer.id)
        .execute(&app.pool)
        .await
        .unwrap();
    password_login(&app, &customer.email, CUSTOMER_PASSWORD)
        .await
        .assert_problem(401, "invalid-credentials");
    let token = requested_reset_token(&app, &customer.email).await;
    let done = confirm_reset(&app, &token).await;
    assert_eq!(done.status, StatusCode::NO_CONTENT, "{}", done.body);
    let ok = password_login(&app, &customer.email, "a-brand-new-password").await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
}

/// A login that checked the password a reset has just replaced opens no session: the family
/// is written under a share lock of the credentials it checked, so a reset either commits
/// first (and the login starts nothing) or waits for the family and revokes it. Before, a login
/// hashing while the reset committed wrote its family after the reset's revocation and kept a
/// 90-day session.
#[tokio::test]
async fn a_login_that_checked_a_replaced_password_starts_no_session() {
    use command_api::identity::store;
    let app = spawn_app().await;
    let customer = app.customer().await;
    let user_id: uuid::Uuid = customer.id.parse().unwrap();
    let checked: i64 =
        sqlx::query_scalar("SELECT password_generation FROM credentials WHERE user_id = $1")
            .bind(user_id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    let ttl = Duration::from_secs(3600);
    // Unchanged: a family starts.
    let started = store::start_family(&app.pool, user_id, checked, ttl)
        .await
        .unwrap();
    assert!(started.is_some());
    // The reset commits while the login is still hashing the old password.
    let token = requested_reset_token(&app, &customer.email).await;
    let confirmed = app
        .post_as(
            Auth::Anonymous,
            "/v1/auth/password-reset/confirm",
            json!({"token": token, "new_password": "a-brand-new-password"}),
        )
        .await;
    assert_eq!(
        confirmed.status,
        StatusCode::NO_CONTENT,
        "{}",
        confirmed.body
    );
    let late = store::start_family(&app.pool, user_id, checked, ttl)
        .await
        .unwrap();
    assert!(
        late.is_none(),
        "a session started for the replaced password"
    );
    let live: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM refresh_families WHERE user_id = $1 AND revoked_at IS NULL",
    )
    .bind(user_id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        live, 0,
        "the reset ended every session and none started after it"
    );
}

/// A hash made with older argon2 costs still verifies, and is replaced by one of today's
/// costs after the owner's next login, and nothing keeps the old one (a leaked copy of the
/// table would be cracked from the cheaper hash); a login that checked the old hash meanwhile
/// still starts its session, until a password reset.
#[tokio::test]
async fn an_outdated_password_hash_is_upgraded_at_the_next_login() {
    use command_api::identity::passwords::Passwords;
    use command_api::identity::store;
    use infra::secrecy::SecretString;
    let app = spawn_app().await;
    let customer = app.customer().await;
    let user_id: uuid::Uuid = customer.id.parse().unwrap();
    let stored = || async {
        let row: (String, i64) = sqlx::query_as(
            "SELECT password_hash, password_generation FROM credentials WHERE user_id = $1",
        )
        .bind(user_id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
        row
    };
    let (current, generation) = stored().await;
    let mut older = infra::settings::Settings::load_from(None).unwrap().auth;
    older.argon2_memory_kib = 264;
    older.argon2_iterations = 1;
    let old = Passwords::new(&older)
        .unwrap()
        .hash(&SecretString::from(CUSTOMER_PASSWORD.to_owned()))
        .await
        .unwrap();
    sqlx::query("UPDATE credentials SET password_hash = $2 WHERE user_id = $1")
        .bind(user_id)
        .bind(&old)
        .execute(&app.pool)
        .await
        .unwrap();

    let answer = password_login(&app, &customer.email, CUSTOMER_PASSWORD).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let mut upgraded = stored().await;
    for _ in 0..100 {
        if upgraded.0 != old {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        upgraded = stored().await;
    }
    assert_ne!(upgraded.0, old, "the outdated hash was not replaced");
    assert_eq!(upgraded.1, generation, "an upgrade is the same password");
    // Today's costs, as the registration's hash had.
    let costs = |hash: &str| hash.rsplitn(3, '$').nth(2).map(str::to_owned);
    assert_eq!(costs(&upgraded.0), costs(&current));
    // No column of the row holds the old hash any more.
    let kept: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM credentials c WHERE c.user_id = $1 AND strpos(c::text, $2) > 0",
    )
    .bind(user_id)
    .bind(&old)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(kept, 0, "the replaced hash is still stored");
    let answer = password_login(&app, &customer.email, CUSTOMER_PASSWORD).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);

    // A login that verified the old hash while the upgrade was written starts its session.
    let ttl = Duration::from_secs(3600);
    let started = store::start_family(&app.pool, user_id, generation, ttl)
        .await
        .unwrap();
    assert!(started.is_some(), "a login of the same password refused");
    // After a reset, a login that checked a hash from before it opens no session.
    let token = requested_reset_token(&app, &customer.email).await;
    let confirmed = confirm_reset(&app, &token).await;
    assert_eq!(
        confirmed.status,
        StatusCode::NO_CONTENT,
        "{}",
        confirmed.body
    );
    let late = store::start_family(&app.pool, user_id, generation, ttl)
        .await
        .unwrap();
    assert!(late.is_none(), "a session started for a replaced password");
}

/// A reset is sent to the email the account holds, as its owner wrote it, whatever the
/// requester's spelling: the two are equal only once lower-cased, and a mail system may tell
/// `Victim@` from `victim@`. Before, the token went to the spelling in the request.
#[tokio::test]
async fn a_reset_goes_to_the_stored_email_not_the_requesters_spelling() {
    let app = spawn_app().await;
    let customer = app.customer().await;
    let shouted = customer.email.to_uppercase();
    assert_ne!(shouted, customer.email);
    let token = requested_reset_token_for(&app, &shouted, &customer.email).await;
    assert!(!token.is_empty());
    let elsewhere: i64 =
        sqlx::query_scalar("SELECT count(*) FROM notification_outbox WHERE recipient = $1")
            .bind(&shouted)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(elsewhere, 0, "a reset was sent to the requester's spelling");
}

/// A reset of `customer`'s password requested straight through the store (as the route does
/// once it has found the account), with a token good for 15 minutes.
async fn store_reset_request(
    app: &TestApp,
    customer: &crate::support::app::Customer,
) -> Result<(), sqlx::Error> {
    let user_id: uuid::Uuid = customer.id.parse().expect("a user id");
    command_api::identity::store::request_reset(
        &app.pool,
        user_id,
        &customer.email,
        &customer.email.to_lowercase(),
        Duration::from_secs(900),
    )
    .await
}

/// At most one reset a minute per account, however many requests arrive at once: each
/// request's check for a recent token and its insert used to run unordered, so requests at
/// the same moment each found none and each queued a message (a mailbox flood, and several
/// live tokens).
#[tokio::test]
async fn resets_requested_at_once_queue_one_message() {
    let app = spawn_app().await;
    // A few accounts, each with a burst: one burst shows the race only some of the time.
    for _ in 0..4 {
        let customer = app.customer().await;
        let user_id: uuid::Uuid = customer.id.parse().unwrap();
        let requests = (0..64).map(|_| store_reset_request(&app, &customer));
        for outcome in join_all(requests).await {
            outcome.unwrap();
        }
        let messages: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM notification_outbox
             WHERE kind = 'password_reset' AND recipient = $1",
        )
        .bind(&customer.email)
        .fetch_one(&app.pool)
        .await
        .unwrap();
        let tokens: i64 =
            sqlx::query_scalar("SELECT count(*) FROM password_reset_tokens WHERE user_id = $1")
                .bind(user_id)
                .fetch_one(&app.pool)
                .await
                .unwrap();
        assert_eq!((messages, tokens), (1, 1));
    }
}

/// Two live reset tokens of one user confirmed at once: one sets the password and the other
/// is refused as used, never a database error. Before, each locked its own token and then
/// waited for the other's while ending every token of the user, and PostgreSQL broke the
/// deadlock by failing one (a 503 for its client).
#[tokio::test]
async fn two_reset_tokens_of_one_user_confirmed_at_once_do_not_deadlock() {
    let app = spawn_app().await;
    // A few users: one pair shows the race only some of the time.
    for _ in 0..6 {
        let customer = app.customer().await;
        let user_id: uuid::Uuid = customer.id.parse().unwrap();
        let mut tokens = Vec::new();
        for _ in 0..2 {
            store_reset_request(&app, &customer).await.unwrap();
            tokens.push(reset_token(&app, &customer.email).await);
            // Older than a minute, so the next request queues a token of its own.
            sqlx::query(
                "UPDATE password_reset_tokens SET created_at = created_at - interval '2 minutes'
                 WHERE user_id = $1",
            )
            .bind(user_id)
            .execute(&app.pool)
            .await
            .unwrap();
        }
        assert_ne!(tokens[0], tokens[1]);
        let outcomes = join_all(tokens.iter().map(|token| {
            command_api::identity::store::confirm_reset(&app.pool, token, "$argon2id$not-used")
        }))
        .await;
        let mut outcomes: Vec<Option<uuid::Uuid>> = outcomes
            .into_iter()
            .map(|outcome| outcome.expect("a confirmation failed"))
            .collect();
        outcomes.sort();
        assert_eq!(outcomes, vec![None, Some(user_id)]);
    }
}

/// A reset token was sent to the email the account had then: once the owner moves the account
/// to another email, whoever still reads the old mailbox must not be able to use it. Before,
/// the token stayed good for its whole lifetime after the change, and taking it over the
/// account.
#[tokio::test]
async fn a_reset_token_is_void_once_the_account_changes_its_email() {
    let app = spawn_app().await;
    let customer = app.customer().await;
    let token = requested_reset_token(&app, &customer.email).await;
    let moved = app
        .post_as(
            Auth::Bearer(&customer.token),
            &format!("/v1/users/{}/email", customer.id),
            json!({"email": unique_email()}),
        )
        .await;
    assert_eq!(moved.status, StatusCode::OK, "{}", moved.body);
    confirm_reset(&app, &token)
        .await
        .assert_problem(400, "invalid-reset-token");
}

#[tokio::test]
async fn an_expired_reset_token_is_refused() {
    let app = spawn_app_with(|s| s.auth.reset_token_ttl_secs = 1).await;
    let customer = app.customer().await;
    let token = requested_reset_token(&app, &customer.email).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    confirm_reset(&app, &token)
        .await
        .assert_problem(400, "invalid-reset-token");
}

/// Confirmations are unauthenticated work: limited per address, and one with a token that
/// cannot work is refused before the new password is hashed. Before, each made-up token cost
/// an argon2id hash, and a flood of them filled the hashing queue (logins shed with 503).
#[tokio::test]
async fn reset_confirmations_with_made_up_tokens_hash_nothing_and_are_limited() {
    let app = spawn_app_with(|s| {
        slow_single_hasher(s);
        s.auth.anonymous_per_minute = 8;
    })
    .await;
    let answers = join_all((0..16).map(|i| {
        app.post_as(
            Auth::Anonymous,
            "/v1/auth/password-reset/confirm",
            json!({"token": format!("made-up-token-{i}"), "new_password": "a-brand-new-password"}),
        )
    }))
    .await;
    let statuses: Vec<u16> = answers.iter().map(|a| a.status.as_u16()).collect();
    for answer in &answers {
        match answer.status.as_u16() {
            400 => answer.assert_problem(400, "invalid-reset-token"),
            429 => answer.assert_problem(429, "rate-limited"),
            _ => panic!("a made-up token was answered {}: {statuses:?}", answer.body),
        }
    }
    assert!(statuses.contains(&400), "{statuses:?}");
    assert!(statuses.contains(&429), "nothing was limited: {statuses:?}");
}

#[tokio::test]
async fn repeated_failed_logins_lock_the_account_even_for_the_right_password() {
    let app = spawn_app_with(|s| {
        s.auth.login_failures_per_account = 3;
        s.auth.login_failures_per_address = 100;
    })
    .await;
    let customer = app.customer().await;
    for _ in 0..3 {
        password_login(&app, &customer.email, "wrong-password-1")
            .await
            .assert_problem(401, "invalid-credentials");
    }
    let locked = password_login(&app, &customer.email, CUSTOMER_PASSWORD).await;
    locked.assert_problem(429, "rate-limited");
    let wait: u64 = locked.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=300).contains(&wait), "{wait}");
    // Another account from the same address is not locked.
    let other = app.customer().await;
    assert_eq!(
        password_login(&app, &other.email, CUSTOMER_PASSWORD)
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn failed_logins_are_limited_per_address_across_accounts() {
    let app = spawn_app_with(|s| {
        s.auth.login_failures_per_account = 100;
        s.auth.login_failures_per_address = 4;
    })
    .await;
    for _ in 0..4 {
        password_login(&app, &unique_email(), "wrong-password-1")
            .await
            .assert_problem(401, "invalid-credentials");
    }
    password_login(&app, &unique_email(), "wrong-password-1")
        .await
        .assert_problem(429, "rate-limited");
}

#[tokio::test]
async fn a_login_flood_past_the_hashing_queue_is_shed_with_503() {
    let app = spawn_app_with(|s| {
        slow_single_hasher(s);
        s.auth.login_failures_per_address = 1000;
    })
    .await;
    let email = unique_email();
    let answers = join_all((0..12).map(|_| password_login(&app, &email, "wrong-password-1"))).await;
    let shed: Vec<&Answer> = answers
        .iter()
        .filter(|a| a.status == StatusCode::SERVICE_UNAVAILABLE)
        .collect();
    assert!(
        !shed.is_empty(),
        "nothing was shed: {:?}",
        answers.iter().map(|a| a.status).collect::<Vec<_>>()
    );
    for answer in shed {
        answer.assert_problem(503, "overloaded");
        assert!(answer.headers.contains_key("retry-after"));
    }
    // Other requests are served meanwhile.
    let (status, _) = app.get("/.well-known/jwks.json").await;
    assert_eq!(status, StatusCode::OK);
}

/// A login shed because the hashing queue is full checked no password: it does not count
/// against the account's failed logins. Before, every shed login stayed counted, so a flood
/// (or a client retrying its 503s) locked the account out for its right password too.
#[tokio::test]
async fn logins_shed_before_their_check_do_not_count_as_failures() {
    const FLOOD: usize = 12;
    let app = spawn_app_with(|s| {
        slow_single_hasher(s);
        s.auth.login_failures_per_address = 1000;
        s.auth.login_failures_per_account = FLOOD as u32;
    })
    .await;
    let customer = app.customer().await;
    let answers =
        join_all((0..FLOOD).map(|_| password_login(&app, &customer.email, "wrong-password-1")))
            .await;
    let statuses: Vec<StatusCode> = answers.iter().map(|a| a.status).collect();
    let shed = statuses
        .iter()
        .filter(|s| **s == StatusCode::SERVICE_UNAVAILABLE)
        .count();
    let checked = statuses
        .iter()
        .filter(|s| **s == StatusCode::UNAUTHORIZED)
        .count();
    assert!(shed > 0, "nothing was shed: {statuses:?}");
    assert_eq!(shed + checked, FLOOD, "{statuses:?}");
    // Only the checked ones count: fewer than the limit, so the right password logs in.
    let answer = password_login(&app, &customer.email, CUSTOMER_PASSWORD).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
}

#[tokio::test]
async fn the_bootstrap_admin_is_created_once_and_can_act() {
    let db = crate::support::database::TestDatabase::create().await;
    let mut settings = db.settings();
    settings.auth.bootstrap_admin_email = ADMIN_EMAIL.to_owned();
    settings.auth.bootstrap_admin_password =
        infra::secrecy::SecretString::from(ADMIN_PASSWORD.to_owned());
    let url = db.url.clone();
    let app = crate::support::app::spawn_app_on(db, settings.clone()).await;
    let (token, _) = login(&app.client, &app.url, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let customer = app.customer().await;
    let granted = app
        .post_as(
            Auth::Bearer(&token),
            &format!("/v1/users/{}/roles", customer.id),
            json!({"role": "support"}),
        )
        .await;
    assert_eq!(granted.status, StatusCode::OK, "{}", granted.body);
    // A second start on the same database creates nothing more.
    let admins = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM events WHERE event_type = 'UserRegistered' AND payload->>'email' = $1")
            .bind(ADMIN_EMAIL)
            .fetch_one(&app.pool)
            .await
            .unwrap()
    };
    assert_eq!(admins().await, 1);
    let mut again = settings.clone();
    again.database.url = infra::secrecy::SecretString::from(url);
    let second = command_api::build(&again).await.expect("a second start");
    drop(second);
    assert_eq!(admins().await, 1);
    // A bootstrap that stopped between registering and granting is finished by the next
    // start (simulated by taking the grant out of the account's history).
    let admin_id: String = sqlx::query_scalar(
        "SELECT aggregate_id FROM events WHERE event_type = 'UserRegistered' AND payload->>'email' = $1",
    )
    .bind(ADMIN_EMAIL)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    sqlx::query(
        "DELETE FROM events WHERE aggregate_type = 'user' AND aggregate_id = $1 AND sequence > 1",
    )
    .bind(&admin_id)
    .execute(&app.pool)
    .await
    .unwrap();
    drop(command_api::build(&again).await.expect("a third start"));
    let (token, _) = login(&app.client, &app.url, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let grant_admin = |token: String| {
        let path = format!("/v1/users/{}/roles", customer.id);
        let app = &app;
        async move {
            app.post_as(Auth::Bearer(&token), &path, json!({"role": "admin"}))
                .await
        }
    };
    let roles = grant_admin(token.clone()).await;
    assert_eq!(
        roles.status,
        StatusCode::OK,
        "the admin role was not restored: {}",
        roles.body
    );
    // An operator's revocation is not undone by the next start. Before, every start granted
    // the role again.
    let revoked = app
        .send_as(
            Auth::Admin,
            reqwest::Method::DELETE,
            &format!("/v1/users/{admin_id}/roles/admin"),
            None,
            &[],
        )
        .await;
    assert_eq!(revoked.status, StatusCode::OK, "{}", revoked.body);
    drop(command_api::build(&again).await.expect("a fourth start"));
    let (token, _) = login(&app.client, &app.url, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    grant_admin(token).await.assert_problem(403, "forbidden");
    // Nor does a deactivated bootstrap account keep the command API from starting (the grant
    // it used to retry failed, and every start with it).
    let deactivated = app
        .post_as(
            Auth::Admin,
            &format!("/v1/users/{admin_id}/deactivate"),
            json!({}),
        )
        .await;
    assert_eq!(deactivated.status, StatusCode::OK, "{}", deactivated.body);
    drop(
        command_api::build(&again)
            .await
            .expect("a start after the deactivation"),
    );
}

/// A registration's idempotency fingerprint leaves the password out (it is kept for a day, and
/// a fast hash of a body holding the password would bypass argon2id): the same key, email and
/// name with another password replay the first registration.
#[tokio::test]
async fn a_registration_fingerprint_holds_no_password() {
    let app = spawn_app().await;
    let email = unique_email();
    let register = |password: &'static str| keyed_registration(&app, &email, password);
    let first = register("first-password-1").await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    let again = register("first-password-1").await;
    assert_eq!(again.status, StatusCode::CREATED, "{}", again.body);
    assert_eq!(again.body, first.body);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    // Another password is another body: 422, as for any key reused with a different request.
    // Before, it was answered with the first registration's 201, and its password was never
    // stored. The fingerprint still holds none: a replay checks the password against the
    // stored hash instead.
    let second = register("second-password-2").await;
    second.assert_problem(422, "idempotency-key-reused");
    // The first password is the one that counts.
    assert_eq!(
        password_login(&app, &email, "first-password-1")
            .await
            .status,
        StatusCode::OK
    );
    let stored: Vec<u8> = sqlx::query_scalar("SELECT request_hash FROM idempotency_keys")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored.len(), 32);
}

/// A registration replayed under its key checks the password sent against the stored one, so
/// it is a check of a password like a login, and counts against the same limits: before, it
/// was limited only by the per-address rate of registrations (600 a minute), an oracle for
/// anyone holding the key, the email and the name.
#[tokio::test]
async fn registration_replays_count_against_the_login_limits() {
    let app = spawn_app_with(|s| {
        s.auth.login_failures_per_account = 3;
        s.auth.login_failures_per_address = 100;
    })
    .await;
    let email = unique_email();
    let register = |password: &'static str| keyed_registration(&app, &email, password);
    let first = register("right-password-1").await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    for _ in 0..3 {
        register("wrong-password-1")
            .await
            .assert_problem(422, "idempotency-key-reused");
    }
    // The account's failures are spent: the right password is refused too, by a replay and by
    // a login alike.
    register("right-password-1")
        .await
        .assert_problem(429, "rate-limited");
    password_login(&app, &email, "right-password-1")
        .await
        .assert_problem(429, "rate-limited");
}

/// Wrong passwords replayed all at once are checked in turn: no more get an answer than the
/// account's failure limit, the rest are 429. Before, they all passed the check for a blocked
/// account before the first failure was counted, one guess each.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_wrong_registration_replays_do_not_slip_past_the_limit() {
    let app = spawn_app_with(|s| {
        s.auth.login_failures_per_account = 3;
        s.auth.login_failures_per_address = 100;
    })
    .await;
    let email = unique_email();
    let first = keyed_registration(&app, &email, "right-password-1").await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    let guesses = (0..10).map(|i| {
        let (app, email) = (&app, &email);
        async move { keyed_registration(app, email, &format!("wrong-password-{i}")).await }
    });
    let answers = futures::future::join_all(guesses).await;
    let checked = answers.iter().filter(|a| a.status == 422).count();
    let limited = answers.iter().filter(|a| a.status == 429).count();
    assert_eq!(
        (checked, limited),
        (3, 7),
        "{:?}",
        answers.iter().map(|a| a.status).collect::<Vec<_>>()
    );
}

/// A registration of `email` with `password`, under the idempotency key `signup-1`.
async fn keyed_registration(app: &TestApp, email: &str, password: &str) -> Answer {
    app.send_as(
        Auth::Anonymous,
        reqwest::Method::POST,
        "/v1/users",
        Some(json!({"email": email, "display_name": "Keyed", "password": password})),
        &[("Idempotency-Key", "signup-1")],
    )
    .await
}

/// A failed login sent with `X-Forwarded-For: forwarded`; its status.
async fn forwarded_login(app: &TestApp, forwarded: &str) -> StatusCode {
    let body =
        json!({"grant_type": "password", "email": unique_email(), "password": "wrong-password-1"});
    app.client
        .post(format!("{}/v1/auth/token", app.url))
        .header("x-forwarded-for", forwarded)
        .json(&body)
        .send()
        .await
        .expect("the token endpoint answers")
        .status()
}

/// Behind a trusted proxy (an ingress, or the query API for console logins), each client its
/// `X-Forwarded-For` names has its own failure count; before, they all shared the proxy's, so
/// one guesser locked every client behind it out. From a peer that is not trusted the header
/// is ignored, so a client cannot give itself fresh budgets by writing it.
#[tokio::test]
async fn failed_logins_behind_a_trusted_proxy_count_per_forwarded_client() {
    let limits = |s: &mut infra::settings::Settings| {
        s.auth.login_failures_per_account = 100;
        s.auth.login_failures_per_address = 2;
    };
    let behind_proxy = spawn_app_with(|s| {
        limits(s);
        s.auth.trusted_proxies = "127.0.0.1".to_owned();
    })
    .await;
    for _ in 0..2 {
        assert_eq!(forwarded_login(&behind_proxy, "198.51.100.7").await, 401);
    }
    assert_eq!(forwarded_login(&behind_proxy, "198.51.100.7").await, 429);
    // Another client behind the same proxy, and one that wrote an address of its own before
    // the proxy appended the one it saw: neither is limited by the first.
    assert_eq!(forwarded_login(&behind_proxy, "198.51.100.8").await, 401);
    assert_eq!(
        forwarded_login(&behind_proxy, "198.51.100.8, 198.51.100.9").await,
        401
    );
    assert_eq!(
        forwarded_login(&behind_proxy, "198.51.100.9, 198.51.100.7").await,
        429,
        "the address the proxy appended counts, not the one the client wrote"
    );

    let direct = spawn_app_with(limits).await;
    assert_eq!(forwarded_login(&direct, "198.51.100.1").await, 401);
    assert_eq!(forwarded_login(&direct, "198.51.100.2").await, 401);
    assert_eq!(
        forwarded_login(&direct, "198.51.100.3").await,
        429,
        "an untrusted peer's header was believed"
    );
}

/// Registrations are limited per client address whether or not they carry a token, unless an
/// admin sends them. Before, any customer's token moved them to that customer's command limit
/// (50 a second), so every account could register more, each a password hash, past the
/// per-address limit.
#[tokio::test]
async fn registrations_with_a_customers_token_are_limited_per_address() {
    let app = spawn_app_with(|s| s.auth.anonymous_per_minute = 3).await;
    let customer = app.customer().await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let answer = app
            .post_as(
                Auth::Bearer(&customer.token),
                "/v1/users",
                registration(&unique_email()),
            )
            .await;
        statuses.push(answer.status.as_u16());
    }
    assert!(
        statuses.contains(&429),
        "a customer's token registered past the per-address limit: {statuses:?}"
    );
    // An admin's are its own work, under its command limit.
    for _ in 0..5 {
        let answer = app
            .post_as(Auth::Admin, "/v1/users", registration(&unique_email()))
            .await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    }
}
