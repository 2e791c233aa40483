//! The guard (contract §9): the safety net for the field nobody declared. Built-in detectors
//! look for sensitive data in JSON response bodies after every transform, on every route;
//! `observe` counts and logs where (route, JSON path, detector — never the value), `block`
//! withholds the response.
//!
//! Adding a detector is one [`Detector`] variant, its name in [`Detector::ALL`], and one arm
//! in [`Detector::finds_in`] (and [`Detector::finds_in_number`] if numbers can carry it).
//!
//! Cost: a body is first checked for anything any enabled detector could match, on its raw
//! bytes ([`Guard::may_detect`]: an `@`, a digit-dash shape, a run of digits). Most bodies
//! stop there. Only a body that passes is parsed and walked for the paths of its detections.
//! JSON escapes could spell a match the raw bytes do not show, so a body with a `\u` escape is
//! always walked.

use serde_json::Value;

use crate::crypto::token::looks_like_token;
use crate::transform::path::{self, Step};

/// A built-in detector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Detector {
    /// US Social Security numbers written `ddd-dd-dddd`.
    Ssn,
    /// Payment card numbers: 13–19 digits (single spaces or dashes between groups allowed)
    /// that pass the Luhn check; in strings and as JSON numbers.
    Card,
    /// Email addresses (`local@domain.tld`).
    Email,
}

/// Deepest nesting the walk follows (serde_json refuses deeper documents anyway).
const MAX_DEPTH: usize = 128;

/// Card numbers have 13 to 19 digits (ISO/IEC 7812).
const CARD_DIGITS: std::ops::RangeInclusive<usize> = 13..=19;

impl Detector {
    /// Every detector, by its configuration name.
    pub const ALL: [(&'static str, Detector); 3] = [
        ("ssn", Detector::Ssn),
        ("card", Detector::Card),
        ("email", Detector::Email),
    ];

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, d)| *d)
    }

    /// The name in configuration, metrics and logs.
    pub fn name(self) -> &'static str {
        match self {
            Detector::Ssn => "ssn",
            Detector::Card => "card",
            Detector::Email => "email",
        }
    }

    /// Whether `text` contains a match anywhere (free text included).
    pub fn finds_in(self, text: &str) -> bool {
        let bytes = text.as_bytes();
        match self {
            Detector::Ssn => has_ssn(bytes),
            Detector::Card => has_card(bytes),
            Detector::Email => has_email(bytes),
        }
    }

    /// Whether a JSON number is a match (only cards are written as numbers).
    pub fn finds_in_number(self, n: &serde_json::Number) -> bool {
        match self {
            Detector::Card => n
                .as_u64()
                .is_some_and(|v| has_card(v.to_string().as_bytes())),
            Detector::Ssn | Detector::Email => false,
        }
    }

    /// A cheap check over a body's raw bytes: `false` means this detector cannot match any
    /// string or number in it (escapes aside, which the caller handles). It may say `true`
    /// where the exact check would not (that only costs a parse).
    fn may_match_raw(self, raw: &[u8]) -> bool {
        match self {
            Detector::Ssn => has_ssn(raw),
            Detector::Card => may_have_card(raw),
            Detector::Email => memchr::memchr(b'@', raw).is_some(),
        }
    }
}

/// What the guard does with a detection.
pub use crate::config::raw::GuardMode as Mode;

/// The compiled `guard` section.
#[derive(Debug, Clone)]
pub struct Guard {
    pub detectors: Vec<Detector>,
    pub mode: Mode,
}

/// One detection: where, and by which detector. Never the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detection {
    /// RFC 9535 Normalized Path of the string or number.
    pub path: String,
    pub detector: Detector,
}

/// What the guard found in one body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Findings {
    /// The first [`MAX_REPORTED`] detections, in document order.
    pub detections: Vec<Detection>,
    /// Detections per detector, all of them.
    pub counts: Vec<(Detector, u64)>,
    /// Set when a body was too large to inspect and went out uninspected (`observe` only).
    pub unscanned: bool,
}

