//! `.leftignore`: which paths in the share are left out of syncing, with gitignore's rules.
//!
//! The file sits at the top of the share and holds one pattern per line, read as git reads a
//! `.gitignore` (see `gitignore(5)`):
//!
//! - Blank lines match nothing. A line starting with `#` is a comment; `\#` starts a pattern
//!   with a literal `#`. Trailing spaces are dropped unless escaped (`foo\ `); leading spaces
//!   are kept. A trailing CR (CRLF files) and a UTF-8 byte order mark are dropped.
//! - A leading `!` re-includes what an earlier pattern excluded; `\!` starts a pattern with a
//!   literal `!`. The last pattern that matches a path decides.
//! - A trailing `/` makes the pattern match folders only (and so everything inside them).
//! - A pattern with no `/` (other than a trailing one) matches a name at any depth. A pattern
//!   with a `/` at the start or in the middle is anchored to the top of the share; a leading `/`
//!   only anchors and is not part of the pattern.
//! - `*` matches any run of characters except `/`, `?` one character except `/`, `[...]` one
//!   character from a set (`[a-z]`, `[!0-9]` or `[^0-9]`, `[[:digit:]]` and the other POSIX
//!   classes, `]` first is literal), `\` makes the next character literal.
//! - `**` as a whole segment crosses folders: `**/foo` matches `foo` anywhere, `abc/**` matches
//!   everything inside `abc` (not `abc` itself), `a/**/b` matches `a/b`, `a/x/b`, `a/x/y/b`.
//!   Any other run of stars is a plain `*`.
//! - A path inside an excluded folder is excluded, whatever later patterns say: as in git, a
//!   file cannot be re-included when a folder above it is excluded.
//!
//! Lines that can never match are skipped and counted (see [`Ignore::skipped`]): a lone `!` or
//! `/`, a pattern ending in an unescaped `\`, an unterminated `[`, an unknown `[:class:]`, an
//! empty segment (`a//b`), a line over [`MAX_PATTERN_LEN`] bytes, and every pattern past
//! [`MAX_PATTERNS`]. Git would keep such a pattern but it would never match, so skipping it
//! changes nothing. `\/` is read as `/`. Matching is case-sensitive and works on characters, so
//! `?` matches one `é`. Nothing is ignored unless a pattern says so.
//!
//! Matching takes time polynomial in the lengths of the pattern and the path, never
//! exponential: `*` and `**` use the classic greedy match that only ever backtracks to the last
//! star.

/// The name of the ignore file at the top of the share.
pub const FILE_NAME: &str = ".leftignore";
/// Patterns past this many are skipped.
pub const MAX_PATTERNS: usize = 10_000;
/// Lines longer than this many bytes (after trimming trailing spaces) are skipped.
pub const MAX_PATTERN_LEN: usize = 4096;

/// The parsed patterns of an ignore file, in file order.
#[derive(Debug, Clone, Default)]
pub struct Ignore {
    rules: Vec<Rule>,
    skipped: usize,
}

#[derive(Debug, Clone)]
struct Rule {
    /// `!pattern`: matching paths are re-included.
    negated: bool,
    /// `pattern/`: matches folders only.
    dir_only: bool,
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    /// No `/` in the pattern: matched against the last component, at any depth.
    Name(Glob),
    /// Anchored: matched against the whole path, one segment per component.
    Path(Vec<Seg>),
}

#[derive(Debug, Clone)]
enum Seg {
    /// One component matching this glob.
    Glob(Glob),
    /// `**`: zero or more components.
    Any,
}

/// A pattern for one component (no `/` in it).
#[derive(Debug, Clone)]
struct Glob(Vec<Tok>);

#[derive(Debug, Clone)]
enum Tok {
    Char(char),
    /// `?`
    One,
    /// `*` (and any run of stars inside a segment).
    Star,
    /// `[...]`
    Class(Class),
}

#[derive(Debug, Clone)]
struct Class {
    negated: bool,
    items: Vec<Item>,
}

#[derive(Debug, Clone)]
enum Item {
    Char(char),
    Range(char, char),
    Named(fn(&char) -> bool),
}

