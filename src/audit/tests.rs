use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::hmac;
use base64::Engine;

use super::*;
use crate::crypto::keyring::KeyState;
use crate::transform::outcome::{Action, FieldOp};

const KEY: [u8; 32] = [0x42; 32];

struct Setup {
    dir: tempfile::TempDir,
    settings: AuditSettings,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("audit.key");
        write_key(&key_file, &KEY);
        let settings = AuditSettings {
            sink: AuditSinkTarget::File(dir.path().join("audit.jsonl")),
            key_file,
        };
        Self { dir, settings }
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("audit.jsonl")
    }

    fn text(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap()
    }

    fn lines(&self) -> Vec<serde_json::Value> {
        self.text()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The lines after the first `skip` (which may not be JSON).
    fn lines_after(&self, skip: usize) -> Vec<serde_json::Value> {
        self.text()
            .lines()
            .skip(skip)
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Opens the log, writes `n` fields events, closes it.
    fn write(&self, n: usize) {
        let log = AuditLog::open(&self.settings).unwrap();
        for i in 0..n {
            assert!(log.fields(fields_event(i)));
        }
    }

    fn verify(&self) -> Result<Verified, Broken> {
        verify_file(&self.log(), &KEY)
    }

    fn rewrite(&self, f: impl FnOnce(&mut Vec<String>)) {
        let mut lines: Vec<String> = self.text().lines().map(str::to_string).collect();
        f(&mut lines);
        let mut text = lines.join("\n");
        text.push('\n');
        std::fs::write(self.log(), text).unwrap();
    }
}

fn append(path: &Path, bytes: &[u8]) {
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(bytes).unwrap();
}

fn write_key(path: &Path, key: &[u8; 32]) {
    use std::os::unix::fs::PermissionsExt;
    let text = base64::engine::general_purpose::STANDARD.encode(key) + "\n";
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn verify_file(path: &Path, key: &[u8; 32]) -> Result<Verified, Broken> {
    let file = std::fs::File::open(path).unwrap();
    match verify(&AuditKey::from_bytes(key), std::io::BufReader::new(file)) {
        Ok(v) => Ok(v),
        Err(VerifyError::Broken(b)) => Err(b),
        Err(VerifyError::Io(e)) => panic!("{e}"),
    }
}

fn fields_event(i: usize) -> FieldsEvent {
    FieldsEvent {
        request_id: format!("req-{i}"),
        route: Arc::from("user"),
        client: Some("127.0.0.1:40000".parse().unwrap()),
        outcome: Outcome::Ok,
        fields: vec![
            FieldOp {
                path: "$['ssn']".into(),
                action: Action::Sealed,
                kid: Some("k1".into()),
                selector: None,
                view: None,
            },
            FieldOp {
                path: "$['phone']".into(),
                action: Action::Masked,
                kid: None,
                selector: None,
                view: None,
            },
        ],
        failure: None,
        caller: None,
    }
}

#[test]
fn a_fresh_log_is_a_chain_that_verifies() {
    let s = Setup::new();
    s.write(3);
    let lines = s.lines();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[0]["event"], "chain_start");
    assert_eq!(lines[0]["previous"], "none");
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["seq"], i as u64 + 1);
    }
    assert_eq!(lines[1]["event"], "fields");
    assert_eq!(lines[1]["request_id"], "req-0");
    assert_eq!(lines[1]["client"], "127.0.0.1:40000");
    assert_eq!(lines[1]["outcome"], "ok");
    assert_eq!(
        lines[1]["fields"],
        serde_json::json!([
            {"path": "$['ssn']", "action": "sealed", "kid": "k1"},
            {"path": "$['phone']", "action": "masked", "kid": null}
        ])
    );
    let time = lines[1]["time"].as_str().unwrap();
    assert!(
        humantime::parse_rfc3339(time).is_ok() && time.len() == 24,
        "{time}"
    );
    let v = s.verify().unwrap();
    assert_eq!((v.lines, v.segments), (4, 1));
    assert!(v.notes.is_empty());
    assert_eq!(hex(&v.last_mac), lines[3]["mac"].as_str().unwrap());
}

