//! Connections to peers: the handshake, then a reader, a writer and a puller per connection,
//! routing frames between the socket and the model.

pub mod conn;
