use super::*;

fn property(doc: &Value, schema: &str, property: &str) -> Value {
    doc["components"]["schemas"][schema]["properties"][property].clone()
}

#[test]
fn the_document_carries_the_servers_constraints() {
    let doc = document();
    let currencies = property(&doc, "PlaceOrder", "currency")["enum"].clone();
    let expected: Vec<_> = Currency::codes().collect();
    assert_eq!(currencies, json!(expected));
    assert!(expected.iter().all(|code| Currency::parse(code).is_ok()));
    let name = property(&doc, "RegisterUser", "display_name");
    assert_eq!(name["maxLength"], 100);
    assert_eq!(name["minLength"], 1);
    for schema in ["InitiatePayment", "Amount", "RefundPayment"] {
        let amount = property(&doc, schema, "amount_minor");
        assert_eq!(
            (amount["minimum"].clone(), amount["maximum"].clone()),
            (json!(1), json!(MAX_AMOUNT_MINOR))
        );
    }
    let items = property(&doc, "PlaceOrder", "items");
    assert_eq!(
        (items["minItems"].clone(), items["maxItems"].clone()),
        (json!(1), json!(100))
    );
    let countries = property(&doc, "AddressBody", "country")["enum"].clone();
    assert_eq!(countries.as_array().map(Vec::len), Some(249));
    for schema in REQUEST_BODIES {
        assert_eq!(
            doc["components"]["schemas"][schema]["additionalProperties"],
            false
        );
    }
    assert_eq!(
        doc["components"]["schemas"]["ChangeProfile"]["anyOf"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
}

#[test]
fn every_enum_in_the_document_is_what_the_server_parses() {
    let doc = document();
    let words = |value: Value| -> Vec<String> { serde_json::from_value(value).unwrap() };
    let roles = words(property(&doc, "GrantRole", "role")["enum"].clone());
    assert_eq!(roles.len(), Role::ALL.len());
    assert!(roles.iter().all(|r| Role::parse(r).is_ok()));
    let path = &doc["paths"]["/v1/users/{id}/roles/{role}"]["delete"]["parameters"];
    let role_param = path
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "role")
        .unwrap();
    assert_eq!(words(role_param["schema"]["enum"].clone()), roles);
    let methods = words(property(&doc, "InitiatePayment", "method")["enum"].clone());
    assert_eq!(methods.len(), PaymentMethod::ALL.len());
    assert!(methods.iter().all(|m| PaymentMethod::parse(m).is_ok()));
    for country in words(property(&doc, "AddressBody", "country")["enum"].clone()) {
        assert!(CountryCode::parse(&country).is_ok(), "{country}");
    }
    // Words outside the lists are refused.
    assert!(Role::parse("root").is_err() && !roles.contains(&"root".to_owned()));
    assert!(Currency::parse("XYZ").is_err() && !Currency::codes().any(|c| c == "XYZ"));
}

#[test]
fn patterns_and_lengths_come_from_the_domain() {
    let doc = document();
    assert_eq!(
        property(&doc, "RegisterUser", "email")["pattern"],
        patterns::EMAIL
    );
    assert_eq!(
        property(&doc, "LineItemBody", "sku")["pattern"],
        patterns::CODE
    );
    assert_eq!(
        property(&doc, "AddressBody", "postal_code")["maxLength"],
        16
    );
    assert_eq!(
        property(&doc, "ShipOrder", "carrier")["pattern"],
        patterns::TEXT
    );
    let headers = &doc["paths"]["/v1/orders/{id}/ship"]["post"]["parameters"];
    let names: Vec<_> = headers
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].clone())
        .collect();
    for header in ["Idempotency-Key", "If-Match", "X-Correlation-Id"] {
        assert!(names.contains(&json!(header)), "{header}");
    }
    assert_eq!(
        property(&doc, "LineItemBody", "quantity")["maximum"],
        Quantity::MAX
    );
}

#[test]
fn commands_need_a_bearer_token_and_identity_routes_do_not() {
    let doc = document();
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let security = |path: &str, method: &str| doc["paths"][path][method]["security"].clone();
    assert_eq!(
        security("/v1/orders/{id}/ship", "post"),
        json!([{"bearer": []}])
    );
    assert_eq!(security("/v1/users", "post"), json!([]));
    for path in ["/v1/auth/token", "/v1/webhooks/payments"] {
        assert_eq!(security(path, "post"), json!([]), "{path}");
        let names: Vec<Value> = doc["paths"][path]["post"]["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| p["name"].clone())
            .collect();
        assert!(!names.contains(&json!("Idempotency-Key")), "{path}");
    }
    assert_eq!(property(&doc, "RegisterUser", "password")["minLength"], 12);
    let responses = &doc["paths"]["/v1/orders/{id}/ship"]["post"]["responses"];
    for status in ["401", "403", "429"] {
        assert!(responses.get(status).is_some(), "{status}");
    }
}
