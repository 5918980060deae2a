//! The dedup window: the ids of recently accepted events per bus, so that
//! a publisher retrying an event the broker already stored gets
//! `duplicate` (and where it went) instead of storing a second copy.
//!
//! An id is kept as a 128-bit fingerprint of `(bus, source, id)` under
//! two SipHash keys drawn at random per process, with the outcome boxed:
//! an entry is 24 bytes, so the table stays small and growing it (a
//! rehash, under the window's lock, that every publish waits for) is
//! quick. With the three strings and the outcome inline, growing a window
//! of 100,000 ids stalled every publish for tens of milliseconds
//! (docs/benchmarks.md). Two ids share a fingerprint with probability
//! about n²/2¹²⁹ (1e-29 for 100,000 ids), and the keys are secret, so
//! publishers cannot aim for a collision.

use super::Stored;
use crate::config::DedupConfig;
use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::time::Instant;

/// An event's identity, `(bus, source, id)`, as a keyed 128-bit hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct Fingerprint(u128);

/// Computes fingerprints under this process's random keys.
#[derive(Debug, Default)]
pub(super) struct Fingerprints {
    high: RandomState,
    low: RandomState,
}

impl Fingerprints {
    /// The fingerprint of the event `id` from `source` on `bus`.
    pub(super) fn of(&self, bus: &str, source: &str, id: &str) -> Fingerprint {
        let identity = (bus, source, id);
        let high = u128::from(self.high.hash_one(identity));
        let low = u128::from(self.low.hash_one(identity));
        Fingerprint(high << 64 | low)
    }
}

/// Hashes a [`Fingerprint`] to its own low bits: it is a keyed hash
/// already, hashing it again would only cost time.
#[derive(Debug, Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u128(&mut self, n: u128) {
        self.0 = n as u64;
    }
}

/// Recently accepted ids: per bus in insertion order, so the oldest expire
/// first; bounded by `max_ids` in all.
#[derive(Debug, Default)]
pub(super) struct DedupWindow {
    config: DedupConfig,
    stored: HashMap<Fingerprint, Box<Stored>, BuildHasherDefault<Prehashed>>,
    order: HashMap<String, VecDeque<(Fingerprint, Instant)>>,
}

impl DedupWindow {
    /// An empty window with `config`'s windows and bound.
    pub(super) fn new(config: DedupConfig) -> Self {
        Self {
            config,
            ..Self::default()
        }
    }

    /// The windows and bound it keeps.
    pub(super) fn config(&self) -> &DedupConfig {
        &self.config
    }

    /// Where the event with `key` on `bus` went, marked `duplicate`, when
    /// it was accepted within the bus's window before `now`. Forgets the
    /// bus's ids that aged out.
    pub(super) fn get(&mut self, bus: &str, key: Fingerprint, now: Instant) -> Option<Stored> {
        let window = self.config.window_for(bus);
        if let Some(order) = self.order.get_mut(bus) {
            while let Some((oldest, at)) = order.front() {
                if now.duration_since(*at) < window {
                    break;
                }
                self.stored.remove(oldest);
                order.pop_front();
            }
        }
        self.stored.get(&key).map(|stored| Stored {
            duplicate: true,
            ..Stored::clone(stored)
        })
    }

    /// Remembers that the event with `key` on `bus` was accepted at `now`
    /// and went where `stored` says; the bus's oldest id makes room when
    /// the window holds `max_ids`.
    pub(super) fn insert(&mut self, bus: &str, key: Fingerprint, stored: Stored, now: Instant) {
        if self.stored.len() >= self.config.max_ids
            && let Some(order) = self.order.get_mut(bus)
            && let Some((oldest, _)) = order.pop_front()
        {
            self.stored.remove(&oldest);
        }
        if self.stored.insert(key, Box::new(stored)).is_some() {
            return;
        }
        match self.order.get_mut(bus) {
            Some(order) => order.push_back((key, now)),
            None => {
                self.order
                    .insert(bus.to_string(), VecDeque::from([(key, now)]));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn dedup_windows_expire_per_bus_and_stay_bounded() {
        let config = DedupConfig {
            window: Duration::from_secs(10),
            buses: [("slow".to_string(), Duration::from_secs(100).into())]
                .into_iter()
                .collect(),
            max_ids: 3,
        };
        let fingerprints = Fingerprints::default();
        let key = |bus: &str, id: &str| fingerprints.of(bus, "/s", id);
        let mut window = DedupWindow::new(config);
        let start = Instant::now();
        let at = |secs: u64| start + Duration::from_secs(secs);
        window.insert("fast", key("fast", "1"), Stored::default(), start);
        window.insert("slow", key("slow", "1"), Stored::default(), start);
        let found = window
            .get("fast", key("fast", "1"), at(5))
            .expect("within the window");
        assert!(found.duplicate);
        assert!(
            window.get("fast", key("fast", "1"), at(11)).is_none(),
            "the default window passed"
        );
        assert!(
            window.get("slow", key("slow", "1"), at(11)).is_some(),
            "the bus has a longer window"
        );
        assert!(
            window.get("other", key("other", "1"), at(1)).is_none(),
            "ids are per bus"
        );
        for id in 2..6 {
            window.insert(
                "slow",
                key("slow", &id.to_string()),
                Stored::default(),
                at(12),
            );
        }
        assert!(window.stored.len() <= 3, "bounded by max_ids");
        assert!(
            window.get("slow", key("slow", "5"), at(13)).is_some(),
            "the newest stay"
        );
    }

    #[test]
    fn fingerprints_tell_the_parts_of_an_identity_apart() {
        let fingerprints = Fingerprints::default();
        let one = fingerprints.of("bus", "/a", "1");
        assert_eq!(one, fingerprints.of("bus", "/a", "1"));
        // Moving text from one part to the next is another identity.
        assert_ne!(one, fingerprints.of("bus", "/a1", ""));
        assert_ne!(one, fingerprints.of("bus/", "a", "1"));
        assert_ne!(one, fingerprints.of("other", "/a", "1"));
        // Each process draws its own keys.
        assert_ne!(one, Fingerprints::default().of("bus", "/a", "1"));
    }
}
