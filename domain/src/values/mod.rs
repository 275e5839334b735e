//! Typed values. Each can only be built through a checking constructor, so a command that
//! carries them is valid by construction; the aggregates never re-check formats.
//!
//! Every constructor returns [`ValueError`], which says what is wrong without naming the field:
//! the caller (the HTTP layer) knows which field it was parsing and attaches the name.

mod codes;
mod contact;
mod money;
pub mod patterns;
mod text;

pub use contact::{Address, AddressFields, CountryCode, Email, PostalCode, EMAIL_MAX_CHARS};
pub use money::{positive_amount, Currency, Money, Quantity, UnitPrice, MAX_AMOUNT_MINOR};
pub use text::{
    AddressLabel, Carrier, DisplayName, PaymentMethod, Preferences, Reason, Role, Sku,
    TrackingNumber,
};

/// Why a raw value was refused. Messages are for API clients; tests assert the variant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {max} characters")]
    TooLong { max: usize },
    #[error("contains characters that are not allowed")]
    BadCharacters,
    #[error("is not a valid email address")]
    BadEmail,
    #[error("is not an ISO 4217 currency code")]
    UnknownCurrency,
    #[error("is not an ISO 3166-1 alpha-2 country code")]
    UnknownCountry,
    #[error("must be between {min} and {max}")]
    OutOfRange { min: i64, max: i64 },
    #[error("must be one of: {allowed}")]
    NotOneOf { allowed: &'static str },
    #[error(
        "must be a JSON object with at most {max_keys} keys, {max_bytes} bytes and {max_depth} \
         levels of nesting"
    )]
    BadPreferences {
        max_keys: usize,
        max_bytes: usize,
        max_depth: usize,
    },
}

/// A field name paired with what is wrong with it; used where one constructor checks several
/// fields at once (an address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: &'static str,
    pub error: ValueError,
}

/// Whether `text` holds one of Unicode's explicit directional formatting characters
/// (embeddings and overrides U+202A to U+202E, isolates U+2066 to U+2069). In a name, a
/// reason or an address line they make what staff read in the console or an export differ
/// from what is stored (an override shows `txt.exe` as `exe.txt`); requests with them are
/// refused. Stored values from before are still read back.
pub fn has_bidi_controls(text: &str) -> bool {
    text.chars().any(is_bidi_control)
}

fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// `text` without directional formatting characters, for text taken from another system
/// that should be recorded rather than refused (a payment provider's reason).
pub fn without_bidi_controls(text: &str) -> String {
    text.chars().filter(|&c| !is_bidi_control(c)).collect()
}

/// [`clean_text`] for a value a request sends: no directional formatting characters either.
pub(crate) fn clean_input_text(raw: &str, max: usize) -> Result<String, ValueError> {
    if has_bidi_controls(raw) {
        return Err(ValueError::BadCharacters);
    }
    clean_text(raw, max)
}

/// Shared check for free-text values: trimmed, non-empty, bounded, no control characters.
/// The length counts the characters (code points) as sent, before trimming, as JSON Schema's
/// `maxLength` does.
pub(crate) fn clean_text(raw: &str, max: usize) -> Result<String, ValueError> {
    if raw.chars().count() > max {
        return Err(ValueError::TooLong { max });
    }
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(ValueError::Empty);
    }
    if trimmed.chars().any(char::is_control) {
        return Err(ValueError::BadCharacters);
    }
    Ok(trimmed.to_owned())
}

/// Defines a newtype over `String` that is built by a checking function and serialises as a
/// plain string. Deserialisation re-runs the check, so stored data cannot smuggle in bad values.
macro_rules! checked_string {
    ($(#[$meta:meta])* $name:ident, $check:expr) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The value a request sends: its check, and no directional formatting
            /// character ([`$crate::values::has_bidi_controls`]).
            pub fn parse(raw: &str) -> Result<Self, $crate::values::ValueError> {
                if $crate::values::has_bidi_controls(raw) {
                    return Err($crate::values::ValueError::BadCharacters);
                }
                Self::stored(raw)
            }
            /// The value read back from an event or a snapshot: the check it was written
            /// under. Checks added to `parse` later do not apply, so stored data stays
            /// loadable.
            fn stored(raw: &str) -> Result<Self, $crate::values::ValueError> {
                let check: fn(&str) -> Result<String, $crate::values::ValueError> = $check;
                check(raw).map(Self)
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl TryFrom<String> for $name {
            type Error = $crate::values::ValueError;
            fn try_from(raw: String) -> Result<Self, Self::Error> {
                Self::stored(&raw)
            }
        }
        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}
pub(crate) use checked_string;
