//! The config file: `key = value` lines that set what the command-line options set.
//!
//! The format, line by line:
//!
//! - `key = value`; whitespace around the key and the value is dropped. Keys are the long
//!   options without their dashes: `dir`, `port`, `peer`, `once`, `timeout`, `max-pending`,
//!   `log`, `verbose`, `quiet`, `key-file`, `allow`.
//! - Blank lines are skipped. `#` starts a comment when it begins the line or the value, or
//!   follows a space or tab; a `#` inside a word (`a#b`) is kept.
//! - A value may be wrapped in double quotes to keep a ` #` or leading or trailing spaces:
//!   `dir = "/mnt/disk #2"`. There are no escapes; the value ends at the next `"`.
//! - `peer` and `allow` may be repeated, and each line may list several values separated by
//!   spaces and/or commas. Every other key may be set once; setting it again is an error, so
//!   is setting the log level twice (`log`, `verbose` and `quiet` all set it).
//! - Yes/no values are `true`/`false`, `yes`/`no`, `on`/`off` or `1`/`0`, in any case.
//! - CRLF line ends and a UTF-8 byte order mark are accepted.
//!
//! Errors are one line, `FILE:LINE: what is wrong`. The command line wins over the file; the
//! caller merges the two.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// Read when present, without `--config` (Tiny Core keeps /opt across reboots).
pub const DEFAULT_PATH: &str = "/opt/left.conf";
/// Larger files are refused.
pub const MAX_SIZE: u64 = 1 << 20;

const KEYS: &str =
    "dir, port, peer, once, timeout, max-pending, log, verbose, quiet, key-file, allow";

/// What a config file sets; `None` or empty where it says nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    pub dir: Option<PathBuf>,
    pub port: Option<u16>,
    /// Peers as written, one per entry; the caller parses them.
    pub peers: Vec<String>,
    pub once: Option<bool>,
    /// Seconds.
    pub timeout: Option<u64>,
    pub max_pending: Option<usize>,
    /// 0 quiet, 1 normal, 2 verbose.
    pub verbosity: Option<u8>,
    pub key_file: Option<PathBuf>,
    /// Addresses as written (or `any`), one per entry; the caller parses them.
    pub allow: Vec<String>,
    /// The file name used in messages.
    file: String,
    /// The line each entry of `peers` and of `allow` came from.
    peer_lines: Vec<usize>,
    allow_lines: Vec<usize>,
}

impl Config {
    /// `FILE:LINE` of `peers[i]`, to prefix a message about it.
    pub fn peer_origin(&self, i: usize) -> String {
        origin(&self.file, &self.peer_lines, i)
    }

    /// `FILE:LINE` of `allow[i]`, to prefix a message about it.
    pub fn allow_origin(&self, i: usize) -> String {
        origin(&self.file, &self.allow_lines, i)
    }
}

fn origin(file: &str, lines: &[usize], i: usize) -> String {
    match lines.get(i) {
        Some(n) => format!("{file}:{n}"),
        None => file.to_string(),
    }
}

/// Reads and parses the config file at `path`. A missing file is `Ok(None)` unless `required`
/// (an explicit `--config`), when it is an error like any other: unreadable, a folder, larger
/// than [`MAX_SIZE`], not UTF-8, or a bad line.
pub fn load(path: &Path, required: bool) -> Result<Option<Config>, String> {
    let name = path.display().to_string();
    let io_err = |e: io::Error| format!("{name}: {e}");
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return if required {
                Err(format!("{name}: no such file"))
            } else {
                Ok(None)
            };
        }
        Err(e) => return Err(io_err(e)),
    };
    if file.metadata().map_err(io_err)?.is_dir() {
        return Err(format!("{name}: is a folder, not a config file"));
    }
    let mut bytes = Vec::new();
    file.take(MAX_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err)?;
    if bytes.len() as u64 > MAX_SIZE {
        return Err(format!("{name}: larger than {} MiB", MAX_SIZE >> 20));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        let ok = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = 1 + ok.iter().filter(|&&b| b == b'\n').count();
        format!("{name}:{line}: not UTF-8 text")
    })?;
    parse(&text, &name).map(Some)
}

/// Parses the text of a config file; `file` names it in error messages.
pub fn parse(text: &str, file: &str) -> Result<Config, String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut cfg = Config {
        file: file.to_string(),
        ..Config::default()
    };
    // Single-valued settings already given, and on which line.
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, line) in text.split('\n').enumerate() {
        let n = i + 1;
        let line = line.strip_suffix('\r').unwrap_or(line);
        set_line(&mut cfg, &mut seen, line, n).map_err(|msg| format!("{file}:{n}: {msg}"))?;
    }
    Ok(cfg)
}

