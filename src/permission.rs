//! `--permission auto`: the least privilege the git command at hand needs.
//!
//! Git runs the helper from `git-remote-http(s)`, which runs under the command
//! the user typed. Walking up the parent processes (Linux `/proc`) finds that
//! command: `fetch`, `clone`, `pull` and `ls-remote` get a read token, `push` a
//! write token, and anything else, or no answer, write (the safe fallback: git
//! does not say what it will do).

use crate::token::Permission;

/// How many parent processes to look at.
#[cfg(target_os = "linux")]
const MAX_DEPTH: usize = 8;

/// The permission the git command that started this process needs.
pub fn from_git_command() -> Permission {
    let decided = ancestors()
        .into_iter()
        .find_map(|argv| git_subcommand(&argv).and_then(permission_for));
    tracing::debug!(?decided, "--permission auto");
    decided.unwrap_or(Permission::Write)
}

fn permission_for(subcommand: &str) -> Option<Permission> {
    match subcommand {
        "fetch" | "clone" | "pull" | "ls-remote" => Some(Permission::Read),
        "push" | "send-pack" => Some(Permission::Write),
        _ => None,
    }
}

/// The subcommand of a git command line (`git -C d fetch …` → `fetch`,
/// `/usr/lib/git-core/git-push …` → `push`); `None` if it is not git.
fn git_subcommand(argv: &[String]) -> Option<&str> {
    let program = argv.first()?.rsplit('/').next()?;
    if let Some(dashed) = program.strip_prefix("git-") {
        return Some(dashed);
    }
    if program != "git" {
        return None;
    }
    let mut args = argv[1..].iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            // Options that take their value as the next word.
            "-c" | "-C" | "--git-dir" | "--work-tree" | "--namespace" | "--exec-path"
            | "--config-env" => {
                args.next();
            }
            a if a.starts_with('-') => {}
            a => return Some(a),
        }
    }
    None
}

/// The command lines of our parent, grandparent, … (nearest first).
#[cfg(target_os = "linux")]
fn ancestors() -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut pid = std::os::unix::process::parent_id();
    for _ in 0..MAX_DEPTH {
        if pid <= 1 {
            break;
        }
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            break;
        };
        let argv: Vec<String> = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        out.push(argv);
        pid = match parent_of(pid) {
            Some(p) => p,
            None => break,
        };
    }
    out
}

/// The parent pid from `/proc/PID/stat` (the field after the `(comm)`).
#[cfg(target_os = "linux")]
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = &stat[stat.rfind(')')? + 1..];
    after_comm.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(not(target_os = "linux"))]
fn ancestors() -> Vec<Vec<String>> {
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_owned).collect()
    }

    #[test]
    fn finds_the_subcommand() {
        assert_eq!(git_subcommand(&argv("git fetch origin")), Some("fetch"));
        assert_eq!(
            git_subcommand(&argv("/usr/bin/git -C /x -c a=b --no-pager push origin")),
            Some("push")
        );
        assert_eq!(
            git_subcommand(&argv("/usr/lib/git-core/git-remote-https origin https://x")),
            Some("remote-https")
        );
        assert_eq!(git_subcommand(&argv("bash -c git")), None);
        assert_eq!(git_subcommand(&argv("git --version")), None);
    }

    #[test]
    fn maps_commands_to_permissions() {
        for read in ["fetch", "clone", "pull", "ls-remote"] {
            assert_eq!(permission_for(read), Some(Permission::Read));
        }
        assert_eq!(permission_for("push"), Some(Permission::Write));
        assert_eq!(permission_for("remote-https"), None);
        assert_eq!(permission_for("credential"), None);
    }
}
