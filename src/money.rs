//! Money in AP2 mandates: ISO 4217 currencies and amounts counted in integer minor units.
//!
//! AP2 states most amounts in minor units (cents, yen, fils). Two places use major units instead:
//! the intent mandate's `payment.budget.max` and the float `value` of AP2 v0.1; for those,
//! [`Amount::parse_major`] and [`Amount::from_json_number`] convert text and JSON numbers exactly.
//! Currencies are the active codes of ISO 4217 list one that have a minor unit.
//!
//! Deliberately absent: rounding (a fraction finer than the minor unit is refused), exchange
//! rates, and negative amounts (a mandate never moves money backwards).

use std::fmt;
use std::iter;

use serde_json::Number;

/// An active ISO 4217 currency, with the number of decimal places of its minor unit.
///
/// Only [`Currency::from_code`] makes one, so every value is a row of the ISO table below.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Currency {
    code: &'static str,
    exponent: u8,
}

impl Currency {
    /// Looks up an alphabetic code such as `"USD"`; it must be three uppercase ASCII letters.
    pub fn from_code(code: &str) -> Result<Currency, MoneyError> {
        let bytes = code.as_bytes();
        if bytes.len() != 3 || !bytes.iter().all(u8::is_ascii_alphabetic) {
            return Err(MoneyError::MalformedCurrencyCode);
        }
        if !bytes.iter().all(u8::is_ascii_uppercase) {
            return Err(MoneyError::NotUppercase);
        }

        let index = CURRENCIES
            .binary_search_by(|(known, _)| (*known).cmp(code))
            .map_err(|_| MoneyError::UnknownCurrency)?;
        let (code, exponent) = CURRENCIES[index];
        Ok(Currency { code, exponent })
    }

    /// The three-letter alphabetic code.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// How many decimal places the minor unit has: 2 for USD, 0 for JPY, 3 for KWD, 4 for CLF.
    pub fn exponent(&self) -> u8 {
        self.exponent
    }

    /// How many minor units make one major unit (at most 10^4, so this cannot overflow).
    fn scale(&self) -> u64 {
        10u64.pow(u32::from(self.exponent))
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code)
    }
}

/// A non-negative amount of money in integer minor units, never above `i64::MAX` so that it
/// fits a SQL `BIGINT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Amount {
    minor: u64,
    currency: Currency,
}

impl Amount {
    /// An amount of `minor` units (cents for USD); refuses anything above `i64::MAX`.
    pub fn from_minor(minor: u64, currency: Currency) -> Result<Amount, MoneyError> {
        if minor > MAX_MINOR {
            return Err(MoneyError::Overflow);
        }
        Ok(Amount { minor, currency })
    }

    /// An amount from a signed count of minor units, as a database column returns it.
    pub fn from_minor_i64(minor: i64, currency: Currency) -> Result<Amount, MoneyError> {
        let minor = u64::try_from(minor).map_err(|_| MoneyError::Negative)?;
        Amount::from_minor(minor, currency)
    }

    /// Parses a decimal in major units, such as `"158.00"` for USD, without ever rounding.
    ///
    /// The text is one or more ASCII digits, optionally followed by `.` and one to
    /// [`Currency::exponent`] digits. Signs, exponents, separators and whitespace are refused.
    pub fn parse_major(text: &str, currency: Currency) -> Result<Amount, MoneyError> {
        if text.len() > MAX_MAJOR_LEN {
            return Err(MoneyError::TooLong);
        }
        parse_decimal(text, currency)
    }

    /// Converts a JSON number in major units (AP2's `payment.budget.max`) exactly.
    ///
    /// Integers are scaled by the minor unit and negative ones refused; other numbers go through
    /// [`Amount::from_major_f64`].
    pub fn from_json_number(number: &Number, currency: Currency) -> Result<Amount, MoneyError> {
        if let Some(major) = number.as_u64() {
            let minor = major
                .checked_mul(currency.scale())
                .ok_or(MoneyError::Overflow)?;
            return Amount::from_minor(minor, currency);
        }
        if number.is_i64() {
            return Err(MoneyError::Negative);
        }
        match number.as_f64() {
            Some(major) => Amount::from_major_f64(major, currency),
            None => Err(MoneyError::Syntax),
        }
    }

