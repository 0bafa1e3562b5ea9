//! The source layout keeps its arrows one way (issue 22): no module of `src/` uses another that
//! uses it back, directly or around a ring, and between subsystems every use points down the
//! order the crate docs give (`LAYERS`). Read from the sources: `crate::` paths and `use
//! crate::{...}` groups, test modules left out.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

/// Top-level modules and folders from the top of the pipeline down: each may use only those
/// after it.
const LAYERS: &[&str] = &[
    "main", "daemon", "status", "cli", "config", "net", "scan", "sync", "proto", "store", "hash",
    "sys", "log", "error",
];

fn sources(dir: &Path, out: &mut Vec<(String, String)>) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            let rel = p.strip_prefix("src").unwrap().with_extension("");
            let mut name = rel.to_string_lossy().replace('/', "::");
            if let Some(parent) = name.strip_suffix("::mod") {
                name = parent.to_string();
            }
            let text = fs::read_to_string(&p).unwrap();
            // Test modules may use anything.
            let text = match text.find("#[cfg(test)]\nmod ") {
                Some(i) => text[..i].to_string(),
                None => text,
            };
            out.push((name, text));
        }
    }
}

/// Paths named after `crate::`, with `use crate::{a::{b, c}, d}` groups expanded.
fn paths(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        out.extend(expand("", rest));
    }
    out
}

/// The paths a use tree starting at `s` names, each prefixed.
fn expand(prefix: &str, s: &str) -> Vec<String> {
    let head: String = s
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
        .collect();
    let after = &s[head.len()..];
    if !after.starts_with('{') {
        return vec![format!("{prefix}{head}")];
    }
    // A group: split its items at depth 0.
    let (mut depth, mut start, mut items) = (0, 1, Vec::new());
    for (i, c) in after.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    items.push(&after[start..i]);
                    break;
                }
            }
            ',' if depth == 1 => {
                items.push(&after[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    let inner = format!("{prefix}{head}");
    items
        .iter()
        .map(|x| x.trim())
        .filter(|x| !x.is_empty())
        .flat_map(|x| expand(&inner, x))
        .collect()
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    sources(Path::new("src"), &mut files);
    let mods: BTreeSet<String> = files.iter().map(|(m, _)| m.clone()).collect();
    let mut g = BTreeMap::new();
    for (m, text) in &files {
        let mut deps = BTreeSet::new();
        for p in paths(text) {
            let parts: Vec<&str> = p.split("::").filter(|s| !s.is_empty()).collect();
            // The longest prefix that is a module.
            if let Some(d) = (1..=parts.len())
                .rev()
                .map(|k| parts[..k].join("::"))
                .find(|c| mods.contains(c))
                && d != *m
            {
                deps.insert(d);
            }
        }
        g.insert(m.clone(), deps);
    }
    g
}

fn top(m: &str) -> &str {
    m.split("::").next().unwrap()
}

#[test]
fn no_module_uses_one_that_uses_it_back() {
    let g = graph();
    assert!(g.len() > 20, "modules found: {:?}", g.keys());
    // Depth-first search for a back edge; the ring is reported.
    fn visit<'a>(
        m: &'a str,
        g: &'a BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<&'a str, u8>,
        stack: &mut Vec<&'a str>,
    ) {
        state.insert(m, 1);
        stack.push(m);
        for d in g.get(m).into_iter().flatten() {
            match state.get(d.as_str()) {
                Some(1) => {
                    let at = stack.iter().position(|x| x == d).unwrap();
                    panic!("import cycle: {} -> {d}", stack[at..].join(" -> "));
                }
                Some(_) => {}
                None => visit(d, g, state, stack),
            }
        }
        stack.pop();
        state.insert(m, 2);
    }
    let mut state = BTreeMap::new();
    for m in g.keys() {
        if !state.contains_key(m.as_str()) {
            visit(m, &g, &mut state, &mut Vec::new());
        }
    }
}

#[test]
fn subsystems_use_only_those_below_them() {
    let g = graph();
    let rank = |m: &str| {
        LAYERS
            .iter()
            .position(|l| *l == top(m))
            .unwrap_or_else(|| panic!("{m}: not in LAYERS; place it in the order"))
    };
    let mut wrong = Vec::new();
    for (m, deps) in &g {
        for d in deps {
            if top(m) != top(d) && rank(d) <= rank(m) {
                wrong.push(format!("{m} -> {d}"));
            }
        }
    }
    assert!(wrong.is_empty(), "uses against the layer order: {wrong:?}");
}

#[test]
fn the_reader_of_paths_expands_groups() {
    assert_eq!(
        paths("use crate::{a::{b, c::D}, e};\nlet x = crate::f::g(1);"),
        ["a::b", "a::c::D", "e", "f::g"]
    );
}
