//! Where a request comes from and what `<root>` it sees (COMPAT §4.3, §1.6).
//!
//! Pure functions over header values so the rules can be tested one by one.

use std::net::IpAddr;

use ipnet::IpNet;
use rand::Rng;

/// The Host check of §1.2 step 1: only `A–Z a–z 0–9 - _ . : ]` and a leading `[`.
pub fn valid_host(value: &str) -> bool {
    let body = value.strip_prefix('[').unwrap_or(value);
    !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b']'))
}

/// Splits `host[:port]` (also `[v6]:port`) into the lower-cased host and the
/// port text, if any.
pub fn split_host_port(value: &str) -> (String, Option<&str>) {
    if value.starts_with('[') {
        if let Some(end) = value.find(']') {
            let host = value[..=end].to_ascii_lowercase();
            let port = value[end + 1..].strip_prefix(':');
            return (host, port);
        }
        return (value.to_ascii_lowercase(), None);
    }
    match value.rsplit_once(':') {
        Some((host, port)) => (host.to_ascii_lowercase(), Some(port)),
        None => (value.to_ascii_lowercase(), None),
    }
}

/// `scheme://host[:port]`: the port only when present and not the scheme's
/// default; a Host without port never gets the listener's port (§4.3).
pub fn origin(scheme: &str, host_value: &str, port_override: Option<&str>) -> String {
    let (host, port) = split_host_port(host_value);
    let port = port_override
        .or(port)
        .and_then(|p| p.trim().parse::<u16>().ok());
    let default = if scheme == "https" { 443 } else { 80 };
    // Built by pushes, once per request: `format!` here and for the root URL
    // (src/http/request.rs) cost a poll about 1,700 instructions together (callgrind,
    // bench/instructions.sh before and after, 2026-12-06).
    let mut url = String::with_capacity(scheme.len() + host.len() + 16);
    url.push_str(scheme);
    url.push_str("://");
    url.push_str(&host);
    if let Some(p) = port.filter(|p| *p != default) {
        url.push(':');
        url.push_str(itoa::Buffer::new().format(p));
    }
    url
}

/// First value of a comma-separated forwarding header.
pub fn first_value(header: &str) -> &str {
    header.split(',').next().unwrap_or("").trim()
}

pub fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    trusted.iter().any(|net| net.contains(&ip))
}

/// The client address: the TCP peer, or — only when the peer is a trusted
/// proxy — the right-most untrusted `X-Forwarded-For` address (§4.3).
pub fn client_ip(peer: IpAddr, forwarded_for: Option<&str>, trusted: &[IpNet]) -> IpAddr {
    if !is_trusted(peer, trusted) {
        return peer;
    }
    let Some(header) = forwarded_for else {
        return peer;
    };
    let mut last = peer;
    for item in header.rsplit(',') {
        match parse_forwarded_ip(item.trim()) {
            Some(ip) if is_trusted(ip, trusted) => last = ip,
            Some(ip) => return ip,
            None => break,
        }
    }
    last
}

fn parse_forwarded_ip(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse() {
        return Some(ip);
    }
    // `1.2.3.4:5678` or `[v6]:port`
    if let Some(rest) = s.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    s.rsplit_once(':')?.0.parse().ok()
}

/// `X-Request-Id`: the client's own if it is safe to echo (§1.6), else new.
pub fn request_id(header: Option<&str>) -> String {
    match header {
        Some(v)
            if (1..=128).contains(&v.len())
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')) =>
        {
            v.to_string()
        }
        _ => {
            let n: u128 = rand::thread_rng().gen();
            // 32 lowercase hex digits, as `{n:032x}` writes them, without the formatter; into a
            // buffer, as `hex::encode`'s char iterator cost a poll ~830 instructions (callgrind).
            let mut digits = [0u8; 32];
            match hex::encode_to_slice(n.to_be_bytes(), &mut digits) {
                Ok(()) => String::from_utf8_lossy(&digits).into_owned(),
                Err(_) => format!("{n:032x}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_check() {
        assert!(valid_host("shop.test"));
        assert!(valid_host("127.0.0.1:8081"));
        assert!(valid_host("[::1]:8080"));
        assert!(valid_host("my_shop-1.example.com"));
        assert!(!valid_host("a b"));
        assert!(!valid_host("shop.test/x"));
        assert!(!valid_host("evil.com@shop"));
        assert!(!valid_host(""));
        assert!(!valid_host("a[b"));
    }

    #[test]
    fn origins() {
        assert_eq!(
            origin("http", "Shop.EXAMPLE.com:80", None),
            "http://shop.example.com"
        );
        assert_eq!(
            origin("http", "shop.example.com:8443", None),
            "http://shop.example.com:8443"
        );
        assert_eq!(
            origin("https", "shop.example.com:443", None),
            "https://shop.example.com"
        );
        assert_eq!(origin("http", "shop.test", None), "http://shop.test");
        assert_eq!(
            origin("http", "127.0.0.1:8081", None),
            "http://127.0.0.1:8081"
        );
        assert_eq!(origin("http", "[::1]:8080", None), "http://[::1]:8080");
        assert_eq!(
            origin("https", "shop.test", Some("8443")),
            "https://shop.test:8443"
        );
        assert_eq!(origin("http", "shop.test:abc", None), "http://shop.test");
    }

    #[test]
    fn client_ip_only_trusts_configured_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let peer: IpAddr = "10.0.0.5".parse().unwrap();
        let outsider: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(client_ip(outsider, Some("1.1.1.1"), &trusted), outsider);
        assert_eq!(
            client_ip(peer, Some("1.1.1.1, 198.51.100.7, 10.0.0.2"), &trusted),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_ip(peer, None, &trusted), peer);
        assert_eq!(
            client_ip(peer, Some("10.0.0.3"), &trusted),
            "10.0.0.3".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn request_ids() {
        assert_eq!(request_id(Some("abc-123_X.y")), "abc-123_X.y");
        assert_eq!(request_id(Some("bad id")).len(), 32);
        assert_eq!(request_id(Some(&"a".repeat(129))).len(), 32);
        assert_eq!(request_id(None).len(), 32);
        // A made one: 32 lowercase hex digits, fresh each time.
        let made = request_id(None);
        assert!(made
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        assert_ne!(made, request_id(None));
    }
}
