//! The line format and the HMAC chain (docs/audit.md, "MAC construction").
//!
//! A line is `{"seq":N,"time":"…","event":"…",<members>,"mac":"<64 lowercase hex>"}` and a
//! newline. Its MAC is HMAC-SHA256(audit key, previous line's MAC (32 raw bytes) ‖ the line's
//! bytes up to, not including, the final `,"mac":"`). The first line of a chain uses 32 zero
//! bytes as the previous MAC. The MAC covers the bytes as written, so a verifier needs no
//! canonical JSON: it cuts off the fixed 74-byte suffix.

use std::io::{self, BufRead, Read, Seek, SeekFrom};
use std::time::SystemTime;

use serde::Deserialize;

use super::event::Event;
use super::key::AuditKey;

pub const MAC_LEN: usize = 32;
pub type Mac = [u8; MAC_LEN];
/// The previous MAC of a chain's first line.
pub const ZERO_MAC: Mac = [0; MAC_LEN];

const MAC_MEMBER: &[u8] = b",\"mac\":\"";
/// `,"mac":"` + 64 hex digits + `"}`.
pub const MAC_SUFFIX_LEN: usize = MAC_MEMBER.len() + 2 * MAC_LEN + 2;

/// The writer's position in a chain: the last MAC written and the next sequence number.
pub struct Chain {
    previous: Mac,
    next_seq: u64,
}

impl Chain {
    /// A new chain: its first line has `seq` 1 and follows [`ZERO_MAC`].
    pub fn fresh() -> Self {
        Self {
            previous: ZERO_MAC,
            next_seq: 1,
        }
    }

    /// Continues after a line with `seq` and `mac`.
    pub fn resume(seq: u64, mac: Mac) -> Self {
        Self {
            previous: mac,
            next_seq: seq.saturating_add(1),
        }
    }

    /// Appends the complete line (newline included) for `event` at `time` to `out`.
    pub fn append(&mut self, key: &AuditKey, time: SystemTime, event: &Event, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(b"{\"seq\":");
        out.extend_from_slice(self.next_seq.to_string().as_bytes());
        out.extend_from_slice(b",\"time\":\"");
        out.extend_from_slice(
            humantime::format_rfc3339_millis(time)
                .to_string()
                .as_bytes(),
        );
        out.extend_from_slice(b"\",\"event\":\"");
        out.extend_from_slice(event.name().as_bytes());
        out.push(b'"');
        // The event's own members: serialised as an object, whose braces are then dropped.
        let members = out.len();
        serde_json::to_writer(&mut *out, event).expect("audit events serialise");
        if out.len() - members <= 2 {
            out.truncate(members);
        } else {
            out[members] = b',';
            out.pop();
        }
        let mac = key.mac(&self.previous, &out[start..]);
        out.extend_from_slice(MAC_MEMBER);
        push_hex(out, &mac);
        out.extend_from_slice(b"\"}\n");
        self.previous = mac;
        self.next_seq = self.next_seq.saturating_add(1);
    }
}

pub fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)]);
        out.push(DIGITS[usize::from(b & 15)]);
    }
}

pub fn hex(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len() * 2);
    push_hex(&mut out, bytes);
    String::from_utf8(out).expect("hex is ASCII")
}

/// Lowercase hex only (what the writer emits), so every MAC has exactly one spelling.
fn parse_hex(text: &[u8]) -> Option<Mac> {
    if text.len() != 2 * MAC_LEN {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut mac = ZERO_MAC;
    for (i, pair) in text.chunks_exact(2).enumerate() {
        mac[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(mac)
}

/// The parts of a line the chain needs.
#[derive(Debug)]
pub struct ParsedLine<'a> {
    /// The bytes the MAC covers.
    pub body: &'a [u8],
    pub mac: Mac,
    pub seq: u64,
    pub event: String,
    pub previous: Option<String>,
}

impl ParsedLine<'_> {
    /// A chain's first line: `chain_start` with `seq` 1.
    pub fn starts_chain(&self) -> bool {
        self.event == "chain_start" && self.seq == 1
    }
}

#[derive(Deserialize)]
struct Head {
    seq: u64,
    event: String,
    #[serde(default)]
    previous: Option<String>,
}

/// Splits a line (without its newline) into the MAC'd body, the MAC and the members the chain
/// checks. The error says why the line is not a chain line.
pub fn parse_line(line: &[u8]) -> Result<ParsedLine<'_>, String> {
    if line.is_empty() {
        return Err("empty line".into());
    }
    let head: Head = serde_json::from_slice(line).map_err(|e| {
        if e.is_data() {
            format!("not an audit line ({e})")
        } else {
            format!("not JSON ({e})")
        }
    })?;
    let n = line.len();
    let mac = (n > MAC_SUFFIX_LEN
        && line.ends_with(b"\"}")
        && &line[n - MAC_SUFFIX_LEN..n - MAC_SUFFIX_LEN + MAC_MEMBER.len()] == MAC_MEMBER)
        .then(|| parse_hex(&line[n - 2 - 2 * MAC_LEN..n - 2]))
        .flatten()
        .ok_or_else(|| {
            "no MAC: the line does not end with `,\"mac\":\"<64 lowercase hex digits>\"}`"
                .to_string()
        })?;
    Ok(ParsedLine {
        body: &line[..n - MAC_SUFFIX_LEN],
        mac,
        seq: head.seq,
        event: head.event,
        previous: head.previous,
    })
}