    /// Converts a float in major units exactly, or refuses it.
    ///
    /// The float is written as its shortest decimal that reads back to the same value (`19.99`,
    /// not `19.989999…`), and that text must have no more fraction digits than the currency
    /// allows. Negative zero counts as negative.
    pub fn from_major_f64(major: f64, currency: Currency) -> Result<Amount, MoneyError> {
        if !major.is_finite() {
            return Err(MoneyError::NotFinite);
        }
        if major.is_sign_negative() {
            return Err(MoneyError::Negative);
        }
        // `Display` for f64 never uses exponent notation, so the text is plain digits and a
        // point; it may be long (1e300, 5e-324), which is why the length bound is skipped here.
        parse_decimal(&major.to_string(), currency)
    }

    /// The amount in minor units.
    pub fn minor(&self) -> u64 {
        self.minor
    }

    /// The currency of the amount.
    pub fn currency(&self) -> Currency {
        self.currency
    }

    /// The sum of two amounts in the same currency.
    pub fn checked_add(&self, other: &Amount) -> Result<Amount, MoneyError> {
        if self.currency != other.currency {
            return Err(MoneyError::CurrencyMismatch);
        }
        let minor = self
            .minor
            .checked_add(other.minor)
            .ok_or(MoneyError::Overflow)?;
        Amount::from_minor(minor, self.currency)
    }

    /// The amount in major units with exactly [`Currency::exponent`] fraction digits:
    /// `"158.00"` for USD, `"1500"` for JPY, `"1.500"` for KWD.
    pub fn to_major_string(&self) -> String {
        let width = usize::from(self.currency.exponent);
        if width == 0 {
            return self.minor.to_string();
        }
        let scale = self.currency.scale();
        format!("{}.{:0width$}", self.minor / scale, self.minor % scale)
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.to_major_string(), self.currency)
    }
}

/// Why a currency code or an amount was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    /// The amount text is empty.
    #[error("amount is empty")]
    Empty,
    /// The amount text is longer than 40 bytes, more than any amount we accept needs.
    #[error("amount text is too long")]
    TooLong,
    /// The amount text is not digits with an optional `.` and fraction digits.
    #[error("amount is not a plain decimal number")]
    Syntax,
    /// The amount is negative, which no mandate may carry.
    #[error("amount is negative")]
    Negative,
    /// The amount has more fraction digits than the currency's minor unit; it is never rounded.
    #[error("amount has more fraction digits than the currency allows")]
    TooManyFractionDigits,
    /// The amount in minor units exceeds `i64::MAX`.
    #[error("amount is too large")]
    Overflow,
    /// The amount is a floating-point NaN or infinity.
    #[error("amount is not a finite number")]
    NotFinite,
    /// The currency code is not three ASCII letters.
    #[error("currency code is not three ASCII letters")]
    MalformedCurrencyCode,
    /// The currency code has lowercase letters; ISO 4217 codes are uppercase.
    #[error("currency code is not uppercase")]
    NotUppercase,
    /// The currency code is not an active ISO 4217 code with a minor unit.
    #[error("unknown currency code")]
    UnknownCurrency,
    /// Two amounts that must share a currency do not.
    #[error("amounts are in different currencies")]
    CurrencyMismatch,
}

/// The largest amount in minor units: what a SQL `BIGINT` holds.
const MAX_MINOR: u64 = i64::MAX as u64;

/// The longest major-unit text accepted: `i64::MAX` has 19 digits, which leaves room for a
/// point, four fraction digits and some leading zeros.
const MAX_MAJOR_LEN: usize = 40;

