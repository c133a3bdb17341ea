//! Statements over many rows at once: padded `IN (…)` lists and the
//! [`Batcher`] that gathers concurrent requests into one statement.
//!
//! ## `IN` lists
//!
//! sqlx prepares each distinct SQL text once per connection and keeps it in
//! a small cache. An `IN` list of one placeholder per value makes a new text
//! for every list length: under load (the token batches of `auth::tokens`
//! hold 1 to 256 ids) the cache would evict and re-prepare all the time, one
//! extra round trip and server-side work per statement. Lists are therefore
//! padded to the next power of two by repeating their last value, which
//! changes no result (`IN` ignores duplicates), so at most nine texts cover
//! lists of up to 256 values.

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_util::future::BoxFuture;

use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::time::Instant;

use crate::error::is_unavailable;

/// `?,?,…` for `values` padded as described above, and the padded values to bind.
pub fn in_list<T: Copy>(values: &[T]) -> (String, Vec<T>) {
    let Some(&last) = values.last() else {
        return (String::new(), Vec::new());
    };
    let len = values.len().next_power_of_two();
    let mut padded = Vec::with_capacity(len);
    padded.extend_from_slice(values);
    padded.resize(len, last);
    (vec!["?"; len].join(","), padded)
}

/// Gathers concurrent requests into batches handled by one statement each.
///
/// A request that finds a free slot goes out at once (no added latency);
/// requests arriving while `parallel` batches are running queue up and go out
/// together in the next one. Each caller still waits for its own batch, so
/// errors reach the request that caused the statement, as without batching.
///
/// With a gap ([`Batcher::with_gap`]), batches also start at least that far apart: a
/// request arriving sooner after the last batch waits out the rest of the gap, with every
/// request that arrives meanwhile. Statements then cost fast requests nothing when they are
/// spread out (an idle batcher sends at once) and at most one per gap under load — where a
/// free slot alone would send one statement per request as long as each is quick.
///
/// Gathering needs a task on a runtime: it runs once [`Batcher::start`] was called
/// (at start-up). Before that, and if that task is gone, each request is a batch of one
/// handled by the caller itself — the same statement, unbatched.
pub struct Batcher<Req, Resp> {
    run: Arc<RunBatch<Req, Resp>>,
    parallel: usize,
    max_batch: usize,
    gap: Duration,
    tx: OnceLock<mpsc::UnboundedSender<(Req, Reply<Resp>)>>,
}

type RunBatch<Req, Resp> =
    dyn Fn(Vec<Req>) -> BoxFuture<'static, Result<Vec<Resp>, sqlx::Error>> + Send + Sync;

type Reply<Resp> = oneshot::Sender<Result<Resp, BatchError>>;

/// A batch statement's failure, handed to each of its callers.
#[derive(Clone, Debug)]
pub struct BatchError {
    unavailable: bool,
    message: String,
}

impl From<BatchError> for sqlx::Error {
    /// Keeps the 503-or-500 classification of `crate::error` (I/O = unavailable).
    fn from(e: BatchError) -> Self {
        if e.unavailable {
            sqlx::Error::Io(std::io::Error::other(e.message))
        } else {
            sqlx::Error::Decode(e.message.into())
        }
    }
}

impl<Req: Send + 'static, Resp: Clone + Send + 'static> Batcher<Req, Resp> {
    /// `run` handles one batch and returns one answer per request, in the same order.
    pub fn new<F, Fut>(parallel: usize, max_batch: usize, run: F) -> Self
    where
        F: Fn(Vec<Req>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<Resp>, sqlx::Error>> + Send + 'static,
    {
        Batcher {
            run: Arc::new(move |reqs| Box::pin(run(reqs))),
            parallel,
            max_batch,
            gap: Duration::ZERO,
            tx: OnceLock::new(),
        }
    }

    /// Batches start at least `gap` apart (see the type's docs); set before [`Batcher::start`].
    pub fn with_gap(mut self, gap: Duration) -> Self {
        self.gap = gap;
        self
    }

    /// Starts gathering on the current runtime (once; later calls do nothing).
    pub fn start(&self) {
        self.tx.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(batch_loop(
                rx,
                self.parallel,
                self.max_batch,
                self.gap,
                self.run.clone(),
            ));
            tx
        });
    }

    /// The answer to `req`, from the batch it joined (or its own, see the type's docs).
    pub async fn call(&self, req: Req) -> Result<Resp, sqlx::Error> {
        let req = match self.tx.get() {
            Some(tx) => {
                let (reply, answer) = oneshot::channel();
                match tx.send((req, reply)) {
                    Ok(()) => {
                        return match answer.await {
                            Ok(result) => result.map_err(Into::into),
                            // The task stopped with the runtime while holding the request.
                            Err(_) => Err(sqlx::Error::Io(std::io::Error::other(
                                "the batching task stopped",
                            ))),
                        };
                    }
                    Err(mpsc::error::SendError((req, _))) => req,
                }
            }
            None => req,
        };
        (self.run)(vec![req])
            .await?
            .pop()
            .ok_or_else(|| sqlx::Error::Decode("a batch answered no request".into()))
    }
}

