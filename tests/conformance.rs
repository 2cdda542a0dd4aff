//! The AP2 v0.2 vector set (made by Google's reference SDK, copied into `fixtures/`) gives every
//! expected verdict and error code, including the four cases where the SDK itself is wrong.

use std::path::Path;

use ap2_mandate::conformance::{run_dir, Verdict};
use ap2_mandate::mandate::Policy;

#[test]
fn ap2_v02_vector_set_gives_every_expected_verdict() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/ap2-v0.2");
    let results = run_dir(&dir, &Policy::default()).expect("vector set readable");
    let failed: Vec<String> = results
        .iter()
        .filter(|r| !r.passed())
        .map(|r| {
            format!(
                "{}: expected {}, got {} ({:?})",
                r.name, r.expected, r.got, r.reason
            )
        })
        .collect();
    assert_eq!(results.len(), 32);
    assert!(failed.is_empty(), "mismatches:\n{}", failed.join("\n"));
    assert_eq!(
        results
            .iter()
            .filter(|r| r.expected == Verdict::Accept)
            .count(),
        5
    );
}
