//! Sending one outbox entry (COMPAT §8.1, §8.6 step 4) with the `MAIL_*` settings of §10.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::{MailSettings, MailerKind};
use crate::mail::render::Notification;
use crate::sync::LockUnpoisoned;

/// `MAIL_MAILER` (else `MAIL_DRIVER`), §10: `smtp` sends; `log`/`array` only log.
#[derive(Debug)]
pub enum Mailer {
    Smtp(SmtpMailer),
    Log,
}

impl Mailer {
    /// The mailer the `MAIL_*` settings describe.
    pub fn from_settings(m: &MailSettings) -> Mailer {
        match m.mailer {
            MailerKind::Log => Mailer::Log,
            MailerKind::Smtp => Mailer::smtp(SmtpSettings {
                host: m.host.clone(),
                port: m.port,
                // Absent MAIL_ENCRYPTION means Laravel's default `tls` (§10).
                encryption: encryption_from_env(
                    Some(m.encryption.as_deref().unwrap_or("tls")),
                    m.port,
                ),
                username: m.username.clone(),
                password: m.password.as_ref().map(|p| p.expose().clone()),
                timeout: m.timeout,
            }),
        }
    }

    pub fn smtp(settings: SmtpSettings) -> Mailer {
        Mailer::Smtp(SmtpMailer {
            settings,
            transport: Mutex::new(None),
        })
    }
}

/// The SMTP settings and the transport built from them once: it keeps its connections open
/// between mails (lettre's pool), so a backlog is not a TCP, TLS and AUTH handshake per mail
/// (security review L3).
pub struct SmtpMailer {
    pub settings: SmtpSettings,
    transport: Mutex<Option<AsyncSmtpTransport<Tokio1Executor>>>,
}

impl std::fmt::Debug for SmtpMailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.settings.fmt(f)
    }
}

impl SmtpMailer {
    fn transport(&self) -> Result<AsyncSmtpTransport<Tokio1Executor>, DeliveryError> {
        let mut cached = self.transport.lock_unpoisoned();
        if let Some(t) = &*cached {
            return Ok(t.clone());
        }
        let t = transport(&self.settings)?;
        *cached = Some(t.clone());
        Ok(t)
    }
}

/// `MAIL_HOST`, `MAIL_PORT`, `MAIL_ENCRYPTION`, `MAIL_USERNAME`, `MAIL_PASSWORD` (§10).
#[derive(Clone)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub encryption: Encryption,
    /// SMTP AUTH is attempted only when this is set (§10).
    pub username: Option<String>,
    pub password: Option<String>,
    /// Per network operation (connect, each command). Keep it well under the 10-minute stale
    /// claim limit of §8.6, or another worker may take over a mail still being sent.
    pub timeout: Duration,
}

impl std::fmt::Debug for SmtpSettings {
    // The password must never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("encryption", &self.encryption)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encryption {
    /// Plain connection, upgraded with STARTTLS when the server offers it.
    None,
    /// STARTTLS required: refuse to send in clear text.
    StartTls,
    /// TLS from the first byte (SMTPS, usually port 465).
    Implicit,
}

/// Maps `MAIL_ENCRYPTION` and `MAIL_PORT` to an [`Encryption`] (§10).
///
/// `value` is `None` when the variable is absent, which means the default `tls`. An empty value
/// or the literal `null`/`(null)` is *not* replaced by the default here (§10) and gives
/// opportunistic STARTTLS. Port 465 always means implicit TLS. Any other unknown value is treated
/// like an empty one, as Laravel does (it only looks for `tls`).
pub fn encryption_from_env(value: Option<&str>, port: u16) -> Encryption {
    let value = value.map(|v| v.trim().to_ascii_lowercase());
    let value = value.as_deref().unwrap_or("tls");
    if port == 465 || value == "ssl" || value == "smtps" {
        Encryption::Implicit
    } else if value == "tls" {
        Encryption::StartTls
    } else {
        Encryption::None
    }
}