impl Ignore {
    /// Parses the text of an ignore file. Never fails: lines that cannot match are skipped.
    pub fn parse(text: &str) -> Ignore {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut ig = Ignore::default();
        for line in text.split('\n') {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let line = trim_trailing_spaces(line);
            if line.is_empty() {
                continue;
            }
            let rule = if line.len() > MAX_PATTERN_LEN || ig.rules.len() >= MAX_PATTERNS {
                None
            } else {
                compile(line)
            };
            match rule {
                Some(rule) => ig.rules.push(rule),
                None => ig.skipped += 1,
            }
        }
        ig
    }

    /// Whether `path` (relative to the top of the share, `/`-separated) is ignored; `is_dir`
    /// says whether it is a folder. A path inside an ignored folder is ignored.
    pub fn is_ignored(&self, path: &str, is_dir: bool) -> bool {
        if self.rules.is_empty() {
            return false;
        }
        let comps: Vec<Vec<char>> = path
            .split('/')
            .filter(|c| !c.is_empty())
            .map(|c| c.chars().collect())
            .collect();
        let n = comps.len();
        (1..=n).any(|k| self.excludes(&comps[..k], k < n || is_dir))
    }

    /// Whether the patterns hold no rule at all (then nothing is ignored).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// How many patterns are in force.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// How many non-blank, non-comment lines were skipped because they can never match or are
    /// over the limits; worth a warning.
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    /// Whether the last pattern matching this path itself (ancestors aside) excludes it.
    fn excludes(&self, comps: &[Vec<char>], is_dir: bool) -> bool {
        self.rules
            .iter()
            .rev()
            .find(|r| r.matches(comps, is_dir))
            .is_some_and(|r| !r.negated)
    }
}

impl Rule {
    fn matches(&self, comps: &[Vec<char>], is_dir: bool) -> bool {
        if self.dir_only && !is_dir {
            return false;
        }
        match &self.kind {
            Kind::Name(g) => comps.last().is_some_and(|c| g.matches(c)),
            Kind::Path(segs) => path_matches(segs, comps),
        }
    }
}

/// Drops trailing spaces that are not escaped with `\`, as git does (tabs are kept).
fn trim_trailing_spaces(line: &str) -> &str {
    let mut end = 0;
    let mut chars = line.char_indices();
    while let Some((i, c)) = chars.next() {
        if c == '\\' {
            end = match chars.next() {
                Some((j, d)) => j + d.len_utf8(),
                None => i + 1,
            };
        } else if c != ' ' {
            end = i + c.len_utf8();
        }
    }
    &line[..end]
}

/// Compiles one pattern line (trailing spaces already trimmed); `None` if it can never match.
fn compile(line: &str) -> Option<Rule> {
    let (negated, rest) = match line.strip_prefix('!') {
        Some(r) => (true, r),
        None => (false, line),
    };
    let (dir_only, rest) = match rest.strip_suffix('/') {
        Some(r) => (true, r),
        None => (false, rest),
    };
    if rest.is_empty() {
        return None;
    }
    let mut segs = split_segments(rest);
    let kind = if segs.len() == 1 {
        Kind::Name(Glob::compile(&segs[0])?)
    } else {
        if segs[0].is_empty() {
            segs.remove(0);
        }
        let mut out = Vec::with_capacity(segs.len() + 1);
        for s in &segs {
            if s.is_empty() {
                return None;
            }
            if s.len() == 2 && s[0] == '*' && s[1] == '*' {
                if !matches!(out.last(), Some(Seg::Any)) {
                    out.push(Seg::Any);
                }
            } else {
                out.push(Seg::Glob(Glob::compile(s)?));
            }
        }
        // A trailing `**` needs at least one component: `abc/**` does not match `abc`.
        if matches!(out.last(), Some(Seg::Any)) {
            out.insert(out.len() - 1, Seg::Glob(Glob(vec![Tok::Star])));
        }
        Kind::Path(out)
    };
    Some(Rule {
        negated,
        dir_only,
        kind,
    })
}