impl Findings {
    pub fn total(&self) -> u64 {
        self.counts.iter().map(|(_, n)| n).sum()
    }

    fn record(&mut self, steps: &[Step], detector: Detector) {
        match self.counts.iter_mut().find(|(d, _)| *d == detector) {
            Some((_, n)) => *n += 1,
            None => self.counts.push((detector, 1)),
        }
        if self.detections.len() < MAX_REPORTED {
            self.detections.push(Detection {
                path: path::locate(steps).path,
                detector,
            });
        }
    }
}

/// The most detections reported for one body: enough to find the fields, bounded so a huge
/// list of emails does not make a huge log line.
pub const MAX_REPORTED: usize = crate::limits::GUARD_MAX_REPORTED;

/// Lets at most [`crate::limits::GUARD_LOG_LINES_PER_SECOND`] log lines through each second,
/// counting the ones it holds back (lock-free: two atomics, racy only in which request of a
/// second gets a line).
#[derive(Debug, Default)]
pub struct LogLimiter {
    /// The current second (Unix time) and the lines let through in it, packed: second << 16 | n.
    window: std::sync::atomic::AtomicU64,
    suppressed: std::sync::atomic::AtomicU64,
}

impl LogLimiter {
    /// `Some(held back since the last line)` when a line may be written now.
    pub fn admit(&self, now_secs: u64) -> Option<u64> {
        use std::sync::atomic::Ordering::Relaxed;
        let current = self.window.load(Relaxed);
        let (second, lines) = (current >> 16, current & 0xffff);
        let next = if second == now_secs {
            if lines >= crate::limits::GUARD_LOG_LINES_PER_SECOND {
                self.suppressed.fetch_add(1, Relaxed);
                return None;
            }
            current + 1
        } else {
            (now_secs << 16) | 1
        };
        if self
            .window
            .compare_exchange(current, next, Relaxed, Relaxed)
            .is_err()
        {
            self.suppressed.fetch_add(1, Relaxed);
            return None;
        }
        Some(self.suppressed.swap(0, Relaxed))
    }
}

impl Guard {
    /// Whether the raw body could hold anything a detector matches.
    pub fn may_detect(&self, raw: &[u8]) -> bool {
        contains_escape(raw) || self.detectors.iter().any(|d| d.may_match_raw(raw))
    }

    /// Every detection in `doc`: the first [`MAX_REPORTED`] in document order, and counts.
    pub fn scan(&self, doc: &Value) -> Findings {
        self.scan_showing(doc, &[])
    }

    /// [`Self::scan`], leaving out the nodes at `shown` (Normalized Paths of fields a view
    /// showed their caller as the app sent them: declared, so not a leak).
    pub fn scan_showing(&self, doc: &Value, shown: &[&str]) -> Findings {
        let mut findings = Findings::default();
        let mut steps = Vec::new();
        self.walk(doc, &mut steps, shown, &mut findings);
        findings
    }

    /// Scans a JSON body's bytes. A body labelled JSON that does not parse (a slice, a
    /// truncated answer) is searched as text, and what is found is reported at `$`: the guard
    /// cannot be walked around by breaking the JSON.
    pub fn scan_bytes(&self, raw: &[u8]) -> Findings {
        self.scan_bytes_showing(raw, &[])
    }

    /// [`Self::scan_bytes`] leaving out the fields a view showed (see [`Self::scan_showing`]).
    pub fn scan_bytes_showing(&self, raw: &[u8], shown: &[&str]) -> Findings {
        if !self.may_detect(raw) {
            return Findings::default();
        }
        match serde_json::from_slice::<Value>(raw) {
            Ok(doc) => self.scan_showing(&doc, shown),
            Err(_) => {
                let text = String::from_utf8_lossy(raw);
                let mut findings = Findings::default();
                for d in self.detectors.iter().filter(|d| d.finds_in(&text)) {
                    findings.record(&[], *d);
                }
                findings
            }
        }
    }

