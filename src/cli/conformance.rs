//! `ap2-mandate conformance DIR`: expected versus got for every vector case.

use std::path::Path;
use std::process::ExitCode;

use ap2_mandate::conformance::run_dir;
use ap2_mandate::mandate::Policy;

pub fn run(dir: &Path) -> anyhow::Result<ExitCode> {
    let results = run_dir(dir, &Policy::default())?;
    let width = results.iter().map(|r| r.name.len()).max().unwrap_or(0);
    let mut failed = 0;
    for r in &results {
        let mark = if r.passed() { "ok  " } else { "FAIL" };
        if !r.passed() {
            failed += 1;
        }
        let reason = r
            .reason
            .as_deref()
            .map(|x| format!("  [{x}]"))
            .unwrap_or_default();
        say!(
            "{mark} {:width$}  expected {:<34} got {}{reason}",
            r.name,
            r.expected.to_string(),
            r.got
        );
    }
    say!("{} passed, {} failed", results.len() - failed, failed);
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
