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

use super::chain::{self, Chain, Tail, ZERO_MAC};
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

    pub fn describe(&self) -> String {
        match self {
            Sink::File { path, .. } => path.display().to_string(),
            Sink::Stdout => "stdout".into(),
        }
    }
}

/// An opened sink and where its chain stands.
pub struct Opened {
    pub sink: Sink,
    pub chain: Chain,
    /// The `chain_start` line to write first, if the log does not continue an existing chain.
    pub start: Option<Event>,
    /// The file does not end with a newline: one goes first.
    pub needs_newline: bool,
}

/// Opens (creating with mode 0600) or continues the log at `path`.
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
    let len = file
        .metadata()
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .len();
    let tail = chain::read_tail(&mut file, len)
        .map_err(|e| format!("cannot read the end of {}: {e}", path.display()))?;
    let (chain, start) = continue_chain(path, len, &tail, key)?;
    Ok(Opened {
        sink: Sink::File {
            file,
            path: path.to_path_buf(),
        },
        chain,
        start,
        needs_newline: !tail.ends_with_newline,
    })
}

fn continue_chain(
    path: &Path,
    len: u64,
    tail: &Tail,
    key: &AuditKey,
) -> Result<(Chain, Option<Event>), String> {
    if len == 0 {
        return Ok((Chain::fresh(), Some(chain_start("none", None))));
    }
    let last = tail.last.as_deref().map(chain::parse_line);
    let Some(Ok(last)) = last else {
        tracing::warn!(
            file = %path.display(),
            "the audit log's last line is not a complete audit line (torn write?); starting a new chain segment"
        );
        return Ok((
            Chain::fresh(),
            Some(chain_start("unverifiable", Some("last_line_unparsable"))),
        ));
    };
    // Where the line before is at hand, check that the last line verifies with this key:
    // continuing a chain under another key would make the whole log unverifiable.
    let previous = if last.starts_chain() {
        Some(ZERO_MAC)
    } else {
        tail.before
            .as_deref()
            .and_then(|b| chain::parse_line(b).ok())
            .map(|b| b.mac)
    };
    if let Some(previous) = previous {
        if !key.verify(&previous, last.body, &last.mac) {
            return Err(format!(
                "the last line of {} does not verify with this audit key: the key was changed \
                 (start a new log file for a new key) or the line was altered (check with \
                 `fieldseal audit verify`)",
                path.display()
            ));
        }
    }
    Ok((Chain::resume(last.seq, last.mac), None))
}

pub fn chain_start(previous: &'static str, reason: Option<&'static str>) -> Event {
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
    /// The last write failed: the chain on disk may end in a torn line, so the next line
    /// starts a new segment after a newline.
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
            chain: opened.chain,
            batch: Vec::with_capacity(BATCH_BYTES),
            batch_events: 0,
            unsynced: false,
            last_sync: Instant::now(),
            broken: false,
            last_error_log: None,
            stats,
        };
        if opened.needs_newline {
            s.batch.push(b'\n');
        }
        if let Some(start) = opened.start {
            s.append(SystemTime::now(), &start);
        }
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
            self.chain = Chain::fresh();
            self.batch.push(b'\n');
            let start = chain_start("unverifiable", Some("write_failed"));
            self.chain
                .append(&self.key, SystemTime::now(), &start, &mut self.batch);
        }
        self.chain.append(&self.key, time, event, &mut self.batch);
        self.batch_events += 1;
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
