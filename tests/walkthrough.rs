//! The README's walkthrough, run as written: every `sh` block between the `walkthrough` markers
//! of README.md, in one bash, in an empty directory, with `ap2-mandate` on the PATH. The person
//! in it is a headless Chromium (`BROWSER` is tests/browser/person.py), which signs in and
//! approves where the README says to open a URL. Only the port differs from the README's, so
//! parallel runs do not collide.
//!
//! Needs jq, curl and the browser environment of tests/consent_browser.rs
//! (`AP2_BROWSER_PYTHON`, `AP2_CHROMIUM`); without them the test says so and passes, unless
//! `AP2_REQUIRE_BROWSER=1` (as in CI).

mod support;

use std::path::Path;
use std::process::Command;

/// The walkthrough's shell blocks, joined.
fn walkthrough(readme: &str) -> String {
    let start = readme
        .find("<!-- walkthrough -->")
        .expect("README has a walkthrough start marker");
    let end = readme
        .find("<!-- /walkthrough -->")
        .expect("README has a walkthrough end marker");
    let mut script = String::new();
    let mut inside = false;
    for line in readme[start..end].lines() {
        match (inside, line.trim_end()) {
            (false, "```sh") => inside = true,
            (true, "```") => inside = false,
            (true, text) => {
                script.push_str(text);
                script.push('\n');
            }
            _ => {}
        }
    }
    script
}

#[test]
fn the_readme_walkthrough_gets_from_nothing_to_a_verified_payment() {
    let Some(python) = std::env::var_os("AP2_BROWSER_PYTHON") else {
        assert!(
            std::env::var("AP2_REQUIRE_BROWSER").as_deref() != Ok("1"),
            "AP2_REQUIRE_BROWSER=1 but AP2_BROWSER_PYTHON is not set"
        );
        eprintln!("SKIPPED: set AP2_BROWSER_PYTHON (and AP2_CHROMIUM) to run the walkthrough");
        return;
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let port = support::free_port();
    let script = walkthrough(&readme).replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"));
    assert!(script.contains("ap2-mandate serve"), "{script}");
    // However the script ends, the server it started in the background ends with it.
    let script =
        format!("set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n{script}");

    let dir = std::env::temp_dir().join(format!("ap2-walkthrough-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_ap2-mandate"))
        .parent()
        .unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let person = root.join("tests/browser/person.py");
    let mut command = Command::new("bash");
    command
        .arg("-c")
        .arg(&script)
        .current_dir(&dir)
        .env("PATH", path)
        .env(
            "BROWSER",
            format!("{} {}", Path::new(&python).display(), person.display()),
        )
        .env("AP2_PERSON_USERNAME", "alice")
        .env("AP2_PERSON_PASSWORD", "correct horse battery staple")
        .env("NO_COLOR", "1");
    for (name, _) in std::env::vars() {
        if name.starts_with("AP2_")
            && !["AP2_CHROMIUM", "AP2_PERSON_USERNAME", "AP2_PERSON_PASSWORD"]
                .contains(&name.as_str())
        {
            command.env_remove(name);
        }
    }
    // The README's `serve` listens where its BASE points.
    command.env("AP2_LISTEN", format!("127.0.0.1:{port}"));
    let out = command.output().expect("bash runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let log = std::fs::read_to_string(dir.join("serve.log")).unwrap_or_default();
    assert!(
        out.status.success(),
        "the walkthrough failed:\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n--- serve.log\n{log}"
    );

    // What the README promises the newcomer sees.
    let decision: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("decision.json")).unwrap()).unwrap();
    assert_eq!(decision["status"], "Success", "{decision}");
    assert!(decision["receipt"]
        .as_str()
        .is_some_and(|r| r.split('.').count() == 3));
    assert!(decision["payment_id"].as_str().is_some());
    assert!(
        stdout.contains("\"nonce_used\""),
        "the replay is refused:\n{stdout}"
    );
    assert!(stdout.contains("audit chain intact"), "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}
