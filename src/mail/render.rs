//! The new-conversation notification e-mail (COMPAT §8.1–§8.3, deviation D7).
//!
//! Rendering happens at request time, in the request locale (§8.1); the caller passes the
//! already translated (and, per §7.1, trimmed) labels, so this module is pure string work.

use serde::{Deserialize, Serialize};

// Blade's `{{ }}` escaping: htmlspecialchars with ENT_QUOTES, existing entities escaped again (§8.2).
use crate::laravel::text::html_escape as e;

/// One rendered e-mail, exactly what the outbox stores and the SMTP worker sends (§8.6 step 1).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Notification {
    pub to: String,
    pub from_address: String,
    pub from_name: String,
    pub subject: String,
    pub html: String,
    /// Lets start-up recovery decide whether the staged mail's transaction committed (§8.6 step 3).
    pub conversation_id: u64,
    /// The message the mail is about: recovery promotes a staged mail only when this message
    /// committed — a reused conversation exists whether or not its new message did (§8.6
    /// step 3; security review L2). `None` in entries staged before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<u64>,
}

/// `T('Message')`, `T('Sender')`, `T('See Details')`, `T('Hi! You recieved a message from ')`
/// (§7.1, §8.2), already translated by the caller.
#[derive(Clone, Debug, PartialEq)]
pub struct Labels {
    pub message: String,
    pub sender: String,
    pub see_details: String,
    pub hi_you_recieved: String,
}

/// Renders the notification of a new conversation, or of a reused one its receiver had read
/// (§8.1, §8.2); `message` is the message just posted.
#[allow(clippy::too_many_arguments)] // the argument list mirrors the spec's inputs one to one
pub fn render(
    labels: &Labels,
    sender_name: &str,
    message: &str,
    link: &str,
    to: &str,
    from_address: &str,
    from_name: &str,
    conversation_id: u64,
) -> Notification {
    // D7: a space between the (trimmed) greeting and the name; PHP glues them together.
    let content = format!("{} {}.", labels.hi_you_recieved, sender_name);
    // §8.2: five lines, each ending with LF, every `{…}` escaped.
    let html = format!(
        "<h1>{message}</h1>\n\
         <p>{content}</p>\n\
         <p><b>{sender}:</b>{name}</p>\n\
         <p><b>{message}:</b>{first}</p>\n\
         <a class=\"btn btn-primary btn-md\" href=\"{link}\">{see}</a>\n",
        message = e(&labels.message),
        content = e(&content),
        sender = e(&labels.sender),
        name = e(sender_name),
        first = e(message),
        link = e(link),
        see = e(&labels.see_details),
    );
    Notification {
        to: to.to_owned(),
        from_address: from_address.to_owned(),
        from_name: from_name.to_owned(),
        // §8.1: a header, not HTML, so no escaping; the mail library RFC 2047-encodes non-ASCII.
        subject: format!("{}:- {}", labels.sender, sender_name),
        html,
        conversation_id,
        message_id: None,
    }
}

/// The "See Details" link (§8.3, D7): admins get the admin panel page, everyone else the
/// customer/seller page. `root` is `<root>` of §4.3 (no trailing slash; one is tolerated).
pub fn link(root: &str, receiver_is_admin: bool, token: &str) -> String {
    let root = root.trim_end_matches('/');
    if receiver_is_admin {
        format!("{root}/admin/conversations/{token}/show")
    } else {
        format!("{root}/conversations/{token}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn en() -> Labels {
        Labels {
            message: "Message".into(),
            sender: "Sender".into(),
            see_details: "See Details".into(),
            // T() trims, hence no trailing space (§7.1).
            hi_you_recieved: "Hi! You recieved a message from".into(),
        }
    }

    #[test]
    fn spec_example_is_byte_exact() {
        let token = "eyJpdiI6TOKENInRhZyI6IiJ9";
        let l = link("http://127.0.0.1:8081", false, token);
        let n = render(
            &en(),
            "Customer Two",
            "Which switches?",
            &l,
            "seller@example.com",
            "hello@example.com",
            "Example",
            6,
        );
        assert_eq!(
            n.html,
            "<h1>Message</h1>\n\
             <p>Hi! You recieved a message from Customer Two.</p>\n\
             <p><b>Sender:</b>Customer Two</p>\n\
             <p><b>Message:</b>Which switches?</p>\n\
             <a class=\"btn btn-primary btn-md\" href=\"http://127.0.0.1:8081/conversations/eyJpdiI6TOKENInRhZyI6IiJ9\">See Details</a>\n"
        );
        assert_eq!(n.subject, "Sender:- Customer Two");
        assert_eq!(n.to, "seller@example.com");
        assert_eq!(n.from_address, "hello@example.com");
        assert_eq!(n.from_name, "Example");
        assert_eq!(n.conversation_id, 6);
    }

    #[test]
    fn everything_is_escaped_like_blade() {
        let labels = Labels {
            message: "رسالة".into(),
            sender: "المرسل".into(),
            see_details: "See <Details>".into(),
            hi_you_recieved: "Hi! You recieved a message from".into(),
        };
        let n = render(
            &labels,
            "O'Brien & <Co>",
            "a \"quote\" &amp; tag <b>",
            "http://h/x?a=1&b=2",
            "t@example.com",
            "f@example.com",
            "F",
            1,
        );
        assert_eq!(
            n.html,
            "<h1>رسالة</h1>\n\
             <p>Hi! You recieved a message from O&#039;Brien &amp; &lt;Co&gt;.</p>\n\
             <p><b>المرسل:</b>O&#039;Brien &amp; &lt;Co&gt;</p>\n\
             <p><b>رسالة:</b>a &quot;quote&quot; &amp;amp; tag &lt;b&gt;</p>\n\
             <a class=\"btn btn-primary btn-md\" href=\"http://h/x?a=1&amp;b=2\">See &lt;Details&gt;</a>\n"
        );
        // The subject is a header: raw text.
        assert_eq!(n.subject, "المرسل:- O'Brien & <Co>");
    }

    #[test]
    fn links() {
        assert_eq!(
            link("http://shop.example.com/shop", true, "TOK"),
            "http://shop.example.com/shop/admin/conversations/TOK/show"
        );
        assert_eq!(
            link("http://shop.example.com/", false, "TOK"),
            "http://shop.example.com/conversations/TOK"
        );
    }

    #[test]
    fn serde_round_trip() {
        let n = render(&en(), "A", "B", "L", "t@x", "f@x", "F", 9);
        let back: Notification = serde_json::from_str(&serde_json::to_string(&n).unwrap()).unwrap();
        assert_eq!(back, n);
    }
}
