//! Bench-only peer: a tokio-tungstenite echo server, the comparison point for throng's echo example.
//!
//! `tokio-echo [ADDR (default 127.0.0.1:9001)] [--threads N (default 1)]`
//!
//! Every text and binary message is sent back; pings are answered and closes completed by
//! tungstenite itself. `--threads 1` runs a `current_thread` runtime (the 1-core comparison);
//! more threads run the multi-thread scheduler. Limits match the echo example: 16 MiB messages and
//! frames; everything else is tungstenite's default configuration (the way it is used in the wild).

use std::net::SocketAddr;

use futures_util::{future, StreamExt, TryStreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

fn main() -> std::io::Result<()> {
    let mut addr: SocketAddr = "127.0.0.1:9001".parse().expect("valid default address");
    let mut threads = 1usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--threads" => {
                let value = args.next().unwrap_or_default();
                threads = value
                    .parse()
                    .unwrap_or_else(|_| fail(&format!("--threads wants a number, got {value:?}")));
            }
            "-h" | "--help" => {
                println!("usage: tokio-echo [ADDR (default 127.0.0.1:9001)] [--threads N (default 1)]");
                return Ok(());
            }
            other => addr = other.parse().unwrap_or_else(|_| fail(&format!("not an address: {other:?}"))),
        }
    }
    let runtime = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()?
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()?
    };
    runtime.block_on(serve(addr, threads))
}

async fn serve(addr: SocketAddr, threads: usize) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    eprintln!("tokio-echo: listening on ws://{} with {threads} thread(s)", listener.local_addr()?);
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(echo(stream));
            }
            // EMFILE and friends: keep serving the connections we have.
            Err(e) => {
                eprintln!("tokio-echo: accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
}

async fn echo(stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let config = WebSocketConfig::default().max_message_size(Some(16 << 20)).max_frame_size(Some(16 << 20));
    let Ok(ws) = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await else {
        return;
    };
    let (write, read) = ws.split();
    // The idiom of tokio-tungstenite's own echo example: forward flushes when the stream is pending.
    let _ = read.try_filter(|msg| future::ready(msg.is_text() || msg.is_binary())).forward(write).await;
}

fn fail(message: &str) -> ! {
    eprintln!("{message}");
    std::process::exit(2);
}
