//! The home runtime: the one that built the application and runs until the process exits.
//!
//! actix-server runs each HTTP worker thread on a runtime of its own, and a socket or timer
//! belongs to the runtime that created it (its reactor drives it). The database and Redis
//! pools are shared by all workers, so a pooled connection opened while serving a request on
//! one worker is later used by requests on the others. During a drain each worker's runtime
//! ends as soon as its own client connections are done: a pooled connection it had opened
//! then fails for every request still running on another worker ("A Tokio 1.x context was
//! found, but it is being shutdown", a 503 in the middle of a rolling restart).
//!
//! Requests are therefore polled with the home runtime entered ([`Home::run`]): the sockets,
//! timers and tasks they create belong to it, like those of the batching and watching tasks
//! that already run there. The client connections themselves stay with their workers. The
//! price is one hand-over between threads when a database answer arrives, which the
//! connections opened by the batching tasks already paid.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::runtime::Handle;

#[derive(Clone, Debug)]
pub struct Home(Handle);

impl Home {
    /// The runtime of the caller (panics outside one, like `tokio::spawn`).
    pub fn current() -> Home {
        Home(Handle::current())
    }

    /// `future`, polled with the home runtime entered (module docs).
    pub fn run<F: Future>(&self, future: F) -> OnHome<'_, F> {
        OnHome { home: self, future }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`Home::run`].
    pub struct OnHome<'a, F> {
        home: &'a Home,
        #[pin]
        future: F,
    }
}

impl<F: Future> Future for OnHome<'_, F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let _entered = this.home.0.enter();
        this.future.poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_request_creates_outlives_the_runtime_polling_it() {
        let home_rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let home = home_rt.block_on(async { Home::current() });
        // The home runtime keeps driving its reactor on a thread of its own.
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let driver = std::thread::spawn(move || home_rt.block_on(stopped));

        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let worker = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // A "worker" opens a socket while serving, then ends (a drained HTTP worker).
        let stream = worker.block_on(home.run(tokio::net::TcpStream::connect(addr)));
        let stream = stream.unwrap();
        drop(worker);
        let (mut accepted, _) = listener.accept().unwrap();
        std::io::Write::write_all(&mut accepted, b"still here").unwrap();

        // Another worker still reads from it.
        let other = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let read = other.block_on(async move {
            let mut stream = stream;
            let mut buf = [0u8; 10];
            tokio::io::AsyncReadExt::read_exact(&mut stream, &mut buf).await?;
            Ok::<_, std::io::Error>(buf)
        });
        assert_eq!(&read.unwrap(), b"still here");
        stop.send(()).unwrap();
        driver.join().unwrap().unwrap();
    }
}
