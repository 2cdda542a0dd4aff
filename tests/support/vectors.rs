//! Running a vector directory and failing with every mismatch named.

use std::path::Path;

use ap2_mandate::conformance::{run_dir, CaseResult};
use ap2_mandate::mandate::Policy;

/// Runs `dir` with the default policy; asserts it has `count` cases and all give their verdict.
pub fn assert_all_pass(dir: &Path, count: usize) -> Vec<CaseResult> {
    let results = run_dir(dir, &Policy::default()).expect("vector set readable");
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
    assert!(failed.is_empty(), "mismatches:\n{}", failed.join("\n"));
    assert_eq!(results.len(), count);
    results
}