/// A failed delivery. `permanent` (5xx reply, malformed address) sends the entry to `dead/` at
/// once; otherwise it is retried with back-off (§8.6 step 4). `unreachable`: no SMTP reply at
/// all (refused, timed out, TLS failed) — the server, not this mail, is the problem, so the
/// worker pauses before trying the next one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DeliveryError {
    pub message: String,
    pub permanent: bool,
    pub unreachable: bool,
}

impl DeliveryError {
    fn permanent(message: String) -> Self {
        DeliveryError {
            message,
            permanent: true,
            unreachable: false,
        }
    }

    fn transient(message: String) -> Self {
        DeliveryError {
            message,
            permanent: false,
            unreachable: false,
        }
    }

    /// A failure before any SMTP reply (connection, timeout, TLS).
    pub fn unreachable(message: String) -> Self {
        DeliveryError {
            message,
            permanent: false,
            unreachable: true,
        }
    }
}

/// Sends (or, for [`Mailer::Log`], logs) one notification.
pub async fn deliver(mailer: &Mailer, n: &Notification) -> Result<(), DeliveryError> {
    match mailer {
        Mailer::Log => {
            // §10: the `log` and `array` mailers log the message instead of sending it.
            tracing::info!(
                to = %n.to,
                from = %n.from_address,
                subject = %n.subject,
                conversation_id = n.conversation_id,
                html = %n.html,
                "mail (log mailer, not sent)"
            );
            Ok(())
        }
        Mailer::Smtp(smtp) => {
            let message = build_message(n)?;
            let transport = smtp.transport()?;
            match transport.send(message).await {
                Ok(_) => Ok(()),
                // lettre classifies by reply code: 5xx is permanent (§8.6: dead at once);
                // 4xx, timeouts, refused connections and TLS trouble are worth retrying.
                Err(e) if e.is_permanent() => Err(DeliveryError::permanent(error_chain(&e))),
                Err(e) if e.is_transient() => Err(DeliveryError::transient(error_chain(&e))),
                Err(e) => Err(DeliveryError::unreachable(error_chain(&e))),
            }
        }
    }
}

/// `shopchat check --smtp`: connects, negotiates TLS and AUTH as a delivery would, sends NOOP.
pub async fn probe(settings: &SmtpSettings) -> Result<(), String> {
    let transport = transport(settings).map_err(|e| e.message)?;
    match transport.test_connection().await {
        Ok(true) => Ok(()),
        Ok(false) => Err("the server did not answer NOOP".into()),
        Err(e) => Err(error_chain(&e)),
    }
}

/// §8.1: From with display name, To, subject (RFC 2047-encoded by lettre when not ASCII), one
/// `text/html; charset=utf-8` part.
fn build_message(n: &Notification) -> Result<Message, DeliveryError> {
    let address = |what: &str, s: &str| {
        s.trim()
            .parse::<Address>()
            .map_err(|e| DeliveryError::permanent(format!("malformed {what} address {s:?}: {e}")))
    };
    let from_name = (!n.from_name.trim().is_empty()).then(|| n.from_name.clone());
    let from = Mailbox::new(from_name, address("From", &n.from_address)?);
    let to = Mailbox::new(None, address("To", &n.to)?);
    Message::builder()
        .from(from)
        .to(to)
        .subject(n.subject.clone())
        .header(ContentType::TEXT_HTML)
        .body(n.html.clone())
        .map_err(|e| DeliveryError::permanent(format!("cannot build the message: {e}")))
}

fn transport(s: &SmtpSettings) -> Result<AsyncSmtpTransport<Tokio1Executor>, DeliveryError> {
    let tls = match s.encryption {
        Encryption::None => Tls::Opportunistic(tls_parameters(&s.host)?),
        Encryption::StartTls => Tls::Required(tls_parameters(&s.host)?),
        Encryption::Implicit => Tls::Wrapper(tls_parameters(&s.host)?),
    };
    // `builder_dangerous` only means "TLS is configured by hand", which is done just above.
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(s.host.as_str())
        .port(s.port)
        .tls(tls)
        .timeout(Some(s.timeout))
        // One worker sends one mail at a time; an idle connection is closed after a minute.
        .pool_config(
            lettre::transport::smtp::PoolConfig::new()
                .max_size(2)
                .idle_timeout(Duration::from_secs(60)),
        );
    if let Some(user) = &s.username {
        builder = builder.credentials(Credentials::new(
            user.clone(),
            s.password.clone().unwrap_or_default(),
        ));
    }
    Ok(builder.build())
}