/// The MAC recomputed from scratch over the raw bytes, as docs/audit.md describes it.
#[test]
fn the_mac_is_hmac_of_the_previous_mac_and_the_line_without_its_mac_member() {
    let s = Setup::new();
    s.write(2);
    let key = hmac::Key::new(hmac::HMAC_SHA256, &KEY);
    let mut previous = [0u8; 32];
    for line in s.text().lines() {
        let cut = line.rfind(",\"mac\":\"").unwrap();
        assert_eq!(line.len() - cut, MAC_SUFFIX_LEN);
        let mut input = previous.to_vec();
        input.extend_from_slice(&line.as_bytes()[..cut]);
        let tag = hmac::sign(&key, &input);
        let mac = &line[cut + 8..line.len() - 2];
        assert_eq!(mac, hex(tag.as_ref()));
        previous.copy_from_slice(tag.as_ref());
    }
}

/// Three opens of the same file: three segments, each starting with a `chain_start` that
/// names the last line before it, in one unbroken chain.
#[test]
fn an_untouched_multi_segment_log_verifies() {
    let s = Setup::new();
    s.write(2);
    s.write(1);
    s.write(3);
    let lines = s.lines();
    assert_eq!(lines.len(), 9);
    let starts: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i]["event"] == "chain_start")
        .collect();
    assert_eq!(starts, [0, 3, 5]);
    assert_eq!(lines[0]["previous"], "none");
    for &i in &starts[1..] {
        assert_eq!(
            lines[i]["previous"],
            serde_json::json!({"seq": lines[i - 1]["seq"], "mac": lines[i - 1]["mac"]})
        );
        assert!(lines[i].get("reason").is_none());
    }
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["seq"], i as u64 + 1);
    }
    // The exact bytes docs/audit.md shows: `previous` is `{"seq":N,"mac":"<hex>"}`.
    let text = s.text();
    let line4 = text.lines().nth(3).unwrap();
    let link = format!(
        r#","event":"chain_start","previous":{{"seq":3,"mac":"{}"}},"mac":""#,
        lines[2]["mac"].as_str().unwrap()
    );
    assert!(
        line4.starts_with(r#"{"seq":4,"time":""#) && line4.contains(&link),
        "{line4}"
    );
    let v = s.verify().unwrap();
    assert_eq!((v.lines, v.segments), (9, 3));
    assert!(v.notes.is_empty(), "{:?}", v.notes);
    assert_eq!(hex(&v.last_mac), lines[8]["mac"].as_str().unwrap());
}

/// The three-segment log above, cut in every way that crosses a segment boundary: each cut is
/// reported at the first line after the gap. (Before segments were linked, a segment start
/// carried no record of what came before it.)
#[test]
fn cuts_across_segment_boundaries_are_detected_at_the_right_line() {
    // Lines: 1 chain_start(none) 2 3 | 4 chain_start(seq 3) 5 | 6 chain_start(seq 5) 7 8 9
    type Cut = fn(&mut Vec<String>);
    let cuts: [(&str, Cut, u64, &str); 7] = [
        (
            "the last line of segment 1",
            |l| drop(l.remove(2)),
            3,
            "continues seq 3 (mac",
        ),
        (
            "the last two lines of segment 1",
            |l| drop(l.drain(1..3)),
            2,
            "(line 1) is seq 1 (lines were removed before it",
        ),
        (
            "the start line of segment 2",
            |l| drop(l.remove(3)),
            4,
            "seq 5, expected 4",
        ),
        (
            "lines on both sides of the boundary",
            |l| drop(l.drain(2..5)),
            3,
            "continues seq 5",
        ),
        (
            "the first event of segment 2",
            |l| drop(l.remove(4)),
            5,
            "continues seq 5 (mac",
        ),
        (
            "the whole of segment 2",
            |l| drop(l.drain(3..5)),
            4,
            "but the audit line before it (line 3) is seq 3 (lines were removed",
        ),
        (
            "segments 2 and 3 swapped",
            |l| {
                let seg2: Vec<String> = l.drain(3..5).collect();
                l.extend(seg2);
            },
            4,
            "continues seq 5",
        ),
    ];
    for (what, cut, line, why) in cuts {
        let s = Setup::new();
        s.write(2);
        s.write(1);
        s.write(3);
        s.rewrite(cut);
        let b = s.verify().expect_err(what);
        assert_eq!(b.line, line, "{what}: {}", b.why);
        assert!(b.why.contains(why), "{what}: {}", b.why);
    }
}

