//! Randomized model-based "chaos" test (issue 17): real `left` daemons on 127.0.0.1, N peers in a
//! mesh or a chain, each link through a TCP proxy that the test cuts and heals (partitions), a
//! seeded schedule of file operations and faults (SIGSTOP/SIGCONT, kill -9 and restart, sleeps),
//! and a model of what each peer can have seen, checked against the final shares.
//!
//! The schedule is made of ROUNDS. A round picks a partition (groups of peers; a link is up when
//! both ends are in the same group; the components are the connected parts of the topology over
//! the links that are up), applies its steps, then continues stopped peers, restarts killed ones
//! and waits until every component has converged (identical trees, stable over two looks 0.5 s
//! apart). After the last round everything is healed, the shares must converge globally, and the
//! invariants are checked (see `final_checks`).
//!
//! Running it:
//!   cargo test --release --test chaos -- --nocapture        (a few seeds)
//!   make chaos SEEDS=200 PEERS=3 TOPO=both                   (hundreds, shrinking failures)
//! Environment: LEFT_CHAOS_SEEDS (how many, default 4), LEFT_CHAOS_JOBS (how many at once,
//! default 2), LEFT_CHAOS_SEED_BASE (first seed),
//! LEFT_CHAOS_PEERS (3), LEFT_CHAOS_TOPO (mesh|chain|both; both alternates by seed),
//! LEFT_CHAOS_SHRINK (1: shrink each distinct failure), LEFT_CHAOS_SHRINK_SECS (time bound per
//! failure, default 600), LEFT_CHAOS_TIMEOUT (convergence timeout in seconds, default 60),
//! LEFT_CHAOS_REPLAY (a file holding a schedule text to replay instead of seeds),
//! LEFT_CHAOS_VERBOSE (1: print every step), LEFT_CHAOS_SKIP (kinds of operations left out while
//! a bug is known: `types,dirchmod`), LEFT_CHAOS_MTIME (1: convergence includes file mtimes).
//!
//! A schedule prints as text (`Schedule::to_text`) and `replay` runs such a text: a failing seed's
//! shrunk schedule becomes a `#[test] fn regression_...()`.
//!
//! What is checked, and where a rule was ambiguous, the conservative reading taken:
//! - Every daemon alive at every step and no "panicked" in any log (`died`).
//! - Convergence: names, types, contents, permission modes; a timeout is a failure
//!   (`convergence-type|mode|missing|content`). Not mtimes (`left` makes no version of an
//!   mtime-only change; LEFT_CHAOS_MTIME=1 adds them). Temp files are ignored at round ends (a
//!   transfer cut by a partition keeps its temp file to resume) and must be gone at the end
//!   (`temp-file`); then every peer's `left status` must say in sync, nothing to receive
//!   (`not-quiet`).
//! - Knowledge. Every written file starts with a token line; writes are events (path, token,
//!   peer). What a peer had CERTAINLY seen when it acted (lower bound): its own events, plus all
//!   events of its component when a round ended converged. What it MAY have seen (upper bound):
//!   also everything done or known in its component during the current round. A rename is a
//!   removal at the source plus writes at the target of the tokens read back there; chmod is a
//!   new version of the same token; a touch is not taken as an edit (no version in `left`); a
//!   write the daemon replaced at the same moment (token not read back) is "weak": never
//!   required, always allowed.
//! - `lost-write`: an event no peer that MAY have seen it replaced or removed (nor removed a
//!   folder above it) must have its token somewhere in the final share. Anywhere, not only at
//!   its path or its conflict copies: a type conflict may keep it under a renamed folder. A
//!   conflict copy present when a round ended converged counts as such an event from then on.
//! - `resurrection`: the content at a path (not a conflict copy) must come from an event there
//!   that no peer CERTAINLY knowing it replaced or removed afterwards; `phantom`: from an
//!   event there at all.
//! - `conflict-token`: a conflict copy holds a token written at its base path;
//!   `dup-conflict`: no two copies hold one content, counted only for content written once and
//!   never re-asserted (two versions of one content, e.g. chmod on two sides, may each lose a
//!   conflict and each get a copy).

mod common;

use common::proxy::Proxy;
use common::*;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, UNIX_EPOCH};

// ---------------------------------------------------------------------------------------------
// The namespace: few names, so that peers collide on them often.

const FILES: &[&str] = &["a", "b.txt", "c", "d/x", "d/y.txt", "d/e/z", "f/w", "f/g/v"];
const DIRS: &[&str] = &["d", "d/e", "f", "f/g"];
/// Old mtimes for `touch -d`; few of them, so that two losing versions of one device can share a
/// conflict copy's name.
const OLD_TIMES: &[i64] = &[978_307_200, 1_262_304_000, 1_500_000_000];
const FILE_MODES: &[u32] = &[0o644, 0o600, 0o640, 0o755, 0o444];
const DIR_MODES: &[u32] = &[0o755, 0o700, 0o750, 0o775];
/// Every written file starts with a token line of this many bytes (`#ID` + peer, padded, `\n`).
const TOKEN_LEN: usize = 32;

// ---------------------------------------------------------------------------------------------
// Schedules

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Topo {
    Mesh,
    Chain,
}

#[derive(Clone, Debug, PartialEq)]
enum Op {
    /// Create or overwrite whole (in place, or written beside and renamed in with `via_rename`);
    /// a folder at the path is removed first (folder -> file).
    Write {
        p: usize,
        path: String,
        size: u64,
        via_rename: bool,
    },
    /// New token at offset 0 and `len` random bytes at `at` per mille of the file, in place.
    Partial {
        p: usize,
        path: String,
        at: u64,
        len: u64,
    },
    Append {
        p: usize,
        path: String,
        len: u64,
    },
    Truncate {
        p: usize,
        path: String,
        permille: u64,
    },
    /// rm a file, rm -r a folder.
    Delete {
        p: usize,
        path: String,
    },
    /// A file or a folder.
    Rename {
        p: usize,
        from: String,
        to: String,
    },
    /// mkdir -p; a file at the path is removed first (file -> folder).
    Mkdir {
        p: usize,
        path: String,
    },
    Chmod {
        p: usize,
        path: String,
        mode: u32,
    },
    /// Sets a file's mtime (like touch -d).
    Touch {
        p: usize,
        path: String,
        secs: i64,
    },
    Stop(usize),
    Cont(usize),
    Kill(usize),
    Restart(usize),
    Sleep(u64),
}

#[derive(Clone, Debug)]
struct Step {
    id: u32,
    op: Op,
}

#[derive(Clone, Debug)]
struct Round {
    /// The group of each peer.
    groups: Vec<usize>,
    steps: Vec<Step>,
}

#[derive(Clone, Debug)]
struct Schedule {
    peers: usize,
    topo: Topo,
    /// Kinds of operations left out (see `env_skip`).
    skip: Vec<String>,
    rounds: Vec<Round>,
}

fn letter(p: usize) -> char {
    (b'A' + p as u8) as char
}

impl Op {
    fn text(&self) -> String {
        let l = letter;
        match self {
            Op::Write {
                p,
                path,
                size,
                via_rename,
            } => format!(
                "{} {} {path} {size}",
                if *via_rename { "put" } else { "write" },
                l(*p)
            ),
            Op::Partial { p, path, at, len } => format!("partial {} {path} {at} {len}", l(*p)),
            Op::Append { p, path, len } => format!("append {} {path} {len}", l(*p)),
            Op::Truncate { p, path, permille } => {
                format!("truncate {} {path} {permille}", l(*p))
            }
            Op::Delete { p, path } => format!("delete {} {path}", l(*p)),
            Op::Rename { p, from, to } => format!("rename {} {from} {to}", l(*p)),
            Op::Mkdir { p, path } => format!("mkdir {} {path}", l(*p)),
            Op::Chmod { p, path, mode } => format!("chmod {} {path} {mode:o}", l(*p)),
            Op::Touch { p, path, secs } => format!("touch {} {path} {secs}", l(*p)),
            Op::Stop(p) => format!("stop {}", l(*p)),
            Op::Cont(p) => format!("cont {}", l(*p)),
            Op::Kill(p) => format!("kill {}", l(*p)),
            Op::Restart(p) => format!("restart {}", l(*p)),
            Op::Sleep(ms) => format!("sleep {ms}"),
        }
    }
}

fn groups_text(groups: &[usize]) -> String {
    let mut order: Vec<usize> = Vec::new();
    for &g in groups {
        if !order.contains(&g) {
            order.push(g);
        }
    }
    order
        .iter()
        .map(|g| {
            (0..groups.len())
                .filter(|&p| groups[p] == *g)
                .map(letter)
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("|")
}

impl Schedule {
    /// One line per round and per step: `peers=3 topo=chain`, `round AB|C`, `17 write A d/x 1300`.
    fn to_text(&self) -> String {
        let mut s = format!(
            "peers={} topo={}",
            self.peers,
            if self.topo == Topo::Mesh {
                "mesh"
            } else {
                "chain"
            }
        );
        if !self.skip.is_empty() {
            s += &format!(" skip={}", self.skip.join(","));
        }
        s += "\n";
        for r in &self.rounds {
            s += &format!("round {}\n", groups_text(&r.groups));
            for st in &r.steps {
                s += &format!("{} {}\n", st.id, st.op.text());
            }
        }
        s
    }

    /// Parses `to_text`'s form; lines may also be separated by `;`.
    fn parse(text: &str) -> Result<Schedule, String> {
        let mut peers = 0;
        let mut topo = Topo::Mesh;
        let mut skip: Vec<String> = Vec::new();
        let mut rounds: Vec<Round> = Vec::new();
        for line in text.split(['\n', ';']) {
            let line = line.trim();
            if line.is_empty() || line.starts_with("//") {
                continue;
            }
            let w: Vec<&str> = line.split_whitespace().collect();
            let bad = || format!("bad schedule line: {line:?}");
            if w[0].starts_with("peers=") {
                for kv in &w {
                    match kv.split_once('=') {
                        Some(("peers", n)) => peers = n.parse().map_err(|_| bad())?,
                        Some(("topo", "mesh")) => topo = Topo::Mesh,
                        Some(("topo", "chain")) => topo = Topo::Chain,
                        Some(("skip", list)) => {
                            skip = list.split(',').map(|x| x.to_string()).collect()
                        }
                        _ => return Err(bad()),
                    }
                }
                continue;
            }
            if w[0] == "round" {
                let mut groups = vec![usize::MAX; peers];
                for (g, part) in w.get(1).ok_or_else(bad)?.split('|').enumerate() {
                    for c in part.chars() {
                        let p = (c as u8).wrapping_sub(b'A') as usize;
                        *groups.get_mut(p).ok_or_else(bad)? = g;
                    }
                }
                if groups.contains(&usize::MAX) {
                    return Err(bad());
                }
                rounds.push(Round {
                    groups,
                    steps: Vec::new(),
                });
                continue;
            }
            let id: u32 = w[0].parse().map_err(|_| bad())?;
            let peer = |i: usize| -> Result<usize, String> {
                let c = w.get(i).ok_or_else(bad)?;
                let p = (c.as_bytes()[0]).wrapping_sub(b'A') as usize;
                if c.len() != 1 || p >= peers {
                    return Err(bad());
                }
                Ok(p)
            };
            let s = |i: usize| -> Result<String, String> {
                w.get(i).map(|x| x.to_string()).ok_or_else(bad)
            };
            let n = |i: usize| -> Result<u64, String> {
                w.get(i).ok_or_else(bad)?.parse().map_err(|_| bad())
            };
            let op = match *w.get(1).ok_or_else(bad)? {
                "write" | "put" => Op::Write {
                    p: peer(2)?,
                    path: s(3)?,
                    size: n(4)?,
                    via_rename: w[1] == "put",
                },
                "partial" => Op::Partial {
                    p: peer(2)?,
                    path: s(3)?,
                    at: n(4)?,
                    len: n(5)?,
                },
                "append" => Op::Append {
                    p: peer(2)?,
                    path: s(3)?,
                    len: n(4)?,
                },
                "truncate" => Op::Truncate {
                    p: peer(2)?,
                    path: s(3)?,
                    permille: n(4)?,
                },
                "delete" => Op::Delete {
                    p: peer(2)?,
                    path: s(3)?,
                },
                "rename" => Op::Rename {
                    p: peer(2)?,
                    from: s(3)?,
                    to: s(4)?,
                },
                "mkdir" => Op::Mkdir {
                    p: peer(2)?,
                    path: s(3)?,
                },
                "chmod" => Op::Chmod {
                    p: peer(2)?,
                    path: s(3)?,
                    mode: u32::from_str_radix(&s(4)?, 8).map_err(|_| bad())?,
                },
                "touch" => Op::Touch {
                    p: peer(2)?,
                    path: s(3)?,
                    secs: s(4)?.parse().map_err(|_| bad())?,
                },
                "stop" => Op::Stop(peer(2)?),
                "cont" => Op::Cont(peer(2)?),
                "kill" => Op::Kill(peer(2)?),
                "restart" => Op::Restart(peer(2)?),
                "sleep" => Op::Sleep(n(2)?),
                _ => return Err(bad()),
            };
            rounds
                .last_mut()
                .ok_or("a step before the first round")?
                .steps
                .push(Step { id, op });
        }
        if peers < 2 {
            return Err("no peers=N line".into());
        }
        Ok(Schedule {
            peers,
            topo,
            skip,
            rounds,
        })
    }

    fn steps(&self) -> usize {
        self.rounds.iter().map(|r| r.steps.len()).sum()
    }
}

fn below(rng: &mut Rng, n: u64) -> u64 {
    rng.next_u64() % n
}

fn pick<'a>(rng: &mut Rng, v: &[&'a str]) -> &'a str {
    v[below(rng, v.len() as u64) as usize]
}

