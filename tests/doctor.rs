//! `doctor`: one line per check, the fix on every FAIL, non-zero exit on any
//! FAIL, and never a secret.
//!
//! Unix only: the harness runs processes as other users, uses Unix sockets and
//! `git http-backend` (Windows runs the unit tests and `protocol_props`).
#![cfg(unix)]

use githosted_testkit::*;

fn doctor(world: &World) -> Run {
    let url = world.server.base_url();
    world.helper(&["--api-url", &url, "doctor"], None)
}

#[test]
fn a_healthy_setup_passes() {
    let mut world = World::configured(&[]);
    world.with_env_parent();
    world.token("app", &[]);
    let run = doctor(&world);
    run.assert_ok();
    let host = world.server.host();
    for wanted in [
        "OK   git ",
        &format!("OK   http://{host}/: git asks `githosted --api-url"),
        "OK   GITHOSTED_TOKEN: set (gw_…",
        "OK   agent: pid ",
        &format!("OK   API {host}: reachable; GITHOSTED_TOKEN (gw_…"),
    ] {
        assert!(
            run.stdout.contains(wanted),
            "missing {wanted:?} in\n{}",
            run.stdout
        );
    }
    assert!(!run.stdout.contains("FAIL"), "{}", run.stdout);
    assert!(
        run.stdout
            .lines()
            .all(|l| ["OK  ", "WARN", "FAIL"].contains(&&l[..4])),
        "{}",
        run.stdout
    );
}

#[test]
fn unconfigured_git_fails_with_the_fix() {
    let mut world = World::new();
    world.with_env_parent();
    let run = doctor(&world);
    run.assert_failed();
    assert!(
        run.stdout.contains(
            "git does not use this helper; run `git-credential-githosted configure --api-url"
        ),
        "{}",
        run.stdout
    );
}

#[test]
fn a_store_helper_or_missing_use_http_path_fails() {
    let mut world = World::configured(&[]);
    world.with_env_parent();
    let section = format!("credential.{}", world.server.base_url());
    // `store` after ours would still be handed every token by git.
    world
        .git(
            GIT_NEW,
            None,
            &[
                "config",
                "--global",
                "--add",
                &format!("{section}.helper"),
                "store",
            ],
        )
        .assert_ok();
    let run = doctor(&world);
    run.assert_failed();
    assert!(
        run.stdout.contains("FAIL")
            && run.stdout.contains("helper `store`")
            && run.stdout.contains("~/.git-credentials"),
        "{}",
        run.stdout
    );

    let world = World::configured(&[]);
    let section = format!("credential.{}", world.server.base_url());
    world
        .git(
            GIT_NEW,
            None,
            &[
                "config",
                "--global",
                "--unset",
                &format!("{section}.useHttpPath"),
            ],
        )
        .assert_ok();
    let run = doctor(&world);
    run.assert_failed();
    assert!(
        run.stdout.contains("credential.useHttpPath is off"),
        "{}",
        run.stdout
    );
}

#[test]
fn a_revoked_parent_fails_and_says_login() {
    let mut world = World::configured(&[]);
    let parent = world.with_env_parent();
    world.server.revoke(&parent);
    let run = doctor(&world);
    run.assert_failed();
    assert!(
        run.stdout.contains("GITHOSTED_TOKEN (gw_…")
            && run.stdout.contains("is expired or revoked"),
        "{}",
        run.stdout
    );
}

#[test]
fn an_unreachable_api_fails() {
    let mut world = World::configured(&[]);
    world.with_env_parent();
    world.server.stop();
    let url = world.server.base_url();
    let run = world.helper(&["--api-url", &url, "--timeout", "2", "doctor"], None);
    run.assert_failed();
    assert!(run.stdout.contains("could not reach"), "{}", run.stdout);
}
