//! Freshness and replay protection for client-encrypted JWE values.
//!
//! A JWE is valid forever and anyone who captures one can resend it, so routes with
//! `request.max_age` also require two claims in the JWE protected header (which is
//! authenticated by the AEAD tag, so they cannot be altered without the key): `iat`, which
//! bounds *when* a value may be used, and `jti`, which makes each value usable *once*. `iat`
//! alone still allows replays inside the window; `jti` alone would force remembering every
//! `jti` forever. Together, a `jti` only has to be remembered until its `iat` falls out of the
//! window, which keeps the store bounded by rate × window.
//!
//! The window is `[now - max_age, now + MAX_FUTURE_SKEW_SECS]`: clients' clocks drift, so a
//! small future skew is tolerated, and each `jti` is kept until `iat + max_age + skew` so it
//! outlives every instant at which its `iat` could still be accepted.
//!
//! [`MemoryReplayStore`] keeps a 16-byte keyed digest (truncated HMAC-SHA256 under a random
//! per-process key) instead of the `jti`: entries are fixed-size whatever clients send, and
//! since attackers do not know the key they cannot aim `jti`s at one shard or one hash chain.
//! It is split into independently locked shards so worker threads rarely contend. When a shard
//! is full of live entries it fails closed ([`FreshnessError::StoreFull`]) rather than evicting:
//! forgetting a live `jti` would reopen its replay window. `jti`s are never logged: they are
//! client-chosen and may be correlatable.
//!
//! Several replicas must share one store, or a value replayed against another replica would be
//! accepted: [`redis::RedisReplayStore`] (`replay.store: redis`). Its calls are network round
//! trips, so they are not made while a body is being opened: [`admit`] does the time checks
//! and queues each `jti` as a [`Claim`] on the request's [`Deferred`], and the proxy settles
//! them all in one pipelined round trip before anything is forwarded
//! ([`redis::RedisReplayStore::settle`]). The in-memory store answers at once.

pub mod redis;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::hmac;
use zeroize::Zeroizing;

/// Allowed clock skew: an `iat` up to this many seconds in the future is accepted.
pub const MAX_FUTURE_SKEW_SECS: u64 = 60;
/// Default capacity of the in-memory store (entries).
pub const DEFAULT_CAPACITY: usize = 1 << 18;

/// Number of shards; a power of two so the shard is a mask of a digest byte.
const SHARDS: usize = 16;
/// Bytes of the HMAC kept: 128 bits make accidental collisions (false replays) negligible.
const DIGEST_LEN: usize = 16;
type Digest = [u8; DIGEST_LEN];

/// Why a value failed the freshness check; every variant is a client-visible rejection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FreshnessError {
    MissingIat,
    Stale,
    FromTheFuture,
    MissingJti,
    Replayed,
    StoreFull,
}

impl FreshnessError {
    /// The reason, in the crate's one vocabulary.
    pub fn reason(&self) -> crate::reason::Reason {
        use crate::reason::Reason;
        match self {
            Self::MissingIat => Reason::MissingIat,
            Self::Stale => Reason::Stale,
            Self::FromTheFuture => Reason::IatInFuture,
            Self::MissingJti => Reason::MissingJti,
            Self::Replayed => Reason::Replayed,
            Self::StoreFull => Reason::ReplayCacheFull,
        }
    }
}

impl std::fmt::Display for FreshnessError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::MissingIat => "the value has no integer iat",
            Self::Stale => "the value's iat is older than the route's max_age",
            Self::FromTheFuture => "the value's iat is too far in the future",
            Self::MissingJti => "the value has no jti",
            Self::Replayed => "the value's jti was already used",
            Self::StoreFull => "the replay cache is full of unexpired entries",
        })
    }
}

impl std::error::Error for FreshnessError {}

