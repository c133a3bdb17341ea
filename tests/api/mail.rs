//! The seller e-mail end to end (COMPAT §8): create-conversation stages it,
//! the outbox worker delivers it over a real SMTP conversation, and the link
//! decrypts with the shop's APP_KEY.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use shopchat::laravel::encrypter::{parse_app_key, Encrypter};

use crate::helpers::*;

/// One received mail: envelope recipients and the DATA text.
#[derive(Debug, Clone)]
pub struct Received {
    pub rcpt: Vec<String>,
    pub data: String,
}

/// A minimal SMTP server on loopback that accepts every mail.
pub async fn smtp_sink() -> (u16, Arc<Mutex<Vec<Received>>>) {
    smtp_sink_on(0).await
}

async fn smtp_sink_on(port: u16) -> (u16, Arc<Mutex<Vec<Received>>>) {
    let (port, store, _) = smtp_sink_counting(port).await;
    (port, store)
}

/// [`smtp_sink_on`] that also counts the connections it accepted.
async fn smtp_sink_counting(
    port: u16,
) -> (
    u16,
    Arc<Mutex<Vec<Received>>>,
    Arc<std::sync::atomic::AtomicUsize>,
) {
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let store = Arc::new(Mutex::new(Vec::new()));
    let inbox = store.clone();
    let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let inbox = inbox.clone();
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read).lines();
                write.write_all(b"220 sink ESMTP\r\n").await.ok();
                let mut current = Received {
                    rcpt: vec![],
                    data: String::new(),
                };
                while let Ok(Some(line)) = lines.next_line().await {
                    let upper = line.to_ascii_uppercase();
                    let reply: &[u8] = if upper.starts_with("EHLO") {
                        b"250-sink\r\n250 8BITMIME\r\n"
                    } else if upper.starts_with("RCPT TO:") {
                        current
                            .rcpt
                            .push(line[8..].trim().trim_matches(['<', '>']).to_string());
                        b"250 ok\r\n"
                    } else if upper == "DATA" {
                        write.write_all(b"354 go\r\n").await.ok();
                        while let Ok(Some(l)) = lines.next_line().await {
                            if l == "." {
                                break;
                            }
                            current.data.push_str(&l);
                            current.data.push('\n');
                        }
                        inbox.lock().unwrap().push(std::mem::replace(
                            &mut current,
                            Received {
                                rcpt: vec![],
                                data: String::new(),
                            },
                        ));
                        b"250 queued\r\n"
                    } else if upper == "QUIT" {
                        write.write_all(b"221 bye\r\n").await.ok();
                        break;
                    } else {
                        b"250 ok\r\n"
                    };
                    write.write_all(reply).await.ok();
                }
            });
        }
    });
    (port, store, connections)
}

/// The app, mailing through the SMTP server on `port` (loopback, no TLS), with `extra` settings.
async fn spawn_mailing_app(port: &str, extra: &[(&str, &str)]) -> TestApp {
    let mut settings = vec![
        ("MAIL_MAILER", "smtp"),
        ("MAIL_HOST", "127.0.0.1"),
        ("MAIL_PORT", port),
        ("MAIL_ENCRYPTION", "null"),
    ];
    settings.extend_from_slice(extra);
    spawn_app_with(&settings).await
}

