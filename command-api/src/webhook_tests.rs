//! The webhook's signature check and callback validation.

use super::*;

use super::signature_header as sign;

fn webhook() -> Webhook {
    let secrets = [
        SecretString::from("current-secret-0001".to_owned()),
        SecretString::from("previous-secret-0002".to_owned()),
    ];
    Webhook::new(&secrets, 300, 65536).unwrap()
}

#[test]
fn a_signature_by_either_secret_within_the_tolerance_is_accepted() {
    let body = br#"{"provider_event_id":"e1"}"#;
    let now = 1_800_000_000;
    for secret in ["current-secret-0001", "previous-secret-0002"] {
        assert_eq!(
            webhook().verify(Some(&sign(secret, now, body)), body, now),
            Ok(())
        );
        assert_eq!(
            webhook().verify(Some(&sign(secret, now - 300, body)), body, now),
            Ok(())
        );
    }
}

#[test]
fn bad_stale_or_missing_signatures_are_refused() {
    let body = br#"{"provider_event_id":"e1"}"#;
    let now = 1_800_000_000;
    let w = webhook();
    assert_eq!(w.verify(None, body, now), Err(SignatureError::Missing));
    assert_eq!(
        w.verify(Some("v1=00"), body, now),
        Err(SignatureError::Malformed)
    );
    assert_eq!(
        w.verify(Some("t=1"), body, now),
        Err(SignatureError::Malformed)
    );
    assert_eq!(
        w.verify(Some("t=x,v1=zz"), body, now),
        Err(SignatureError::Malformed)
    );
    assert_eq!(
        w.verify(Some(&sign("other-secret", now, body)), body, now),
        Err(SignatureError::Mismatch)
    );
    assert_eq!(
        w.verify(
            Some(&sign("current-secret-0001", now - 301, body)),
            body,
            now
        ),
        Err(SignatureError::Stale)
    );
    assert_eq!(
        w.verify(
            Some(&sign("current-secret-0001", now + 301, body)),
            body,
            now
        ),
        Err(SignatureError::Stale)
    );
    let tampered = br#"{"provider_event_id":"e2"}"#;
    assert_eq!(
        w.verify(Some(&sign("current-secret-0001", now, body)), tampered, now),
        Err(SignatureError::Mismatch)
    );
    // The timestamp is signed: moving it breaks the signature.
    let moved = sign("current-secret-0001", now, body)
        .replace(&format!("t={now}"), &format!("t={}", now - 1));
    assert_eq!(
        w.verify(Some(&moved), body, now),
        Err(SignatureError::Mismatch)
    );
    assert_eq!(
        Webhook::new(&[], 300, 65536).unwrap().verify(
            Some(&sign("current-secret-0001", now, body)),
            body,
            now
        ),
        Err(SignatureError::Mismatch),
        "no secret configured refuses everything"
    );
}

/// A header with many signatures, or signatures of the wrong length, is malformed before
/// any HMAC is computed. Before, each `v1=` (an empty one too) cost a full HMAC of the
/// body per secret: a 400 kB header of them held a worker for seconds, with no login.
#[test]
fn a_header_stuffed_with_signatures_is_refused_before_any_work() {
    let now = 1_700_000_000;
    let body = [b'x'; 65536];
    let stuffed = format!("t={now},{}", "v1=,".repeat(100_000));
    assert!(matches!(
        webhook().verify(Some(&stuffed), &body, now),
        Err(SignatureError::Malformed)
    ));
    let short = format!("t={now},v1=abcd");
    assert!(matches!(
        webhook().verify(Some(&short), &body, now),
        Err(SignatureError::Malformed)
    ));
    let good = sign("current-secret-0001", now, &body);
    let zeros = format!(",v1={}", "0".repeat(64));
    let many = format!("{good}{}", zeros.repeat(MAX_SIGNATURES));
    assert!(matches!(
        webhook().verify(Some(&many), &body, now),
        Err(SignatureError::Malformed)
    ));
    // A few, one of them right, still pass.
    let few = format!("{good}{}", zeros.repeat(MAX_SIGNATURES - 1));
    assert!(webhook().verify(Some(&few), &body, now).is_ok());
}

/// An amount past the maximum names its field, as on the REST routes; before, it was
/// turned into a command, and a business rule answered 409.
#[test]
fn a_callback_amount_out_of_range_names_its_field() {
    for amount in [0, -1, domain::values::MAX_AMOUNT_MINOR + 1, i64::MAX] {
        let callback: PaymentCallback = serde_json::from_value(serde_json::json!({
            "provider_event_id": "evt-1", "payment_id": uuid::Uuid::nil(),
            "type": "captured", "amount_minor": amount,
        }))
        .unwrap();
        match command(&callback) {
            Err(ApiError::Validation(errors)) => {
                assert_eq!(errors[0].field, "amount_minor", "{amount}")
            }
            other => panic!("{amount}: {other:?}"),
        }
    }
}

/// A provider's reason wrapped in directional isolates (as localized text often is) is
/// recorded without them, not refused: a refusal would leave the payment event unrecorded.
#[test]
fn a_reason_in_directional_isolates_is_recorded_without_them() {
    let callback: PaymentCallback = serde_json::from_value(serde_json::json!({
        "provider_event_id": "evt-2", "payment_id": uuid::Uuid::nil(),
        "type": "failed", "amount_minor": 0, "reason": "card \u{2067}declined\u{2069}",
    }))
    .unwrap();
    match command(&callback) {
        Ok((_, PaymentCommand::Fail { reason })) => assert_eq!(reason.as_str(), "card declined"),
        other => panic!("{other:?}"),
    }
}