/// Remembers which `jti`s were used until they expire. Implementations: the in-memory
/// store below; a shared store (Redis `SET key 1 NX EXAT expires_at`) for several replicas.
pub trait ReplayStore: Send + Sync + std::fmt::Debug {
    /// Atomically records `jti` until `expires_at` (unix seconds) unless it is already recorded
    /// and unexpired at `now`. Ok(true) = newly recorded; Ok(false) = already seen (a replay);
    /// Err(StoreFull) when it cannot record without forgetting an unexpired entry (fail closed:
    /// never evict live entries). Must be atomic so concurrent replays cannot both succeed.
    fn remember(&self, jti: &str, now: u64, expires_at: u64) -> Result<bool, FreshnessError>;
    /// Number of live entries (for a metric).
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Default replay window when no route sets `max_age`: a `jti` is remembered at least this
/// long after its first use (contract §3 of 1.1: at least the largest `max_age`, 300 s when
/// none is configured).
pub const DEFAULT_WINDOW_SECS: u64 = 300;

/// The process-wide replay check every opened client value goes through (contract §3 of 1.1):
/// a `jti` used once is refused on *any* route within the window, not only on the route that
/// first saw it; otherwise a value refused as replayed on a `max_age` route would be accepted
/// again on any other decrypt path.
#[derive(Clone, Copy)]
pub struct Replay<'a> {
    pub store: &'a dyn ReplayStore,
    /// How long a `jti` is remembered after its use: the largest `max_age` configured, at
    /// least [`DEFAULT_WINDOW_SECS`].
    pub window: Duration,
    /// Unix seconds, read once per request.
    pub now: u64,
    /// With a shared store: where this request's `jti`s are queued, to be settled before it
    /// is forwarded. `None`: `store` answers at once.
    pub deferred: Option<&'a Deferred>,
}

/// One `jti` to record in the shared store, and where it came from (for the refusal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub jti: String,
    /// Unix seconds until which it must be remembered.
    pub expires_at: u64,
    /// It came through a route with `max_age` (freshness required): without the shared store
    /// it is refused, never checked against this process alone.
    pub fresh: bool,
    /// The field it was opened at (`$` for an envelope), and the key that opened it.
    pub field: String,
    pub kid: Option<String>,
    /// It was a whole-body envelope's: refused as `envelope_rejected`, as the memory store's
    /// refusal is (a replica must not answer differently from another).
    pub envelope: bool,
}

/// The `jti`s one request opened, waiting for the shared store. Locked only by the request's
/// own task (uncontended); a `Mutex` keeps the request's future `Send`.
#[derive(Debug, Default)]
pub struct Deferred(Mutex<Vec<Claim>>);

impl Deferred {
    fn push(&self, claim: Claim) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(claim);
    }

    /// The queued claims, leaving none.
    pub fn take(&self) -> Vec<Claim> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// Where a value being admitted was opened: its field and key, named in a refusal.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    pub field: &'a str,
    pub kid: Option<&'a str>,
    pub envelope: bool,
}

/// Admits one opened value: on a route with `max_age`, `iat` must lie in
/// `[now - max_age, now + skew]` and a `jti` is mandatory; anywhere, a `jti` it carries is
/// recorded and a second use within the window is refused.
///
/// The cheap time checks come first so stale or future values never reach (or fill) the
/// store. Arithmetic saturates because `iat` is attacker-chosen; a negative `iat` is stale.
pub fn admit(
    iat: Option<i64>,
    jti: Option<&str>,
    max_age: Option<Duration>,
    replay: &Replay<'_>,
    origin: Origin<'_>,
) -> Result<(), FreshnessError> {
    let now = replay.now;
    let mut remember_until = now;
    if let Some(max_age) = max_age {
        let iat = iat.ok_or(FreshnessError::MissingIat)?;
        let iat = u64::try_from(iat).map_err(|_| FreshnessError::Stale)?;
        if iat > now.saturating_add(MAX_FUTURE_SKEW_SECS) {
            return Err(FreshnessError::FromTheFuture);
        }
        let max_age = max_age.as_secs();
        if iat.saturating_add(max_age) < now {
            return Err(FreshnessError::Stale);
        }
        // Outlive every instant at which this `iat` is still acceptable here.
        remember_until = iat.saturating_add(max_age);
    }
    let jti = match jti.filter(|j| !j.is_empty()) {
        Some(jti) => jti,
        None if max_age.is_some() => return Err(FreshnessError::MissingJti),
        // Nothing to recognise the value by; only `max_age` routes demand one.
        None => return Ok(()),
    };
    let expires_at = remember_until
        .max(now.saturating_add(replay.window.as_secs()))
        .saturating_add(MAX_FUTURE_SKEW_SECS);
    if let Some(deferred) = replay.deferred {
        deferred.push(Claim {
            jti: jti.to_string(),
            expires_at,
            fresh: max_age.is_some(),
            field: origin.field.to_string(),
            kid: origin.kid.map(str::to_string),
            envelope: origin.envelope,
        });
        return Ok(());
    }
    if replay.store.remember(jti, now, expires_at)? {
        Ok(())
    } else {
        Err(FreshnessError::Replayed)
    }
}

