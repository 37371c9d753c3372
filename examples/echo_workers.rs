//! The echo server again, but through worker threads: loops decode, workers answer via the
//! [`throng::Handle`]. Each worker reads its own event shard, so each connection is served by
//! one worker, its messages in order.
//!
//! `cargo run --release --example echo_workers -- 127.0.0.1:9001 --loops 1 --workers 2`

mod common;

use throng::{Event, Server};

fn main() -> std::io::Result<()> {
    let args = common::parse();
    let server = args
        .apply(Server::builder().bind(args.addr)?)
        .max_message_size(16 << 20)
        .max_frame_size(16 << 20)
        .max_outbound_bytes(64 << 20)
        .event_shards(args.workers)
        .start()?;
    if let Some((soft, hard)) = server.nofile_limits() {
        eprintln!("open files: soft limit was {soft}, raised to hard limit {hard}");
    }
    let addr = server.local_addr();
    eprintln!(
        "echo_workers: listening on {}://{addr} with {} loop(s), {} worker(s)",
        args.scheme(),
        args.loops,
        args.workers
    );
    let workers: Vec<_> = (server.shards().into_iter())
        .map(|events| {
            let handle = server.handle();
            std::thread::spawn(move || {
                for event in events {
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
