//! Deciding and receiving: the model that decides between our entries and a peer's, what a
//! peer has that we are to take (needs), and the puller that brings files in block by block
//! (plans, delta transfer, installs), with the block buffers they pass around.

pub mod delta;
pub mod disk;
pub mod install;
pub mod link;
pub mod model;
pub mod needs;
pub mod pool;
pub mod puller;
pub mod transfer;
