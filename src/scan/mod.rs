//! Finding local changes: the scanner walks the share (or the folders inotify named), hashes
//! what changed and records new versions in the index.

pub mod scanner;
