//! The layering of `src/` (see the crate docs in `src/lib.rs`): every
//! `crate::…` reference points to the same layer or one below, and the
//! modules form no cycle. A module new to `src/` must be given a layer here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Each top-level module and its layer (1 = bottom).
const LAYERS: &[(&str, u8)] = &[
    ("secret", 1),
    ("token", 1),
    ("ui", 1),
    ("protocol", 1),
    ("target", 1),
    ("flags", 1),
    ("harden", 2),
    ("wipe", 2),
    ("settings", 2),
    ("permission", 2),
    ("keychain", 2),
    ("net", 2),
    ("api", 2),
    ("id_token", 2),
    ("broker_client", 2),
    ("git", 2),
    ("supervise", 2),
    ("tty", 2),
    ("pty", 2),
    ("win32", 2),
    ("plan", 3),
    ("minter", 3),
    ("cache", 3),
    ("agent", 4),
    ("channel", 4),
    ("issuer", 5),
    ("sandbox", 5),
    ("cmd", 6),
    ("cli", 7),
];

fn layer(module: &str) -> u8 {
    LAYERS
        .iter()
        .find(|(m, _)| *m == module)
        .map(|(_, l)| *l)
        .unwrap_or_else(|| panic!("src/{module}: give it a layer in tests/architecture.rs"))
}

/// module -> modules it refers to through `crate::`.
fn references() -> BTreeMap<String, BTreeSet<String>> {
    fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&src, &mut files);
    let mut refs: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let relative = file.strip_prefix(&src).unwrap();
        let first = relative
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let module = first.trim_end_matches(".rs").to_owned();
        if module == "lib" || module == "main" || module == "bin" {
            continue;
        }
        // Code only: a doc link to a module above is not a dependency.
        let text: String = std::fs::read_to_string(&file)
            .unwrap()
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        let entry = refs.entry(module.clone()).or_default();
        for (i, _) in text.match_indices("crate::") {
            // `$crate::` in a macro names this crate too; `git_credential_githosted::` does not occur.
            let rest = &text[i + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() && name != module && name != "say" {
                entry.insert(name);
            }
        }
    }
    refs
}

#[test]
fn every_reference_points_down() {
    let mut upward = Vec::new();
    for (module, uses) in references() {
        for used in uses {
            if layer(&used) > layer(&module) {
                upward.push(format!(
                    "{module} (layer {}) uses {used} (layer {})",
                    layer(&module),
                    layer(&used)
                ));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "upward dependencies:\n{}",
        upward.join("\n")
    );
}

#[test]
fn modules_form_no_cycle() {
    let refs = references();
    // Depth-first search for a back edge.
    fn visit(
        node: &str,
        refs: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) {
        if let Some(at) = path.iter().position(|n| n == node) {
            panic!("cycle: {} -> {node}", path[at..].join(" -> "));
        }
        if done.contains(node) {
            return;
        }
        path.push(node.to_owned());
        for next in refs.get(node).into_iter().flatten() {
            visit(next, refs, path, done);
        }
        path.pop();
        done.insert(node.to_owned());
    }
    let mut done = BTreeSet::new();
    for module in refs.keys() {
        visit(module, &refs, &mut Vec::new(), &mut done);
    }
}

/// One blocking bridge (issue 20): a tokio runtime is built and entered only in
/// `src/net.rs` and in the programs' entries. The use cases are async; a
/// command crosses into them with `net::block_on` (in `src/cmd/` only), and a
/// program that serves until it ends (the agent, the sandbox's process 1)
/// holds a `net::Blocking`. `#[cfg(test)]` modules keep their own runtimes.
#[test]
fn runtimes_are_built_only_by_the_bridge() {
    /// Where each use of a runtime may be: the bridge itself and the programs'
    /// entries (before and after they move under `src/bin/`) may do anything.
    fn allowed(relative: &str, word: &str) -> bool {
        let anything = matches!(
            relative,
            "net.rs" | "main.rs" | "front.rs" | "agent_main.rs"
        ) || relative.starts_with("bin/");
        anything
            || match word {
                "net::block_on" => relative.starts_with("cmd/"),
                "Blocking::new" => {
                    matches!(relative, "agent/server.rs" | "agent/pipe.rs" | "sandbox.rs")
                }
                _ => false,
            }
    }
    /// The words found in one line of code: `block_on` other than the bridge's
    /// counts as a runtime entered.
    fn words(code: &str) -> Vec<&'static str> {
        let mut found = Vec::new();
        for (i, _) in code.match_indices("block_on") {
            found.push(if code[..i].ends_with("net::") {
                "net::block_on"
            } else {
                "block_on"
            });
        }
        for word in [
            "Blocking::new",
            "Runtime::new",
            "Builder::new_",
            "tokio::main",
            "runtime::Handle",
        ] {
            if code.contains(word) {
                found.push(word);
            }
        }
        found
    }
    fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&src, &mut files);
    let mut found = Vec::new();
    for file in files {
        let relative = file
            .strip_prefix(&src)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        let text = std::fs::read_to_string(&file).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (n, line) in lines.iter().enumerate() {
            let code = line.trim_start();
            // A test module (`#[cfg(test)]`, `#[cfg(all(test, unix))]`, … before `mod`) ends the code.
            if code.starts_with("#[cfg(")
                && code.contains("test")
                && lines
                    .get(n + 1)
                    .is_some_and(|next| next.trim_start().starts_with("mod "))
            {
                break;
            }
            if code.starts_with("//") {
                continue;
            }
            for word in words(code) {
                if !allowed(&relative, word) {
                    found.push(format!("src/{relative}:{}: {word}", n + 1));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "a runtime built or entered outside the bridge (src/net.rs): a command crosses once with net::block_on, the use cases are async:\n{}",
        found.join("\n")
    );
}
