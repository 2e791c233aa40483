//! Callgrind harness: the operations of fieldseal's benches/transform.rs ("transform" group),
//! one case per process, N iterations. Usage: harness CASE [N]
//! Cases: small_seal small_value small_apply large_seal serde_small serde_large open_small
use fieldseal::config::settings::RequestRules;
use fieldseal::transform::rules::{
    apply_response, rewrite_request_body, rewrite_response_body, Openers,
};
use serde_json::Value;
use std::hint::black_box;

#[path = "../../common/mod.rs"]
mod common;
use common::{keyring, large, rules, selectors, small};

const SMALL_PATHS: &[&str] = &common::SMALL_FIELDS;
const LARGE_PATHS: &[&str] = &common::LARGE_FIELDS;

fn count_tokens(out: &[u8]) -> usize {
    out.windows(5).filter(|w| w == b"\"fs1.").count()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let case = args.get(1).map(String::as_str).unwrap_or("");
    let default_n = if case.starts_with("large") || case.ends_with("large") {
        5
    } else {
        2000
    };
    let n: usize = args.get(2).map(|s| s.parse().unwrap()).unwrap_or(default_n);
    let ring = keyring();

    match case {
        // rewrite_response_body on the 1 KiB record (byte-level engine), 3 fields sealed.
        "small_seal" | "large_seal" => {
            let (bytes, rules, expect) = if case == "small_seal" {
                (small(), rules(SMALL_PATHS), 3)
            } else {
                (large(), rules(LARGE_PATHS), 1000)
            };
            // Sanity check, outside the loop (same in every run, so it cancels).
            let out = rewrite_response_body(&bytes, &rules, Some(&ring), &mut Vec::new())
                .unwrap()
                .unwrap();
            assert_eq!(count_tokens(&out), expect);
            for _ in 0..n {
                let mut ops = Vec::new();
                let out = rewrite_response_body(black_box(&bytes), &rules, Some(&ring), &mut ops)
                    .unwrap()
                    .unwrap();
                black_box((out, ops));
            }
        }
        // The Value engine as the bench runs it: parse, apply_response, serialise.
        "small_value" => {
            let bytes = small();
            let rules = rules(SMALL_PATHS);
            for _ in 0..n {
                let mut doc: Value = serde_json::from_slice(black_box(&bytes)).unwrap();
                let ops = apply_response(&mut doc, &rules, Some(&ring)).unwrap();
                black_box((serde_json::to_vec(&doc).unwrap(), ops));
            }
        }
        // apply_response alone, on a clone of a document parsed once (clone + apply).
        "small_apply" => {
            let parsed: Value = serde_json::from_slice(&small()).unwrap();
            let rules = rules(SMALL_PATHS);
            for _ in 0..n {
                let mut doc = black_box(&parsed).clone();
                let ops = apply_response(&mut doc, &rules, Some(&ring)).unwrap();
                assert_eq!(ops.len(), 3);
                black_box((doc, ops));
            }
        }
        // The floor: parse + serialise.
        "serde_small" | "serde_large" => {
            let bytes = if case == "serde_small" {
                small()
            } else {
                large()
            };
            for _ in 0..n {
                let doc: Value = serde_json::from_slice(black_box(&bytes)).unwrap();
                black_box(serde_json::to_vec(&doc).unwrap());
            }
        }
        // Seal once, then open the sealed body N times.
        "open_small" => {
            let bytes = small();
            let sealed =
                rewrite_response_body(&bytes, &rules(SMALL_PATHS), Some(&ring), &mut Vec::new())
                    .unwrap()
                    .unwrap();
            assert_eq!(count_tokens(&sealed), 3);
            let req = RequestRules::new(selectors(SMALL_PATHS), false, None);
            let openers = Openers::fs1(&ring);
            let opened = rewrite_request_body(&sealed, &req, &openers, &mut Vec::new())
                .unwrap()
                .unwrap();
            assert_eq!(
                serde_json::from_slice::<Value>(&opened).unwrap(),
                serde_json::from_slice::<Value>(&bytes).unwrap()
            );
            for _ in 0..n {
                let mut ops = Vec::new();
                let out = rewrite_request_body(black_box(&sealed), &req, &openers, &mut ops)
                    .unwrap()
                    .unwrap();
                black_box((out, ops));
            }
        }
        other => {
            eprintln!("unknown case {other:?}; usage: harness CASE [N]");
            std::process::exit(2);
        }
    }
}
