//! Bad input: every case is a 4xx problem naming the field or rule, and writes nothing.

use serde_json::json;

use crate::support::app::{order_body, spawn_app, unique_email};

struct Case {
    name: &'static str,
    path: String,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    status: u16,
    code: &'static str,
    fields: &'static [&'static str],
}

fn json_case(
    name: &'static str,
    path: &str,
    body: serde_json::Value,
    fields: &'static [&'static str],
) -> Case {
    Case {
        name,
        path: path.to_owned(),
        content_type: Some("application/json"),
        body: serde_json::to_vec(&body).unwrap(),
        status: 422,
        code: "validation-failed",
        fields,
    }
}

#[tokio::test]
async fn bad_input_is_a_clear_4xx_and_writes_nothing() {
    let app = spawn_app().await;
    let user = app.register(&unique_email()).await;
    let order = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut body = order_body(&user);
        f(&mut body);
        body
    };
    let cases = vec![
        Case {
            name: "malformed JSON",
            path: "/v1/users".into(),
            content_type: Some("application/json"),
            body: b"{\"email\": \"a@b.co\", ".to_vec(),
            status: 400,
            code: "malformed-json",
            fields: &[],
        },
        Case {
            name: "not JSON at all",
            path: "/v1/users".into(),
            content_type: Some("text/plain"),
            body: b"email=a@b.co".to_vec(),
            status: 415,
            code: "unsupported-media-type",
            fields: &[],
        },
        Case {
            name: "oversized body",
            path: "/v1/users".into(),
            content_type: Some("application/json"),
            body: serde_json::to_vec(
                &json!({"email": "a@b.co", "display_name": "x".repeat(70_000), "password": "customer-password-1"}),
            )
            .unwrap(),
            status: 413,
            code: "payload-too-large",
            fields: &[],
        },
        json_case(
            "unknown field",
            "/v1/users",
            json!({"email": "a@b.co", "display_name": "A", "admin": true, "password": "customer-password-1"}),
            &["admin"],
        ),
        json_case(
            "missing field",
            "/v1/users",
            json!({"email": "a@b.co"}),
            &["display_name"],
        ),
        json_case(
            "wrong type",
            "/v1/users",
            json!({"email": 42, "display_name": "A", "password": "customer-password-1"}),
            &["email"],
        ),
        json_case(
            "bad email",
            "/v1/users",
            json!({"email": "a@b", "display_name": "A", "password": "customer-password-1"}),
            &["email"],
        ),
        json_case(
            "zero quantity",
            "/v1/orders",
            order(&|b| b["items"][0]["quantity"] = json!(0)),
            &["items[0].quantity"],
        ),
        json_case(
            "negative quantity",
            "/v1/orders",
            order(&|b| b["items"][1]["quantity"] = json!(-3)),
            &["items[1].quantity"],
        ),
        json_case(
            "quantity as a string",
            "/v1/orders",
            order(&|b| b["items"][0]["quantity"] = json!("two")),
            &["items[0].quantity"],
        ),
        json_case(
            "negative price",
            "/v1/orders",
            order(&|b| b["items"][0]["unit_price_minor"] = json!(-1)),
            &["items[0].unit_price_minor"],
        ),
        json_case(
            "unknown currency",
            "/v1/orders",
            order(&|b| b["currency"] = json!("EURO")),
            &["currency"],
        ),
        json_case(
            "unknown nested field",
            "/v1/orders",
            order(&|b| b["items"][0]["discount"] = json!(5)),
            &["items[0].discount"],
        ),
        json_case(
            "bad country",
            "/v1/orders",
            order(&|b| b["shipping_address"]["country"] = json!("Germany")),
            &["shipping_address.country"],
        ),
        json_case(
            "several bad fields",
            "/v1/orders",
            order(&|b| {
                b["currency"] = json!("xyz");
                b["items"][0]["sku"] = json!("has space");
            }),
            &["currency", "items[0].sku"],
        ),
    ];
    let before = app.event_count().await;
    for case in cases {
        let answer = app.raw_post(&case.path, case.content_type, case.body).await;
        assert_eq!(
            answer.status.as_u16(),
            case.status,
            "{}: {}",
            case.name,
            answer.body
        );
        answer.assert_problem(case.status, case.code);
        assert_eq!(answer.error_fields(), case.fields, "{}", case.name);
    }
    assert_eq!(app.event_count().await, before, "bad input wrote events");
    let claims: i64 = sqlx::query_scalar("SELECT count(*) FROM unique_claims")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(claims, 1, "bad input claimed an email");
}

#[tokio::test]
async fn bad_headers_are_400() {
    let app = spawn_app().await;
    let body = Some(
        json!({"email": unique_email(), "display_name": "A", "password": "customer-password-1"}),
    );
    for (header, value) in [
        ("If-Match", "\"-1\""),
        ("Idempotency-Key", "has space"),
        ("X-Correlation-Id", ""),
    ] {
        let answer = app
            .send(
                reqwest::Method::POST,
                "/v1/users",
                body.clone(),
                &[(header, value)],
            )
            .await;
        answer.assert_problem(400, "bad-header");
    }
    assert_eq!(app.event_count().await, 0);
}
