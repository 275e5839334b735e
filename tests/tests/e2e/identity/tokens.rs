//! The token endpoint's grants, refresh rotation and reuse detection, logout, the JWKS, and
//! forged or unfit tokens refused by both APIs.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use infra::auth::{Principal, Role, Subject};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::app::{spawn_app, Answer, Auth, TestApp};
use crate::support::auth::{mint, PM_CLIENT_ID, PM_SECRET};
use crate::support::query::spawn_query_api;

async fn token(app: &TestApp, body: Value) -> Answer {
    app.post_as(Auth::Anonymous, "/v1/auth/token", body).await
}

fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url")).expect("JSON")
}

fn header(token: &str) -> Value {
    let header = token.split('.').next().expect("a JWT");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).expect("base64url")).expect("JSON")
}

#[tokio::test]
async fn a_password_login_gives_a_short_lived_signed_token_and_a_refresh_token() {
    let app = spawn_app().await;
    let customer = app.customer().await;
    let answer = token(
        &app,
        json!({"grant_type": "password", "email": customer.email, "password": "customer-password-1"}),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.headers["cache-control"], "no-store");
    assert_eq!(answer.body["token_type"], "Bearer");
    let expires_in = answer.body["expires_in"].as_i64().unwrap();
    assert!((1..=900).contains(&expires_in), "{expires_in}");
    assert!(answer.body["refresh_token"]
        .as_str()
        .is_some_and(|t| t.len() >= 43));
    let access = answer.body["access_token"].as_str().unwrap();
    let head = header(access);
    assert_eq!(head["alg"], "EdDSA");
    let kid = head["kid"].as_str().expect("a kid");
    let c = claims(access);
    assert_eq!(c["sub"], format!("user:{}", customer.id));
    assert_eq!(c["roles"], json!(["customer"]));
    assert_eq!(c["iss"], "commerce");
    assert_eq!(c["aud"], "commerce-api");
    assert!(c["jti"].as_str().is_some_and(|j| !j.is_empty()));
    let lifetime = c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap();
    assert!(lifetime <= 900 && c["nbf"].as_i64() <= c["iat"].as_i64());

    // The key that signed it is published.
    let (status, jwks) = app.get("/.well-known/jwks.json").await;
    assert_eq!(status, StatusCode::OK);
    let jwks: Value = serde_json::from_str(&jwks).unwrap();
    let keys = jwks["keys"].as_array().unwrap();
    assert!(keys
        .iter()
        .any(|k| k["kid"] == kid && k["kty"] == "OKP" && k["crv"] == "Ed25519"));
    assert!(
        keys.iter().all(|k| k.get("d").is_none()),
        "a private part is published"
    );
}

#[tokio::test]
async fn wrong_password_and_unknown_email_are_the_same_401() {
    let app = spawn_app().await;
    let customer = app.customer().await;
    let wrong = token(
        &app,
        json!({"grant_type": "password", "email": customer.email, "password": "not-the-password"}),
    )
    .await;
    let unknown = token(
        &app,
        json!({"grant_type": "password", "email": "nobody@example.com", "password": "not-the-password"}),
    )
    .await;
    wrong.assert_problem(401, "invalid-credentials");
    unknown.assert_problem(401, "invalid-credentials");
    assert_eq!(wrong.body, unknown.body);
    // A grant that does not exist, or a body with more than its grant's fields, is refused.
    token(&app, json!({"grant_type": "implicit"}))
        .await
        .assert_problem(422, "validation-failed");
    token(
        &app,
        json!({"grant_type": "password", "email": customer.email, "password": "x", "scope": "admin"}),
    )
    .await
    .assert_problem(422, "validation-failed");
}

