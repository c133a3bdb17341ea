//! The delivery worker: drains `<outbox>/pending/` over SMTP (COMPAT §8.6 step 4).
//!
//! Several workers, in one process or in several sharing the outbox, may run at once: every
//! hand-over goes through the outbox's atomic renames.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::mail::outbox::{unix_now, Claimed, FailOutcome, Outbox, RetryPolicy};
use crate::mail::smtp::{deliver, Mailer};
use crate::ops::metrics::MailCounters;

/// §8.6 step 4: a claim older than this belongs to a dead worker.
pub const STALE_CLAIM_AFTER: Duration = Duration::from_secs(10 * 60);

/// Hard limit on one delivery, well inside [`STALE_CLAIM_AFTER`], so a live worker's claim is
/// never mistaken for a dead one's (lettre's timeout is per operation, not per mail).
const DELIVERY_DEADLINE: Duration = Duration::from_secs(5 * 60);

/// How often stale claims are looked for; they are 10 minutes old at the earliest.
const STALE_SCAN_EVERY: Duration = Duration::from_secs(30);

/// A list of due entries is claimed from for at most this long before `pending/` is listed
/// again (new mail, retries that fell due).
const DUE_LIST_FOR: Duration = Duration::from_secs(30);

/// The pause after a delivery found the SMTP server unreachable, doubling up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_secs(5);
const MAX_PAUSE: Duration = Duration::from_secs(5 * 60);

/// How often `dead/` is swept of entries older than `SHOPCHAT_OUTBOX_DEAD_DAYS`.
const DEAD_SWEEP_EVERY: Duration = Duration::from_secs(10 * 60);

/// Runs until `shutdown` becomes `true` (or its sender is dropped). A mail being sent at that
/// moment is finished and its outcome recorded first; waits between scans end at once.
/// Delivered, retried and dead mail are counted in `counters` (`/metrics`).
pub async fn run_worker(
    outbox: Arc<Outbox>,
    mailer: Arc<Mailer>,
    policy: RetryPolicy,
    poll: Duration,
    mut shutdown: watch::Receiver<bool>,
    counters: MailCounters,
) {
    let mut last_stale_scan: Option<Instant> = None;
    let mut last_dead_sweep: Option<Instant> = None;
    let mut due: VecDeque<String> = VecDeque::new();
    let mut listed_at: Option<Instant> = None;
    let mut pause = FIRST_PAUSE;
    loop {
        if *shutdown.borrow() {
            break;
        }

        // `dead/` does not grow for ever (security review M3).
        if let Some(keep) = policy.keep_dead {
            if last_dead_sweep.is_none_or(|t| t.elapsed() >= DEAD_SWEEP_EVERY) {
                last_dead_sweep = Some(Instant::now());
                let ob = Arc::clone(&outbox);
                match blocking(move || ob.expire_dead(keep)).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(deleted = n, "expired dead mail deleted"),
                    Err(e) => tracing::error!(error = %e, "outbox: expiring dead/ failed"),
                }
            }
        }

        if last_stale_scan.is_none_or(|t| t.elapsed() >= STALE_SCAN_EVERY) {
            last_stale_scan = Some(Instant::now());
            let ob = Arc::clone(&outbox);
            match blocking(move || ob.return_stale_claims(STALE_CLAIM_AFTER)).await {
                Ok(0) => {}
                Ok(n) => tracing::warn!(returned = n, "stale outbox claims returned to pending"),
                Err(e) => tracing::error!(error = %e, "outbox: returning stale claims failed"),
            }
        }

        // The due entries, listed once and claimed one by one (another process may take
        // some first); listed again when used up or [`DUE_LIST_FOR`] old. Directory scans and
        // fsyncs block: they run off the async threads.
        if due.is_empty() || listed_at.is_none_or(|t: Instant| t.elapsed() >= DUE_LIST_FOR) {
            let ob = Arc::clone(&outbox);
            match blocking(move || ob.due(unix_now())).await {
                Ok(names) => due = names.into(),
                Err(e) => tracing::error!(error = %e, "outbox: listing pending/ failed"),
            }
            listed_at = Some(Instant::now());
        }
        let Some(name) = due.pop_front() else {
            if wait_or_shutdown(&mut shutdown, poll).await {
                break;
            }
            continue;
        };
        let ob = Arc::clone(&outbox);
        match blocking(move || ob.claim(&name, unix_now())).await {
            Ok(Some(claimed)) => {
                let unreachable = send_one(claimed, &mailer, policy, &counters).await;
                if unreachable {
                    // The server cannot be reached: trying every due mail now would only cost
                    // each a connection timeout and an attempt. Wait, longer each time.
                    tracing::warn!(pause = ?pause, "SMTP server unreachable; delivery paused");
                    if wait_or_shutdown(&mut shutdown, pause).await {
                        break;
                    }
                    pause = (pause * 2).min(MAX_PAUSE);
                    due.clear();
                } else {
                    pause = FIRST_PAUSE;
                }
                // Otherwise straight on to the next due entry: a backlog drains at full speed.
            }
            // Claimed by another worker meanwhile.
            Ok(None) => {}
            Err(e) => {
                tracing::error!(error = %e, "outbox: claiming an entry failed");
                if wait_or_shutdown(&mut shutdown, poll).await {
                    break;
                }
            }
        }
    }
    tracing::debug!("mail worker stopped");
}

