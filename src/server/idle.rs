//! Client idle timeout: a connection with no request in flight for `timeouts.client_idle` is
//! asked to close (hyper sends HTTP/2 a GOAWAY; HTTP/1.1 closes between requests).
//!
//! hyper has no idle timeout of its own for HTTP/2, and for HTTP/1.1 only the head-read
//! timeout, so the connection task counts requests itself: each request holds an
//! [`InFlight`] guard from the moment hyper hands it over until its response body has been
//! sent or abandoned (the server drops the guard from the body's `OnEnd`), and
//! [`Activity::idle_for`] resolves once the count has been zero for the whole period.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// Requests in flight on one connection, and when the last one ended.
pub struct Activity {
    in_flight: AtomicUsize,
    last_end: Mutex<Instant>,
}

impl Activity {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            in_flight: AtomicUsize::new(0),
            last_end: Mutex::new(Instant::now()),
        })
    }

    /// Marks a request as started; dropping the guard marks it ended.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    /// Restarts the idle period as if a request had just ended.
    pub fn touch(&self) {
        *self.last_end.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    fn last_end(&self) -> Instant {
        *self.last_end.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Resolves once no request has been in flight for `idle`. Wakes at most once per
    /// period while the connection is busy, so a busy connection costs one timer.
    pub async fn idle_for(&self, idle: Duration) {
        loop {
            let deadline = if self.in_flight.load(Ordering::Acquire) > 0 {
                Instant::now() + idle
            } else {
                self.last_end() + idle
            };
            tokio::time::sleep_until(deadline).await;
            if self.in_flight.load(Ordering::Acquire) == 0
                && self.last_end() + idle <= Instant::now()
            {
                return;
            }
        }
    }
}

/// One request in flight; see [`Activity::start`].
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_waits_for_the_last_request_to_end() {
        let activity = Activity::new();
        let idle = Duration::from_secs(10);
        let guard = activity.start();
        let started = Instant::now();
        let waiter = {
            let activity = activity.clone();
            tokio::spawn(async move { activity.idle_for(idle).await })
        };
        tokio::time::sleep(Duration::from_secs(25)).await;
        assert!(
            !waiter.is_finished(),
            "a request in flight keeps the connection open"
        );
        drop(guard);
        waiter.await.unwrap();
        // Idle counts from the end of the request (at 25 s), not from the start.
        assert!(Instant::now() - started >= Duration::from_secs(35));
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_without_requests_is_idle_after_the_period() {
        let activity = Activity::new();
        let started = Instant::now();
        activity.idle_for(Duration::from_secs(3)).await;
        let waited = Instant::now() - started;
        assert!(waited >= Duration::from_secs(3) && waited < Duration::from_secs(4));
    }
}
