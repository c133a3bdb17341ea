//! A value per thread: what each HTTP worker thread must have of its own.
//!
//! actix-server runs each worker thread on a runtime of its own, and a socket belongs to the
//! runtime that opened it; that runtime ends with its worker during a drain. Connection pools
//! shared by the workers therefore handed requests on one worker connections that had died
//! with another (`db::Pools`, `http::ratelimit_redis`). [`PerThread`] keeps one value per
//! thread and owner, and every value made, for sums over all threads (metrics) and closing.

use std::any::Any;
use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::sync::LockUnpoisoned;

static NEXT_ID: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's values, by owner ([`PerThread`]'s id).
    static VALUES: RefCell<Vec<(usize, Box<dyn Any>)>> = const { RefCell::new(Vec::new()) };
}

/// One `T` per thread (module docs). `T` is a cheap handle, such as a pool.
pub struct PerThread<T> {
    /// Tells this owner's values from another's (tests run several services per process).
    id: usize,
    made: Mutex<Vec<T>>,
}

impl<T: Clone + 'static> Default for PerThread<T> {
    fn default() -> Self {
        PerThread {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            made: Mutex::new(Vec::new()),
        }
    }
}

impl<T: Clone + 'static> PerThread<T> {
    /// The calling thread's value, if it has one.
    pub fn get(&self) -> Option<T> {
        VALUES.with_borrow(|values| {
            values
                .iter()
                .find(|(id, _)| *id == self.id)
                .and_then(|(_, v)| v.downcast_ref::<T>().cloned())
        })
    }

    /// The calling thread's value, made by `make` on this thread's first call.
    pub fn get_or_make(&self, make: impl FnOnce() -> T) -> T {
        if let Some(value) = self.get() {
            return value;
        }
        let value = make();
        self.made.lock_unpoisoned().push(value.clone());
        VALUES.with_borrow_mut(|values| values.push((self.id, Box::new(value.clone()))));
        value
    }

    /// Every value made so far, on any thread (those of threads that ended included).
    pub fn all(&self) -> Vec<T> {
        self.made.lock_unpoisoned().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_thread_and_owner_has_its_own_value() {
        let (a, b) = (
            std::sync::Arc::new(PerThread::<u32>::default()),
            PerThread::<u32>::default(),
        );
        assert_eq!(a.get(), None);
        assert_eq!(a.get_or_make(|| 1), 1);
        assert_eq!(a.get_or_make(|| 99), 1, "made once per thread");
        assert_eq!(b.get_or_make(|| 2), 2, "another owner, another value");
        let other = a.clone();
        let there = std::thread::spawn(move || (other.get(), other.get_or_make(|| 3)))
            .join()
            .unwrap();
        assert_eq!(there, (None, 3));
        assert_eq!(a.get(), Some(1));
        let mut all = a.all();
        all.sort();
        assert_eq!(all, vec![1, 3]);
    }
}
