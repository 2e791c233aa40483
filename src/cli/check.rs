//! `fieldseal check`: validate a configuration and print what it compiled to.

use std::path::Path;
use std::process::ExitCode;

use crate::config::{self, Settings};

use super::exit;

pub fn check(path: &Path) -> ExitCode {
    match config::load(path) {
        Ok(settings) => {
            print!("{}", describe(&settings));
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for p in &errors.0 {
                eprintln!("error: {p}");
            }
            eprintln!("{} problem(s) in {}", errors.0.len(), path.display());
            ExitCode::from(exit::CHECK_FAILED)
        }
    }
}

/// The compiled configuration as `check` prints it.
pub fn describe(s: &Settings) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "configuration {} is valid", s.source.display());
    let _ = writeln!(
        out,
        "listen {} (TLS 1.3{}) -> upstream {}; admin http://{}",
        s.listen,
        if s.mtls {
            ", client certificates required"
        } else {
            ""
        },
        s.upstream,
        s.admin
    );
    for w in &s.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    if let crate::config::ReplayStoreSettings::Redis(r) = &s.replay {
        let _ = writeln!(
            out,
            "replay store: Redis {} (keys {}jti:…, timeout {}{}); this process's memory while it does not answer, max_age routes refusing",
            r.url,
            r.prefix,
            humantime::format_duration(r.timeout),
            if r.password.is_some() { ", password from file" } else { "" }
        );
    }
    if let (Some(path), Some(ring)) = (&s.keys.keyring, &s.keys.ring) {
        // Where its KEK came from, never a value (a command by its program alone).
        let _ = writeln!(
            out,
            "keyring {}: primary {}, {}",
            path.display(),
            ring.primary().id,
            match &s.keys.keyring_kek {
                Some(kek) => format!("wrapped, opened with {kek}"),
                None => "plain (not wrapped)".to_string(),
            }
        );
    }
    if let Some(client) = &s.keys.client {
        // Public ids only: what clients will see in the JWKS, in that order.
        let _ = writeln!(
            out,
            "client keys (JWKS at {}):",
            crate::proxy::well_known::JWKS_PATH
        );
        for k in client.rsa_keys() {
            let _ = writeln!(out, "  RSA-{} kid {}", k.bits, k.kid);
        }
        for k in client.hpke_keys() {
            let kem = match k.kem() {
                crate::crypto::hpke::KemKind::X25519 => "X25519",
                crate::crypto::hpke::KemKind::XWing => "X-Wing, post-quantum",
            };
            let alg = k.kem().published_suite().alg();
            let _ = writeln!(out, "  {kem} (HPKE, {alg}) kid {}", k.kid());
        }
        if let Some(p) = &s.keys.public_key_path {
            let _ = writeln!(out, "  seed-compatible public key at {p}");
        }
    }
    if !s.fields.is_empty() {
        let _ = writeln!(
            out,
            "fields (every JSON body of every route without `fields: false`; a route's own rules win on the nodes they select):"
        );
        for (i, entry) in s.fields.entries.iter().enumerate() {
            let _ = writeln!(out, "  fields.{i} {entry}");
        }
    }
    if let Some(g) = &s.guard {
        let names: Vec<&str> = g.detectors.iter().map(|d| d.name()).collect();
        let _ = writeln!(
            out,
            "guard: {} on every JSON answer, mode {}",
            names.join(", "),
            match g.mode {
                crate::guard::Mode::Observe => "observe (count and log)",
                crate::guard::Mode::Block => "block (502 sensitive_data_detected)",
            }
        );
    }
    let _ = writeln!(
        out,
        "selectors that never match live traffic stay at 0 in fieldseal_selector_matches_total{{route,selector}}"
    );
    let _ = writeln!(out, "routes ({}, first match wins):", s.routes.len());
    for (i, r) in s.routes.iter().enumerate() {
        // Numbered as in error messages and config keys (`routes.0`).
        let _ = writeln!(out, "  routes.{i} {} {} {}", r.name, r.methods, r.path);
        let rules = r.rules.describe();
        if rules.is_empty() {
            let _ = writeln!(out, "       pass-through (bodies stream untouched)");
        }
        for rule in rules {
            let _ = writeln!(out, "       {rule}");
        }
        let names: Vec<&str> = r.headers.names().collect();
        let _ = writeln!(out, "       headers: {}", names.join(", "));
    }
    if s.fields.is_empty() {
        let _ = writeln!(out, "  unmatched requests: pass-through");
    } else {
        let _ = writeln!(out, "  unmatched requests: the field policy alone");
    }
    out
}
