//! Short text values and closed vocabularies: names, SKUs, reasons, roles, payment methods,
//! user preferences.

use serde::{Deserialize, Serialize};

use super::{checked_string, clean_text, ValueError};

checked_string!(
    /// A user's display name: 1 to 100 characters, no control characters.
    DisplayName,
    |raw| clean_text(raw, 100)
);

checked_string!(
    /// The label of a saved address ("home", "office"): 1 to 40 characters.
    AddressLabel,
    |raw| clean_text(raw, 40)
);

checked_string!(
    /// Why something was cancelled, failed, refunded or deactivated: 1 to 500 characters.
    Reason,
    |raw| clean_text(raw, 500)
);

checked_string!(
    /// A shipping carrier's name: 1 to 64 characters.
    Carrier,
    |raw| clean_text(raw, 64)
);

fn code_like(raw: &str, max: usize) -> Result<String, ValueError> {
    let value = clean_text(raw, max)?;
    if value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        Ok(value)
    } else {
        Err(ValueError::BadCharacters)
    }
}

checked_string!(
    /// A stock-keeping unit: 1 to 64 of `A-Z a-z 0-9 - _ .`.
    Sku,
    |raw| code_like(raw, 64)
);

checked_string!(
    /// A carrier's tracking number: 1 to 64 of `A-Z a-z 0-9 - _ .`.
    TrackingNumber,
    |raw| code_like(raw, 64)
);

/// A role a user can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Customer,
    Admin,
    Service,
    /// Reads everything, writes nothing.
    Support,
}

impl Role {
    pub const ALLOWED: &'static str = "customer, admin, service, support";
    pub const ALL: [Role; 4] = [Self::Customer, Self::Admin, Self::Service, Self::Support];

    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        match raw {
            "customer" => Ok(Self::Customer),
            "admin" => Ok(Self::Admin),
            "service" => Ok(Self::Service),
            "support" => Ok(Self::Support),
            _ => Err(ValueError::NotOneOf {
                allowed: Self::ALLOWED,
            }),
        }
    }
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Customer => "customer",
            Self::Admin => "admin",
            Self::Service => "service",
            Self::Support => "support",
        }
    }
}

/// How a payment is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentMethod {
    Card,
    BankTransfer,
    Wallet,
}

impl PaymentMethod {
    pub const ALLOWED: &'static str = "card, bank_transfer, wallet";
    pub const ALL: [PaymentMethod; 3] = [Self::Card, Self::BankTransfer, Self::Wallet];

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Card => "card",
            Self::BankTransfer => "bank_transfer",
            Self::Wallet => "wallet",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        match raw {
            "card" => Ok(Self::Card),
            "bank_transfer" => Ok(Self::BankTransfer),
            "wallet" => Ok(Self::Wallet),
            _ => Err(ValueError::NotOneOf {
                allowed: Self::ALLOWED,
            }),
        }
    }
}

/// A user's preferences: a JSON object of bounded size whose meaning belongs to clients.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "serde_json::Value", into = "serde_json::Value")]
pub struct Preferences(serde_json::Map<String, serde_json::Value>);

impl Preferences {
    pub const MAX_KEYS: usize = 64;
    pub const MAX_BYTES: usize = 8 * 1024;
    /// The deepest nesting of objects and arrays, the preferences object itself counting as
    /// one. The stored forms nest them further (a snapshot, an idempotency outcome), and JSON
    /// read back from PostgreSQL stops at 128 levels: before this limit, preferences nested
    /// 125 deep were accepted and every later load of the user failed.
    pub const MAX_DEPTH: usize = 32;

    /// Preferences a request sends: an object within [`Self::MAX_KEYS`], [`Self::MAX_BYTES`]
    /// and [`Self::MAX_DEPTH`], with no NUL.
    pub fn parse(raw: serde_json::Value) -> Result<Self, ValueError> {
        let deep = raw.as_object().is_some_and(|map| {
            map.values()
                .any(|value| nested_past(value, Self::MAX_DEPTH - 1))
        });
        if deep {
            return Err(Self::too_big());
        }
        Self::stored(raw)
    }

    /// Preferences read back from an event or a snapshot: the checks they have always met,
    /// without the nesting limit, which came later. Stored preferences that nest deeper
    /// still load: a check tightened on stored data would make such a user unloadable.
    fn stored(raw: serde_json::Value) -> Result<Self, ValueError> {
        let serde_json::Value::Object(map) = raw else {
            return Err(Self::too_big());
        };
        let bytes = serde_json::to_vec(&map)
            .map(|v| v.len())
            .unwrap_or(usize::MAX);
        if map.len() > Self::MAX_KEYS || bytes > Self::MAX_BYTES {
            return Err(Self::too_big());
        }
        // Stored as jsonb, which cannot hold NUL in a key or a string.
        if map
            .iter()
            .any(|(key, value)| key.contains('\0') || holds_nul(value))
        {
            return Err(ValueError::BadCharacters);
        }
        Ok(Self(map))
    }

    fn too_big() -> ValueError {
        ValueError::BadPreferences {
            max_keys: Self::MAX_KEYS,
            max_bytes: Self::MAX_BYTES,
            max_depth: Self::MAX_DEPTH,
        }
    }

    pub fn as_map(&self) -> &serde_json::Map<String, serde_json::Value> {
        &self.0
    }
}
/// True when `value` nests objects and arrays more than `levels` deep.
fn nested_past(value: &serde_json::Value, levels: usize) -> bool {
    use serde_json::Value;
    let deeper = |child: &Value| nested_past(child, levels - 1);
    match value {
        Value::Array(items) => levels == 0 || items.iter().any(deeper),
        Value::Object(map) => levels == 0 || map.values().any(deeper),
        _ => false,
    }
}