fn any_path(rng: &mut Rng) -> String {
    if below(rng, 3) == 0 {
        pick(rng, DIRS).to_string()
    } else {
        pick(rng, FILES).to_string()
    }
}

fn file_size(rng: &mut Rng) -> u64 {
    match below(rng, 100) {
        0..5 => 0,
        5..45 => TOKEN_LEN as u64 + below(rng, 1000),
        45..70 => 1000 + below(rng, 63_000),
        70..90 => 64_000 + below(rng, 340_000),
        _ => (1 << 20) + below(rng, 2 << 20),
    }
}

/// The schedule of a seed: 4-6 rounds of 8-17 steps (more with 5 peers).
fn generate(seed: u64, peers: usize, topo: Topo) -> Schedule {
    let mut rng = Rng::new(seed);
    let mut id = 0u32;
    let n_rounds = 4 + below(&mut rng, 3) as usize;
    let mut rounds = Vec::new();
    for _ in 0..n_rounds {
        let groups: Vec<usize> = if below(&mut rng, 100) < 35 {
            vec![0; peers]
        } else {
            let k = if below(&mut rng, 100) < 70 { 2 } else { 3 };
            (0..peers).map(|_| below(&mut rng, k) as usize).collect()
        };
        // Faults are generated against what the harness does, so that most of them apply.
        let mut stopped = vec![false; peers];
        let mut killed = vec![false; peers];
        let n_steps = 6 + below(&mut rng, 10) as usize + if peers > 3 { 4 } else { 0 };
        // The first steps of a round write files (more in the first round), so that the other
        // operations find something to work on.
        let writes_first = if rounds.is_empty() { 2 * peers } else { 2 };
        let mut steps = Vec::new();
        for k in 0..n_steps + writes_first {
            id += 1;
            let p = below(&mut rng, peers as u64) as usize;
            let dice = if k < writes_first {
                0
            } else {
                below(&mut rng, 100)
            };
            // Now and then a pattern that random steps rarely line up: a big file written, a
            // peer frozen while it pulls it, the file replaced under it (deleted, made a folder,
            // written again), the peer thawed; or a write and a touch to an old time (two losing
            // versions of one device with one mtime give one conflict copy name).
            if k >= writes_first && below(&mut rng, 100) < 7 {
                let x = pick(&mut rng, FILES).to_string();
                let q = (p + 1 + below(&mut rng, peers as u64 - 1) as usize) % peers;
                let mut pattern = Vec::new();
                if below(&mut rng, 3) > 0 && !stopped[q] && !killed[q] {
                    pattern.push(Op::Write {
                        p,
                        path: x.clone(),
                        size: (1 << 20) + below(&mut rng, 2 << 20),
                        via_rename: below(&mut rng, 2) == 0,
                    });
                    pattern.push(Op::Sleep(2 + below(&mut rng, 40)));
                    pattern.push(Op::Stop(q));
                    pattern.push(match below(&mut rng, 3) {
                        0 => Op::Delete { p, path: x.clone() },
                        1 => Op::Mkdir { p, path: x.clone() },
                        _ => Op::Write {
                            p,
                            path: x.clone(),
                            size: file_size(&mut rng),
                            via_rename: false,
                        },
                    });
                    pattern.push(Op::Sleep(100 + below(&mut rng, 500)));
                    pattern.push(Op::Cont(q));
                } else {
                    pattern.push(Op::Write {
                        p,
                        path: x.clone(),
                        size: file_size(&mut rng),
                        via_rename: false,
                    });
                    pattern.push(Op::Touch {
                        p,
                        path: x,
                        secs: OLD_TIMES[0],
                    });
                }
                for (i, op) in pattern.into_iter().enumerate() {
                    if i > 0 {
                        id += 1;
                    }
                    steps.push(Step { id, op });
                }
                continue;
            }
            let op = match dice {
                0..22 => {
                    let path = if below(&mut rng, 100) < 85 {
                        pick(&mut rng, FILES).to_string()
                    } else {
                        pick(&mut rng, DIRS).to_string()
                    };
                    Op::Write {
                        p,
                        path,
                        size: file_size(&mut rng),
                        via_rename: below(&mut rng, 100) < 30,
                    }
                }
                22..28 => Op::Partial {
                    p,
                    path: pick(&mut rng, FILES).to_string(),
                    at: below(&mut rng, 1001),
                    len: if below(&mut rng, 4) == 0 {
                        70_000 + below(&mut rng, 70_000)
                    } else {
                        1 + below(&mut rng, 5000)
                    },
                },
                28..34 => Op::Append {
                    p,
                    path: pick(&mut rng, FILES).to_string(),
                    len: if below(&mut rng, 4) == 0 {
                        100_000
                    } else {
                        1 + below(&mut rng, 20_000)
                    },
                },
                34..38 => Op::Truncate {
                    p,
                    path: pick(&mut rng, FILES).to_string(),
                    permille: below(&mut rng, 1000),
                },
                38..48 => Op::Delete {
                    p,
                    path: any_path(&mut rng),
                },
                48..56 => Op::Rename {
                    p,
                    from: any_path(&mut rng),
                    to: any_path(&mut rng),
                },
                56..62 => Op::Mkdir {
                    p,
                    path: if below(&mut rng, 100) < 70 {
                        pick(&mut rng, DIRS).to_string()
                    } else {
                        pick(&mut rng, FILES).to_string()
                    },
                },
                62..69 => {
                    let path = any_path(&mut rng);
                    let modes = if DIRS.contains(&path.as_str()) {
                        DIR_MODES
                    } else {
                        FILE_MODES
                    };
                    Op::Chmod {
                        p,
                        path,
                        mode: modes[below(&mut rng, modes.len() as u64) as usize],
                    }
                }
                69..73 => Op::Touch {
                    p,
                    path: pick(&mut rng, FILES).to_string(),
                    secs: OLD_TIMES[below(&mut rng, OLD_TIMES.len() as u64) as usize],
                },
                73..76 if !stopped[p] && !killed[p] => {
                    stopped[p] = true;
                    Op::Stop(p)
                }
                76..78 if stopped[p] => {
                    stopped[p] = false;
                    Op::Cont(p)
                }
                78..81 if !killed[p] => {
                    killed[p] = true;
                    stopped[p] = false;
                    Op::Kill(p)
                }
                81..84 if killed[p] => {
                    killed[p] = false;
                    Op::Restart(p)
                }
                _ => Op::Sleep(match below(&mut rng, 100) {
                    0..35 => below(&mut rng, 6),
                    35..75 => 20 + below(&mut rng, 280),
                    _ => 500 + below(&mut rng, 1500),
                }),
            };
            steps.push(Step { id, op });
        }
        rounds.push(Round { groups, steps });
    }
    Schedule {
        peers,
        topo,
        skip: env_skip(),
        rounds,
    }
}

// ---------------------------------------------------------------------------------------------
// Snapshots of shares

#[derive(Clone, PartialEq, Eq)]
enum Node {
    Dir {
        mode: u32,
    },
    File {
        mode: u32,
        mtime: i64,
        data: Vec<u8>,
    },
}

impl Node {
    fn describe(&self) -> String {
        match self {
            Node::Dir { mode } => format!("folder {mode:o}"),
            Node::File { mode, mtime, data } => format!(
                "file {mode:o} mtime {mtime} {} bytes token {}",
                data.len(),
                token_of(data).unwrap_or_else(|| "-".into())
            ),
        }
    }
}

struct Snap {
    nodes: BTreeMap<String, Node>,
    temps: Vec<String>,
}

/// The token a file's content starts with, if any.
fn token_of(data: &[u8]) -> Option<String> {
    if data.len() < TOKEN_LEN || data[0] != b'#' || data[TOKEN_LEN - 1] != b'\n' {
        return None;
    }
    let s = std::str::from_utf8(&data[..TOKEN_LEN - 1]).ok()?;
    Some(s.trim_end_matches('.').to_string())
}

fn token_line(tok: &str) -> Vec<u8> {
    let mut v = format!("{tok:.<31}").into_bytes();
    v.truncate(TOKEN_LEN - 1);
    v.push(b'\n');
    v
}

fn read_token(path: &Path) -> Option<String> {
    let mut f = fs::File::open(path).ok()?;
    let mut b = [0u8; TOKEN_LEN];
    f.read_exact(&mut b).ok()?;
    token_of(&b)
}

fn snapshot(root: &Path) -> io::Result<Snap> {
    let mut snap = Snap {
        nodes: BTreeMap::new(),
        temps: Vec::new(),
    };
    let mut stack = vec![String::new()];
    while let Some(rel) = stack.pop() {
        for ent in fs::read_dir(root.join(&rel))? {
            let ent = ent?;
            let name = ent.file_name().to_string_lossy().into_owned();
            if rel.is_empty() && name == ".left" {
                continue;
            }
            let path = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            if is_temp(&name) {
                snap.temps.push(path);
                continue;
            }
            let md = fs::symlink_metadata(ent.path())?;
            let mode = md.permissions().mode() & 0o7777;
            if md.is_dir() {
                snap.nodes.insert(path.clone(), Node::Dir { mode });
                stack.push(path);
            } else {
                let data = fs::read(ent.path())?;
                snap.nodes.insert(
                    path,
                    Node::File {
                        mode,
                        mtime: if compare_mtimes() { md.mtime() } else { 0 },
                        data,
                    },
                );
            }
        }
    }
    Ok(snap)
}