/// ISO 4217 list one, active codes with a numeric minor unit, sorted by code for binary search.
///
/// As of amendment 180 (1 January 2026): XCG replaced ANG, XAD was added, CUC and BGN moved to
/// the historic list. Codes whose minor unit is "N.A." (XAU, XDR, XTS, XXX, …) are left out.
#[rustfmt::skip] // eight rows a line; rustfmt would spread the table over 165 lines
static CURRENCIES: &[(&str, u8)] = &[
    ("AED", 2), ("AFN", 2), ("ALL", 2), ("AMD", 2), ("AOA", 2), ("ARS", 2), ("AUD", 2), ("AWG", 2),
    ("AZN", 2), ("BAM", 2), ("BBD", 2), ("BDT", 2), ("BHD", 3), ("BIF", 0), ("BMD", 2), ("BND", 2),
    ("BOB", 2), ("BOV", 2), ("BRL", 2), ("BSD", 2), ("BTN", 2), ("BWP", 2), ("BYN", 2), ("BZD", 2),
    ("CAD", 2), ("CDF", 2), ("CHE", 2), ("CHF", 2), ("CHW", 2), ("CLF", 4), ("CLP", 0), ("CNY", 2),
    ("COP", 2), ("COU", 2), ("CRC", 2), ("CUP", 2), ("CVE", 2), ("CZK", 2), ("DJF", 0), ("DKK", 2),
    ("DOP", 2), ("DZD", 2), ("EGP", 2), ("ERN", 2), ("ETB", 2), ("EUR", 2), ("FJD", 2), ("FKP", 2),
    ("GBP", 2), ("GEL", 2), ("GHS", 2), ("GIP", 2), ("GMD", 2), ("GNF", 0), ("GTQ", 2), ("GYD", 2),
    ("HKD", 2), ("HNL", 2), ("HTG", 2), ("HUF", 2), ("IDR", 2), ("ILS", 2), ("INR", 2), ("IQD", 3),
    ("IRR", 2), ("ISK", 0), ("JMD", 2), ("JOD", 3), ("JPY", 0), ("KES", 2), ("KGS", 2), ("KHR", 2),
    ("KMF", 0), ("KPW", 2), ("KRW", 0), ("KWD", 3), ("KYD", 2), ("KZT", 2), ("LAK", 2), ("LBP", 2),
    ("LKR", 2), ("LRD", 2), ("LSL", 2), ("LYD", 3), ("MAD", 2), ("MDL", 2), ("MGA", 2), ("MKD", 2),
    ("MMK", 2), ("MNT", 2), ("MOP", 2), ("MRU", 2), ("MUR", 2), ("MVR", 2), ("MWK", 2), ("MXN", 2),
    ("MXV", 2), ("MYR", 2), ("MZN", 2), ("NAD", 2), ("NGN", 2), ("NIO", 2), ("NOK", 2), ("NPR", 2),
    ("NZD", 2), ("OMR", 3), ("PAB", 2), ("PEN", 2), ("PGK", 2), ("PHP", 2), ("PKR", 2), ("PLN", 2),
    ("PYG", 0), ("QAR", 2), ("RON", 2), ("RSD", 2), ("RUB", 2), ("RWF", 0), ("SAR", 2), ("SBD", 2),
    ("SCR", 2), ("SDG", 2), ("SEK", 2), ("SGD", 2), ("SHP", 2), ("SLE", 2), ("SOS", 2), ("SRD", 2),
    ("SSP", 2), ("STN", 2), ("SVC", 2), ("SYP", 2), ("SZL", 2), ("THB", 2), ("TJS", 2), ("TMT", 2),
    ("TND", 3), ("TOP", 2), ("TRY", 2), ("TTD", 2), ("TWD", 2), ("TZS", 2), ("UAH", 2), ("UGX", 0),
    ("USD", 2), ("USN", 2), ("UYI", 0), ("UYU", 2), ("UYW", 4), ("UZS", 2), ("VED", 2), ("VES", 2),
    ("VND", 0), ("VUV", 0), ("WST", 2), ("XAD", 2), ("XAF", 0), ("XCD", 2), ("XCG", 2), ("XOF", 0),
    ("XPF", 0), ("YER", 2), ("ZAR", 2), ("ZMW", 2), ("ZWG", 2),
];

