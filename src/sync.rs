//! Locking a `std::sync::Mutex` whatever a panicking holder left behind.
//!
//! shopchat's mutexes guard caches, counters and queues, whose every update is a single step
//! (an insert, an increment, a swap): a panic elsewhere while one was held cannot leave them
//! half-changed. Refusing them afterwards (std's poisoning) would turn one panicked request
//! into a failure of every later one, so each lock takes the data as it is.

use std::sync::{Mutex, MutexGuard, PoisonError};

pub trait LockUnpoisoned<T: ?Sized> {
    /// `lock()`, ignoring poisoning (module docs).
    fn lock_unpoisoned(&self) -> MutexGuard<'_, T>;
}

impl<T: ?Sized> LockUnpoisoned<T> for Mutex<T> {
    fn lock_unpoisoned(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicked_holder_does_not_lock_out_the_others() {
        let m = std::sync::Arc::new(Mutex::new(1));
        let held = m.clone();
        let _ = std::thread::spawn(move || {
            let _guard = held.lock().unwrap();
            panic!("while holding the lock");
        })
        .join();
        assert!(m.is_poisoned());
        *m.lock_unpoisoned() += 1;
        assert_eq!(*m.lock_unpoisoned(), 2);
    }
}