/// Checks `iat`/`jti` for a route with `max_age` whose window is the only one, and records
/// the `jti` (the store's own tests; the proxy calls [`admit`]).
pub fn check(
    iat: Option<i64>,
    jti: Option<&str>,
    max_age: Duration,
    now: u64,
    store: &dyn ReplayStore,
) -> Result<(), FreshnessError> {
    let replay = Replay {
        store,
        window: Duration::ZERO,
        now,
        deferred: None,
    };
    let origin = Origin {
        field: "$",
        kid: None,
        envelope: false,
    };
    admit(iat, jti, Some(max_age), &replay, origin)
}

/// Current unix time in seconds. A clock before 1970 yields 0, which makes every `iat` look
/// future-dated: that fails closed instead of panicking.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// One independently locked part of the store. `expiries` holds one entry per `map` entry
/// (each insert pushes once, and only absent keys are inserted), so both stay bounded.
#[derive(Debug, Default)]
struct Shard {
    map: HashMap<Digest, u64>,
    expiries: BinaryHeap<Reverse<(u64, Digest)>>,
}

impl Shard {
    /// Drops entries with `expires_at <= now`, oldest first: amortised O(log n) per insert.
    fn purge(&mut self, now: u64) {
        while let Some(&Reverse((expires_at, digest))) = self.expiries.peek() {
            if expires_at > now {
                break;
            }
            self.expiries.pop();
            if self.map.get(&digest) == Some(&expires_at) {
                self.map.remove(&digest);
            }
        }
    }
}

/// Bounded in-memory store for a single replica.
///
/// Memory is bounded by `capacity` entries whatever clients send: at most ≈ 75 bytes each with
/// table slack, so ≈ 19 MiB for [`DEFAULT_CAPACITY`]. The trade-off of failing closed: every entry needs a
/// successfully decrypted JWE, but anyone holding the public key can make those, so a flood
/// of fresh valid values can fill the store and make further requests on `max_age` routes fail
/// with `replay_cache_full` until entries expire. Size it to expected rate × (max_age + skew).
#[derive(Debug)]
pub struct MemoryReplayStore {
    /// Hidden from `Debug` by aws-lc-rs; never leaves the process.
    key: hmac::Key,
    shard_capacity: usize,
    shards: Vec<Mutex<Shard>>,
}

impl MemoryReplayStore {
    /// A store of at most `capacity` entries (split evenly, rounded up, across the shards;
    /// 0 rejects everything).
    ///
    /// # Panics
    /// If the OS random source fails: without a secret key the digests would be predictable.
    pub fn new(capacity: usize) -> Self {
        let mut raw = Zeroizing::new([0u8; 32]);
        getrandom::fill(&mut raw[..]).expect("the OS random source failed");
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, &raw[..]),
            shard_capacity: capacity.div_ceil(SHARDS),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }

    /// The keyed digest of `jti` and the shard it belongs to.
    fn locate(&self, jti: &str) -> (Digest, usize) {
        let tag = hmac::sign(&self.key, jti.as_bytes());
        let mut digest = [0u8; DIGEST_LEN];
        digest.copy_from_slice(&tag.as_ref()[..DIGEST_LEN]);
        (digest, usize::from(digest[0]) % SHARDS)
    }
}

