//! Names inside the share: the check every name from a peer passes where it arrives, and the
//! names `left` keeps for itself (its state directory and temp files).

use crate::error::{Error, Result};

/// The state directory at the top of the share; never synced.
pub const STATE_DIR: &str = ".left";
/// Temp files are `.NAME.left-tmp` beside their target; never synced.
const TEMP_SUFFIX: &str = ".left-tmp";
pub const MAX_PATH: usize = 4096;
const MAX_COMPONENT: usize = 255;

/// Checks a relative name from a peer or from disk: non-empty, `/`-separated, no empty, `.` or
/// `..` component, no NUL, not absolute, not inside the state directory, not a temp file.
pub fn check(path: &str) -> Result<()> {
    // A peer chooses the name: the message quotes its start only.
    let bad = |why: &str| {
        let mut end = path.len().min(120);
        while !path.is_char_boundary(end) {
            end -= 1;
        }
        let more = if end < path.len() { "..." } else { "" };
        Err(Error::protocol(format!(
            "bad name {:?}{more} ({} bytes): {why}",
            &path[..end],
            path.len()
        )))
    };
    if path.is_empty() {
        return bad("empty");
    }
    if path.len() > MAX_PATH {
        return bad("too long");
    }
    if path.contains('\0') {
        return bad("contains NUL");
    }
    if path.starts_with('/') {
        return bad("absolute");
    }
    for (i, c) in path.split('/').enumerate() {
        match c {
            "" => return bad("empty component"),
            "." | ".." => return bad("dot component"),
            _ if c.len() > MAX_COMPONENT => return bad("component too long"),
            _ if i == 0 && c == STATE_DIR => return bad("inside the state directory"),
            _ if is_temp(c) => return bad("a temp file name"),
            _ => {}
        }
    }
    Ok(())
}

/// Whether a file name (one component) is one of `left`'s temp files.
pub fn is_temp(name: &str) -> bool {
    name.len() > TEMP_SUFFIX.len() + 1 && name.starts_with('.') && name.ends_with(TEMP_SUFFIX)
}

/// A temp name not made from a target's name (a long name's hash, a file moved aside): the
/// temp name of `.STEM.left-tmp`, itself a temp name, which no file synced or pulled has. So
/// it is never another file's temp name, and claims no name beyond `.NAME.left-tmp`.
pub fn own_temp(stem: &str) -> String {
    format!("..{stem}{TEMP_SUFFIX}{TEMP_SUFFIX}")
}

/// The temp file name for a target file name (one component), kept within 255 bytes. A name
/// too long for that gets one made from its hash, in a form of its own: as `.HASH.left-tmp` it
/// was the temp name of a file named HASH, and pulls of both in one batch wrote one temp file
/// (one of them installed with the other's bytes: review8).
pub fn temp_for(name: &str) -> String {
    if name.len() + 1 + TEMP_SUFFIX.len() <= MAX_COMPONENT {
        format!(".{name}{TEMP_SUFFIX}")
    } else {
        own_temp(&crate::hash::hex(&crate::hash::md5(name.as_bytes())))
    }
}

/// Splits `a/b/c` into (`a/b`, `c`); the parent is empty at the top.
/// The temp file's name for `rel`, relative like it.
pub fn temp_rel(rel: &str) -> String {
    match split(rel) {
        ("", name) => temp_for(name),
        (dir, name) => format!("{dir}/{}", temp_for(name)),
    }
}

pub fn split(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("", path),
    }
}