/// A file truncated mid-line and then reopened: the writer links the new segment to the last
/// whole audit line and records the torn line; `verify` names the torn line as a break (a
/// crash and a truncation look the same), and still does after the torn line is removed.
#[test]
fn a_truncated_tail_followed_by_a_new_segment_is_detected() {
    let s = Setup::new();
    s.write(3);
    let before = s.lines();
    let text = s.text();
    std::fs::write(s.log(), &text[..text.len() - 20]).unwrap();
    s.write(1);
    let text = s.text();
    let raw: Vec<&str> = text.lines().collect();
    assert_eq!(raw.len(), 6);
    assert!(serde_json::from_str::<serde_json::Value>(raw[3]).is_err());
    let start: serde_json::Value = serde_json::from_str(raw[4]).unwrap();
    assert_eq!(start["event"], "chain_start");
    assert_eq!(
        start["previous"],
        serde_json::json!({"seq": 3, "mac": before[2]["mac"]})
    );
    assert_eq!(start["reason"], "last_line_unparsable");
    assert_eq!(start["seq"], 4);

    let b = s.verify().unwrap_err();
    assert_eq!(b.line, 4);
    assert!(
        b.why.contains("torn or truncated") && b.why.contains("continues after seq 3"),
        "{}",
        b.why
    );

    // Removing the torn line does not hide it: the segment start recorded it.
    s.rewrite(|l| drop(l.remove(3)));
    let b = s.verify().unwrap_err();
    assert_eq!(b.line, 4);
    assert!(b.why.contains("last_line_unparsable"), "{}", b.why);
}

/// Lines removed just before a torn line, after the writer linked past it: the link names the
/// line that was there, so the cut is reported (it used to be accepted with a note).
#[test]
fn lines_cut_before_a_torn_line_are_detected() {
    let s = Setup::new();
    s.write(3);
    append(
        &s.log(),
        br#"{"seq":5,"time":"2026-01-01T00:00:00.000Z","event":"fie"#,
    );
    s.write(1);
    assert_eq!(s.text().lines().count(), 7);
    s.rewrite(|l| drop(l.remove(3)));
    let b = s.verify().unwrap_err();
    assert_eq!(b.line, 4);
    assert!(
        b.why.contains("continues seq 4") && b.why.contains("is seq 3"),
        "{}",
        b.why
    );
}

/// When no audit line is within reach of the file's end, the new segment says so
/// (`"unlinked"`), and `verify` reports it as a break even once the junk before it is gone.
#[test]
fn a_segment_that_cannot_link_is_reported() {
    let s = Setup::new();
    s.write(2);
    append(&s.log(), b"garbage\nmore garbage");
    s.write(1);
    let lines: Vec<String> = s.text().lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 7);
    let start: serde_json::Value = serde_json::from_str(&lines[5]).unwrap();
    assert_eq!(start["previous"], "unlinked");
    assert_eq!(start["reason"], "last_line_unparsable");
    assert_eq!(start["seq"], 1);
    let b = s.verify().unwrap_err();
    assert_eq!(b.line, 4);
    assert!(b.why.contains("not JSON"), "{}", b.why);

    s.rewrite(|l| drop(l.drain(3..5)));
    let b = s.verify().unwrap_err();
    assert_eq!(b.line, 4);
    assert!(
        b.why.contains("does not link") && b.why.contains("last_line_unparsable"),
        "{}",
        b.why
    );
}