/// Parses a major-unit decimal of any length; callers bound the length where text is untrusted.
fn parse_decimal(text: &str, currency: Currency) -> Result<Amount, MoneyError> {
    if text.is_empty() {
        return Err(MoneyError::Empty);
    }
    if text.starts_with('-') {
        return Err(MoneyError::Negative);
    }

    let (whole, fraction) = match text.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (text, None),
    };
    if !is_digits(whole) || fraction.is_some_and(|digits| !is_digits(digits)) {
        return Err(MoneyError::Syntax);
    }

    let fraction = fraction.unwrap_or("");
    let exponent = usize::from(currency.exponent);
    if fraction.len() > exponent {
        return Err(MoneyError::TooManyFractionDigits);
    }

    // The minor units are the whole digits, then the fraction digits padded with zeros to the
    // currency's exponent: "19.9" in USD reads as the digits 1, 9, 9, 0.
    let padding = iter::repeat_n(b'0', exponent - fraction.len());
    let minor = (whole.bytes().chain(fraction.bytes()).chain(padding))
        .try_fold(0u64, |acc, digit| {
            acc.checked_mul(10)?.checked_add(u64::from(digit - b'0'))
        })
        .ok_or(MoneyError::Overflow)?;
    Amount::from_minor(minor, currency)
}

