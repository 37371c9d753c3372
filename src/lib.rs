//! # throng
//!
//! A WebSocket connection gateway: thread-per-core event loops on `mio`, connection state in a
//! slab, and a sans-IO RFC 6455 core ([`proto`]) that parses upgrades and frames straight out of the
//! read buffer without copying.
//!
//! ```text
//!  socket ──read──▶ loop scratch buffer ──▶ proto (sans-IO) ──▶ Event ──crossbeam──▶ app workers
//!    ▲                                                                                  │
//!    └──write/writev── per-conn outbound queue ◀── commands (send, close, publish) ◀────┘
//! ```
//!
//! A server whose worker echoes every message, and the blocking client talking to it:
//!
//! ```
//! use std::time::Duration;
//! use throng::client::{connect, ClientOptions};
//! use throng::{Event, Message, Server};
//!
//! let server = Server::builder().bind("127.0.0.1:0")?.loops(1).start()?;
//! let (events, handle) = (server.events(), server.handle());
//! let worker = std::thread::spawn(move || {
//!     for event in events.iter() {
//!         // A loop refuses a command only while its queue stays full (overload).
//!         let done = match event {
//!             Event::Open { conn, .. } => handle.subscribe(conn, "news"),
//!             Event::Message { conn, message } => handle.send(conn, message),
//!             Event::Close { .. } => Ok(()),
//!         };
//!         done.expect("the loop took the command");
//!     }
//! });
//!
//! let url = format!("ws://{}/chat", server.local_addr());
//! let mut client = connect(&url, &ClientOptions::default()).expect("connect");
//! client.send_text("hello").expect("send");
//! assert_eq!(client.recv().expect("echo"), Message::Text("hello".into()));
//! client.close(1000, "done").expect("close");
//!
//! server.shutdown(Duration::from_secs(1));
//! worker.join().unwrap();
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! Several workers, each reading its own shard, with a value of the application's type from the
//! upgrade hook in every `Open`. A connection's events all reach the same worker, in order, so
//! the worker's own map needs no lock and always has the session a message belongs to:
//!
//! ```
//! use std::collections::HashMap;
//! use std::time::Duration;
//! use throng::client::{connect, ClientOptions};
//! use throng::{Accepted, Event, Message, Server};
//!
//! struct Session {
//!     name: String,
//! }
//!
//! let server = Server::builder()
//!     .bind("127.0.0.1:0")?
//!     .event_shards(2)
//!     .on_upgrade(|request, _peer| {
//!         let name = request.query().and_then(|q| q.strip_prefix("name=")).unwrap_or("guest");
//!         Ok(Accepted::new(Session { name: name.to_owned() })) // a `Server<Session>`
//!     })
//!     .start()?;
//! let workers: Vec<_> = (server.shards().into_iter())
//!     .map(|events| {
//!         let handle = server.handle();
//!         std::thread::spawn(move || {
//!             let mut sessions = HashMap::new();
//!             for event in events {
//!                 match event {
//!                     Event::Open { conn, value, .. } => drop(sessions.insert(conn, value)),
//!                     Event::Message { conn, message: Message::Text(text) } => {
//!                         // Its Open came first, to this worker.
//!                         let reply = format!("{}: {text}", sessions[&conn].name);
//!                         let _ = handle.send(conn, reply); // refused only when overloaded
//!                     }
//!                     Event::Message { .. } => {}
//!                     Event::Close { conn, .. } => drop(sessions.remove(&conn)),
//!                 }
//!             }
//!         })
//!     })
//!     .collect();
//!
//! let url = format!("ws://{}/chat?name=ann", server.local_addr());
//! let mut client = connect(&url, &ClientOptions::default()).expect("connect");
//! client.send_text("hi").expect("send");
//! assert_eq!(client.recv().expect("reply"), Message::Text("ann: hi".into()));
//! client.close(1000, "done").expect("close");
//!
//! server.shutdown(Duration::from_secs(1));
//! for worker in workers {
//!     worker.join().unwrap();
//! }
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! The protocol core on its own, decoding a masked text frame a client sent:
//!
//! ```
//! use throng::proto::{frame, Decoder, Item, Limits, OpCode, Role};
//!
//! // What a client puts on the wire: a masked text frame.
//! let mut wire = Vec::new();
//! frame::encode_frame(&mut wire, true, OpCode::Text, Some([1, 2, 3, 4]), b"hello");
//!
//! // The server decodes it in place.
//! let mut decoder = Decoder::new(Role::Server);
//! let wire_len = wire.len();
//! let (used, item) = decoder.decode(&mut wire, &Limits::default()).unwrap();
//! assert_eq!(used, wire_len);
//! match item {
//!     Some(Item::Data { chunk, last: true, .. }) => assert_eq!(chunk, b"hello"),
//!     other => panic!("unexpected {other:?}"),
//! }
//! ```

pub mod client;
pub mod engine;
pub mod net;
pub mod proto;
mod sys;
pub mod tls;

pub use engine::{
    Accepted, Admission, Backend, CloseCause, CommandError, ConnId, Delivered, Event, Events, Flow, Handle,
    Inline, Joined, Prepared, PublishReceipt, Server, ServerBuilder, SlowConsumerPolicy, Stats, TlsFailure,
    TlsFailures,
};
/// The io_uring probe and ring set-up the engine's backend uses, shared with `throng-load`'s
/// client loop so that both decide alike (not part of the stable API).
#[cfg(all(target_os = "linux", feature = "io-uring"))]
#[doc(hidden)]
pub mod uring {
    pub use crate::engine::backend::uring::{build_ring, probe};
}
pub use proto::handshake::Rejection;
pub use proto::Message;
pub use proto::{CloseCode, DataKind};
pub use sys::raise_nofile_limit;
