//! The line format and the HMAC chain (docs/audit.md, "MAC construction").
//!
//! A line is `{"seq":N,"time":"…","event":"…",<members>,"mac":"<64 lowercase hex>"}` and a
//! newline. Its MAC is HMAC-SHA256(audit key, previous line's MAC (32 raw bytes) ‖ the line's
//! bytes up to, not including, the final `,"mac":"`). The MAC covers the bytes as written, so a
//! verifier needs no canonical JSON: it cuts off the fixed 74-byte suffix.
//!
//! A file is a sequence of *segments*: each time a writer starts writing to it (a process
//! opens the log, or recovers from a write error) it first writes a `chain_start` line whose
//! `previous` member records where the file ended: `"none"` for a new file, the last audit
//! line's `{"seq","mac"}` otherwise (the new line then has the next seq and chains over that
//! MAC), or `"unlinked"` when the writer could not read the end. Because that record is inside
//! the MAC'd bytes, a verifier can tell that nothing was cut between two segments, and a
//! segment start that could not link is reported instead of silently accepted.

use std::io::{self, BufRead, Read, Seek, SeekFrom};
use std::time::SystemTime;

use serde::ser::SerializeStruct;
use serde::{Deserialize, Serialize, Serializer};

use super::event::Event;
use super::key::AuditKey;

pub const MAC_LEN: usize = 32;
pub type Mac = [u8; MAC_LEN];
/// The previous MAC of a chain's first line, and of a segment that could not link.
pub const ZERO_MAC: Mac = [0; MAC_LEN];

const MAC_MEMBER: &[u8] = b",\"mac\":\"";
/// `,"mac":"` + 64 hex digits + `"}`.
pub const MAC_SUFFIX_LEN: usize = MAC_MEMBER.len() + 2 * MAC_LEN + 2;

/// The `event` of the line that starts every segment.
pub const CHAIN_START: &str = "chain_start";

/// `reason` of a segment start after a write error (the file's end was read back and is
/// whole): events of the failed write are missing, as counted in the writer's `lost` total.
pub const REASON_WRITE_FAILED: &str = "write_failed";
/// `reason` of a segment start after a last line that is not an audit line (a torn write, or a
/// truncation): whatever followed the linked line is lost, and `verify` reports it.
pub const REASON_LAST_LINE_UNPARSABLE: &str = "last_line_unparsable";
/// `reason` of an unlinked segment start: the file's last line is longer than the writer reads
/// back ([`TAIL_MAX`]).
pub const REASON_LAST_LINE_TOO_LONG: &str = "last_line_too_long";

/// Where the previous segment ended, as a `chain_start` line records it (its `previous`
/// member).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Previous {
    /// `"none"`: nothing came before — a new or empty file, or a stdout stream. The line has
    /// `seq` 1 and chains over [`ZERO_MAC`].
    None,
    /// `{"seq":N,"mac":"<hex>"}`: the previous segment's last audit line. The line has `seq`
    /// N + 1 and chains over that MAC, which must be the MAC of the audit line before it.
    Link { seq: u64, mac: Mac },
    /// `"unlinked"`: the writer could not read where the file ended. The line has `seq` 1 and
    /// chains over [`ZERO_MAC`]; `verify` reports it as a break, since lines before it could
    /// have been cut. (Files written before segments were linked say `"unverifiable"`, read as
    /// this.)
    Unlinked,
}

impl Previous {
    /// The MAC this segment start chains over.
    pub fn mac(&self) -> Mac {
        match self {
            Previous::Link { mac, .. } => *mac,
            Previous::None | Previous::Unlinked => ZERO_MAC,
        }
    }
}

