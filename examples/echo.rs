//! An echo server on the engine, answering on the loop threads through the inline hook.
//!
//! `cargo run --release --example echo -- 127.0.0.1:9001 --loops 1`

mod common;

use throng::{Flow, Server};

fn main() -> std::io::Result<()> {
    let args = common::parse();
    let server = args
        .apply(Server::builder().bind(args.addr)?)
        .max_message_size(16 << 20)
        .max_frame_size(16 << 20)
        .max_outbound_bytes(64 << 20)
        .on_message(|inline, kind, payload| {
            inline.reply(kind, payload);
            Flow::Consumed
        })
        // Everything happens on the loop: no worker needs to hear of opens and closes.
        .lifecycle_events(false)
        .start()?;
    if let Some((soft, hard)) = server.nofile_limits() {
        eprintln!("open files: soft limit was {soft}, raised to hard limit {hard}");
    }
    eprintln!(
        "echo: listening on {}://{} with {} loop(s) on {}, compression {}",
        args.scheme(),
        server.local_addr(),
        args.loops,
        server.backend(),
        args.compression
    );
    // Events (open/close) are not needed here; drain them so the loops never wait.
    let events = server.events();
    for _ in events.iter() {}
    Ok(())
}