/// Undoes quoted-printable soft breaks and `=XX` escapes (lettre encodes long lines).
fn unqp(s: &str) -> String {
    let joined = s.replace("=\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'=' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&joined[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub async fn wait_for_mail(store: &Arc<Mutex<Vec<Received>>>, n: usize) -> Vec<Received> {
    for _ in 0..200 {
        if store.lock().unwrap().len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    store.lock().unwrap().clone()
}

#[tokio::test]
async fn new_conversation_mails_the_seller_once() {
    let (port, store) = smtp_sink().await;
    let port = port.to_string();
    let app = spawn_mailing_app(
        port.as_str(),
        &[
            ("MAIL_FROM_ADDRESS", "shop@fixture.test"),
            ("MAIL_FROM_NAME", "Fixture Shop"),
        ],
    )
    .await;
    let res = app
        .post_form(
            "/api/v2/chat/create-conversation",
            CUST2,
            &[
                ("product_id", "3"),
                ("title", "Keyboard"),
                ("message", "Which <switches> & keycaps?"),
            ],
        )
        .await;
    assert_eq!(res.status, 200);
    let id = res.json()["conversation_id"].as_i64().unwrap();
    let mails = wait_for_mail(&store, 1).await;
    assert_eq!(mails.len(), 1, "one mail");
    let mail = &mails[0];
    assert_eq!(mail.rcpt, vec!["seller1@fixture.test".to_string()]);
    let data = unqp(&mail.data);
    assert!(data.contains("Subject: Sender:- Customer Two"), "{data}");
    assert!(
        data.contains("From: \"Fixture Shop\" <shop@fixture.test>")
            || data.contains("From: Fixture Shop <shop@fixture.test>"),
        "{data}"
    );
    assert!(
        data.contains("<p>Hi! You recieved a message from Customer Two.</p>"),
        "D7: space before the name"
    );
    assert!(
        data.contains("<p><b>Message:</b>Which &lt;switches&gt; &amp; keycaps?</p>"),
        "escaped like Blade"
    );
    let token = data
        .split("http://shop.test/conversations/")
        .nth(1)
        .expect("seller link")
        .split('"')
        .next()
        .unwrap();
    let encrypter = Encrypter::new(parse_app_key(APP_KEY).unwrap(), vec![]);
    assert_eq!(
        encrypter.decrypt_int(token).unwrap(),
        id as u64,
        "the shop can decrypt the link"
    );

    // Reuse (D6) sends nothing; an admin receiver gets the admin link (D7).
    app.post_form(
        "/api/v2/chat/create-conversation",
        CUST2,
        &[
            ("product_id", "3"),
            ("title", "Keyboard"),
            ("message", "again"),
        ],
    )
    .await;
    app.post_form(
        "/api/v2/chat/create-conversation",
        CUST3,
        &[("product_id", "1"), ("message", "mouse?")],
    )
    .await;
    let mails = wait_for_mail(&store, 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(store.lock().unwrap().len(), 2, "no mail on reuse");
    let admin = unqp(&mails[1].data);
    assert_eq!(mails[1].rcpt, vec!["admin@fixture.test".to_string()]);
    assert!(
        admin.contains("http://shop.test/admin/conversations/eyJpdiI6I"),
        "{admin}"
    );
    assert!(admin.contains("/show\""));
    app.finish().await;
}

/// A repeated "Contact seller" question reuses the conversation (D6). It always rises to the
/// top of the seller's web inbox, and it is mailed when the seller had read the conversation:
/// otherwise it would reach them silently (COMPAT §5.5 step 4, §8.1, 2026-12).
#[tokio::test]
async fn a_reused_conversation_rises_and_mails_a_receiver_who_had_read_it() {
    let (port, store) = smtp_sink().await;
    let port = port.to_string();
    let app = spawn_mailing_app(port.as_str(), &[]).await;
    // Seller 1's web inbox (`ORDER BY updated_at DESC`): conversation 4 is the newest.
    sqlx::query("UPDATE conversations SET updated_at = '2025-01-01 00:00:00' WHERE id = 4")
        .execute(&app.db.pool)
        .await
        .unwrap();
    let inbox = "SELECT id FROM conversations WHERE receiver_id = 2 ORDER BY updated_at DESC";
    assert_eq!(app.db.scalar(inbox).await, "4");
    let ask = |text: &'static str| {
        let body = serde_json::json!({
            "product_id": 3,
            "title": "Mechanical Gaming Keyboard",
            "message": text,
        });
        let app = &app;
        async move {
            app.post_json("/api/v2/chat/create-conversation", CUST1, &body)
                .await
        }
    };

    // 1. Conversation 1 is still unread by the seller (1/0): reused, no mail, but it moves up.
    let res = ask("Second question: is there a warranty?").await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json()["conversation_id"], 1);
    assert_eq!(app.db.scalar(inbox).await, "1", "the question is on top");
    assert_ne!(
        app.db
            .scalar("SELECT CAST(updated_at AS CHAR) FROM conversations WHERE id = 1")
            .await,
        "2024-06-03 21:45:00"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(store.lock().unwrap().len(), 0, "unread already: no mail");

    // 2. The seller reads it on the web (`show`), then the customer asks again: one mail
    // carrying the new question, with the conversation's link.
    sqlx::query("UPDATE conversations SET receiver_viewed = 1 WHERE id = 1")
        .execute(&app.db.pool)
        .await
        .unwrap();
    let res = ask("Third question: and in blue?").await;
    assert_eq!(res.json()["conversation_id"], 1);
    let mails = wait_for_mail(&store, 1).await;
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].rcpt, vec!["seller1@fixture.test".to_string()]);
    let data = unqp(&mails[0].data);
    assert!(
        data.contains("<p><b>Message:</b>Third question: and in blue?</p>"),
        "{data}"
    );
    assert!(data.contains("Subject: Sender:- Customer One"), "{data}");
    let token = data
        .split("http://shop.test/conversations/")
        .nth(1)
        .expect("seller link")
        .split('"')
        .next()
        .unwrap();
    let encrypter = Encrypter::new(parse_app_key(APP_KEY).unwrap(), vec![]);
    assert_eq!(encrypter.decrypt_int(token).unwrap(), 1);
    assert_eq!(
        app.db
            .rows("SELECT sender_viewed, receiver_viewed FROM conversations WHERE id = 1")
            .await[0],
        ["1", "0"],
        "unread for the seller again"
    );

    // 3. Asked once more before the seller looks: no second mail.
    ask("Fourth question").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(store.lock().unwrap().len(), 1);
    assert_eq!(
        app.db
            .scalar("SELECT COUNT(*) FROM messages WHERE conversation_id = 1 AND user_id = 5 AND message LIKE '%question%'")
            .await,
        "3",
        "every question stored"
    );
    app.finish().await;
}

