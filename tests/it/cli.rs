//! The command line as a person meets it: output that goes away, text from
//! outside that must not drive the terminal.
//!
//! Unix only: the harness runs processes as other users, uses Unix sockets and
//! `git http-backend` (Windows runs the unit tests and `protocol_props`).
#![cfg(unix)]

use std::process::Stdio;

use githosted_testkit::*;

/// Security item 4 / first hour item 4: whoever reads our output may stop
/// reading (`status | head -1`): a quiet exit, never a panic or a core.
#[test]
fn a_closed_stdout_is_a_quiet_exit() {
    let mut world = World::configured(&[]);
    world.with_env_parent();
    world.token("app", &[]);
    let url = world.server.base_url();
    for args in [
        vec!["--api-url", url.as_str(), "status"],
        vec!["--api-url", url.as_str(), "doctor"],
        vec!["--api-url", url.as_str(), "token", "--repo", "acme/app"],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let mut cmd = world.command(helper());
        cmd.args(&args).stdout(writer).stderr(Stdio::piped());
        let out = cmd.output().unwrap();
        use std::os::unix::process::ExitStatusExt;
        let quiet = out.status.success() || out.status.signal() == Some(13);
        assert!(quiet, "{args:?}: {:?}", out.status);
        assert!(
            out.stderr.is_empty(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Security item 9: a remote URL with terminal escapes in its path reaches
/// the terminal only as plain text, with both gits.
#[test]
fn escapes_in_a_remote_url_never_reach_the_terminal() {
    for git in GITS {
        let mut world = World::configured(&[]);
        world.with_env_parent();
        let url = format!("{}/%1b]0;PWNED%07%1b[31mRED/x.git", world.server.base_url());
        let run = world.git(git, None, &["ls-remote", &url]);
        run.assert_failed();
        assert!(
            run.stderr.contains("does not name a githosted repository"),
            "{git}: {}",
            run.stderr
        );
        assert!(
            !run.stderr.contains(['\u{1b}', '\u{7}']),
            "{git}: an escape reached the terminal: {:?}",
            run.stderr
        );
    }
}

/// Security item 8: the documented way to hand `token`'s output to git keeps it
/// out of argv (`ps` shows argv to every user), and it works with both gits.
#[test]
fn tokens_reach_git_through_the_environment_not_argv() {
    let help = std::process::Command::new(helper())
        .args(["token", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("--config-env=http.extraHeader="), "{help}");
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for text in [help.as_ref(), readme.as_str()] {
        assert!(
            !text.contains("extraHeader=\"Authorization"),
            "a token in argv is recommended"
        );
    }
    let mut world = World::new();
    world.with_env_parent();
    let url = world.server.base_url();
    let run = world.helper(&["--api-url", &url, "token", "--repo", "acme/app"], None);
    let token = run.stdout.trim().to_owned();
    world.set_env("GITHOSTED_AUTH", &format!("Authorization: Bearer {token}"));
    for git in GITS {
        let run = world.git(
            git,
            None,
            &[
                "--config-env=http.extraHeader=GITHOSTED_AUTH",
                "ls-remote",
                &world.url("app"),
            ],
        );
        run.assert_ok();
    }
    let bearer = world
        .server
        .git_requests()
        .iter()
        .filter(|r| r.auth_scheme == server::AuthScheme::Bearer)
        .count();
    assert!(bearer >= 2, "git sent the header");
}