// ---------------------------------------------------------------------------------------
// The end of an existing log

/// The last line of a file, and the one before it when it is within reach.
#[derive(Debug, Default)]
pub struct Tail {
    /// The last line (without newline); `None` for an empty file, or a last line too long to
    /// read back.
    pub last: Option<Vec<u8>>,
    pub before: Option<Vec<u8>>,
    /// Whether the file ends with a newline (if not, the writer adds one before its first
    /// line).
    pub ends_with_newline: bool,
}

/// The end of a log is read back in blocks from its end, never more than this.
const TAIL_MAX: u64 = 16 << 20;
const TAIL_BLOCK: u64 = 8 << 10;

/// Reads the last two lines of `file` (of length `len`) from its end: no more of the file
/// than those lines.
pub fn read_tail<F: Read + Seek>(file: &mut F, len: u64) -> io::Result<Tail> {
    if len == 0 {
        return Ok(Tail {
            ends_with_newline: true,
            ..Tail::default()
        });
    }
    let mut buf: Vec<u8> = Vec::new();
    let mut pos = len;
    loop {
        let n = TAIL_BLOCK.max(buf.len() as u64).min(pos);
        pos -= n;
        let mut chunk = vec![0u8; n as usize];
        file.seek(SeekFrom::Start(pos))?;
        file.read_exact(&mut chunk)?;
        chunk.extend_from_slice(&buf);
        buf = chunk;
        let content = buf.strip_suffix(b"\n").unwrap_or(&buf);
        let newlines = content.iter().filter(|&&b| b == b'\n').count();
        if newlines >= 2 || pos == 0 || buf.len() as u64 >= TAIL_MAX {
            break;
        }
    }
    let ends_with_newline = buf.last() == Some(&b'\n');
    let content = buf.strip_suffix(b"\n").unwrap_or(&buf);
    let mut parts = content.rsplitn(3, |&b| b == b'\n');
    let last = parts.next().unwrap_or_default();
    let before = parts.next();
    let more = parts.next().is_some();
    // A line is complete when a newline precedes it or it starts the file.
    let last_complete = before.is_some() || pos == 0;
    let before_complete = more || pos == 0;
    Ok(Tail {
        last: last_complete.then(|| last.to_vec()),
        before: before.filter(|_| before_complete).map(<[u8]>::to_vec),
        ends_with_newline,
    })
}

// ---------------------------------------------------------------------------------------
// Verification

/// An intact log.
#[derive(Debug)]
pub struct Verified {
    pub lines: u64,
    pub last_mac: Mac,
    /// New chain segments accepted after an unverifiable line (one note each).
    pub notes: Vec<String>,
}

/// The first line that breaks the chain (1-based) and why.
#[derive(Debug, PartialEq, Eq)]
pub struct Broken {
    pub line: u64,
    pub why: String,
}

#[derive(Debug)]
pub enum VerifyError {
    Broken(Broken),
    Io(io::Error),
}

impl From<io::Error> for VerifyError {
    fn from(e: io::Error) -> Self {
        VerifyError::Io(e)
    }
}

fn broken(line: u64, why: impl Into<String>) -> VerifyError {
    VerifyError::Broken(Broken {
        line,
        why: why.into(),
    })
}

