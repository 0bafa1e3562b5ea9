//! What a share holds and has held: the index of entries (with their version vectors) on disk,
//! the install log that makes received files recognisable after a crash, the rules for names,
//! and the ignore patterns.

pub mod codec;
pub mod entry;
pub mod ignore;
pub mod index;
pub mod intents;
pub mod names;
pub mod version;
