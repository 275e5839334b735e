//! The routes' answers before any database read: 401 without a valid token, 403 before
//! parameter checks, a customer's view of another user's order list. The pool is lazy and
//! points nowhere, so a route that reached the database would fail these tests.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use infra::auth::keys::{generate_pem, key_from_pem};
use infra::auth::{Principal, Role, SigningKeys, Subject, Verifier};
use uuid::Uuid;

use super::AppState;
use crate::cache::ReadCache;
use crate::params::Cursor;

/// The query API's routes on a local port, and the keys its tokens are signed with.
struct Served {
    address: SocketAddr,
    keys: SigningKeys,
}

async fn serve() -> Served {
    let pem = generate_pem().expect("a key");
    let key = key_from_pem("k1", &pem).expect("a parsable key");
    let keys = SigningKeys::from_keys(vec![key], "").expect("keys");
    let verifier = Arc::new(Verifier::new("iss", "aud").with_keys(&keys));
    let state = AppState {
        pool: sqlx::postgres::PgPoolOptions::new()
            .acquire_timeout(Duration::from_millis(200))
            .connect_lazy("postgres://nobody@127.0.0.1:1/nothing")
            .expect("a lazy pool"),
        cache: Arc::new(ReadCache::new(
            1 << 20,
            Duration::from_secs(60),
            Duration::from_millis(100),
            8,
        )),
        console: Arc::new(
            crate::admin::Console::new(
                &infra::settings::Settings::load_from(None).expect("default settings"),
                infra::http::TrustedProxies::default(),
            )
            .expect("a console"),
        ),
        as_of: Arc::new(crate::as_of::AsOfPools::new(
            "postgres://nobody@127.0.0.1:1/nothing"
                .parse()
                .expect("options"),
        )),
        exports: Arc::new(super::audit::Exports::new(1, Duration::from_secs(60))),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let address = listener.local_addr().expect("its address");
    let app = crate::startup::router(state, verifier);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Served { address, keys }
}

impl Served {
    fn token(&self, principal: &Principal) -> String {
        infra::auth::token::issue(
            &self.keys,
            "iss",
            "aud",
            principal,
            Duration::from_secs(300),
        )
        .expect("a token")
        .token
    }

    /// `GET path`: the status and the whole answer (head and body).
    async fn get(&self, path: &str, token: Option<String>) -> (u16, String) {
        let address = self.address;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: test\r\n{}Connection: close\r\n\r\n",
            token
                .map(|t| format!("Authorization: Bearer {t}\r\n"))
                .unwrap_or_default()
        );
        let answer = tokio::task::spawn_blocking(move || {
            let mut stream = std::net::TcpStream::connect(address).expect("connect");
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .expect("a timeout");
            stream.write_all(request.as_bytes()).expect("send");
            let mut answer = String::new();
            stream.read_to_string(&mut answer).expect("read");
            answer
        })
        .await
        .expect("the client thread");
        let status = answer
            .get(9..12)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status in {answer}"));
        (status, answer)
    }
}

fn user(roles: &[Role]) -> Principal {
    Principal::new(Subject::User(Uuid::now_v7()), roles.iter().copied())
}

fn service() -> Principal {
    Principal::new(Subject::Service("process-manager".into()), [Role::Service])
}

const STAFF_ROUTES: [&str; 5] = [
    "/v1/users?email=someone%40example.com",
    "/v1/analytics/revenue",
    "/v1/analytics/order-funnel",
    "/v1/analytics/customer-value",
    "/v1/audit/user/0190a3c4-0000-7000-8000-000000000000",
];