/// Checks a whole log: line 1 starts a chain (`chain_start`, `previous: "none"`, seq 1);
/// every next line has the next seq and the MAC over the previous MAC and its own body. The
/// one exception: a line that is not a chain line (a torn write) may be followed by a
/// `chain_start` with `previous: "unverifiable"`, which starts a new segment (reported in
/// the notes).
pub fn verify<R: BufRead>(key: &AuditKey, mut reader: R) -> Result<Verified, VerifyError> {
    let mut previous = ZERO_MAC;
    let mut expected = 1u64;
    let mut line_no = 0u64;
    let mut pending: Option<(u64, String)> = None;
    let mut notes = Vec::new();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf)? == 0 {
            break;
        }
        line_no += 1;
        let line = buf.strip_suffix(b"\n").unwrap_or(&buf);
        let parsed = match parse_line(line) {
            Ok(p) => p,
            Err(why) => {
                if let Some((k, why)) = pending {
                    return Err(broken(k, why));
                }
                pending = Some((line_no, why));
                continue;
            }
        };
        if let Some((k, why)) = pending.take() {
            let restarts = parsed.starts_chain()
                && parsed.previous.as_deref() == Some("unverifiable")
                && key.verify(&ZERO_MAC, parsed.body, &parsed.mac);
            if !restarts {
                return Err(broken(
                    k,
                    format!("{why}; it is not followed by a chain_start line"),
                ));
            }
            notes.push(format!(
                "line {k} is unverifiable ({why}); the writer started a new chain segment at \
                 line {line_no} (chain_start, previous: unverifiable)"
            ));
            previous = parsed.mac;
            expected = 2;
            continue;
        }
        if parsed.seq != expected {
            let hint = if parsed.starts_chain() {
                "a new chain starts here: concatenated logs? verify each file on its own"
            } else if line_no == 1 {
                "lines were removed from the start of the log"
            } else {
                "a line was deleted, inserted or moved"
            };
            return Err(broken(
                line_no,
                format!("seq {}, expected {expected} ({hint})", parsed.seq),
            ));
        }
        if !key.verify(&previous, parsed.body, &parsed.mac) {
            return Err(broken(
                line_no,
                "mac mismatch (the line was altered, or written with another key)",
            ));
        }
        if line_no == 1 && parsed.previous.as_deref() != Some("none") {
            return Err(broken(
                1,
                "the first line is not a chain_start with previous \"none\"",
            ));
        }
        previous = parsed.mac;
        expected = parsed.seq.saturating_add(1);
    }
    if let Some((k, why)) = pending {
        return Err(broken(
            k,
            format!("{why} (the last line: a torn or truncated write?)"),
        ));
    }
    Ok(Verified {
        lines: line_no,
        last_mac: previous,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_finds_the_last_two_lines_from_the_end() {
        let mut text = Vec::new();
        for i in 0..5000 {
            text.extend_from_slice(format!("line {i}\n").as_bytes());
        }
        let len = text.len() as u64;
        let tail = read_tail(&mut io::Cursor::new(&text), len).unwrap();
        assert_eq!(tail.last.as_deref(), Some(&b"line 4999"[..]));
        assert_eq!(tail.before.as_deref(), Some(&b"line 4998"[..]));
        assert!(tail.ends_with_newline);

        let tail = read_tail(&mut io::Cursor::new(b"only"), 4).unwrap();
        assert_eq!(tail.last.as_deref(), Some(&b"only"[..]));
        assert!(tail.before.is_none() && !tail.ends_with_newline);

        // A last line longer than one block is read whole.
        let long = format!("first\n{}\n", "x".repeat(20_000));
        let tail = read_tail(&mut io::Cursor::new(long.as_bytes()), long.len() as u64).unwrap();
        assert_eq!(tail.last.unwrap().len(), 20_000);
        assert_eq!(tail.before.as_deref(), Some(&b"first"[..]));

        let tail = read_tail(&mut io::Cursor::new(b"a\n\n"), 3).unwrap();
        assert_eq!(tail.last.as_deref(), Some(&b""[..]));
    }

    #[test]
    fn hex_round_trips_lowercase_only() {
        let mac: Mac = std::array::from_fn(|i| i as u8 * 7);
        let text = hex(&mac);
        assert_eq!(parse_hex(text.as_bytes()), Some(mac));
        assert_eq!(parse_hex(text.to_uppercase().as_bytes()), None);
        assert_eq!(parse_hex(b"00"), None);
    }
}
