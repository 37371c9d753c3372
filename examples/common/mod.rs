//! Command-line handling shared by the echo examples: `[ADDR] [--loops N]`.

use std::net::SocketAddr;

/// The listen address and loop count from the command line.
pub(crate) struct Args {
    pub(crate) addr: SocketAddr,
    pub(crate) loops: usize,
}

pub(crate) fn parse() -> Args {
    let mut addr: SocketAddr = "127.0.0.1:9001".parse().expect("valid default address");
    let mut loops = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--loops" => {
                let value = args.next().unwrap_or_default();
                loops =
                    value.parse().unwrap_or_else(|_| fail(&format!("--loops wants a number, got {value:?}")));
            }
            "-h" | "--help" => {
                println!("usage: [ADDR (default 127.0.0.1:9001)] [--loops N (default: cores)]");
                std::process::exit(0);
            }
            other => addr = other.parse().unwrap_or_else(|_| fail(&format!("not an address: {other:?}"))),
        }
    }
    Args { addr, loops }
}

fn fail(message: &str) -> ! {
    eprintln!("{message}");
    std::process::exit(2);
}
