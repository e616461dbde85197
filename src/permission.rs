//! `--permission auto`: the least privilege the git command at hand needs.
//!
//! Git runs the helper from `git-remote-http(s)`, which runs under the command
//! the user typed. Walking up the parent processes (Linux `/proc`; macOS and
//! FreeBSD `sysctl`) finds that command: `fetch`, `clone`, `pull` and
//! `ls-remote` get a read token, `push` a write token, and anything else, or no
//! answer, write (the safe fallback: git does not say what it will do).

use crate::token::Permission;

/// How many parent processes to look at.
#[cfg(any(target_os = "linux", target_os = "macos", target_os = "freebsd"))]
const MAX_DEPTH: usize = 8;

/// The most argument bytes read for one process on macOS and FreeBSD: the
/// kernel's own limit `kern.argmax` (as `/proc/PID/cmdline` is bounded by the
/// kernel on Linux), and never more than this.
#[cfg(any(target_os = "macos", target_os = "freebsd"))]
const MAX_ARGS_BYTES: usize = 4 << 20;

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
#[cfg(any(target_os = "linux", target_os = "macos", target_os = "freebsd"))]
fn ancestors() -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut pid = std::os::unix::process::parent_id();
    for _ in 0..MAX_DEPTH {
        if pid <= 1 {
            break;
        }
        let Some(argv) = os::argv_of(pid) else {
            break;
        };
        out.push(argv);
        pid = match os::parent_of(pid) {
            Some(p) => p,
            None => break,
        };
    }
    out
}

#[cfg(not(any(target_os = "linux", target_os = "macos", target_os = "freebsd")))]
fn ancestors() -> Vec<Vec<String>> {
    Vec::new()
}

/// An argv from its NUL-terminated pieces: empty ones dropped, invalid UTF-8
/// replaced (what every platform's reader does with the kernel's bytes).
#[cfg(any(test, target_os = "linux", target_os = "macos", target_os = "freebsd"))]
fn argv_from<'a>(pieces: impl Iterator<Item = &'a [u8]>) -> Vec<String> {
    pieces
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// NUL-separated arguments, as in Linux `/proc/PID/cmdline` and FreeBSD
/// `kern.proc.args`.
#[cfg(any(test, target_os = "linux", target_os = "freebsd"))]
fn split_args(bytes: &[u8]) -> Vec<String> {
    argv_from(bytes.split(|b| *b == 0))
}

/// The argv in a macOS `KERN_PROCARGS2` buffer: `argc` (a native-endian
/// `i32`), the executable's path, NUL padding, then `argc` NUL-terminated
/// arguments (the environment follows; it is not read). `None` when the
/// buffer does not have that shape; arguments cut off by the end of the buffer
/// are left out.
#[cfg(any(test, target_os = "macos"))]
fn parse_procargs2(buf: &[u8]) -> Option<Vec<String>> {
    let (argc, rest) = buf.split_first_chunk::<4>()?;
    let argc = usize::try_from(i32::from_ne_bytes(*argc)).ok()?;
    let path_end = rest.iter().position(|b| *b == 0)?;
    let padded = rest.get(path_end..)?;
    let Some(args_start) = padded.iter().position(|b| *b != 0) else {
        return Some(Vec::new());
    };
    let args = padded.get(args_start..)?;
    Some(argv_from(
        args.split_inclusive(|b| *b == 0)
            .take(argc)
            .filter_map(|a| a.strip_suffix(&[0])),
    ))
}

#[cfg(target_os = "linux")]
mod os {
    /// The command line from `/proc/PID/cmdline`.
    pub(super) fn argv_of(pid: u32) -> Option<Vec<String>> {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        Some(super::split_args(&cmdline))
    }

    /// The parent pid from `/proc/PID/stat` (the field after the `(comm)`).
    pub(super) fn parent_of(pid: u32) -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let after_comm = &stat[stat.rfind(')')? + 1..];
        after_comm.split_whitespace().nth(1)?.parse().ok()
    }
}

/// The size of the argument buffer to read: `kern.argmax`, at most
/// [`MAX_ARGS_BYTES`].
#[cfg(any(target_os = "macos", target_os = "freebsd"))]
fn args_buffer() -> Option<Vec<u8>> {
    let mut argmax = [0u8; size_of::<libc::c_int>()];
    let written = crate::unix::sysctl_bytes(&mut [libc::CTL_KERN, libc::KERN_ARGMAX], &mut argmax)?;
    if written != argmax.len() {
        return None;
    }
    let size = usize::try_from(libc::c_int::from_ne_bytes(argmax)).ok()?;
    Some(vec![0; size.min(MAX_ARGS_BYTES)])
}

#[cfg(target_os = "macos")]
mod os {
    /// The command line from `sysctl kern.procargs2.PID`.
    pub(super) fn argv_of(pid: u32) -> Option<Vec<String>> {
        let pid = libc::c_int::try_from(pid).ok()?;
        let mut buf = super::args_buffer()?;
        let written =
            crate::unix::sysctl_bytes(&mut [libc::CTL_KERN, libc::KERN_PROCARGS2, pid], &mut buf)?;
        Some(super::parse_procargs2(buf.get(..written)?).unwrap_or_default())
    }

