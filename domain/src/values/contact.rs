//! Email addresses and postal addresses.

use serde::{Deserialize, Serialize};

use super::codes::COUNTRIES;
use super::{checked_string, clean_input_text, clean_text, AddressLabel, FieldError, ValueError};

const LOCAL_PART_SPECIALS: &str = "!#$%&'*+/=?^_`{|}~-.";

/// Longest email address, in characters as sent (before trimming).
pub const EMAIL_MAX_CHARS: usize = 254;

fn check_email(raw: &str) -> Result<String, ValueError> {
    if raw.chars().count() > EMAIL_MAX_CHARS {
        return Err(ValueError::TooLong {
            max: EMAIL_MAX_CHARS,
        });
    }
    let email = raw.trim();
    if email.is_empty() {
        return Err(ValueError::Empty);
    }
    let (local, domain) = email.split_once('@').ok_or(ValueError::BadEmail)?;
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || LOCAL_PART_SPECIALS.contains(c));
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && labels.iter().all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
        && labels
            .last()
            .is_some_and(|tld| tld.len() >= 2 && tld.chars().all(|c| c.is_ascii_alphabetic()));
    if local_ok && domain_ok {
        Ok(email.to_owned())
    } else {
        Err(ValueError::BadEmail)
    }
}

checked_string!(
    /// An email address as the user typed it (trimmed). Compare with [`Email::normalized`].
    Email,
    check_email
);

impl Email {
    /// The form used for uniqueness: addresses differing only in letter case are one address.
    pub fn normalized(&self) -> String {
        self.0.to_lowercase()
    }
}

fn check_country(raw: &str) -> Result<String, ValueError> {
    COUNTRIES
        .binary_search(&raw)
        .map(|_| raw.to_owned())
        .map_err(|_| ValueError::UnknownCountry)
}
checked_string!(
    /// An ISO 3166-1 alpha-2 country code, upper case.
    CountryCode,
    check_country
);

impl CountryCode {
    /// Every code [`CountryCode::parse`] accepts.
    pub fn codes() -> impl Iterator<Item = &'static str> {
        COUNTRIES.iter().copied()
    }
}

fn check_postal_code(raw: &str) -> Result<String, ValueError> {
    let code = clean_text(raw, 16)?;
    if code
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == ' ' || c == '-')
    {
        Ok(code)
    } else {
        Err(ValueError::BadCharacters)
    }
}
checked_string!(
    /// A postal code: letters, digits, spaces and dashes, at most 16 characters.
    PostalCode,
    check_postal_code
);

/// A postal address as stored in events and read models.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    pub label: AddressLabel,
    pub line1: String,
    pub line2: Option<String>,
    pub city: String,
    pub postal_code: PostalCode,
    pub country: CountryCode,
}

/// The raw fields of an address, as they arrive from a client.
#[derive(Debug, Clone, Default)]
pub struct AddressFields<'a> {
    pub label: &'a str,
    pub line1: &'a str,
    pub line2: Option<&'a str>,
    pub city: &'a str,
    pub postal_code: &'a str,
    pub country: &'a str,
}

impl Address {
    /// Checks every field and reports all the bad ones at once.
    pub fn parse(fields: AddressFields<'_>) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut note = |field: &'static str, error: ValueError| {
            errors.push(FieldError { field, error });
        };
        let label = AddressLabel::parse(fields.label).map_err(|e| note("label", e));
        let line1 = clean_input_text(fields.line1, 200).map_err(|e| note("line1", e));
        let line2 = match fields.line2 {
            None => Ok(None),
            Some(blank) if blank.trim().is_empty() && blank.chars().count() <= 200 => Ok(None),
            Some(text) => clean_input_text(text, 200)
                .map(Some)
                .map_err(|e| note("line2", e)),
        };
        let city = clean_input_text(fields.city, 100).map_err(|e| note("city", e));
        let postal_code = PostalCode::parse(fields.postal_code).map_err(|e| note("postal_code", e));
        let country = CountryCode::parse(fields.country).map_err(|e| note("country", e));
        match (label, line1, line2, city, postal_code, country) {
            (Ok(label), Ok(line1), Ok(line2), Ok(city), Ok(postal_code), Ok(country)) => Ok(Self {
                label,
                line1,
                line2,
                city,
                postal_code,
                country,
            }),
            _ => Err(errors),
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Samples shared with the email pattern's test in domain/src/values/patterns.rs.
    pub(crate) const GOOD_EMAILS: &[&str] = &[
        "a@b.co",
        "first.last+tag@example.com",
        " padded@example.org ",
        "x_y-z@sub.domain-1.example.io",
    ];
    pub(crate) const BAD_EMAILS: &[&str] = &[
        "plain",
        "@example.com",
        "a@",
        "a@b",
        "a@@b.com",
        "a b@c.com",
        ".a@b.com",
        "a..b@c.com",
        "a@-b.com",
        "a@b.c",
        "a@b.c0m1",
        "ä@b.com",
    ];

    #[test]
    fn accepts_ordinary_emails() {
        for good in GOOD_EMAILS {
            assert!(Email::parse(good).is_ok(), "{good} should be accepted");
        }
        assert_eq!(Email::parse(" a@b.co ").unwrap().as_str(), "a@b.co");
    }

    #[test]
    fn rejects_malformed_emails() {
        for bad in BAD_EMAILS {
            assert_eq!(Email::parse(bad), Err(ValueError::BadEmail), "{bad}");
        }
        assert_eq!(Email::parse("  "), Err(ValueError::Empty));
        let long = format!("{}@example.com", "a".repeat(250));
        assert_eq!(Email::parse(&long), Err(ValueError::TooLong { max: 254 }));
    }

    #[test]
    fn normalization_ignores_case() {
        let a = Email::parse("Jane.Doe@Example.COM").unwrap();
        let b = Email::parse("jane.doe@example.com").unwrap();
        assert_eq!(a.normalized(), b.normalized());
        assert_ne!(a, b);
    }

    #[test]
    fn address_reports_every_bad_field() {
        let errors = Address::parse(AddressFields {
            label: "",
            line1: "1 Main St",
            line2: None,
            city: " ",
            postal_code: "12#45",
            country: "XX",
        })
        .unwrap_err();
        let fields: Vec<_> = errors.iter().map(|e| e.field).collect();
        assert_eq!(fields, ["label", "city", "postal_code", "country"]);
    }

    #[test]
    fn address_accepts_valid_fields_and_drops_empty_line2() {
        let address = Address::parse(AddressFields {
            label: "home",
            line1: "1 Main St",
            line2: Some("  "),
            city: "Berlin",
            postal_code: "10115",
            country: "DE",
        })
        .unwrap();
        assert_eq!(address.line2, None);
        assert_eq!(address.country.as_str(), "DE");
    }
}
