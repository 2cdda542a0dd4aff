//! An independent OAuth client (Python: authlib and joserfc) drives the whole flow against a
//! real `ap2-mandate serve` over loopback HTTP: sign-in and consent, code redemption with
//! private_key_jwt and DPoP, token verification against our JWKS, the protected resource, token
//! exchange to a sub-agent, a refused widening, introspection and revocation.
//!
//! The interpreter is `AP2_INTEROP_PYTHON` (a virtual environment with
//! `tests/interop/requirements.txt`; `.ci/run` makes one). Without it the test says it skipped,
//! unless `AP2_REQUIRE_INTEROP=1`, when it fails.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ap2_mandate::jose::SigningKey;
use serde_json::{json, Value};

const USERNAME: &str = "alice";
const PASSWORD: &str = "a long password 123";
const SCOPES: &[&str] = &["mandates:request", "payments:present"];

/// Variables that would point the binary somewhere other than the test's own data directory.
const STORE_VARIABLES: &[&str] = &[
    "AP2_DATA_DIR",
    "AP2_DATABASE_URL",
    "AP2_DATABASE_SCHEMA",
    "AP2_ISSUER",
    "AP2_EXTERNAL_ISSUERS",
    "AP2_BIND",
];

fn bin() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ap2-mandate"));
    for name in STORE_VARIABLES {
        command.env_remove(name);
    }
    command
}

/// A directory of its own under the system's temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let path = std::env::temp_dir().join(format!("ap2-interop-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).expect("create the data directory");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The running server, stopped when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port nothing listens on right now.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}

/// Runs the CLI with `stdin` as standard input and returns its standard output as JSON.
fn cli(args: &[&str], stdin: &str) -> Value {
    let mut child = bin()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ap2-mandate");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait for ap2-mandate");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "ap2-mandate {args:?} failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{args:?} printed {stdout:?}: {e}"))
}

/// Whether `GET /healthz` answers 200.
fn healthy(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request =
        format!("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200")
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Registers an agent with a fresh key; returns its id and its private JWK.
fn add_agent(dir: &Path, name: &str, max_depth: u32) -> (String, String) {
    let key = SigningKey::generate(Some(format!("{name}-key-1"))).expect("generate a key");
    let jwks_file = dir.join(format!("{name}.jwks.json"));
    let jwks = json!({"keys": [key.public().to_value()]});
    std::fs::write(&jwks_file, jwks.to_string()).expect("write the JWKS");
    let data_dir = dir.to_str().expect("UTF-8 path");
    let jwks_path = jwks_file.to_str().expect("UTF-8 path");
    let depth = max_depth.to_string();
    let mut args = vec![
        "agent",
        "--data-dir",
        data_dir,
        "add",
        "--name",
        name,
        "--owner",
        "ops@example.com",
        "--jwks",
        jwks_path,
        "--max-depth",
        &depth,
    ];
    for scope in SCOPES {
        args.extend(["--scope", scope]);
    }
    let agent = cli(&args, "");
    let id = agent["id"].as_str().expect("agent id").to_owned();
    let private = key.to_private_jwk().expect("private JWK");
    (id, private.as_str().to_owned())
}

#[test]
fn an_independent_oauth_client_drives_the_whole_flow() {
    let Some(python) = std::env::var_os("AP2_INTEROP_PYTHON") else {
        if std::env::var("AP2_REQUIRE_INTEROP").as_deref() == Ok("1") {
            panic!("AP2_REQUIRE_INTEROP=1 but AP2_INTEROP_PYTHON is not set");
        }
        eprintln!(
            "SKIPPED: set AP2_INTEROP_PYTHON to a Python with tests/interop/requirements.txt"
        );
        return;
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/oauth_flow.py");

    let dir = TempDir::new();
    let data_dir = dir.0.to_str().expect("UTF-8 path").to_owned();
    let user = cli(
        &["user", "--data-dir", &data_dir, "add", USERNAME],
        &format!("{PASSWORD}\n"),
    );
    let user_id = user["id"].as_str().expect("user id").to_owned();
    let (top_id, top_jwk) = add_agent(&dir.0, "top", 1);
    let (sub_id, sub_jwk) = add_agent(&dir.0, "sub", 0);

    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let log = dir.0.join("serve.log");
    let log_file = std::fs::File::create(&log).expect("create the server log");
    let mut server = Server(
        bin()
            .args([
                "serve",
                "--data-dir",
                &data_dir,
                "--bind",
                &format!("127.0.0.1:{port}"),
            ])
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log handle"))
            .stderr(log_file)
            .spawn()
            .expect("start ap2-mandate serve"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !healthy(port) {
        if let Ok(Some(status)) = server.0.try_wait() {
            panic!("the server exited ({status}):\n{}", read_log(&log));
        }
        assert!(
            Instant::now() < deadline,
            "the server did not answer /healthz in 20 s:\n{}",
            read_log(&log)
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let out_path = dir.0.join("python.out");
    let out_file = std::fs::File::create(&out_path).expect("create the client log");
    let mut client = Command::new(&python)
        .arg(&script)
        .env("AP2_BASE", &base)
        .env("AP2_CLIENT_ID", &top_id)
        .env("AP2_CLIENT_JWK", &top_jwk)
        .env("AP2_SUB_CLIENT_ID", &sub_id)
        .env("AP2_SUB_CLIENT_JWK", &sub_jwk)
        .env("AP2_USERNAME", USERNAME)
        .env("AP2_PASSWORD", PASSWORD)
        .env("AP2_USER_ID", &user_id)
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .stdout(out_file.try_clone().expect("log handle"))
        .stderr(out_file)
        .spawn()
        .unwrap_or_else(|e| panic!("run {}: {e}", Path::new(&python).display()));
    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(status) = client.try_wait().expect("wait for the client") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = client.kill();
            let _ = client.wait();
            panic!("the client ran past 180 s:\n{}", read_log(&out_path));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = read_log(&out_path);
    assert!(
        status.success(),
        "the independent client failed ({status}):\n{output}\n--- server log ---\n{}",
        read_log(&log)
    );
    println!("{output}");
    assert!(output.contains("interop flow passed"), "{output}");
    drop(server);
}