/// Delivers one claimed entry and records the outcome; `true` when the server could not be
/// reached at all.
async fn send_one(
    claimed: Claimed,
    mailer: &Mailer,
    policy: RetryPolicy,
    counters: &MailCounters,
) -> bool {
    let result = match tokio::time::timeout(
        DELIVERY_DEADLINE,
        deliver(mailer, claimed.notification()),
    )
    .await
    {
        Ok(r) => r,
        Err(_) => Err(crate::mail::smtp::DeliveryError::unreachable(format!(
            "delivery took longer than {DELIVERY_DEADLINE:?}"
        ))),
    };
    let unreachable = result.as_ref().is_err_and(|e| e.unreachable);
    let file = claimed.file_name().to_owned();
    let conversation_id = claimed.notification().conversation_id;
    match result {
        Ok(()) => {
            tracing::info!(%file, conversation_id, "mail delivered");
            counters.delivered.inc();
            if let Err(e) = blocking(move || claimed.delivered()).await {
                // The mail went out but the claim stays; after 10 min it is sent again
                // (a duplicate, never a loss: §8.6 is at-least-once).
                tracing::error!(%file, error = %e, "outbox: removing a delivered entry failed");
            }
        }
        Err(err) => {
            let message = err.message.clone();
            let permanent = err.permanent;
            let outcome =
                blocking(move || claimed.failed(&message, permanent, policy, unix_now())).await;
            match outcome {
                Ok(FailOutcome::Retry { next_attempt_at }) => {
                    counters.retried.inc();
                    tracing::warn!(
                        %file, conversation_id, error = %err.message, next_attempt_at,
                        "mail delivery failed; will retry"
                    )
                }
                Ok(FailOutcome::Dead) => {
                    counters.dead.inc();
                    tracing::error!(
                        %file, conversation_id, error = %err.message, permanent,
                        "mail delivery failed; moved to dead/"
                    )
                }
                // The claim file is still in sending/ and returns as stale in 10 min.
                Err(e) => tracing::error!(
                    %file, error = %e, "outbox: recording a failed delivery failed"
                ),
            }
        }
    }
    unreachable
}

