//! Drives the real `cohort` binary over HTTP: each test starts its own server on a free loopback
//! port with a temporary data directory and stops it by PID.

#![allow(dead_code)]

use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// An admin key for one server. Each server a test starts gets its own, so that a request that
/// reaches another test's server (two tests drew the same port) is refused instead of answered.
pub fn unique_admin_key() -> String {
    format!("ck_test_{:032x}", rand::random::<u128>())
}

pub struct Server {
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    pub write_key: String,
    pub admin_key: String,
    child: Child,
    extra: Vec<String>,
}

/// A port free now, for a server started next. Not one the kernel hands out for port 0: test
/// processes run side by side, and a port freed here could be given to another test's server a
/// moment later, so that a test talked to someone else's server (a 401, or another's data).
/// Ports below the ephemeral range (32768 and up), picked at random, make that collision rare.
pub fn free_port() -> u16 {
    for _ in 0..1000 {
        let port = rand::random_range(20_000..32_000);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between 20000 and 32000");
}

pub fn cohort() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cohort"))
}

impl Server {
    /// Starts a server with one source named "test".
    pub fn start() -> Server {
        Self::start_with(&[])
    }

    /// Starts a server with one source named "test" and extra `cohort serve` arguments.
    pub fn start_with(serve_args: &[&str]) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = succeed(
            cohort()
                .args(["admin", "--data"])
                .arg(dir.path())
                .args(["source", "create", "test", "--json"]),
        );
        let created: Value = serde_json::from_slice(&out.stdout).expect("json from admin");
        let write_key = created["write_key"]
            .as_str()
            .expect("write key")
            .to_string();
        let extra: Vec<String> = serve_args.iter().map(|a| a.to_string()).collect();
        let admin_key = unique_admin_key();
        // Another test may take the port between free_port() and our server's bind; that server
        // then answers in ours' place. Readiness is therefore asked with this server's own key,
        // and a server that could not bind is started again on another port.
        for _ in 0..20 {
            let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
            let mut child = Self::spawn(dir.path(), addr, &extra, &admin_key);
            if Self::wait_ready(&mut child, addr, &admin_key) {
                return Server {
                    addr,
                    dir,
                    write_key,
                    admin_key,
                    child,
                    extra,
                };
            }
        }
        panic!("cohort serve found no port it could keep");
    }

    fn spawn(dir: &std::path::Path, addr: SocketAddr, extra: &[String], admin_key: &str) -> Child {
        cohort()
            .args(["serve", "--data"])
            .arg(dir)
            .args(["--listen", &addr.to_string()])
            .args(extra)
            .env("COHORT_ADMIN_KEY", admin_key)
            // COHORT_TEST_LOG (for example `cohort_engine=debug`) shows a test server's logs.
            .env(
                "COHORT_LOG",
                std::env::var("COHORT_TEST_LOG").unwrap_or_else(|_| "warn".to_string()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn cohort serve")
    }

    /// True once this server answers an admin request on `addr`; false when it exited (it could
    /// not bind the port). Another server on the port refuses the key and is not mistaken for it.
    fn wait_ready(child: &mut Child, addr: SocketAddr, admin_key: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        let auth = format!("Bearer {admin_key}");
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return false;
            }
            if let Ok(r) = send(addr, "GET", "/readyz", &[], b"")
                && r.status == 200
                && let Ok(r) = send(
                    addr,
                    "GET",
                    "/api/v1/stats",
                    &[("Authorization", &auth)],
                    b"",
                )
                && r.status == 200
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("cohort serve did not become ready on {addr}");
    }

    /// Kills the server with SIGKILL and starts it again on the same data directory and port.
    pub fn kill_and_restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = Self::spawn(self.dir.path(), self.addr, &self.extra, &self.admin_key);
        assert!(
            Self::wait_ready(&mut self.child, self.addr, &self.admin_key),
            "the restarted server could not take back {}",
            self.addr
        );
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        send(self.addr, method, path, headers, body).expect("HTTP exchange")
    }

    /// POSTs JSON to an ingest route with Basic auth.
    pub fn ingest(&self, route: &str, body: &Value) -> Response {
        let auth = basic(&self.write_key);
        self.request(
            "POST",
            route,
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            body.to_string().as_bytes(),
        )
    }

    pub fn admin_get(&self, path: &str) -> Response {
        self.request(
            "GET",
            path,
            &[("Authorization", &format!("Bearer {}", self.admin_key))],
            b"",
        )
    }

    pub fn admin_send(&self, method: &str, path: &str, body: &Value) -> Response {
        self.request(
            method,
            path,
            &[
                ("Authorization", &format!("Bearer {}", self.admin_key)),
                ("Content-Type", "application/json"),
            ],
            body.to_string().as_bytes(),
        )
    }

    /// Waits until every accepted event is processed, and real-time segments and journeys have
    /// taken it.
    pub fn settle(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let stats = self.admin_get("/api/v1/stats").json();
            if stats["inbox_lag"] == 0 && stats["segment_lag"] == 0 && stats["journey_lag"] == 0 {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("processing, segments and journeys did not catch up");
    }

    pub fn profile(&self, kind: &str, value: &str) -> Option<Value> {
        let r = self.admin_get(&format!("/api/v1/profiles/{kind}/{value}"));
        match r.status {
            200 => Some(r.json()),
            404 => None,
            other => panic!("profile lookup answered {other}: {}", r.text()),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn basic(key: &str) -> String {
    use base64_lite::encode;
    format!("Basic {}", encode(format!("{key}:").as_bytes()))
}

mod base64_lite {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    pub fn encode(input: &[u8]) -> String {
        let mut out = String::new();
        for chunk in input.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }
}

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 exchange with `Connection: close`; enough for tests that need full control of bytes.
pub fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    // A server may answer and close before reading a large body; that is fine.
    let _ = stream.write_all(body);
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> std::io::Result<Response> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no header end"))?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| bad("head not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(pos) = data.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(std::str::from_utf8(&data[..pos]).unwrap_or("0").trim(), 16)
                .unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = pos + 2;
        out.extend_from_slice(&data[start..(start + size).min(data.len())]);
        data = &data[(start + size + 2).min(data.len())..];
    }
    out
}

/// Runs `command` and fails the test, showing its stderr, unless it succeeds.
pub fn succeed(command: &mut Command) -> std::process::Output {
    let out = command.output().expect("run the command");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Creates a source in the data directory with `cohort admin`; returns its write key.
pub fn create_source(data: &std::path::Path, name: &str) -> String {
    let out = succeed(
        cohort()
            .args(["admin", "--data"])
            .arg(data)
            .args(["source", "create", name, "--json"]),
    );
    let created: Value = serde_json::from_slice(&out.stdout).unwrap();
    created["write_key"].as_str().unwrap().to_string()
}