/// Applies one line (number `n`) to `cfg`; the error is the message without `FILE:LINE: `.
/// Long on purpose: one arm per key, in one match, reads as the config file's reference does.
fn set_line<'a>(
    cfg: &mut Config,
    seen: &mut HashMap<&'a str, usize>,
    line: &'a str,
    n: usize,
) -> Result<(), String> {
    let t = line.trim();
    if t.is_empty() || t.starts_with('#') {
        return Ok(());
    }
    let Some((key, value)) = t.split_once('=') else {
        return Err(format!("expected \"key = value\", found {t:?}"));
    };
    let key = key.trim_end();
    if key.is_empty() {
        return Err("no key before \"=\"".into());
    }
    // Single-valued settings are named for the duplicate check; `peer` and `allow` repeat.
    let setting = match key {
        "log" | "verbose" | "quiet" => Some("the log level"),
        "dir" | "port" | "once" | "timeout" | "max-pending" | "key-file" => Some(key),
        "peer" | "allow" => None,
        _ => return Err(format!("unknown key {key:?} (known: {KEYS})")),
    };
    if let Some(setting) = setting {
        if let Some(first) = seen.get(setting) {
            return Err(if key == setting {
                format!("{key:?} is already set on line {first}")
            } else {
                format!("{key}: {setting} is already set on line {first}")
            });
        }
        seen.insert(setting, n);
    }
    let value = unquote(value)?;
    if value.is_empty() {
        return Err(format!("{key} needs a value"));
    }
    match key {
        "dir" => cfg.dir = Some(PathBuf::from(value)),
        "key-file" => cfg.key_file = Some(PathBuf::from(value)),
        "port" => {
            let port = value
                .parse()
                .map_err(|_| format!("port: {value:?} is not a port number (0-65535)"))?;
            cfg.port = Some(port);
        }
        "timeout" => {
            let secs = value
                .parse()
                .map_err(|_| format!("timeout: {value:?} is not a whole number of seconds"))?;
            cfg.timeout = Some(secs);
        }
        "max-pending" => cfg.max_pending = Some(parse_pending(value, key)?),
        "once" => cfg.once = Some(boolean(key, value)?),
        "verbose" => cfg.verbosity = Some(if boolean(key, value)? { 2 } else { 1 }),
        "quiet" => cfg.verbosity = Some(if boolean(key, value)? { 0 } else { 1 }),
        "log" => {
            cfg.verbosity = Some(match value.to_ascii_lowercase().as_str() {
                "quiet" => 0,
                "normal" => 1,
                "verbose" => 2,
                _ => {
                    return Err(format!("log: {value:?} is not quiet, normal or verbose"));
                }
            })
        }
        // `peer` or `allow`, the only keys left.
        _ => {
            let (list, lines) = if key == "peer" {
                (&mut cfg.peers, &mut cfg.peer_lines)
            } else {
                (&mut cfg.allow, &mut cfg.allow_lines)
            };
            let before = list.len();
            for item in value.split([' ', '\t', ',']).filter(|s| !s.is_empty()) {
                list.push(item.to_string());
                lines.push(n);
            }
            if list.len() == before {
                return Err(format!("{key} needs a value"));
            }
        }
    }
    Ok(())
}

/// The value after `=`: surrounding whitespace and any comment dropped, or the text inside
/// double quotes. Empty when nothing but whitespace or a comment follows.
fn unquote(v: &str) -> Result<&str, String> {
    let v = v.trim_start();
    if let Some(rest) = v.strip_prefix('"') {
        let Some(end) = rest.find('"') else {
            return Err("no closing quote".into());
        };
        let after = rest[end + 1..].trim_start();
        if !after.is_empty() && !after.starts_with('#') {
            return Err(format!("unexpected {after:?} after the closing quote"));
        }
        return Ok(&rest[..end]);
    }
    let end = v
        .char_indices()
        .find(|&(i, c)| c == '#' && (i == 0 || v[..i].ends_with([' ', '\t'])))
        .map_or(v.len(), |(i, _)| i);
    Ok(v[..end].trim_end())
}

fn boolean(key: &str, v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Ok(true),
        "false" | "no" | "off" | "0" => Ok(false),
        _ => Err(format!(
            "{key}: {v:?} is not true or false (or yes/no, on/off, 1/0)"
        )),
    }
}

