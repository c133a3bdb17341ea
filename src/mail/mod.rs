//! The seller notification e-mail (COMPAT §8): rendering, the durable file
//! outbox and SMTP delivery. Requests only ever *stage* mail; a background
//! worker delivers it (deviation D7).

pub mod outbox;
pub mod recovery;
pub mod render;
pub mod smtp;
pub mod worker;

use std::io;
use std::sync::Arc;

use outbox::{Outbox, StagedMail};
use render::Notification;

/// The narrow interface create-conversation uses: stage before the commit,
/// promote after it (§8.6 steps 1–2). File I/O runs on the blocking pool.
#[derive(Clone)]
pub struct Mailbox {
    outbox: Arc<Outbox>,
}

/// A mail in `staging/`, for async code: the outbox's synchronous [`StagedMail`] whose file
/// operations run on the blocking pool.
pub struct Staged(StagedMail);

impl Mailbox {
    pub fn new(outbox: Arc<Outbox>) -> Self {
        Mailbox { outbox }
    }

    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }

    /// Writes the rendered mail to `staging/` and syncs it to disk.
    pub async fn stage(&self, n: Notification) -> io::Result<Staged> {
        let outbox = self.outbox.clone();
        let staged = tokio::task::spawn_blocking(move || outbox.stage(&n))
            .await
            .map_err(io::Error::other)??;
        Ok(Staged(staged))
    }
}

impl Staged {
    /// After the commit: hand the mail to the delivery worker.
    pub async fn promote(self) -> io::Result<()> {
        tokio::task::spawn_blocking(move || self.0.promote())
            .await
            .map_err(io::Error::other)?
    }

    /// The transaction did not commit: the mail must never be sent.
    pub async fn discard(self) -> io::Result<()> {
        tokio::task::spawn_blocking(move || self.0.discard())
            .await
            .map_err(io::Error::other)?
    }
}
