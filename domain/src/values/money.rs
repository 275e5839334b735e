//! Money in integer minor units with an ISO 4217 currency; quantities and unit prices.

use serde::{Deserialize, Serialize};

use super::codes::CURRENCIES;
use super::ValueError;

/// Largest amount in minor units the system accepts for one line, payment or total
/// (10^13 minor units, e.g. a hundred billion dollars). Keeps every sum far from `i64` overflow.
pub const MAX_AMOUNT_MINOR: i64 = 10_000_000_000_000;

/// An ISO 4217 currency code, upper case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency([u8; 3]);

impl Currency {
    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        let index = CURRENCIES
            .binary_search_by(|(code, _)| (*code).cmp(raw))
            .map_err(|_| ValueError::UnknownCurrency)?;
        let bytes = CURRENCIES[index].0.as_bytes();
        Ok(Self([bytes[0], bytes[1], bytes[2]]))
    }

    /// Every code [`Currency::parse`] accepts.
    pub fn codes() -> impl Iterator<Item = &'static str> {
        CURRENCIES.iter().map(|(code, _)| *code)
    }

    pub fn code(&self) -> &str {
        // Built only from the ASCII table above.
        std::str::from_utf8(&self.0).unwrap_or("XXX")
    }

    /// Number of digits after the decimal point in this currency (2 for EUR, 0 for JPY).
    pub fn minor_unit_digits(&self) -> u8 {
        CURRENCIES
            .binary_search_by(|(code, _)| (*code).cmp(self.code()))
            .map(|i| CURRENCIES[i].1)
            .unwrap_or(2)
    }
}

impl TryFrom<String> for Currency {
    type Error = ValueError;
    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::parse(&raw)
    }
}
impl From<Currency> for String {
    fn from(value: Currency) -> String {
        value.code().to_owned()
    }
}
impl std::fmt::Display for Currency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

/// A strictly positive amount of money in minor units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Money {
    pub amount_minor: i64,
    pub currency: Currency,
}

impl Money {
    pub fn positive(amount_minor: i64, currency: Currency) -> Result<Self, ValueError> {
        if !(1..=MAX_AMOUNT_MINOR).contains(&amount_minor) {
            return Err(ValueError::OutOfRange {
                min: 1,
                max: MAX_AMOUNT_MINOR,
            });
        }
        Ok(Self {
            amount_minor,
            currency,
        })
    }
}

/// A positive amount in minor units whose currency is implied by its aggregate (authorise,
/// capture and refund amounts are always in the payment's currency).
pub fn positive_amount(amount_minor: i64) -> Result<i64, ValueError> {
    if (1..=MAX_AMOUNT_MINOR).contains(&amount_minor) {
        Ok(amount_minor)
    } else {
        Err(ValueError::OutOfRange {
            min: 1,
            max: MAX_AMOUNT_MINOR,
        })
    }
}

/// Number of units of one line item: 1 to 10 000.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct Quantity(u32);

impl Quantity {
    pub const MAX: i64 = 10_000;

    pub fn parse(raw: i64) -> Result<Self, ValueError> {
        if (1..=Self::MAX).contains(&raw) {
            Ok(Self(raw as u32))
        } else {
            Err(ValueError::OutOfRange {
                min: 1,
                max: Self::MAX,
            })
        }
    }
    pub fn get(&self) -> u32 {
        self.0
    }
}
impl TryFrom<i64> for Quantity {
    type Error = ValueError;
    fn try_from(raw: i64) -> Result<Self, Self::Error> {
        Self::parse(raw)
    }
}
impl From<Quantity> for i64 {
    fn from(value: Quantity) -> i64 {
        i64::from(value.0)
    }
}

/// Price of one unit in minor units: zero (a free item) up to [`MAX_AMOUNT_MINOR`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct UnitPrice(i64);

impl UnitPrice {
    pub fn parse(raw: i64) -> Result<Self, ValueError> {
        if (0..=MAX_AMOUNT_MINOR).contains(&raw) {
            Ok(Self(raw))
        } else {
            Err(ValueError::OutOfRange {
                min: 0,
                max: MAX_AMOUNT_MINOR,
            })
        }
    }
    pub fn minor(&self) -> i64 {
        self.0
    }
}
impl TryFrom<i64> for UnitPrice {
    type Error = ValueError;
    fn try_from(raw: i64) -> Result<Self, Self::Error> {
        Self::parse(raw)
    }
}
impl From<UnitPrice> for i64 {
    fn from(value: UnitPrice) -> i64 {
        value.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn currency_accepts_iso_codes_only() {
        assert_eq!(Currency::parse("EUR").unwrap().code(), "EUR");
        assert_eq!(Currency::parse("JPY").unwrap().minor_unit_digits(), 0);
        assert_eq!(Currency::parse("eur"), Err(ValueError::UnknownCurrency));
        assert_eq!(Currency::parse("XYZ"), Err(ValueError::UnknownCurrency));
        assert_eq!(Currency::parse(""), Err(ValueError::UnknownCurrency));
    }

    #[test]
    fn quantity_rejects_zero_negative_and_huge() {
        assert!(Quantity::parse(1).is_ok());
        assert!(Quantity::parse(Quantity::MAX).is_ok());
        for bad in [0, -1, Quantity::MAX + 1, i64::MIN] {
            assert!(matches!(
                Quantity::parse(bad),
                Err(ValueError::OutOfRange { .. })
            ));
        }
    }

    #[test]
    fn money_must_be_positive_and_bounded() {
        let eur = Currency::parse("EUR").unwrap();
        assert!(Money::positive(1, eur).is_ok());
        assert!(Money::positive(0, eur).is_err());
        assert!(Money::positive(-5, eur).is_err());
        assert!(Money::positive(MAX_AMOUNT_MINOR + 1, eur).is_err());
        assert!(UnitPrice::parse(0).is_ok());
        assert!(UnitPrice::parse(-1).is_err());
    }

    #[test]
    fn currency_round_trips_through_json_and_rejects_bad_codes() {
        let json = serde_json::to_string(&Currency::parse("GBP").unwrap()).unwrap();
        assert_eq!(json, "\"GBP\"");
        assert!(serde_json::from_str::<Currency>("\"ABC\"").is_err());
    }
}