    fn walk(&self, value: &Value, steps: &mut Vec<Step>, shown: &[&str], findings: &mut Findings) {
        // Only answers with fields shown by a view pay for spelling each path.
        if !shown.is_empty() && shown.contains(&path::locate(steps).path.as_str()) {
            return;
        }
        match value {
            Value::String(s) => {
                if is_exempt(s) {
                    return;
                }
                for d in &self.detectors {
                    if d.finds_in(s) {
                        findings.record(steps, *d);
                    }
                }
            }
            Value::Number(n) => {
                for d in &self.detectors {
                    if d.finds_in_number(n) {
                        findings.record(steps, *d);
                    }
                }
            }
            Value::Array(items) if steps.len() < MAX_DEPTH => {
                for (i, item) in items.iter().enumerate() {
                    steps.push(Step::Index(i));
                    self.walk(item, steps, shown, findings);
                    steps.pop();
                }
            }
            Value::Object(members) if steps.len() < MAX_DEPTH => {
                for (name, item) in members {
                    steps.push(Step::Key(name.clone()));
                    self.walk(item, steps, shown, findings);
                    steps.pop();
                }
            }
            _ => {}
        }
    }
}

/// Tokens (`fs1`, JWE compact) and masks (`****6789`, and `a***@example.com` from
/// `mask_email`) are what protection looks like, not leaks.
fn is_exempt(s: &str) -> bool {
    looks_like_token(s) || s.starts_with('*') || looks_like_jwe(s) || is_masked_email(s)
}

/// `mask_email`'s shape: one character, then only stars, up to the `@` (`*` is a valid
/// local-part character, so the email detector alone would count it). A one-character local
/// part is not masked at all and stays a detection.
fn is_masked_email(s: &str) -> bool {
    s.rsplit_once('@').is_some_and(|(local, _)| {
        let mut rest = local.chars().skip(1).peekable();
        rest.peek().is_some() && rest.all(|c| c == '*')
    })
}

