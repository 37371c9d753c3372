//! The sans-IO RFC 6455 core: bytes in, events and bytes out.
//!
//! Nothing in this module touches a socket, a thread or a clock. Backends (the mio loops, a future
//! io_uring loop, the client, the fuzzers) feed it the bytes that arrived and write what it returns.
//! Parsers borrow from the caller's buffer and never copy: a partial input is answered with
//! "need more bytes", never with an error.
//!
//! Call order for a connection:
//! 1. [`handshake`]: parse the upgrade request (server) or the 101 response (client) from the read
//!    buffer; the bytes after it are the first frame bytes.
//! 2. [`Session::handle_read`] repeatedly on the read buffer: its [`Decoder`] unmasks payloads in
//!    place and yields [`Item`]s (data chunks, pings, pongs, close) or asks for more bytes, and the
//!    session applies the ping and close rules, handing the pongs and close frames they call for
//!    to the caller's [`Transmit`]. [`Session::close`] / [`Session::fail`] send our close; the
//!    caller keeps the deadlines (see [`session`] for the whole call order).
//! 3. [`frame::encode_header`] / [`frame::encode_frame`] to write data frames, masked with
//!    [`Role::send_mask`].

pub mod close;
mod code;
pub mod decoder;
pub mod deflate;
pub mod error;
pub mod frame;
pub mod handshake;
pub mod mask;
pub mod message;
pub mod proxy;
pub mod session;
pub mod utf8;

pub use close::CloseCode;
pub use decoder::{DataKind, Decoder, Item, Limits};
pub use error::ProtocolError;
pub use frame::{FrameHeader, OpCode, Role};
pub use message::Message;
pub use session::{FrameWriter, Session, Transmit};
