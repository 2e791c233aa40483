//! Configuration loading and compilation (`config::load`, contract §4) from arbitrary YAML-ish
//! text, with the files it names either absent or present: a private fixture directory holds a
//! valid certificate, TLS key, keyring (plain and KEK-wrapped), RSA and X25519 keys, a KEK file
//! and a world-readable key, under fixed names the seeds use relative to the config file
//! (`cert.pem`, `key.pem`, `ca.pem`, `keyring.json`, `keyring-wrapped.json`, `kek.bin`,
//! `rsa.pem`, `x25519.pem`, `passphrase.txt`, `audit.key`, `open.pem`).
//!
//! Checks, besides "never panics": a refused config lists at least one problem, each with an
//! origin and a message, and no message quotes a secret from the fixture files.
//!
//! Inputs whose strings name an existing file that is not a small regular file (devices,
//! FIFOs, `/proc`, …) are skipped: reading `/dev/zero` as a certificate would hang the fuzzer,
//! and such a config is the operator's own doing.
#![no_main]

use std::path::{Path, PathBuf};

use fieldseal_fuzz::config_fixture as fixture;
use figment::providers::{Format, Yaml};
use figment::value::Value;
use libfuzzer_sys::fuzz_target;

/// Whether `s`, read as a path the way the compiler resolves it, is safe to read.
fn safe_path(dir: &Path, s: &str) -> bool {
    if s.is_empty() || s.contains('\0') || s.len() > 4096 {
        return true;
    }
    let p = if Path::new(s).is_absolute() {
        PathBuf::from(s)
    } else {
        dir.join(s)
    };
    let Ok(real) = p.canonicalize() else {
        return true; // absent: the compiler reports it
    };
    if real.starts_with(dir) {
        return true;
    }
    if ["/proc", "/sys", "/dev", "/run"]
        .iter()
        .any(|d| real.starts_with(d))
    {
        return false;
    }
    match std::fs::metadata(&real) {
        Ok(m) => m.is_dir() || (m.is_file() && m.len() <= 1 << 20),
        Err(_) => true,
    }
}

fn all_safe(dir: &Path, v: &Value) -> bool {
    match v {
        Value::String(_, s) => safe_path(dir, s),
        Value::Dict(_, d) => d.iter().all(|(k, v)| safe_path(dir, k) && all_safe(dir, v)),
        Value::Array(_, a) => a.iter().all(|v| all_safe(dir, v)),
        _ => true,
    }
}

fuzz_target!(|data: &[u8]| {
    let fx = fixture();
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(v) = figment::Figment::from(Yaml::string(text)).extract::<Value>() {
        if !all_safe(&fx.dir, &v) {
            return;
        }
    }
    std::fs::write(&fx.config, data).expect("write config");
    match fieldseal::config::load(&fx.config) {
        Ok(settings) => {
            for route in settings.routes.iter() {
                let _ = route.rules.describe();
                let _ = (route.methods.to_string(), route.path.to_string());
            }
            for w in &settings.warnings {
                let _ = w.to_string();
            }
        }
        Err(errors) => {
            assert!(!errors.0.is_empty(), "a refused config names no problem");
            let shown = errors.to_string();
            for p in &errors.0 {
                assert!(!p.origin.is_empty(), "a problem without an origin: {p:?}");
                assert!(!p.message.is_empty(), "a problem without a message: {p:?}");
            }
            for secret in &fx.secrets {
                if !text.contains(secret.as_str()) {
                    assert!(
                        !shown.contains(secret.as_str()),
                        "an error message quotes a secret"
                    );
                }
            }
        }
    }
});