/// Kinds of operations the harness leaves out, to look for other bugs while one is known:
/// LEFT_CHAOS_SKIP=types,dirchmod (or `skip=types,dirchmod` in a schedule's first line).
/// `types`: a name in FILES stays a file and one in DIRS a folder (no file<->folder changes);
/// `dirchmod`: no chmod of folders.
fn env_skip() -> Vec<String> {
    std::env::var("LEFT_CHAOS_SKIP")
        .unwrap_or_default()
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Whether convergence includes file mtimes (LEFT_CHAOS_MTIME=1). Off by default: the brief's
/// convergence is names, types, contents and modes, and `left` does not propagate a change of
/// mtime alone (`touch -d`: same content, no new version), so shares may keep different mtimes.
fn compare_mtimes() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| env_u64("LEFT_CHAOS_MTIME", 0) == 1)
}

/// The differences between two snapshots, and their class for the failure's kind: `type` (a
/// file against a folder), else `mode` (same content, other mode), else `missing`, else
/// `content`.
fn snap_diff(a: &Snap, an: &str, b: &Snap, bn: &str) -> Option<(&'static str, String)> {
    let keys: std::collections::BTreeSet<&String> = a.nodes.keys().chain(b.nodes.keys()).collect();
    let mut out = Vec::new();
    let mut classes = Vec::new();
    for k in keys {
        let (x, y) = (a.nodes.get(k), b.nodes.get(k));
        if x != y {
            let d = |n: Option<&Node>| n.map_or("missing".to_string(), |n| n.describe());
            out.push(format!("{k}: {an} {} / {bn} {}", d(x), d(y)));
            classes.push(match (x, y) {
                (None, _) | (_, None) => "missing",
                (Some(Node::Dir { .. }), Some(Node::File { .. }))
                | (Some(Node::File { .. }), Some(Node::Dir { .. })) => "type",
                (Some(Node::Dir { .. }), Some(Node::Dir { .. })) => "mode",
                (Some(Node::File { data: p, .. }), Some(Node::File { data: q, .. })) => {
                    if p == q {
                        "mode"
                    } else {
                        "content"
                    }
                }
            });
        }
    }
    if out.is_empty() {
        return None;
    }
    let class = ["type", "mode", "missing", "content"]
        .into_iter()
        .find(|c| classes.contains(c))
        .unwrap();
    let n = out.len();
    out.truncate(6);
    Some((class, format!("{n} differences: {}", out.join("; "))))
}

/// `x.sync-conflict-YYYYMMDD-HHMMSS-DEVICE.ext` -> `x.ext` (repeatedly); None if not a copy.
fn conflict_base(path: &str) -> Option<String> {
    const TAG: &str = ".sync-conflict-";
    let mut cur = path.to_string();
    let mut found = false;
    while let Some(i) = cur.rfind(TAG) {
        let rest = &cur[i + TAG.len()..];
        // YYYYMMDD-HHMMSS-DEVICE (7 hex digits)
        if rest.len() < 8 + 1 + 6 + 1 + 7 {
            break;
        }
        let (stamp, tail) = rest.split_at(23);
        let b = stamp.as_bytes();
        let ok = b[..8].iter().all(u8::is_ascii_digit)
            && b[8] == b'-'
            && b[9..15].iter().all(u8::is_ascii_digit)
            && b[15] == b'-'
            && b[16..].iter().all(u8::is_ascii_hexdigit);
        if !ok {
            break;
        }
        cur = format!("{}{tail}", &cur[..i]);
        found = true;
    }
    found.then_some(cur)
}

// ---------------------------------------------------------------------------------------------
// The model: what each peer can have seen.

/// A write: content with `token` put at `path` by `peer` (or re-asserted by chmod/touch, or moved
/// there by a rename).
#[derive(Debug)]
struct Ev {
    id: u32,
    path: String,
    token: String,
    peer: usize,
    round: usize,
    /// The harness could not be sure the write took effect (the daemon replaced the file at the
    /// same moment): never required to survive, still allowed to be seen.
    weak: bool,
    /// A later op on the path by a peer that COULD have seen this write (upper bound).
    sup_ub: bool,
    /// A later op on the path by a peer that CERTAINLY had seen it (lower bound).
    sup_lb: bool,
}

struct Model {
    ev: Vec<Ev>,
    round: usize,
    /// Effective component of each peer in the current round.
    comp: Vec<usize>,
    /// Events certainly known by each peer when the round started.
    lb_start: Vec<HashSet<usize>>,
    /// Events possibly known by each peer when the round started.
    ub_start: Vec<HashSet<usize>>,
}

impl Model {
    fn new(n: usize) -> Model {
        Model {
            ev: Vec::new(),
            round: 0,
            comp: vec![0; n],
            lb_start: vec![HashSet::new(); n],
            ub_start: vec![HashSet::new(); n],
        }
    }

    /// Lower bound: the peer's own writes, plus all writes known in its component when a round
    /// ended converged.
    fn lb(&self, p: usize, e: usize) -> bool {
        let ev = &self.ev[e];
        (ev.round == self.round && ev.peer == p) || self.lb_start[p].contains(&e)
    }

    /// Upper bound: also whatever anyone in its component did or knew during this round.
    fn ub(&self, p: usize, e: usize) -> bool {
        let ev = &self.ev[e];
        let c = self.comp[p];
        (ev.round == self.round && self.comp[ev.peer] == c)
            || (0..self.comp.len()).any(|q| self.comp[q] == c && self.ub_start[q].contains(&e))
    }

    /// Peer `p` replaced or removed what was at `path` (and under it with `subtree`). `certain`:
    /// the harness knows the op took effect on what the peer held.
    fn supersede(&mut self, p: usize, path: &str, subtree: bool, certain: bool) {
        let prefix = format!("{path}/");
        for e in 0..self.ev.len() {
            let hit = self.ev[e].path == path || (subtree && self.ev[e].path.starts_with(&prefix));
            if !hit {
                continue;
            }
            if self.ub(p, e) {
                self.ev[e].sup_ub = true;
            }
            if certain && self.lb(p, e) {
                self.ev[e].sup_lb = true;
            }
        }
    }

    fn write(&mut self, id: u32, p: usize, path: &str, token: &str, weak: bool) {
        self.ev.push(Ev {
            id,
            path: path.to_string(),
            token: token.to_string(),
            peer: p,
            round: self.round,
            weak,
            sup_ub: false,
            sup_lb: false,
        });
    }

    /// The round ended with every component converged: each peer knows what its component knew.
    fn end_round(&mut self, comps: &[Vec<usize>]) {
        let n = self.comp.len();
        let mut lb = vec![HashSet::new(); n];
        let mut ub = vec![HashSet::new(); n];
        for c in comps {
            let mut l: HashSet<usize> = HashSet::new();
            let mut u: HashSet<usize> = HashSet::new();
            for &q in c {
                l.extend(&self.lb_start[q]);
                u.extend(&self.ub_start[q]);
            }
            for (e, ev) in self.ev.iter().enumerate() {
                if ev.round == self.round && c.contains(&ev.peer) {
                    l.insert(e);
                    u.insert(e);
                }
            }
            for &q in c {
                lb[q] = l.clone();
                ub[q] = u.clone();
            }
        }
        self.lb_start = lb;
        self.ub_start = ub;
        self.round += 1;
    }
}

// ---------------------------------------------------------------------------------------------
// The world: peers, proxies, and the harness applying steps.

#[derive(Debug, Clone)]
struct Failure {
    kind: String,
    detail: String,
}

fn fail(kind: &str, detail: impl Into<String>) -> Failure {
    Failure {
        kind: kind.to_string(),
        detail: detail.into(),
    }
}

#[derive(PartialEq, Eq, Clone, Copy, Debug)]
enum Kind {
    Missing,
    File,
    Dir,
}

struct World {
    t: TestDir,
    n: usize,
    names: Vec<String>,
    ports: Vec<u16>,
    /// The proxy ports each peer is given as its peers.
    dial: Vec<Vec<u16>>,
    links: Vec<(usize, usize, Proxy, Proxy)>,
    procs: Vec<Option<Peer>>,
    stopped: Vec<bool>,
    /// Every log of each peer (one per start).
    logs: Vec<Vec<PathBuf>>,
    m: Model,
    nonce: u64,
    verbose: bool,
    trace: Vec<String>,
    timeout: Duration,
    skip: Vec<String>,
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

impl World {
    fn new(s: &Schedule, nonce: u64) -> Result<World, Failure> {
        let t = TestDir::new("chaos");
        let n = s.peers;
        let names: Vec<String> = (0..n).map(|p| letter(p).to_string()).collect();
        let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let edges: Vec<(usize, usize)> = match s.topo {
            Topo::Mesh => (0..n)
                .flat_map(|i| (i + 1..n).map(move |j| (i, j)))
                .collect(),
            Topo::Chain => (0..n - 1).map(|i| (i, i + 1)).collect(),
        };
        let mut dial = vec![Vec::new(); n];
        let mut links = Vec::new();
        for (i, j) in edges {
            let pij = Proxy::start(0, ports[j]);
            let pji = Proxy::start(0, ports[i]);
            dial[i].push(pij.port);
            dial[j].push(pji.port);
            links.push((i, j, pij, pji));
        }
        let mut w = World {
            t,
            n,
            names,
            ports,
            dial,
            links,
            procs: (0..n).map(|_| None).collect(),
            stopped: vec![false; n],
            logs: vec![Vec::new(); n],
            m: Model::new(n),
            nonce,
            verbose: env_u64("LEFT_CHAOS_VERBOSE", 0) == 1,
            trace: Vec::new(),
            timeout: Duration::from_secs(env_u64("LEFT_CHAOS_TIMEOUT", 60)),
            skip: s.skip.iter().cloned().chain(env_skip()).collect(),
        };
        for p in 0..n {
            fs::create_dir_all(w.root(p)).unwrap();
            fs::create_dir_all(w.stage(p)).unwrap();
        }
        for p in 0..n {
            w.start(p)?;
        }
        Ok(w)
    }

    fn root(&self, p: usize) -> PathBuf {
        self.t.join(&self.names[p])
    }

    fn stage(&self, p: usize) -> PathBuf {
        self.t.join(&format!("stage-{}", self.names[p]))
    }

