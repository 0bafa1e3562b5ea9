//! The command line: hand-written parsing into an options struct; usage errors are one line.

use crate::config::Config;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const DEFAULT_PORT: u16 = 24680;

pub const USAGE: &str = "\
usage: left [OPTIONS] <PEER>...
       left status [--dir DIR]
       left keygen FILE   write a new random shared key to FILE (mode 0600)

Keeps the folder (default ./share) identical with the same folder on each PEER.
PEER is IPv4, IPv4:PORT, [IPv6]:PORT, or a host name (optionally HOST:PORT).

options:
  --dir DIR        folder to sync (default: share; created if missing)
  --port PORT      TCP port to listen on, and of peers given without one (default: 24680)
  --once           sync until every peer agrees, then exit 0 (1 if a peer stays unreachable)
  --timeout SECS   with --once: how long a peer may stay unreachable (default: 30)
  --key-file FILE  shared key: only peers holding the same key get in (recommended)
  --config FILE    read options from FILE (default: /opt/left.conf if present);
                   the command line wins over the file
  --max-pending N  entries to receive from a peer kept in memory (default: 2048),
                   and N x 2 KiB of them for all peers together; the rest wait in
                   files under DIR/.left
  --allow ADDR     also accept connections from ADDR (an IP address, or \"any\");
                   by default only the listed peers' addresses may connect
  -q, --quiet      log errors only
  -v, --verbose    log more
  -h, --help       print this help
  -V, --version    print the version
";

/// A peer as given: host (name or address, IPv6 without brackets) and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAddr {
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub dir: PathBuf,
    pub port: u16,
    pub peers: Vec<PeerAddr>,
    pub once: bool,
    pub timeout: Duration,
    /// 0 quiet, 1 normal, 2 verbose.
    pub verbosity: u8,
    /// Shared key: peers must prove they hold it.
    pub key_file: Option<PathBuf>,
    /// Addresses allowed to connect besides the peers (`any` for all).
    pub allow: Vec<Allow>,
    /// Entries pending from one peer kept in memory.
    pub max_pending: usize,
}

/// Who may connect besides the listed peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allow {
    Any,
    Ip(std::net::IpAddr),
}

pub fn parse_allow(s: &str) -> Result<Allow, String> {
    if s == "any" {
        return Ok(Allow::Any);
    }
    let t = s.trim_start_matches('[').trim_end_matches(']');
    t.parse()
        .map(Allow::Ip)
        .map_err(|_| format!("--allow: {s:?} is not an IP address or \"any\""))
}

#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Run(Options),
    /// `left status [--dir DIR]`: report on the daemon serving DIR.
    Status(PathBuf),
    /// `left keygen FILE`: write a fresh shared key to FILE.
    Keygen(PathBuf),
    Help,
    Version,
}

fn parse_port(s: &str, what: &str) -> Result<u16, String> {
    s.parse::<u16>()
        .map_err(|_| format!("{what}: {s:?} is not a port number (0-65535)"))
}

/// Parses one PEER argument; `port` is used when it names none.
pub fn parse_peer(s: &str, port: u16) -> Result<PeerAddr, String> {
    let bad = |why: &str| Err(format!("bad peer {s:?}: {why}"));
    if s.is_empty() {
        return bad("empty");
    }
    if let Some(rest) = s.strip_prefix('[') {
        let Some((host, tail)) = rest.split_once(']') else {
            return bad("missing ']'");
        };
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return bad("not an IPv6 address inside [...]");
        }
        let port = match tail {
            "" => port,
            t => match t.strip_prefix(':') {
                Some(p) => parse_port(p, s)?,
                None => return bad("expected :PORT after ']'"),
            },
        };
        return Ok(PeerAddr {
            host: host.to_string(),
            port,
        });
    }
    if s.matches(':').count() > 1 {
        // A bare IPv6 address.
        if s.parse::<std::net::Ipv6Addr>().is_err() {
            return bad("not an address (write IPv6 with a port as [ADDR]:PORT)");
        }
        return Ok(PeerAddr {
            host: s.to_string(),
            port,
        });
    }
    let (host, port) = match s.split_once(':') {
        Some((h, p)) => (h, parse_port(p, s)?),
        None => (s, port),
    };
    let valid = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if !valid {
        return bad("not an IPv4 address or host name");
    }
    if host.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && host.parse::<std::net::Ipv4Addr>().is_err()
    {
        return bad("not a valid IPv4 address");
    }
    Ok(PeerAddr {
        host: host.to_string(),
        port,
    })
}

