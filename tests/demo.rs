//! `ap2-mandate demo` tells the whole story and exits 0 only when every step behaved: run as a
//! newcomer would (plain text in a pipe) and as a script would (`--json`).

use std::process::Command;

fn demo(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ap2-mandate"))
        .arg("demo")
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("the binary runs");
    let stdout = String::from_utf8(out.stdout).expect("UTF-8 output");
    (out.status.success(), stdout)
}

#[test]
fn the_story_is_told_in_plain_text_and_every_step_behaves() {
    let (ok, text) = demo(&[]);
    assert!(ok, "the demo failed:\n{text}");
    assert!(!text.contains('\x1b'), "colour in a pipe:\n{text}");
    // The story in order: each step's title, then what it must show.
    let mut rest = text.as_str();
    for expected in [
        "[ 1/16] The operator registers the agent",
        "[ 2/16] Alice signs in",
        "✔ the token names alice",
        "[ 3/16] The shopper exchanges it",
        "scope \"mandates:request\"",
        "scope \"payments:present\"",
        "[ 5/16] Alice reads the consent page",
        "│ • each payment from 0.01 USD to 150.00 USD",
        "│ • in total at most 300.00 USD",
        "✔ the request is approved",
        "✔ Success: order_id ord_",
        "✔ Success: payment_id pay_",
        "\"status\": \"Success\"",
        "refused: invalid_credential",
        "reason nonce_used",
        "reason replayed",
        "reason amount_out_of_range",
        "reason agent_key_mismatch",
        "The mandate is revoked.",
        "reason mandate_revoked",
        "payment.verify   refused  reason=mandate_revoked",
        "✔ audit chain intact:",
        "Every step behaved as expected.",
    ] {
        match rest.find(expected) {
            Some(at) => rest = &rest[at + expected.len()..],
            None => panic!("`{expected}` missing or out of order in:\n{text}"),
        }
    }
    assert!(!text.contains("unexpected"), "{text}");
}

#[test]
fn the_json_story_lists_sixteen_steps_that_all_held() {
    let (ok, text) = demo(&["--json"]);
    assert!(ok, "{text}");
    let doc: serde_json::Value = serde_json::from_str(&text).expect("one JSON document");
    assert_eq!(doc["ok"], true, "{text}");
    assert_eq!(doc["failures"], 0);
    let steps = doc["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 16);
    assert!(steps.iter().all(|s| s["ok"] == true));
    let refusals: Vec<&str> = steps
        .iter()
        .flat_map(|s| s["facts"].as_array().unwrap())
        .filter_map(|f| f["ok"].as_str())
        .filter(|f| f.starts_with("refused"))
        .collect();
    assert_eq!(refusals.len(), 5, "{refusals:?}");
}
