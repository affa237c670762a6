//! Admission: how many requests ingest reads, verifies and produces at once, decided before
//! a body is read. Ordinary webhooks (bodies up to 16 KiB by their `Content-Length`) need a
//! place among `ingest.max_in_flight`; larger or unsized bodies also need their bytes from
//! `ingest.large_body_budget_bytes`, a budget of their own, so that many large uploads can
//! neither exhaust memory nor take the places of ordinary webhooks. A request that is not
//! admitted within `ingest.admission_wait_ms` is answered 503 with `Retry-After` at once,
//! with its body unread: memory is bounded by 4096 x 16 KiB + the budget, whatever arrives.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use paystream_common::config::SMALL_BODY_BYTES;

/// The budget counts large bodies in KiB: a semaphore counts in `u32`.
const UNIT: usize = 1024;

/// Places and the large-body budget.
#[derive(Debug)]
pub struct Admission {
    places: Arc<Semaphore>,
    large_kib: Arc<Semaphore>,
    wait: Duration,
    body_limit: usize,
}

/// What an admitted request holds until it is answered.
#[derive(Debug)]
pub struct Admitted {
    _place: OwnedSemaphorePermit,
    _large: Option<OwnedSemaphorePermit>,
}

/// Why a request was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotAdmitted {
    /// No place (or no budget) within the wait.
    Busy,
}

impl Admission {
    /// `places` requests at once; `large_budget_bytes` of large bodies at once.
    pub fn new(places: usize, large_budget_bytes: usize, wait: Duration, body_limit: usize) -> Self {
        Self {
            places: Arc::new(Semaphore::new(places)),
            large_kib: Arc::new(Semaphore::new(large_budget_bytes.div_ceil(UNIT))),
            wait,
            body_limit,
        }
    }

    /// Admits a request whose body announces `content_length` (None: chunked, sized as the
    /// body limit), waiting at most the admission wait.
    pub async fn admit(&self, content_length: Option<usize>) -> Result<Admitted, NotAdmitted> {
        let size = content_length.unwrap_or(self.body_limit).min(self.body_limit);
        let deadline = tokio::time::Instant::now() + self.wait;
        // Budget first: a large request waiting for bytes holds no place meanwhile.
        let large = if content_length.is_none() || size > SMALL_BODY_BYTES {
            let kib = u32::try_from(size.div_ceil(UNIT)).unwrap_or(u32::MAX);
            let acquire = self.large_kib.clone().acquire_many_owned(kib);
            match tokio::time::timeout_at(deadline, acquire).await {
                Ok(Ok(permit)) => Some(permit),
                _ => return Err(NotAdmitted::Busy),
            }
        } else {
            None
        };
        match tokio::time::timeout_at(deadline, self.places.clone().acquire_owned()).await {
            Ok(Ok(place)) => Ok(Admitted { _place: place, _large: large }),
            _ => Err(NotAdmitted::Busy),
        }
    }
}

/// The window over which failed signatures per address are counted, in seconds.
pub const FORGERY_WINDOW_S: u64 = 1;

/// Addresses tracked at once, at most: a flood from many addresses evicts the oldest windows
/// rather than growing the map.
const MAX_TRACKED: usize = 65_536;

/// Failed signature checks per client address, counted over one-second windows: an address
/// over `ingest.unverified_rate_per_second` is refused before its body is read or its HMAC
/// computed. Only failures count, so a genuine provider's traffic (verified) never uses it
/// up, and a forger cannot spend the provider's own limit, which counts verified webhooks.
#[derive(Debug)]
pub struct Forgeries {
    limit: u32,
    windows: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl Forgeries {
    /// At most `limit` failures per address per window.
    pub fn new(limit: u32) -> Self {
        Self { limit, windows: Mutex::new(HashMap::new()) }
    }

    /// Whether `address` may still be checked now.
    pub fn allowed(&self, address: IpAddr, now: Instant) -> bool {
        let windows = self.windows.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match windows.get(&address) {
            Some((start, failures)) => {
                now.duration_since(*start) >= Duration::from_secs(FORGERY_WINDOW_S) || *failures < self.limit
            }
            None => true,
        }
    }

    /// Counts a failed check from `address`.
    pub fn failed(&self, address: IpAddr, now: Instant) {
        let mut windows = self.windows.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if windows.len() >= MAX_TRACKED && !windows.contains_key(&address) {
            let window = Duration::from_secs(FORGERY_WINDOW_S);
            windows.retain(|_, (start, _)| now.duration_since(*start) < window);
            if windows.len() >= MAX_TRACKED {
                windows.clear();
            }
        }
        let entry = windows.entry(address).or_insert((now, 0));
        if now.duration_since(entry.0) >= Duration::from_secs(FORGERY_WINDOW_S) {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An address is refused once it failed `limit` times in a window, and checked again
    /// in the next window; other addresses are unaffected.
    #[test]
    fn failures_per_address_are_bounded_per_window() {
        let forgeries = Forgeries::new(3);
        let (a, b) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(forgeries.allowed(a, t0));
            forgeries.failed(a, t0);
        }
        assert!(!forgeries.allowed(a, t0));
        assert!(forgeries.allowed(b, t0));
        assert!(forgeries.allowed(a, t0 + Duration::from_secs(FORGERY_WINDOW_S)));
    }

    /// Large bodies exhaust their budget, not the places: an ordinary webhook is still
    /// admitted at once while large ones are refused; a freed budget admits again.
    #[tokio::test(start_paused = true)]
    async fn large_bodies_cannot_starve_ordinary_webhooks() {
        let admission = Admission::new(4, 512 * 1024, Duration::from_millis(100), 256 * 1024);
        let first = admission.admit(Some(256 * 1024)).await.unwrap();
        let _second = admission.admit(None).await.unwrap();
        assert_eq!(admission.admit(Some(200 * 1024)).await.unwrap_err(), NotAdmitted::Busy);
        let _small = admission.admit(Some(900)).await.unwrap();
        drop(first);
        let _third = admission.admit(Some(200 * 1024)).await.unwrap();
        // Four places in all: the fifth waits, then is refused.
        let _fourth = admission.admit(Some(10)).await.unwrap();
        assert_eq!(admission.admit(Some(10)).await.unwrap_err(), NotAdmitted::Busy);
    }
}
