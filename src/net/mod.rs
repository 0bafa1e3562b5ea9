//! Connections to peers: frames on the socket, the handshake, then a reader, a writer and a
//! puller per connection, announcing our index and serving blocks.

pub mod announce;
pub mod conn;
pub mod frame;
pub mod handshake;
pub mod serve;