#[test]
fn a_torn_last_line_is_linked_past_and_reported() {
    let s = Setup::new();
    s.write(2);
    // A write cut off mid-line (no newline).
    append(
        &s.log(),
        br#"{"seq":4,"time":"2026-01-01T00:00:00.000Z","event":"fie"#,
    );
    // Without the writer restarting, that last line breaks the chain.
    let b = s.verify().unwrap_err();
    assert_eq!(b.line, 4);
    assert!(
        b.why.contains("not JSON") && b.why.contains("torn"),
        "{}",
        b.why
    );

    s.write(1);
    let text = s.text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 6);
    let start: serde_json::Value = serde_json::from_str(lines[4]).unwrap();
    assert_eq!(start["event"], "chain_start");
    assert_eq!(start["previous"]["seq"], 3);
    assert_eq!(start["reason"], "last_line_unparsable");
    assert_eq!(start["seq"], 4);
    let b = s.verify().unwrap_err();
    assert_eq!(b.line, 4);
    assert!(b.why.contains("is lost"), "{}", b.why);
    // The next open links to the new segment as usual.
    s.write(1);
    assert_eq!(s.text().lines().count(), 8);
    assert_eq!(s.lines_after(6)[0]["previous"]["seq"], 5);
    assert_eq!(s.verify().unwrap_err().line, 4);
}

#[test]
fn an_unparsable_line_without_a_new_segment_after_it_is_an_error() {
    let s = Setup::new();
    s.write(3);
    s.rewrite(|l| l.insert(2, "garbage".into()));
    let b = s.verify().unwrap_err();
    assert_eq!(b.line, 3);
    assert!(b.why.contains("not JSON"), "{}", b.why);
}

#[test]
fn an_edited_value_is_detected_at_its_line() {
    let s = Setup::new();
    s.write(3);
    s.rewrite(|l| l[2] = l[2].replace("\"route\":\"user\"", "\"route\":\"usez\""));
    let b = s.verify().unwrap_err();
    assert_eq!(b.line, 3);
    assert!(b.why.contains("mac mismatch"), "{}", b.why);
}

#[test]
fn a_deleted_line_is_detected() {
    let s = Setup::new();
    s.write(4);
    s.rewrite(|l| {
        l.remove(2);
    });
    let b = s.verify().unwrap_err();
    assert_eq!(b.line, 3);
    assert!(b.why.contains("seq 4, expected 3"), "{}", b.why);

    // Removing the first line too.
    let s = Setup::new();
    s.write(2);
    s.rewrite(|l| {
        l.remove(0);
    });
    let b = s.verify().unwrap_err();
    assert_eq!(b.line, 1);
    assert!(b.why.contains("start of the log"), "{}", b.why);
}

#[test]
fn reordered_and_inserted_lines_are_detected() {
    let s = Setup::new();
    s.write(4);
    s.rewrite(|l| l.swap(2, 3));
    let b = s.verify().unwrap_err();
    assert_eq!(b.line, 3);
    assert!(b.why.contains("seq"), "{}", b.why);

    // A copy of a line, with its seq fixed up, still fails: the MAC does not chain.
    let s = Setup::new();
    s.write(3);
    s.rewrite(|l| {
        let copy = l[1].replacen("\"seq\":2", "\"seq\":3", 1);
        l.insert(2, copy);
    });
    let b = s.verify().unwrap_err();
    assert_eq!(b.line, 3);
    assert!(b.why.contains("mac mismatch"), "{}", b.why);
}