/// Building TLS parameters loads the system certificate store, which is too costly to repeat
/// for every mail; they depend only on the host name, so they are built once per host.
fn tls_parameters(host: &str) -> Result<TlsParameters, DeliveryError> {
    static CACHE: OnceLock<Mutex<HashMap<String, TlsParameters>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(p) = cache.lock_unpoisoned().get(host) {
        return Ok(p.clone());
    }
    // Not cached on failure and reported as transient: a configuration fix or a certificate
    // store repair should let queued mails through without an operator retrying dead entries.
    let params = TlsParameters::new(host.to_owned())
        .map_err(|e| DeliveryError::transient(format!("TLS setup for {host}: {e}")))?;
    cache
        .lock_unpoisoned()
        .insert(host.to_owned(), params.clone());
    Ok(params)
}

/// lettre's Display omits the underlying cause (e.g. "Connection refused"); the dead-letter
/// error must say what went wrong.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(to: &str) -> Notification {
        Notification {
            to: to.into(),
            from_address: "hello@example.com".into(),
            from_name: "Example".into(),
            subject: "المرسل:- Customer One".into(),
            html: "<h1>رسالة</h1>\n".into(),
            conversation_id: 1,
            message_id: None,
        }
    }

    #[test]
    fn encryption_rules() {
        use Encryption::{Implicit, StartTls};
        assert_eq!(encryption_from_env(None, 587), StartTls);
        assert_eq!(encryption_from_env(None, 465), Implicit);
        assert_eq!(encryption_from_env(Some("tls"), 587), StartTls);
        assert_eq!(encryption_from_env(Some("TLS"), 25), StartTls);
        assert_eq!(encryption_from_env(Some("tls"), 465), Implicit);
        assert_eq!(encryption_from_env(Some("ssl"), 587), Implicit);
        assert_eq!(encryption_from_env(Some("smtps"), 2525), Implicit);
        assert_eq!(encryption_from_env(Some(""), 587), Encryption::None);
        assert_eq!(encryption_from_env(Some("null"), 25), Encryption::None);
        assert_eq!(encryption_from_env(Some("(null)"), 25), Encryption::None);
        assert_eq!(encryption_from_env(Some(""), 465), Implicit);
    }

    #[test]
    fn message_headers() {
        let m = build_message(&note("seller@example.com")).unwrap();
        let raw = String::from_utf8(m.formatted()).unwrap();
        assert!(
            raw.contains("From: Example <hello@example.com>\r\n"),
            "{raw}"
        );
        assert!(raw.contains("To: seller@example.com\r\n"), "{raw}");
        assert!(
            raw.contains("Content-Type: text/html; charset=utf-8\r\n"),
            "{raw}"
        );
        // Non-ASCII subject: RFC 2047 encoded word.
        assert!(raw.contains("Subject: =?utf-8?"), "{raw}");
    }

    #[tokio::test]
    async fn malformed_address_is_permanent() {
        let mailer = Mailer::smtp(SmtpSettings {
            host: "127.0.0.1".into(),
            port: 9,
            encryption: Encryption::None,
            username: None,
            password: None,
            timeout: Duration::from_secs(1),
        });
        for to in ["", "not an address", "a@b@c"] {
            let err = deliver(&mailer, &note(to)).await.unwrap_err();
            assert!(err.permanent, "{to:?}: {err}");
            assert!(err.message.contains("malformed To address"), "{err}");
        }
    }

    #[tokio::test]
    async fn log_mailer_always_succeeds() {
        assert_eq!(deliver(&Mailer::Log, &note("x")).await, Ok(()));
    }

    #[test]
    fn password_is_not_debug_printed() {
        let s = SmtpSettings {
            host: "h".into(),
            port: 25,
            encryption: Encryption::None,
            username: Some("u".into()),
            password: Some("hunter2".into()),
            timeout: Duration::from_secs(1),
        };
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
