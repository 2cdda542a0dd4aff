//! Fuzzes major-unit amount parsing (`Amount::parse_major`) and float conversion
//! (`Amount::from_major_f64`).
//!
//! The first byte picks a currency with 0, 2, 3 or 4 decimal places; the rest is read as UTF-8
//! amount text. Whatever parses must print with `to_major_string` and parse back to the same
//! amount. The first eight bytes of the rest, as a little-endian `f64`, go to `from_major_f64`,
//! which may refuse but must not panic; what it accepts must round-trip the same way.

#![no_main]

use libfuzzer_sys::fuzz_target;

use ap2_mandate::money::{Amount, Currency};

/// One currency per minor-unit width: 2 (USD, EUR), 0 (JPY), 3 (KWD), 4 (CLF).
const CODES: [&str; 5] = ["USD", "JPY", "KWD", "CLF", "EUR"];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let code = CODES[usize::from(selector) % CODES.len()];
    // Every code above is in the ISO table; a refusal here is a bug worth a crash.
    let currency = Currency::from_code(code).expect("fixed currency code is known");

    if let Ok(text) = std::str::from_utf8(rest) {
        if let Ok(amount) = Amount::parse_major(text, currency) {
            assert_round_trip(amount, text);
        }
    }

    if let Some(bytes) = rest.first_chunk::<8>() {
        let major = f64::from_le_bytes(*bytes);
        if let Ok(amount) = Amount::from_major_f64(major, currency) {
            assert_round_trip(amount, &major.to_string());
        }
    }
});

/// An amount printed in major units parses back to itself; `source` names where it came from.
fn assert_round_trip(amount: Amount, source: &str) {
    let printed = amount.to_major_string();
    assert_eq!(
        Amount::parse_major(&printed, amount.currency()),
        Ok(amount),
        "{source:?} gave {amount}, printed as {printed:?}, which does not parse back",
    );
}