/// Splits a pattern at each `/` (an escaped `\/` counts as `/`); escapes are kept for
/// [`Glob::compile`].
fn split_segments(pat: &str) -> Vec<Vec<char>> {
    let mut segs = Vec::new();
    let mut cur = Vec::new();
    let mut chars = pat.chars();
    while let Some(c) = chars.next() {
        match (c, if c == '\\' { chars.next() } else { None }) {
            ('/', _) | ('\\', Some('/')) => segs.push(std::mem::take(&mut cur)),
            ('\\', Some(d)) => cur.extend(['\\', d]),
            _ => cur.push(c),
        }
    }
    segs.push(cur);
    segs
}

impl Glob {
    /// Compiles one segment; `None` on a trailing `\`, an unterminated `[` or an unknown class.
    fn compile(p: &[char]) -> Option<Glob> {
        let mut toks = Vec::with_capacity(p.len());
        let mut i = 0;
        while i < p.len() {
            match p[i] {
                '\\' => {
                    toks.push(Tok::Char(*p.get(i + 1)?));
                    i += 2;
                }
                '*' => {
                    if !matches!(toks.last(), Some(Tok::Star)) {
                        toks.push(Tok::Star);
                    }
                    i += 1;
                }
                '?' => {
                    toks.push(Tok::One);
                    i += 1;
                }
                '[' => {
                    let (class, next) = Class::compile(p, i + 1)?;
                    toks.push(Tok::Class(class));
                    i = next;
                }
                c => {
                    toks.push(Tok::Char(c));
                    i += 1;
                }
            }
        }
        Some(Glob(toks))
    }

    /// Whether the glob matches the whole of `text`: greedy, backtracking only to the last `*`,
    /// so at most `pattern × text` steps.
    fn matches(&self, text: &[char]) -> bool {
        let p = &self.0;
        let (mut pi, mut ti) = (0, 0);
        // After the last `*` seen: where the pattern resumes, and where the star's match ends.
        let mut star: Option<(usize, usize)> = None;
        while ti < text.len() {
            match p.get(pi) {
                Some(Tok::Star) => {
                    star = Some((pi + 1, ti));
                    pi += 1;
                    continue;
                }
                Some(t) if t.matches(text[ti]) => {
                    pi += 1;
                    ti += 1;
                    continue;
                }
                _ => {}
            }
            match star {
                Some((sp, st)) => {
                    star = Some((sp, st + 1));
                    pi = sp;
                    ti = st + 1;
                }
                None => return false,
            }
        }
        p[pi..].iter().all(|t| matches!(t, Tok::Star))
    }
}

impl Tok {
    /// Whether this single-character token matches `c` (never called on `Star`).
    fn matches(&self, c: char) -> bool {
        match self {
            Tok::Char(x) => *x == c,
            Tok::One => true,
            Tok::Star => false,
            Tok::Class(cl) => cl.matches(c),
        }
    }
}

impl Class {
    /// Compiles a set starting just after its `[`, with git's rules; returns it and the index
    /// after its `]`, or `None` if it is unterminated or names an unknown class.
    fn compile(p: &[char], mut i: usize) -> Option<(Class, usize)> {
        let negated = matches!(p.get(i), Some('!' | '^'));
        if negated {
            i += 1;
        }
        let mut items = Vec::new();
        // The last single character, which a following `-` turns into a range.
        let mut prev: Option<char> = None;
        let mut first = true;
        loop {
            let c = *p.get(i)?;
            if c == ']' && !first {
                return Some((Class { negated, items }, i + 1));
            }
            first = false;
            if c == '\\' {
                let d = *p.get(i + 1)?;
                items.push(Item::Char(d));
                prev = Some(d);
                i += 2;
            } else if let (Some(lo), '-', Some(&n)) = (prev, c, p.get(i + 1))
                && n != ']'
            {
                let (hi, next) = if n == '\\' {
                    (*p.get(i + 2)?, i + 3)
                } else {
                    (n, i + 2)
                };
                items.push(Item::Range(lo, hi));
                prev = None;
                i = next;
            } else if c == '[' && p.get(i + 1) == Some(&':') {
                let start = i + 2;
                let end = start + p[start..].iter().position(|&x| x == ']')?;
                if end > start && p[end - 1] == ':' {
                    let name: String = p[start..end - 1].iter().collect();
                    items.push(Item::Named(named_class(&name)?));
                    prev = None;
                    i = end + 1;
                } else {
                    // No `:]`: the `[` is an ordinary member.
                    items.push(Item::Char('['));
                    prev = Some('[');
                    i += 1;
                }
            } else {
                items.push(Item::Char(c));
                prev = Some(c);
                i += 1;
            }
        }
    }