/// Whether `text` is one or more ASCII digits and nothing else.
fn is_digits(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    use proptest::prelude::*;

    fn currency(code: &str) -> Currency {
        Currency::from_code(code).unwrap()
    }

    fn usd(text: &str) -> Result<Amount, MoneyError> {
        Amount::parse_major(text, currency("USD"))
    }

    fn json(text: &str) -> Number {
        serde_json::from_str(text).unwrap()
    }

    fn minor_of(result: Result<Amount, MoneyError>) -> Result<u64, MoneyError> {
        result.map(|amount| amount.minor())
    }

    #[test]
    fn table_is_sorted_without_duplicates() {
        assert!(CURRENCIES.windows(2).all(|pair| pair[0].0 < pair[1].0));
    }

    #[test]
    fn table_holds_the_165_codes_of_list_one_that_have_a_minor_unit() {
        assert_eq!(CURRENCIES.len(), 165);
    }

    #[test]
    fn every_table_row_is_a_three_letter_uppercase_code() {
        for (code, _) in CURRENCIES {
            assert_eq!(code.len(), 3, "{code}");
            assert!(code.bytes().all(|byte| byte.is_ascii_uppercase()), "{code}");
            assert_eq!(Currency::from_code(code).unwrap().code(), *code);
        }
    }

    #[test]
    fn exponents_other_than_two_are_exactly_the_iso_ones() {
        let zero = "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF";
        let three = "BHD IQD JOD KWD LYD OMR TND";
        let four = "CLF UYW";
        let expected = |code: &str| match code {
            _ if zero.split(' ').any(|c| c == code) => 0,
            _ if three.split(' ').any(|c| c == code) => 3,
            _ if four.split(' ').any(|c| c == code) => 4,
            _ => 2,
        };
        for (code, exponent) in CURRENCIES {
            assert_eq!(*exponent, expected(code), "{code}");
        }
    }

    #[test]
    fn recent_codes_are_known_and_withdrawn_ones_are_not() {
        for code in ["XCG", "ZWG", "SLE", "VED", "VES", "MRU", "STN", "XAD"] {
            assert_eq!(currency(code).exponent(), 2, "{code}");
        }
        for code in [
            "ANG", "BGN", "CUC", "HRK", "SLL", "ZWL", "VEF", "MRO", "STD",
        ] {
            assert_eq!(
                Currency::from_code(code),
                Err(MoneyError::UnknownCurrency),
                "{code}"
            );
        }
    }

    #[test]
    fn codes_without_a_minor_unit_are_unknown() {
        let codes = [
            "XAU", "XAG", "XPD", "XPT", "XDR", "XSU", "XUA", "XBA", "XBB", "XBC", "XBD",
        ];
        for code in codes.into_iter().chain(["XTS", "XXX"]) {
            assert_eq!(
                Currency::from_code(code),
                Err(MoneyError::UnknownCurrency),
                "{code}"
            );
        }
    }

    #[test]
    fn lowercase_and_mixed_case_codes_are_refused_not_uppercased() {
        for code in ["usd", "Usd", "uSD", "USd"] {
            assert_eq!(
                Currency::from_code(code),
                Err(MoneyError::NotUppercase),
                "{code}"
            );
        }
    }

    #[test]
    fn malformed_codes_are_refused() {
        for code in ["", "US", "USDX", "US1", "U D", " USD", "USD ", "U-D"] {
            assert_eq!(
                Currency::from_code(code),
                Err(MoneyError::MalformedCurrencyCode),
                "{code}"
            );
        }
    }

    #[test]
    fn cyrillic_and_fullwidth_look_alikes_are_refused() {
        // U+0405 CYRILLIC CAPITAL LETTER DZE looks like S; U+0421 CYRILLIC CAPITAL ES looks like C.
        for code in ["U\u{0405}D", "\u{0421}AD", "\u{FF35}\u{FF33}\u{FF24}"] {
            assert_eq!(
                Currency::from_code(code),
                Err(MoneyError::MalformedCurrencyCode),
                "{code}"
            );
        }
    }

    #[test]
    fn currency_displays_as_its_code() {
        let kwd = currency("KWD");
        assert_eq!(kwd.to_string(), "KWD");
        assert_eq!(kwd.code(), "KWD");
        assert_eq!(kwd.exponent(), 3);
    }

    #[test]
    fn well_formed_major_amounts_parse_to_minor_units() {
        let cases = [
            ("0", 0),
            ("0.00", 0),
            ("158", 15_800),
            ("158.00", 15_800),
            ("19.99", 1_999),
            ("19.9", 1_990),
            ("0.01", 1),
            ("007.50", 750),
            ("92233720368547758.07", i64::MAX as u64),
        ];
        for (text, minor) in cases {
            assert_eq!(minor_of(usd(text)), Ok(minor), "{text}");
        }
    }

    #[test]
    fn malformed_major_amounts_are_refused_with_their_fault() {
        let cases = [
            ("", MoneyError::Empty),
            ("5.", MoneyError::Syntax),
            (".5", MoneyError::Syntax),
            (".", MoneyError::Syntax),
            ("1.2.3", MoneyError::Syntax),
            ("+5", MoneyError::Syntax),
            ("-5", MoneyError::Negative),
            ("-0", MoneyError::Negative),
            ("1e3", MoneyError::Syntax),
            ("1E3", MoneyError::Syntax),
            ("1_000", MoneyError::Syntax),
            ("1,000", MoneyError::Syntax),
            (" 5", MoneyError::Syntax),
            ("5 ", MoneyError::Syntax),
            ("5\n", MoneyError::Syntax),
            ("1 000", MoneyError::Syntax),
            ("0x10", MoneyError::Syntax),
            ("NaN", MoneyError::Syntax),
            ("inf", MoneyError::Syntax),
            ("\u{FF15}", MoneyError::Syntax),
            ("\u{0665}", MoneyError::Syntax),
            ("1.005", MoneyError::TooManyFractionDigits),
            ("0.001", MoneyError::TooManyFractionDigits),
            ("92233720368547758.08", MoneyError::Overflow),
            ("99999999999999999999", MoneyError::Overflow),
        ];
        for (text, fault) in cases {
            assert_eq!(usd(text), Err(fault), "{text:?}");
        }
    }

    #[test]
    fn overlong_text_is_refused_even_when_it_is_all_zeros() {
        let forty = "0".repeat(40);
        assert_eq!(minor_of(usd(&forty)), Ok(0));
        assert_eq!(usd(&"0".repeat(41)), Err(MoneyError::TooLong));
    }

    #[test]
    fn zero_decimal_currencies_take_no_decimal_point() {
        let jpy = currency("JPY");
        assert_eq!(minor_of(Amount::parse_major("1500", jpy)), Ok(1_500));
        assert_eq!(
            Amount::parse_major("1500.0", jpy),
            Err(MoneyError::TooManyFractionDigits)
        );
        assert_eq!(Amount::parse_major("1500.", jpy), Err(MoneyError::Syntax));
        assert_eq!(
            minor_of(Amount::parse_major("9223372036854775807", jpy)),
            Ok(i64::MAX as u64)
        );
        assert_eq!(
            Amount::parse_major("9223372036854775808", jpy),
            Err(MoneyError::Overflow)
        );
    }

    #[test]
    fn three_and_four_decimal_currencies_scale_by_their_exponent() {
        let kwd = currency("KWD");
        assert_eq!(minor_of(Amount::parse_major("1.5", kwd)), Ok(1_500));
        assert_eq!(minor_of(Amount::parse_major("1.234", kwd)), Ok(1_234));
        assert_eq!(
            Amount::parse_major("1.2345", kwd),
            Err(MoneyError::TooManyFractionDigits)
        );

        let clf = currency("CLF");
        assert_eq!(minor_of(Amount::parse_major("1.2345", clf)), Ok(12_345));
        assert_eq!(minor_of(Amount::parse_major("2", clf)), Ok(20_000));
        assert_eq!(
            Amount::parse_major("1.23456", clf),
            Err(MoneyError::TooManyFractionDigits)
        );
    }

    #[test]
    fn major_strings_carry_exactly_the_currency_exponent() {
        let amount = |minor, code| Amount::from_minor(minor, currency(code)).unwrap();
        assert_eq!(amount(15_800, "USD").to_major_string(), "158.00");
        assert_eq!(amount(5, "USD").to_major_string(), "0.05");
        assert_eq!(amount(1_500, "JPY").to_major_string(), "1500");
        assert_eq!(amount(1_500, "KWD").to_major_string(), "1.500");
        assert_eq!(amount(1, "CLF").to_major_string(), "0.0001");
        assert_eq!(amount(0, "EUR").to_major_string(), "0.00");
    }

    #[test]
    fn amount_displays_major_units_then_code() {
        let amount = Amount::from_minor(15_800, currency("USD")).unwrap();
        assert_eq!(amount.to_string(), "158.00 USD");
    }

    #[test]
    fn minor_units_above_i64_max_are_an_overflow() {
        let usd = currency("USD");
        let max = Amount::from_minor(i64::MAX as u64, usd).unwrap();
        assert_eq!(max.minor(), i64::MAX as u64);
        assert_eq!(max.currency(), usd);
        assert_eq!(
            Amount::from_minor(i64::MAX as u64 + 1, usd),
            Err(MoneyError::Overflow)
        );
        assert_eq!(Amount::from_minor(u64::MAX, usd), Err(MoneyError::Overflow));
    }

    #[test]
    fn signed_minor_units_refuse_negatives() {
        let usd = currency("USD");
        assert_eq!(minor_of(Amount::from_minor_i64(0, usd)), Ok(0));
        assert_eq!(
            minor_of(Amount::from_minor_i64(i64::MAX, usd)),
            Ok(i64::MAX as u64)
        );
        assert_eq!(Amount::from_minor_i64(-1, usd), Err(MoneyError::Negative));
        assert_eq!(
            Amount::from_minor_i64(i64::MIN, usd),
            Err(MoneyError::Negative)
        );
    }

    #[test]
    fn adding_amounts_checks_currency_and_overflow() {
        let usd = currency("USD");
        let a = Amount::from_minor(1_999, usd).unwrap();
        let b = Amount::from_minor(1, usd).unwrap();
        assert_eq!(minor_of(a.checked_add(&b)), Ok(2_000));

        let eur = Amount::from_minor(1, currency("EUR")).unwrap();
        assert_eq!(a.checked_add(&eur), Err(MoneyError::CurrencyMismatch));

        let max = Amount::from_minor(i64::MAX as u64, usd).unwrap();
        let zero = Amount::from_minor(0, usd).unwrap();
        assert_eq!(max.checked_add(&zero), Ok(max));
        assert_eq!(max.checked_add(&b), Err(MoneyError::Overflow));
        assert_eq!(max.checked_add(&max), Err(MoneyError::Overflow));
    }

    #[test]
    fn json_integers_are_scaled_by_the_exponent() {
        let cases = [
            ("150", "USD", 15_000),
            ("0", "USD", 0),
            ("1500", "JPY", 1_500),
            ("2", "KWD", 2_000),
        ];
        for (text, code, minor) in cases {
            assert_eq!(
                minor_of(Amount::from_json_number(&json(text), currency(code))),
                Ok(minor)
            );
        }
    }

    #[test]
    fn json_integers_refuse_negatives_and_overflow() {
        let usd = currency("USD");
        assert_eq!(
            Amount::from_json_number(&json("-1"), usd),
            Err(MoneyError::Negative)
        );
        let too_big = json("92233720368547759");
        assert_eq!(
            Amount::from_json_number(&too_big, usd),
            Err(MoneyError::Overflow)
        );
        let beyond_u64 = json("18446744073709551615");
        assert_eq!(
            Amount::from_json_number(&beyond_u64, usd),
            Err(MoneyError::Overflow)
        );
        let jpy_max = json("9223372036854775807");
        assert_eq!(
            minor_of(Amount::from_json_number(&jpy_max, currency("JPY"))),
            Ok(i64::MAX as u64)
        );
    }

    #[test]
    fn json_floats_convert_exactly_or_not_at_all() {
        let cases = [
            ("150.0", "USD", Ok(15_000)),
            ("1000.0", "USD", Ok(100_000)),
            ("19.99", "USD", Ok(1_999)),
            ("0.1", "USD", Ok(10)),
            ("0.1", "KWD", Ok(100)),
            ("1e3", "USD", Ok(100_000)),
            ("1.005", "USD", Err(MoneyError::TooManyFractionDigits)),
            ("1.5", "JPY", Err(MoneyError::TooManyFractionDigits)),
            ("1e-7", "USD", Err(MoneyError::TooManyFractionDigits)),
            ("-19.99", "USD", Err(MoneyError::Negative)),
            ("-0.0", "USD", Err(MoneyError::Negative)),
            ("-0", "USD", Err(MoneyError::Negative)),
            ("1e300", "USD", Err(MoneyError::Overflow)),
        ];
        for (text, code, expected) in cases {
            let number = json(text);
            assert_eq!(
                minor_of(Amount::from_json_number(&number, currency(code))),
                expected,
                "{text}"
            );
        }
    }

    #[test]
    fn floats_that_are_not_finite_are_refused() {
        let usd = currency("USD");
        for value in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert_eq!(
                Amount::from_major_f64(value, usd),
                Err(MoneyError::NotFinite),
                "{value}"
            );
        }
    }

    #[test]
    fn float_extremes_are_refused_without_the_length_bound_hiding_the_fault() {
        let usd = currency("USD");
        assert_eq!(
            Amount::from_major_f64(f64::MIN_POSITIVE, usd),
            Err(MoneyError::TooManyFractionDigits)
        );
        assert_eq!(
            Amount::from_major_f64(5e-324, usd),
            Err(MoneyError::TooManyFractionDigits)
        );
        assert_eq!(
            Amount::from_major_f64(f64::MAX, usd),
            Err(MoneyError::Overflow)
        );
        assert_eq!(minor_of(Amount::from_major_f64(0.0, usd)), Ok(0));
    }

    fn any_currency() -> impl Strategy<Value = Currency> {
        (0..CURRENCIES.len()).prop_map(|index| {
            let (code, exponent) = CURRENCIES[index];
            Currency { code, exponent }
        })
    }

    proptest! {
        #[test]
        fn major_string_parses_back_to_the_same_amount(
            minor in 0..=i64::MAX as u64,
            currency in any_currency(),
        ) {
            let amount = Amount::from_minor(minor, currency).unwrap();
            prop_assert_eq!(Amount::parse_major(&amount.to_major_string(), currency), Ok(amount));
        }

        #[test]
        fn parse_major_never_panics_on_arbitrary_text(text in any::<String>(), currency in any_currency()) {
            let _ = Amount::parse_major(&text, currency);
        }

        #[test]
        fn parse_major_never_panics_on_number_like_text(
            text in "[-+0-9.eE_ ]{0,45}",
            currency in any_currency(),
        ) {
            if let Ok(amount) = Amount::parse_major(&text, currency) {
                prop_assert!(amount.minor() <= i64::MAX as u64);
                prop_assert!(text.bytes().all(|byte| byte.is_ascii_digit() || byte == b'.'));
            }
        }
    }
}
