//! The layering of `src/` (see the crate docs in `src/lib.rs`): every
//! `crate::…` reference points to the same layer or one below, and the
//! modules form no cycle. A module new to `src/` must be given a layer here.
//! Each program under `src/bin/` names only what its allow-list
//! ([`PROGRAMS`]) lets it: the front reaches the decision through `plan`.

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
    ("unix", 2),
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
    /// entries (`src/bin/`) may do anything.
    fn allowed(relative: &str, word: &str) -> bool {
        let anything = relative == "net.rs" || relative.starts_with("bin/");
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

// ---------------------------------------------------------------- the programs

/// What a program under `src/bin/` may name from the library: a path it names
/// (with `use` aliases expanded, test code left out) must start with one of
/// these, whole segments. Layer-1 vocabulary and `plan` are allowed whole;
/// anything else item by item, as the program uses it.
const PROGRAMS: &[(&str, &[&str])] = &[
    // The front git runs: the one decision through `plan`, the agent's client,
    // and nothing that mints, confines or runs a command (no `cmd::…` but
    // git's answer, no `issuer::…` but its one-line wording of a failure).
    (
        "git-credential-githosted.rs",
        &[
            "agent::AgentDir",
            "agent::client::Agent",
            "net::Network",
            "cache::MintParams",
            "cmd::helper::USERNAME",
            "cmd::helper::answer",
            "flags",
            "harden::process",
            "issuer::classify",
            "keychain::Parent",
            "keychain::Source",
            "permission::from_git_command",
            "plan",
            "protocol",
            "say",
            "settings",
            "target",
            "token",
            "wipe::ZeroingAlloc",
        ],
    ),
    // The core: the command line and the commands; the few outside facts
    // its dispatch needs.
    (
        "git-credential-githosted-core.rs",
        &[
            "agent::dir",
            "agent::pipe::run",
            "agent::server::idle_from_env",
            "agent::server::run",
            "cli",
            "cmd",
            "git::helper_lines",
            "git::output",
            "harden::process",
            "keychain::ENV_TOKEN",
            "keychain::env_token",
            "keychain::list",
            "sandbox::init",
            "say",
            "settings",
            "ui",
            "wipe::ZeroingAlloc",
        ],
    ),
    // The agent: the agent, and the process's own protection.
    (
        "git-credential-githosted-agent.rs",
        &["agent", "harden::process", "say", "wipe::ZeroingAlloc"],
    ),
];

/// The library's name as the programs spell it.
const LIBRARY: &str = "git_credential_githosted";

/// Whether an item is test code (`#[cfg(test)]`, `#[cfg(all(test, …))]`).
fn is_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg")
            && a.meta.require_list().is_ok_and(|l| {
                l.tokens
                    .to_string()
                    .split(|c: char| !c.is_alphanumeric() && c != '_')
                    .any(|w| w == "test")
            })
    })
}

