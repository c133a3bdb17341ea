//! `shopchat outbox list|retry|purge --dead`: the e-mail outbox for an operator (§8.6 step 5).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use shopchat::mail::outbox::Outbox;

#[derive(Subcommand)]
pub enum OutboxAction {
    /// Pending, in-flight and dead mail with attempts and last error.
    List,
    /// Move dead mail back to pending.
    Retry,
    /// Delete dead mail.
    Purge {
        /// Required: only dead mail is ever purged.
        #[arg(long)]
        dead: bool,
    },
}

pub fn run(env_file: Option<PathBuf>, action: OutboxAction) -> ExitCode {
    let settings = match super::settings(env_file) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let dir = &settings.mail.outbox_dir;
    if let OutboxAction::Purge { dead: false } = action {
        eprintln!("shopchat: outbox purge needs --dead (only dead mail is ever deleted)");
        return ExitCode::from(super::USAGE);
    }
    let result = Outbox::open(dir).and_then(|outbox| match action {
        OutboxAction::List => outbox.list().map(|entries| {
            if entries.is_empty() {
                println!("outbox {} is empty", dir.display());
            }
            entries.iter().for_each(|e| println!("{e}"));
        }),
        OutboxAction::Retry => outbox
            .retry_dead()
            .map(|n| println!("{n} dead mail(s) moved back to pending")),
        OutboxAction::Purge { .. } => outbox
            .purge_dead()
            .map(|n| println!("{n} dead mail(s) deleted")),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shopchat: outbox {}: {e}", dir.display());
            ExitCode::FAILURE
        }
    }
}
