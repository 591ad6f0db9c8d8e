//! A real `redis-server` on 127.0.0.1 for the fleet tests and benchmark: a free port, no
//! persistence (`--save "" --appendonly no`), killed when dropped. `scripts/test-fleet.sh`
//! installs the Debian package when `redis-server` is missing.
#![allow(dead_code)]
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    extra: Vec<String>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl RedisServer {
    /// Starts a server on a free port (retrying if another process took the port meanwhile).
    pub fn start() -> RedisServer {
        Self::start_with(&[])
    }

    /// Starts a server with extra `redis-server` arguments.
    pub fn start_with(extra: &[&str]) -> RedisServer {
        let mut last = String::new();
        for _ in 0..5 {
            let mut s = RedisServer {
                port: free_port(),
                child: None,
                extra: extra.iter().map(|s| s.to_string()).collect(),
            };
            match s.spawn() {
                Ok(()) => return s,
                Err(e) => last = e,
            }
        }
        panic!("redis-server did not start: {last}");
    }

    fn spawn(&mut self) -> Result<(), String> {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--loglevel",
                "warning",
                "--logfile",
                "",
            ])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                format!(
                    "cannot run redis-server ({e}): install it with `apt-get install -y redis-server` \
                     or run scripts/test-fleet.sh, which does"
                )
            })?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.ping() {
                return Ok(());
            }
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                self.child = None;
                return Err(format!("redis-server exited with {status}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        Err("redis-server did not answer PING within 10 s".into())
    }

    /// Whether the server answers `PING`.
    pub fn ping(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        if s.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 7];
        s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Starts a server that also speaks TLS on a second port, with the test certificate of
    /// `tests/support/tls` (signed by its `ca.pem`, for 127.0.0.1); returns it and that port.
    /// The plain port stays for `ping`.
    pub fn start_tls() -> (RedisServer, u16) {
        let tls = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/tls");
        let port = free_port();
        let server = Self::start_with(&[
            "--tls-port",
            &port.to_string(),
            "--tls-cert-file",
            &format!("{tls}/server.pem"),
            "--tls-key-file",
            &format!("{tls}/server.key"),
            "--tls-ca-cert-file",
            &format!("{tls}/ca.pem"),
            "--tls-auth-clients",
            "no",
        ]);
        (server, port)
    }

    /// The test CA that signed the TLS certificate of [`start_tls`](Self::start_tls).
    pub fn test_ca_file() -> String {
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/tls/ca.pem").to_string()
    }

    /// Kills the server (SIGKILL) and waits for it: the port refuses connections afterwards.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same port, empty.
    pub fn restart(&mut self) {
        self.kill();
        let mut last = String::new();
        for _ in 0..50 {
            match self.spawn() {
                Ok(()) => return,
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("redis-server did not restart on port {}: {last}", self.port);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
