//! `shopchat health`: asks the running service's `/health` over loopback and
//! exits 0/1 — the container `HEALTHCHECK`, where no curl is installed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The address to probe: the listener itself, or loopback when it listens on
/// every interface (`0.0.0.0`, `::`).
pub fn target(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// `GET <base>/health`; `Ok` only for a 200 answer within `timeout`.
pub async fn health(listen: SocketAddr, base_path: &str, timeout: Duration) -> Result<(), String> {
    let addr = target(listen);
    let exchange = async {
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        let request = format!(
            "GET {base_path}/health HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("cannot send to {addr}: {e}"))?;
        let mut answer = Vec::new();
        stream
            .read_to_end(&mut answer)
            .await
            .map_err(|e| format!("cannot read from {addr}: {e}"))?;
        let status_line = answer.split(|b| *b == b'\n').next().unwrap_or_default();
        let status_line = String::from_utf8_lossy(status_line).trim().to_string();
        match status_line.split(' ').nth(1) {
            Some("200") => Ok(()),
            _ => Err(format!("{addr} answered {status_line:?}")),
        }
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(result) => result,
        Err(_) => Err(format!("{addr}: no answer within {timeout:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_listeners_are_probed_on_loopback() {
        assert_eq!(
            target("0.0.0.0:8000".parse().unwrap()).to_string(),
            "127.0.0.1:8000"
        );
        assert_eq!(target("[::]:80".parse().unwrap()).to_string(), "[::1]:80");
        assert_eq!(
            target("10.1.2.3:9".parse().unwrap()).to_string(),
            "10.1.2.3:9"
        );
    }
}
