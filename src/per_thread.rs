//! A value per thread: what each HTTP worker thread must have of its own.
//!
//! actix-server runs each worker thread on a runtime of its own, and a socket belongs to the
//! runtime that opened it; that runtime ends with its worker during a drain. Connection pools
//! shared by the workers therefore handed requests on one worker connections that had died
//! with another (`db::Pools`, `http::ratelimit_redis`). [`PerThread`] keeps one value per
//! thread and owner, and the values of the threads still running, for sums over all threads
//! (metrics) and closing. A thread that ends takes its values with it: a worker that stopped
//! first in a drain (or that actix-server replaced after a panic) no longer counts in the
//! metrics, and its pool's connections, useless without its runtime, are closed instead of
//! kept open until the process exits. (A value whose owner is dropped while its thread runs on
//! stays until the thread ends; the owners here live as long as the service.)

use std::any::Any;
use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use crate::sync::LockUnpoisoned;

/// Owner ids and value serials, unique in the process.
static NEXT_ID: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's values, of every owner.
    static VALUES: RefCell<Vec<Entry>> = const { RefCell::new(Vec::new()) };
}

/// One value in a thread's list. Dropped with the thread's locals when the thread ends; its
/// owner then forgets it too. So a value's last drop usually runs in a thread-local destructor,
/// where a panic aborts the process: `T`'s drop must not panic, spawn or use thread-locals
/// (sqlx's and bb8's pools and tokio's sockets only mark, release and close).
struct Entry {
    owner: usize,
    value: Box<dyn Any>,
    forget: Option<Box<dyn FnOnce()>>,
}

impl Drop for Entry {
    fn drop(&mut self) {
        if let Some(forget) = self.forget.take() {
            forget();
        }
    }
}

/// The values of the running threads, each with its serial.
type Made<T> = Arc<Mutex<Vec<(usize, T)>>>;

/// One `T` per thread (module docs). `T` is a cheap handle, such as a pool.
pub struct PerThread<T> {
    /// Tells this owner's values from another's (tests run several services per process).
    id: usize,
    made: Made<T>,
}

impl<T: Clone + 'static> Default for PerThread<T> {
    fn default() -> Self {
        PerThread {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            made: Made::default(),
        }
    }
}

impl<T: Clone + 'static> PerThread<T> {
    /// The calling thread's value, if it has one.
    pub fn get(&self) -> Option<T> {
        VALUES.with_borrow(|values| {
            values
                .iter()
                .find(|e| e.owner == self.id)
                .and_then(|e| e.value.downcast_ref::<T>().cloned())
        })
    }

    /// The calling thread's value, made by `make` on this thread's first call.
    pub fn get_or_make(&self, make: impl FnOnce() -> T) -> T {
        if let Some(value) = self.get() {
            return value;
        }
        let value = make();
        let serial = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let made: Weak<Mutex<Vec<(usize, T)>>> = Arc::downgrade(&self.made);
        let forget = move || {
            if let Some(made) = made.upgrade() {
                made.lock_unpoisoned().retain(|(s, _)| *s != serial);
            }
        };
        VALUES.with_borrow_mut(|values| {
            values.push(Entry {
                owner: self.id,
                value: Box::new(value.clone()),
                forget: Some(Box::new(forget)),
            })
        });
        // Listed once the thread's entry exists, which unlists it when the thread ends.
        self.made.lock_unpoisoned().push((serial, value.clone()));
        value
    }

    /// The values of the threads still running.
    pub fn all(&self) -> Vec<T> {
        self.made
            .lock_unpoisoned()
            .iter()
            .map(|(_, v)| v.clone())
            .collect()
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
        // The other thread ended: its value went with it.
        assert_eq!(a.all(), vec![1]);
    }

    #[test]
    fn a_running_threads_value_counts_until_the_thread_ends() {
        let owner = std::sync::Arc::new(PerThread::<std::sync::Arc<()>>::default());
        let value = std::sync::Arc::new(());
        let (made, stop) = (std::sync::mpsc::channel(), std::sync::mpsc::channel::<()>());
        let (other, handed, made_tx) = (owner.clone(), value.clone(), made.0);
        let thread = std::thread::spawn(move || {
            other.get_or_make(|| handed);
            made_tx.send(()).unwrap();
            stop.1.recv().unwrap();
        });
        made.1.recv().unwrap();
        assert_eq!(owner.all().len(), 1, "counted while its thread runs");
        stop.0.send(()).unwrap();
        thread.join().unwrap();
        assert!(owner.all().is_empty(), "forgotten when its thread ended");
        assert_eq!(
            std::sync::Arc::strong_count(&value),
            1,
            "and no copy is kept anywhere (a pool's connections close)"
        );
    }
}
