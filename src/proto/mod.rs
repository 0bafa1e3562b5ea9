//! The protocol as pure functions over bytes: frames and messages, the shared-key proofs and
//! key schedule, and the cipher that seals frames. No sockets here (see `net`).

pub mod aead;
pub mod auth;
pub mod chacha;
pub mod hkdf;
pub mod hmac;
pub mod poly1305;
pub mod seal;
pub mod wire;