    fn start(&mut self, p: usize) -> Result<(), Failure> {
        let (t, name, port, dial) = (&self.t, &self.names[p], self.ports[p], &self.dial[p]);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Peer::start_own_group(t, name, port, dial)
        }));
        match r {
            Ok(peer) => {
                self.logs[p].push(peer.log.clone());
                self.procs[p] = Some(peer);
                self.stopped[p] = false;
                Ok(())
            }
            Err(e) => {
                // A port found free by `free_port` can be taken before the daemon binds it
                // (an outgoing connection of any process on the machine gets one of those
                // ports): not `left`'s doing, and World::new tries other ports.
                let why = e
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| e.downcast_ref::<&str>().copied())
                    .unwrap_or("");
                let kind = if why.contains("Address already in use") {
                    "start-port-taken"
                } else {
                    "start"
                };
                Err(fail(kind, format!("{name} did not start (see above)")))
            }
        }
    }

    fn note(&mut self, s: String) {
        if self.verbose {
            println!("  {s}");
        }
        self.trace.push(s);
    }

    fn kind(&self, p: usize, rel: &str) -> Kind {
        match fs::symlink_metadata(self.root(p).join(rel)) {
            Ok(m) if m.is_dir() => Kind::Dir,
            Ok(_) => Kind::File,
            Err(_) => Kind::Missing,
        }
    }

    fn token(&self, id: u32, p: usize) -> String {
        format!("#{id}{}", letter(p))
    }

    fn content(&self, id: u32, p: usize, size: u64) -> (Option<String>, Vec<u8>) {
        if size == 0 {
            return (None, Vec::new());
        }
        let size = (size as usize).max(TOKEN_LEN);
        let tok = self.token(id, p);
        let mut v = token_line(&tok);
        let mut rng = Rng::new(self.nonce ^ ((id as u64) << 8) ^ p as u64);
        v.extend_from_slice(&rng.bytes(size - TOKEN_LEN));
        (Some(tok), v)
    }

    /// Makes every ancestor of `rel` a folder (a file in the way is removed: file -> folder).
    fn ensure_parents(&mut self, p: usize, rel: &str) -> io::Result<()> {
        let parts: Vec<&str> = rel.split('/').collect();
        for i in 1..parts.len() {
            let a = parts[..i].join("/");
            let abs = self.root(p).join(&a);
            match self.kind(p, &a) {
                Kind::Dir => {}
                Kind::File => {
                    fs::remove_file(&abs)?;
                    self.m.supersede(p, &a, false, true);
                    mkdir_one(&abs)?;
                }
                Kind::Missing => mkdir_one(&abs)?,
            }
        }
        Ok(())
    }

    /// Removes a folder and what it holds; true if it is gone.
    fn rm_rf(abs: &Path) -> bool {
        for _ in 0..5 {
            if fs::remove_dir_all(abs).is_ok() || fs::symlink_metadata(abs).is_err() {
                return true;
            }
        }
        false
    }

    /// Records the write of `tok` at `rel` by `p` after checking that the file still starts with
    /// it (otherwise the daemon replaced it at the same moment: a weak write).
    fn wrote(&mut self, id: u32, p: usize, rel: &str, tok: &str) -> bool {
        let now = read_token(&self.root(p).join(rel));
        let weak = now.as_deref() != Some(tok);
        self.m.supersede(p, rel, false, !weak);
        self.m.write(id, p, rel, tok, weak);
        weak
    }

    fn apply(&mut self, st: &Step) -> Result<(), Failure> {
        let r = self.apply_op(st);
        let res = match r {
            Ok(s) => s,
            Err(e) => format!("error: {e}"),
        };
        let line = format!("r{} #{} {}: {res}", self.m.round, st.id, st.op.text());
        self.note(line);
        self.check_alive()
    }

    fn apply_op(&mut self, st: &Step) -> io::Result<String> {
        let id = st.id;
        if self.skip.iter().any(|s| s == "types") {
            let (f, d) = (|x: &str| FILES.contains(&x), |x: &str| DIRS.contains(&x));
            let skip = match &st.op {
                Op::Write { path, .. } => d(path),
                Op::Mkdir { path, .. } => f(path),
                Op::Rename { from, to, .. } => !((f(from) && f(to)) || (d(from) && d(to))),
                _ => false,
            };
            if skip {
                return Ok("skipped: no type changes".into());
            }
        }
        match &st.op {
            Op::Write {
                p,
                path,
                size,
                via_rename,
            } => {
                let p = *p;
                let abs = self.root(p).join(path);
                let mut what = String::new();
                if self.kind(p, path) == Kind::Dir {
                    let ok = World::rm_rf(&abs);
                    self.m.supersede(p, path, true, ok);
                    what += "folder->file; ";
                    if !ok {
                        return Ok(what + "rm -r failed");
                    }
                }
                self.ensure_parents(p, path)?;
                let (tok, data) = self.content(id, p, *size);
                if *via_rename {
                    let tmp = self.stage(p).join("f");
                    fs::write(&tmp, &data)?;
                    fs::rename(&tmp, &abs)?;
                } else {
                    fs::write(&abs, &data)?;
                }
                match tok {
                    Some(tok) => {
                        let weak = self.wrote(id, p, path, &tok);
                        Ok(format!("{what}{tok}{}", if weak { " (weak)" } else { "" }))
                    }
                    None => {
                        let empty = fs::metadata(&abs).is_ok_and(|m| m.len() == 0);
                        self.m.supersede(p, path, false, empty);
                        Ok(what + "empty")
                    }
                }
            }
            Op::Partial { p, path, at, len } => {
                let p = *p;
                let abs = self.root(p).join(path);
                if self.kind(p, path) != Kind::File {
                    return Ok("skipped: no file".into());
                }
                let size = fs::metadata(&abs)?.len();
                if size < TOKEN_LEN as u64 {
                    return Ok("skipped: too short".into());
                }
                let tok = self.token(id, p);
                let mut f = OpenOptions::new().write(true).open(&abs)?;
                f.write_all(&token_line(&tok))?;
                let off = TOKEN_LEN as u64 + (size - TOKEN_LEN as u64) * at / 1000;
                f.seek(SeekFrom::Start(off))?;
                f.write_all(&Rng::new(self.nonce ^ id as u64).bytes(*len as usize))?;
                drop(f);
                let weak = self.wrote(id, p, path, &tok);
                Ok(format!(
                    "{tok} at {off}{}",
                    if weak { " (weak)" } else { "" }
                ))
            }
            Op::Append { p, path, len } => {
                let p = *p;
                let abs = self.root(p).join(path);
                if self.kind(p, path) != Kind::File {
                    return Ok("skipped: no file".into());
                }
                let size = fs::metadata(&abs)?.len();
                let tok = self.token(id, p);
                let mut f = OpenOptions::new().write(true).open(&abs)?;
                if size < TOKEN_LEN as u64 {
                    let (_, data) = self.content(id, p, TOKEN_LEN as u64 + len);
                    f.write_all(&data)?;
                } else {
                    f.seek(SeekFrom::End(0))?;
                    f.write_all(&Rng::new(self.nonce ^ id as u64).bytes(*len as usize))?;
                    f.seek(SeekFrom::Start(0))?;
                    f.write_all(&token_line(&tok))?;
                }
                drop(f);
                let weak = self.wrote(id, p, path, &tok);
                Ok(format!("{tok}{}", if weak { " (weak)" } else { "" }))
            }
            Op::Truncate { p, path, permille } => {
                let p = *p;
                let abs = self.root(p).join(path);
                if self.kind(p, path) != Kind::File {
                    return Ok("skipped: no file".into());
                }
                let size = fs::metadata(&abs)?.len();
                if size < TOKEN_LEN as u64 {
                    return Ok("skipped: too short".into());
                }
                let tok = self.token(id, p);
                let new = (size * permille / 1000).max(TOKEN_LEN as u64);
                let mut f = OpenOptions::new().write(true).open(&abs)?;
                f.set_len(new)?;
                f.write_all(&token_line(&tok))?;
                drop(f);
                let weak = self.wrote(id, p, path, &tok);
                Ok(format!(
                    "{tok} to {new}{}",
                    if weak { " (weak)" } else { "" }
                ))
            }
            Op::Delete { p, path } => {
                let p = *p;
                let abs = self.root(p).join(path);
                match self.kind(p, path) {
                    Kind::Missing => Ok("skipped: missing".into()),
                    Kind::File => {
                        fs::remove_file(&abs)?;
                        self.m.supersede(p, path, false, true);
                        Ok("rm".into())
                    }
                    Kind::Dir => {
                        let ok = World::rm_rf(&abs);
                        self.m.supersede(p, path, true, ok);
                        Ok(if ok { "rm -r" } else { "rm -r failed" }.into())
                    }
                }
            }
            Op::Rename { p, from, to } => {
                let p = *p;
                let (src, dst) = (self.root(p).join(from), self.root(p).join(to));
                let k = self.kind(p, from);
                if k == Kind::Missing {
                    return Ok("skipped: missing".into());
                }
                if from == to || to.starts_with(&format!("{from}/")) {
                    return Ok("skipped: into itself".into());
                }
                let kt = self.kind(p, to);
                if kt == Kind::Dir || (k == Kind::Dir && kt == Kind::File) {
                    return Ok("skipped: target in the way".into());
                }
                // An ancestor of the target that is a file is replaced by a folder, unless that is
                // the source itself (then it stays a file: skip).
                if from.starts_with(&format!("{to}/")) {
                    return Ok("skipped: onto an ancestor".into());
                }
                let to_parts: Vec<&str> = to.split('/').collect();
                for i in 1..to_parts.len() {
                    if to_parts[..i].join("/") == *from {
                        return Ok("skipped: target under source".into());
                    }
                }
                self.ensure_parents(p, to)?;
                fs::rename(&src, &dst)?;
                if kt == Kind::File {
                    self.m.supersede(p, to, false, true);
                }
                self.m.supersede(p, from, k == Kind::Dir, true);
                // The content now at the target, read back as it is.
                let mut moved = Vec::new();
                if k == Kind::File {
                    if let Some(tok) = read_token(&dst) {
                        moved.push((to.clone(), tok));
                    }
                } else if let Ok(s) = snapshot(&dst) {
                    for (rel, node) in &s.nodes {
                        if let Node::File { data, .. } = node
                            && let Some(tok) = token_of(data)
                        {
                            moved.push((format!("{to}/{rel}"), tok));
                        }
                    }
                }
                for (path, tok) in &moved {
                    self.m.write(id, p, path, tok, false);
                }
                Ok(format!("moved {} tokens", moved.len()))
            }
            Op::Mkdir { p, path } => {
                let p = *p;
                let abs = self.root(p).join(path);
                let mut what = "";
                match self.kind(p, path) {
                    Kind::Dir => return Ok("skipped: exists".into()),
                    Kind::File => {
                        fs::remove_file(&abs)?;
                        self.m.supersede(p, path, false, true);
                        what = "file->folder";
                    }
                    Kind::Missing => {}
                }
                self.ensure_parents(p, path)?;
                mkdir_one(&abs)?;
                Ok(what.into())
            }
            Op::Chmod { p, path, mode } => {
                let p = *p;
                let abs = self.root(p).join(path);
                match self.kind(p, path) {
                    Kind::Missing => Ok("skipped: missing".into()),
                    Kind::Dir if self.skip.iter().any(|s| s == "dirchmod") => {
                        Ok("skipped: no folder chmod".into())
                    }
                    Kind::Dir => {
                        // A received folder is always its owner's to enter and write (the
                        // README): a folder mode without u+rwx is not one that can converge.
                        fs::set_permissions(&abs, fs::Permissions::from_mode(*mode | 0o700))?;
                        Ok("folder".into())
                    }
                    Kind::File => {
                        // A chmod to the mode the file has already changes nothing: no edit.
                        if fs::symlink_metadata(&abs)?.permissions().mode() & 0o7777 == *mode {
                            return Ok("skipped: same mode".into());
                        }
                        let before = read_token(&abs);
                        fs::set_permissions(&abs, fs::Permissions::from_mode(*mode))?;
                        self.reassert(id, p, path, before, true)
                    }
                }
            }
            Op::Touch { p, path, secs } => {
                let p = *p;
                let abs = self.root(p).join(path);
                if self.kind(p, path) != Kind::File {
                    return Ok("skipped: no file".into());
                }
                let before = read_token(&abs);
                let f = OpenOptions::new().write(true).open(&abs)?;
                f.set_modified(UNIX_EPOCH + Duration::from_secs(*secs as u64))?;
                drop(f);
                self.reassert(id, p, path, before, false)
            }
            Op::Stop(p) => {
                let p = *p;
                match &self.procs[p] {
                    Some(peer) if !self.stopped[p] => {
                        signal(peer.pid().unwrap(), "STOP");
                        self.stopped[p] = true;
                        Ok(String::new())
                    }
                    _ => Ok("skipped".into()),
                }
            }
            Op::Cont(p) => {
                let p = *p;
                match &self.procs[p] {
                    Some(peer) if self.stopped[p] => {
                        signal(peer.pid().unwrap(), "CONT");
                        self.stopped[p] = false;
                        Ok(String::new())
                    }
                    _ => Ok("skipped".into()),
                }
            }
            Op::Kill(p) => {
                let p = *p;
                match self.procs[p].take() {
                    Some(mut peer) => {
                        peer.kill();
                        self.stopped[p] = false;
                        Ok(String::new())
                    }
                    None => Ok("skipped".into()),
                }
            }
            Op::Restart(p) => {
                let p = *p;
                if self.procs[p].is_some() {
                    return Ok("skipped".into());
                }
                self.start(p).map_err(|f| io::Error::other(f.detail))?;
                Ok(String::new())
            }
            Op::Sleep(ms) => {
                std::thread::sleep(Duration::from_millis(*ms));
                Ok(String::new())
            }
        }
    }

    /// chmod/touch: a new version of the same content (token read before and after).
    fn reassert(
        &mut self,
        id: u32,
        p: usize,
        path: &str,
        before: Option<String>,
        edit: bool,
    ) -> io::Result<String> {
        let after = read_token(&self.root(p).join(path));
        let Some(tok) = after.clone() else {
            return Ok("no token".into());
        };
        // A touch (mtime only) is not taken as an edit: `left` makes no new version when only
        // the mtime changed (the content hash is the same), so it must not be required to beat
        // a deletion, nor to replace anything; it is only allowed to be seen (weak).
        let weak = before != after || !edit;
        if edit {
            self.m.supersede(p, path, false, !weak);
        }
        self.m.write(id, p, path, &tok, weak);
        Ok(format!("{tok}{}", if weak { " (weak)" } else { "" }))
    }

    fn apply_partition(&mut self, groups: &[usize]) -> Vec<Vec<usize>> {
        for (i, j, a, b) in &self.links {
            let up = groups[*i] == groups[*j];
            a.set_cut(!up);
            b.set_cut(!up);
        }
        let comps = self.components();
        for (c, members) in comps.iter().enumerate() {
            for &p in members {
                self.m.comp[p] = c;
            }
        }
        comps
    }

    /// Connected parts of the topology over the links that are up.
    fn components(&self) -> Vec<Vec<usize>> {
        let mut comp: Vec<usize> = (0..self.n).collect();
        loop {
            let mut changed = false;
            for (i, j, a, _) in &self.links {
                if !a.is_cut() {
                    let m = comp[*i].min(comp[*j]);
                    if comp[*i] != m || comp[*j] != m {
                        comp[*i] = m;
                        comp[*j] = m;
                        changed = true;
                    }
                }
            }
            if !changed {
                break;
            }
        }
        let mut out: Vec<Vec<usize>> = Vec::new();
        let mut seen: HashMap<usize, usize> = HashMap::new();
        for (p, c) in comp.iter().enumerate().take(self.n) {
            let k = *seen.entry(*c).or_insert_with(|| {
                out.push(Vec::new());
                out.len() - 1
            });
            out[k].push(p);
        }
        out
    }

    /// A daemon that exited on its own, or a panic in a log, is a failure.
    fn check_alive(&mut self) -> Result<(), Failure> {
        for p in 0..self.n {
            if let Some(peer) = self.procs[p].as_mut()
                && let Some(st) = peer.exit_status()
            {
                // SIGHUP: `left` does not hang itself up. The kernel sends SIGHUP+SIGCONT to an
                // orphaned process group holding a stopped process when a member exits; the
                // peers run in groups of their own (Peer::start_own_group) so that this cannot
                // happen to them any more. Named apart anyway: it is not `left`'s doing.
                use std::os::unix::process::ExitStatusExt;
                let kind = if st.signal() == Some(1) {
                    "died-sighup"
                } else {
                    "died"
                };
                return Err(fail(
                    kind,
                    format!("{} exited by itself: {st}", self.names[p]),
                ));
            }
        }
        Ok(())
    }

    fn check_logs(&self) -> Result<(), Failure> {
        for p in 0..self.n {
            for log in &self.logs[p] {
                let text = fs::read_to_string(log).unwrap_or_default();
                if let Some(l) = text.lines().find(|l| l.contains("panicked")) {
                    return Err(fail("died", format!("{}: {l}", self.names[p])));
                }
            }
        }
        Ok(())
    }

    /// Continues stopped peers, restarts killed ones.
    fn revive(&mut self) -> Result<(), Failure> {
        for p in 0..self.n {
            if self.stopped[p] {
                if let Some(peer) = &self.procs[p] {
                    signal(peer.pid().unwrap(), "CONT");
                }
                self.stopped[p] = false;
            }
            if self.procs[p].is_none() {
                self.start(p)?;
            }
        }
        Ok(())
    }

    /// Waits until the peers of `members` hold identical trees, the same on two looks 0.5 s
    /// apart. Temp files are left out here (a transfer cut by the partition keeps its temp file
    /// for resume); the final check wants none.
    fn wait_converged(&mut self, members: &[usize]) -> Result<Duration, Failure> {
        let start = Instant::now();
        let mut prev: Option<BTreeMap<String, Node>> = None;
        let mut last = String::new();
        let mut class = "unstable";
        loop {
            self.check_alive()?;
            let snaps: Vec<io::Result<Snap>> =
                members.iter().map(|&p| snapshot(&self.root(p))).collect();
            let mut same = true;
            for (k, s) in snaps.iter().enumerate() {
                match (s, &snaps[0]) {
                    (Ok(s), Ok(s0)) => {
                        if let Some((c, d)) =
                            snap_diff(s0, &self.names[members[0]], s, &self.names[members[k]])
                        {
                            last = d;
                            class = c;
                            same = false;
                            break;
                        }
                    }
                    (Err(e), _) | (_, Err(e)) => {
                        last = format!("snapshot: {e}");
                        same = false;
                        break;
                    }
                }
            }
            if same {
                let s0 = snaps.into_iter().next().unwrap().unwrap();
                if prev.as_ref() == Some(&s0.nodes) {
                    return Ok(start.elapsed());
                }
                last = "not stable yet".into();
                prev = Some(s0.nodes);
                std::thread::sleep(Duration::from_millis(500));
            } else {
                prev = None;
                std::thread::sleep(Duration::from_millis(200));
            }
            if start.elapsed() > self.timeout {
                let names: String = members.iter().map(|&p| letter(p)).collect();
                return Err(fail(
                    &format!("convergence-{class}"),
                    format!("{names} did not converge within {:?}: {last}", self.timeout),
                ));
            }
        }
    }

    fn end_round(&mut self, comps: &[Vec<usize>]) -> Result<(), Failure> {
        self.revive()?;
        let mut took = Vec::new();
        for c in comps {
            let d = self.wait_converged(c)?;
            took.push(format!(
                "{}:{:.1}s",
                c.iter().map(|&p| letter(p)).collect::<String>(),
                d.as_secs_f64()
            ));
        }
        self.check_logs()?;
        // A conflict copy present in a converged component is a file like any other from now
        // on: recorded as written by the component (its first member) at this round's end, so
        // that it must survive unless a later op that could have seen it removes its folder.
        // (Without this, a copy overwritten by a later copy of the same name would go unseen:
        // the writes it holds were superseded at their own path.)
        let mut copies = Vec::new();
        for c in comps {
            if let Ok(snap) = snapshot(&self.root(c[0])) {
                for (path, node) in &snap.nodes {
                    if let Node::File { data, .. } = node
                        && conflict_base(path).is_some()
                        && let Some(tok) = token_of(data)
                    {
                        copies.push((c[0], path.clone(), tok));
                    }
                }
            }
        }
        for (p, path, tok) in copies {
            if !self.m.ev.iter().any(|e| e.path == path && e.token == tok) {
                self.m.write(0, p, &path, &tok, false);
            }
        }
        self.m.end_round(comps);
        let line = format!("converged {}", took.join(" "));
        self.note(line);
        Ok(())
    }

    fn run(&mut self, s: &Schedule) -> Result<(), Failure> {
        for r in &s.rounds {
            let comps = self.apply_partition(&r.groups);
            let line = format!(
                "round {} partition {}",
                self.m.round,
                groups_text(&r.groups)
            );
            self.note(line);
            for st in &r.steps {
                self.apply(st)?;
            }
            self.end_round(&comps)?;
        }
        let comps = self.apply_partition(&vec![0; self.n]);
        self.note("heal all".into());
        self.end_round(&comps)?;
        self.final_checks()
    }

    /// `left status` of every peer says in sync with nothing to receive (a tombstone that cannot
    /// be applied, a file retried forever, leave the trees alike but the peers busy).
    fn wait_quiet(&mut self) -> Result<(), Failure> {
        let start = Instant::now();
        loop {
            let mut busy = None;
            for p in 0..self.n {
                let out = std::process::Command::new(BIN)
                    .args(["status", "--dir"])
                    .arg(self.root(p))
                    .output()
                    .map_err(|e| fail("status", e.to_string()))?;
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                let receiving = text
                    .lines()
                    .any(|l| l.contains("to receive ") && !l.contains("to receive 0 files"));
                if out.status.code() != Some(0) || receiving {
                    busy = Some(format!("{}: {text}", self.names[p]));
                    break;
                }
            }
            let Some(text) = busy else { return Ok(()) };
            if start.elapsed() > Duration::from_secs(30) {
                return Err(fail(
                    "not-quiet",
                    format!("trees converged but a peer stays busy for 30 s: {text}"),
                ));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The invariants, on the converged shares.
    fn final_checks(&mut self) -> Result<(), Failure> {
        self.wait_quiet()?;
        // 4a. No temp files once quiet.
        for p in 0..self.n {
            let s = snapshot(&self.root(p)).map_err(|e| fail("snapshot", e.to_string()))?;
            if !s.temps.is_empty() {
                return Err(fail(
                    "temp-file",
                    format!("{} still holds {:?}", self.names[p], s.temps),
                ));
            }
        }
        let snap = snapshot(&self.root(0)).map_err(|e| fail("snapshot", e.to_string()))?;
        let mut where_tok: HashMap<String, Vec<String>> = HashMap::new();
        if self.verbose {
            for (path, node) in &snap.nodes {
                match node {
                    Node::File { data, .. } => println!("  final: {path} {:?}", token_of(data)),
                    _ => println!("  final: {path}/"),
                }
            }
        }
        for (path, node) in &snap.nodes {
            if let Node::File { data, .. } = node
                && let Some(tok) = token_of(data)
            {
                where_tok.entry(tok).or_default().push(path.clone());
            }
        }
        // 2. No lost write. A write no peer that could have seen it replaced or removed must be
        // somewhere in the share. Conservative: anywhere (at its path, in a conflict copy, under
        // a folder that a conflict moved), not only at its path or its conflict copies.
        for e in &self.m.ev {
            if !e.weak && !e.sup_ub && !where_tok.contains_key(&e.token) && e.id == 0 {
                return Err(fail(
                    "lost-write",
                    format!(
                        "conflict copy {} holding {}, in every share of {}'s component at the end \
                         of round {}, is gone (nobody removed its folder)",
                        e.path, e.token, self.names[e.peer], e.round
                    ),
                ));
            }
            if !e.weak && !e.sup_ub && !where_tok.contains_key(&e.token) {
                return Err(fail(
                    "lost-write",
                    format!(
                        "{} written at {} by {} (step #{}, round {}) is nowhere in the final \
                         share; no peer that could have seen it changed that path",
                        e.token, e.path, self.names[e.peer], e.id, e.round
                    ),
                ));
            }
        }
        // 3. No resurrection: the content at a path (not a conflict copy) must have been put there
        // by a write that no peer certainly knowing it replaced or removed afterwards.
        for (path, node) in &snap.nodes {
            let Node::File { data, .. } = node else {
                continue;
            };
            let Some(tok) = token_of(data) else { continue };
            if conflict_base(path).is_some() {
                continue;
            }
            let evs: Vec<&Ev> = self
                .m
                .ev
                .iter()
                .filter(|e| e.path == *path && e.token == tok)
                .collect();
            if evs.is_empty() {
                return Err(fail(
                    "phantom",
                    format!("{path} holds {tok}, which was never written at that path"),
                ));
            }
            if evs.iter().all(|e| e.sup_lb) {
                let by: Vec<String> = evs
                    .iter()
                    .map(|e| format!("#{} by {} in round {}", e.id, self.names[e.peer], e.round))
                    .collect();
                return Err(fail(
                    "resurrection",
                    format!(
                        "{path} holds {tok} (written {}), which a peer that certainly knew it \
                         replaced or removed afterwards",
                        by.join(", ")
                    ),
                ));
            }
        }
        // 4b. Conflict copies: their token was written at their base path (or moved to the
        // copy's own path by a folder rename); no two copies with the same content.
        let mut copies: HashMap<&[u8], &String> = HashMap::new();
        for (path, node) in &snap.nodes {
            let Node::File { data, .. } = node else {
                continue;
            };
            let Some(base) = conflict_base(path) else {
                continue;
            };
            if let Some(tok) = token_of(data) {
                let ok = self.m.ev.iter().any(|e| {
                    e.token == tok && (conflict_base(&e.path).unwrap_or(e.path.clone()) == base)
                });
                if !ok {
                    return Err(fail(
                        "conflict-token",
                        format!("conflict copy {path} holds {tok}, never written at {base}"),
                    ));
                }
            }
            // Two copies of one content are a duplicate only if that content was written once
            // and never re-asserted (chmod, touch) or moved: then both come from one version.
            // (Two versions with the same content, e.g. a chmod on each side, may each lose a
            // conflict and each get a copy of their own.)
            let once = token_of(data)
                .is_some_and(|tok| self.m.ev.iter().filter(|e| e.token == tok).count() == 1);
            if !once {
                continue;
            }
            if let Some(other) = copies.insert(data.as_slice(), path) {
                return Err(fail(
                    "dup-conflict",
                    format!("conflict copies {other} and {path} hold the same content"),
                ));
            }
        }
        self.check_logs()?;
        Ok(())
    }

    /// The last lines of every peer's logs, for a failure report.
    fn log_tails(&self, n: usize) -> String {
        let mut out = String::new();
        for p in 0..self.n {
            for (k, log) in self.logs[p].iter().enumerate() {
                let text = fs::read_to_string(log).unwrap_or_default();
                let last = k + 1 == self.logs[p].len();
                out += &format!(
                    "---- {} log {} ({}) ----\n{}\n",
                    self.names[p],
                    k,
                    log.display(),
                    tail(&text, if last { n } else { n / 3 })
                );
            }
        }
        out
    }
}

fn mkdir_one(abs: &Path) -> io::Result<()> {
    match fs::create_dir(abs) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && abs.is_dir() => Ok(()),
        r => r,
    }
}

impl Drop for World {
    fn drop(&mut self) {
        for p in 0..self.n {
            if self.stopped[p]
                && let Some(peer) = &self.procs[p]
            {
                signal(peer.pid().unwrap(), "CONT");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Running, shrinking, reporting

struct Outcome {
    failure: Option<Failure>,
    report: String,
    took: Duration,
    /// The first peer's share once everything passed (every share is the same then).
    last: Option<BTreeMap<String, Node>>,
}

/// Runs one schedule on fresh peers. `report`: the log tails and trace on failure.
fn run_schedule(s: &Schedule, nonce: u64) -> Outcome {
    let start = Instant::now();
    let mut made = World::new(s, nonce);
    for _ in 0..3 {
        match &made {
            Err(f) if f.kind == "start-port-taken" => made = World::new(s, nonce),
            _ => break,
        }
    }
    let mut w = match made {
        Ok(w) => w,
        Err(f) => {
            return Outcome {
                failure: Some(f),
                report: String::new(),
                took: start.elapsed(),
                last: None,
            };
        }
    };
    let r = w.run(s);
    let last = r
        .is_ok()
        .then(|| snapshot(&w.root(0)).ok().map(|s| s.nodes))
        .flatten();
    let mut report = String::new();
    if r.is_err() {
        report += "---- what the harness did ----\n";
        report += &w.trace.join("\n");
        report += "\n";
        report += &w.log_tails(30);
        report += &format!("test folder kept: {}\n", w.t.path.display());
        // Stop the peers, keep the folder for inspection.
        for p in w.procs.iter_mut().flatten() {
            p.kill();
        }
        for p in 0..w.n {
            w.stopped[p] = false;
        }
        let t = std::mem::replace(&mut w.t, TestDir::new("chaos-spare"));
        std::mem::forget(t);
    }
    drop(w);
    Outcome {
        failure: r.err(),
        report,
        took: start.elapsed(),
        last,
    }
}

/// Delta debugging, bounded in time: drops rounds, then chunks of steps, then single steps, while
/// the schedule still fails with the same kind of failure. Races make failures flaky: a
/// candidate counts as failing if one of `tries` runs fails the same way.
fn shrink(s: &Schedule, kind: &str, budget: Duration) -> Schedule {
    let end = Instant::now() + budget;
    let tries = env_u64("LEFT_CHAOS_SHRINK_TRIES", 2);
    let fails = |c: &Schedule| -> bool {
        for _ in 0..tries {
            if Instant::now() > end {
                return false;
            }
            let o = run_schedule(c, 0);
            if o.failure.as_ref().is_some_and(|f| f.kind == kind) {
                return true;
            }
        }
        false
    };
    let mut best = s.clone();
    println!("shrinking ({} steps, {kind})...", best.steps());
    // Rounds, last first.
    let mut i = best.rounds.len();
    while i > 0 && Instant::now() < end {
        i -= 1;
        if best.rounds.len() <= 1 {
            break;
        }
        let mut c = best.clone();
        c.rounds.remove(i);
        if fails(&c) {
            println!("  dropped round {i}: {} steps", c.steps());
            best = c;
        }
    }
    // Steps, in chunks halving down to one.
    let mut chunk = (best.steps() / 2).max(1);
    loop {
        let mut k = 0;
        while k < best.steps() && Instant::now() < end {
            let mut c = best.clone();
            let mut idx = 0;
            for r in &mut c.rounds {
                r.steps.retain(|_| {
                    let keep = !(k..k + chunk).contains(&idx);
                    idx += 1;
                    keep
                });
            }
            if c.steps() < best.steps() && fails(&c) {
                println!("  dropped {chunk} steps at {k}: {} steps", c.steps());
                best = c;
            } else {
                k += chunk;
            }
        }
        if chunk == 1 || Instant::now() > end {
            break;
        }
        chunk /= 2;
    }
    // Rounds again (once steps are gone, a round may be only a partition), then the remaining
    // rounds merged into one with everyone together.
    let mut i = best.rounds.len();
    while i > 0 && Instant::now() < end {
        i -= 1;
        if best.rounds.len() <= 1 {
            break;
        }
        let mut c = best.clone();
        c.rounds.remove(i);
        if fails(&c) {
            println!("  dropped round {i}: {} steps", c.steps());
            best = c;
        }
    }
    if best.rounds.len() > 1 && Instant::now() < end {
        let mut c = best.clone();
        let steps: Vec<Step> = c.rounds.drain(..).flat_map(|r| r.steps).collect();
        c.rounds.push(Round {
            groups: vec![0; c.peers],
            steps,
        });
        if fails(&c) {
            println!("  merged the rounds into one");
            best = c;
        }
    }
    best
}

/// Replays a schedule text `n` times (a race that fails half the time then almost surely shows);
/// panics at the first failure.
fn replay_times(text: &str, n: usize) {
    for _ in 0..n {
        replay(text);
    }
}

/// Replays a schedule text `n` times; panics at the first failure of the harness's checks or
/// of `check`, which is given the final share (the same on every peer then). For what the
/// model does not see: a folder back, a conflict copy of content its own writer replaced.
fn replay_check(text: &str, n: usize, check: fn(&BTreeMap<String, Node>) -> Result<(), String>) {
    for i in 0..n {
        let s = Schedule::parse(text).unwrap();
        let o = run_schedule(&s, 0);
        if let Some(f) = o.failure {
            panic!(
                "run {i}: schedule failed: {}: {}\n{}\nschedule:\n{}",
                f.kind,
                f.detail,
                o.report,
                s.to_text()
            );
        }
        let nodes = o.last.expect("the final share");
        if let Err(why) = check(&nodes) {
            panic!("run {} of {n}: {why}\nschedule:\n{}", i + 1, s.to_text());
        }
    }
}

/// Replays a schedule text; panics with the failure and the logs if it fails.
fn replay(text: &str) {
    let s = Schedule::parse(text).unwrap();
    let o = run_schedule(&s, 0);
    if let Some(f) = o.failure {
        panic!(
            "schedule failed: {}: {}\n{}\nschedule:\n{}",
            f.kind,
            f.detail,
            o.report,
            s.to_text()
        );
    }
}

#[test]
fn chaos() {
    if let Ok(file) = std::env::var("LEFT_CHAOS_REPLAY") {
        let text = fs::read_to_string(&file).unwrap();
        if env_u64("LEFT_CHAOS_SHRINK", 0) == 1 {
            // Replay, and shrink what fails.
            let s = Schedule::parse(&text).unwrap();
            let o = run_schedule(&s, 0);
            let Some(f) = o.failure else {
                println!("{file}: passed in {:.1} s", o.took.as_secs_f64());
                return;
            };
            println!("{file}: {}: {}\n{}", f.kind, f.detail, o.report);
            let budget = Duration::from_secs(env_u64("LEFT_CHAOS_SHRINK_SECS", 600));
            let small = shrink(&s, &f.kind, budget);
            println!("shrunk schedule ({}):\n{}", f.kind, small.to_text());
            return;
        }
        replay(&text);
        return;
    }
    let seeds = env_u64("LEFT_CHAOS_SEEDS", 4);
    let base = env_u64("LEFT_CHAOS_SEED_BASE", 1);
    let peers = env_u64("LEFT_CHAOS_PEERS", 3) as usize;
    let topo = std::env::var("LEFT_CHAOS_TOPO").unwrap_or_else(|_| "both".into());
    let do_shrink = env_u64("LEFT_CHAOS_SHRINK", 0) == 1;
    let budget = Duration::from_secs(env_u64("LEFT_CHAOS_SHRINK_SECS", 600));
    let mut failures: Vec<(u64, Schedule, Failure)> = Vec::new();
    let mut kinds: HashSet<String> = HashSet::new();
    let all = Instant::now();
    // Seeds run `jobs` at a time (their peers mostly wait on each other and the disk).
    let jobs = env_u64("LEFT_CHAOS_JOBS", 2).max(1);
    let next = std::sync::atomic::AtomicU64::new(0);
    let done = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|sc| {
        for _ in 0..jobs {
            sc.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= seeds {
                        return;
                    }
                    let seed = base + i;
                    let t = match topo.as_str() {
                        "mesh" => Topo::Mesh,
                        "chain" => Topo::Chain,
                        _ if seed.is_multiple_of(2) => Topo::Mesh,
                        _ => Topo::Chain,
                    };
                    let s = generate(seed, peers, t);
                    let o = run_schedule(&s, seed);
                    done.lock().unwrap().push((seed, t, s, o));
                }
            });
        }
    });
    let mut done = done.into_inner().unwrap();
    done.sort_by_key(|d| d.0);
    for (seed, t, s, o) in done {
        match &o.failure {
            None => println!(
                "seed {seed} ({peers} peers, {t:?}, {} rounds, {} steps): ok in {:.1} s",
                s.rounds.len(),
                s.steps(),
                o.took.as_secs_f64()
            ),
            Some(f) => {
                println!(
                    "seed {seed} ({peers} peers, {t:?}): FAILED in {:.1} s: {}: {}\n{}\nschedule:\n{}",
                    o.took.as_secs_f64(),
                    f.kind,
                    f.detail,
                    o.report,
                    s.to_text()
                );
                if kinds.insert(f.kind.clone()) && do_shrink {
                    let small = shrink(&s, &f.kind, budget);
                    println!(
                        "seed {seed}: shrunk schedule ({}):\n{}",
                        f.kind,
                        small.to_text()
                    );
                }
                failures.push((seed, s.clone(), f.clone()));
            }
        }
    }
    println!(
        "chaos: {seeds} seeds, {} failed, {:.0} s",
        failures.len(),
        all.elapsed().as_secs_f64()
    );
    for (seed, _, f) in &failures {
        println!("  seed {seed}: {}: {}", f.kind, f.detail);
    }
    assert!(failures.is_empty(), "{} seeds failed", failures.len());
}

#[test]
fn schedule_text_round_trips() {
    for seed in 1..20 {
        for (peers, topo) in [(3, Topo::Mesh), (5, Topo::Chain)] {
            let s = generate(seed, peers, topo);
            let text = s.to_text();
            let back = Schedule::parse(&text).unwrap();
            assert_eq!(back.to_text(), text);
            let semi = text.replace('\n', "; ");
            assert_eq!(Schedule::parse(&semi).unwrap().to_text(), text);
        }
    }
    assert_eq!(
        conflict_base("d/b.sync-conflict-20240101-120000-ABCDEF0.txt").as_deref(),
        Some("d/b.txt")
    );
    assert_eq!(conflict_base("d/b.txt"), None);
}

// ---------------------------------------------------------------------------------------------
// Regressions: shrunk schedules of failures the chaos test found. Ignored while the bug is open;
// the fixed ones run in `make test`;
// run them with `cargo test --release --test chaos -- --ignored regression`.

/// Seed 104 (3 peers, mesh): a folder's chmod is not synced; the shares never converge (the
/// folder keeps 755 on the other peers).
#[test]
fn regression_folder_chmod_not_synced() {
    replay(
        "peers=3 topo=mesh
         round ABC
         20 write B d/e/z 1515152
         round AC|B
         53 chmod B d/e 775",
    );
}

/// Seed 5 (3 peers, chain): A creates d/e/z (so folder d) while B creates a file d, connected;
/// the shares never converge (A keeps folder d, B file d).
#[test]
fn regression_file_folder_conflict_never_converges() {
    replay(
        "peers=3 topo=chain
         round AB|C
         30 write A d/e/z 1703204
         36 write B d 275400",
    );
}

/// Seed 2 (3 peers, mesh): B turns file f/g into a folder (moving folder d to f/g/v) while A,
/// cut off from B's change, chmods file f/g. A then takes B's folder and drops its own edit of
/// f/g without a conflict copy: the content (#3B) is nowhere.
#[test]
fn regression_type_change_loses_concurrent_edit() {
    replay(
        "peers=3 topo=mesh
         round A|BC
         3 put B d/e/z 303
         8 rename B d/e/z f/g
         round AC|B
         round AB|C
         49 rename B d f/g/v
         51 chmod A f/g 700",
    );
}

/// Seed 203 (5 peers, chain), shrunk to `write C d/y.txt 2653072; sleep 39; delete C d/y.txt`
/// in one round with everyone together: the neighbours are still pulling the file when C's
/// scan turns it into a deletion, a block request then names a path whose entry is a deletion
/// (block size 0), and C panics ("attempt to divide by zero", src/conn.rs, serving the request)
/// and dies. With 2.6 MiB the pull outruns the scan on an idle machine (it failed under load
/// only), so the test uses 30 MB: the pull takes longer than the scan (fails every time).
#[test]
fn regression_request_for_deleted_path_panics() {
    replay(
        "peers=3 topo=mesh
         round ABC
         1 write C d/y.txt 30000000
         2 sleep 60
         3 delete C d/y.txt",
    );
}

/// Seed 112 (3 peers, mesh): A writes a 2.8 MiB `a` while it is pulling B's new 887-byte `a`.
/// The local edit wins ("a: not synced yet: a: changed locally"), the shares converge, and A
/// keeps `.a.left-tmp` forever. A race (about one run in two): four runs.
#[test]
fn regression_temp_file_left_when_local_edit_wins() {
    replay_times(
        "peers=3 topo=mesh
         round AB|C
         66 put B a 887
         75 write A a 2885715",
        4,
    );
}

/// Written by hand from the description of a known bug, then confirmed by the harness: A
/// deletes d/x while, cut off from A, B replaces folder d with a file. After healing every
/// share holds file d, but A stays "pending" for ever: its tombstone d/x, under what is now a
/// file, is never acknowledged ("to send 2 entries", never in sync with that peer). About two
/// runs in three: four runs.
#[test]
fn regression_tombstone_under_file_never_quiet() {
    replay_times(
        "peers=3 topo=mesh
         round ABC
         1 write A d/x 100
         round A|BC
         2 delete A d/x
         3 write B d 200",
        4,
    );
}

/// Seed 125 (3 peers, chain) found it as a 7 ms race (A deleted b.txt, B touched it to an old
/// mtime just before the deletion arrived); shrinking was slow, so this is its deterministic
/// form, written by hand and confirmed: B, stopped, gets A's deletion while b.txt is touched.
/// B sees "changed locally", its scan finds the same content (an mtime-only change makes no
/// version), and the deletion is never applied: B keeps b.txt, A and C do not, for ever.
#[test]
fn regression_touch_blocks_deletion() {
    replay(
        "peers=3 topo=mesh
         round ABC
         1 write A b.txt 1000
         2 sleep 1000
         3 stop B
         4 delete A b.txt
         5 sleep 300
         6 touch B b.txt 978307200
         7 cont B",
    );
}

/// Seeds 37 (full mix), 102 and 326 (LEFT_CHAOS_SKIP=types,dirchmod) ended with a deleted
/// version back at its path; this is their common pattern, written by hand and confirmed
/// (fails every time, 8 s). A (alone) writes a; C (with B) writes a a second later; B deletes
/// a knowing C's version. A and B meet: A's edit beats B's deletion (right), but B takes A's
/// version without keeping what its tombstone knew. Healed, C's stale version looks
/// concurrent with A's, wins on mtime, and is back at a, A's demoted to a conflict copy.
#[test]
fn regression_deleted_version_resurrects() {
    replay(
        "peers=3 topo=mesh
         round A|BC
         1 write A a 1000
         2 sleep 1100
         3 write C a 500
         round AB|C
         4 delete B a",
    );
}

/// Seed 402 (5 peers, mesh) never converged around a conflict copy named with the 2001 mtime
/// of a touch; this is the known bug behind it, written by hand and confirmed (fails every
/// time, 6 s): B loses two conflicts on b.txt with two versions of the same mtime (touched to
/// 2001-01-01), so both copies are named b.sync-conflict-20010101-000000-B.txt; the second
/// overwrites the first, whose content (#1B) is then nowhere.
#[test]
fn regression_conflict_copies_same_name() {
    replay(
        "peers=3 topo=mesh
         round A|BC
         1 write B b.txt 100
         2 touch B b.txt 978307200
         3 write A b.txt 200
         round ABC
         round A|BC
         4 write B b.txt 300
         5 touch B b.txt 978307200
         6 write A b.txt 400",
    );
}

/// Seed 513 (3 peers, chain, LEFT_CHAOS_SKIP=types,dirchmod), shrunk to 7 steps (`round ABC;
/// 46 write A d/x 1496013; round ABC; 53 delete B d; 54 sleep 1789; 58 sleep 136; 59 write C
/// d/x 0; round AB|C; 65 write A d/x 43074`), fails about one run in two; this is its
/// essence, written by hand and confirmed (about one run in two, hence four runs). Folder d
/// is deleted everywhere, C makes d/x again, A's daemon re-creates d/ to install it; then A
/// writes d/x and its daemon never notices ("changed locally" never logged): no inotify watch
/// on the folder it made itself, so the edit waits for the 10-minute walk and the shares
/// differ until then.
#[test]
fn regression_edit_in_recreated_folder_unseen() {
    replay_times(
        "peers=3 topo=mesh
         round ABC
         1 write A d/x 100
         2 sleep 1000
         3 delete B d
         4 sleep 1000
         5 write C d/x 10
         6 sleep 1000
         7 write A d/x 5000",
        4,
    );
}

/// Seeds 1003, 1012 and 1013 (3 peers): a failed pull of a file whose name then became a folder
/// left its temp file for good; a folder's mode, caught by a listing while a pull was making the
/// folder (0700 for a moment), was announced as a local change and the shares kept two modes.
/// Timing-dependent: each seed's whole schedule is run.
#[test]
fn regression_seeds_temp_under_new_folder_and_mode_of_a_folder_being_made() {
    for seed in [1003u64, 1012, 1013] {
        let t = if seed.is_multiple_of(2) {
            Topo::Mesh
        } else {
            Topo::Chain
        };
        let s = generate(seed, 3, t);
        let o = run_schedule(&s, seed);
        if let Some(f) = &o.failure {
            panic!("seed {seed}: {}: {}\n{}", f.kind, f.detail, o.report);
        }
    }
}

/// Seed 1036 (3 peers, mesh), shrunk: A and C write f/g/v apart; A's loses when they meet and is
/// kept as a conflict copy; B, which had only C's version, then renames it away. The winner must
/// stay exactly C's version on A and C, so that B's deletion descends from it (merged with A's
/// knowledge, the winner was concurrent with the deletion and came back over it).
#[test]
fn regression_renamed_away_winner_of_a_conflict_comes_back() {
    replay(
        "peers=3 topo=mesh
         round A|BC
         50 put A f/g/v 192
         52 put C f/g/v 704
         53 stop A
         round AC|B
         round ABC
         71 rename B f/g/v d/x",
    );
}

/// Seed 1039 (3 peers, chain): B's edit of d/e/z beat C's concurrent chmod (newer mtime), so B
/// kept its own when C's version came; then B deleted d/e (a file in its place) before C had
/// pulled the winner. C weighed B's deletion against its chmod: an edit beats a deletion, C kept
/// it; B never weighed C's version again, and the shares differed for good (d/e/z only on C).
/// This is its essence, written by hand and confirmed (fails every time before the fix): C,
/// stopped, chmods; B edits; C resumes (its pull of B's edit fails: changed locally, retried
/// later) and B deletes meanwhile.
#[test]
fn regression_winner_replaced_by_a_losing_deletion() {
    replay(
        "peers=3 topo=mesh
         round ABC
         1 write B d/e/z 1000
         2 sleep 1000
         3 stop C
         4 chmod C d/e/z 755
         5 write B d/e/z 2000
         6 sleep 300
         7 cont C
         8 sleep 1000
         9 delete B d/e/z",
    );
}

/// Seed 5002 (5 peers, mesh) ended with a file back that a peer had deleted knowing it; this is
/// its essence, written by hand and confirmed (fails every time before the fix, 5 s). A deletes
/// a, cut off from C's edit of it; B, which had C's edit, deletes it, cut off from the rest. A
/// and C meet: the edit beats A's deletion and takes in what it knew. Healed, that merged
/// version looked concurrent with B's deletion and won: C's edit was back, though B deleted it
/// knowing it. A deletion made knowing the file (its maker's counter) wins now.
#[test]
fn regression_deleted_file_back_through_a_merged_version() {
    replay(
        "peers=3 topo=mesh
         round ABC
         1 write A a 100
         round A|BC
         2 write C a 200
         3 delete A a
         round AC|B
         4 delete B a",
    );
}

/// Seed 5016 (5 peers, mesh): C renamed folder f while a pull of f/g/v was writing its temp file
/// there; the temp file went along (d/y.txt/g/.v.left-tmp) and stayed for good, nothing to
/// finish or remove it (the pull failed and was done again under f). Written by hand and
/// confirmed (fails before the fix): a 60 MB file is pulled while B renames its folder.
#[test]
fn regression_temp_file_taken_along_by_a_folder_rename() {
    replay(
        "peers=3 topo=mesh
         round ABC
         1 write A f/w 100
         2 sleep 1000
         3 write A f/g/v 60000000
         4 sleep 150
         5 rename B f d",
    );
}

/// Seed 6 (3 peers, mesh) never converged on a folder's mode; this is its essence, written by
/// hand and confirmed (fails every time before the fix, 65 s). B makes folder a; A, cut off,
/// makes and deletes a file a; A takes B's folder over its deletion and takes in what that
/// knew; B, cut off again, chmods the folder. B's version and A's were concurrent with the same
/// mtime and device, so each side kept its own mode. B's was made knowing A's folder: it wins.
#[test]
fn regression_folder_chmod_ties_with_a_merged_version() {
    replay(
        "peers=3 topo=mesh
         round ABC
         round A|BC
         1 mkdir B a
         2 write A a 100
         3 sleep 1000
         4 delete A a
         round AC|B
         5 chmod B a 744",
    );
}

/// Seed 5098 (5 peers, mesh; failed twice in two runs before the fix): A writes d/e/z and
/// deletes it at once; E, which had deleted it meanwhile (a folder rename), takes A's edit and
/// takes in its deletion; that merged version of A's own edit comes back to A before A's scan
/// has seen the deletion, finds no file in the way and is installed: the deletion is lost, the
/// file back for good. A missing file the index has is a local deletion: the install waits for
/// the scan. The whole schedule is run (a race between A's scan and the pull).
#[test]
fn regression_seed_5098_install_over_an_unscanned_deletion() {
    let s = generate(5098, 5, Topo::Mesh);
    let o = run_schedule(&s, 5098);
    if let Some(f) = &o.failure {
        panic!("seed 5098: {}: {}\n{}", f.kind, f.detail, o.report);
    }
}

/// Seed 732 (3 peers, mesh): A, stopped and then killed while pulling d/x, came back with the
/// temp file of a version deleted meanwhile (the deletion taken in before the kill); nothing
/// wanted the temp file any more, and it stayed for good. The whole schedule is run.
#[test]
fn regression_seed_732_temp_file_of_a_version_deleted_before_a_kill() {
    let s = generate(732, 3, Topo::Mesh);
    let o = run_schedule(&s, 732);
    if let Some(f) = &o.failure {
        panic!("seed 732: {}: {}\n{}", f.kind, f.detail, o.report);
    }
}

/// Seed 833 (3 peers, chain; failed once, a race): B renamed f/g/v to a while A wrote f/g/v; A
/// moved its f/g/v to a's temp file while the write went on through its descriptor, and
/// installed those bytes as B's version of a (A's copy differed from B's for good). The whole
/// schedule is run.
#[test]
fn regression_seed_833_a_file_written_while_moved_for_a_rename() {
    let s = generate(833, 3, Topo::Chain);
    let o = run_schedule(&s, 833);
    if let Some(f) = &o.failure {
        panic!("seed 833: {}: {}\n{}", f.kind, f.detail, o.report);
    }
}

/// Seed 181 (3 peers, chain; failed in two of two runs before the fix): B, killed, replaced
/// folder d/e with a file; at restart its scan found the file while the connections announced
/// the folder again (ours won a conflict), which gave the entry a new number, and the scan took
/// that for a pull that had replaced it: the file was never recorded, and A's folder never
/// applied ("a file changed locally is in the way" for good). The whole schedule is run.
#[test]
fn regression_seed_181_change_dropped_for_an_entry_announced_again() {
    let s = generate(181, 3, Topo::Chain);
    let o = run_schedule(&s, 181);
    if let Some(f) = &o.failure {
        panic!("seed 181: {}: {}\n{}", f.kind, f.detail, o.report);
    }
}

/// Seed 5230 (5 peers, mesh; shrunk to 4 steps, then made certain by hand: fails every time
/// before the fix, 9 s): D and E edit d/e/z apart; B, with D's version, meets E's, which wins
/// (newer mtime): B keeps D's as a conflict copy and took E's version as it was. E then replaces
/// folder d/e with a file. D, back, still holds its edit, concurrent with E's deletion of d/e/z
/// (E's vector never took in D's), so the edit won over the deletion and came back at d/e/z,
/// though every other peer had it as a conflict copy. The winner of a conflict now takes in
/// the loser's version where it wins.
#[test]
fn regression_seed_5230_losing_edit_back_over_a_later_deletion() {
    replay(
        "peers=5 topo=mesh
         round ACE|BD
         1 write D d/e/z 2439
         2 sleep 1100
         3 write E d/e/z 38210
         round ABCE|D
         round ABCE|D
         4 write E d/e 1627071
         round ABCDE",
    );
}

/// Review of 218d3da (found by hand, 4 peers): A and C write `a` apart, C later (C wins). B,
/// which had A's, takes C's from D and records it merged with A's (A's kept as a copy); C, cut
/// off, writes `a` again knowing only its own first version. That second version is
/// concurrent with the merged one and wins on B and D (`knew`: it had C's change), and they
/// keep the merged one, C's first content (#3C), as a conflict copy: content its own writer
/// replaced, never in conflict with anything, comes back in every share. Before 218d3da B
/// held C's version as it was, which C's second one simply replaced. The harness's checks do
/// not see it (a conflict copy may hold any token written at its base path), hence the check
/// here. Fails 3 of 3 runs.
#[test]
fn regression_review17_copy_of_a_version_its_writer_replaced() {
    replay_check(
        "peers=4 topo=mesh
         round AB|CD
         1 write A a 1000
         2 sleep 1100
         3 write C a 2000
         round A|BD|C
         4 write C a 3000
         round ABCD",
        3,
        |nodes| {
            for (path, node) in nodes {
                if let Node::File { data, .. } = node
                    && conflict_base(path).is_some()
                    && token_of(data).as_deref() == Some("#3C")
                {
                    return Err(format!(
                        "{path} keeps #3C, which C itself replaced with #4C"
                    ));
                }
            }
            Ok(())
        },
    );
}

/// Review of 218d3da (found by hand, 3 peers): A has file `d`, B (cut off, later) makes a
/// folder `d`; C takes B's folder. A takes the folder (its file kept as a conflict copy) and
/// records it merged with its file's version. C, cut off, deletes the folder it had from B:
/// concurrent with A's merged folder, and an existing folder always beats a deletion (the
/// `knew` rule is for files only), so the deleted folder comes back on C, and every share
/// keeps an empty `d`. Before 218d3da A held B's folder as it was, which C's deletion
/// replaced. The harness does not check folders for resurrection, hence the check here.
/// Fails 3 of 3 runs.
#[test]
fn regression_review17_folder_deleted_knowing_it_back_after_a_type_conflict() {
    replay_check(
        "peers=3 topo=mesh
         round A|BC
         1 write A d 1000
         2 sleep 1100
         3 mkdir B d
         round AB|C
         4 delete C d
         round ABC",
        3,
        |nodes| match nodes.get("d") {
            Some(_) => Err("d, deleted by C knowing it, is back".into()),
            None => Ok(()),
        },
    );
}

/// Review of 218d3da (chaos seed 17308, 4 peers, shrunk by hand to 3): A and C write d/x
/// together, C's later (C wins). A (and B) keep A's as a copy and record C's merged with A's,
/// which is newer than C's own version: C pulls its own content back. C meanwhile replaced its
/// file with an empty folder (`mkdir C d/x`, not scanned yet): the install finds an empty
/// folder where the file goes, removes it and puts the file in, and the scan then finds the
/// file as the index has it. C's folder is gone and #2C, which C replaced, is back at d/x
/// (resurrection). The install refuses a file or a deletion changed behind the index's back,
/// not a folder that replaced a file of ours (`Apply::folder_stays` removes it when empty).
/// Before 218d3da nothing came back to C (its version was the one everyone held). A race
/// (the folder must not be scanned before the install): 1 run in 3-4 fails; eight runs.
#[test]
fn regression_review17_own_content_back_over_an_unscanned_folder() {
    replay_times(
        "peers=3 topo=mesh
         round ABC
         1 write A d/x 222
         2 write C d/x 2560477
         3 sleep 40
         4 mkdir C d/x",
        8,
    );
}

/// Review of f76df45 (found by hand, 2 peers): A and B each make folder `d` apart, B later and
/// with mode 700. A's user replaces its `d` by another folder of the same mode (a new inode)
/// while the daemon is stopped; the scan finds a folder of the mode the index has and keeps
/// the old stat (`FolderSeen::Known`: the inode is not compared, the entry not updated). On
/// heal the folders merge (same content), B's wins (newer mtime), and A's `set_meta` refuses to
/// chmod a folder whose inode is not the index's, yet A records the merged entry with mode 700
/// while its disk keeps 755; the scan compares the mode with the stale stat (755) and sees
/// nothing. A keeps 755, B 700, for ever (convergence-mode). Before f76df45 `set_meta` set the
/// mode. Fails 3 of 3 runs (the rename gives `d` a new inode; with `delete` and `mkdir` instead
/// the inode is often reused and it fails 2 runs in 3).
#[test]
fn regression_review17b_merged_folder_mode_never_set_on_a_recreated_folder() {
    replay(
        "peers=2 topo=mesh
         round A|B
         1 mkdir A d
         2 sleep 1100
         3 mkdir B d
         4 chmod B d 700
         5 sleep 500
         6 stop A
         7 mkdir A f
         8 delete A d
         9 rename A f d
         10 cont A
         round AB",
    );
}
