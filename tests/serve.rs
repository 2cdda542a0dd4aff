//! `ap2-mandate serve` as an operator starts it: no flags in an empty directory, a `--config`
//! file with environment overrides, refusals of bad configuration, and a graceful stop that
//! answers the request in flight.

mod support;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!("ap2-serve-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `ap2-mandate` in `dir` with a clean environment for its options.
fn command(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ap2-mandate"));
    c.current_dir(dir);
    for (name, _) in std::env::vars() {
        if name.starts_with("AP2_") {
            c.env_remove(name);
        }
    }
    c
}

/// Starts serve; the child and the banner (every line up to the stop hint).
fn start(mut c: Command, port: u16) -> (Child, String) {
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut banner = String::new();
    while !banner.contains("Stop with Ctrl-C") {
        let mut line = String::new();
        if out.read_line(&mut line).unwrap() == 0 {
            panic!("serve ended before its banner: {banner}");
        }
        banner.push_str(&line);
    }
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(started.elapsed() < Duration::from_secs(20), "not listening");
        std::thread::sleep(Duration::from_millis(20));
    }
    (child, banner)
}

/// One HTTP/1.1 GET: status and body.
fn get(port: u16, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text[9..12].parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}

fn terminate(child: &Child) {
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

#[test]
fn with_no_flags_all_three_roles_start_and_the_banner_names_paths_not_secrets() {
    let dir = TempDir::new("plain");
    let port = support::free_port();
    // `--listen` is the one flag a parallel test run needs; the rest is the default.
    let mut c = command(&dir.0);
    c.args(["serve", "--listen", &format!("127.0.0.1:{port}")]);
    let (mut child, banner) = start(c, port);

    for line in [
        "token service  /oauth2/authorize",
        "wallet         /v1/mandate-requests",
        "verifier       /v1/challenges",
        "trusts no merchant yet",
        "store          SQLite ap2-data/ap2.db",
        "admin token    ap2-data/admin-token",
        "master key     ap2-data/master.key",
        "ap2-mandate user add NAME",
    ] {
        assert!(banner.contains(line), "banner lacks `{line}`:\n{banner}");
    }
    let data = dir.0.join("ap2-data");
    let admin = std::fs::read_to_string(data.join("admin-token")).unwrap();
    let master = std::fs::read_to_string(data.join("master.key")).unwrap();
    assert!(!banner.contains(admin.trim()) && !banner.contains(master.trim()));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&data.join("admin-token")), 0o600);
        assert_eq!(mode(&data.join("master.key")), 0o600);
        assert_eq!(mode(&data), 0o700);
    }

    // The signing keys exist from the first start: tokens and receipts, and the wallet's.
    let (_, jwks) = get(port, "/.well-known/jwks.json");
    assert!(jwks.contains("\"kid\":\"tokens-"), "{jwks}");
    assert!(jwks.contains("\"kid\":\"mandates-"), "{jwks}");

    // Every role answers.
    assert_eq!(get(port, "/.well-known/oauth-authorization-server").0, 200);
    assert_eq!(get(port, "/mandates").0, 200);
    let (status, card) = get(port, "/.well-known/agent-card.json");
    assert_eq!(status, 200);
    assert!(
        card.contains(&format!("http://127.0.0.1:{port}/a2a")),
        "{card}"
    );

    terminate(&child);
    assert!(child.wait().unwrap().success());
}

#[test]
fn a_config_file_sets_options_and_the_environment_wins_over_it() {
    let dir = TempDir::new("config");
    let (from_file, from_env) = (support::free_port(), support::free_port());
    std::fs::write(
        dir.0.join("ap2.toml"),
        format!(
            "listen = \"127.0.0.1:{from_file}\"\nroles = [\"wallet\"]\ndata_dir = \"state\"\n\
             request-timeout = 5\n"
        ),
    )
    .unwrap();
    let mut c = command(&dir.0);
    c.args(["serve", "--config", "ap2.toml"])
        .env("AP2_LISTEN", format!("127.0.0.1:{from_env}"));
    let (mut child, banner) = start(c, from_env);
    assert!(banner.contains(&format!("listening on 127.0.0.1:{from_env}")));
    assert!(banner.contains("SQLite state/ap2.db"), "{banner}");
    assert!(
        banner.contains("wallet ")
            && !banner.contains("token service")
            && !banner.contains("verifier "),
        "{banner}"
    );
    // Only the wallet's routes: the token service's and the verifier's answer 404.
    assert_eq!(get(from_env, "/mandates").0, 200);
    assert_eq!(
        get(from_env, "/.well-known/oauth-authorization-server").0,
        404
    );
    assert_eq!(get(from_env, "/.well-known/agent-card.json").0, 404);
    terminate(&child);
    assert!(child.wait().unwrap().success());
}

