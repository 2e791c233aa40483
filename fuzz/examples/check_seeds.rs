//! Prints what each hand-made seed does (opens, or why not; configs compile, or their first
//! problem), to check the seeds are the valid inputs they claim to be. Run from `fuzz/`:
//!
//!     cargo run --example check_seeds

use std::path::Path;

use fieldseal::crypto::{envelope, jwe, token};
use fieldseal_fuzz::*;

fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("seed-")
        })
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

fn main() {
    for (name, data) in seeds("fs1_token") {
        let text = String::from_utf8_lossy(&data);
        let (ctx, tok) = text.split_once('\n').unwrap_or(("ssn", &text));
        println!(
            "fs1_token/{name}: {:?}",
            token::open(keyring(), ctx, tok).map(|v| v.to_string())
        );
    }
    for (name, data) in seeds("jwe_compact") {
        let text = String::from_utf8_lossy(&data);
        println!(
            "jwe_compact/{name}: {:?}",
            jwe::open(&text, client_keys()).map(|o| o.value.to_string())
        );
    }
    for (name, data) in seeds("envelope") {
        println!(
            "envelope/{name}: {:?}",
            envelope::open_request(&data, client_keys())
                .map(|o| String::from_utf8_lossy(&o.plaintext).into_owned())
        );
    }
    let identity: age::x25519::Identity = AGE_IDENTITY.parse().unwrap();
    for (name, data) in seeds("age_file") {
        let ids: Vec<Box<dyn age::Identity>> = vec![Box::new(identity.clone())];
        let mut out = Vec::new();
        println!(
            "age_file/{name}: {}",
            match fieldseal::file::open(&ids, &mut &data[..], &mut out) {
                Ok(n) => format!("opens, {n} bytes"),
                Err(e) => e.to_string(),
            }
        );
    }
    let fx = config_fixture();
    for (name, data) in seeds("config_compile") {
        std::fs::write(&fx.config, &data).unwrap();
        match fieldseal::config::load(&fx.config) {
            Ok(s) => println!("config_compile/{name}: OK, {} routes", s.routes.len()),
            Err(e) => println!(
                "config_compile/{name}: {} problems, first: {}",
                e.0.len(),
                e.0[0]
            ),
        }
    }
}
