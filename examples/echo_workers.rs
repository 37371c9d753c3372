//! The echo server again, but through worker threads: loops decode, workers answer via the
//! [`throng::Handle`].
//!
//! `cargo run --release --example echo_workers -- 127.0.0.1:9001 --loops 1`

mod common;

use throng::{Event, Server};

fn main() -> std::io::Result<()> {
    let args = common::parse();
    let server = Server::builder()
        .bind(args.addr)?
        .loops(args.loops)
        .max_message_size(16 << 20)
        .max_frame_size(16 << 20)
        .max_outbound_bytes(64 << 20)
        .start()?;
    if let Some((soft, hard)) = server.nofile_limits() {
        eprintln!("open files: soft limit was {soft}, raised to hard limit {hard}");
    }
    eprintln!("echo_workers: listening on ws://{} with {} loop(s)", server.local_addr(), args.loops);
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let events = server.events();
            let handle = server.handle();
            std::thread::spawn(move || {
                for event in events.iter() {
                    if let Event::Message { conn, message } = event {
                        // Refused only while the loop is overloaded; the echo is lost then.
                        let _ = handle.send(conn, message);
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        let _ = worker.join();
    }
    Ok(())
}
