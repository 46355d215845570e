//! A throwaway `redis-server` for tests and benches: the one CI started (its URL in
//! `TOWER_CDN_TEST_REDIS`), or one spawned here, which is killed when dropped. Tests never
//! skip for want of Redis: without the variable and without `redis-server` they fail.
#![allow(dead_code, unreachable_pub)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The variable CI sets to its server's URL.
pub const ENV: &str = "TOWER_CDN_TEST_REDIS";

/// Where a spawned server listens.
#[derive(Clone, Debug)]
enum Listen {
    Unix(PathBuf),
    Tcp(u16),
}

/// A Redis for one test: shared (CI's) or owned (spawned here, killed on drop).
pub struct RedisServer {
    url: String,
    listen: Option<Listen>,
    child: Option<Child>,
}

impl RedisServer {
    /// CI's server when `TOWER_CDN_TEST_REDIS` is set, else one of this test's own.
    /// Tests on a shared server keep apart by key prefix.
    pub fn shared() -> RedisServer {
        match std::env::var(ENV) {
            Ok(url) if !url.is_empty() => RedisServer {
                url,
                listen: None,
                child: None,
            },
            _ => Self::spawn(),
        }
    }

    /// A server of this test's own on a unix socket, which the test may kill and restart.
    pub fn spawn() -> RedisServer {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "tower-cdn-{}-{}.sock",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let url = format!("redis+unix://{}", path.display());
        Self::start(url, Listen::Unix(path))
    }

    /// A server of this test's own on a free loopback TCP port.
    pub fn spawn_tcp() -> RedisServer {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        Self::start(format!("redis://127.0.0.1:{port}/"), Listen::Tcp(port))
    }

    fn start(url: String, listen: Listen) -> RedisServer {
        let mut server = RedisServer {
            url,
            listen: Some(listen),
            child: None,
        };
        server.restart();
        server
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Kills the server (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again where it listened before (empty: nothing is persisted).
    pub fn restart(&mut self) {
        self.kill();
        let listen = self
            .listen
            .clone()
            .expect("only a server this test spawned can be restarted");
        let mut cmd = Command::new("redis-server");
        match &listen {
            Listen::Unix(path) => {
                let _ = std::fs::remove_file(path);
                cmd.args(["--port", "0", "--unixsocket"]).arg(path);
            }
            Listen::Tcp(port) => {
                cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"]);
            }
        }
        let child = cmd
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start redis-server ({e}): install it, or set {ENV} to a Redis URL")
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !ping(&listen) {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        if let Some(Listen::Unix(path)) = &self.listen {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Whether a server answers `PING` there.
fn ping(listen: &Listen) -> bool {
    fn exchange(mut s: impl Read + Write) -> bool {
        let mut buf = [0; 7];
        s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }
    match listen {
        Listen::Unix(path) => UnixStream::connect(path).is_ok_and(exchange),
        Listen::Tcp(port) => TcpStream::connect(("127.0.0.1", *port)).is_ok_and(exchange),
    }
}

/// A key prefix no other test or run uses.
pub fn unique_prefix(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("tower-cdn-test:{test}:{}:{nanos}:", std::process::id())
}