pub fn smtp_env(port: &str) -> Vec<(&'static str, String)> {
    vec![
        ("MAIL_MAILER", "smtp".into()),
        ("MAIL_HOST", "127.0.0.1".into()),
        ("MAIL_PORT", port.into()),
        ("MAIL_ENCRYPTION", "".into()),
        ("SHOPCHAT_MAIL_RETRY_SECONDS", "1".into()),
    ]
}

#[tokio::test]
async fn pending_mail_is_delivered_when_smtp_comes_back() {
    let port = free_port();
    let env = smtp_env(&port.to_string());
    let overrides: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let app = spawn_app_with(&overrides).await;
    let res = app
        .post_form(
            "/api/v2/chat/create-conversation",
            CUST1,
            &[("product_id", "3"), ("message", "hello?")],
        )
        .await;
    assert_eq!(res.status, 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, store) = smtp_sink_on(port).await;
    let mails = wait_for_mail(&store, 1).await;
    assert_eq!(mails.len(), 1, "delivered by a retry once the server is up");
    assert_eq!(mails[0].rcpt, vec!["seller1@fixture.test".to_string()]);
    app.finish().await;
}

#[tokio::test]
async fn a_stalled_smtp_server_does_not_slow_the_api() {
    // Accepts connections and never says a word.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            open.push(s);
        }
    });
    let env = smtp_env(&port);
    let overrides: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let app = spawn_app_with(&overrides).await;
    for product in ["1", "3", "4"] {
        let fields = [("product_id", product), ("message", "hi")];
        let call = app.post_form("/api/v2/chat/create-conversation", CUST3, &fields);
        let res = tokio::time::timeout(Duration::from_secs(15), call)
            .await
            .expect("answered while SMTP stalls");
        assert_eq!(res.status, 200);
    }
    held.abort();
    app.finish().await;
}

