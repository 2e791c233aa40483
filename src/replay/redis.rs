//! The replay store several replicas share, on Redis (`replay.store: redis`; docs/replicas.md).
//!
//! Each `jti` becomes one key, `<prefix>jti:<hex of the first 16 bytes of HMAC-SHA256(key,
//! jti)>`, set with `SET key 1 NX EXAT <expires_at>`: the reply `OK` means first use, a nil
//! reply means the key exists (a replay). `SET NX` is atomic on the server, so two replicas
//! opening the same value at once cannot both succeed, and Redis expires each key itself when
//! its `iat` can no longer be accepted anywhere. The HMAC key is shared by the replicas
//! (`replay.redis.key_file`) and never sent: the server holds fixed-size digests of the
//! client-chosen `jti`s, which it can neither read back nor correlate with a guessed `jti`.
//!
//! A request's claims are settled in one pipelined round trip, after every value of the
//! request has been opened and before anything is forwarded, bounded by `replay.redis.timeout`.
//!
//! **When Redis cannot answer** (down, timed out, refusing): a claim from a route with
//! `max_age` (freshness required) is refused with 503 `replay_check_unavailable` — such a route
//! promised a once-only value, and this replica alone cannot keep that promise across replicas.
//! Any other `jti` (the global replay check of contract §3) falls back to this process's own
//! memory store: replays against this replica are still refused, replays across replicas are
//! not caught until Redis returns. `fieldseal_replay_store_up` drops to 0 and
//! `fieldseal_replay_store_total{result}` counts each outcome; the connection is re-established
//! by itself, and the first answer from Redis sets the gauge back to 1.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use aws_lc_rs::hmac;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use zeroize::Zeroizing;

use super::{Claim, FreshnessError, ReplayStore};

/// Bytes of the HMAC kept in a key: 128 bits, as the memory store keeps.
const DIGEST_LEN: usize = 16;

/// Reconnection attempts per failed connection before the next request tries again: a few
/// quick ones ride out a Redis restart without holding requests for long.
const RECONNECT_RETRIES: usize = 3;

/// How to reach Redis, compiled from `replay.redis`.
#[derive(Clone)]
pub struct RedisSettings {
    /// `redis://host:port/db` (no credentials: those come from the files below).
    pub url: String,
    pub username: Option<String>,
    pub password: Option<Zeroizing<String>>,
    /// The HMAC key of the `jti` digests, the same on every replica.
    pub key: Zeroizing<[u8; 32]>,
    /// Prepended to every key (`fieldseal:`), so several deployments can share one Redis.
    pub prefix: String,
    /// Bound on one settle round trip (and on connecting).
    pub timeout: Duration,
}

impl std::fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSettings")
            .field("url", &self.url)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| ".."))
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl PartialEq for RedisSettings {
    /// Equal when a reload would change nothing (the secrets compared too, in constant time).
    fn eq(&self, other: &Self) -> bool {
        let same_secret =
            |a: &[u8], b: &[u8]| aws_lc_rs::constant_time::verify_slices_are_equal(a, b).is_ok();
        self.url == other.url
            && self.username == other.username
            && self.prefix == other.prefix
            && self.timeout == other.timeout
            && same_secret(&self.key[..], &other.key[..])
            && match (&self.password, &other.password) {
                (Some(a), Some(b)) => same_secret(a.as_bytes(), b.as_bytes()),
                (None, None) => true,
                _ => false,
            }
    }
}

/// Why a request's `jti`s were not all admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The `jti` was already used (on any replica, or in this request).
    Replayed(Claim),
    /// Redis did not answer and the claim needs it (a `max_age` route).
    Unavailable(Claim),
    /// Redis did not answer and this process's fallback store is full of live entries.
    StoreFull(Claim),
}

/// What settling one request's claims came to, for the caller's metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    pub outcome: Result<(), Refusal>,
    /// Whether Redis answered (the gauge), or the claims went to the fallback.
    pub answered: bool,
}

/// The shared store: one multiplexed connection per process, re-established by itself.
pub struct RedisReplayStore {
    conn: ConnectionManager,
    key: hmac::Key,
    prefix: String,
    timeout: Duration,
    /// Whether the last round trip was answered (transitions are logged once each).
    up: AtomicBool,
}

