use super::*;
use crate::auth::keys::{generate_pem, key_from_pem};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

fn keys(kid: &str) -> SigningKeys {
    SigningKeys::from_keys(
        vec![key_from_pem(kid, &generate_pem().unwrap()).unwrap()],
        "",
    )
    .unwrap()
}

fn customer() -> Principal {
    Principal::new(Subject::User(Uuid::now_v7()), [Role::Customer])
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

fn sign(keys: &SigningKeys, header: &Header, claims: &Claims) -> String {
    jsonwebtoken::encode(header, claims, &keys.current().encoding).unwrap()
}

fn claims(principal: &Principal) -> Claims {
    let now = chrono::Utc::now().timestamp();
    Claims {
        iss: "iss".into(),
        aud: "aud".into(),
        sub: principal.sub(),
        roles: vec!["customer".into()],
        iat: now,
        nbf: now,
        exp: now + 300,
        jti: "j".into(),
    }
}

fn header(kid: &str) -> Header {
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(kid.into());
    header.typ = Some(TOKEN_TYPE.into());
    header
}

#[test]
fn an_issued_token_verifies_to_its_principal() {
    let keys = keys("k1");
    let verifier = Verifier::new("iss", "aud").with_keys(&keys);
    let who = customer();
    let issued = issue(&keys, "iss", "aud", &who, Duration::from_secs(900)).unwrap();
    assert_eq!(issued.expires_in, 900);
    assert_eq!(block_on(verifier.verify(&issued.token)).unwrap(), who);
    let too_long = issue(&keys, "iss", "aud", &who, Duration::from_secs(86_400)).unwrap();
    assert_eq!(too_long.expires_in, MAX_ACCESS_TTL.as_secs());
}

/// The forgery matrix: each of these must be refused.
#[test]
fn forged_or_unfit_tokens_are_refused() {
    let keys = keys("k1");
    let verifier = Verifier::new("iss", "aud").with_keys(&keys);
    let who = customer();
    let good = claims(&who);
    let now = good.iat;
    let mut cases: Vec<(&str, String)> = Vec::new();
    // alg none: header and claims, no signature.
    let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"at+jwt","kid":"k1"}"#);
    let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&good).unwrap());
    cases.push(("alg none", format!("{none_header}.{body}.")));
    // HS256 keyed with the public key (the classic confusion attack).
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some("k1".into());
    hs.typ = Some(TOKEN_TYPE.into());
    let hmac = jsonwebtoken::EncodingKey::from_secret(&keys.current().public).unwrap();
    cases.push(("hs256", jsonwebtoken::encode(&hs, &good, &hmac).unwrap()));
    // Tampered claims: a signed token whose payload was swapped.
    let signed = sign(&keys, &header("k1"), &good);
    let mut admin = good.clone();
    admin.roles = vec!["admin".into()];
    let parts: Vec<&str> = signed.split('.').collect();
    let swapped = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&admin).unwrap());
    cases.push(("tampered", format!("{}.{swapped}.{}", parts[0], parts[2])));
    // Signed by a key that is not trusted, under a known and an unknown kid.
    let stranger = self::keys("k1");
    cases.push(("foreign key", sign(&stranger, &header("k1"), &good)));
    cases.push(("unknown kid", sign(&keys, &header("k9"), &good)));
    let mut no_kid = header("k1");
    no_kid.kid = None;
    cases.push(("no kid", sign(&keys, &no_kid, &good)));
    let mut untyped = header("k1");
    untyped.typ = Some("JWT".into());
    cases.push(("another type of JWT", sign(&keys, &untyped, &good)));
    let with = |f: &dyn Fn(&mut Claims)| {
        let mut c = good.clone();
        f(&mut c);
        sign(&keys, &header("k1"), &c)
    };
    cases.push((
        "expired",
        with(&|c| {
            c.iat = now - 1000;
            c.nbf = now - 1000;
            c.exp = now - 100
        }),
    ));
    cases.push((
        "not yet valid",
        with(&|c| {
            c.nbf = now + 600;
            c.exp = now + 800
        }),
    ));
    cases.push(("wrong iss", with(&|c| c.iss = "other".into())));
    cases.push(("wrong aud", with(&|c| c.aud = "other".into())));
    cases.push(("too long", with(&|c| c.exp = now + 86_400)));
    cases.push((
        "issued in the future",
        with(&|c| {
            c.iat = now + 600;
            c.exp = now + 800
        }),
    ));
    cases.push(("unknown role", with(&|c| c.roles = vec!["root".into()])));
    cases.push(("bad subject", with(&|c| c.sub = "admin".into())));
    cases.push(("garbage", "not.a.token".into()));
    cases.push(("empty", String::new()));
    for (name, token) in cases {
        assert!(
            block_on(verifier.verify(&token)).is_err(),
            "{name} was accepted"
        );
    }
    assert!(block_on(verifier.verify(&sign(&keys, &header("k1"), &good))).is_ok());
}

#[test]
fn a_remembered_token_stops_working_when_its_key_is_removed() {
    let keys = keys("k1");
    let verifier = Verifier::new("iss", "aud").with_keys(&keys);
    let token = issue(&keys, "iss", "aud", &customer(), Duration::from_secs(60)).unwrap();
    assert!(block_on(verifier.verify(&token.token)).is_ok());
    assert!(
        verifier.verified.get(&token.token).is_some(),
        "a verified token is remembered"
    );
    assert!(
        block_on(verifier.verify(&token.token)).is_ok(),
        "from the cache"
    );
    verifier.replace_keys(vec![(
        "k2".into(),
        self::keys("k2").current().public.clone(),
    )]);
    assert!(block_on(verifier.verify(&token.token)).is_err());
}

/// A compromised key replaced under the same `kid` (a fixed file name such as `current.pem`):
/// the tokens it signed stop working at once, as when a key is removed. Before, the set of
/// kids was all that was compared, and the remembered tokens went on verifying until they
/// expired.
#[test]
fn a_remembered_token_stops_working_when_its_key_is_replaced_under_its_kid() {
    let keys = keys("k1");
    let verifier = Verifier::new("iss", "aud").with_keys(&keys);
    let token = issue(&keys, "iss", "aud", &customer(), Duration::from_secs(60)).unwrap();
    assert!(block_on(verifier.verify(&token.token)).is_ok());
    verifier.replace_keys(vec![(
        "k1".into(),
        self::keys("k1").current().public.clone(),
    )]);
    assert!(block_on(verifier.verify(&token.token)).is_err());
}

#[test]
fn a_retired_key_still_verifies_while_it_is_listed() {
    let old = key_from_pem("2026-01", &generate_pem().unwrap()).unwrap();
    let new = key_from_pem("2026-02", &generate_pem().unwrap()).unwrap();
    let before = SigningKeys::from_keys(vec![old], "").unwrap();
    let token = issue(&before, "iss", "aud", &customer(), Duration::from_secs(60)).unwrap();
    let mut both = vec![new];
    both.extend(before.all().iter().map(|k| SigningKey {
        kid: k.kid.clone(),
        encoding: k.encoding.clone(),
        public: k.public.clone(),
    }));
    let after = SigningKeys::from_keys(both, "").unwrap();
    assert_eq!(after.current().kid, "2026-02");
    let verifier = Verifier::new("iss", "aud").with_keys(&after);
    assert!(block_on(verifier.verify(&token.token)).is_ok());
}

use crate::auth::SigningKey;