#[tokio::test]
async fn a_killed_process_loses_no_mail() {
    let db = TestDb::fresh().await;
    let outbox = tempfile::tempdir().unwrap();
    let smtp_port = free_port();
    let start = |smtp: u16| {
        let port = free_port();
        let mut env = test_env(&db.name, outbox.path());
        env.insert("SHOPCHAT_LISTEN".into(), format!("127.0.0.1:{port}"));
        for (k, v) in smtp_env(&smtp.to_string()) {
            env.insert(k.into(), v);
        }
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_shopchat"))
            .arg("serve")
            .env_clear()
            .envs(&env)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        (child, format!("127.0.0.1:{port}"))
    };
    // First life: SMTP is down; the conversation is created, then SIGKILL.
    let (mut first, addr) = start(smtp_port);
    wait_for_port(&addr).await;
    let body = b"product_id=4&message=Still+there%3F";
    let res = request_at(
        &addr,
        "POST",
        "/api/v2/chat/create-conversation",
        CUST2,
        Some(("application/x-www-form-urlencoded", body)),
    )
    .await;
    assert_eq!(res.status, 200);
    first.kill().unwrap();
    first.wait().unwrap();

    // Second life: SMTP is up; the pending mail goes out exactly once.
    let (_, store) = smtp_sink_on(smtp_port).await;
    let (mut second, addr) = start(smtp_port);
    wait_for_port(&addr).await;
    let mails = wait_for_mail(&store, 1).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    second.kill().unwrap();
    second.wait().unwrap();
    assert_eq!(mails.len(), 1);
    assert_eq!(store.lock().unwrap().len(), 1, "delivered once");
    assert_eq!(mails[0].rcpt, vec!["seller2@fixture.test".to_string()]);
    db.drop().await;
}

#[tokio::test]
async fn mail_waits_in_the_outbox_while_smtp_is_down() {
    // Nothing listens on this port: delivery fails and is retried later.
    let port = free_port().to_string();
    let app = spawn_app_with(&[
        ("MAIL_MAILER", "smtp"),
        ("MAIL_HOST", "127.0.0.1"),
        ("MAIL_PORT", &port),
        ("MAIL_ENCRYPTION", ""),
    ])
    .await;
    let res = app
        .post_form(
            "/api/v2/chat/create-conversation",
            CUST1,
            &[("product_id", "4"), ("message", "size?")],
        )
        .await;
    assert_eq!(res.status, 200, "the customer never waits for SMTP");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let pending: Vec<_> = std::fs::read_dir(app.outbox.path().join("pending"))
        .unwrap()
        .collect();
    assert_eq!(pending.len(), 1, "kept for a retry");

    // `shopchat outbox list` shows it with its attempt and error.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shopchat"))
        .args(["outbox", "list"])
        .env_clear()
        .env("APP_KEY", APP_KEY)
        .env("SHOPCHAT_OUTBOX_DIR", app.outbox.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("pending")
            && text.contains("attempts=1")
            && text.contains("seller2@fixture.test"),
        "{text}"
    );
    app.finish().await;
}

