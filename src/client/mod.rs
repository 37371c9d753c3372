//! A blocking WebSocket client: dial a `ws://` or `wss://` URL, then send and receive whole
//! messages.
//!
//! Built on the same sans-IO core as the server ([`crate::proto`]): the upgrade request and
//! response check come from [`proto::handshake`](crate::proto::handshake), received frames go
//! through a [`Session`](crate::proto::Session) for the client role (so every RFC 6455 rule,
//! UTF-8 checked as bytes arrive, the size limits, and the server's own ping and close rules
//! apply), and frames are sent masked with a fresh key. `wss://` runs over TLS with rustls
//! ([`ClientOptions::tls`]: the webpki roots by default, or a CA file with
//! [`ClientOptions::ca_file`]); a refused certificate is [`ClientError::Tls`].
//!
//! Call order: [`connect`] → [`Connection::send`] / [`Connection::recv`] (which also answers
//! pings) → [`Connection::close`], or [`Connection::recv`] returning [`ClientError::Closed`] when
//! the server closes first.
//!
//! ```
//! use throng::client::{connect, ClientError, ClientOptions};
//! use throng::{Flow, Message, Server};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = Server::builder()
//!     .bind("127.0.0.1:0")?
//!     .loops(1)
//!     .on_message(|inline, kind, payload| {
//!         inline.reply(kind, payload);
//!         Flow::Consumed
//!     })
//!     .start()?;
//!
//! let url = format!("ws://{}/echo?room=1", server.local_addr());
//! let mut conn = connect(&url, &ClientOptions::default())?;
//! conn.send_text("hello")?;
//! assert_eq!(conn.recv()?, Message::Text("hello".into()));
//! conn.close(1000, "done")?;
//! assert!(matches!(conn.recv(), Err(ClientError::Closed { code: 1000, .. })));
//! # Ok(())
//! # }
//! ```

mod conn;
mod dial;
mod error;
mod options;
mod stream;
mod url;

pub use conn::Connection;
pub use dial::connect;
pub use error::ClientError;
pub use options::ClientOptions;