/// Every library path a program's source names, as `module::…::item`.
fn library_paths(source: &str) -> BTreeSet<String> {
    use syn::visit::Visit;

    /// Pass 1: `use` aliases (`name` -> library path).
    #[derive(Default)]
    struct Aliases(BTreeMap<String, Vec<String>>);
    impl Aliases {
        fn tree(&mut self, prefix: &[String], tree: &syn::UseTree) {
            let mut path = prefix.to_vec();
            match tree {
                syn::UseTree::Path(p) => {
                    path.push(p.ident.to_string());
                    self.tree(&path, &p.tree);
                }
                syn::UseTree::Name(n) if n.ident == "self" => {
                    if let Some(last) = path.last().cloned() {
                        self.0.insert(last, path);
                    }
                }
                syn::UseTree::Name(n) => {
                    path.push(n.ident.to_string());
                    self.0.insert(n.ident.to_string(), path);
                }
                syn::UseTree::Rename(r) => {
                    if r.ident != "self" {
                        path.push(r.ident.to_string());
                    }
                    self.0.insert(r.rename.to_string(), path);
                }
                syn::UseTree::Glob(_) => {
                    path.push("*".to_owned());
                    self.0.insert(format!("{}::*", path.join("::")), path);
                }
                syn::UseTree::Group(g) => {
                    for tree in &g.items {
                        self.tree(prefix, tree);
                    }
                }
            }
        }
    }
    impl<'a> Visit<'a> for Aliases {
        fn visit_item_use(&mut self, item: &'a syn::ItemUse) {
            self.tree(&[], &item.tree);
        }
        fn visit_item_mod(&mut self, item: &'a syn::ItemMod) {
            if !is_test(&item.attrs) {
                syn::visit::visit_item_mod(self, item);
            }
        }
        fn visit_item_fn(&mut self, item: &'a syn::ItemFn) {
            if !is_test(&item.attrs) {
                syn::visit::visit_item_fn(self, item);
            }
        }
    }

    /// Pass 2: every path that starts at the library or at an alias of it.
    struct Paths<'x> {
        aliases: &'x BTreeMap<String, Vec<String>>,
        used: BTreeSet<String>,
        found: BTreeSet<String>,
    }
    impl<'a> Visit<'a> for Paths<'_> {
        fn visit_path(&mut self, path: &'a syn::Path) {
            let words: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
            let full = match words.split_first() {
                Some((first, rest)) if first == LIBRARY => Some(rest.to_vec()),
                Some((first, rest)) => self.aliases.get(first).map(|to| {
                    self.used.insert(first.clone());
                    to.iter().skip(1).chain(rest).cloned().collect()
                }),
                None => None,
            };
            if let Some(full) = full {
                self.found.insert(full.join("::"));
            }
            syn::visit::visit_path(self, path);
        }
        /// A macro's arguments, when they are expressions (`say!`, `format!`).
        fn visit_macro(&mut self, mac: &'a syn::Macro) {
            use syn::punctuated::Punctuated;
            if let Ok(args) =
                mac.parse_body_with(Punctuated::<syn::Expr, syn::Token![,]>::parse_terminated)
            {
                for arg in &args {
                    self.visit_expr(arg);
                }
            }
            syn::visit::visit_macro(self, mac);
        }
        fn visit_item_mod(&mut self, item: &'a syn::ItemMod) {
            if !is_test(&item.attrs) {
                syn::visit::visit_item_mod(self, item);
            }
        }
        fn visit_item_fn(&mut self, item: &'a syn::ItemFn) {
            if !is_test(&item.attrs) {
                syn::visit::visit_item_fn(self, item);
            }
        }
    }

    let file = syn::parse_file(source).unwrap();
    let mut aliases = Aliases::default();
    aliases.visit_file(&file);
    // Only what points into the library; a glob names everything under it.
    aliases
        .0
        .retain(|_, to| to.first().is_some_and(|w| w == LIBRARY));
    let mut paths = Paths {
        aliases: &aliases.0,
        used: BTreeSet::new(),
        found: BTreeSet::new(),
    };
    paths.visit_file(&file);
    // A glob names everything under it; an import never used names itself.
    for (name, to) in &aliases.0 {
        if name.ends_with("::*") || !paths.used.contains(name) {
            paths.found.insert(to[1..].join("::"));
        }
    }
    paths.found
}

/// The library paths `source` names that `allowed` does not cover.
fn forbidden(source: &str, allowed: &[&str]) -> Vec<String> {
    library_paths(source)
        .into_iter()
        .filter(|path| {
            !allowed.iter().any(|a| {
                path == a
                    || path
                        .strip_prefix(a)
                        .is_some_and(|rest| rest.starts_with("::"))
            })
        })
        .collect()
}

