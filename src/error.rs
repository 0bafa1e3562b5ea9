//! The error type of `left`: what went wrong, and with which path when a path is involved.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// An error from any part of `left`. It carries the path it concerns when there is one, so that a
/// log line can name the file.
#[derive(Debug)]
pub struct Error {
    kind: Kind,
    path: Option<PathBuf>,
}

#[derive(Debug)]
enum Kind {
    Io(io::Error),
    /// The peer broke the protocol: a malformed, oversized or unexpected frame or value.
    Protocol(String),
    /// Anything else, said in words.
    Msg(String),
}

impl Error {
    pub fn protocol(msg: impl Into<String>) -> Error {
        Error {
            kind: Kind::Protocol(msg.into()),
            path: None,
        }
    }

    pub fn msg(msg: impl Into<String>) -> Error {
        Error {
            kind: Kind::Msg(msg.into()),
            path: None,
        }
    }

    /// Attaches the path this error is about (keeps an existing one).
    pub fn at(mut self, path: impl AsRef<Path>) -> Error {
        if self.path.is_none() {
            self.path = Some(path.as_ref().to_path_buf());
        }
        self
    }

    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match &self.kind {
            Kind::Io(e) => Some(e.kind()),
            _ => None,
        }
    }
}

/// A folder reached through a descriptor held on it (`/proc/self/fd/N`) and its real path, so
/// that messages name the folder as the user knows it (see `sys::open::hold_dir`).
static HELD: std::sync::OnceLock<(PathBuf, PathBuf)> = std::sync::OnceLock::new();

/// Messages show paths under `via` as under `real` from now on.
pub fn show_held_as(via: &Path, real: &Path) {
    let _ = HELD.set((via.to_path_buf(), real.to_path_buf()));
}

/// How a path is shown in messages.
pub fn shown(p: &Path) -> PathBuf {
    match HELD.get() {
        Some((via, real)) => match p.strip_prefix(via) {
            Ok(rest) => real.join(rest),
            Err(_) => p.to_path_buf(),
        },
        None => p.to_path_buf(),
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(p) = &self.path {
            write!(f, "{}: ", shown(p).display())?;
        }
        match &self.kind {
            Kind::Io(e) => write!(f, "{e}"),
            Kind::Protocol(m) => write!(f, "protocol error: {m}"),
            Kind::Msg(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            Kind::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        Error {
            kind: Kind::Io(e),
            path: None,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// Adds a path to the error of an `io::Result`.
pub trait Context<T> {
    fn at(self, path: impl AsRef<Path>) -> Result<T>;
}

impl<T, E: Into<Error>> Context<T> for std::result::Result<T, E> {
    fn at(self, path: impl AsRef<Path>) -> Result<T> {
        self.map_err(|e| e.into().at(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_folder_is_shown_by_its_real_path() {
        show_held_as(Path::new("/proc/self/fd/9"), Path::new("/srv/share/.left"));
        let e = Error::msg("damaged").at("/proc/self/fd/9/index");
        assert_eq!(e.to_string(), "/srv/share/.left/index: damaged");
        // Other paths are shown as they are.
        assert_eq!(shown(Path::new("/tmp/x")), Path::new("/tmp/x"));
    }
}
