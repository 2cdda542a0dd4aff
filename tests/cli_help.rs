//! Every command and subcommand explains itself with an example, and the shell completions
//! are generated.

use std::process::Command;

fn run(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ap2-mandate"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The subcommand names listed under `Commands:` of a help text.
fn commands(help: &str) -> Vec<String> {
    let Some((_, rest)) = help.split_once("Commands:\n") else {
        return Vec::new();
    };
    rest.lines()
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_command_has_help_with_an_example() {
    let top = run(&["--help"]);
    let mut checked = 0;
    let mut pending: Vec<Vec<String>> = commands(&top).into_iter().map(|c| vec![c]).collect();
    while let Some(path) = pending.pop() {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let help = run(&args);
        assert!(
            help.contains("Example:"),
            "`ap2-mandate {}` has no example:\n{help}",
            path.join(" ")
        );
        checked += 1;
        for sub in commands(&help) {
            let mut deeper = path.clone();
            deeper.push(sub);
            pending.push(deeper);
        }
    }
    assert!(checked >= 30, "only {checked} commands were found");
}

#[test]
fn completions_are_generated_for_bash_and_zsh() {
    let bash = run(&["completions", "bash"]);
    assert!(
        bash.contains("complete -F _ap2__mandate") && bash.contains("sign-in"),
        "{bash}"
    );
    let zsh = run(&["completions", "zsh"]);
    assert!(zsh.starts_with("#compdef ap2-mandate"), "{zsh}");
}

#[test]
fn keys_new_writes_a_private_key_for_the_owner_and_never_overwrites_one() {
    let dir = std::env::temp_dir().join(format!("ap2-keys-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("agent.jwk");
    let printed = run(&[
        "keys",
        "new",
        "--out",
        out.to_str().unwrap(),
        "--kid",
        "agent-1",
    ]);
    let printed: serde_json::Value = serde_json::from_str(&printed).unwrap();
    assert_eq!(printed["kid"], "agent-1");
    let private: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert!(private["d"].is_string());
    let public: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("agent.jwks.json")).unwrap())
            .unwrap();
    assert!(
        public["keys"][0].get("d").is_none(),
        "the public set holds no private part"
    );
    assert_eq!(public["keys"][0]["x"], private["x"]);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let again = Command::new(env!("CARGO_BIN_EXE_ap2-mandate"))
        .args(["keys", "new", "--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("never overwritten"));
    let unchanged: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(unchanged, private);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_nonce_that_starts_with_a_hyphen_is_a_value_not_a_flag() {
    // base64url nonces start with `-` one time in 64; `act dpop` must take them as given.
    let dir = std::env::temp_dir().join(format!("ap2-hyphen-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("agent.jwk");
    run(&["keys", "new", "--out", key.to_str().unwrap()]);
    let proof = run(&[
        "act",
        "dpop",
        "--key",
        key.to_str().unwrap(),
        "--url",
        "http://127.0.0.1:8080/oauth2/token",
        "--nonce",
        "-Xy_z",
    ]);
    let payload = proof.trim().split('.').nth(1).unwrap();
    let claims: serde_json::Value =
        serde_json::from_slice(&ap2_mandate::jose::b64::decode(payload).unwrap()).unwrap();
    assert_eq!(claims["nonce"], "-Xy_z");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_reader_that_goes_away_ends_the_command_quietly_with_status_141() {
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/ap2-v0.2/cases/valid_hnp_payment.json"
    );
    for args in [vec!["inspect", fixture], vec!["completions", "bash"]] {
        let out = Command::new(env!("CARGO_BIN_EXE_ap2-mandate"))
            .args(&args)
            .stdout(closed_pipe())
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(141), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

/// The writing end of a pipe whose reader has already gone, as after `| head -0`: the reader
/// is a process that exits at once.
fn closed_pipe() -> std::process::Stdio {
    let mut reader = Command::new("true")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let writer = reader.stdin.take().unwrap();
    reader.wait().unwrap();
    writer.into()
}