#[tokio::test]
async fn every_read_route_needs_a_valid_token_but_the_document_does_not() {
    let served = serve().await;
    let id = Uuid::now_v7();
    let routes = [
        format!("/v1/users/{id}"),
        format!("/v1/orders/{id}"),
        format!("/v1/users/{id}/orders"),
        format!("/v1/payments/{id}"),
        format!("/v1/orders/{id}/payments"),
    ];
    for path in routes.iter().map(String::as_str).chain(STAFF_ROUTES) {
        for token in [None, Some("not-a-token".to_owned())] {
            let (status, answer) = served.get(path, token.clone()).await;
            assert_eq!(status, 401, "{path} with {token:?}: {answer}");
            assert!(answer.contains("/problems/unauthenticated"), "{answer}");
            assert!(answer
                .to_ascii_lowercase()
                .contains("www-authenticate: bearer"));
        }
    }
    let (status, _) = served.get("/openapi.json", None).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn staff_routes_are_forbidden_to_customers_and_services_before_parameter_checks() {
    let served = serve().await;
    for principal in [user(&[Role::Customer]), service(), user(&[])] {
        let token = served.token(&principal);
        for path in STAFF_ROUTES
            .into_iter()
            .chain(["/v1/analytics/revenue?from=garbage"])
        {
            let (status, answer) = served.get(path, Some(token.clone())).await;
            assert_eq!(status, 403, "{path} for {principal:?}: {answer}");
            assert!(answer.contains("/problems/forbidden"), "{answer}");
        }
    }
}

/// A customer asking for an as-of set is answered 403 before anything else about the request
/// is judged, as on the staff routes. Before, a malformed id answered 404 and a bad limit 422
/// first.
#[tokio::test]
async fn an_as_of_read_is_forbidden_to_a_customer_before_parameter_checks() {
    let served = serve().await;
    let customer = user(&[Role::Customer]);
    let token = served.token(&customer);
    let id = customer.user_id().expect("a user");
    for path in [
        "/v1/orders/not-an-id?as_of=x".to_owned(),
        "/v1/users/not-an-id?as_of=x".to_owned(),
        "/v1/payments/not-an-id?as_of=x".to_owned(),
        "/v1/orders/not-an-id/payments?as_of=x".to_owned(),
        format!("/v1/users/{id}/orders?as_of=x&limit=0"),
        format!("/v1/users/{id}/orders?as_of=x&status=lost"),
    ] {
        let (status, answer) = served.get(&path, Some(token.clone())).await;
        assert_eq!(status, 403, "{path}: {answer}");
        assert!(answer.contains("/problems/forbidden"), "{answer}");
    }
}

#[tokio::test]
async fn a_principal_without_a_role_reads_nothing() {
    let served = serve().await;
    let nobody = user(&[]);
    let token = served.token(&nobody);
    let id = nobody.user_id().expect("a user");
    for path in [
        format!("/v1/users/{id}"),
        format!("/v1/users/{id}/orders"),
        format!("/v1/orders/{id}?min_version=x"),
        format!("/v1/payments/{id}"),
        format!("/v1/orders/{id}/payments"),
    ] {
        let (status, answer) = served.get(&path, Some(token.clone())).await;
        assert_eq!(status, 403, "{path}: {answer}");
    }
}

#[tokio::test]
async fn another_users_order_list_is_answered_as_an_unknown_users() {
    let served = serve().await;
    let token = served.token(&user(&[Role::Customer]));
    let other = Uuid::now_v7();
    let (status, answer) = served
        .get(&format!("/v1/users/{other}/orders"), Some(token.clone()))
        .await;
    assert_eq!(status, 404, "{answer}");
    assert!(answer.contains("/problems/not-found"), "{answer}");
    assert!(answer.contains("no user with that identifier"), "{answer}");
    let cursor = Cursor {
        at: chrono::Utc::now(),
        id: Uuid::now_v7(),
    }
    .encode();
    let (status, answer) = served
        .get(
            &format!("/v1/users/{other}/orders?cursor={cursor}"),
            Some(token.clone()),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert!(
        answer.ends_with(r#"{"items":[],"next_cursor":null}"#),
        "{answer}"
    );
    // Parameters are checked as for anyone.
    let (status, _) = served
        .get(
            &format!("/v1/users/{other}/orders?status=lost"),
            Some(token),
        )
        .await;
    assert_eq!(status, 422);
}
