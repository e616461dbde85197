//! No token leaves memory except in the answer to git: with tracing at debug,
//! run the main scenarios and look everywhere a token could end up. The harness
//! already scans every command's stderr and stdout (except answers to git) and,
//! when each world ends, every file under its HOME, runtime dir and clones.
//! This test adds the argv and environment of every process the helper starts.
//!
//! Unix only: the harness runs processes as other users, uses Unix sockets and
//! `git http-backend` (Windows runs the unit tests and `protocol_props`).
#![cfg(unix)]

use std::os::unix::fs::PermissionsExt;

use githosted_testkit::*;

/// Puts a `git` first on PATH that records the argv and environment of every
/// git process the helper starts (into a file the end-of-test scan reads), then
/// runs the real git.
fn install_git_shim(world: &mut World) -> std::path::PathBuf {
    let bin = world.path("shim");
    std::fs::create_dir_all(&bin).unwrap();
    let log = world.path("spawned.log");
    let shim = bin.join("git");
    std::fs::write(
        &shim,
        format!(
            r#"#!/bin/sh
parent=$(tr '\0' ' ' < /proc/$PPID/cmdline)
case "$parent" in
  *git-credential-githosted*) {{ echo "argv: $*"; env; }} >> '{}' ;;
esac
exec {GIT_NEW} "$@"
"#,
            log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).unwrap();
    let helper_dir = std::path::Path::new(helper()).parent().unwrap();
    let path = format!(
        "{}:{}:/usr/local/bin:/usr/bin:/bin",
        bin.display(),
        helper_dir.display()
    );
    world.set_env("PATH", &path);
    log
}

#[test]
#[ignore = "needs root: it reads the non-dumpable agent's /proc/PID/environ; CI runs it"]
fn with_tracing_on_no_token_appears_anywhere_but_the_answer() {
    let mut world = World::new();
    let log = install_git_shim(&mut world);
    world.set_env("GITHOSTED_LOG", "git_credential_githosted=trace");
    let parent = world.with_env_parent();
    world.configure(&[]);
    world.server.add_repo("acme", "lib");

    // Clone, push, fetch through the agent.
    let work = world.clone(GIT_NEW, &world.url("app"), "work");
    world.commit(GIT_NEW, &work, "a.txt");
    world
        .git(GIT_NEW, Some(&work), &["push", "-q", "origin", "HEAD:main"])
        .assert_ok();
    world
        .git(GIT_NEW, Some(&work), &["fetch", "-q"])
        .assert_ok();
    world.clone(GIT_OLD, &world.git_prefixed_url("lib"), "lib");

    // Revocation, erase and a fresh token.
    let token = world.token("app", &[]);
    world.server.revoke(&token);
    world
        .git(GIT_NEW, Some(&work), &["fetch", "-q"])
        .assert_failed();
    world
        .git(GIT_NEW, Some(&work), &["fetch", "-q"])
        .assert_ok();

    // Failures, status, no agent.
    world
        .git(GIT_NEW, None, &["ls-remote", &world.url("nope")])
        .assert_failed();
    let url = world.server.base_url();
    world
        .helper(&["--api-url", &url, "status"], None)
        .assert_ok();
    world.get("app", &["--no-agent"]);

    // The tracing really was on (else this test proves little).
    let traced = world.get("app", &[]);
    assert!(
        traced.stderr.contains("served from the agent's cache"),
        "{}",
        traced.stderr
    );
    assert!(traced.stderr.contains("gr_…"), "{}", traced.stderr);

    // The processes the helper started: the agent...
    let agents = world.agent_pids();
    assert_eq!(agents.len(), 1);
    for pid in agents {
        for part in ["cmdline", "environ"] {
            let bytes = std::fs::read(format!("/proc/{pid}/{part}")).unwrap();
            world.assert_no_tokens_in(
                &format!("the agent's {part}"),
                &String::from_utf8_lossy(&bytes),
            );
        }
    }
    // ...and git (`configure`, `status`): recorded by the shim, and checked
    // with every other file when the world ends. Make sure the shim saw them.
    let spawned = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        spawned.contains("argv: config"),
        "the shim saw no git: {spawned}"
    );
    assert!(!spawned.contains(&parent));
    assert!(world.server.issued_tokens().len() >= 4);
}