impl ReplayStore for MemoryReplayStore {
    fn remember(&self, jti: &str, now: u64, expires_at: u64) -> Result<bool, FreshnessError> {
        let (digest, index) = self.locate(jti);
        // The heap is pushed before the map is written, so a panic in between leaves only a
        // heap entry without a map entry, which `purge` tolerates: poisoning is recoverable.
        let mut shard = self.shards[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        shard.purge(now);
        if shard.map.get(&digest).is_some_and(|&e| e > now) {
            return Ok(false);
        }
        if expires_at <= now {
            return Ok(true); // already expired: counts as absent at once, nothing to keep
        }
        if shard.map.len() >= self.shard_capacity {
            return Err(FreshnessError::StoreFull);
        }
        shard.expiries.push(Reverse((expires_at, digest)));
        shard.map.insert(digest, expires_at);
        Ok(true)
    }

    /// Entries held; expired ones are purged lazily on the next insert into their shard.
    fn len(&self) -> usize {
        let shard_len =
            |s: &Mutex<Shard>| s.lock().unwrap_or_else(PoisonError::into_inner).map.len();
        self.shards.iter().map(shard_len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::FreshnessError::{
        FromTheFuture, MissingIat, MissingJti, Replayed, Stale, StoreFull,
    };
    use super::*;
    use std::sync::{Arc, Barrier};

    const NOW: u64 = 1_700_000_000;
    const T: i64 = NOW as i64;
    const AGE: Duration = Duration::from_secs(300);

    fn at(store: &MemoryReplayStore, iat: i64, jti: &str, now: u64) -> Result<(), FreshnessError> {
        check(Some(iat), Some(jti), AGE, now, store)
    }

    /// `per_shard` distinct jtis for every shard, found by search since the key is random.
    fn jtis_per_shard(store: &MemoryReplayStore, per_shard: usize) -> Vec<Vec<String>> {
        let mut out = vec![Vec::new(); SHARDS];
        for i in 0.. {
            let jti = format!("jti-{i}");
            let list = &mut out[store.locate(&jti).1];
            if list.len() < per_shard {
                list.push(jti);
            }
            if out.iter().all(|l| l.len() == per_shard) {
                break;
            }
        }
        out
    }

    #[test]
    fn fresh_accepted_once_then_replay_rejected() {
        let store = MemoryReplayStore::new(DEFAULT_CAPACITY);
        assert_eq!(at(&store, T, "a", NOW), Ok(()));
        assert_eq!(at(&store, T, "a", NOW + 10), Err(Replayed));
        assert_eq!(at(&store, T, "b", NOW), Ok(()));
        assert_eq!(store.len(), 2);
    }

    #[test]
    fn same_jti_accepted_again_after_expiry() {
        let store = MemoryReplayStore::new(DEFAULT_CAPACITY);
        assert_eq!(at(&store, T, "a", NOW), Ok(()));
        let later = NOW + AGE.as_secs() + MAX_FUTURE_SKEW_SECS;
        assert_eq!(at(&store, later as i64 - 1, "a", later - 1), Err(Replayed));
        assert_eq!(at(&store, later as i64, "a", later), Ok(()));
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn missing_stale_and_future_rejected() {
        let store = MemoryReplayStore::new(DEFAULT_CAPACITY);
        assert_eq!(check(None, Some("a"), AGE, NOW, &store), Err(MissingIat));
        assert_eq!(check(Some(T), None, AGE, NOW, &store), Err(MissingJti));
        assert_eq!(check(Some(T), Some(""), AGE, NOW, &store), Err(MissingJti));
        assert_eq!(at(&store, T - 3600, "a", NOW), Err(Stale));
        assert_eq!(at(&store, T + 3600, "a", NOW), Err(FromTheFuture));
        assert!(store.is_empty(), "rejected values must not be recorded");
        assert_eq!(FromTheFuture.reason(), "iat_in_future");
        assert_eq!(StoreFull.reason(), "replay_cache_full");
    }

    #[test]
    fn window_boundaries() {
        let store = MemoryReplayStore::new(DEFAULT_CAPACITY);
        let age = AGE.as_secs() as i64;
        assert_eq!(at(&store, T - age, "oldest", NOW), Ok(()));
        assert_eq!(at(&store, T - age - 1, "older", NOW), Err(Stale));
        assert_eq!(at(&store, T + 60, "skewed", NOW), Ok(()));
        assert_eq!(at(&store, T + 61, "future", NOW), Err(FromTheFuture));
    }

    #[test]
    fn full_store_fails_closed_until_entries_expire() {
        let store = MemoryReplayStore::new(32);
        let jtis = jtis_per_shard(&store, 3);
        for list in &jtis {
            assert_eq!(store.remember(&list[0], NOW, NOW + 10), Ok(true));
            assert_eq!(store.remember(&list[1], NOW, NOW + 100), Ok(true));
        }
        assert_eq!(store.len(), 32);
        for list in &jtis {
            assert_eq!(store.remember(&list[2], NOW, NOW + 10), Err(StoreFull));
            // A replay is still reported as such when the shard is full.
            assert_eq!(store.remember(&list[1], NOW, NOW + 10), Ok(false));
        }
        // At NOW + 10 each shard's first entry has expired: any remember purges its shard.
        let later = NOW + 10;
        assert_eq!(store.remember(&jtis[0][1], later, NOW + 50), Ok(false));
        assert_eq!(store.len(), 31);
        assert_eq!(store.remember(&jtis[0][2], later, NOW + 50), Ok(true));
        assert_eq!(store.remember(&jtis[0][0], later, NOW + 50), Err(StoreFull));
        assert_eq!(store.remember(&jtis[1][0], later, NOW + 50), Ok(true));
        assert_eq!(store.len(), 32);
    }

    #[test]
    fn concurrent_same_jti_accepted_exactly_once() {
        let store = Arc::new(MemoryReplayStore::new(DEFAULT_CAPACITY));
        let barrier = Arc::new(Barrier::new(8));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let (store, barrier) = (Arc::clone(&store), Arc::clone(&barrier));
                std::thread::spawn(move || {
                    barrier.wait();
                    (0..200)
                        .map(|i| at(&store, T, &format!("j{i}"), NOW))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        for i in 0..200 {
            let ok = results.iter().filter(|r| r[i].is_ok()).count();
            assert_eq!(ok, 1, "jti j{i} accepted {ok} times");
            assert!(results
                .iter()
                .all(|r| r[i].is_ok() || r[i] == Err(Replayed)));
        }
        assert_eq!(store.len(), 200);
    }

    #[test]
    fn extreme_values_do_not_panic() {
        let store = MemoryReplayStore::new(DEFAULT_CAPACITY);
        let huge = Duration::from_secs(u64::MAX);
        assert_eq!(
            check(Some(i64::MIN), Some("a"), huge, NOW, &store),
            Err(Stale)
        );
        assert_eq!(check(Some(-1), Some("a"), AGE, 0, &store), Err(Stale));
        let max = Some(i64::MAX);
        assert_eq!(check(max, Some("a"), huge, NOW, &store), Err(FromTheFuture));
        let late = u64::MAX - 100;
        assert_eq!(check(max, Some("b"), huge, late, &store), Ok(()));
        assert_eq!(check(Some(0), Some("c"), huge, late, &store), Ok(()));
        assert_eq!(check(Some(0), Some("c"), huge, late, &store), Err(Replayed));
        let zero = MemoryReplayStore::new(0);
        assert_eq!(at(&zero, T, "a", NOW), Err(StoreFull));
    }
}