#[test]
fn a_truncated_last_line_is_reported() {
    let s = Setup::new();
    s.write(3);
    let text = s.text();
    std::fs::write(s.log(), &text[..text.len() - 20]).unwrap();
    let b = s.verify().unwrap_err();
    assert_eq!(b.line, 4);
    assert!(b.why.contains("last line"), "{}", b.why);
}

#[test]
fn concatenated_logs_are_not_one_chain() {
    let a = Setup::new();
    a.write(1);
    let b = Setup::new();
    b.write(1);
    std::fs::write(a.log(), a.text() + &b.text()).unwrap();
    let err = a.verify().unwrap_err();
    assert_eq!(err.line, 3);
    assert!(err.why.contains("concatenated"), "{}", err.why);
}

#[test]
fn another_key_does_not_verify_and_cannot_continue_the_log() {
    let s = Setup::new();
    s.write(2);
    let b = verify_file(&s.log(), &[0x43; 32]).unwrap_err();
    assert_eq!(b.line, 1);
    assert!(b.why.contains("mac mismatch"));
    write_key(&s.settings.key_file, &[0x43; 32]);
    let err = AuditLog::open(&s.settings).unwrap_err();
    assert!(err.contains("does not verify with this audit key"), "{err}");
}

#[test]
fn a_key_file_others_can_read_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let s = Setup::new();
    std::fs::set_permissions(&s.settings.key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = AuditLog::open(&s.settings).unwrap_err();
    assert!(err.contains("chmod 600"), "{err}");
    let b64 = base64::engine::general_purpose::STANDARD.encode(KEY);
    assert!(!err.contains(&b64));
    assert!(!s.log().exists());
}