/// The "See Details" link of a mail sent after a request with forged host headers.
async fn link_after_forged_hosts(overrides: &[(&str, &str)]) -> String {
    let (port, store) = smtp_sink().await;
    let port = port.to_string();
    let mut env = vec![("SHOPCHAT_TRUSTED_PROXIES", "127.0.0.1")];
    env.extend_from_slice(overrides);
    let app = spawn_mailing_app(&port, &env).await;
    let res = app
        .call(
            "POST",
            "/api/v2/chat/create-conversation",
            Some(CUST2),
            &[
                ("Host", "shop-login.attacker.tld"),
                ("X-Forwarded-Host", "shop-login.attacker.tld"),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
            b"product_id=3&title=Keyboard&message=hello",
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let mails = wait_for_mail(&store, 1).await;
    assert_eq!(mails.len(), 1);
    let data = unqp(&mails[0].data);
    let start = data.find("href=\"").expect("a link") + 6;
    let link = data[start..].split('"').next().unwrap().to_string();
    app.finish().await;
    link
}

#[tokio::test]
async fn mail_links_are_built_on_app_url_never_on_a_forged_host() {
    // Security review M2: a customer sent `X-Forwarded-Host: shop-login.attacker.tld` (through
    // a proxy that passed it on) and the seller's genuine mail linked to the attacker's site.
    let link = link_after_forged_hosts(&[("APP_URL", "https://shop.example.com/")]).await;
    assert!(
        link.starts_with("https://shop.example.com/conversations/eyJpdiI6I"),
        "{link}"
    );
    // Without APP_URL the request's root is all there is (`shopchat check` warns about it).
    let link = link_after_forged_hosts(&[]).await;
    assert!(
        link.starts_with("http://shop-login.attacker.tld/"),
        "{link}"
    );
}

#[tokio::test]
async fn new_conversations_per_pair_are_capped() {
    // Security review M3: every new conversation mails its receiver.
    let (port, store) = smtp_sink().await;
    let port = port.to_string();
    let app = spawn_mailing_app(
        port.as_str(),
        &[("SHOPCHAT_NEW_CONVERSATIONS_PER_HOUR", "2")],
    )
    .await;
    let create = |title: &str, product: &str| {
        let body = serde_json::json!({"product_id": product, "title": title, "message": "hi"});
        let app = &app;
        async move {
            app.post_json("/api/v2/chat/create-conversation", CUST2, &body)
                .await
        }
    };
    assert_eq!(create("one", "3").await.status, 200);
    assert_eq!(create("two", "3").await.status, 200);
    let before = app.db.scalar("SELECT COUNT(*) FROM conversations").await;
    let res = create("three", "3").await;
    assert_eq!(res.status, 429, "{}", res.text());
    assert_eq!(
        res.text(),
        "{\n    \"result\": false,\n    \"message\": \"Too Many Attempts.\"\n}"
    );
    let retry: u64 = res.header("retry-after").unwrap().parse().unwrap();
    assert!((3500..=3600).contains(&retry), "{retry}");
    assert_eq!(
        app.db.scalar("SELECT COUNT(*) FROM conversations").await,
        before,
        "nothing written"
    );
    // Reusing a conversation is no new mail storm: allowed; another receiver has its own cap.
    assert_eq!(create("one", "3").await.status, 200);
    assert_eq!(create("three", "4").await.status, 200);
    let mails = wait_for_mail(&store, 3).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(store.lock().unwrap().len(), 3, "{mails:?}");
    app.finish().await;
}

#[tokio::test]
async fn a_full_outbox_refuses_new_conversations_and_reads_go_on() {
    // Security review M3: the outbox has a size cap (503 before the disk fills). SMTP is down
    // here, so staged mail stays in pending/.
    let closed = free_port().to_string();
    let app = spawn_mailing_app(
        closed.as_str(),
        &[
            ("SHOPCHAT_MAIL_RETRY_SECONDS", "3600"),
            ("SHOPCHAT_OUTBOX_MAX_BYTES", "4000"),
            ("SHOPCHAT_NEW_CONVERSATIONS_PER_HOUR", "0"),
        ],
    )
    .await;
    let mut statuses = Vec::new();
    for i in 0..20 {
        let res = app
            .post_json(
                "/api/v2/chat/create-conversation",
                CUST2,
                &serde_json::json!({"product_id": 3, "title": format!("question {i}"), "message": "x".repeat(300)}),
            )
            .await;
        statuses.push(res.status);
        if res.status == 503 {
            assert_eq!(
                res.text(),
                "{\n    \"result\": false,\n    \"message\": \"Service Unavailable\"\n}"
            );
            break;
        }
    }
    assert_eq!(statuses.last(), Some(&503), "{statuses:?}");
    assert!(statuses.len() > 1, "mail below the cap was accepted");
    let accepted = statuses.iter().filter(|s| **s == 200).count();
    assert_eq!(
        app.db
            .scalar("SELECT COUNT(*) FROM conversations WHERE sender_id = 6 AND title LIKE 'question %'")
            .await,
        accepted.to_string(),
        "nothing written for the refused one"
    );
    // Reads, posts into existing conversations and readiness go on.
    assert_eq!(
        app.get("/api/v2/chat/conversations", CUST2).await.status,
        200
    );
    assert_eq!(
        app.post_form(
            "/api/v2/chat/insert-message",
            CUST2,
            &[("conversation_id", "3"), ("message", "still here")]
        )
        .await
        .status,
        200
    );
    assert_eq!(app.call("GET", "/ready", None, &[], b"").await.status, 200);
    app.finish().await;
}

#[tokio::test]
async fn staged_mail_is_judged_by_its_message_once_its_writer_is_gone() {
    // Security review L2: recovery promoted a staged mail when its *conversation* existed; a
    // reused conversation exists whether or not the message being mailed was committed. And
    // a start-up recovery deleted the staged mail of other processes' running transactions.
    let (port, store) = smtp_sink().await;
    let port = port.to_string();
    let app = spawn_mailing_app(port.as_str(), &[]).await;
    let outbox = shopchat::mail::outbox::Outbox::open(app.outbox.path()).unwrap();
    let note = |message_id: u64, to: &str| {
        let mut n = shopchat::mail::render::render(
            &shopchat::mail::render::Labels {
                message: "Message".into(),
                sender: "Sender".into(),
                see_details: "See Details".into(),
                hi_you_recieved: "Hi! You recieved a message from".into(),
            },
            "Customer One",
            "a question",
            "http://shop.test/conversations/x",
            to,
            "hello@example.com",
            "Example",
            2,
        );
        n.message_id = Some(message_id);
        n
    };
    // A writer that is gone (a reaped child's process id) and one that runs (this process).
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let staging = app.outbox.path().join("staging");
    let as_written_by = |staged: shopchat::mail::outbox::StagedMail, pid: u32| {
        let path = staged.path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let mut parts: Vec<&str> = name.splitn(3, '-').collect();
        let pid = pid.to_string();
        parts[1] = &pid;
        std::fs::rename(&path, staging.join(parts.join("-"))).unwrap();
    };
    // Message 38 of conversation 2 is stored; 99999 never was.
    as_written_by(
        outbox.stage(&note(38, "committed@example.com")).unwrap(),
        dead,
    );
    as_written_by(
        outbox
            .stage(&note(99_999, "rolled-back@example.com"))
            .unwrap(),
        dead,
    );
    as_written_by(
        outbox
            .stage(&note(38, "still-running@example.com"))
            .unwrap(),
        std::process::id(),
    );

    let mails = wait_for_mail(&store, 1).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let rcpts: Vec<String> = store
        .lock()
        .unwrap()
        .iter()
        .flat_map(|m| m.rcpt.clone())
        .collect();
    assert_eq!(rcpts, ["committed@example.com"], "{mails:?}");
    let left: Vec<String> = std::fs::read_dir(&staging)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(
        left[0].contains(&format!("-{}-", std::process::id())),
        "a live writer's young staged mail is left alone: {left:?}"
    );
    app.finish().await;
}

#[tokio::test]
async fn mail_goes_out_over_few_smtp_connections() {
    // Security review L3: a new TCP, TLS and AUTH session per mail.
    let (port, store, connections) = smtp_sink_counting(0).await;
    let port = port.to_string();
    let app = spawn_mailing_app(
        port.as_str(),
        &[("SHOPCHAT_NEW_CONVERSATIONS_PER_HOUR", "0")],
    )
    .await;
    for i in 0..20 {
        let res = app
            .post_json(
                "/api/v2/chat/create-conversation",
                CUST2,
                &serde_json::json!({"product_id": 3, "title": format!("q{i}"), "message": "hi"}),
            )
            .await;
        assert_eq!(res.status, 200);
    }
    let mails = wait_for_mail(&store, 20).await;
    assert_eq!(mails.len(), 20);
    let n = connections.load(std::sync::atomic::Ordering::SeqCst);
    assert!(n <= 2, "{n} SMTP connections for 20 mails");
    app.finish().await;
}

#[tokio::test]
async fn an_unreachable_smtp_server_pauses_delivery() {
    // Security review L3: with the server down (or dropping packets) every due mail was tried
    // in turn, each costing a connection timeout and one of its attempts.
    let closed = free_port().to_string();
    let app = spawn_mailing_app(
        closed.as_str(),
        &[("SHOPCHAT_NEW_CONVERSATIONS_PER_HOUR", "0")],
    )
    .await;
    for i in 0..8 {
        app.post_json(
            "/api/v2/chat/create-conversation",
            CUST2,
            &serde_json::json!({"product_id": 3, "title": format!("q{i}"), "message": "hi"}),
        )
        .await;
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut tried = 0;
    let mut waiting = 0;
    for dir in ["pending", "sending"] {
        for e in std::fs::read_dir(app.outbox.path().join(dir)).unwrap() {
            let e = e.unwrap();
            if !e.file_name().to_str().unwrap().ends_with(".json") {
                continue;
            }
            let entry: serde_json::Value =
                serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap();
            if entry["attempts"].as_u64().unwrap() > 0 {
                tried += 1;
            } else {
                waiting += 1;
            }
        }
    }
    assert_eq!(tried + waiting, 8, "every mail kept");
    assert!(
        tried <= 2,
        "{tried} of 8 mails tried against an unreachable server"
    );
    app.finish().await;
}
