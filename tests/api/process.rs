//! The real `shopchat` binary as a child process (log capture, SIGKILL).

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::helpers::{free_port, wait_for_port};

pub struct Binary {
    pub child: Child,
    pub addr: String,
}

impl Binary {
    /// Starts `shopchat serve` with exactly `env` (plus a free listen port);
    /// stderr goes to `stderr_file` when given.
    pub async fn start(env: &HashMap<String, String>, stderr_file: Option<&Path>) -> Binary {
        let port = free_port();
        let stderr = match stderr_file {
            Some(p) => Stdio::from(std::fs::File::create(p).unwrap()),
            None => Stdio::null(),
        };
        let child = Command::new(env!("CARGO_BIN_EXE_shopchat"))
            .arg("serve")
            .env_clear()
            .envs(env)
            .env("SHOPCHAT_LISTEN", format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start the shopchat binary");
        let addr = format!("127.0.0.1:{port}");
        wait_for_port(&addr).await;
        Binary { child, addr }
    }

    /// SIGKILL: no graceful shutdown, no cleanup.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        self.kill9();
    }
}