fn program_source(file: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/bin")
        .join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_programs_reach_only_what_they_are_allowed() {
    let mut wrong = Vec::new();
    for (file, allowed) in PROGRAMS {
        for path in forbidden(&program_source(file), allowed) {
            wrong.push(format!("src/bin/{file} names {LIBRARY}::{path}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "the programs reach past their allow-list (tests/it/architecture.rs, PROGRAMS):\n{}",
        wrong.join("\n")
    );
}

/// Every program under `src/bin/` has an allow-list, and the reader sees
/// what each names (so the test above cannot pass by seeing nothing).
#[test]
fn every_program_is_checked() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/bin");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let mut listed: Vec<String> = PROGRAMS.iter().map(|(f, _)| (*f).to_owned()).collect();
    listed.sort();
    assert_eq!(
        files, listed,
        "give each program under src/bin/ an allow-list"
    );
    for (file, _) in PROGRAMS {
        let paths = library_paths(&program_source(file));
        assert!(paths.contains("harden::process"), "{file}: {paths:?}");
    }
    let front = library_paths(&program_source("git-credential-githosted.rs"));
    for named in [
        "plan::get",
        "keychain::Source::Env",
        "cmd::helper::answer",
        "say",
    ] {
        assert!(front.contains(named), "{named} not seen in {front:?}");
    }
}

/// The reader expands aliases, groups, `self`, renames and globs, and leaves
/// test code out.
#[test]
fn the_program_reader_sees_through_use() {
    let source = r#"
        use git_credential_githosted::cmd::{self, helper::answer as reply};
        use git_credential_githosted::issuer::*;
        use git_credential_githosted::plan;
        use git_credential_githosted::keychain::Parent;
        use git_credential_githosted::minter;
        fn main() {
            cmd::scoped::exec();
            reply();
            plan::get();
            git_credential_githosted::say!("{}", minter::mint(1));
        }
        #[cfg(test)]
        mod tests {
            use git_credential_githosted::minter;
            fn t() { minter::other(); }
        }
    "#;
    let paths: Vec<String> = library_paths(source).into_iter().collect();
    assert_eq!(
        paths,
        [
            "cmd::helper::answer",
            "cmd::scoped::exec",
            "issuer::*",
            "keychain::Parent",
            "minter::mint",
            "plan::get",
            "say"
        ]
    );
    assert_eq!(
        forbidden(source, &["plan", "say", "cmd::helper::answer"]),
        [
            "cmd::scoped::exec",
            "issuer::*",
            "keychain::Parent",
            "minter::mint"
        ]
    );
}

// ---------------------------------------------------------------- the environment

/// The Rust files of `dir`, recursively.
fn rust_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// Whether `s` is the name of one of the helper's variables.
fn is_env_name(s: &str) -> bool {
    s.strip_prefix("GITHOSTED_").is_some_and(|rest| {
        !rest.is_empty()
            && rest
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
    })
}

/// Where `source` (test code left out) writes a `GITHOSTED_*` name as a
/// string, or reads the environment (`var`, `var_os`) by one of the
/// constants that hold one (`…_ENV`, `ENV_TOKEN`).
fn environment_reads(source: &str) -> Vec<String> {
    use syn::visit::Visit;
    struct Reads(Vec<String>);
    impl<'a> Visit<'a> for Reads {
        fn visit_lit_str(&mut self, lit: &'a syn::LitStr) {
            if is_env_name(&lit.value()) {
                self.0.push(format!("\"{}\"", lit.value()));
            }
        }
        fn visit_expr_call(&mut self, call: &'a syn::ExprCall) {
            let reads = matches!(&*call.func, syn::Expr::Path(p)
                if p.path.segments.last().is_some_and(|s| s.ident == "var" || s.ident == "var_os"));
            let mut arg = call.args.first();
            while let Some(syn::Expr::Reference(r)) = arg {
                arg = Some(&r.expr);
            }
            if reads && let Some(syn::Expr::Path(p)) = arg {
                let name = p
                    .path
                    .segments
                    .last()
                    .map(|s| s.ident.to_string())
                    .unwrap_or_default();
                if name.ends_with("_ENV") || name == "ENV_TOKEN" {
                    self.0.push(format!("var({name})"));
                }
            }
            syn::visit::visit_expr_call(self, call);
        }
        fn visit_macro(&mut self, mac: &'a syn::Macro) {
            use syn::punctuated::Punctuated;
            if let Ok(args) =
                mac.parse_body_with(Punctuated::<syn::Expr, syn::Token![,]>::parse_terminated)
            {
                for arg in &args {
                    self.visit_expr(arg);
                }
            }
            syn::visit::visit_macro(self, mac);
        }
        fn visit_item_mod(&mut self, item: &'a syn::ItemMod) {
            if !is_test(&item.attrs) {
                syn::visit::visit_item_mod(self, item);
            }
        }
        fn visit_item_fn(&mut self, item: &'a syn::ItemFn) {
            if !is_test(&item.attrs) {
                syn::visit::visit_item_fn(self, item);
            }
        }
    }
    let mut reads = Reads(Vec::new());
    reads.visit_file(&syn::parse_file(source).unwrap());
    reads.0
}

/// Every `GITHOSTED_*` variable is named, and read, in `src/settings.rs`
/// alone: no other module, no program (the front takes the names from
/// `settings`, never as literals), not the broker.
#[test]
fn the_helper_environment_is_read_in_settings_only() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let settings = root.join("src/settings.rs");
    let mut wrong = Vec::new();
    let mut seen_in_settings = Vec::new();
    for file in rust_files(&root.join("src"))
        .into_iter()
        .chain(rust_files(&root.join("broker/src")))
    {
        let reads = environment_reads(&std::fs::read_to_string(&file).unwrap());
        if file == settings {
            seen_in_settings = reads;
            continue;
        }
        let shown = file.strip_prefix(root).unwrap().display().to_string();
        wrong.extend(reads.into_iter().map(|r| format!("{shown}: {r}")));
    }
    assert!(
        wrong.is_empty(),
        "GITHOSTED_* read outside src/settings.rs (add a function there):\n{}",
        wrong.join("\n")
    );
    // The reader sees names where they are.
    for name in [
        "\"GITHOSTED_TOKEN\"",
        "var(TOKEN_ENV)",
        "\"GITHOSTED_BROKER\"",
    ] {
        assert!(
            seen_in_settings.iter().any(|r| r == name),
            "{name} not seen in settings.rs: {seen_in_settings:?}"
        );
    }
}

/// The reader finds names in code and in macro arguments, reads by constant,
/// and leaves messages and test code alone.
#[test]
fn the_environment_reader_sees_names_and_reads() {
    let source = r#"
        const X: &str = "GITHOSTED_X";
        fn f() {
            let _ = std::env::var_os(crate::settings::NO_AGENT_ENV);
            let _ = var(&ENV_TOKEN);
            let _ = std::env::var(name);
            tracing::debug!("GITHOSTED_TOKEN holds a repo token");
            say!("{}", std::env::var("GITHOSTED_Y").is_ok());
        }
        #[cfg(test)]
        mod tests {
            const Z: &str = "GITHOSTED_Z";
        }
    "#;
    assert_eq!(
        environment_reads(source),
        [
            "\"GITHOSTED_X\"",
            "var(NO_AGENT_ENV)",
            "var(ENV_TOKEN)",
            "\"GITHOSTED_Y\""
        ]
    );
}