async fn batch_loop<Req, Resp>(
    mut rx: mpsc::UnboundedReceiver<(Req, Reply<Resp>)>,
    parallel: usize,
    max_batch: usize,
    gap: Duration,
    run: Arc<RunBatch<Req, Resp>>,
) where
    Req: Send + 'static,
    Resp: Clone + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(parallel));
    let mut last_start: Option<Instant> = None;
    loop {
        // Wait for a free statement slot first: requests arriving meanwhile
        // queue up and go out together.
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = rx.recv().await else { return };
        if let Some(last) = last_start {
            let next = last + gap;
            if next > Instant::now() {
                tokio::time::sleep_until(next).await;
            }
        }
        last_start = Some(Instant::now());
        let mut batch = vec![first];
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        let run = run.clone();
        tokio::spawn(async move {
            let (reqs, replies): (Vec<Req>, Vec<Reply<Resp>>) = batch.into_iter().unzip();
            let count = reqs.len();
            let result = run(reqs).await.map_err(|e| BatchError {
                unavailable: is_unavailable(&e),
                message: e.to_string(),
            });
            for (i, reply) in replies.into_iter().enumerate() {
                let answer = match &result {
                    Ok(answers) if answers.len() == count => Ok(answers[i].clone()),
                    Ok(_) => Err(BatchError {
                        unavailable: false,
                        message: "batch answered the wrong number of requests".into(),
                    }),
                    Err(e) => Err(e.clone()),
                };
                let _ = reply.send(answer);
            }
            drop(permit);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads_to_powers_of_two_with_the_last_value() {
        assert_eq!(in_list::<u64>(&[]), (String::new(), vec![]));
        assert_eq!(in_list(&[7]), ("?".into(), vec![7]));
        assert_eq!(in_list(&[7, 8]), ("?,?".into(), vec![7, 8]));
        assert_eq!(in_list(&[7, 8, 9]), ("?,?,?,?".into(), vec![7, 8, 9, 9]));
        let (sql, values) = in_list(&(1..=129).collect::<Vec<u64>>());
        assert_eq!((sql.matches('?').count(), values.len()), (256, 256));
        assert_eq!(values[128..], [129; 128]);
    }

    #[test]
    fn few_distinct_texts() {
        let texts: std::collections::HashSet<String> = (1..=256u64)
            .map(|n| in_list(&vec![1; n as usize]).0)
            .collect();
        assert_eq!(texts.len(), 9);
    }

    #[tokio::test]
    async fn concurrent_requests_share_batches_and_each_gets_its_answer() {
        let sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = sizes.clone();
        let batcher = Arc::new(Batcher::new(1, 64, move |reqs: Vec<u32>| {
            seen.lock().unwrap().push(reqs.len());
            async move {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                Ok(reqs.iter().map(|r| r * 10).collect::<Vec<u32>>())
            }
        }));
        batcher.start();
        let calls: Vec<_> = (0..50u32)
            .map(|i| {
                let b = batcher.clone();
                tokio::spawn(async move { (i, b.call(i).await.unwrap()) })
            })
            .collect();
        for call in calls {
            let (i, answer) = call.await.unwrap();
            assert_eq!(answer, i * 10);
        }
        let sizes = sizes.lock().unwrap().clone();
        assert_eq!(sizes.iter().sum::<usize>(), 50);
        assert!(sizes.len() < 50, "requests were batched: {sizes:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn with_a_gap_batches_start_that_far_apart_and_an_idle_batcher_sends_at_once() {
        let gap = std::time::Duration::from_millis(2);
        let starts = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = starts.clone();
        let batcher = Arc::new(
            Batcher::new(4, 256, move |reqs: Vec<u32>| {
                seen.lock().unwrap().push((Instant::now(), reqs.len()));
                async move { Ok(reqs) }
            })
            .with_gap(gap),
        );
        batcher.start();
        // A request every millisecond (the timer's resolution) for 200 ms.
        let t0 = Instant::now();
        let mut calls = Vec::new();
        for i in 0..200u32 {
            let b = batcher.clone();
            calls.push(tokio::spawn(async move { b.call(i).await.unwrap() }));
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        for (i, call) in calls.into_iter().enumerate() {
            assert_eq!(call.await.unwrap(), i as u32);
        }
        let starts = starts.lock().unwrap().clone();
        assert_eq!(starts.iter().map(|(_, n)| n).sum::<usize>(), 200);
        assert_eq!(starts[0], (t0, 1), "the first request goes out at once");
        for pair in starts.windows(2) {
            assert!(pair[1].0 - pair[0].0 >= gap, "{starts:?}");
        }
        assert!(starts.len() <= 101, "one batch per gap: {}", starts.len());
        // After a pause longer than the gap, a request goes out at once again.
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        let before = Instant::now();
        batcher.call(7).await.unwrap();
        assert_eq!(before.elapsed(), std::time::Duration::ZERO);
    }

    #[tokio::test]
    async fn a_failed_batch_fails_each_of_its_requests() {
        let batcher = Batcher::new(2, 8, |_reqs: Vec<u8>| async {
            Err::<Vec<()>, _>(sqlx::Error::Io(std::io::Error::other("down")))
        });
        batcher.start();
        let err = batcher.call(1).await.unwrap_err();
        assert!(is_unavailable(&err), "{err}");
    }

    #[tokio::test]
    async fn before_start_each_request_is_its_own_batch() {
        let sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = sizes.clone();
        let batcher = Batcher::new(1, 64, move |reqs: Vec<u32>| {
            seen.lock().unwrap().push(reqs.len());
            async move { Ok(reqs.iter().map(|r| r + 1).collect::<Vec<u32>>()) }
        });
        let (a, b) = tokio::join!(batcher.call(1), batcher.call(2));
        assert_eq!((a.unwrap(), b.unwrap()), (2, 3));
        assert_eq!(*sizes.lock().unwrap(), vec![1, 1]);
    }
}
