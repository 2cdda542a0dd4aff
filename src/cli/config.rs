//! `--config FILE`: a TOML file of options, read before the command line is parsed.
//!
//! Each key is an option's long name (`listen`, `trust-merchant`, …; `_` may stand for `-`).
//! The file fills in only what neither the command line nor the environment gives: a flag wins
//! over its `AP2_…` variable, which wins over the file, which wins over the default. A key the
//! file does not know, or a value of the wrong kind, stops start-up with a message naming the
//! key and the fix.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context as _};

/// Every option a configuration file may set, with the environment variable it stands for and
/// whether it takes several values.
pub const OPTIONS: &[(&str, &str, bool)] = &[
    ("listen", "AP2_LISTEN", false),
    ("roles", "AP2_ROLES", true),
    ("data-dir", "AP2_DATA_DIR", false),
    ("database-url", "AP2_DATABASE_URL", false),
    ("schema", "AP2_DATABASE_SCHEMA", false),
    ("issuer", "AP2_ISSUER", false),
    ("external-issuers", "AP2_EXTERNAL_ISSUERS", false),
    ("token-lifetime", "AP2_TOKEN_LIFETIME", false),
    ("max-token-lifetime", "AP2_MAX_TOKEN_LIFETIME", false),
    ("log", "AP2_LOG", false),
    ("max-in-flight", "AP2_MAX_IN_FLIGHT", false),
    ("request-timeout", "AP2_REQUEST_TIMEOUT", false),
    ("agent-rate", "AP2_AGENT_RATE", false),
    ("agent-burst", "AP2_AGENT_BURST", false),
    ("trust-issuer", "AP2_TRUST_ISSUERS", true),
    ("trust-issuer-cnf-only", "AP2_TRUST_ISSUERS_CNF_ONLY", true),
    ("trust-merchant", "AP2_TRUST_MERCHANTS", true),
    ("jwks-refresh", "AP2_JWKS_REFRESH", false),
    ("verifier-audience", "AP2_VERIFIER_AUDIENCE", false),
    ("allowed-currency", "AP2_ALLOWED_CURRENCIES", true),
    ("max-payment", "AP2_MAX_PAYMENTS", true),
    ("status-cache", "AP2_STATUS_CACHE", false),
    ("tls-ca-file", "AP2_TLS_CA_FILE", false),
];

/// The configuration file named by `--config` (or `AP2_CONFIG`), if any.
pub fn config_path(args: &[OsString]) -> Option<PathBuf> {
    let mut args = args.iter().skip(1);
    while let Some(arg) = args.next() {
        let text = arg.to_string_lossy();
        if text == "--" {
            break;
        }
        if text == "--config" {
            return args.next().map(PathBuf::from);
        }
        if let Some(path) = text.strip_prefix("--config=") {
            return Some(PathBuf::from(path));
        }
    }
    std::env::var_os("AP2_CONFIG").map(PathBuf::from)
}

/// Reads the file and sets the environment variable of every option it names that the
/// environment does not already set. Runs before any thread starts.
pub fn apply(path: &Path) -> anyhow::Result<Vec<&'static str>> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "--config {}: cannot read it; give the path of a TOML file",
            path.display()
        )
    })?;
    let values = settings(&text).map_err(|e| anyhow!("--config {}: {e}", path.display()))?;
    let mut applied = Vec::new();
    for (name, variable, value) in values {
        if std::env::var_os(variable).is_none() {
            std::env::set_var(variable, value);
            applied.push(name);
        }
    }
    Ok(applied)
}

/// The options a file sets: name, environment variable, value as the variable would hold it.
fn settings(text: &str) -> anyhow::Result<Vec<(&'static str, &'static str, String)>> {
    let table: toml::Table = toml::from_str(text).map_err(|e| {
        anyhow!(
            "not valid TOML ({}); write one `option = value` per line",
            e.message()
        )
    })?;
    let mut out = Vec::new();
    for (key, value) in &table {
        let wanted = key.replace('_', "-");
        let Some(&(name, variable, many)) = OPTIONS.iter().find(|(n, _, _)| *n == wanted) else {
            let known: Vec<&str> = OPTIONS.iter().map(|(n, _, _)| *n).collect();
            bail!(
                "unknown option `{key}`; the options are: {}",
                known.join(", ")
            );
        };
        let scalar = |v: &toml::Value| -> anyhow::Result<String> {
            let text = match v {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                _ => bail!("option `{key}` takes a string or a number"),
            };
            Ok(text)
        };
        let text = match (value, many) {
            (toml::Value::Array(items), true) => items
                .iter()
                .map(scalar)
                .collect::<anyhow::Result<Vec<_>>>()?
                .join(","),
            (toml::Value::Array(_), false) => {
                bail!("option `{key}` takes one value, not a list")
            }
            (other, _) => scalar(other)?,
        };
        out.push((name, variable, text));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_maps_to_the_options_variables() {
        let got = settings(
            "listen = \"0.0.0.0:9000\"\nroles = [\"wallet\", \"verifier\"]\nagent_rate = 2.5\n\
             request-timeout = 10\nmax-payment = [\"500.00 USD\"]\n",
        )
        .unwrap();
        let find = |n: &str| {
            got.iter()
                .find(|(name, _, _)| *name == n)
                .unwrap()
                .2
                .clone()
        };
        assert_eq!(find("listen"), "0.0.0.0:9000");
        assert_eq!(find("roles"), "wallet,verifier");
        assert_eq!(find("agent-rate"), "2.5");
        assert_eq!(find("request-timeout"), "10");
        assert_eq!(find("max-payment"), "500.00 USD");
    }

    #[test]
    fn every_file_option_is_a_serve_flag_with_that_variable_and_back() {
        let cli = <crate::cli::Cli as clap::CommandFactory>::command();
        let serve = cli.find_subcommand("serve").unwrap();
        for (name, variable, _) in OPTIONS {
            let arg = serve
                .get_arguments()
                .find(|a| a.get_long() == Some(*name))
                .unwrap_or_else(|| panic!("serve has no --{name}"));
            assert_eq!(
                arg.get_env().and_then(|e| e.to_str()),
                Some(*variable),
                "--{name}"
            );
        }
        // And every serve option with a variable can be written in the file.
        for arg in serve.get_arguments() {
            if let (Some(long), Some(_)) = (arg.get_long(), arg.get_env()) {
                assert!(
                    long == "config" || OPTIONS.iter().any(|(n, _, _)| *n == long),
                    "--{long} cannot be set in a configuration file"
                );
            }
        }
    }

    #[test]
    fn mistakes_name_the_option_and_the_fix() {
        let err = |text: &str| settings(text).unwrap_err().to_string();
        assert!(err("lisen = \"x\"").contains("unknown option `lisen`; the options are: listen"));
        assert!(err("listen = [\"a\", \"b\"]").contains("`listen` takes one value"));
        assert!(err("listen = { a = 1 }").contains("`listen` takes a string or a number"));
        assert!(err("listen = ").contains("not valid TOML"));
    }
}