    /// The parent pid from `proc_pidinfo(PROC_PIDT_SHORTBSDINFO)`.
    pub(super) fn parent_of(pid: u32) -> Option<u32> {
        let pid = libc::c_int::try_from(pid).ok()?;
        Some(crate::unix::bsd_short_info(pid)?.pbsi_ppid)
    }
}

#[cfg(target_os = "freebsd")]
mod os {
    /// The command line from `sysctl kern.proc.args.PID`.
    pub(super) fn argv_of(pid: u32) -> Option<Vec<String>> {
        let pid = libc::c_int::try_from(pid).ok()?;
        let mut buf = super::args_buffer()?;
        let mib = &mut [libc::CTL_KERN, libc::KERN_PROC, libc::KERN_PROC_ARGS, pid];
        let written = crate::unix::sysctl_bytes(mib, &mut buf)?;
        Some(super::split_args(buf.get(..written)?))
    }

    /// The parent pid from `sysctl kern.proc.pid.PID` (`kinfo_proc.ki_ppid`).
    pub(super) fn parent_of(pid: u32) -> Option<u32> {
        let pid = libc::c_int::try_from(pid).ok()?;
        u32::try_from(crate::unix::kinfo_proc(pid)?.ki_ppid).ok()
    }
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

    fn procargs2(argc: i32, rest: &[u8]) -> Vec<u8> {
        let mut buf = argc.to_ne_bytes().to_vec();
        buf.extend_from_slice(rest);
        buf
    }

    #[test]
    fn splits_nul_separated_arguments() {
        assert_eq!(
            split_args(b"git\0-C\0/x\0fetch\0origin\0"),
            ["git", "-C", "/x", "fetch", "origin"]
        );
        // Empty arguments dropped, no trailing NUL, invalid UTF-8 replaced.
        assert_eq!(
            split_args(b"git\0\0push\0\xff"),
            ["git", "push", "\u{fffd}"]
        );
        assert!(split_args(b"").is_empty());
        assert!(split_args(b"\0\0").is_empty());
    }

    #[test]
    fn parses_procargs2() {
        // argc, exec path, NUL padding, argv, then the environment.
        let buf = procargs2(
            3,
            b"/usr/bin/git\0\0\0\0git\0fetch\0origin\0HOME=/Users/a\0PATH=/bin\0",
        );
        let argv = parse_procargs2(&buf).unwrap();
        assert_eq!(argv, ["git", "fetch", "origin"]);
        assert_eq!(git_subcommand(&argv), Some("fetch"));
        // No padding after the path; argc 0; nothing after the path.
        assert_eq!(
            parse_procargs2(&procargs2(2, b"/bin/git\0git\0push\0")).unwrap(),
            ["git", "push"]
        );
        assert!(
            parse_procargs2(&procargs2(0, b"/bin/git\0git\0"))
                .unwrap()
                .is_empty()
        );
        assert!(
            parse_procargs2(&procargs2(1, b"/bin/git\0\0\0"))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn malformed_procargs2_is_refused_or_cut_short() {
        // Shorter than argc, a negative argc, a path with no end.
        assert_eq!(parse_procargs2(b""), None);
        assert_eq!(parse_procargs2(&[1, 0, 0]), None);
        assert_eq!(parse_procargs2(&procargs2(-1, b"/bin/git\0git\0")), None);
        assert_eq!(parse_procargs2(&procargs2(i32::MIN, b"/bin/git\0")), None);
        assert_eq!(parse_procargs2(&procargs2(1, b"/bin/git")), None);
        // argc past the end of the buffer: what is there; an argument the end
        // cut off is left out, not read as a shorter word.
        assert_eq!(
            parse_procargs2(&procargs2(i32::MAX, b"/g\0git\0fetc")).unwrap(),
            ["git"]
        );
        assert_eq!(
            parse_procargs2(&procargs2(5, b"/g\0git\0push\0")).unwrap(),
            ["git", "push"]
        );
        // Arbitrary bytes never panic.
        for len in 0..64 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 % 5) as u8).collect();
            let _ = parse_procargs2(&bytes);
            let _ = split_args(&bytes);
        }
    }

    /// The kernel interface itself: this process's own command line and parent
    /// read back (the macOS and FreeBSD code is only type-checked off those
    /// systems; this runs wherever the suite does).
    #[cfg(any(target_os = "linux", target_os = "macos", target_os = "freebsd"))]
    #[test]
    fn reads_own_ancestry() {
        let me = std::process::id();
        let expected: Vec<String> = std::env::args_os()
            .map(|a| a.to_string_lossy().into_owned())
            .filter(|a| !a.is_empty())
            .collect();
        assert_eq!(os::argv_of(me), Some(expected));
        assert_eq!(os::parent_of(me), Some(std::os::unix::process::parent_id()));
        let ancestors = ancestors();
        assert!(!ancestors.is_empty() && ancestors.len() <= MAX_DEPTH);
        assert!(!ancestors[0].is_empty(), "{ancestors:?}");
    }
}