#[test]
fn new_logs_are_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let s = Setup::new();
    s.write(0);
    let mode = std::fs::metadata(s.log()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn key_events_describe_keys_without_secrets() {
    let s = Setup::new();
    let old = crate::crypto::keyring::tests::test_keyring();
    let new = {
        use crate::crypto::keyring::{KeyEntry, KeyringFile};
        let b64 = |b: u8| base64::engine::general_purpose::STANDARD.encode([b; 32]);
        Keyring::from_file(KeyringFile {
            shredded: Vec::new(),
            primary: "k2".into(),
            keys: [
                ("k1", 1, KeyState::DecryptOnly),
                ("old", 7, KeyState::Disabled),
                ("k2", 2, KeyState::Active),
            ]
            .into_iter()
            .map(|(id, b, state)| KeyEntry {
                id: id.into(),
                secret: zeroize::Zeroizing::new(b64(b)),
                created_at: "2026-11-20T00:00:00Z".into(),
                state,
            })
            .collect(),
        })
        .unwrap()
    };
    {
        let log = AuditLog::open(&s.settings).unwrap();
        log.startup(Some(&old));
        log.keyring_reloaded(Some(&old), &new);
        assert!(log.flush(Duration::from_secs(5)));
        assert_eq!(log.written(), 8);
    }
    let events: Vec<String> = s
        .lines()
        .iter()
        .map(|l| l["event"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        events,
        [
            "chain_start",
            "keyring_loaded",
            "keyring_loaded",
            "rotation_detected",
            "key_state_changed",
            "key_retired",
            "key_added",
            "key_removed"
        ]
    );
    let lines = s.lines();
    assert_eq!(lines[1]["reason"], "startup");
    assert_eq!(lines[1]["primary"], "k1");
    assert_eq!(
        lines[1]["keys"][1],
        serde_json::json!({"id": "old", "state": "decrypt_only", "created_at": "2026-11-01T00:00:00Z"})
    );
    assert_eq!(lines[2]["reason"], "reload");
    assert_eq!(lines[3]["old_primary"], "k1");
    assert_eq!(lines[3]["new_primary"], "k2");
    assert_eq!(lines[5]["kid"], "old");
    assert_eq!(lines[7]["kid"], "gone");
    let text = s.text();
    for b in [0u8, 1, 2, 7, 9] {
        let secret = if b == 0 {
            base64::engine::general_purpose::STANDARD.encode((0u8..32).collect::<Vec<_>>())
        } else {
            base64::engine::general_purpose::STANDARD.encode([b; 32])
        };
        assert!(!text.contains(&secret));
    }
    assert!(text.lines().all(|l| !l.contains("secret")));
    assert!(s.verify().is_ok());
}

#[test]
fn rejections_carry_reason_field_and_kid() {
    let s = Setup::new();
    {
        let log = AuditLog::open(&s.settings).unwrap();
        log.fields(FieldsEvent {
            outcome: Outcome::Rejected,
            fields: vec![],
            failure: Some(FieldFailureInfo {
                reason: "authentication_failed",
                field: "$['ssn']".into(),
                kid: Some("k1".into()),
            }),
            ..fields_event(0)
        });
    }
    let line = &s.lines()[1];
    assert_eq!(line["outcome"], "rejected");
    assert_eq!(line["reason"], "authentication_failed");
    assert_eq!(line["field"], "$['ssn']");
    assert_eq!(line["kid"], "k1");
    assert_eq!(line["fields"], serde_json::json!([]));
}

#[test]
fn dropping_the_log_writes_everything_queued() {
    let s = Setup::new();
    s.write(5000);
    let v = s.verify().unwrap();
    assert_eq!(v.lines, 5001);
}

#[test]
fn a_full_queue_drops_and_counts_instead_of_blocking() {
    let s = Setup::new();
    let log = AuditLog::open(&s.settings).unwrap();
    // Far more than the queue holds, as fast as possible: either all fit (a fast writer) or
    // the overflow is counted; never a block.
    let n = QUEUE_CAPACITY * 2;
    let started = std::time::Instant::now();
    let mut refused = 0u64;
    for i in 0..n {
        if !log.fields(fields_event(i)) {
            refused += 1;
        }
    }
    assert!(started.elapsed() < Duration::from_secs(60));
    assert_eq!(log.dropped(), refused);
    drop(log);
    let v = s.verify().unwrap();
    assert_eq!(v.lines, 1 + n as u64 - refused);
}

#[test]
fn write_failures_are_counted_as_lost() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("audit.key");
    write_key(&key_file, &KEY);
    let settings = AuditSettings {
        sink: AuditSinkTarget::File(PathBuf::from("/dev/full")),
        key_file,
    };
    let log = AuditLog::open(&settings).unwrap();
    assert!(log.fields(fields_event(0)));
    assert!(log.flush(Duration::from_secs(5)));
    // The chain_start line and the event.
    assert_eq!(log.lost(), 2);
    assert_eq!(log.written(), 0);
}

/// The test vector in docs/audit.md verifies, with the last MAC the docs state.
#[test]
fn the_documented_test_vector_verifies() {
    let doc = include_str!("../../docs/audit.md");
    let start = doc.find("<!-- audit-test-vector -->\n```jsonl\n").unwrap();
    let block = &doc[start..];
    let block = &block[block.find("```jsonl\n").unwrap() + 9..];
    let block = &block[..block.find("```\n<!-- /audit-test-vector -->").unwrap()];
    let v = match verify(&AuditKey::from_bytes(&[0x42; 32]), block.as_bytes()) {
        Ok(v) => v,
        Err(e) => panic!("{e:?}"),
    };
    assert_eq!((v.lines, v.segments), (13, 2));
    assert!(v.notes.is_empty());
    let mac = hex(&v.last_mac);
    assert!(doc.contains(&format!("last mac {mac}")));
    assert!(doc.contains(&format!("`{}…{}`", &mac[..8], &mac[58..])));
    assert!(doc.contains(&base64::engine::general_purpose::STANDARD.encode([0x42u8; 32])));
}