/// Sleeps `poll`; returns true if shutdown was requested meanwhile (or can no longer be
/// signalled because the sender is gone, which is how an owning task going away looks).
async fn wait_or_shutdown(shutdown: &mut watch::Receiver<bool>, poll: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(poll) => *shutdown.borrow(),
        changed = shutdown.changed() => changed.is_err() || *shutdown.borrow(),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|join| Err(std::io::Error::other(join)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mail::outbox::{EntryState, EntrySummary};
    use crate::mail::render::{link, render, Labels, Notification};
    use crate::mail::smtp::{Encryption, SmtpSettings};
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    const HTML: &str = "<h1>Message</h1>\n\
        <p>Hi! You recieved a message from Customer Two.</p>\n\
        <p><b>Sender:</b>Customer Two</p>\n\
        <p><b>Message:</b>Which switches?</p>\n\
        <a class=\"btn btn-primary btn-md\" href=\"http://127.0.0.1:8081/conversations/eyJpdiI6TOKENInRhZyI6IiJ9\">See Details</a>\n";

    fn notification(conversation_id: u64) -> Notification {
        let labels = Labels {
            message: "Message".into(),
            sender: "Sender".into(),
            see_details: "See Details".into(),
            hi_you_recieved: "Hi! You recieved a message from".into(),
        };
        let n = render(
            &labels,
            "Customer Two",
            "Which switches?",
            &link("http://127.0.0.1:8081", false, "eyJpdiI6TOKENInRhZyI6IiJ9"),
            "seller@example.com",
            "hello@example.com",
            "Example",
            conversation_id,
        );
        assert_eq!(n.html, HTML);
        n
    }

    fn smtp(port: u16) -> Arc<Mailer> {
        Arc::new(Mailer::smtp(SmtpSettings {
            host: "127.0.0.1".into(),
            port,
            encryption: Encryption::None,
            username: None,
            password: None,
            timeout: Duration::from_secs(5),
        }))
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    /// A mail as an SMTP server received it.
    struct SunkMail {
        from: String,
        to: Vec<String>,
        data: Vec<u8>,
    }

    /// A loopback SMTP server that accepts every mail; stopping it (or dropping it) closes the
    /// listener and every connection, like a server that went away.
    struct Sink {
        task: tokio::task::JoinHandle<()>,
        mails: Arc<std::sync::Mutex<Vec<SunkMail>>>,
    }

    impl Sink {
        async fn start(port: u16) -> Sink {
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
                .await
                .unwrap();
            let mails = Arc::new(std::sync::Mutex::new(Vec::new()));
            let inbox = mails.clone();
            let task = tokio::spawn(async move {
                // Dropped with this task: aborting it closes the open connections too.
                let mut connections = tokio::task::JoinSet::new();
                while let Ok((stream, _)) = listener.accept().await {
                    connections.spawn(serve_smtp(stream, inbox.clone()));
                }
            });
            Sink { task, mails }
        }

        fn stop(&mut self) {
            self.task.abort();
        }

        fn received(&self) -> usize {
            self.mails.lock().unwrap().len()
        }
    }

    impl Drop for Sink {
        fn drop(&mut self) {
            self.stop();
        }
    }

    /// One SMTP session: EHLO, MAIL, RCPT, DATA (dot-unstuffed, the CRLF before the final dot
    /// kept), QUIT; anything else is accepted.
    async fn serve_smtp(
        stream: tokio::net::TcpStream,
        inbox: Arc<std::sync::Mutex<Vec<SunkMail>>>,
    ) {
        let (read, mut write) = stream.into_split();
        let mut read = BufReader::new(read);
        let _ = write.write_all(b"220 sink ESMTP\r\n").await;
        let (mut from, mut to) = (String::new(), Vec::new());
        let address = |s: &str| s.split_whitespace().next().unwrap_or_default().to_string();
        loop {
            let mut line = Vec::new();
            if read.read_until(b'\n', &mut line).await.unwrap_or(0) == 0 {
                return;
            }
            let text = String::from_utf8_lossy(&line).trim_end().to_string();
            let upper = text.to_ascii_uppercase();
            let reply: &[u8] = if upper.starts_with("EHLO") {
                b"250-sink\r\n250 8BITMIME\r\n"
            } else if upper.starts_with("MAIL FROM:") {
                from = address(&text[10..]);
                b"250 ok\r\n"
            } else if upper.starts_with("RCPT TO:") {
                to.push(address(&text[8..]));
                b"250 ok\r\n"
            } else if upper == "DATA" {
                let _ = write.write_all(b"354 go\r\n").await;
                let mut data = Vec::new();
                loop {
                    let mut l = Vec::new();
                    if read.read_until(b'\n', &mut l).await.unwrap_or(0) == 0 {
                        return;
                    }
                    if l == b".\r\n" {
                        break;
                    }
                    data.extend_from_slice(l.strip_prefix(b".").unwrap_or(&l));
                }
                inbox.lock().unwrap().push(SunkMail {
                    from: std::mem::take(&mut from),
                    to: std::mem::take(&mut to),
                    data,
                });
                b"250 queued\r\n"
            } else if upper == "QUIT" {
                let _ = write.write_all(b"221 bye\r\n").await;
                return;
            } else {
                b"250 ok\r\n"
            };
            if write.write_all(reply).await.is_err() {
                return;
            }
        }
    }

    async fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(v) = f() {
                return v;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn start_worker(
        outbox: &Arc<Outbox>,
        mailer: Arc<Mailer>,
        max_attempts: u32,
    ) -> (watch::Sender<bool>, tokio::task::JoinHandle<()>) {
        let (tx, rx) = watch::channel(false);
        let handle = tokio::spawn(run_worker(
            Arc::clone(outbox),
            mailer,
            RetryPolicy {
                max_attempts,
                first_backoff_secs: 60,
                keep_dead: None,
            },
            Duration::from_millis(50),
            rx,
            MailCounters::default(),
        ));
        (tx, handle)
    }

    async fn stop_worker(tx: watch::Sender<bool>, handle: tokio::task::JoinHandle<()>) {
        tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(10), handle)
            .await
            .expect("worker did not stop promptly")
            .unwrap();
    }

    fn only_entry(outbox: &Outbox) -> Option<EntrySummary> {
        let list = outbox.list().unwrap();
        (list.len() == 1).then(|| list[0].clone())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn delivers_through_real_smtp_then_retries_when_the_server_is_gone() {
        let tmp = tempfile::tempdir().unwrap();
        let outbox = Arc::new(Outbox::open(tmp.path().join("outbox")).unwrap());
        let port = free_port();
        let mut sink = Sink::start(port).await;

        outbox.stage(&notification(6)).unwrap().promote().unwrap();
        let (tx, handle) = start_worker(&outbox, smtp(port), 20);
        eventually("the sink to receive the mail", || {
            (sink.received() > 0).then_some(())
        })
        .await;
        eventually("the outbox to empty", || {
            outbox.list().unwrap().is_empty().then_some(())
        })
        .await;
        stop_worker(tx, handle).await;

        let raw = {
            let mails = sink.mails.lock().unwrap();
            assert_eq!(mails.len(), 1);
            assert_eq!(mails[0].to, ["<seller@example.com>"]);
            assert_eq!(mails[0].from, "<hello@example.com>");
            String::from_utf8(mails[0].data.clone()).unwrap()
        };
        let (headers, body) = raw.split_once("\r\n\r\n").expect("header/body separator");
        let headers: Vec<&str> = headers.split("\r\n").collect();
        assert!(
            headers.contains(&"Subject: Sender:- Customer Two"),
            "{headers:?}"
        );
        assert!(
            headers.contains(&"From: Example <hello@example.com>"),
            "{headers:?}"
        );
        assert!(headers.contains(&"To: seller@example.com"), "{headers:?}");
        assert!(
            headers.contains(&"Content-Type: text/html; charset=utf-8"),
            "{headers:?}"
        );
        // lettre picks quoted-printable for lines over 76 characters; the decoded body is the
        // byte-exact §8.2 HTML (line ends travel as CRLF, as SMTP requires).
        assert!(
            headers.contains(&"Content-Transfer-Encoding: quoted-printable"),
            "{headers:?}"
        );
        // The CRLF that precedes the terminating dot belongs to the data.
        let body = body.strip_suffix("\r\n").unwrap();
        assert_eq!(decode_quoted_printable(body).replace("\r\n", "\n"), HTML);

        // The server goes away: the next mail fails transiently and waits in pending/.
        sink.stop();
        outbox.stage(&notification(7)).unwrap().promote().unwrap();
        let before = unix_now();
        let (tx, handle) = start_worker(&outbox, smtp(port), 20);
        let entry = eventually("a failed attempt to be recorded", || {
            only_entry(&outbox).filter(|e| e.attempts == 1)
        })
        .await;
        stop_worker(tx, handle).await;
        assert_eq!(entry.state, EntryState::Pending);
        assert!(entry.next_attempt_at >= before + 60, "{entry:?}");
        assert!(entry.last_error.is_some(), "{entry:?}");
        assert_eq!(sink.received(), 1);
        // Not due yet: nobody may claim it now...
        assert!(outbox.claim_next(unix_now()).unwrap().is_none());
        // ...but it is claimable once its time has come.
        let claimed = outbox.claim_next(entry.next_attempt_at).unwrap().unwrap();
        assert_eq!(claimed.attempts(), 1);
        assert_eq!(claimed.notification().conversation_id, 7);
    }

    /// RFC 2045 §6.7 decoding, enough for the test: soft breaks and `=XX` escapes.
    fn decode_quoted_printable(s: &str) -> String {
        let s = s.replace("=\r\n", "");
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'=' {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        String::from_utf8(out).unwrap()
    }

    /// An SMTP server that refuses every sender with 554.
    async fn refusing_server() -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut lines = BufReader::new(read).lines();
                    write.write_all(b"220 refuser ESMTP\r\n").await?;
                    while let Some(line) = lines.next_line().await? {
                        let verb = line.split(' ').next().unwrap_or("").to_ascii_uppercase();
                        let reply: &[u8] = match verb.as_str() {
                            "EHLO" | "HELO" => b"250 refuser\r\n",
                            "MAIL" => b"554 5.7.1 Sender rejected\r\n",
                            "QUIT" => b"221 bye\r\n",
                            _ => b"250 OK\r\n",
                        };
                        write.write_all(reply).await?;
                        if verb == "QUIT" {
                            break;
                        }
                    }
                    std::io::Result::Ok(())
                });
            }
        });
        port
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_5xx_reply_dead_letters_at_once() {
        let tmp = tempfile::tempdir().unwrap();
        let outbox = Arc::new(Outbox::open(tmp.path()).unwrap());
        let port = refusing_server().await;
        outbox.stage(&notification(9)).unwrap().promote().unwrap();
        let (tx, handle) = start_worker(&outbox, smtp(port), 20);
        let entry = eventually("the entry to be dead-lettered", || {
            only_entry(&outbox).filter(|e| e.state == EntryState::Dead)
        })
        .await;
        stop_worker(tx, handle).await;
        assert_eq!(entry.attempts, 1);
        let error = entry.last_error.unwrap();
        assert!(error.contains("554"), "{error}");
    }

    #[tokio::test]
    async fn log_mailer_drains_and_shutdown_is_prompt_while_idle() {
        let tmp = tempfile::tempdir().unwrap();
        let outbox = Arc::new(Outbox::open(tmp.path()).unwrap());
        for id in 0..3 {
            outbox.stage(&notification(id)).unwrap().promote().unwrap();
        }
        let (tx, rx) = watch::channel(false);
        let handle = tokio::spawn(run_worker(
            Arc::clone(&outbox),
            Arc::new(Mailer::Log),
            RetryPolicy::default(),
            // A long poll: shutdown must not wait for it.
            Duration::from_secs(3600),
            rx,
            MailCounters::default(),
        ));
        eventually("the outbox to drain", || {
            outbox.list().unwrap().is_empty().then_some(())
        })
        .await;
        stop_worker(tx, handle).await;
    }
}