/// A number of pending entries kept in memory: 2 or more.
pub fn parse_pending(s: &str, what: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 2 => Ok(n),
        _ => Err(format!("{what}: {s:?} is not a whole number of 2 or more")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Config {
        parse(text, "t.conf").unwrap_or_else(|e| panic!("{text:?}: {e}"))
    }

    fn err(text: &str) -> String {
        match parse(text, "t.conf") {
            Ok(c) => panic!("{text:?} accepted: {c:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn full_file() {
        let c = ok("\
# left configuration
dir = /mnt/sda1/share
port = 24681
peer = 10.0.0.2
peer = box-2.lan:9000, [fe80::1]:7 10.0.0.3
once = yes
timeout = 60
max-pending = 500
log = verbose
key-file = /opt/left.key
allow = 10.0.0.9,any
");
        assert_eq!(c.dir, Some(PathBuf::from("/mnt/sda1/share")));
        assert_eq!(c.port, Some(24681));
        assert_eq!(
            c.peers,
            ["10.0.0.2", "box-2.lan:9000", "[fe80::1]:7", "10.0.0.3"]
        );
        assert_eq!(c.once, Some(true));
        assert_eq!(c.timeout, Some(60));
        assert_eq!(c.max_pending, Some(500));
        assert_eq!(c.verbosity, Some(2));
        assert_eq!(c.key_file, Some(PathBuf::from("/opt/left.key")));
        assert_eq!(c.allow, ["10.0.0.9", "any"]);
        assert_eq!(c.peer_origin(0), "t.conf:4");
        assert_eq!(c.peer_origin(3), "t.conf:5");
        assert_eq!(c.allow_origin(1), "t.conf:11");
        assert_eq!(c.allow_origin(2), "t.conf");
    }

    #[test]
    fn empty_and_partial() {
        assert_eq!(ok(""), ok("\n\n# nothing\n   \n\t# indented comment\n"));
        let c = ok("port=1");
        assert_eq!(c.port, Some(1));
        assert_eq!(
            (c.dir, c.once, c.timeout, c.verbosity),
            (None, None, None, None)
        );
        assert!(c.peers.is_empty() && c.allow.is_empty() && c.key_file.is_none());
    }

    #[test]
    fn whitespace_comments_and_quotes() {
        let c = ok("  dir\t=\t my share  \r\nport = 5 # the port\r\n");
        assert_eq!(c.dir, Some(PathBuf::from("my share")));
        assert_eq!(c.port, Some(5));
        let c = ok("\u{feff}dir = /a#b\t# comment");
        assert_eq!(c.dir, Some(PathBuf::from("/a#b")));
        let c = ok("dir = \" /mnt/disk #2 \"  # quoted");
        assert_eq!(c.dir, Some(PathBuf::from(" /mnt/disk #2 ")));
        let c = ok("dir = a=b");
        assert_eq!(c.dir, Some(PathBuf::from("a=b")));
        let c = ok("peer = a # b\npeer=\"c, d\"");
        assert_eq!(c.peers, ["a", "c", "d"]);
    }

    #[test]
    fn log_level() {
        for (text, v) in [
            ("log = quiet", 0),
            ("log = Normal", 1),
            ("log = VERBOSE", 2),
            ("verbose = true", 2),
            ("verbose = off", 1),
            ("quiet = 1", 0),
            ("quiet = No", 1),
        ] {
            assert_eq!(ok(text).verbosity, Some(v), "{text}");
        }
        for (text, want) in [
            ("once = TRUE", true),
            ("once = on", true),
            ("once = 0", false),
            ("once = no", false),
        ] {
            assert_eq!(ok(text).once, Some(want), "{text}");
        }
    }

    #[test]
    fn bad_lines() {
        for (text, want) in [
            (
                "prot = 1",
                "t.conf:1: unknown key \"prot\" (known: dir, port,",
            ),
            ("\n\n--port = 1", "t.conf:3: unknown key \"--port\""),
            ("bogus =", "t.conf:1: unknown key \"bogus\""),
            (
                "port 24680",
                "t.conf:1: expected \"key = value\", found \"port 24680\"",
            ),
            ("dir\n", "t.conf:1: expected \"key = value\""),
            ("= 5", "t.conf:1: no key before \"=\""),
            (
                "port = 70000",
                "t.conf:1: port: \"70000\" is not a port number (0-65535)",
            ),
            ("port = -1", "port: \"-1\" is not a port number"),
            ("port = 80 90", "port: \"80 90\" is not a port number"),
            (
                "# c\nport = 5#x",
                "t.conf:2: port: \"5#x\" is not a port number",
            ),
            (
                "once = maybe",
                "t.conf:1: once: \"maybe\" is not true or false",
            ),
            ("verbose = 2", "verbose: \"2\" is not true or false"),
            (
                "timeout = 1.5",
                "timeout: \"1.5\" is not a whole number of seconds",
            ),
            ("timeout = -3", "timeout: \"-3\" is not a whole number"),
            (
                "log = loud",
                "log: \"loud\" is not quiet, normal or verbose",
            ),
            ("dir =", "t.conf:1: dir needs a value"),
            ("dir = # none", "dir needs a value"),
            ("dir = \"\"", "dir needs a value"),
            ("key-file =   ", "key-file needs a value"),
            ("peer = , ,", "t.conf:1: peer needs a value"),
            ("allow =", "allow needs a value"),
            ("dir = \"a", "t.conf:1: no closing quote"),
            (
                "dir = \"a\" b",
                "t.conf:1: unexpected \"b\" after the closing quote",
            ),
            (
                "port = 1\n\nport = 1",
                "t.conf:3: \"port\" is already set on line 1",
            ),
            (
                "dir = a\ndir = b",
                "t.conf:2: \"dir\" is already set on line 1",
            ),
            (
                "once = yes\nonce = no",
                "t.conf:2: \"once\" is already set on line 1",
            ),
            (
                "timeout=1\ntimeout=2",
                "t.conf:2: \"timeout\" is already set",
            ),
            (
                "key-file=a\nkey-file=b",
                "t.conf:2: \"key-file\" is already set",
            ),
            (
                "quiet = yes\n# c\nverbose = no",
                "t.conf:3: verbose: the log level is already set on line 1",
            ),
            (
                "log = quiet\nlog = quiet",
                "t.conf:2: log: the log level is already set",
            ),
        ] {
            let e = err(text);
            assert!(e.starts_with("t.conf:"), "{text:?}: {e}");
            assert!(e.contains(want), "{text:?}: got {e:?}, want {want:?}");
            assert!(!e.contains('\n'), "{text:?}: {e:?}");
        }
    }

    #[test]
    fn repeatable_keys() {
        let c = ok("peer = a\nallow = any\npeer = b c\nallow = 1.2.3.4");
        assert_eq!(c.peers, ["a", "b", "c"]);
        assert_eq!(c.allow, ["any", "1.2.3.4"]);
        assert_eq!(
            (c.peer_origin(0), c.peer_origin(2)),
            ("t.conf:1".into(), "t.conf:3".into())
        );
        assert_eq!(c.allow_origin(1), "t.conf:4");
    }

    /// A file in the temp folder, removed when dropped.
    struct Temp(PathBuf);

    impl Temp {
        fn new(name: &str, bytes: &[u8]) -> Temp {
            let p = std::env::temp_dir().join(format!("left-config-{}-{name}", std::process::id()));
            std::fs::write(&p, bytes).unwrap();
            Temp(p)
        }
    }

    impl Drop for Temp {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn loading() {
        let missing = std::env::temp_dir().join(format!("left-config-{}-none", std::process::id()));
        assert_eq!(load(&missing, false), Ok(None));
        let e = load(&missing, true).unwrap_err();
        assert_eq!(e, format!("{}: no such file", missing.display()));

        let good = Temp::new("good", b"port = 7\npeer = h\n");
        let c = load(&good.0, false).unwrap().unwrap();
        assert_eq!(c.port, Some(7));
        assert_eq!(c.peer_origin(0), format!("{}:2", good.0.display()));

        let bad = Temp::new("bad", b"# x\nprot = 7\n");
        let e = load(&bad.0, true).unwrap_err();
        assert!(
            e.starts_with(&format!("{}:2: unknown key \"prot\"", bad.0.display())),
            "{e}"
        );

        let latin1 = Temp::new("latin1", b"port = 7\n\ndir = caf\xe9\n");
        let e = load(&latin1.0, false).unwrap_err();
        assert_eq!(e, format!("{}:3: not UTF-8 text", latin1.0.display()));

        let mut big = b"dir = x\n".to_vec();
        big.resize(MAX_SIZE as usize + 1, b'\n');
        let big = Temp::new("big", &big);
        let e = load(&big.0, false).unwrap_err();
        assert_eq!(e, format!("{}: larger than 1 MiB", big.0.display()));
        let mut fits = b"dir = x\n".to_vec();
        fits.resize(MAX_SIZE as usize, b'\n');
        let fits = Temp::new("fits", &fits);
        assert!(load(&fits.0, false).unwrap().is_some());

        let e = load(&std::env::temp_dir(), false).unwrap_err();
        assert!(e.ends_with("is a folder, not a config file"), "{e}");
    }
}
