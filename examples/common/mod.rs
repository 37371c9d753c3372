//! Command-line handling shared by the echo examples:
//! `[ADDR] [--loops N] [--workers N] [--backend auto|epoll|io_uring] [--compression off|shared|dedicated]
//! [--tls-cert PATH --tls-key PATH]`.

use std::net::SocketAddr;
use std::path::PathBuf;

/// The listen address, loop count and worker count from the command line.
pub(crate) struct Args {
    pub(crate) addr: SocketAddr,
    pub(crate) loops: usize,
    /// Worker threads, for the examples that have them (default 2).
    #[allow(dead_code)] // echo.rs answers on the loops and has none
    pub(crate) workers: usize,
    /// How the loops move bytes (default `auto`, which `THRONG_BACKEND` can override).
    pub(crate) backend: throng::Backend,
    /// permessage-deflate (default off).
    pub(crate) compression: throng::proto::deflate::Compression,
    /// The certificate chain and key to serve `wss://` with (`--tls-cert`, `--tls-key`).
    tls: Option<(PathBuf, PathBuf)>,
}

impl Args {
    /// Applies the options every example shares to `builder`: loops, backend, compression and
    /// TLS. A certificate that does not load ends the process with the reason.
    pub(crate) fn apply<T>(&self, builder: throng::ServerBuilder<T>) -> throng::ServerBuilder<T> {
        let builder = builder.loops(self.loops).backend(self.backend).compression(self.compression);
        match &self.tls {
            None => builder,
            Some((cert, key)) => {
                let config = throng::tls::Certificates::from_pem_files(cert, key)
                    .and_then(throng::tls::server_config)
                    .unwrap_or_else(|e| fail(&format!("--tls-cert/--tls-key: {e}")));
                builder.tls(config)
            }
        }
    }

    /// `wss` with TLS, else `ws`: for the line that says where the example listens.
    pub(crate) fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "wss"
        } else {
            "ws"
        }
    }
}

pub(crate) fn parse() -> Args {
    let mut addr: SocketAddr = "127.0.0.1:9001".parse().expect("valid default address");
    let mut loops = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut workers = 2;
    let mut backend = throng::Backend::Auto;
    let mut compression = throng::proto::deflate::Compression::Off;
    let (mut cert, mut key): (Option<PathBuf>, Option<PathBuf>) = (None, None);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            flag @ ("--loops" | "--workers") => {
                let value = args.next().unwrap_or_default();
                let n =
                    value.parse().unwrap_or_else(|_| fail(&format!("{flag} wants a number, got {value:?}")));
                *(if flag == "--loops" { &mut loops } else { &mut workers }) = n;
            }
            "--backend" => {
                let value = args.next().unwrap_or_default();
                backend = value.parse().unwrap_or_else(|e: String| fail(&format!("--backend: {e}")));
            }
            "--compression" => {
                let value = args.next().unwrap_or_default();
                compression = throng::proto::deflate::Compression::parse(&value).unwrap_or_else(|| {
                    fail(&format!("--compression wants off, shared or dedicated, got {value:?}"))
                });
            }
            flag @ ("--tls-cert" | "--tls-key") => {
                let value = args
                    .next()
                    .filter(|v| !v.is_empty())
                    .unwrap_or_else(|| fail(&format!("{flag} wants a path")));
                *(if flag == "--tls-cert" { &mut cert } else { &mut key }) = Some(value.into());
            }
            "-h" | "--help" => {
                println!(
                    "usage: [ADDR (default 127.0.0.1:9001)] [--loops N (default: cores)] [--workers N (default 2)] \
                     [--backend auto|epoll|io_uring (default auto)] \
                     [--compression off|shared|dedicated (default off)] \
                     [--tls-cert PEM_CHAIN --tls-key PEM_KEY (wss://; default off)]"
                );
                std::process::exit(0);
            }
            other => addr = other.parse().unwrap_or_else(|_| fail(&format!("not an address: {other:?}"))),
        }
    }
    let tls = match (cert, key) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        _ => fail("--tls-cert and --tls-key go together"),
    };
    Args { addr, loops, workers, backend, compression, tls }
}

fn fail(message: &str) -> ! {
    eprintln!("{message}");
    std::process::exit(2);
}