/// Parses the arguments after the program name, with the config file (`--config FILE`, or
/// `/opt/left.conf` when present) underneath: the command line wins.
pub fn parse(args: &[String]) -> Result<Command, String> {
    parse_with(args, crate::config::load)
}

/// The `--config` value among the arguments, if any.
fn config_arg(args: &[String]) -> Result<Option<PathBuf>, String> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--" {
            break;
        }
        if a == "--config" {
            return it
                .next()
                .map(|v| Some(PathBuf::from(v)))
                .ok_or_else(|| "--config needs a value".into());
        }
        if let Some(v) = a.strip_prefix("--config=") {
            return Ok(Some(PathBuf::from(v)));
        }
    }
    Ok(None)
}

/// `left status [--dir DIR] [--config FILE]`: the arguments after `status`.
fn parse_status(args: &[String], cfg: &Config) -> Result<Command, String> {
    let mut dir = cfg.dir.clone().unwrap_or_else(|| PathBuf::from("share"));
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--dir" => dir = PathBuf::from(it.next().ok_or("--dir needs a value")?),
            "--config" => {
                it.next();
            }
            _ if a.starts_with("--dir=") => dir = PathBuf::from(&a[6..]),
            _ if a.starts_with("--config=") => {}
            _ => return Err("usage: left status [--dir DIR] [--config FILE]".into()),
        }
    }
    Ok(Command::Status(dir))
}

/// The peers and allowed addresses in force: the command line's, or else the config file's.
/// Every line of the file is checked even when the command line gives its own.
fn peers_and_allow(
    cfg: &Config,
    peers: &[String],
    allow: Vec<Allow>,
    port: u16,
) -> Result<(Vec<PeerAddr>, Vec<Allow>), String> {
    let mut cfg_peers = Vec::new();
    for (i, p) in cfg.peers.iter().enumerate() {
        cfg_peers.push(parse_peer(p, port).map_err(|e| format!("{}: {e}", cfg.peer_origin(i)))?);
    }
    let mut cfg_allow = Vec::new();
    for (i, a) in cfg.allow.iter().enumerate() {
        cfg_allow.push(parse_allow(a).map_err(|e| format!("{}: {e}", cfg.allow_origin(i)))?);
    }
    let peers = if peers.is_empty() {
        cfg_peers
    } else {
        peers
            .iter()
            .map(|p| parse_peer(p, port))
            .collect::<Result<Vec<_>, _>>()?
    };
    if peers.is_empty() {
        return Err("no peer given".into());
    }
    Ok((peers, if allow.is_empty() { cfg_allow } else { allow }))
}

