//! Every connection bounded in time (COMPAT §1.2 step 0, 2026-12).
//!
//! actix-http bounds most of a connection's life by itself, and shopchat uses its settings
//! (`startup::http_server`): the first request head must arrive within `SHOPCHAT_CLIENT_TIMEOUT`
//! (its own 408, then close), an idle kept-alive connection closes after [`KEEP_ALIVE`], bad
//! framing (duplicate or malformed lengths, an unknown `Transfer-Encoding`) is its own 400 and
//! close, an oversized head its own 431. Two shapes have no timer in actix-http 3.20 (read in
//! its `h1/dispatcher.rs`): the head timer covers only the *first* request of a connection, so
//! a client that starts a second head on a kept-alive connection (or pipelines a partial one)
//! and then trickles it is never cut off; and a chunked body that the handler did not read is
//! drained for as long as the client keeps sending.
//!
//! [`Clocked`] is the smallest piece that closes both: a stream wrapper whose deadline the
//! pipeline moves (through the connection data, [`Clock`]). While a request is being served
//! there is none (a long-poll may wait). When its answer is produced, the next head is due
//! within the keep-alive time plus the client timeout, and within the client timeout of its
//! first byte; an answer that closes the connection leaves [`CLOSE_GRACE`]. A read after the
//! deadline is the end of the stream, which actix treats as a client that went away. So any
//! connection idles, trickles a head or drains a body for at most `SHOPCHAT_CLIENT_TIMEOUT` +
//! [`KEEP_ALIVE`] (5 s), whatever its framing. Request bodies shopchat reads have the
//! pipeline's own timeout (the JSON 408).
//!
//! The same wrapper sees the client close its end while a request is served: a held long-poll
//! is then released ([`Clock::gone`]) instead of waiting out its `wait`.

use std::cell::Cell;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

/// actix's keep-alive time: an idle connection closes after it. At most 5 s, so that a slow
/// head after an answer is cut off within `SHOPCHAT_CLIENT_TIMEOUT` + 5 s.
pub const KEEP_ALIVE: Duration = Duration::from_secs(5);

/// Time left to a client to read an answer that closes the connection.
pub const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Extra time for the first head beyond actix's own head timer, which answers first (408).
const FIRST_HEAD_GRACE: Duration = Duration::from_secs(2);

/// A connection's deadline, shared by its stream ([`Clocked`]) and the requests served on it
/// (`HttpRequest::conn_data`). One connection lives on one worker thread: plain cells.
pub struct Clock {
    client_timeout: Duration,
    deadline: Cell<Option<Instant>>,
    /// The next byte read starts a new head: the deadline tightens to the client timeout.
    tighten: Cell<bool>,
    gone: Cell<bool>,
    gone_notify: Notify,
}

impl Clock {
    fn new(client_timeout: Duration) -> Clock {
        Clock {
            client_timeout,
            deadline: Cell::new(Some(Instant::now() + client_timeout + FIRST_HEAD_GRACE)),
            tighten: Cell::new(false),
            gone: Cell::new(false),
            gone_notify: Notify::new(),
        }
    }

    /// A request head is complete and is being served: no deadline until it is answered.
    pub fn serving(&self) {
        self.deadline.set(None);
        self.tighten.set(false);
    }

    /// The request was answered. `closing`: the answer closes the connection.
    pub fn answered(&self, closing: bool) {
        let now = Instant::now();
        if closing {
            self.deadline.set(Some(now + CLOSE_GRACE));
            self.tighten.set(false);
        } else {
            self.deadline
                .set(Some(now + KEEP_ALIVE + self.client_timeout));
            self.tighten.set(true);
        }
    }

    /// Whether the client has closed its end of the connection.
    pub fn is_gone(&self) -> bool {
        self.gone.get()
    }

    /// Completes when the client closes its end (never, if it does not).
    pub async fn gone(&self) {
        loop {
            let notified = self.gone_notify.notified();
            if self.gone.get() {
                return;
            }
            notified.await;
        }
    }