impl Serialize for Previous {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Previous::None => s.serialize_str("none"),
            Previous::Unlinked => s.serialize_str("unlinked"),
            Previous::Link { seq, mac } => {
                let mut st = s.serialize_struct("Link", 2)?;
                st.serialize_field("seq", seq)?;
                st.serialize_field("mac", &hex(mac))?;
                st.end()
            }
        }
    }
}

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

    /// The chain a segment start with `previous` begins: after the linked line, or a new one.
    pub fn after(previous: Previous) -> Self {
        match previous {
            Previous::Link { seq, mac } => Self::resume(seq, mac),
            Previous::None | Previous::Unlinked => Self::fresh(),
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
    /// Where the previous segment ended: set on `chain_start` lines only.
    pub previous: Option<Previous>,
    /// A `chain_start`'s `reason`: why the segment began.
    pub reason: Option<String>,
}

impl ParsedLine<'_> {
    /// The MAC this line chains over when that can be told from the line alone (a segment
    /// start); other lines chain over the line before them.
    pub fn chained_over(&self) -> Option<Mac> {
        self.previous.map(|p| p.mac())
    }
}

#[derive(Deserialize)]
struct Head {
    seq: u64,
    event: String,
    /// Read as a [`RawPrevious`] on `chain_start` lines only, so no other event's members
    /// are constrained by it.
    #[serde(default)]
    previous: Option<serde_json::Value>,
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawPrevious {
    Word(String),
    Link { seq: u64, mac: String },
}

impl RawPrevious {
    fn parse(self) -> Option<Previous> {
        match self {
            RawPrevious::Word(w) if w == "none" => Some(Previous::None),
            RawPrevious::Word(w) if w == "unlinked" || w == "unverifiable" => {
                Some(Previous::Unlinked)
            }
            RawPrevious::Word(_) => None,
            RawPrevious::Link { seq, mac } => Some(Previous::Link {
                seq,
                mac: parse_hex(mac.as_bytes())?,
            }),
        }
    }
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
    let previous = if head.event == CHAIN_START {
        let previous = head
            .previous
            .and_then(|v| serde_json::from_value::<RawPrevious>(v).ok())
            .and_then(RawPrevious::parse)
            .ok_or_else(|| {
                "not an audit line (a chain_start's `previous` must be \"none\", \"unlinked\" or \
             {\"seq\":N,\"mac\":\"<64 lowercase hex digits>\"})"
                    .to_string()
            })?;
        Some(previous)
    } else {
        None
    };
    Ok(ParsedLine {
        body: &line[..n - MAC_SUFFIX_LEN],
        mac,
        seq: head.seq,
        event: head.event,
        previous,
        reason: head.reason,
    })
}

// ---------------------------------------------------------------------------------------
// The end of an existing log

/// The last lines of a file, read back from its end.
#[derive(Debug, Default)]
pub struct Tail {
    /// Up to [`TAIL_LINES`] whole lines (without newlines), oldest first, ending with the
    /// file's last line. Empty for an empty file, or when the last line is longer than
    /// [`TAIL_MAX`]; shorter when a line before them is.
    pub lines: Vec<Vec<u8>>,
    /// Whether the file ends with a newline (if not, the writer adds one before its first
    /// line).
    pub ends_with_newline: bool,
}

/// Lines a writer reads back from the end of a file: the last audit line, which the new
/// segment links to; the line before it, whose MAC checks the last with this key; and one
/// more for when the very last line is a torn write, so the link skips it.
pub const TAIL_LINES: usize = 3;

/// The most of a file's end a writer reads back, whatever the file holds: opening a log costs
/// at most this much memory and reading, even if someone appended a huge line. Audit lines
/// are far shorter (a line names one request's fields), so a real log always links; a longer
/// last line gives an `"unlinked"` segment start, which `verify` reports.
pub const TAIL_MAX: u64 = 16 << 20;

/// The first read from the end: a few typical lines in one read. Each next read doubles what
/// was read, so a long line costs a logarithmic number of reads.
const TAIL_BLOCK: u64 = 8 << 10;

/// Reads the last [`TAIL_LINES`] lines of `file` (of length `len`) from its end: no more of
/// the file than those lines, and never more than [`TAIL_MAX`] bytes.
pub fn read_tail<F: Read + Seek>(file: &mut F, len: u64) -> io::Result<Tail> {
    if len == 0 {
        return Ok(Tail {
            lines: Vec::new(),
            ends_with_newline: true,
        });
    }
    let mut buf: Vec<u8> = Vec::new();
    let mut pos = len;
    loop {
        let n = TAIL_BLOCK
            .max(buf.len() as u64)
            .min(pos)
            .min(TAIL_MAX - buf.len() as u64);
        pos -= n;
        let mut chunk = vec![0u8; n as usize];
        file.seek(SeekFrom::Start(pos))?;
        file.read_exact(&mut chunk)?;
        chunk.extend_from_slice(&buf);
        buf = chunk;
        let content = buf.strip_suffix(b"\n").unwrap_or(&buf);
        let newlines = content.iter().filter(|&&b| b == b'\n').count();
        if newlines >= TAIL_LINES || pos == 0 || buf.len() as u64 >= TAIL_MAX {
            break;
        }
    }
    let ends_with_newline = buf.last() == Some(&b'\n');
    let content = buf.strip_suffix(b"\n").unwrap_or(&buf);
    let mut lines: Vec<&[u8]> = content.rsplitn(TAIL_LINES + 1, |&b| b == b'\n').collect();
    if lines.len() > TAIL_LINES {
        // The rest: lines before the ones wanted.
        lines.truncate(TAIL_LINES);
    } else if pos > 0 {
        // The earliest piece is a whole line only if the file starts there.
        lines.pop();
    }
    Ok(Tail {
        lines: lines.into_iter().rev().map(<[u8]>::to_vec).collect(),
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
    /// `chain_start` lines: how many times a writer started writing to the file.
    pub segments: u64,
    /// Segments that began after events were lost (a write error), one note each.
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

/// The last audit line verified so far.
#[derive(Debug, Clone, Copy)]
struct End {
    line: u64,
    seq: u64,
    mac: Mac,
}

/// Checks a whole log, line by line:
/// - line 1 is a `chain_start` with `previous: "none"` and `seq` 1, chained over the zero MAC;
/// - every other line has the next `seq` and a MAC over the previous line's MAC;
/// - a later `chain_start` (a new segment) must link to exactly the line before it: its
///   `previous` names that line's seq and MAC. So lines cut at the end of one segment or the
///   start of the next, a segment removed, or segments swapped are all reported, at the
///   `chain_start` (or the first line) after the gap;
/// - a segment start that does not link (`"unlinked"`), or that records that the writer found
///   a torn last line, is a break: the log cannot show that nothing was cut there;
/// - so is any line that is not an audit line (a torn write or a truncation).
///
/// A segment that began after a write error is intact but gets a note: events were lost.
pub fn verify<R: BufRead>(key: &AuditKey, mut reader: R) -> Result<Verified, VerifyError> {
    let mut last: Option<End> = None;
    let mut line_no = 0u64;
    // A line that is not an audit line; the next line decides only how it is explained.
    let mut torn: Option<(u64, String)> = None;
    let mut segments = 0u64;
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
                if let Some((k, why)) = torn {
                    return Err(broken(k, why));
                }
                torn = Some((line_no, why));
                continue;
            }
        };
        if let Some((k, why)) = torn {
            return Err(broken(k, torn_why(why, &parsed, line_no, last, key)));
        }
        let expected = last.map_or(1, |l| l.seq.saturating_add(1));
        let previous_mac = match parsed.previous {
            None => {
                if parsed.seq != expected {
                    let hint = if line_no == 1 {
                        "lines were removed from the start of the log"
                    } else {
                        "a line was deleted, inserted or moved"
                    };
                    return Err(broken(
                        line_no,
                        format!("seq {}, expected {expected} ({hint})", parsed.seq),
                    ));
                }
                last.map_or(ZERO_MAC, |l| l.mac)
            }
            Some(previous) => {
                segments += 1;
                check_segment_start(&parsed, previous, line_no, last)?;
                previous.mac()
            }
        };
        if !key.verify(&previous_mac, parsed.body, &parsed.mac) {
            return Err(broken(
                line_no,
                "mac mismatch (the line was altered, or written with another key)",
            ));
        }
        if line_no == 1 && parsed.previous != Some(Previous::None) {
            return Err(broken(
                1,
                "the first line is not a chain_start with previous \"none\"",
            ));
        }
        if parsed.reason.as_deref() == Some(REASON_WRITE_FAILED) {
            notes.push(format!(
                "line {line_no}: the writer started a new segment after a write error; the \
                 events it could not write are not in the log (counted as lost)"
            ));
        }
        last = Some(End {
            line: line_no,
            seq: parsed.seq,
            mac: parsed.mac,
        });
    }
    if let Some((k, why)) = torn {
        return Err(broken(
            k,
            format!("{why} (the last line: a torn or truncated write?)"),
        ));
    }
    Ok(Verified {
        lines: line_no,
        last_mac: last.map_or(ZERO_MAC, |l| l.mac),
        segments,
        notes,
    })
}

/// Whether a `chain_start` at `line_no` follows `last` exactly (its MAC is checked after).
fn check_segment_start(
    parsed: &ParsedLine<'_>,
    previous: Previous,
    line_no: u64,
    last: Option<End>,
) -> Result<(), VerifyError> {
    match previous {
        Previous::None => match last {
            Some(l) => Err(broken(
                line_no,
                format!(
                    "seq {}, expected {} (a new chain starts here: concatenated logs? verify \
                     each file on its own)",
                    parsed.seq,
                    l.seq.saturating_add(1)
                ),
            )),
            None if parsed.seq != 1 => {
                Err(broken(line_no, format!("seq {}, expected 1", parsed.seq)))
            }
            None => Ok(()),
        },
        Previous::Unlinked => Err(broken(
            line_no,
            format!(
                "a segment start that does not link to the lines before it (reason: {}): the \
                 writer could not read where the log ended, so lines before this one may have \
                 been cut",
                parsed.reason.as_deref().unwrap_or("none given")
            ),
        )),
        Previous::Link { seq, mac } => {
            if let Some(why) = link_mismatch(seq, &mac, last) {
                return Err(broken(line_no, why));
            }
            if parsed.seq != seq.saturating_add(1) {
                return Err(broken(
                    line_no,
                    format!(
                        "seq {}, expected {} (a segment start continues its link's seq)",
                        parsed.seq,
                        seq.saturating_add(1)
                    ),
                ));
            }
            if parsed.reason.as_deref() == Some(REASON_LAST_LINE_UNPARSABLE) {
                return Err(broken(
                    line_no,
                    format!(
                        "this segment start records that the log was torn or truncated after \
                         seq {seq} (reason: {REASON_LAST_LINE_UNPARSABLE}), but no torn line \
                         precedes it: it was removed, and whatever followed seq {seq} is lost"
                    ),
                ));
            }
            Ok(())
        }
    }
}

/// Why a segment start's link (`seq`, `mac`) is not the last audit line `last`, if it is not.
fn link_mismatch(seq: u64, mac: &Mac, last: Option<End>) -> Option<String> {
    let Some(l) = last else {
        return Some(format!(
            "a segment start that continues seq {seq}, but no audit line precedes it (lines were \
             removed from the start of the log)"
        ));
    };
    if l.seq == seq && &l.mac == mac {
        return None;
    }
    let hint = if seq > l.seq {
        "lines were removed before it: the end of the previous segment, or whole segments"
    } else {
        "segments were reordered, or lines inserted"
    };
    Some(format!(
        "a segment start that continues seq {seq} (mac {}…), but the audit line before it \
         (line {}) is seq {} ({hint})",
        &hex(mac)[..8],
        l.line,
        l.seq
    ))
}

/// Why a line that is not an audit line breaks the chain, told by the line after it.
fn torn_why(
    why: String,
    next: &ParsedLine<'_>,
    next_line: u64,
    last: Option<End>,
    key: &AuditKey,
) -> String {
    match next.previous {
        Some(Previous::Link { seq, mac }) => match link_mismatch(seq, &mac, last) {
            None if key.verify(&mac, next.body, &next.mac) => format!(
                "{why}: the log was torn or truncated here (the segment that starts at line \
                 {next_line} continues after seq {seq}; whatever followed seq {seq} is lost)"
            ),
            None => format!("{why}; the line after it does not verify"),
            Some(mismatch) => format!("{why}; at line {next_line}: {mismatch}"),
        },
        Some(_) => format!(
            "{why}; the segment that starts after it (line {next_line}) does not link to the \
             lines before it"
        ),
        None => format!("{why}; it is not followed by a chain_start line"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tail(text: &[u8]) -> Tail {
        read_tail(&mut io::Cursor::new(text), text.len() as u64).unwrap()
    }

    fn lines(tail: &Tail) -> Vec<&str> {
        tail.lines
            .iter()
            .map(|l| std::str::from_utf8(l).unwrap())
            .collect()
    }

    #[test]
    fn tail_finds_the_last_lines_from_the_end() {
        let mut text = Vec::new();
        for i in 0..5000 {
            text.extend_from_slice(format!("line {i}\n").as_bytes());
        }
        let t = tail(&text);
        assert_eq!(lines(&t), ["line 4997", "line 4998", "line 4999"]);
        assert!(t.ends_with_newline);

        let t = tail(b"only");
        assert_eq!(lines(&t), ["only"]);
        assert!(!t.ends_with_newline);
        assert_eq!(lines(&tail(b"a\nb\n")), ["a", "b"]);

        // A last line longer than one block is read whole.
        let long = format!("first\n{}\n", "x".repeat(20_000));
        let t = tail(long.as_bytes());
        assert_eq!(t.lines.len(), 2);
        assert_eq!(t.lines[0], b"first");
        assert_eq!(t.lines[1].len(), 20_000);

        assert_eq!(lines(&tail(b"a\n\n")), ["a", ""]);
    }

    #[test]
    fn tail_reads_no_more_than_its_bound() {
        // A last line longer than TAIL_MAX is not read whole: no lines, not a partial one.
        let mut text = b"short\n".to_vec();
        text.extend(std::iter::repeat_n(b'x', TAIL_MAX as usize + 10));
        let t = tail(&text);
        assert!(t.lines.is_empty());
        // A long line before short last lines: only the short ones.
        let mut text = vec![b'y'; TAIL_MAX as usize + 10];
        text.extend_from_slice(b"\nlast\n");
        assert_eq!(lines(&tail(&text)), ["last"]);
    }

    #[test]
    fn hex_round_trips_lowercase_only() {
        let mac: Mac = std::array::from_fn(|i| i as u8 * 7);
        let text = hex(&mac);
        assert_eq!(parse_hex(text.as_bytes()), Some(mac));
        assert_eq!(parse_hex(text.to_uppercase().as_bytes()), None);
        assert_eq!(parse_hex(b"00"), None);
    }

    #[test]
    fn previous_serialises_as_documented_and_parses_back() {
        let mac: Mac = [0xab; MAC_LEN];
        let link = Previous::Link { seq: 11, mac };
        let text = serde_json::to_string(&link).unwrap();
        assert_eq!(text, format!("{{\"seq\":11,\"mac\":\"{}\"}}", hex(&mac)));
        let raw: RawPrevious = serde_json::from_str(&text).unwrap();
        assert_eq!(raw.parse(), Some(link));
        for (word, p) in [("none", Previous::None), ("unlinked", Previous::Unlinked)] {
            assert_eq!(serde_json::to_string(&p).unwrap(), format!("\"{word}\""));
            let raw: RawPrevious = serde_json::from_str(&format!("\"{word}\"")).unwrap();
            assert_eq!(raw.parse(), Some(p));
        }
        let raw: RawPrevious = serde_json::from_str("\"something\"").unwrap();
        assert_eq!(raw.parse(), None);
        let raw: RawPrevious = serde_json::from_str(r#"{"seq":1,"mac":"ABCD"}"#).unwrap();
        assert_eq!(raw.parse(), None);
    }
}
