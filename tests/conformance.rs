//! The AP2 v0.2 vector set (made by Google's reference SDK, copied into `fixtures/`) gives every
//! expected verdict and error code, including the four cases where the SDK itself is wrong.

mod support;

use std::path::Path;

use ap2_mandate::conformance::Verdict;

#[test]
fn ap2_v02_vector_set_gives_every_expected_verdict() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/ap2-v0.2");
    let results = support::vectors::assert_all_pass(&dir, 32);
    let accepted = results
        .iter()
        .filter(|r| r.expected == Verdict::Accept)
        .count();
    assert_eq!(accepted, 5);
}
