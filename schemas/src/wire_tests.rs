use super::*;

#[test]
fn statuses_worth_waiting_out() {
    let text = |code: &str| format!("HTTP request to schema registry failed with status {code}");
    for code in [
        "500 Internal Server Error",
        "504 Gateway Timeout",
        "429 Too Many Requests",
        "408 Request Timeout",
    ] {
        assert!(transient_status(&text(code)), "{code}");
    }
    for code in [
        "404 Not Found",
        "422 Unprocessable Entity",
        "401 Unauthorized",
    ] {
        assert!(!transient_status(&text(code)), "{code}");
    }
    assert!(!transient_status("Invalid magic byte"));
}

/// A registry that answers its first request with 500 (a store error, a proxy's 504) and
/// then serves the schema: the message decodes on the next attempt. Before, the converter
/// cached the 500 as a fact about the schema id and every later message with it was
/// "undecodable" (dead-lettered) for the life of the process.
/// A registry that takes the connection and never answers fails the call after the
/// client's timeout ([`REGISTRY_TIMEOUT`] outside this test). Before, the client had no
/// timeout: a relay registering its schemas waited for good, holding its lock, with its lag
/// gauge frozen.
#[tokio::test]
async fn a_registry_that_never_answers_fails_the_call_in_time() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            open.push(socket);
        }
    });
    let schema = latest("UserRoleGranted").unwrap();
    let timeout = Duration::from_millis(300);
    let encoder = EventEncoder::with_timeout(&url, None, timeout).unwrap();
    let registered = tokio::time::timeout(
        timeout + Duration::from_secs(5),
        encoder.register("commerce.user", schema),
    )
    .await
    .expect("the registration waited past the registry timeout");
    assert!(
        matches!(registered, Err(SchemaError::RegistryUnreachable(_))),
        "{registered:?}"
    );
}

#[tokio::test]
async fn a_registry_error_that_passes_is_not_remembered() {
    // A server error, and a 404 (a registry follower not caught up yet, a registry being
    // switched over): before, an answer of the second kind was remembered by the decoder for
    // the life of the process, and every message with that schema id was undecodable.
    let first = [
        (
            "500 Internal Server Error",
            r#"{"error_code":50001,"message":"store"}"#,
        ),
        (
            "404 Not Found",
            r#"{"error_code":40403,"message":"Schema not found"}"#,
        ),
    ];
    for (status, body) in first {
        decodes_once_the_registry_answers(status, body).await;
    }
}

/// A decoder whose registry first answers `status` and `body`, then the schema: the first
/// decode fails, the next succeeds.
async fn decodes_once_the_registry_answers(first_status: &'static str, first_body: &'static str) {
    let url =
        crate::testing::registry_answering_first((first_status, first_body), "UserRoleGranted")
            .await;
    let payload = serde_json::json!({"type": "UserRoleGranted", "role": "admin"});
    let bytes = crate::testing::framed("UserRoleGranted", &payload, 7);

    let decoder = EventDecoder::new(&url);
    let first = decoder.decode(&bytes).await;
    assert!(first.is_err(), "{first_status}: {first:?}");
    let next = decoder
        .decode(&bytes)
        .await
        .expect("decoded once the registry answers");
    assert_eq!(next.event_type, "UserRoleGranted");
    assert_eq!(next.schema_id, 7);
}