/// Five base64url parts separated by dots (RFC 7516 compact serialization).
fn looks_like_jwe(s: &str) -> bool {
    s.split('.').count() == 5
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn contains_escape(raw: &[u8]) -> bool {
    memchr::memmem::find(raw, b"\\u").is_some()
}

/// A run of at least 13 digits, single spaces or dashes between them allowed: where a card
/// number could be (the exact check, length and Luhn, runs on the strings themselves).
///
/// Most bytes of a body are not digits, so this skips: such a run spans at least 13 bytes of
/// digits and separators, so if the 13th byte from `i` is neither, no run can start before
/// it — the search jumps 13 bytes at a time through text (a byte-by-byte loop cost ~1.3 ns a
/// byte, more than the rest of the guard together).
fn may_have_card(b: &[u8]) -> bool {
    let part = |c: &u8| c.is_ascii_digit() || matches!(c, b' ' | b'-');
    let span = *CARD_DIGITS.start();
    let mut i = 0;
    while i + span <= b.len() {
        let last = i + span - 1;
        if !part(&b[last]) {
            i = last + 1;
            continue;
        }
        if let Some(k) = (i..last).rev().find(|&k| !part(&b[k])) {
            i = k + 1;
            continue;
        }
        let mut end = last + 1;
        while end < b.len() && part(&b[end]) {
            end += 1;
        }
        if digit_run_at_least(&b[i..end], span) {
            return true;
        }
        i = end + 1;
    }
    false
}

/// Whether `b` (digits and separators only) holds `n` digits in a row, single separators
/// between digits allowed.
fn digit_run_at_least(b: &[u8], n: usize) -> bool {
    let mut digits = 0;
    let mut after_separator = false;
    for &c in b {
        if c.is_ascii_digit() {
            digits += 1;
            after_separator = false;
            if digits >= n {
                return true;
            }
        } else if digits > 0 && !after_separator {
            after_separator = true;
        } else {
            digits = 0;
            after_separator = false;
        }
    }
    false
}

/// `ddd-dd-dddd` with no digit right before or after it. Only where a dash is can one start
/// three bytes earlier, so dashes are found with `memchr` (SIMD) and the shape checked there:
/// the same function serves the raw-body prefilter and the exact check on strings.
fn has_ssn(b: &[u8]) -> bool {
    const SHAPE: &[u8; 11] = b"ddd-dd-dddd";
    memchr::memchr_iter(b'-', b).any(|dash| {
        let Some(start) = dash.checked_sub(3) else {
            return false;
        };
        b.get(start..start + SHAPE.len()).is_some_and(|window| {
            window.iter().zip(SHAPE).all(|(c, s)| match s {
                b'd' => c.is_ascii_digit(),
                _ => c == s,
            })
        }) && (start == 0 || !b[start - 1].is_ascii_digit())
            && b.get(start + SHAPE.len())
                .is_none_or(|c| !c.is_ascii_digit())
    })
}

/// A card number: 13–19 digits, written together or in groups split by single spaces or
/// dashes, that passes the Luhn check, with no digit right before or after. In a longer run of
/// groups (`ref 12 4111 1111 1111 1111`), every stretch of whole groups is tried; a run of
/// more than 19 digits with no separator is an id or a timestamp, not a card.
fn has_card(b: &[u8]) -> bool {
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        // One run: groups of digits with single separators between them.
        let mut groups: Vec<&[u8]> = Vec::new();
        let mut j = i;
        let mut start = i;
        while j < b.len() {
            if b[j].is_ascii_digit() {
                j += 1;
            } else if matches!(b[j], b' ' | b'-') && b.get(j + 1).is_some_and(u8::is_ascii_digit) {
                groups.push(&b[start..j]);
                j += 1;
                start = j;
            } else {
                break;
            }
        }
        groups.push(&b[start..j]);
        if card_in_groups(&groups) {
            return true;
        }
        i = j.max(i + 1);
    }
    false
}

/// Linear in the run: a stretch stops growing past 19 digits, so a hostile run of single
/// digits (`1 1 1 1 …`) costs at most 19 steps per group.
fn card_in_groups(groups: &[&[u8]]) -> bool {
    let mut digits: Vec<u8> = Vec::with_capacity(*CARD_DIGITS.end());
    for first in 0..groups.len() {
        digits.clear();
        for group in &groups[first..] {
            if digits.len() + group.len() > *CARD_DIGITS.end() {
                break;
            }
            digits.extend(group.iter().map(|c| c - b'0'));
            if CARD_DIGITS.contains(&digits.len()) && luhn(&digits) {
                return true;
            }
        }
    }
    false
}

fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 {
                    x - 9
                } else {
                    x
                }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// `local@domain.tld`: a local part of letters, digits and `.!#$%&'*+/=?^_`{|}~-`, an `@`,
