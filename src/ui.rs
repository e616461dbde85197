//! What the person at the terminal reads.
//!
//! Every line the helper prints on stderr goes through [`say`]: one line,
//! prefixed with the program's name, and made [`printable`] — no control
//! characters (a URL or a server message could otherwise drive the terminal:
//! `%1b]0;…` in a remote's path), nothing that looks like a token.

use std::io::Write;

/// The prefix of every line on stderr.
pub const PREFIX: &str = "git-credential-githosted: ";

/// `say!("…", args…)`: [`say`] with `format!` arguments.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::ui::say(format!($($arg)*))
    };
}

/// Prints one line on stderr. A closed stderr is not worth failing over.
pub fn say(line: impl AsRef<str>) {
    let _ = writeln!(
        std::io::stderr().lock(),
        "{PREFIX}{}",
        printable(line.as_ref(), 2000)
    );
}

/// Text from elsewhere (a server, a platform library) made fit for one
/// terminal line: control characters dropped, anything that looks like a
/// githosted token cut to its prefix, at most `max` characters.
pub fn printable(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max));
    let mut rest = text;
    while let Some(at) = rest.find("gw_").into_iter().chain(rest.find("gr_")).min() {
        out.push_str(&rest[..at + 3]);
        rest = &rest[at + 3..];
        // A fingerprint (`gr_…1a2b3c4d`) is shown as it is.
        if rest.starts_with('…') {
            continue;
        }
        out.push('…');
        rest = rest.trim_start_matches(|c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    }
    out.push_str(rest);
    out.chars().filter(|c| !c.is_control()).take(max).collect()
}

/// Logs what `filter` lets through to stderr, one plain line per event
/// (tokens appear in events only as fingerprints): the programs' one logger.
pub fn log_to_stderr(filter: tracing_subscriber::filter::Targets) {
    use tracing_subscriber::prelude::*;
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_target(false)
                .without_time(),
        )
        .with(filter)
        .init();
}

/// Whether any of `args` holds a token (`gw_…`, `gr_…`, also as `--opt=gw_…`):
/// such an argument is visible to every user (`ps`), so the command refuses it
/// without repeating it.
pub fn pastes_a_token<'a>(args: impl IntoIterator<Item = &'a std::ffi::OsStr>) -> bool {
    args.into_iter().any(|a| {
        let a = a.to_string_lossy();
        let value = a.split_once('=').map_or(a.as_ref(), |(_, v)| v);
        value.starts_with("gw_") || value.starts_with("gr_")
    })
}

/// Whoever read our output (`status | head -1`) stopped: nothing to say.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// An error and its causes (`{:#}`, joined with ": ") on one printable line.
pub fn one_line(e: &anyhow::Error) -> String {
    printable(&format!("{e:#}").replace(['\n', '\r'], " "), 1000)
}

/// `n` things in English: `1 exchange`, `0 exchanges`, `2 cached tokens`.
pub fn count(n: impl Into<u64>, thing: &str) -> String {
    match n.into() {
        1 => format!("1 {thing}"),
        n => format!("{n} {thing}s"),
    }
}

/// Ctrl-C at one of the helper's prompts: nothing was done, and the command
/// ends with [`INTERRUPTED_STATUS`], as a shell's command does after Ctrl-C.
#[derive(Debug, thiserror::Error)]
#[error("interrupted: nothing was stored")]
pub struct Interrupted;

/// 128 + SIGINT.
pub const INTERRUPTED_STATUS: u8 = 130;

/// The candidate closest to `word` when one is close enough to be what was
/// meant (a typo): the one string distance for every "did you mean".
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .filter(|c| *c != word)
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_agree_with_their_number() {
        assert_eq!(count(1u64, "exchange"), "1 exchange");
        assert_eq!(count(0u64, "exchange"), "0 exchanges");
        assert_eq!(count(2u32, "cached token"), "2 cached tokens");
    }

    #[test]
    fn closest_finds_a_typo_and_nothing_else() {
        assert_eq!(closest("acmee", ["globex", "acme"]), Some("acme"));
        assert_eq!(closest("statsu", ["status", "login"]), Some("status"));
        assert_eq!(closest("initech", ["acme", "globex"]), None);
        assert_eq!(closest("acme", ["acme"]), None);
    }

    #[test]
    fn printable_drops_controls_and_tokens() {
        assert_eq!(printable("a\nb\x1b[31mc", 100), "ab[31mc");
        assert_eq!(printable("abcdef", 3), "abc");
        assert_eq!(
            printable("bad header: Bearer gw_abc-DEF_123 and gr_xyz.", 100),
            "bad header: Bearer gw_… and gr_…."
        );
        assert_eq!(printable("gw_", 10), "gw_…");
        assert_eq!(printable("cached gr_…1a2b3c4d", 100), "cached gr_…1a2b3c4d");
    }

    #[test]
    fn escapes_from_a_url_never_reach_the_terminal() {
        let shown = printable("`\u{1b}]0;PWNED\u{7}\u{1b}[31mRED/x.git` on host", 200);
        assert!(!shown.contains(['\u{1b}', '\u{7}']), "{shown:?}");
        assert!(shown.contains("PWNED"), "{shown:?}");
    }
}
