//! The protocol as pure functions over bytes: frames and messages, and the shared-key proofs
//! and frame MACs. No sockets here (see `net`).

pub mod auth;
pub mod wire;
