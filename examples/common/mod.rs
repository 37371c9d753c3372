//! Command-line handling shared by the echo examples:
//! `[ADDR] [--loops N] [--workers N] [--backend auto|epoll|io_uring] [--compression off|shared|dedicated]`.

use std::net::SocketAddr;

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
}

pub(crate) fn parse() -> Args {
    let mut addr: SocketAddr = "127.0.0.1:9001".parse().expect("valid default address");
    let mut loops = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut workers = 2;
    let mut backend = throng::Backend::Auto;
    let mut compression = throng::proto::deflate::Compression::Off;
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
            "-h" | "--help" => {
                println!(
                    "usage: [ADDR (default 127.0.0.1:9001)] [--loops N (default: cores)] [--workers N (default 2)] \
                     [--backend auto|epoll|io_uring (default auto)] \
                     [--compression off|shared|dedicated (default off)]"
                );
                std::process::exit(0);
            }
            other => addr = other.parse().unwrap_or_else(|_| fail(&format!("not an address: {other:?}"))),
        }
    }
    Args { addr, loops, workers, backend, compression }
}

fn fail(message: &str) -> ! {
    eprintln!("{message}");
    std::process::exit(2);
}