/// then dot-separated labels of letters, digits and `-`, the last one at least two letters.
fn has_email(b: &[u8]) -> bool {
    let local = |c: u8| c.is_ascii_alphanumeric() || b".!#$%&'*+/=?^_`{|}~-".contains(&c);
    let label = |c: u8| c.is_ascii_alphanumeric() || c == b'-';
    for (at, _) in b.iter().enumerate().filter(|(_, c)| **c == b'@') {
        if at == 0 || !local(b[at - 1]) {
            continue;
        }
        // The domain: labels separated by single dots.
        let mut end = at + 1;
        let mut labels = 0;
        let mut last_start = end;
        loop {
            let start = end;
            while end < b.len() && label(b[end]) {
                end += 1;
            }
            if end == start {
                break;
            }
            labels += 1;
            last_start = start;
            if end + 1 < b.len() && b[end] == b'.' && label(b[end + 1]) {
                end += 1;
            } else {
                break;
            }
        }
        let tld = &b[last_start..end];
        if labels >= 2 && tld.len() >= 2 && tld.iter().all(u8::is_ascii_alphabetic) {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn guard() -> Guard {
        Guard {
            detectors: Detector::ALL.iter().map(|(_, d)| *d).collect(),
            mode: Mode::Observe,
        }
    }

    #[test]
    fn ssn_shapes() {
        for (text, hit) in [
            ("123-45-6789", true),
            ("SSN on file: 123-45-6789.", true),
            ("1123-45-6789", false),
            ("123-45-67890", false),
            ("123-456-789", false),
            ("123456789", false),
            ("12-345-6789", false),
        ] {
            assert_eq!(Detector::Ssn.finds_in(text), hit, "{text}");
        }
    }

    #[test]
    fn card_numbers_must_pass_luhn() {
        for (text, hit) in [
            ("4111111111111111", true),
            ("4111 1111 1111 1111", true),
            ("4111-1111-1111-1111", true),
            ("card 5500005555555559 on file", true),
            ("378282246310005", true),       // 15-digit Amex
            ("4111111111111112", false),     // Luhn fails
            ("411111111111", false),         // 12 digits
            ("41111111111111111111", false), // 20 digits
            ("4111  1111 1111 1111", false), // double space splits the run
        ] {
            assert_eq!(Detector::Card.finds_in(text), hit, "{text}");
        }
        let n: serde_json::Number = serde_json::from_str("4111111111111111").unwrap();
        assert!(Detector::Card.finds_in_number(&n));
        let n: serde_json::Number = serde_json::from_str("4111111111111112").unwrap();
        assert!(!Detector::Card.finds_in_number(&n));
    }

    #[test]
    fn email_shapes() {
        for (text, hit) in [
            ("alice@example.com", true),
            ("write to bob.smith+tag@mail.example.co.uk today", true),
            ("@example.com", false),
            ("alice@", false),
            ("alice@localhost", false),
            ("alice@example.c", false),
            ("a@b.c0", false),
            ("user@[10.0.0.1]", false),
        ] {
            assert_eq!(Detector::Email.finds_in(text), hit, "{text}");
        }
    }

    /// What `mask_email` makes is a mask, not a leak: the email detector alone would count
    /// it (`*` is a local-part character), and the guard in block mode would withhold every
    /// masked answer.
    #[test]
    fn masked_emails_are_exempt() {
        let guard = Guard {
            detectors: vec![Detector::Email],
            mode: Mode::Block,
        };
        let masked = crate::transform::mask_email(&json!("ada@example.com"));
        assert_eq!(masked, json!("a**@example.com"));
        let doc = json!({"masked": masked, "one": "a@example.com", "stars": "a*b@example.com"});
        let found = guard.scan(&doc);
        let paths: Vec<&str> = found.detections.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(paths, vec!["$['one']", "$['stars']"]);
    }

    #[test]
    fn scan_reports_paths_not_values_and_skips_tokens_and_masks() {
        let doc = json!({
            "users": [
                {"email": "alice@example.com", "ssn": "fs1.k1.AAAA", "note": "call 123-45-6789"},
                {"card": 4111111111111111u64, "masked": "************1111", "id": 7}
            ],
            "jwe": "eyJhbGciOi.aa.bb.cc.dd"
        });
        let findings = guard().scan(&doc);
        assert_eq!(findings.total(), 3);
        let got: Vec<(String, &str)> = findings
            .detections
            .iter()
            .map(|d| (d.path.clone(), d.detector.name()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("$['users'][0]['email']".to_string(), "email"),
                ("$['users'][0]['note']".to_string(), "ssn"),
                ("$['users'][1]['card']".to_string(), "card"),
            ]
        );
    }

    #[test]
    fn card_prefilter_finds_every_run_the_exact_check_does() {
        for text in [
            "4111111111111111",
            "x 4111 1111 1111 1111 y",
            "xxxxxxxxxxxxxxxxxxxxxxx4111-1111-1111-1111",
            "             4111111111111111",
            "4111111111111111             ",
            "a-b 12 4111111111111111",
        ] {
            assert!(has_card(text.as_bytes()), "{text}");
            assert!(may_have_card(text.as_bytes()), "{text}");
        }
        for text in [
            "",
            "hello world, no digits at all here",
            "123-45-6789",
            "2026-11-01T09:30:00Z",
        ] {
            assert!(!may_have_card(text.as_bytes()), "{text}");
        }
    }

    #[test]
    fn a_card_at_the_end_of_a_long_run_of_digit_groups_is_found() {
        // Single digits whose 13-digit stretches all fail Luhn (1×13 sums to 19), then a card:
        // each stretch stops at 19 digits, so the walk stays linear in the run.
        let run = format!("{}4111 1111 1111 1111", "1 ".repeat(10_000));
        assert!(Detector::Card.finds_in(&run));
        assert!(!Detector::Card.finds_in(&"1 ".repeat(10_000)));
    }

    #[test]
    fn raw_prefilter_is_conservative() {
        let g = guard();
        assert!(!g.may_detect(br#"{"a":"hello","n":12}"#));
        assert!(g.may_detect(br#"{"a":"x@y.io"}"#));
        // An escaped `@` or dash is only visible after decoding: always walked.
        assert!(g.may_detect(br#"{"a":"alice\u0040example.com"}"#));
        let found = g
            .scan_bytes(br#"{"a":"alice\u0040example.com"}"#)
            .detections;
        assert_eq!(found.len(), 1);
        // Not JSON (a slice of a body): searched as text, reported at the root.
        let found = g.scan_bytes(b"\"123-45-6789\", \"na").detections;
        assert_eq!(
            found,
            vec![Detection {
                path: "$".into(),
                detector: Detector::Ssn
            }]
        );
    }

    #[test]
    fn log_lines_are_limited_per_second_and_count_what_they_hold_back() {
        let limiter = LogLimiter::default();
        let per_second = crate::limits::GUARD_LOG_LINES_PER_SECOND;
        let admitted = (0..per_second + 5)
            .filter(|_| limiter.admit(100).is_some())
            .count();
        assert_eq!(admitted as u64, per_second);
        // The next second's first line says how many were held back.
        assert_eq!(limiter.admit(101), Some(5));
        assert_eq!(limiter.admit(101), Some(0));
    }

    #[test]
    fn reports_are_bounded() {
        let doc = Value::Array(vec![json!("x@example.com"); MAX_REPORTED + 10]);
        let findings = guard().scan(&doc);
        assert_eq!(findings.detections.len(), MAX_REPORTED);
        assert_eq!(findings.total(), MAX_REPORTED as u64 + 10);
    }

    proptest::proptest! {
        /// The prefilter is only an optimisation: wherever the exact detectors find something
        /// in a string, the prefilter over the JSON text holding it says "maybe".
        #[test]
        fn the_prefilter_never_hides_a_detection(
            text in "(123-45-6789|4111 1111 1111 1111|4111-1111-1111-1111|41111111111111[0-9][0-9]|[0-9]{1,20}|[ .@a-z-]{1,5}|x@y\\.io){0,6}"
        ) {
            let g = guard();
            let body = serde_json::to_vec(&json!({"v": text})).unwrap();
            let found = g.scan(&json!({"v": text})).total();
            // Pieces meet without separators too (`12123-45-6789`), so not every case has one.
            if found > 0 {
                proptest::prop_assert!(g.may_detect(&body), "{text:?}");
            }
        }
    }
}
