//! A tiny per-process cache with a time-to-live, for the reads COMPAT §11.1
//! allows to be cached (tokens, users, translations, settings, uploads).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct TtlCache<K, V> {
    ttl: Duration,
    capacity: usize,
    entries: Mutex<HashMap<K, (Instant, V)>>,
}

impl<K: Eq + Hash + Clone, V: Clone> TtlCache<K, V> {
    /// `ttl` of zero disables the cache (every `get` misses).
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        TtlCache {
            ttl,
            capacity,
            entries: Mutex::new(HashMap::new()),
        }
    }

    pub fn get(&self, key: &K) -> Option<V> {
        if self.ttl.is_zero() {
            return None;
        }
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        match entries.get(key) {
            Some((at, value)) if at.elapsed() < self.ttl => Some(value.clone()),
            _ => None,
        }
    }

    pub fn insert(&self, key: K, value: V) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= self.capacity {
            let ttl = self.ttl;
            entries.retain(|_, (at, _)| at.elapsed() < ttl);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(key, (Instant::now(), value));
    }

    pub fn remove(&self, key: &K) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }

    /// Drops expired entries and gives their memory back (called when the process is idle).
    pub fn purge_expired(&self) {
        let ttl = self.ttl;
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|_, (at, _)| at.elapsed() < ttl);
        entries.shrink_to_fit();
    }

    /// Entries held, expired ones included.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Drops every entry for which `keep` is false.
    pub fn retain(&self, mut keep: impl FnMut(&K, &V) -> bool) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|k, (_, v)| keep(k, v));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
