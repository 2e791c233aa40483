//! The writer thread: the only place lines are formatted, MAC'd and written, so the request
//! path only hands over an event (a bounded queue; when it is full the event is counted as
//! dropped, never waited for).
//!
//! Lines are gathered in a batch and written whenever the queue is momentarily empty (or the
//! batch reaches [`BATCH_BYTES`]); a file sink is fsynced at most every [`FSYNC_INTERVAL`],
//! and once more when the log closes.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::chain::{
    self, Chain, Previous, Tail, REASON_LAST_LINE_TOO_LONG, REASON_LAST_LINE_UNPARSABLE,
    REASON_WRITE_FAILED,
};
use super::event::Event;
use super::key::AuditKey;

/// A file sink is fsynced at most this often (and when the log closes): an OS crash loses at
/// most this much of the log; a process crash loses nothing already written.
pub const FSYNC_INTERVAL: Duration = Duration::from_secs(1);

/// Lines are written once this much is batched, even if the queue never empties.
pub const BATCH_BYTES: usize = 64 << 10;

/// Write failures are logged at most this often.
const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);

pub enum Msg {
    Event(Box<Event>, SystemTime),
    /// Write and fsync everything queued before this message, then answer.
    Flush(SyncSender<()>),
}

pub enum Sink {
    File { file: File, path: PathBuf },
    Stdout,
}

impl Sink {
    fn write_batch(&mut self, batch: &[u8]) -> io::Result<()> {
        match self {
            Sink::File { file, .. } => file.write_all(batch),
            Sink::Stdout => {
                // Whole lines under the stdout lock: nothing else printed by this process can
                // land inside an audit line.
                let mut out = io::stdout().lock();
                out.write_all(batch)?;
                out.flush()
            }
        }
    }

    fn sync(&mut self) -> io::Result<()> {
        match self {
            Sink::File { file, .. } => file.sync_data(),
            Sink::Stdout => Ok(()),
        }
    }

    /// The segment to start after a failed write. A file's end is read back, so the new
    /// segment links to exactly what reached it; a stream's end cannot be, so its new segment
    /// is unlinked (and `verify` reports it).
    fn recover(&mut self, key: &AuditKey) -> Segment {
        let unlinked = || Segment::new(Previous::Unlinked, Some(REASON_WRITE_FAILED), true);
        match self {
            Sink::File { file, path } => {
                next_segment(file, path, key, Cause::WriteFailed).unwrap_or_else(|e| {
                    tracing::error!(
                        file = %path.display(),
                        error = %e,
                        "cannot link the audit log after a write error; starting an unlinked segment (audit verify reports it)"
                    );
                    unlinked()
                })
            }
            Sink::Stdout => unlinked(),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Sink::File { path, .. } => path.display().to_string(),
            Sink::Stdout => "stdout".into(),
        }
    }
}

/// An opened sink and the segment the writer starts in it.
pub struct Opened {
    pub sink: Sink,
    pub segment: Segment,
}

/// A new segment: its `chain_start` line and the chain that line begins.
pub struct Segment {
    pub chain: Chain,
    pub start: Event,
    /// The sink does not end with a newline (a torn line): one goes first.
    pub needs_newline: bool,
}

impl Segment {
    pub fn new(previous: Previous, reason: Option<&'static str>, needs_newline: bool) -> Self {
        Self {
            chain: Chain::after(previous),
            start: chain_start(previous, reason),
            needs_newline,
        }
    }
}

/// Why a writer starts a segment in a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    /// The process opened the log.
    Open,
    /// A write failed: what reached the file is read back, so the link is exact.
    WriteFailed,
}