/// The name a conflict copy gets: `NAME.sync-conflict-YYYYMMDD-HHMMSS-DEVICE.EXT`, or with
/// `n` over 1, `NAME.sync-conflict-YYYYMMDD-HHMMSS-DEVICE-N.EXT` (the first name was taken).
pub fn conflict_name(path: &str, mtime: i64, device: u64, n: u32) -> String {
    let (dir, name) = split(path);
    let (stem, ext) = match name.rfind('.') {
        // A name that starts with a dot and ends in `.left-tmp` (`..left-tmp` is no temp
        // name: too short) keeps its extension in the stem: its copy would be a temp name,
        // never synced and swept as one (review12).
        Some(_) if name.starts_with('.') && name.ends_with(TEMP_SUFFIX) => (name, ""),
        Some(i) if i > 0 => (&name[..i], &name[i..]),
        _ => (name, ""),
    };
    let (y, mo, d, h, mi, s) = crate::log::civil(mtime);
    let mut dev = crate::hash::short_id(device);
    if n > 1 {
        dev = format!("{dev}-{n}");
    }
    let tail = format!(".sync-conflict-{y:04}{mo:02}{d:02}-{h:02}{mi:02}{s:02}-{dev}");
    let mut file = format!("{stem}{tail}{ext}");
    if file.len() > MAX_COMPONENT {
        // Too long for a name: the stem is cut (at a character) and marked with a hash of the
        // whole name, so that two long names keep apart; a long extension goes with it.
        let (stem, ext) = if ext.len() > 32 {
            (name, "")
        } else {
            (stem, ext)
        };
        let tag = &crate::hash::hex(&crate::hash::md5(name.as_bytes()))[..8];
        let mut cut = MAX_COMPONENT - (tail.len() + ext.len() + 9);
        while !stem.is_char_boundary(cut) {
            cut -= 1;
        }
        file = format!("{}~{tag}{tail}{ext}", &stem[..cut]);
    }
    if dir.is_empty() {
        file
    } else {
        format!("{dir}/{file}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_names() {
        for ok in [
            "a",
            "a/b/c",
            ".hidden",
            "dir/.left",
            "x..y",
            "...",
            "a b/c d",
            "ünï/cödé",
        ] {
            check(ok).unwrap();
        }
    }

    #[test]
    fn bad_names() {
        let long = "x".repeat(256);
        let longer = "a/".repeat(3000);
        for bad in [
            "",
            "/a",
            "a/",
            "a//b",
            ".",
            "..",
            "../a",
            "a/../b",
            "a/.",
            "./a",
            ".left",
            ".left/index",
            "a\0b",
            &long,
            &longer,
            ".f.left-tmp",
            "d/.f.left-tmp",
        ] {
            assert!(check(bad).is_err(), "{bad:?} accepted");
        }
    }

    /// A conflict copy of a long name still has a name (within 255 bytes, cut at a
    /// character), and two long names that differ only at the end keep apart.
    #[test]
    fn conflict_names_of_long_names_fit() {
        let a = format!("d/{}a.txt", "é".repeat(120));
        let b = format!("d/{}b.txt", "é".repeat(120));
        let long_ext = format!("x.{}", "e".repeat(250));
        for p in [a.as_str(), b.as_str(), long_ext.as_str()] {
            let c = conflict_name(p, 0, 0x7601429, 2);
            let (_, file) = split(&c);
            assert!(file.len() <= MAX_COMPONENT, "{} bytes: {file}", file.len());
            assert!(file.contains(".sync-conflict-19700101-000000-"), "{file}");
            check(&c).unwrap();
        }
        assert!(conflict_name(&a, 0, 1, 1).ends_with(".txt"));
        assert_ne!(conflict_name(&a, 0, 1, 1), conflict_name(&b, 0, 1, 1));
        assert_eq!(
            conflict_name("d/f.txt", 0, 1, 1),
            format!(
                "d/f.sync-conflict-19700101-000000-{}.txt",
                crate::hash::short_id(1)
            )
        );
    }

    #[test]
    fn temp_names() {
        assert_eq!(temp_for("a.txt"), ".a.txt.left-tmp");
        assert!(is_temp(&temp_for("a.txt")));
        let long = "y".repeat(250);
        assert!(temp_for(&long).len() <= 255);
        assert!(is_temp(&temp_for(&long)));
        // Never the temp name of the file its hash names.
        let hashed = crate::hash::hex(&crate::hash::md5(long.as_bytes()));
        assert_ne!(temp_for(&long), temp_for(&hashed));
        assert!(!is_temp(".left-tmp"));
        // Its own form is a temp name, of a temp name: no file that syncs is ever its target.
        let own = own_temp("aside-1-2-3");
        assert!(is_temp(&own) && is_temp(&own[1..own.len() - ".left-tmp".len()]));
        assert!(!is_temp(".x.left-tmp~"));
        assert!(!is_temp("a.left-tmp"));
    }

    #[test]
    fn conflict_names() {
        let t = 1_795_622_625; // 2026-11-25 16:03:45 UTC
        let dev = crate::hash::short_id(0xabcdef);
        assert_eq!(
            conflict_name("d/report.txt", t, 0xabcdef, 1),
            format!("d/report.sync-conflict-20261125-160345-{dev}.txt")
        );
        assert_eq!(
            conflict_name("Makefile", t, 0xabcdef, 1),
            format!("Makefile.sync-conflict-20261125-160345-{dev}")
        );
        assert_eq!(
            conflict_name(".bashrc", t, 0xabcdef, 3),
            format!(".bashrc.sync-conflict-20261125-160345-{dev}-3")
        );
        // Never a temp name, whatever the name (review12: `..left-tmp` gave one).
        for name in [
            "..left-tmp",
            "d/..left-tmp",
            ".a.left-tmp.x",
            "..x.left-tmp",
        ] {
            let long = format!(".{}{TEMP_SUFFIX}", "y".repeat(240));
            for p in [name, long.as_str()] {
                let c = conflict_name(p, t, 0xabcdef, 1);
                assert!(!is_temp(split(&c).1), "{p} -> {c}");
                assert!(check(&c).is_ok(), "{p} -> {c}");
            }
        }
        assert_eq!(
            conflict_name("..left-tmp", t, 0xabcdef, 1),
            format!("..left-tmp.sync-conflict-20261125-160345-{dev}")
        );
    }
}