#[tokio::test]
async fn refresh_tokens_rotate_and_a_reused_one_revokes_its_family() {
    let app = spawn_app().await;
    let customer = app.customer().await;
    let refresh = |t: &str| {
        token(
            &app,
            json!({"grant_type": "refresh_token", "refresh_token": t}),
        )
    };
    let first = refresh(&customer.refresh_token).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    let second_token = first.body["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(second_token, customer.refresh_token);
    assert_eq!(
        claims(first.body["access_token"].as_str().unwrap())["sub"],
        format!("user:{}", customer.id)
    );
    // The used token again: refused, and its whole family (the new token too) is revoked.
    refresh(&customer.refresh_token)
        .await
        .assert_problem(401, "invalid-grant");
    refresh(&second_token)
        .await
        .assert_problem(401, "invalid-grant");
    // A new login starts a new family that works.
    let other = app.customer().await;
    let ok = refresh(&other.refresh_token).await;
    assert_eq!(ok.status, StatusCode::OK);
    refresh("made-up-token")
        .await
        .assert_problem(401, "invalid-grant");
}

/// A refresh that fails after the token was checked (here the user's events cannot be
/// loaded) leaves the token live: the client never saw its successor, and its retry with
/// the same token is served, not taken for a reuse that revokes the family. Before, the
/// rotation was committed before the user was loaded, and the retry was 401.
#[tokio::test]
async fn a_refresh_that_fails_leaves_its_token_for_the_retry() {
    let app = spawn_app().await;
    let customer = app.customer().await;
    let event = uuid::Uuid::now_v7();
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                             payload, metadata, event_id)
         SELECT 'user', $1, max(sequence) + 1, 'UserRenamed', '1',
                '{\"type\": \"UserRenamed\", \"display_name\": 5}', $2, $3
         FROM events WHERE aggregate_type = 'user' AND aggregate_id = $1",
    )
    .bind(customer.id.to_string())
    .bind(
        json!({"event_id": event.to_string(), "occurred_at": "2026-12-03T00:00:00Z",
        "actor": "test", "correlation_id": "c", "causation_id": "c", "traceparent": ""}),
    )
    .bind(event)
    .execute(&app.pool)
    .await
    .unwrap();
    let refresh = || {
        token(
            &app,
            json!({"grant_type": "refresh_token", "refresh_token": customer.refresh_token}),
        )
    };
    let failed = refresh().await;
    assert!(
        failed.status.is_server_error(),
        "{} {}",
        failed.status,
        failed.body
    );
    sqlx::query("DELETE FROM events WHERE event_id = $1")
        .bind(event)
        .execute(&app.pool)
        .await
        .unwrap();
    let retried = refresh().await;
    assert_eq!(retried.status, StatusCode::OK, "{}", retried.body);
    let next = retried.body["refresh_token"].as_str().unwrap().to_owned();
    // The one it was exchanged for goes on working: the family was not revoked.
    let again = token(
        &app,
        json!({"grant_type": "refresh_token", "refresh_token": next}),
    )
    .await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
}

