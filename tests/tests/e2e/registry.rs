//! The schema registry over raw HTTP (Confluent's API and error codes) and through the real
//! `schema_registry_converter` client.

use futures::future::join_all;
use reqwest::Method;
use serde_json::{json, Value};

use crate::support::registry::{call_registry, spawn_registry, start_registry};

fn record(fields: &str) -> String {
    format!(r#"{{"type": "record", "name": "Thing", "namespace": "test", "fields": [{fields}]}}"#)
}

fn body(schema: &str) -> Option<Value> {
    Some(json!({ "schema": schema }))
}

#[tokio::test]
async fn registering_is_idempotent_and_lookups_answer() {
    let r = spawn_registry().await;
    let v1 = record(r#"{"name": "a", "type": "string"}"#);
    let (status, content_type, first) = r
        .call(Method::POST, "/subjects/things-value/versions", body(&v1))
        .await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(content_type, "application/vnd.schemaregistry.v1+json");
    let id = first["id"].as_i64().unwrap();
    // Same schema again, even formatted differently: same id, no new version.
    let reformatted = v1.replace(", ", ",\n   ");
    let (_, _, again) = r
        .call(
            Method::POST,
            "/subjects/things-value/versions",
            body(&reformatted),
        )
        .await;
    assert_eq!(again["id"], id);
    // The same schema under another subject shares the id.
    let (_, _, other) = r
        .call(Method::POST, "/subjects/other-value/versions", body(&v1))
        .await;
    assert_eq!(other["id"], id);

    let (status, _, by_id) = r
        .call(Method::GET, &format!("/schemas/ids/{id}"), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(by_id["schema"], v1);
    let (_, _, subjects) = r.call(Method::GET, "/subjects", None).await;
    assert_eq!(subjects, json!(["other-value", "things-value"]));
    let (_, _, versions) = r
        .call(Method::GET, "/subjects/things-value/versions", None)
        .await;
    assert_eq!(versions, json!([1]));
    let (_, _, latest) = r
        .call(Method::GET, "/subjects/things-value/versions/latest", None)
        .await;
    assert_eq!(
        latest,
        json!({"subject": "things-value", "version": 1, "id": id, "schema": v1})
    );
    let (_, _, found) = r
        .call(Method::POST, "/subjects/things-value", body(&v1))
        .await;
    assert_eq!(found["version"], 1);
    assert_eq!(found["id"], id);
}

#[tokio::test]
async fn errors_use_confluent_codes() {
    let r = spawn_registry().await;
    let v1 = record(r#"{"name": "a", "type": "string"}"#);
    r.call(Method::POST, "/subjects/s/versions", body(&v1))
        .await;
    let cases: Vec<(Method, &str, Option<Value>, u16, i64)> = vec![
        (Method::GET, "/subjects/missing/versions", None, 404, 40401),
        (Method::DELETE, "/subjects/missing", None, 404, 40401),
        (
            Method::GET,
            "/subjects/missing/versions/1",
            None,
            404,
            40401,
        ),
        (Method::GET, "/subjects/s/versions/9", None, 404, 40402),
        (Method::GET, "/schemas/ids/999", None, 404, 40403),
        (
            Method::POST,
            "/subjects/s",
            body(&record(r#"{"name": "z", "type": "int"}"#)),
            404,
            40403,
        ),
        (
            Method::POST,
            "/subjects/s/versions",
            body("{\"type\": \"nonsense\"}"),
            422,
            42201,
        ),
        (
            Method::POST,
            "/subjects/s/versions",
            body("not json"),
            422,
            42201,
        ),
        (Method::GET, "/subjects/s/versions/abc", None, 422, 42202),
        (
            Method::PUT,
            "/config",
            Some(json!({"compatibility": "SIDEWAYS"})),
            422,
            42203,
        ),
        (Method::GET, "/config/s", None, 404, 40408),
        // A subject with a control character is refused where it would be stored, and one
        // with a NUL (which cannot have been stored) is not found; before, a NUL reached
        // PostgreSQL and got a 500.
        (
            Method::POST,
            "/subjects/a%00b/versions",
            body(&v1),
            422,
            42208,
        ),
        (
            Method::POST,
            "/subjects/a%07b/versions",
            body(&v1),
            422,
            42208,
        ),
        (
            Method::PUT,
            "/config/a%0Ab",
            Some(json!({"compatibility": "NONE"})),
            422,
            42208,
        ),
        (Method::GET, "/subjects/a%00b/versions", None, 404, 40401),
        (Method::DELETE, "/subjects/a%00b", None, 404, 40401),
    ];
    for (method, path, payload, status, code) in cases {
        let (got, content_type, answer) = r.call(method.clone(), path, payload).await;
        assert_eq!(
            (got, answer["error_code"].as_i64()),
            (status, Some(code)),
            "{method} {path}: {answer}"
        );
        assert_eq!(content_type, "application/vnd.schemaregistry.v1+json");
        assert!(answer["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
}

#[tokio::test]
async fn compatibility_levels_are_enforced_and_configurable() {
    let r = spawn_registry().await;
    let (_, _, global) = r.call(Method::GET, "/config", None).await;
    assert_eq!(global["compatibilityLevel"], "BACKWARD_TRANSITIVE");
    let path = "/subjects/evolving/versions";
    let v1 = record(r#"{"name": "a", "type": "string"}"#);
    let v2 =
        record(r#"{"name": "a", "type": "string"}, {"name": "b", "type": "long", "default": 0}"#);
    let breaking = record(r#"{"name": "a", "type": "string"}, {"name": "c", "type": "long"}"#);
    assert_eq!(r.call(Method::POST, path, body(&v1)).await.0, 200);
    assert_eq!(r.call(Method::POST, path, body(&v2)).await.0, 200);
    let (status, _, refused) = r.call(Method::POST, path, body(&breaking)).await;
    assert_eq!(
        (status, refused["error_code"].as_i64()),
        (409, Some(409)),
        "{refused}"
    );

    let check = "/compatibility/subjects/evolving/versions/latest";
    let (_, _, verdict) = r.call(Method::POST, check, body(&breaking)).await;
    assert_eq!(verdict["is_compatible"], false);
    let (_, _, verdict) = r.call(Method::POST, check, body(&v2)).await;
    assert_eq!(verdict["is_compatible"], true);
    // A subject with nothing registered yet is compatible with anything (before: 40401), and
    // a numbered version of it is a missing version, as Confluent answers.
    let fresh = "/compatibility/subjects/not-yet/versions/latest";
    let (status, _, verdict) = r.call(Method::POST, fresh, body(&breaking)).await;
    assert_eq!(
        (status, verdict["is_compatible"].clone()),
        (200, json!(true))
    );
    let numbered = "/compatibility/subjects/not-yet/versions/1";
    let (status, _, missing) = r.call(Method::POST, numbered, body(&breaking)).await;
    assert_eq!((status, missing["error_code"].clone()), (404, json!(40402)));

    let (status, _, set) = r
        .call(
            Method::PUT,
            "/config/evolving",
            Some(json!({"compatibility": "NONE"})),
        )
        .await;
    assert_eq!((status, set["compatibility"].as_str()), (200, Some("NONE")));
    assert_eq!(r.call(Method::POST, path, body(&breaking)).await.0, 200);
    let (_, _, versions) = r.call(Method::GET, path, None).await;
    assert_eq!(versions, json!([1, 2, 3]));
    for level in [
        "BACKWARD",
        "FORWARD",
        "FORWARD_TRANSITIVE",
        "FULL",
        "FULL_TRANSITIVE",
        "BACKWARD_TRANSITIVE",
    ] {
        let (status, _, _) = r
            .call(
                Method::PUT,
                "/config",
                Some(json!({"compatibility": level})),
            )
            .await;
        assert_eq!(status, 200);
        let (_, _, now) = r.call(Method::GET, "/config", None).await;
        assert_eq!(now["compatibilityLevel"], level);
    }
    let (status, _, _) = r.call(Method::DELETE, "/config/evolving", None).await;
    assert_eq!(status, 200);
    let (_, _, fallback) = r
        .call(Method::GET, "/config/evolving?defaultToGlobal=true", None)
        .await;
    assert_eq!(fallback["compatibilityLevel"], "BACKWARD_TRANSITIVE");
}

#[tokio::test]
async fn versions_are_soft_deleted() {
    let r = spawn_registry().await;
    let path = "/subjects/gone/versions";
    let v1 = record(r#"{"name": "a", "type": "string"}"#);
    let v2 =
        record(r#"{"name": "a", "type": "string"}, {"name": "b", "type": "long", "default": 0}"#);
    let id = r.call(Method::POST, path, body(&v1)).await.2["id"].clone();
    r.call(Method::POST, path, body(&v2)).await;
    let (status, _, deleted) = r
        .call(Method::DELETE, "/subjects/gone/versions/1", None)
        .await;
    assert_eq!((status, deleted), (200, json!(1)));
    assert_eq!(r.call(Method::GET, path, None).await.2, json!([2]));
    assert_eq!(
        r.call(Method::GET, "/subjects/gone/versions/1", None)
            .await
            .2["error_code"],
        40402
    );
    assert_eq!(
        r.call(Method::GET, &format!("{path}?deleted=true"), None)
            .await
            .2,
        json!([1, 2])
    );
    // Data written with a deleted version stays readable.
    assert_eq!(
        r.call(Method::GET, &format!("/schemas/ids/{id}"), None)
            .await
            .0,
        200
    );
    let (_, _, all) = r.call(Method::DELETE, "/subjects/gone", None).await;
    assert_eq!(all, json!([2]));
    assert_eq!(r.call(Method::GET, "/subjects", None).await.2, json!([]));
    // A version of a subject deleted whole is still there with `deleted=true`, as the list
    // of its versions is; before, that read answered 40401.
    let (status, _, kept) = r
        .call(Method::GET, "/subjects/gone/versions/2?deleted=true", None)
        .await;
    assert_eq!((status, kept["version"].clone()), (200, json!(2)), "{kept}");
    assert_eq!(
        r.call(Method::GET, "/subjects/gone/versions/2", None)
            .await
            .2["error_code"],
        40401
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn instances_sharing_a_database_never_issue_duplicate_ids() {
    let r = spawn_registry().await;
    let second = start_registry(&r.db).await;
    r.call(
        Method::PUT,
        "/config",
        Some(json!({"compatibility": "NONE"})),
    )
    .await;
    let schemas: Vec<String> = (0..6)
        .map(|i| record(&format!(r#"{{"name": "f{i}", "type": "long"}}"#)))
        .collect();
    let calls = (0..24).map(|i| {
        let base = if i % 2 == 0 {
            r.url.clone()
        } else {
            second.clone()
        };
        let schema = schemas[i % schemas.len()].clone();
        let client = r.client.clone();
        async move {
            let subject = format!("/subjects/shared-{}/versions", i % 3);
            let (status, _, answer) =
                call_registry(&client, &base, Method::POST, &subject, body(&schema)).await;
            assert_eq!(status, 200, "{answer}");
            (schema, answer["id"].as_i64().unwrap())
        }
    });
    let results = join_all(calls).await;
    let mut by_schema = std::collections::HashMap::new();
    for (schema, id) in &results {
        assert_eq!(
            *by_schema.entry(schema.clone()).or_insert(*id),
            *id,
            "one schema, two ids"
        );
    }
    let distinct: std::collections::HashSet<_> = by_schema.values().collect();
    assert_eq!(distinct.len(), schemas.len(), "two schemas share an id");
    for subject in 0..3 {
        let (_, _, versions) = r
            .call(
                Method::GET,
                &format!("/subjects/shared-{subject}/versions"),
                None,
            )
            .await;
        let versions = versions.as_array().unwrap().len();
        assert_eq!(versions, 2, "each subject got its 2 distinct schemas once");
    }
}

#[tokio::test]
async fn the_converter_client_round_trips_every_event_type() {
    let r = spawn_registry().await;
    let encoder = crate::support::registry::encoder(&r.url);
    let decoder = schemas::wire::EventDecoder::new(&r.url);
    let id = "0190a000-0000-7000-8000-000000000001";
    let samples = [
        (
            "users.events",
            json!({"type": "UserRegistered", "email": "a@b.co", "display_name": "A", "roles": ["customer"]}),
        ),
        (
            "users.events",
            json!({"type": "UserProfileChanged", "display_name": null, "preferences": {"theme": "dark"}}),
        ),
        (
            "orders.events",
            json!({"type": "OrderShipped", "carrier": "UPS", "tracking_number": "1Z"}),
        ),
        ("orders.events", json!({"type": "OrderConfirmed"})),
        (
            "payments.events",
            json!({"type": "PaymentCaptured", "order_id": id, "amount_minor": 5,
            "currency": "EUR", "captured_total_minor": 5}),
        ),
    ];
    for (topic, payload) in samples {
        let event_type = payload["type"].as_str().unwrap();
        let bytes = encoder.encode(topic, event_type, &payload).await.unwrap();
        assert_eq!(bytes[0], 0, "Confluent magic byte");
        let decoded = decoder.decode(&bytes).await.unwrap();
        assert_eq!(decoded.event_type, event_type);
        assert_eq!(decoded.payload, payload);
    }
    let (_, _, subjects) = r.call(Method::GET, "/subjects", None).await;
    let subjects: Vec<&str> = subjects
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        subjects.contains(&"users.events-commerce.user.UserRegistered"),
        "{subjects:?}"
    );
    assert!(subjects.contains(&"payments.events-commerce.payment.PaymentCaptured"));
}

#[tokio::test]
async fn writes_need_the_basic_credentials_and_reads_do_not() {
    let r = spawn_registry().await;
    let schema = json!({"schema": r#"{"type": "record", "name": "A", "fields": []}"#});
    let url = format!("{}/subjects/guarded-value/versions", r.url);
    let client = reqwest::Client::new();
    for credentials in [
        None,
        Some(("registry", "wrong")),
        Some(("other", "test-registry-password")),
    ] {
        let mut request = client
            .post(&url)
            .header("content-type", "application/vnd.schemaregistry.v1+json")
            .body(schema.to_string());
        if let Some((user, password)) = credentials {
            request = request.basic_auth(user, Some(password));
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "{credentials:?}");
        assert!(response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic"));
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error_code"], 40101);
    }
    let put = client
        .put(format!("{}/config", r.url))
        .body(r#"{"compatibility": "NONE"}"#);
    assert_eq!(put.send().await.unwrap().status(), 401, "PUT /config");
    for path in ["/config/guarded-value", "/subjects/guarded-value"] {
        let response = client
            .delete(format!("{}{path}", r.url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "DELETE {path}");
    }
    // Nothing was written; with the credentials the write succeeds and reads stay open.
    assert_eq!(
        client
            .get(format!("{}/subjects", r.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "[]"
    );
    let (status, _, _) = r
        .call(
            Method::POST,
            "/subjects/guarded-value/versions",
            Some(schema),
        )
        .await;
    assert_eq!(status, 200);
    let listed = client
        .get(format!("{}/subjects", r.url))
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);
    assert_eq!(
        listed.json::<Value>().await.unwrap(),
        json!(["guarded-value"])
    );
}
