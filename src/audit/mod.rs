//! The tamper-evident audit log: one JSON line per field-operation batch and per key event,
//! each carrying an HMAC-SHA256 chained over the previous line's MAC (docs/audit.md).
//!
//! The request path only hands a [`FieldsEvent`] to a bounded queue ([`AuditLog::fields`]);
//! a dedicated writer thread formats, MACs and writes the lines. Nothing here ever holds a
//! field value, a token or a secret: events carry paths, actions, key ids and outcomes.

pub(crate) mod chain;
mod event;
pub(crate) mod key;
mod writer;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crate::config::settings::{AuditSettings, AuditSinkTarget};
use crate::crypto::Keyring;
use crate::secret_file::Exposure;

pub use chain::{
    hex, parse_line, verify, Broken, Mac, Previous, Verified, VerifyError, MAC_SUFFIX_LEN,
};
pub use event::{CallerInfo, Event, FieldFailureInfo, FieldsEvent, FileEvent, KeyInfo, Outcome};
pub use key::{AuditKey, AUDIT_KEY_LEN};
pub use writer::{BATCH_BYTES, FSYNC_INTERVAL};

use writer::{Msg, Opened, Segment, Sink, Stats, Writer};

/// Events the queue holds before new ones are dropped (and counted).
pub const QUEUE_CAPACITY: usize = 65_536;

/// A full queue is logged at most this often.
const DROP_WARN_INTERVAL: Duration = Duration::from_secs(1);

/// The open audit log. Dropping it drains the queue, writes and fsyncs everything, and
/// stops the writer thread.
pub struct AuditLog {
    tx: Option<SyncSender<Msg>>,
    writer: Option<JoinHandle<()>>,
    stats: Arc<Stats>,
    sink: String,
    epoch: Instant,
    /// Milliseconds after `epoch` (plus one; 0 = never) of the last "queue full" warning.
    last_drop_warning: AtomicU64,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("sink", &self.sink)
            .finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Reads the audit key and opens the sink named by `settings` (startup fails if either
    /// cannot be used). Every open starts a new segment with a `chain_start` line: in a file
    /// that already holds a chain it records where that chain ended (read back from the end of
    /// the file) and continues it, so `verify` can tell that nothing was cut between the two.
    pub fn open(settings: &AuditSettings) -> Result<Self, String> {
        let (key, exposure) = AuditKey::load(&settings.key_file)?;
        if exposure == Exposure::GroupReadable {
            tracing::warn!(
                file = %settings.key_file.display(),
                "the audit key file is readable by its group"
            );
        }
        let opened = match &settings.sink {
            // A stream cannot be read back: each process starts a new chain on it.
            AuditSinkTarget::Stdout => Opened {
                sink: Sink::Stdout,
                segment: Segment::new(Previous::None, None, false),
            },
            AuditSinkTarget::File(path) => writer::open_file(path, &key)?,
        };
        Self::start(key, opened)
    }

    fn start(key: AuditKey, opened: Opened) -> Result<Self, String> {
        let (tx, rx) = sync_channel(QUEUE_CAPACITY);
        let stats = Arc::new(Stats::default());
        let sink = opened.sink.describe();
        let writer = Writer {
            key,
            opened,
            stats: stats.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("fieldseal-audit".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| format!("cannot start the audit writer thread: {e}"))?;
        tracing::info!(sink = %sink, "audit log open");
        Ok(Self {
            tx: Some(tx),
            writer: Some(handle),
            stats,
            sink,
            epoch: Instant::now(),
            last_drop_warning: AtomicU64::new(0),
        })
    }

    /// Queues one request's `fields` event. Never blocks: returns `false` when the event was
    /// dropped because the queue is full (it is counted and the drop is logged).
    pub fn fields(&self, event: FieldsEvent) -> bool {
        self.send(Event::Fields(event))
    }

    /// A `file` event (`fieldseal file`).
    pub fn file(&self, event: FileEvent) -> bool {
        self.send(Event::File(event))
    }

    /// The startup `keyring_loaded` event (nothing when no keyring is configured).
    pub fn startup(&self, ring: Option<&Keyring>) {
        if let Some(ring) = ring {
            self.keyring_loaded(ring, "startup");
        }
    }

    /// `keyring_loaded`: ids, states, dates and the primary — never secrets. `reason` is
    /// `startup` or `reload`.
    pub fn keyring_loaded(&self, ring: &Keyring, reason: &str) {
        self.send(Event::keyring_loaded(ring, reason));
    }

    /// What changed from `old` to `new`: `rotation_detected` (a new primary), `key_retired`
    /// (a key became disabled), `key_state_changed` (other state changes), `key_added`,
    /// `key_removed`. Nothing when the keyrings agree.
    pub fn keyring_changed(&self, old: &Keyring, new: &Keyring) {
        for event in Event::keyring_changes(old, new) {
            self.send(event);
        }
    }

    /// A reload: `keyring_loaded` (reason `reload`), then what changed since `old`.
    pub fn keyring_reloaded(&self, old: Option<&Keyring>, new: &Keyring) {
        self.keyring_loaded(new, "reload");
        if let Some(old) = old {
            self.keyring_changed(old, new);
        }
    }

    /// Waits (up to `timeout`) until everything queued so far is written and fsynced. Blocks:
    /// not for the request path (tests, shutdown).
    pub fn flush(&self, timeout: Duration) -> bool {
        let Some(tx) = &self.tx else { return false };
        let (ack, done) = sync_channel(1);
        if tx.send(Msg::Flush(ack)).is_err() {
            return false;
        }
        done.recv_timeout(timeout).is_ok()
    }

    /// Events refused because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.stats.dropped.load(Ordering::Relaxed)
    }

    /// Events the sink failed to take (write errors).
    pub fn lost(&self) -> u64 {
        self.stats.lost.load(Ordering::Relaxed)
    }

    /// Events written to the sink.
    pub fn written(&self) -> u64 {
        self.stats.written.load(Ordering::Relaxed)
    }

    fn send(&self, event: Event) -> bool {
        let Some(tx) = &self.tx else { return false };
        match tx.try_send(Msg::Event(Box::new(event), SystemTime::now())) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.note_dropped();
                false
            }
        }
    }

    fn note_dropped(&self) {
        let total = self.stats.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        let now = self.epoch.elapsed().as_millis() as u64 + 1;
        let last = self.last_drop_warning.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= DROP_WARN_INTERVAL.as_millis() as u64;
        if due
            && self
                .last_drop_warning
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                sink = %self.sink,
                dropped_total = total,
                "audit log queue full: events dropped (counted, see fieldseal_audit_dropped_total)"
            );
        }
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(handle) = self.writer.take() {
            let _ = handle.join();
        }
        let (dropped, lost) = (self.dropped(), self.lost());
        if dropped + lost > 0 {
            tracing::warn!(
                sink = %self.sink,
                dropped,
                lost,
                written = self.written(),
                "audit log closed; some events were not written"
            );
        }
    }
}

#[cfg(test)]
mod tests;
