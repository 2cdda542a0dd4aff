//! What the benchmarks share: the clock and numbers from the environment.

#![allow(dead_code)]

/// Now, Unix seconds.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// A whole number from the environment variable `name`, or `default` when it is unset or empty.
pub fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(text) if !text.is_empty() => text
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a whole number")),
        _ => default,
    }
}