#[tokio::test]
async fn logout_revokes_the_family() {
    let app = spawn_app().await;
    let customer = app.customer().await;
    let rotated = token(
        &app,
        json!({"grant_type": "refresh_token", "refresh_token": customer.refresh_token}),
    )
    .await;
    let current = rotated.body["refresh_token"].as_str().unwrap().to_owned();
    let out = app
        .post_as(
            Auth::Anonymous,
            "/v1/auth/logout",
            json!({"refresh_token": current}),
        )
        .await;
    assert_eq!(out.status, StatusCode::NO_CONTENT, "{}", out.body);
    token(
        &app,
        json!({"grant_type": "refresh_token", "refresh_token": current}),
    )
    .await
    .assert_problem(401, "invalid-grant");
    // Logging out with an unknown token says nothing about it.
    let unknown = app
        .post_as(
            Auth::Anonymous,
            "/v1/auth/logout",
            json!({"refresh_token": "unknown"}),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn a_service_gets_a_token_with_client_credentials_only() {
    let app = spawn_app().await;
    let ok = token(
        &app,
        json!({"grant_type": "client_credentials", "client_id": PM_CLIENT_ID, "client_secret": PM_SECRET}),
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    assert!(ok.body.get("refresh_token").is_none());
    let c = claims(ok.body["access_token"].as_str().unwrap());
    assert_eq!(c["sub"], format!("service:{PM_CLIENT_ID}"));
    assert_eq!(c["roles"], json!(["service"]));
    for (id, secret) in [
        (PM_CLIENT_ID, "wrong-secret-wrong-secret"),
        ("someone", PM_SECRET),
    ] {
        token(
            &app,
            json!({"grant_type": "client_credentials", "client_id": id, "client_secret": secret}),
        )
        .await
        .assert_problem(401, "invalid-credentials");
    }
}

/// Tokens no API may accept, and the answer both give them.
#[tokio::test]
async fn forged_and_unfit_tokens_are_refused_by_both_apis() {
    let app = spawn_app().await;
    let query = spawn_query_api(
        &crate::support::database::TestDatabase::create()
            .await
            .settings(),
    )
    .await;
    let customer = app.customer().await;
    let good = customer.token.clone();
    let parts: Vec<&str> = good.split('.').collect();
    let mut forged: Vec<(&str, String)> = Vec::new();
    let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"at+jwt"}"#);
    forged.push(("alg none", format!("{none_header}.{}.", parts[1])));
    // HS256 keyed with the published public key.
    let (_, jwks) = app.get("/.well-known/jwks.json").await;
    let jwks: Value = serde_json::from_str(&jwks).unwrap();
    let public = URL_SAFE_NO_PAD
        .decode(jwks["keys"][0]["x"].as_str().unwrap())
        .unwrap();
    let mut hs = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    hs.typ = Some(infra::auth::token::TOKEN_TYPE.into());
    hs.kid = header(&good)["kid"].as_str().map(str::to_owned);
    let hmac_key = jsonwebtoken::EncodingKey::from_secret(&public).unwrap();
    forged.push((
        "hs256 with the public key",
        jsonwebtoken::encode(&hs, &claims(&good), &hmac_key).unwrap(),
    ));
    // The customer's token with `admin` added to its roles.
    let mut elevated = claims(&good);
    elevated["roles"] = json!(["customer", "admin"]);
    let elevated = URL_SAFE_NO_PAD.encode(elevated.to_string());
    forged.push((
        "tampered roles",
        format!("{}.{elevated}.{}", parts[0], parts[2]),
    ));
    let mut unknown = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    unknown.typ = Some(infra::auth::token::TOKEN_TYPE.into());
    unknown.kid = Some("no-such-key".into());
    let signed_elsewhere =
        infra::auth::keys::key_from_pem("k", &infra::auth::keys::generate_pem().unwrap()).unwrap();
    forged.push((
        "unknown kid",
        jsonwebtoken::encode(&unknown, &claims(&good), &signed_elsewhere.encoding).unwrap(),
    ));
    let mut wrong_key = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    wrong_key.typ = Some(infra::auth::token::TOKEN_TYPE.into());
    wrong_key.kid = header(&good)["kid"].as_str().map(str::to_owned);
    forged.push((
        "known kid, other key",
        jsonwebtoken::encode(&wrong_key, &claims(&good), &signed_elsewhere.encoding).unwrap(),
    ));
    let with = |change: &dyn Fn(&mut Value)| {
        let mut c = claims(&good);
        change(&mut c);
        let keys =
            infra::auth::SigningKeys::load(&crate::support::auth::keys_dir(), "", false).unwrap();
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        h.typ = Some(infra::auth::token::TOKEN_TYPE.into());
        h.kid = Some(keys.current().kid.clone());
        jsonwebtoken::encode(&h, &c, &keys.current().encoding).unwrap()
    };
    let now = chrono::Utc::now().timestamp();
    forged.push((
        "expired",
        with(&|c| {
            c["iat"] = json!(now - 2000);
            c["nbf"] = json!(now - 2000);
            c["exp"] = json!(now - 1000);
        }),
    ));
    forged.push((
        "not yet valid",
        with(&|c| {
            c["nbf"] = json!(now + 600);
            c["exp"] = json!(now + 800);
        }),
    ));
    forged.push(("wrong issuer", with(&|c| c["iss"] = json!("elsewhere"))));
    forged.push(("wrong audience", with(&|c| c["aud"] = json!("another-api"))));
    forged.push(("garbage", "Zm9v.YmFy.YmF6".to_owned()));
    let path = format!("/v1/users/{}", customer.id);
    for (name, token) in &forged {
        let command = app
            .send_as(
                Auth::Bearer(token),
                Method::POST,
                &format!("{path}/profile"),
                Some(json!({"display_name": "X"})),
                &[],
            )
            .await;
        command.assert_problem(401, "unauthenticated");
        assert!(
            command.headers["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Bearer"),
            "{name}"
        );
        let read = query.get_as(Some(token), &path, &[]).await;
        read.assert_problem(401, "unauthenticated");
        assert!(read.headers.contains_key("www-authenticate"), "{name}");
    }
    // The genuine token works on both, and no token at all is refused.
    let ok = app
        .send_as(
            Auth::Bearer(&good),
            Method::POST,
            &format!("{path}/profile"),
            Some(json!({"display_name": "X"})),
            &[],
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    app.post_as(
        Auth::Anonymous,
        &format!("{path}/profile"),
        json!({"display_name": "Y"}),
    )
    .await
    .assert_problem(401, "unauthenticated");
    query
        .get_as(None, &path, &[])
        .await
        .assert_problem(401, "unauthenticated");
    // A service token minted with the right key passes verification (the role decides).
    let service = mint(&Principal::new(
        Subject::Service("payments".into()),
        [Role::Service],
    ));
    let answer = query.get_as(Some(&service), &path, &[]).await;
    assert_ne!(answer.status, StatusCode::UNAUTHORIZED);
}

/// A rotation as the query API sees it: a token signed with a key it has not seen is refused
/// until the key is published, and accepted once it is, with no restart; tokens of the old
/// key keep working while it is listed.
#[tokio::test]
async fn a_new_signing_key_is_picked_up_by_the_query_api_without_a_restart() {
    use infra::auth::keys::{generate_pem, key_from_pem};
    use infra::auth::SigningKeys;
    let dir = std::env::temp_dir().join(format!("rotation-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let jwks = dir.join("jwks.json");
    let old_pem = generate_pem().unwrap();
    let new_pem = generate_pem().unwrap();
    let old =
        || SigningKeys::from_keys(vec![key_from_pem("2026-11", &old_pem).unwrap()], "").unwrap();
    let both = || {
        SigningKeys::from_keys(
            vec![
                key_from_pem("2026-11", &old_pem).unwrap(),
                key_from_pem("2026-12", &new_pem).unwrap(),
            ],
            "2026-12",
        )
        .unwrap()
    };
    std::fs::write(&jwks, old().jwks().to_string()).unwrap();
    let db = crate::support::database::TestDatabase::create().await;
    let mut settings = db.settings();
    settings.auth.jwks_url = format!("file://{}", jwks.display());
    let query = spawn_query_api(&settings).await;
    let admin = Principal::new(Subject::User(uuid::Uuid::now_v7()), [Role::Admin]);
    let sign = |keys: &SigningKeys| {
        infra::auth::token::issue(
            keys,
            &settings.auth.issuer,
            &settings.auth.audience,
            &admin,
            std::time::Duration::from_secs(300),
        )
        .unwrap()
        .token
    };
    let (old_token, new_token) = (sign(&old()), sign(&both()));
    assert_eq!(header(&new_token)["kid"], "2026-12");
    let path = format!("/v1/users/{}", uuid::Uuid::now_v7());
    query
        .get_as(Some(&old_token), &path, &[])
        .await
        .assert_problem(404, "not-found");
    query
        .get_as(Some(&new_token), &path, &[])
        .await
        .assert_problem(401, "unauthenticated");
    // The new key is published beside the old one.
    std::fs::write(&jwks, both().jwks().to_string()).unwrap();
    tokio::time::sleep(infra::auth::jwks::MIN_REFETCH + std::time::Duration::from_millis(500))
        .await;
    query
        .get_as(Some(&new_token), &path, &[])
        .await
        .assert_problem(404, "not-found");
    query
        .get_as(Some(&old_token), &path, &[])
        .await
        .assert_problem(404, "not-found");
    let _ = std::fs::remove_dir_all(&dir);
}
