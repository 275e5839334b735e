//! The checks of this module's siblings as regular expressions, for the OpenAPI documents:
//! each pattern matches exactly the strings the matching `parse` accepts, apart from the
//! length bounds, which the documents state as `maxLength` (code points of the string as sent,
//! the way [`super::clean_text`] counts). The syntax is the common subset of ECMA-262 and
//! Python's `re` (no lookaround, no `\s`, no `\p{..}`), with explicit character classes for
//! what Rust calls whitespace (`char::is_whitespace`, which `str::trim` strips) and control
//! characters (`char::is_control`, general category Cc), and the directional formatting
//! characters requests may not send (`super::has_bidi_controls`).

/// Unicode White_Space: what `str::trim` removes at either end.
macro_rules! ws {
    () => {
        r"[\t-\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]"
    };
}
/// Any character that is not a control character (Cc) nor a directional formatting one
/// (`has_bidi_controls`: U+202A to U+202E, U+2066 to U+2069), which requests may not send.
macro_rules! not_control {
    () => {
        r"[^\x00-\x1F\x7F-\x9F\u202A-\u202E\u2066-\u2069]"
    };
}
/// Any character that is neither a control character, a directional formatting one nor
/// whitespace.
macro_rules! solid {
    () => {
        r"[^\x00-\x20\x7F-\xA0\u1680\u2000-\u200A\u2028\u2029\u202A-\u202F\u205F\u2066-\u2069\u3000]"
    };
}
/// Trimmed, non-empty, no control characters (`clean_text`).
macro_rules! text {
    () => {
        concat!(solid!(), "(?:", not_control!(), "*", solid!(), ")?")
    };
}

/// Free text (`clean_text`): after trimming whitespace, non-empty and without control
/// characters.
pub const TEXT: &str = concat!("^", ws!(), "*", text!(), ws!(), "*$");

/// Free text that may also be blank (an address's `line2`: blank means none).
pub const OPTIONAL_TEXT: &str = concat!("^", ws!(), "*(?:", text!(), ws!(), "*)?$");

/// SKUs and tracking numbers: after trimming, one or more of `A-Z a-z 0-9 - _ .`.
pub const CODE: &str = concat!("^", ws!(), "*[A-Za-z0-9._-]+", ws!(), "*$");

/// Postal codes: after trimming, letters, digits, spaces and dashes.
pub const POSTAL_CODE: &str = concat!(
    "^",
    ws!(),
    "*[A-Za-z0-9-](?:[A-Za-z0-9 -]*[A-Za-z0-9-])?",
    ws!(),
    "*$"
);

/// Email addresses (`Email::parse`), apart from the local part's limit of 64 characters,
/// which `format: email` (RFC 5321) carries: dot-separated atoms before the `@`; after it at
/// least two dot-separated labels of letters, digits and inner dashes (at most 63
/// characters each), the last one all letters.
pub const EMAIL: &str = concat!(
    "^",
    ws!(),
    r"*[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*",
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}",
    ws!(),
    "*$"
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::values::contact::tests::{BAD_EMAILS, GOOD_EMAILS};
    use crate::values::{AddressLabel, DisplayName, Email, PostalCode, Sku, ValueError};
    use regex_lite::Regex;

    /// The pattern and the parse function agree on every sample.
    fn agree(pattern: &str, parse: impl Fn(&str) -> bool, samples: &[&str]) {
        let regex = Regex::new(pattern).unwrap();
        for sample in samples {
            assert_eq!(
                regex.is_match(sample),
                parse(sample),
                "{pattern} on {sample:?}"
            );
        }
    }

    const TEXTS: &[&str] = &[
        "Ada",
        " Ada ",
        "\tAda\n",
        "A d a",
        "Zoë 李",
        "",
        " ",
        "\t\n",
        "bell\u{7}",
        "a\u{0}b",
        "a\nb",
        "\u{85}x\u{85}",
        "x\u{9f}",
        "\u{a0}x",
        "\u{1c}",
        "x\u{2028}",
        "😀",
        "a\u{202E}b",
        "\u{202A}x",
        "x\u{2069}",
        "a\u{2066}b\u{2069}c",
        "a\u{200F}b",
        "a\u{202F}b",
    ];

    #[test]
    fn text_pattern_matches_clean_text() {
        agree(TEXT, |s| DisplayName::parse(s).is_ok(), TEXTS);
        agree(TEXT, |s| AddressLabel::parse(s).is_ok(), TEXTS);
    }

    #[test]
    fn optional_text_accepts_blank_too() {
        let regex = Regex::new(OPTIONAL_TEXT).unwrap();
        for sample in TEXTS {
            let blank = sample.trim().is_empty();
            let expected = blank || DisplayName::parse(sample).is_ok();
            assert_eq!(regex.is_match(sample), expected, "{sample:?}");
        }
    }

    #[test]
    fn code_and_postal_patterns_match_their_parsers() {
        let codes = ["SKU-1_a.2", " x ", "SKU 1", "1Z/9", "", "ä", "a\tb"];
        agree(CODE, |s| Sku::parse(s).is_ok(), &codes);
        let postal = [
            "10115",
            " SW1A 1AA ",
            "12-345",
            "12#45",
            "-",
            " ",
            "a  b",
            "x\u{a0}",
        ];
        agree(POSTAL_CODE, |s| PostalCode::parse(s).is_ok(), &postal);
    }

    #[test]
    fn email_pattern_matches_email_parse() {
        let extra = ["a.@b.com", "a@b-.com", "a@b..com", "x@y.z1.io"];
        let samples: Vec<&str> = GOOD_EMAILS
            .iter()
            .chain(BAD_EMAILS)
            .chain(&extra)
            .copied()
            .collect();
        agree(EMAIL, |s| Email::parse(s).is_ok(), &samples);
        // The local part's length is the one rule left to `format: email`.
        let long_local = format!("{}@example.com", "a".repeat(65));
        assert_eq!(Email::parse(&long_local), Err(ValueError::BadEmail));
    }
}