impl std::fmt::Debug for RedisReplayStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisReplayStore")
            .field("prefix", &self.prefix)
            .field("up", &self.up.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl RedisReplayStore {
    /// A store for `settings`. Nothing is sent yet (the first request connects), so a proxy
    /// starts while Redis is down and fails closed only where it must. Needs a tokio runtime
    /// context (the connection's task runs on it).
    pub fn new(settings: &RedisSettings) -> Result<Self, String> {
        let info = redis::IntoConnectionInfo::into_connection_info(settings.url.as_str())
            .map_err(|e| format!("replay.redis.url: {e}"))?;
        // No `CLIENT SETINFO` on connecting: one command fewer for the ACL to allow (and
        // Redis before 7.2 does not know it).
        let mut redis_info = info.redis_settings().clone().set_skip_set_lib_name();
        if let Some(user) = &settings.username {
            redis_info = redis_info.set_username(user);
        }
        if let Some(password) = &settings.password {
            redis_info = redis_info.set_password(password.as_str());
        }
        let client = redis::Client::open(info.set_redis_settings(redis_info))
            .map_err(|e| format!("replay.redis.url: {e}"))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.timeout))
            .set_response_timeout(Some(settings.timeout))
            .set_number_of_retries(RECONNECT_RETRIES)
            .set_max_delay(settings.timeout);
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| format!("replay.redis: {e}"))?;
        Ok(Self {
            conn,
            key: hmac::Key::new(hmac::HMAC_SHA256, &settings.key[..]),
            prefix: settings.prefix.clone(),
            timeout: settings.timeout,
            up: AtomicBool::new(true),
        })
    }

    /// The Redis key of `jti`.
    pub fn key_of(&self, jti: &str) -> String {
        let tag = hmac::sign(&self.key, jti.as_bytes());
        let mut key = String::with_capacity(self.prefix.len() + 4 + 2 * DIGEST_LEN);
        key.push_str(&self.prefix);
        key.push_str("jti:");
        for b in &tag.as_ref()[..DIGEST_LEN] {
            let _ = write!(key, "{b:02x}");
        }
        key
    }

    /// The connection, for the replica reports written beside the `jti`s
    /// ([`crate::replicas`]).
    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// The prefix of every key.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Whether the last round trip was answered.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Records every claim, in one round trip: the first one already recorded (or, without
    /// Redis, one that needs it) refuses the request. `fallback` is this process's memory
    /// store, used for claims that may do without Redis while it does not answer.
    pub async fn settle(
        &self,
        claims: Vec<Claim>,
        fallback: &dyn ReplayStore,
        now: u64,
    ) -> Settled {
        if claims.is_empty() {
            return Settled {
                outcome: Ok(()),
                answered: true,
            };
        }
        let mut pipe = redis::pipe();
        for claim in &claims {
            pipe.cmd("SET")
                .arg(self.key_of(&claim.jti))
                .arg(1)
                .arg("NX")
                .arg("EXAT")
                .arg(claim.expires_at);
        }
        let mut conn = self.conn.clone();
        let reply = tokio::time::timeout(
            self.timeout,
            pipe.query_async::<Vec<Option<String>>>(&mut conn),
        )
        .await;
        let replies = match reply {
            Ok(Ok(replies)) if replies.len() == claims.len() => replies,
            failed => {
                let why = match failed {
                    Err(_) => "timed out".to_string(),
                    Ok(Err(e)) => e.to_string(),
                    Ok(Ok(_)) => "a short pipeline reply".to_string(),
                };
                if self.up.swap(false, Ordering::Relaxed) {
                    tracing::warn!(error = %why, "the replay store (Redis) does not answer: max_age routes refuse client-encrypted values; other jtis are checked by this replica alone");
                }
                return Settled {
                    outcome: fall_back(claims, fallback, now),
                    answered: false,
                };
            }
        };
        if !self.up.swap(true, Ordering::Relaxed) {
            tracing::info!("the replay store (Redis) answers again");
        }
        let outcome = match claims.into_iter().zip(replies).find(|(_, r)| r.is_none()) {
            Some((claim, _)) => Err(Refusal::Replayed(claim)),
            None => Ok(()),
        };
        Settled {
            outcome,
            answered: true,
        }
    }
}