#[test]
fn bad_configuration_stops_start_up_naming_the_option_and_the_fix() {
    let dir = TempDir::new("bad");
    let refuse = |file: Option<&str>, args: &[&str], expected: &str| {
        let mut c = command(&dir.0);
        if let Some(text) = file {
            std::fs::write(dir.0.join("bad.toml"), text).unwrap();
            c.args(["serve", "--config", "bad.toml"]);
        } else {
            c.arg("serve");
        }
        let out = c.args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(2), "{expected}: {err}");
        assert!(err.contains(expected), "wanted `{expected}` in: {err}");
    };
    refuse(
        Some("lisen = \"127.0.0.1:1\""),
        &[],
        "unknown option `lisen`; the options are: listen",
    );
    refuse(
        Some("agent-rate = -1"),
        &[],
        "--agent-rate must be a number above 0",
    );
    refuse(
        Some("roles = [\"wallet\", \"cashier\"]"),
        &[],
        "invalid value 'cashier' for '--roles",
    );
    refuse(
        None,
        &["--request-timeout", "0"],
        "--request-timeout must be at least 1 second",
    );
    refuse(
        None,
        &["--status-cache", "5000"],
        "--status-cache must be 0 to 3600 seconds",
    );
    refuse(
        None,
        &["--roles", "wallet", "--trust-merchant", "x.json"],
        "add verifier to --roles",
    );
    refuse(
        None,
        &["--trust-merchant", "missing.json"],
        "--trust-merchant missing.json: cannot read it",
    );
    refuse(
        None,
        &["--listen", "127.0.0.1:99999"],
        "--listen 127.0.0.1:99999",
    );
    refuse(
        None,
        &["--trust-issuer", "http://wallet.example/jwks"],
        "--trust-issuer: JWKS URL `http://wallet.example/jwks` must be https",
    );
    refuse(
        None,
        &["--jwks-refresh", "5"],
        "--jwks-refresh must be 30 to 86400 seconds",
    );
    // Nobody listens on port 9: a JWKS URL that cannot be fetched at start-up stops it.
    refuse(
        None,
        &["--trust-merchant", "http://127.0.0.1:9/jwks"],
        "--trust-merchant: the JWKS at http://127.0.0.1:9/jwks cannot be used: unreachable",
    );
    let jwks = jwks_server(vec![(200, r#"{"keys": []}"#.to_owned())]);
    refuse(
        None,
        &["--trust-issuer", &jwks],
        &format!("--trust-issuer {jwks}: the JWKS at {jwks} holds no P-256 key"),
    );
    let jwks = jwks_server(vec![(404, String::new())]);
    refuse(
        None,
        &["--trust-issuer-cnf-only", &jwks],
        "cannot be used: answered HTTP 404",
    );
}

/// A loopback server answering its requests in turn with `answers` (status, body), then
/// repeating the last; returns its URL.
fn jwks_server(answers: Vec<(u16, String)>) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/jwks", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut answers = answers.into_iter().peekable();
        let mut last = (500, String::new());
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                line.clear();
            }
            if let Some(answer) = answers.next() {
                last = answer;
            }
            let (status, body) = &last;
            let mut stream = stream;
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    url
}

#[test]
fn keys_at_a_jwks_url_are_fetched_at_start_up() {
    let dir = TempDir::new("jwks");
    let port = support::free_port();
    let shop = ap2_mandate::jose::SigningKey::generate(Some("shop-1".into())).unwrap();
    let other = ap2_mandate::jose::SigningKey::generate(Some("shop-2".into())).unwrap();
    let doc = serde_json::json!({"keys": [shop.public().to_value(), other.public().to_value()]});
    let jwks = jwks_server(vec![(200, doc.to_string())]);
    let mut c = command(&dir.0);
    c.args([
        "serve",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--trust-merchant",
        &jwks,
    ]);
    let (mut child, banner) = start(c, port);
    assert!(
        banner.contains(&format!(
            "trusts 2 merchant checkout key(s) (some from {jwks})"
        )),
        "{banner}"
    );
    terminate(&child);
    assert!(child.wait().unwrap().success());
}

#[test]
fn a_stop_signal_lets_the_request_in_flight_finish() {
    let dir = TempDir::new("stop");
    let port = support::free_port();
    let mut c = command(&dir.0);
    c.args(["serve", "--listen", &format!("127.0.0.1:{port}")]);
    let (mut child, _) = start(c, port);

    // Half a request is on the wire when the signal arrives; the rest follows.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n").unwrap();
    s.flush().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    terminate(&child);
    // No new connection is accepted once stopping...
    let signalled = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_ok() {
        assert!(
            signalled.elapsed() < Duration::from_secs(10),
            "still accepting 10 s after the stop signal"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // ...but the request in flight gets its answer.
    write!(s, "Connection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("ok"), "{text}");
    assert!(child.wait().unwrap().success());
}