    fn matches(&self, c: char) -> bool {
        let hit = self.items.iter().any(|it| match it {
            Item::Char(x) => *x == c,
            Item::Range(lo, hi) => *lo <= c && c <= *hi,
            Item::Named(f) => f(&c),
        });
        hit != self.negated
    }
}

/// The POSIX character classes, for ASCII as in git.
fn named_class(name: &str) -> Option<fn(&char) -> bool> {
    Some(match name {
        "alnum" => char::is_ascii_alphanumeric,
        "alpha" => char::is_ascii_alphabetic,
        "blank" => |c: &char| *c == ' ' || *c == '\t',
        "cntrl" => char::is_ascii_control,
        "digit" => char::is_ascii_digit,
        "graph" => char::is_ascii_graphic,
        "lower" => char::is_ascii_lowercase,
        "print" => |c: &char| c.is_ascii_graphic() || *c == ' ',
        "punct" => char::is_ascii_punctuation,
        "space" => |c: &char| c.is_ascii_whitespace() || *c == '\x0b',
        "upper" => char::is_ascii_uppercase,
        "xdigit" => char::is_ascii_hexdigit,
        _ => return None,
    })
}

/// Whether the segments match the whole component list, `**` standing for zero or more
/// components: the same greedy match as [`Glob::matches`], one level up, so at most
/// `segments × components` component matches.
fn path_matches(segs: &[Seg], comps: &[Vec<char>]) -> bool {
    let (mut si, mut ci) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ci < comps.len() {
        match segs.get(si) {
            Some(Seg::Any) => {
                star = Some((si + 1, ci));
                si += 1;
                continue;
            }
            Some(Seg::Glob(g)) if g.matches(&comps[ci]) => {
                si += 1;
                ci += 1;
                continue;
            }
            _ => {}
        }
        match star {
            Some((sp, sc)) => {
                star = Some((sp, sc + 1));
                si = sp;
                ci = sc + 1;
            }
            None => return false,
        }
    }
    segs[si..].iter().all(|s| matches!(s, Seg::Any))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    const F: bool = false;
    const D: bool = true;

    /// Runs a table of (patterns, path, is_dir, expected ignored).
    fn table(cases: &[(&str, &str, bool, bool)]) {
        let mut bad = Vec::new();
        for &(pats, path, is_dir, want) in cases {
            let got = Ignore::parse(pats).is_ignored(path, is_dir);
            if got != want {
                bad.push(format!(
                    "patterns {pats:?}, {} {path:?}: got {got}, want {want}",
                    if is_dir { "dir" } else { "file" }
                ));
            }
        }
        assert!(bad.is_empty(), "\n{}", bad.join("\n"));
    }

    #[test]
    fn names_at_any_depth() {
        table(&[
            ("foo", "foo", F, true),
            ("foo", "foo", D, true),
            ("foo", "a/foo", F, true),
            ("foo", "a/b/foo", D, true),
            ("foo", "foo/inside", F, true),
            ("foo", "foobar", F, false),
            ("foo", "afoo", F, false),
            ("foo", "a/foo.txt", F, false),
            ("*.o", "x.o", F, true),
            ("*.o", "a/b/x.o", F, true),
            ("*.o", ".o", F, true),
            ("*.o", "x.oo", F, false),
            ("*.o", "x.o/y", F, true),
            ("*", "anything/at/all", F, true),
            ("a?c", "abc", F, true),
            ("a?c", "ac", F, false),
            ("a?c", "abbc", F, false),
            ("a?c", "a/c", F, false),
            ("caf?", "café", F, true),
            ("*", ".hidden", F, true),
            ("Foo", "foo", F, false),
        ]);
    }

    #[test]
    fn folders_only() {
        table(&[
            ("frotz/", "frotz", D, true),
            ("frotz/", "frotz", F, false),
            ("frotz/", "a/frotz", D, true),
            ("frotz/", "frotz/x", F, true),
            ("frotz/", "a/frotz/x", F, true),
            ("frotz/", "a/frotz", F, false),
            ("doc/frotz/", "doc/frotz", D, true),
            ("doc/frotz/", "doc/frotz/x", F, true),
            ("doc/frotz/", "doc/frotz", F, false),
            ("doc/frotz/", "a/doc/frotz", D, false),
            ("doc/frotz/", "frotz", D, false),
            ("doc/frotz", "doc/frotz", F, true),
            ("doc/frotz", "doc/frotz", D, true),
            ("**/", "any", D, true),
            ("**/", "any", F, false),
            ("**/", "dir/file", F, true),
        ]);
    }

    #[test]
    fn anchoring() {
        table(&[
            ("/*.c", "cat-file.c", F, true),
            ("/*.c", "mozilla-sha1/sha1.c", F, false),
            ("*.c", "mozilla-sha1/sha1.c", F, true),
            ("/foo", "foo", F, true),
            ("/foo", "a/foo", F, false),
            ("a/b", "a/b", F, true),
            ("a/b", "x/a/b", F, false),
            ("a/*.c", "a/x.c", F, true),
            ("foo/*.c", "foo/bar/hello.c", F, false),
            ("foo/*", "foo/test.json", F, true),
            ("foo/*", "foo/bar", D, true),
            ("foo/*", "foo/bar/hello.c", F, true),
            ("foo/*", "foo", D, false),
            ("a/b", "/a/b/", F, true),
            ("*", "", F, false),
            ("*", "/", D, false),
        ]);
    }

    #[test]
    fn double_stars() {
        table(&[
            ("**/foo", "foo", F, true),
            ("**/foo", "a/foo", F, true),
            ("**/foo", "a/b/foo", D, true),
            ("**/foo", "foo/bar", F, true),
            ("**/foo", "xfoo", F, false),
            ("**/foo/bar", "foo/bar", F, true),
            ("**/foo/bar", "x/y/foo/bar", F, true),
            ("**/foo/bar", "bar", F, false),
            ("**/foo/bar", "foo/x/bar", F, false),
            ("abc/**", "abc/x", F, true),
            ("abc/**", "abc/x/y", F, true),
            ("abc/**", "abc", D, false),
            ("abc/**", "xabc/y", F, false),
            ("abc/**", "a/abc/x", F, false),
            ("a/**/b", "a/b", F, true),
            ("a/**/b", "a/x/b", F, true),
            ("a/**/b", "a/x/y/b", F, true),
            ("a/**/b", "a/xb", F, false),
            ("a/**/b", "b", F, false),
            ("a/**/b", "x/a/b", F, false),
            ("a/**/**/b", "a/b", F, true),
            ("a/**/b/**/c", "a/1/b/2/3/c", F, true),
            ("a/**/b/**/c", "a/1/c/2/b", F, false),
            ("**", "x/y/z", F, true),
            ("/**", "x", F, true),
            ("**/**", "x", F, true),
            ("a**b", "axxb", F, true),
            ("a**b", "a/b", F, false),
            ("x/a**b", "x/ab", F, true),
            ("x/a**b", "x/a/b", F, false),
            ("x/**b", "x/ab", F, true),
            ("x/**b", "x/a/b", F, false),
            ("\\*\\*/x", "**/x", F, true),
            ("\\*\\*/x", "a/x", F, false),
        ]);
    }

    #[test]
    fn negation_and_order() {
        table(&[
            ("*.log\n!keep.log", "a.log", F, true),
            ("*.log\n!keep.log", "keep.log", F, false),
            ("*.log\n!keep.log", "x/keep.log", F, false),
            ("!keep.log\n*.log", "keep.log", F, true),
            ("*.log\n!*.log\n*.log", "a.log", F, true),
            // A file cannot be re-included when its folder is excluded.
            ("build/\n!build/keep", "build/keep", F, true),
            ("build\n!build/keep", "build/keep", F, true),
            // ... but `abc/**` does not exclude `abc` itself, so this works.
            ("abc/**\n!abc/keep", "abc/keep", F, false),
            ("abc/**\n!abc/keep", "abc/other", F, true),
            ("abc/**\n!abc/sub/x", "abc/sub/x", F, true),
            // gitignore(5): exclude everything except folder foo/bar.
            ("/*\n!/foo\n/foo/*\n!/foo/bar", "foo/bar/x", F, false),
            ("/*\n!/foo\n/foo/*\n!/foo/bar", "foo/bar", D, false),
            ("/*\n!/foo\n/foo/*\n!/foo/bar", "foo", D, false),
            ("/*\n!/foo\n/foo/*\n!/foo/bar", "foo/baz", F, true),
            ("/*\n!/foo\n/foo/*\n!/foo/bar", "other", F, true),
            ("/*\n!/foo\n/foo/*\n!/foo/bar", "other/x", F, true),
            ("*\n!*/", "d", D, false),
            ("*\n!*/", "d/f", F, true),
            ("tmp/\n!tmp/", "tmp/x", F, false),
            ("!nothing", "nothing", F, false),
        ]);
    }

    #[test]
    fn escapes_comments_and_spaces() {
        table(&[
            ("\\#file", "#file", F, true),
            ("#file", "#file", F, false),
            ("\\!important", "!important", F, true),
            ("\\!important", "important", F, false),
            ("!\\!x", "!x", F, false),
            ("*\n!\\!x", "!x", F, false),
            ("foo   ", "foo", F, true),
            ("foo   ", "foo ", F, false),
            ("foo\\ ", "foo ", F, true),
            ("foo\\ ", "foo", F, false),
            ("foo\\  ", "foo ", F, true),
            ("foo \\ ", "foo  ", F, true),
            (" x", " x", F, true),
            (" x", "x", F, false),
            ("x\t", "x\t", F, true),
            ("\\*", "*", F, true),
            ("\\*", "a", F, false),
            ("\\?", "?", F, true),
            ("\\?", "a", F, false),
            ("\\a", "a", F, true),
            ("a\\/b", "a/b", F, true),
            ("\\\\", "\\", F, true),
            ("# a comment\n\n   \nfoo", "foo", F, true),
            ("foo\r\nbar\r\n", "foo", F, true),
            ("foo\r\nbar\r\n", "bar", F, true),
            ("\u{feff}foo", "foo", F, true),
            (
                "*.sync-conflict-*",
                "a.sync-conflict-20240101-120000-ABCD.txt",
                F,
                true,
            ),
            (
                "*.sync-conflict-*",
                "d/a.sync-conflict-20240101-120000-ABCD",
                F,
                true,
            ),
            ("*.sync-conflict-*", "notes.txt", F, false),
        ]);
    }

    #[test]
    fn sets() {
        table(&[
            ("*.[oa]", "x.o", F, true),
            ("*.[oa]", "x.a", F, true),
            ("*.[oa]", "x.c", F, false),
            ("[!a]*", "b", F, true),
            ("[!a]*", "a", F, false),
            ("[^a]*", "a", F, false),
            ("[a-c]x", "bx", F, true),
            ("[a-c]x", "dx", F, false),
            ("[a-]", "-", F, true),
            ("[-a]", "-", F, true),
            ("[]]", "]", F, true),
            ("[!]]", "]", F, false),
            ("[!]]", "x", F, true),
            ("[\\]]", "]", F, true),
            ("[a\\-z]", "-", F, true),
            ("[a\\-z]", "m", F, false),
            ("[z-a]", "z", F, true),
            ("[z-a]", "m", F, false),
            ("[[:digit:]]*", "1abc", F, true),
            ("[[:digit:]]*", "abc", F, false),
            ("[[:upper:][:digit:]]", "Q", F, true),
            ("[[:alpha:]]", "é", F, false),
            ("[[:x]", "[", F, true),
            ("[[:x]", "x", F, true),
            ("[é-ü]", "ö", F, true),
            ("d/[ab]/*", "d/a/x", F, true),
            ("d/[ab]/*", "d/c/x", F, false),
        ]);
    }

    #[test]
    fn skipped_lines() {
        for (text, skipped) in [
            ("!", 1),
            ("/", 1),
            ("!/", 1),
            ("foo\\", 1),
            ("[abc", 1),
            ("[", 1),
            ("[]", 1),
            ("[[:bogus:]]", 1),
            ("[a-\\", 1),
            ("a//b", 1),
            ("//a", 1),
            ("ok\n!\nalso-ok\n[bad", 2),
            ("# comment\n\n   \n", 0),
        ] {
            let ig = Ignore::parse(text);
            assert_eq!(ig.skipped(), skipped, "{text:?}");
        }
        let ig = Ignore::parse("ok\n!\nalso-ok\n[bad");
        assert_eq!(ig.len(), 2);
        assert!(ig.is_ignored("also-ok", false));
        assert!(!ig.is_ignored("[bad", false));
        assert!(Ignore::parse("").is_empty());
        assert!(Ignore::parse("# only\n\n  \n!\n").is_empty());
        assert!(!Ignore::parse("x").is_empty());
        assert!(!Ignore::parse("").is_ignored("x", false));
        assert!(!Ignore::default().is_ignored("x", true));
    }

    #[test]
    fn limits() {
        let long = "a".repeat(MAX_PATTERN_LEN + 1);
        let ig = Ignore::parse(&format!("{long}\n{}", &long[1..]));
        assert_eq!((ig.len(), ig.skipped()), (1, 1));
        assert!(ig.is_ignored(&long[1..], false));
        // Trailing spaces do not count towards the length.
        let ig = Ignore::parse(&format!("{}{}", &long[1..], " ".repeat(100)));
        assert_eq!((ig.len(), ig.skipped()), (1, 0));

        let many: String = (0..MAX_PATTERNS + 5).map(|i| format!("f{i}\n")).collect();
        let ig = Ignore::parse(&many);
        assert_eq!((ig.len(), ig.skipped()), (MAX_PATTERNS, 5));
        assert!(ig.is_ignored(&format!("f{}", MAX_PATTERNS - 1), false));
        assert!(!ig.is_ignored(&format!("f{MAX_PATTERNS}"), false));
    }

    #[test]
    fn adversarial_patterns_are_fast() {
        let limit = Duration::from_secs(5);
        let t = Instant::now();
        // Stars: exponential with naive backtracking.
        let name = "a".repeat(4000);
        let pat = format!("{}b", "*a".repeat(1000));
        assert!(!Ignore::parse(&pat).is_ignored(&name, false));
        assert!(!Ignore::parse("*a*a*a*a*a*a*a*a*a*a*b").is_ignored(&name, false));
        assert!(Ignore::parse("*a*a*a*a*a*a*a*a*a*a*").is_ignored(&name, false));
        // Double stars over a deep path.
        let deep = vec!["a"; 1000].join("/");
        let pat = format!("{}b", "**/a/".repeat(200));
        assert!(!Ignore::parse(&pat).is_ignored(&deep, false));
        let pat = format!("{}a", "**/a/".repeat(200));
        assert!(Ignore::parse(&pat).is_ignored(&deep, false));
        // Many patterns, each looked at for every ancestor.
        let many: String = (0..2000).map(|i| format!("*a*a*a*a*{i}\n")).collect();
        let ig = Ignore::parse(&many);
        let path = format!("{}/{}", vec!["aaaa"; 20].join("/"), "a".repeat(200));
        assert!(!ig.is_ignored(&path, false));
        assert!(t.elapsed() < limit, "took {:?}", t.elapsed());
    }
}