/// [`parse`] with the config loader given (tests pass their own). Long on purpose: one arm per
/// option, in one match, reads as the usage text does.
pub fn parse_with(
    args: &[String],
    load: impl Fn(&Path, bool) -> Result<Option<Config>, String>,
) -> Result<Command, String> {
    // No config file is read for a key: it concerns no folder.
    if args.first().is_some_and(|a| a == "keygen") {
        return match &args[1..] {
            [f] if !f.starts_with('-') => Ok(Command::Keygen(PathBuf::from(f))),
            _ => Err("usage: left keygen FILE".into()),
        };
    }
    let cfg = match config_arg(args)? {
        Some(p) => load(&p, true)?,
        None => load(Path::new(crate::config::DEFAULT_PATH), false)?,
    }
    .unwrap_or_default();
    if args.first().is_some_and(|a| a == "status") {
        return parse_status(&args[1..], &cfg);
    }
    let mut dir = cfg.dir.clone().unwrap_or_else(|| PathBuf::from("share"));
    let mut port = cfg.port.unwrap_or(DEFAULT_PORT);
    let mut once = cfg.once.unwrap_or(false);
    let mut timeout = Duration::from_secs(cfg.timeout.unwrap_or(30));
    let mut verbosity = cfg.verbosity.unwrap_or(1);
    let mut peers = Vec::new();
    let mut key_file = cfg.key_file.clone();
    let mut max_pending = cfg
        .max_pending
        .unwrap_or(crate::sync::needs::DEFAULT_IN_MEMORY);
    let mut allow = Vec::new();
    let mut it = args.iter();
    let mut only_peers = false;
    while let Some(a) = it.next() {
        if only_peers || !a.starts_with('-') || a == "-" {
            peers.push(a.clone());
            continue;
        }
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (a.as_str(), None),
        };
        let mut value = |name: &str| -> Result<String, String> {
            match inline.clone() {
                Some(v) => Ok(v),
                None => it
                    .next()
                    .cloned()
                    .ok_or_else(|| format!("{name} needs a value")),
            }
        };
        match flag {
            "--" => only_peers = true,
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            "--dir" => {
                let v = value("--dir")?;
                if v.is_empty() {
                    return Err("--dir needs a folder".into());
                }
                dir = PathBuf::from(v);
            }
            "--port" => port = parse_port(&value("--port")?, "--port")?,
            "--once" => once = true,
            "--timeout" => {
                let v = value("--timeout")?;
                let secs: u64 = v
                    .parse()
                    .map_err(|_| format!("--timeout: {v:?} is not a whole number of seconds"))?;
                timeout = Duration::from_secs(secs);
            }
            "--key-file" => key_file = Some(PathBuf::from(value("--key-file")?)),
            "--max-pending" => {
                max_pending =
                    crate::config::parse_pending(&value("--max-pending")?, "--max-pending")?
            }
            "--config" => {
                value("--config")?;
            }
            "--allow" => allow.push(parse_allow(&value("--allow")?)?),
            "-q" | "--quiet" => verbosity = 0,
            "-v" | "--verbose" => verbosity = 2,
            _ => return Err(format!("unknown option {a:?}")),
        }
        if inline.is_some()
            && matches!(
                flag,
                "--once" | "-q" | "--quiet" | "-v" | "--verbose" | "--"
            )
        {
            return Err(format!("{flag} takes no value"));
        }
    }
    let (peers, allow) = peers_and_allow(&cfg, &peers, allow, port)?;
    Ok(Command::Run(Options {
        dir,
        port,
        peers,
        once,
        timeout,
        verbosity,
        key_file,
        allow,
        max_pending,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_config(_: &Path, _: bool) -> Result<Option<Config>, String> {
        Ok(None)
    }

    fn parse(args: &[String]) -> Result<Command, String> {
        parse_with(args, no_config)
    }

    fn run(args: &[&str]) -> Result<Options, String> {
        match parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())? {
            Command::Run(o) => Ok(o),
            c => panic!("{c:?}"),
        }
    }

    #[test]
    fn peers() {
        let p = |s| parse_peer(s, 7);
        assert_eq!(
            p("10.0.0.2").unwrap(),
            PeerAddr {
                host: "10.0.0.2".into(),
                port: 7
            }
        );
        assert_eq!(p("10.0.0.2:99").unwrap().port, 99);
        assert_eq!(
            p("[::1]:99").unwrap(),
            PeerAddr {
                host: "::1".into(),
                port: 99
            }
        );
        assert_eq!(p("[fe80::1]").unwrap().port, 7);
        assert_eq!(p("::1").unwrap().host, "::1");
        assert_eq!(p("box-2.lan").unwrap().host, "box-2.lan");
        assert_eq!(p("box:1").unwrap().port, 1);
        for bad in [
            "",
            "10.0.0.256",
            "1.2.3",
            "a:b",
            "[::1",
            "[zz]:1",
            "[::1]x",
            "host:70000",
            "a..b",
            "-x",
            "a_b",
            ":1",
        ] {
            assert!(p(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn options() {
        let o = run(&[
            "--dir",
            "d",
            "--port=1234",
            "--once",
            "--timeout",
            "5",
            "--max-pending=64",
            "1.2.3.4",
            "h:9",
        ])
        .unwrap();
        assert_eq!(o.dir, PathBuf::from("d"));
        assert_eq!(o.port, 1234);
        assert!(o.once);
        assert_eq!(o.timeout, Duration::from_secs(5));
        assert_eq!(o.max_pending, 64);
        assert_eq!(
            o.peers[0],
            PeerAddr {
                host: "1.2.3.4".into(),
                port: 1234
            }
        );
        assert_eq!(o.peers[1].port, 9);
        let d = run(&["1.2.3.4"]).unwrap();
        assert_eq!(
            (d.dir, d.port, d.once),
            (PathBuf::from("share"), DEFAULT_PORT, false)
        );
    }

    #[test]
    fn config_file_underneath_command_line() {
        let text = "dir = /srv/share\nport = 2000\npeer = 10.0.0.2, 10.0.0.3:7\nallow = any\nlog = verbose\n";
        let load = |p: &Path, required: bool| {
            assert!(required, "explicit --config must be required");
            assert_eq!(p, Path::new("c.conf"));
            crate::config::parse(text, "c.conf").map(Some)
        };
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let Command::Run(o) = parse_with(&args(&["--config", "c.conf"]), load).unwrap() else {
            panic!()
        };
        assert_eq!(o.dir, PathBuf::from("/srv/share"));
        assert_eq!(o.port, 2000);
        assert_eq!(
            o.peers,
            vec![
                PeerAddr {
                    host: "10.0.0.2".into(),
                    port: 2000
                },
                PeerAddr {
                    host: "10.0.0.3".into(),
                    port: 7
                }
            ]
        );
        assert_eq!(o.allow, vec![Allow::Any]);
        assert_eq!(o.verbosity, 2);
        // The command line wins, peers included.
        let Command::Run(o) = parse_with(
            &args(&["--config=c.conf", "--port", "3000", "-q", "h"]),
            load,
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!((o.port, o.verbosity), (3000, 0));
        assert_eq!(
            o.peers,
            vec![PeerAddr {
                host: "h".into(),
                port: 3000
            }]
        );
        assert_eq!(o.dir, PathBuf::from("/srv/share"));
        // A bad peer in the file names the file and line.
        let bad =
            |_: &Path, _: bool| crate::config::parse("\npeer = 10.0.0.999\n", "b.conf").map(Some);
        let e = parse_with(&args(&["--config", "b.conf"]), bad).unwrap_err();
        assert!(e.starts_with("b.conf:2: "), "{e}");
        // Status takes its folder from the file too.
        assert_eq!(
            parse_with(&args(&["status", "--config", "c.conf"]), load).unwrap(),
            Command::Status(PathBuf::from("/srv/share"))
        );
    }

    #[test]
    fn usage_errors() {
        let err =
            |a: &[&str]| parse(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap_err();
        assert!(err(&[]).contains("no peer"));
        assert!(err(&["--port"]).contains("needs a value"));
        assert!(err(&["--port", "x", "h"]).contains("port"));
        assert!(err(&["--bogus", "h"]).contains("unknown option"));
        assert!(err(&["--timeout", "-1", "h"]).contains("--timeout"));
        assert!(err(&["--max-pending", "1", "h"]).contains("2 or more"));
        assert!(err(&["--once=1", "h"]).contains("takes no value"));
        assert_eq!(parse(&["-h".to_string()]).unwrap(), Command::Help);
        let st = |a: &[&str]| parse(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(
            st(&["status"]).unwrap(),
            Command::Status(PathBuf::from("share"))
        );
        assert_eq!(
            st(&["status", "--dir", "x"]).unwrap(),
            Command::Status(PathBuf::from("x"))
        );
        assert!(st(&["status", "--bogus"]).is_err());
        assert_eq!(
            st(&["keygen", "k"]).unwrap(),
            Command::Keygen(PathBuf::from("k"))
        );
        for bad in [&["keygen"][..], &["keygen", "a", "b"], &["keygen", "--dir"]] {
            assert!(st(bad).unwrap_err().contains("usage: left keygen FILE"));
        }
        assert_eq!(
            parse(&["--version".to_string(), "x".to_string()]).unwrap(),
            Command::Version
        );
    }
}
