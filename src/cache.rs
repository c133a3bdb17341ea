//! A tiny per-process cache with a time-to-live, for the reads COMPAT §11.1
//! allows to be cached (tokens, users, translations, settings, uploads), and
//! [`Generations`], a map whose old entries go without a scan.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::sync::LockUnpoisoned;

/// Entries live for `ttl`; they are held in [`Generations`] of that period, so expired ones go
/// with their generation while the process is busy, never by a scan (a soak test showed them
/// piling up until the idle purge: bench/SOAK.md). At most `capacity` entries are written per
/// period: a fuller generation is retired early.
pub struct TtlCache<K, V> {
    ttl: Duration,
    capacity: usize,
    entries: Mutex<Generations<K, (Instant, V)>>,
}

impl<K: Eq + Hash + Clone, V: Clone> TtlCache<K, V> {
    /// `ttl` of zero disables the cache (every `get` misses).
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        TtlCache {
            ttl,
            capacity,
            entries: Mutex::new(Generations::new(ttl.max(Duration::from_millis(1)))),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, Generations<K, (Instant, V)>> {
        self.entries.lock_unpoisoned()
    }

    pub fn get(&self, key: &K) -> Option<V> {
        if self.ttl.is_zero() {
            return None;
        }
        let now = Instant::now();
        match self.entries().get(key, now) {
            Some((at, value)) if now.saturating_duration_since(*at) < self.ttl => {
                Some(value.clone())
            }
            _ => None,
        }
    }

    pub fn insert(&self, key: K, value: V) {
        if self.ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut entries = self.entries();
        if entries.current_len() >= self.capacity {
            entries.retire(now);
        }
        entries.insert(key, (now, value), now);
    }

    pub fn remove(&self, key: &K) {
        self.entries().remove(key);
    }

    /// Drops expired entries and gives their memory back (called when the process is idle).
    pub fn purge_expired(&self) {
        let ttl = self.ttl;
        let now = Instant::now();
        let mut entries = self.entries();
        entries.rotate(now);
        entries.retain(|(at, _)| now.saturating_duration_since(*at) < ttl);
    }

    /// Entries held, expired ones included.
    pub fn len(&self) -> usize {
        self.entries().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every entry for which `keep` is false.
    pub fn retain(&self, mut keep: impl FnMut(&K, &V) -> bool) {
        self.entries().retain_keyed(|k, (_, v)| keep(k, v));
    }
}

/// A map for entries that matter for at most `period` after they were written: two
/// generations, the current one and the one before, swapped every `period`. Dropping the older
/// generation whole replaces scanning for stale entries, so every operation costs the same at
/// any size (security review H2, L8); memory holds what was written within two periods.
pub struct Generations<K, V> {
    period: Duration,
    current: HashMap<K, V>,
    previous: HashMap<K, V>,
    rotated: Instant,
}

impl<K: Eq + Hash, V> Generations<K, V> {
    pub fn new(period: Duration) -> Self {
        Generations {
            period,
            current: HashMap::new(),
            previous: HashMap::new(),
            rotated: Instant::now(),
        }
    }

    /// Starts a new generation once a period has passed (after two, both are stale).
    pub fn rotate(&mut self, now: Instant) {
        let age = now.saturating_duration_since(self.rotated);
        if age >= self.period * 2 {
            self.current = HashMap::new();
            self.previous = HashMap::new();
            self.rotated = now;
        } else if age >= self.period {
            self.previous = std::mem::take(&mut self.current);
            self.rotated = now;
        }
    }

    /// The entry of `key`, wherever it is.
    pub fn get(&mut self, key: &K, now: Instant) -> Option<&V> {
        self.rotate(now);
        self.current.get(key).or_else(|| self.previous.get(key))
    }

    /// Starts a new generation now, whatever the time (a full one is retired early).
    pub fn retire(&mut self, now: Instant) {
        self.previous = std::mem::take(&mut self.current);
        self.rotated = now;
    }

    pub fn remove(&mut self, key: &K) {
        self.current.remove(key);
        self.previous.remove(key);
    }

    /// The entry of `key`, brought into the current generation.
    pub fn get_mut(&mut self, key: &K, now: Instant) -> Option<&mut V>
    where
        K: Clone,
    {
        self.rotate(now);
        if !self.current.contains_key(key) {
            let v = self.previous.remove(key)?;
            self.current.insert(key.clone(), v);
        }
        self.current.get_mut(key)
    }

    pub fn insert(&mut self, key: K, value: V, now: Instant) {
        self.rotate(now);
        self.previous.remove(&key);
        self.current.insert(key, value);
    }

    /// Entries written in the current period.
    pub fn current_len(&self) -> usize {
        self.current.len()
    }

    /// When the current generation started.
    pub fn rotated(&self) -> Instant {
        self.rotated
    }

    /// Entries held, both generations.
    pub fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops the entries for which `keep` is false, and the memory of dropped ones (called
    /// when the process is idle).
    pub fn retain(&mut self, mut keep: impl FnMut(&V) -> bool) {
        self.retain_keyed(|_, v| keep(v));
    }

    /// [`Generations::retain`] with the key.
    pub fn retain_keyed(&mut self, mut keep: impl FnMut(&K, &V) -> bool) {
        self.current.retain(|k, v| keep(k, v));
        self.previous.retain(|k, v| keep(k, v));
        self.current.shrink_to_fit();
        self.previous.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_entries_go_while_the_cache_is_busy() {
        let cache = TtlCache::new(Duration::from_millis(20), 1_000_000);
        for i in 0..200 {
            cache.insert(i, i);
            std::thread::sleep(Duration::from_millis(1));
        }
        // Written over ~200 ms, held: what the last two 20 ms periods wrote.
        assert!(cache.len() < 100, "{}", cache.len());
    }

    #[test]
    fn generations_keep_two_periods_at_most() {
        let t0 = Instant::now();
        let p = Duration::from_secs(60);
        let mut g = Generations::new(p);
        g.insert(1, "a", t0);
        assert_eq!(
            g.get_mut(&1, t0 + p).copied(),
            Some("a"),
            "one rotation later"
        );
        g.insert(2, "b", t0 + p);
        // Two rotations after its last use an entry is gone, without a scan.
        assert_eq!(g.get_mut(&2, t0 + p * 3).copied(), None);
        assert_eq!(g.get_mut(&1, t0 + p * 3).copied(), None);
        assert!(g.len() <= 2);
    }

    #[test]
    fn expires_and_can_be_disabled() {
        let cache = TtlCache::new(Duration::from_millis(30), 10);
        cache.insert("a", 1);
        assert_eq!(cache.get(&"a"), Some(1));
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(cache.get(&"a"), None);
        let off = TtlCache::new(Duration::ZERO, 10);
        off.insert("a", 1);
        assert_eq!(off.get(&"a"), None);
    }

    #[test]
    fn purging_keeps_only_fresh_entries() {
        let cache = TtlCache::new(Duration::from_millis(30), 10);
        cache.insert("old", 1);
        std::thread::sleep(Duration::from_millis(40));
        cache.insert("new", 2);
        assert_eq!(cache.len(), 2, "expired entries stay until purged");
        cache.purge_expired();
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.get(&"new"), Some(2));
    }

    #[test]
    fn bounded_and_removable() {
        let cache = TtlCache::new(Duration::from_secs(60), 2);
        cache.insert(1, "x");
        cache.insert(2, "y");
        cache.insert(3, "z");
        assert_eq!(cache.get(&3), Some("z"));
        cache.remove(&3);
        assert_eq!(cache.get(&3), None);
        cache.insert(4, "w");
        cache.retain(|k, _| *k != 4);
        assert_eq!(cache.get(&4), None);
    }
}
