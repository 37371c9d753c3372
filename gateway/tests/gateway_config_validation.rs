//! Configuration validation as the operator meets it: every value that cannot work is refused
//! with exit status 2 and a message naming the option and where its value came from (the file
//! and line, the `THRONG_*` variable or the flag), and `--print-config` refuses exactly what
//! start-up refuses.

mod gateway_support;

use std::io::Read;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use gateway_support::{command, temp_dir, write_cert};

/// Where a case puts its values.
enum From<'a> {
    Flags(&'a [&'a str]),
    Env(&'a [(&'a str, &'a str)]),
    /// A config file's text; `{file}` in the expected message stands for its path.
    File(&'a str),
}

/// Runs the binary with the case's values plus `extra` and returns its output, killing it if
/// it has not exited in a minute (a config that was wrongly accepted starts a gateway).
fn run(from: &From, extra: &[&str]) -> (Output, String) {
    let dir = temp_dir();
    let path = dir.join("throng.toml");
    let mut args: Vec<String> = Vec::new();
    let mut env: &[(&str, &str)] = &[];
    match from {
        From::Flags(flags) => args.extend(flags.iter().map(|s| s.to_string())),
        From::Env(vars) => env = vars,
        From::File(text) => {
            std::fs::write(&path, text).unwrap();
            args.extend(["--config".to_owned(), path.display().to_string()]);
        }
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut child =
        command(&args, env).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn throng");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    let out = child.wait_with_output().unwrap();
    let _ = std::fs::remove_dir_all(dir);
    (out, stderr.replace(&path.display().to_string(), "{file}"))
}

/// Asserts that the case is refused with exit status 2 and `message`, both by `--print-config`
/// and by a real start.
fn refused(from: From, message: &str) {
    let expected = format!("throng: error: {message}\n");
    let (out, stderr) = run(&from, &["--print-config"]);
    assert_eq!(out.status.code(), Some(2), "--print-config accepted it: {stderr}");
    assert_eq!(stderr, expected);
    assert!(out.stdout.is_empty(), "nothing printed on error");
    let (out, stderr) = run(&from, &[]);
    assert_eq!(out.status.code(), Some(2), "start-up accepted what --print-config refused: {stderr}");
    assert_eq!(stderr, expected, "start-up and --print-config disagree");
}

#[test]
fn zero_capacities_and_sizes() {
    refused(
        From::File("loops = 2\nevent_capacity = 0\n"),
        "event_capacity: must be at least 1 (set in {file} line 2)",
    );
    refused(
        From::Flags(&["--command-capacity", "0"]),
        "command_capacity: must be at least 1 (set by --command-capacity)",
    );
    refused(
        From::Env(&[("THRONG_MAX_MESSAGE_SIZE", "0")]),
        "max_message_size: must be at least 1 byte (set by THRONG_MAX_MESSAGE_SIZE)",
    );
    refused(
        From::File("max_message_size = \"0\"\n"),
        "max_message_size: must be at least 1 byte (set in {file} line 1)",
    );
    refused(
        From::Flags(&["--max-outbound-bytes", "0B"]),
        "max_outbound_bytes: must be at least 1 byte (set by --max-outbound-bytes)",
    );
    refused(
        From::Flags(&["--max-connections", "0"]),
        "max_connections: must be at least 1 (set by --max-connections)",
    );
    refused(
        From::Env(&[("THRONG_ADMIN_MAX_CONNECTIONS", "0")]),
        "admin_max_connections: must be at least 1 (set by THRONG_ADMIN_MAX_CONNECTIONS)",
    );
    refused(
        From::File("max_message_size = \"1MiB\"\nmax_assembly_bytes = \"64KiB\"\n"),
        "max_assembly_bytes: must be at least max_message_size, or a fragmented message of the largest \
         allowed size could never arrive (max_assembly_bytes: set in {file} line 2; max_message_size: set \
         in {file} line 1)",
    );
    refused(
        From::Flags(&["--broker-max-message-size", "12"]),
        "broker_max_message_size: must be more than the 12-byte envelope, or every message from Redis is \
         dropped (set by --broker-max-message-size)",
    );
    refused(From::Flags(&["--workers", "0"]), "workers: must be between 1 and 1024 (set by --workers)");
    refused(From::Env(&[("THRONG_LOOPS", "0")]), "loops: must be between 1 and 256 (set by THRONG_LOOPS)");
}

#[test]
fn timeouts_that_cannot_work() {
    refused(
        From::File("pong_timeout = 0\n"),
        "pong_timeout: must be more than 0 while pings are on (ping_interval = 0 turns them off) \
         (pong_timeout: set in {file} line 1; ping_interval: the default)",
    );
    // With pings off the pong timeout is unused, so 0 is fine.
    let (out, stderr) =
        run(&From::Flags(&["--pong-timeout", "0", "--ping-interval", "0"]), &["--print-config"]);
    assert!(out.status.success(), "{stderr}");
    refused(
        From::Flags(&["--idle-timeout", "20s", "--ping-interval", "30s"]),
        "idle_timeout: 20s would close a quiet client before the ping at 30s could keep it: make it longer, \
         or 0 (idle_timeout: set by --idle-timeout; ping_interval: set by --ping-interval)",
    );
    refused(
        From::Env(&[("THRONG_HANDSHAKE_TIMEOUT", "0s")]),
        "handshake_timeout: must be more than 0 (set by THRONG_HANDSHAKE_TIMEOUT)",
    );
    refused(
        From::Flags(&["--admin-request-timeout", "0"]),
        "admin_request_timeout: must be more than 0 (set by --admin-request-timeout)",
    );
    refused(
        From::File("admin_idle_timeout = \"0ms\"\n"),
        "admin_idle_timeout: must be more than 0 (set in {file} line 1)",
    );
    refused(
        From::Flags(&["--client-message-burst", "0"]),
        "client_message_burst: must be at least 1 while client_message_rate is on (0 turns the rate limit \
         off) (client_message_burst: set by --client-message-burst; client_message_rate: the default)",
    );
}

#[test]
fn addresses_origins_and_names() {
    refused(
        From::Flags(&["--admin-listen", "127.0.0.1:8080"]),
        "admin_listen: 127.0.0.1:8080 overlaps the client listener 127.0.0.1:8080: give the admin API its \
         own port (admin_listen: set by --admin-listen; listen: the default)",
    );
    refused(
        From::File("listen = \"0.0.0.0:9090\"\n"),
        "admin_listen: 127.0.0.1:9090 overlaps the client listener 0.0.0.0:9090: give the admin API its own \
         port (admin_listen: the default; listen: set in {file} line 1)",
    );
    refused(
        From::Env(&[("THRONG_ADMIN_LISTEN", "0.0.0.0:9090")]),
        "admin_listen: 0.0.0.0:9090 is not a loopback address and no api_key is set: set api_key \
         (--api-key, THRONG_API_KEY) so the admin API needs a key, or admin_insecure = true \
         (--admin-insecure true) to serve it without one (set by THRONG_ADMIN_LISTEN)",
    );
    refused(
        From::File("allowed_origins = [\"https://ok.example\", \"app.example.com\"]\n"),
        "allowed_origins: \"app.example.com\" is not an origin: write scheme://host[:port], e.g. \
         https://app.example.com, or * (set in {file} line 1)",
    );
    refused(
        From::Env(&[("THRONG_ALLOWED_ORIGINS", "https://")]),
        "allowed_origins: \"https://\" is not an origin: write scheme://host[:port], e.g. \
         https://app.example.com, or * (set by THRONG_ALLOWED_ORIGINS)",
    );
    refused(
        From::Flags(&["--admin-allowed-hosts", "http://admin.internal"]),
        "admin_allowed_hosts: \"http://admin.internal\" is not a Host value (e.g. localhost:9090) (set by \
         --admin-allowed-hosts)",
    );
    refused(
        From::Flags(&["--ws-path", "ws"]),
        "ws_path: must start with / and have no query (set by --ws-path)",
    );
    refused(
        From::File("subprotocols = [\"throng v1\"]\n"),
        "subprotocols: \"throng v1\" is not an HTTP token (no spaces, quotes or separators) (set in {file} \
         line 1)",
    );
    refused(
        From::Flags(&["--subprotocols", "bearer.x"]),
        "subprotocols: \"bearer.x\": the bearer. prefix carries tokens (set by --subprotocols)",
    );
    refused(
        From::Env(&[("THRONG_JWT_SECRET", "short")]),
        "jwt_secret: an HS256 secret must be at least 32 bytes (try `openssl rand -base64 32`) (set by \
         THRONG_JWT_SECRET)",
    );
    refused(
        From::Flags(&["--broker-prefix", "a b"]),
        "broker_prefix: must be non-empty, without spaces or * (set by --broker-prefix)",
    );
    // Not a Redis URL, and its password stays out of the message.
    refused(
        From::File("broker = \"http://me:secret@cache.example:6379\"\n"),
        "broker: http://me:<redacted>@cache.example:6379: not a Redis URL \
         (redis://[:PASSWORD@]HOST:PORT[/DB]) (set in {file} line 1)",
    );
    refused(
        From::Env(&[("THRONG_PROXY_PROTOCOL", "true")]),
        "proxy_trusted: proxy_protocol is on: list the balancers' addresses (proxy_trusted: the default; \
         proxy_protocol: set by THRONG_PROXY_PROTOCOL)",
    );
}

#[test]
fn tls_files_come_in_pairs() {
    refused(
        From::Flags(&["--tls-cert", "/etc/throng/cert.pem"]),
        "tls_key: tls_cert is set without it: give both (the listener then serves TLS) or neither \
         (tls_key: the default; tls_cert: set by --tls-cert)",
    );
    refused(
        From::Env(&[("THRONG_ADMIN_TLS_KEY", "/etc/throng/admin.key")]),
        "admin_tls_cert: admin_tls_key is set without it: give both (the listener then serves TLS) or \
         neither (admin_tls_cert: the default; admin_tls_key: set by THRONG_ADMIN_TLS_KEY)",
    );
    refused(
        From::File("loops = 1\ntls_key = \"k.pem\"\n"),
        "tls_cert: tls_key is set without it: give both (the listener then serves TLS) or neither \
         (tls_cert: the default; tls_key: set in {file} line 2)",
    );
    refused(
        From::Flags(&[
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
            "--proxy-protocol",
            "true",
            "--proxy-trusted",
            "10.0.0.0/8",
        ]),
        "proxy_protocol: not with TLS on the client listener: terminate TLS at the balancer, or turn \
         proxy_protocol off (proxy_protocol: set by --proxy-protocol; tls_cert: set by --tls-cert)",
    );
}

#[test]
fn a_tls_file_that_does_not_load_stops_the_start_and_is_named() {
    refused(
        From::Flags(&["--tls-cert", "/nonexistent/cert.pem", "--tls-key", "/nonexistent/key.pem"]),
        "tls_cert, tls_key: cannot read /nonexistent/cert.pem: No such file or directory (os error 2)",
    );
    let dir = temp_dir();
    let (cert, key) = write_cert(&dir, "good");
    let (_, other_key) = write_cert(&dir, "other");
    let junk = dir.join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    let (cert, key, other_key, junk) =
        (cert.to_str().unwrap(), key.to_str().unwrap(), other_key.to_str().unwrap(), junk.to_str().unwrap());
    refused(
        From::Env(&[("THRONG_ADMIN_TLS_CERT", junk), ("THRONG_ADMIN_TLS_KEY", key)]),
        &format!("admin_tls_cert, admin_tls_key: no certificate in {junk} / {key}: no CERTIFICATE section"),
    );
    let (out, stderr) = run(&From::Flags(&["--tls-cert", cert, "--tls-key", other_key]), &["--print-config"]);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.starts_with("throng: error: tls_cert, tls_key: TLS: ")
            && stderr.ends_with(&format!(" ({cert} / {other_key})\n")),
        "a key that does not match its certificate: {stderr}"
    );
    // The same pair from each source is accepted and shown.
    let file = format!("tls_cert = \"{cert}\"\ntls_key = \"{key}\"\n");
    for from in [
        From::Flags(&[
            "--tls-cert",
            cert,
            "--tls-key",
            key,
            "--admin-tls-cert",
            cert,
            "--admin-tls-key",
            key,
        ]),
        From::Env(&[("THRONG_TLS_CERT", cert), ("THRONG_TLS_KEY", key)]),
        From::File(&file),
    ] {
        let (out, stderr) = run(&from, &["--print-config"]);
        assert!(out.status.success(), "{stderr}");
        let config: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!((config["tls_cert"].as_str(), config["tls_key"].as_str()), (Some(cert), Some(key)));
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_bad_log_filter_is_a_config_error() {
    let (out, stderr) = run(&From::File("log_level = \"throng=loud\"\n"), &["--print-config"]);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.starts_with("throng: error: log_level: \"throng=loud\" is not a log filter: ")
            && stderr.ends_with(" (set in {file} line 1)\n"),
        "{stderr}"
    );
    let (out, again) = run(&From::File("log_level = \"throng=loud\"\n"), &[]);
    assert_eq!((out.status.code(), again), (Some(2), stderr), "start-up and --print-config disagree");
}

#[test]
fn a_bad_variable_is_named_as_the_variable() {
    let (out, stderr) = run(&From::Env(&[("THRONG_MAX_MESSAGE_SIZE", "lots")]), &["--print-config"]);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("invalid value \"lots\" in THRONG_MAX_MESSAGE_SIZE: invalid size"), "{stderr}");
    assert!(!stderr.contains("--max-message-size"), "the flag was not used: {stderr}");
    let (_, stderr) = run(&From::Env(&[("THRONG_SLOW_CONSUMER", "explode")]), &["--print-config"]);
    assert!(
        stderr.contains("invalid value \"explode\" in THRONG_SLOW_CONSUMER: expected one of close, drop"),
        "{stderr}"
    );
    // The same bad value as a flag is named as the flag.
    let (out, stderr) = run(&From::Flags(&["--max-message-size", "lots"]), &["--print-config"]);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("'--max-message-size <SIZE>'") && !stderr.contains("THRONG_"), "{stderr}");
    // A flag wins over a bad variable's name when both are given: the flag's value was bad.
    let env = [("THRONG_MAX_MESSAGE_SIZE", "1KiB")];
    let (out, stderr) = run(&From::Env(&env), &["--max-message-size", "lots", "--print-config"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.contains("'--max-message-size <SIZE>'"), "{stderr}");
}

#[test]
fn what_works_still_starts() {
    // Defaults, the shipped example and the edge values that mean "off" are all accepted.
    for from in [
        From::Flags(&[]),
        From::File(include_str!("../../deploy/throng.toml")),
        From::Flags(&["--ping-interval", "0", "--idle-timeout", "0", "--client-message-rate", "0"]),
        From::Flags(&["--client-message-rate", "0", "--client-message-burst", "0"]),
        From::Flags(&["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"]),
        From::Flags(&[
            "--listen",
            "127.0.0.1:9091",
            "--allowed-origins",
            "*,https://*.example.com,http://a:81/",
        ]),
        From::Env(&[("THRONG_MAX_CONNECTIONS_PER_IP", "0"), ("THRONG_DRAIN_TIMEOUT", "0")]),
    ] {
        let (out, stderr) = run(&from, &["--print-config"]);
        assert!(out.status.success(), "{stderr}");
    }
}