/// Opens (creating with mode 0600) the log at `path` and starts a segment after its last line.
pub fn open_file(path: &Path, key: &AuditKey) -> Result<Opened, String> {
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true).append(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut file = opts
        .open(path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let segment = next_segment(&mut file, path, key, Cause::Open)?;
    Ok(Opened {
        sink: Sink::File {
            file,
            path: path.to_path_buf(),
        },
        segment,
    })
}

/// Reads the end of the log (no more than [`chain::TAIL_LINES`] lines, see there) and decides
/// where the next segment starts.
fn next_segment(
    file: &mut File,
    path: &Path,
    key: &AuditKey,
    cause: Cause,
) -> Result<Segment, String> {
    let len = file
        .metadata()
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .len();
    let tail = chain::read_tail(file, len)
        .map_err(|e| format!("cannot read the end of {}: {e}", path.display()))?;
    link_after(path, len, &tail, key, cause)
}

/// The segment that continues a file of length `len` ending in `tail`: linked to the last
/// audit line; past a last line that is not one (a torn write), linked to the audit line
/// before it and marked `last_line_unparsable`; `"unlinked"` when no audit line is within
/// reach. Refuses a last audit line that does not verify with `key`: continuing under another
/// key would make the whole log unverifiable.
fn link_after(
    path: &Path,
    len: u64,
    tail: &Tail,
    key: &AuditKey,
    cause: Cause,
) -> Result<Segment, String> {
    let clean_reason = match cause {
        Cause::Open => None,
        Cause::WriteFailed => Some(REASON_WRITE_FAILED),
    };
    if len == 0 {
        return Ok(Segment::new(Previous::None, clean_reason, false));
    }
    let needs_newline = !tail.ends_with_newline;
    let parsed: Vec<_> = tail
        .lines
        .iter()
        .map(|l| chain::parse_line(l).ok())
        .collect();
    let found = parsed
        .iter()
        .enumerate()
        .rev()
        .find_map(|(i, p)| p.as_ref().map(|p| (i, p)));
    let (at, target, reason) = match found {
        Some((at, target)) if at + 1 == parsed.len() => (at, target, clean_reason),
        // One line after the last audit line: a torn write, or a truncation.
        Some((at, target)) if at + 2 == parsed.len() => {
            tracing::warn!(
                file = %path.display(),
                "the audit log's last line is not a complete audit line (torn write or truncation); the new segment links to the line before it (audit verify reports it)"
            );
            (at, target, Some(REASON_LAST_LINE_UNPARSABLE))
        }
        _ => {
            let reason = if parsed.is_empty() {
                REASON_LAST_LINE_TOO_LONG
            } else {
                REASON_LAST_LINE_UNPARSABLE
            };
            tracing::warn!(
                file = %path.display(),
                reason,
                "no audit line within reach of the audit log's end; starting an unlinked segment (audit verify reports it)"
            );
            return Ok(Segment::new(
                Previous::Unlinked,
                Some(reason),
                needs_newline,
            ));
        }
    };
    // Check the linked line with this key where its predecessor's MAC is at hand.
    let previous = target.chained_over().or_else(|| {
        at.checked_sub(1)
            .and_then(|i| parsed[i].as_ref())
            .map(|p| p.mac)
    });
    if let Some(previous) = previous {
        if !key.verify(&previous, target.body, &target.mac) {
            return Err(format!(
                "the last audit line of {} does not verify with this audit key: the key was \
                 changed (start a new log file for a new key) or the line was altered (check \
                 with `fieldseal audit verify`)",
                path.display()
            ));
        }
    }
    Ok(Segment::new(
        Previous::Link {
            seq: target.seq,
            mac: target.mac,
        },
        reason,
        needs_newline,
    ))
}

pub fn chain_start(previous: Previous, reason: Option<&'static str>) -> Event {
    Event::ChainStart { previous, reason }
}

/// Counters shared by the log handle and its writer.
#[derive(Default)]
pub struct Stats {
    pub written: AtomicU64,
    /// Events refused because the queue was full (or the writer had stopped).
    pub dropped: AtomicU64,
    /// Events lost because the sink failed to take them.
    pub lost: AtomicU64,
}

pub struct Writer {
    pub key: AuditKey,
    pub opened: Opened,
    pub stats: Arc<Stats>,
}

struct State {
    key: AuditKey,
    sink: Sink,
    chain: Chain,
    batch: Vec<u8>,
    batch_events: u64,
    unsynced: bool,
    last_sync: Instant,
    /// The last write failed: what reached the sink is unknown here, so the next line starts
    /// a new segment, linked to what the file's end says.
    broken: bool,
    last_error_log: Option<Instant>,
    stats: Arc<Stats>,
}

impl Writer {
    pub fn run(self, rx: Receiver<Msg>) {
        let Writer { key, opened, stats } = self;
        let mut s = State {
            key,
            sink: opened.sink,
            chain: Chain::fresh(),
            batch: Vec::with_capacity(BATCH_BYTES),
            batch_events: 0,
            unsynced: false,
            last_sync: Instant::now(),
            broken: false,
            last_error_log: None,
            stats,
        };
        s.begin(opened.segment);
        // The opening line counts as written (or lost) like an event; a segment started after
        // a write error does not, so the counts say what happened to events.
        s.batch_events += 1;
        loop {
            let msg = match rx.try_recv() {
                Ok(m) => m,
                Err(TryRecvError::Disconnected) => break,
                Err(TryRecvError::Empty) => {
                    s.write_out();
                    let next = if s.unsynced {
                        let wait = FSYNC_INTERVAL.saturating_sub(s.last_sync.elapsed());
                        match rx.recv_timeout(wait) {
                            Ok(m) => Ok(m),
                            Err(RecvTimeoutError::Timeout) => {
                                s.sync();
                                continue;
                            }
                            Err(RecvTimeoutError::Disconnected) => Err(()),
                        }
                    } else {
                        rx.recv().map_err(|_| ())
                    };
                    match next {
                        Ok(m) => m,
                        Err(()) => break,
                    }
                }
            };
            match msg {
                Msg::Event(event, time) => {
                    s.append(time, &event);
                    if s.batch.len() >= BATCH_BYTES {
                        s.write_out();
                    }
                }
                Msg::Flush(ack) => {
                    s.write_out();
                    s.sync();
                    let _ = ack.send(());
                }
            }
        }
        s.write_out();
        s.sync();
    }
}

impl State {
    fn append(&mut self, time: SystemTime, event: &Event) {
        if self.broken {
            self.broken = false;
            let segment = self.sink.recover(&self.key);
            self.begin(segment);
        }
        self.chain.append(&self.key, time, event, &mut self.batch);
        self.batch_events += 1;
    }

    /// Writes a segment's `chain_start` line (after a newline that ends a torn line) and
    /// continues its chain.
    fn begin(&mut self, segment: Segment) {
        self.chain = segment.chain;
        if segment.needs_newline {
            self.batch.push(b'\n');
        }
        self.chain.append(
            &self.key,
            SystemTime::now(),
            &segment.start,
            &mut self.batch,
        );
    }

    fn write_out(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        match self.sink.write_batch(&self.batch) {
            Ok(()) => {
                self.stats
                    .written
                    .fetch_add(self.batch_events, Ordering::Relaxed);
                self.unsynced = true;
                if self.last_sync.elapsed() >= FSYNC_INTERVAL {
                    self.sync();
                }
            }
            Err(e) => {
                let lost = self
                    .stats
                    .lost
                    .fetch_add(self.batch_events, Ordering::Relaxed)
                    + self.batch_events;
                self.broken = true;
                if self.error_log_due() {
                    tracing::error!(
                        sink = %self.sink.describe(),
                        error = %e,
                        lost_total = lost,
                        "cannot write the audit log; events lost (the next line starts a new chain segment)"
                    );
                }
            }
        }
        self.batch.clear();
        self.batch_events = 0;
    }

    fn sync(&mut self) {
        if !self.unsynced {
            return;
        }
        self.unsynced = false;
        self.last_sync = Instant::now();
        if let Err(e) = self.sink.sync() {
            if self.error_log_due() {
                tracing::error!(sink = %self.sink.describe(), error = %e, "cannot fsync the audit log");
            }
        }
    }

    /// Whether a write error may be logged now (at most one per [`ERROR_LOG_INTERVAL`]).
    fn error_log_due(&mut self) -> bool {
        let due = self
            .last_error_log
            .is_none_or(|t| t.elapsed() >= ERROR_LOG_INTERVAL);
        if due {
            self.last_error_log = Some(Instant::now());
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufReader, Write as _};

    use super::*;
    use crate::crypto::keyring::KeyState;

    const KEY: [u8; 32] = [0x42; 32];

    fn event(i: usize) -> Event {
        Event::KeyRemoved {
            kid: format!("k{i}"),
            state: KeyState::Disabled,
        }
    }

    /// Appends `segment` and `events` events to the file, as the writer would.
    fn write_segment(path: &Path, key: &AuditKey, segment: Segment, events: usize) {
        let mut out = Vec::new();
        if segment.needs_newline {
            out.push(b'\n');
        }
        let mut chain = segment.chain;
        chain.append(key, SystemTime::now(), &segment.start, &mut out);
        for i in 0..events {
            chain.append(key, SystemTime::now(), &event(i), &mut out);
        }
        append(path, &out);
    }

    fn append(path: &Path, bytes: &[u8]) {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .unwrap();
        f.write_all(bytes).unwrap();
    }

    fn recover(path: &Path, key: &AuditKey) -> Segment {
        let mut sink = Sink::File {
            file: std::fs::OpenOptions::new()
                .read(true)
                .append(true)
                .open(path)
                .unwrap(),
            path: path.to_path_buf(),
        };
        sink.recover(key)
    }

    fn previous(segment: &Segment) -> (Previous, Option<&'static str>) {
        match segment.start {
            Event::ChainStart { previous, reason } => (previous, reason),
            _ => panic!("not a chain_start"),
        }
    }

    fn verify_file(path: &Path, key: &AuditKey) -> Result<chain::Verified, chain::Broken> {
        let file = BufReader::new(File::open(path).unwrap());
        match chain::verify(key, file) {
            Ok(v) => Ok(v),
            Err(chain::VerifyError::Broken(b)) => Err(b),
            Err(chain::VerifyError::Io(e)) => panic!("{e}"),
        }
    }

    /// After a failed write the writer reads the file's end back: a whole last line gets a
    /// clean link (`write_failed`, a note in `verify`); a partial one, as a short write leaves,
    /// gets a link past it (`last_line_unparsable`, a break in `verify`).
    #[test]
    fn after_a_write_error_the_new_segment_links_to_what_reached_the_file() {
        let key = AuditKey::from_bytes(&KEY);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        write_segment(&path, &key, Segment::new(Previous::None, None, false), 2);
        let text = std::fs::read_to_string(&path).unwrap();
        let last = chain::parse_line(text.lines().last().unwrap().as_bytes())
            .unwrap()
            .mac;

        let segment = recover(&path, &key);
        assert_eq!(
            previous(&segment),
            (
                Previous::Link { seq: 3, mac: last },
                Some(REASON_WRITE_FAILED)
            )
        );
        assert!(!segment.needs_newline);
        write_segment(&path, &key, segment, 1);
        let v = verify_file(&path, &key).unwrap();
        assert_eq!((v.lines, v.segments), (5, 2));
        assert_eq!(v.notes.len(), 1);
        assert!(v.notes[0].starts_with("line 4: ") && v.notes[0].contains("write error"));

        // Half of the next line reached the file.
        let mut torn = Vec::new();
        Chain::resume(5, [7; 32]).append(&key, SystemTime::now(), &event(9), &mut torn);
        append(&path, &torn[..torn.len() / 2]);
        let text = std::fs::read_to_string(&path).unwrap();
        let fifth = chain::parse_line(text.lines().nth(4).unwrap().as_bytes())
            .unwrap()
            .mac;
        let segment = recover(&path, &key);
        assert_eq!(
            previous(&segment),
            (
                Previous::Link { seq: 5, mac: fifth },
                Some(REASON_LAST_LINE_UNPARSABLE)
            )
        );
        assert!(segment.needs_newline);
        write_segment(&path, &key, segment, 1);
        let b = verify_file(&path, &key).unwrap_err();
        assert_eq!(b.line, 6);
        assert!(b.why.contains("continues after seq 5"), "{}", b.why);
    }

    /// A stream cannot be read back: after a failed write its new segment is unlinked.
    #[test]
    fn after_a_write_error_on_stdout_the_new_segment_is_unlinked() {
        let segment = Sink::Stdout.recover(&AuditKey::from_bytes(&KEY));
        assert_eq!(
            previous(&segment),
            (Previous::Unlinked, Some(REASON_WRITE_FAILED))
        );
        assert!(segment.needs_newline);
    }

    /// The line a new segment links to is checked with the key, also past a torn line.
    #[test]
    fn a_log_written_with_another_key_is_not_continued_even_past_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let other = AuditKey::from_bytes(&[0x43; 32]);
        write_segment(&path, &other, Segment::new(Previous::None, None, false), 2);
        append(&path, b"{\"seq\":4,\"ti");
        let err = open_file(&path, &AuditKey::from_bytes(&KEY))
            .err()
            .expect("refused");
        assert!(err.contains("does not verify with this audit key"), "{err}");
        // With the right key, the torn line is linked past.
        let opened = open_file(&path, &other).unwrap();
        assert!(matches!(
            previous(&opened.segment),
            (
                Previous::Link { seq: 3, .. },
                Some(REASON_LAST_LINE_UNPARSABLE)
            )
        ));
    }
}