/// Without Redis: claims that need it refuse the request; the others go to this process's
/// memory store.
fn fall_back(claims: Vec<Claim>, fallback: &dyn ReplayStore, now: u64) -> Result<(), Refusal> {
    if let Some(claim) = claims.iter().find(|c| c.fresh) {
        return Err(Refusal::Unavailable(claim.clone()));
    }
    for claim in claims {
        match fallback.remember(&claim.jti, now, claim.expires_at) {
            Ok(true) => {}
            Ok(false) => return Err(Refusal::Replayed(claim)),
            Err(FreshnessError::StoreFull) => return Err(Refusal::StoreFull(claim)),
            Err(_) => return Err(Refusal::Replayed(claim)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::MemoryReplayStore;

    fn claim(jti: &str, fresh: bool) -> Claim {
        Claim {
            jti: jti.into(),
            expires_at: 2_000,
            fresh,
            field: "$['card']".into(),
            kid: Some("rsa-1".into()),
            envelope: false,
        }
    }

    #[test]
    fn without_redis_fresh_claims_are_refused_and_others_checked_here() {
        let local = MemoryReplayStore::new(1024);
        assert_eq!(
            fall_back(vec![claim("a", false), claim("b", true)], &local, 1_000),
            Err(Refusal::Unavailable(claim("b", true)))
        );
        // Nothing was recorded by the refused request.
        assert!(local.is_empty());
        assert_eq!(fall_back(vec![claim("a", false)], &local, 1_000), Ok(()));
        assert_eq!(
            fall_back(vec![claim("a", false)], &local, 1_001),
            Err(Refusal::Replayed(claim("a", false)))
        );
        let full = MemoryReplayStore::new(0);
        assert_eq!(
            fall_back(vec![claim("c", false)], &full, 1_000),
            Err(Refusal::StoreFull(claim("c", false)))
        );
    }

    #[tokio::test]
    async fn keys_are_keyed_digests_under_the_prefix() {
        let settings = |key: u8| RedisSettings {
            url: "redis://127.0.0.1:1/0".into(),
            username: None,
            password: None,
            key: Zeroizing::new([key; 32]),
            prefix: "fs:".into(),
            timeout: Duration::from_millis(200),
        };
        let a = RedisReplayStore::new(&settings(1)).unwrap();
        let b = RedisReplayStore::new(&settings(2)).unwrap();
        let k = a.key_of("jti-1");
        assert!(
            k.starts_with("fs:jti:") && k.len() == "fs:jti:".len() + 32,
            "{k}"
        );
        assert!(!k.contains("jti-1"));
        assert_eq!(k, a.key_of("jti-1"));
        assert_ne!(k, a.key_of("jti-2"));
        // Another key, other digests: the key is what makes them unguessable.
        assert_ne!(k, b.key_of("jti-1"));
        assert_ne!(settings(1), settings(2));
        assert_eq!(settings(1), settings(1));
    }

    /// Nothing listens on port 1: the round trip fails, fresh claims are refused, and the
    /// others are checked against this process's store — within the timeout.
    #[tokio::test]
    async fn an_unreachable_redis_fails_closed_where_it_must() {
        let store = RedisReplayStore::new(&RedisSettings {
            url: "redis://127.0.0.1:1/0".into(),
            username: None,
            password: None,
            key: Zeroizing::new([7; 32]),
            prefix: "fs:".into(),
            timeout: Duration::from_millis(300),
        })
        .unwrap();
        let local = MemoryReplayStore::new(1024);
        let started = std::time::Instant::now();
        let settled = store.settle(vec![claim("x", true)], &local, 1_000).await;
        assert!(started.elapsed() < Duration::from_secs(3));
        assert!(!settled.answered && !store.is_up());
        assert_eq!(settled.outcome, Err(Refusal::Unavailable(claim("x", true))));
        let settled = store.settle(vec![claim("y", false)], &local, 1_000).await;
        assert_eq!(settled.outcome, Ok(()));
        let settled = store.settle(vec![claim("y", false)], &local, 1_000).await;
        assert_eq!(settled.outcome, Err(Refusal::Replayed(claim("y", false))));
    }
}