    fn expired(&self) -> bool {
        self.deadline.get().is_some_and(|at| Instant::now() >= at)
    }

    fn read_bytes(&self) {
        if self.tighten.replace(false) {
            let by_head = Instant::now() + self.client_timeout;
            let at = match self.deadline.get() {
                Some(at) if at < by_head => at,
                _ => by_head,
            };
            self.deadline.set(Some(at));
        }
    }

    fn mark_gone(&self) {
        if !self.gone.replace(true) {
            self.gone_notify.notify_waiters();
        }
    }
}

/// A TCP connection whose reads end at its [`Clock`]'s deadline.
pub struct Clocked {
    io: TcpStream,
    clock: Rc<Clock>,
    timer: Pin<Box<Sleep>>,
    /// The deadline `timer` is set to.
    timer_at: Option<Instant>,
}

impl Clocked {
    pub fn new(io: TcpStream, client_timeout: Duration) -> Clocked {
        Clocked {
            io,
            clock: Rc::new(Clock::new(client_timeout)),
            timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
            timer_at: None,
        }
    }

    pub fn peer_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.io.peer_addr()
    }

    /// The clock to hand to the requests of this connection.
    pub fn clock(&self) -> Rc<Clock> {
        self.clock.clone()
    }

    /// Whether the deadline has passed; otherwise makes sure `cx` is woken when it does.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        if self.clock.expired() {
            return true;
        }
        let Some(at) = self.clock.deadline.get() else {
            return false;
        };
        if self.timer_at != Some(at) {
            self.timer.as_mut().reset(at);
            self.timer_at = Some(at);
        }
        self.timer.as_mut().poll(cx).is_ready()
    }
}

use std::future::Future;

impl AsyncRead for Clocked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.clock.expired() {
            tracing::debug!("client timeout: connection closed");
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() == before {
                    this.clock.mark_gone();
                } else {
                    this.clock.read_bytes();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => {
                this.clock.mark_gone();
                Poll::Ready(Err(e))
            }
            Poll::Pending => {
                if this.expired(cx) {
                    tracing::debug!("client timeout: connection closed");
                    // The end of the stream: actix closes the connection.
                    return Poll::Ready(Ok(()));
                }
                Poll::Pending
            }
        }
    }
}

impl AsyncWrite for Clocked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        match Pin::new(&mut this.io).poll_write(cx, buf) {
            // A client that does not read its answer is bounded too.
            Poll::Pending if this.expired(cx) => Poll::Ready(Err(io::ErrorKind::TimedOut.into())),
            other => other,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn deadlines_follow_the_requests() {
        let clock = Clock::new(Duration::from_secs(10));
        assert!(!clock.expired());
        tokio::time::advance(Duration::from_secs(12)).await;
        assert!(clock.expired(), "first head: client timeout + grace");

        clock.serving();
        tokio::time::advance(Duration::from_secs(600)).await;
        assert!(!clock.expired(), "no deadline while serving (long-poll)");

        clock.answered(false);
        tokio::time::advance(Duration::from_secs(14)).await;
        assert!(!clock.expired(), "idle: keep-alive + client timeout");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(clock.expired());

        clock.answered(false);
        tokio::time::advance(Duration::from_secs(3)).await;
        clock.read_bytes(); // the next head starts: 10 s from now, not 15 from the answer
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(!clock.expired());
        clock.read_bytes(); // later bytes of that head change nothing
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(clock.expired());

        clock.answered(true);
        tokio::time::advance(CLOSE_GRACE).await;
        assert!(clock.expired(), "a closing answer leaves the grace only");
    }

    #[tokio::test]
    async fn gone_wakes_its_waiters() {
        let clock = Rc::new(Clock::new(Duration::from_secs(10)));
        let waiter = {
            let clock = clock.clone();
            async move { clock.gone().await }
        };
        let marked = async {
            tokio::task::yield_now().await;
            clock.mark_gone();
        };
        tokio::time::timeout(
            Duration::from_secs(1),
            futures_util::future::join(waiter, marked),
        )
        .await
        .expect("woken");
        assert!(clock.is_gone());
    }
}
