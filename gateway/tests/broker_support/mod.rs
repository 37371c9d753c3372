//! Helpers for the broker tests: a real `redis-server` per test on its own port (killed when
//! dropped), gateways pointed at it, and polling helpers. `scripts/test` installs
//! `redis-server` (Debian's package) when it is missing.
#![allow(dead_code)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::gateway_support::Gateway;

/// A `redis-server` without persistence on a port of its own.
pub(crate) struct Redis {
    child: Option<Child>,
    pub(crate) port: u16,
}

/// A port nothing listens on now.
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Redis {
    /// Starts a server on a fresh port.
    pub(crate) fn start() -> Redis {
        Redis::start_on(free_port())
    }

    /// Starts a server on `port` and waits until it answers.
    pub(crate) fn start_on(port: u16) -> Redis {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run redis-server ({e}): install it (apt-get install redis-server) or run scripts/test")
            });
        let redis = Redis { child: Some(child), port };
        wait_for(Duration::from_secs(5), "redis-server to answer", || redis.try_query(&["PING"]).is_some());
        redis
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server at once (SIGKILL: no goodbye to its clients).
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port.
    pub(crate) fn restart(&mut self) {
        self.kill();
        *self = Redis::start_on(self.port);
    }

    fn connection(&self) -> Option<redis::Connection> {
        let client = redis::Client::open(self.url()).ok()?;
        let con = client.get_connection_with_timeout(Duration::from_secs(1)).ok()?;
        con.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        Some(con)
    }

    pub(crate) fn try_query(&self, args: &[&str]) -> Option<redis::Value> {
        let mut cmd = redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        cmd.query(&mut self.connection()?).ok()
    }

    /// Subscribers of a Redis channel (`PUBSUB NUMSUB`).
    pub(crate) fn numsub(&self, channel: &str) -> i64 {
        let mut con = self.connection().expect("redis connection");
        let reply: (String, i64) = redis::cmd("PUBSUB").arg("NUMSUB").arg(channel).query(&mut con).unwrap();
        reply.1
    }

    /// Waits until `channel` has `n` subscribers in Redis.
    pub(crate) fn wait_numsub(&self, channel: &str, n: i64) {
        wait_for(Duration::from_secs(5), &format!("{n} subscribers of {channel}"), || {
            self.numsub(channel) == n
        });
    }

    /// Typed command, for the tests that read keys and streams.
    pub(crate) fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> T {
        cmd.query(&mut self.connection().expect("redis connection")).expect("redis command")
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `ok` every 20 ms until it holds; panics naming `what` after `timeout`.
pub(crate) fn wait_for(timeout: Duration, what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A gateway using `redis` as its broker, plus `args`.
pub(crate) fn node(redis_url: &str, args: &[&str]) -> Gateway {
    let mut all = vec!["--broker", redis_url];
    all.extend_from_slice(args);
    Gateway::start(None, &all)
}

/// Waits until `/readyz` answers `status`; returns its body.
pub(crate) fn wait_ready(gw: &Gateway, status: u16, timeout: Duration) -> serde_json::Value {
    let deadline = Instant::now() + timeout;
    loop {
        let resp = gw.get("/readyz");
        if resp.status == status {
            return resp.json();
        }
        assert!(Instant::now() < deadline, "/readyz still {} {}, want {status}", resp.status, resp.body);
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Asserts that the process is still running and logged no panic.
pub(crate) fn assert_alive(gw: &mut Gateway) {
    assert!(gw.child.try_wait().unwrap().is_none(), "gateway exited: {}", gw.log_text());
    assert!(!gw.log_text().contains("panicked"), "gateway panicked: {}", gw.log_text());
}