/// True when a string anywhere in the value (key or value) contains NUL.
fn holds_nul(value: &serde_json::Value) -> bool {
    use serde_json::Value;
    match value {
        Value::String(text) => text.contains('\0'),
        Value::Array(items) => items.iter().any(holds_nul),
        Value::Object(map) => map
            .iter()
            .any(|(key, item)| key.contains('\0') || holds_nul(item)),
        _ => false,
    }
}

impl TryFrom<serde_json::Value> for Preferences {
    type Error = ValueError;
    fn try_from(raw: serde_json::Value) -> Result<Self, Self::Error> {
        Self::stored(raw)
    }
}
impl From<Preferences> for serde_json::Value {
    fn from(value: Preferences) -> Self {
        serde_json::Value::Object(value.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_values_are_trimmed_and_bounded() {
        assert_eq!(DisplayName::parse("  Ada  ").unwrap().as_str(), "Ada");
        assert_eq!(DisplayName::parse(""), Err(ValueError::Empty));
        assert_eq!(
            DisplayName::parse(&"x".repeat(101)),
            Err(ValueError::TooLong { max: 100 })
        );
        assert_eq!(
            DisplayName::parse("bell\u{7}"),
            Err(ValueError::BadCharacters)
        );
    }

    #[test]
    fn skus_and_tracking_numbers_are_code_like() {
        assert!(Sku::parse("SKU-1_a.2").is_ok());
        assert_eq!(Sku::parse("SKU 1"), Err(ValueError::BadCharacters));
        assert_eq!(
            TrackingNumber::parse("1Z/9"),
            Err(ValueError::BadCharacters)
        );
    }

    #[test]
    fn closed_vocabularies_list_every_word_they_parse() {
        for role in Role::ALL {
            assert_eq!(Role::parse(role.as_str()), Ok(role));
        }
        for method in PaymentMethod::ALL {
            assert_eq!(PaymentMethod::parse(method.as_str()), Ok(method));
        }
        assert_eq!(Role::ALLOWED.split(", ").count(), Role::ALL.len());
        assert_eq!(
            PaymentMethod::ALLOWED.split(", ").count(),
            PaymentMethod::ALL.len()
        );
    }

    #[test]
    fn closed_vocabularies_reject_unknown_words() {
        assert_eq!(Role::parse("admin"), Ok(Role::Admin));
        assert!(Role::parse("root").is_err());
        assert_eq!(PaymentMethod::parse("card"), Ok(PaymentMethod::Card));
        assert!(PaymentMethod::parse("cash").is_err());
    }

    #[test]
    fn preferences_must_be_a_small_object() {
        assert!(Preferences::parse(json!({"theme": "dark"})).is_ok());
        assert!(Preferences::parse(json!([1, 2])).is_err());
        assert!(Preferences::parse(json!({"big": "x".repeat(9000)})).is_err());
        let many: serde_json::Map<_, _> = (0..65).map(|i| (i.to_string(), json!(i))).collect();
        assert!(Preferences::parse(serde_json::Value::Object(many)).is_err());
    }

    /// Nesting is bounded too: preferences 125 levels deep fit the request's JSON and 8 KiB,
    /// and before this limit every later load of the user (whose snapshot and idempotency
    /// outcome nest them further) failed to read back.
    #[test]
    fn preferences_nest_at_most_max_depth_levels() {
        let nested = |levels: usize| {
            let mut value = json!(0);
            for _ in 1..levels {
                value = json!([value]);
            }
            json!({ "k": value })
        };
        assert!(Preferences::parse(nested(Preferences::MAX_DEPTH)).is_ok());
        assert!(Preferences::parse(nested(Preferences::MAX_DEPTH + 1)).is_err());
        assert!(Preferences::parse(nested(125)).is_err());
        assert!(Preferences::parse(json!({"a": {"b": [1, {"c": []}]}})).is_ok());
        // Stored ones (events, snapshots) from before the limit still read back.
        let stored: Result<Preferences, _> =
            serde_json::from_value(nested(Preferences::MAX_DEPTH + 8));
        assert!(stored.is_ok(), "{stored:?}");
    }

    #[test]
    fn preferences_cannot_hold_nul() {
        for raw in [
            json!({"note": "a\u{0}b"}),
            json!({"k\u{0}": 1}),
            json!({"deep": [{"x": ["\u{0}"]}]}),
            json!({"deep": {"k\u{0}": true}}),
        ] {
            assert_eq!(Preferences::parse(raw), Err(ValueError::BadCharacters));
        }
    }

    /// A request's free text with a directional override or isolate is refused; one stored
    /// before that was refused still reads back.
    #[test]
    fn directional_formatting_characters_are_refused_in_requests_only() {
        for raw in ["a\u{202E}b", "a\u{202A}b", "a\u{2066}b\u{2069}"] {
            assert_eq!(
                DisplayName::parse(raw),
                Err(ValueError::BadCharacters),
                "{raw:?}"
            );
            assert_eq!(
                Reason::parse(raw),
                Err(ValueError::BadCharacters),
                "{raw:?}"
            );
            let stored: Result<DisplayName, _> = serde_json::from_value(json!(raw));
            assert!(stored.is_ok(), "{raw:?}");
        }
        // Marks that only set a direction (LRM, RLM) are ordinary text.
        assert!(DisplayName::parse("a\u{200F}b").is_ok());
    }

    #[test]
    fn stored_values_are_rechecked_on_deserialisation() {
        assert!(serde_json::from_str::<Sku>("\"bad sku\"").is_err());
        assert!(serde_json::from_str::<Role>("\"root\"").is_err());
    }
}
