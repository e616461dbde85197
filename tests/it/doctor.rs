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
        &format!("OK   http://{host}/: git asks `{} --api-url", helper()),
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
    assert!(
        run.stdout
            .contains(&format!("nothing listens at {url} (connection refused)")),
        "{}",
        run.stdout
    );
}

/// Fast path item 1: the configured helper must exist and be this version; a
/// `helper = githosted` line (through PATH) is a warning; so is another
/// `git-credential-githosted` on PATH.
#[test]
fn the_configured_program_is_this_one() {
    let mut world = World::configured(&[]);
    world.with_env_parent();
    let url = world.server.base_url();
    let key = format!("credential.{url}.helper");
    let set = |world: &World, line: &str| {
        world.git(GIT_NEW, None, &["config", "--global", "--unset-all", &key]);
        world
            .git(GIT_NEW, None, &["config", "--global", "--add", &key, ""])
            .assert_ok();
        world
            .git(GIT_NEW, None, &["config", "--global", "--add", &key, line])
            .assert_ok();
    };
    set(
        &world,
        &format!("/nonexistent/git-credential-githosted --api-url {url}"),
    );
    let run = doctor(&world);
    run.assert_failed();
    assert!(
        run.stdout
            .contains("/nonexistent/git-credential-githosted does not exist")
            && run.stdout.contains(&format!("configure --api-url {url}")),
        "{}",
        run.stdout
    );

    // Another version: a script that says it is one.
    let other = world.path("other/git-credential-githosted");
    std::fs::create_dir_all(other.parent().unwrap()).unwrap();
    std::fs::write(&other, "#!/bin/sh\necho git-credential-githosted 0.0.1\n").unwrap();
    std::fs::set_permissions(&other, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    set(&world, &format!("{} --api-url {url}", other.display()));
    let run = doctor(&world);
    run.assert_failed();
    assert!(
        run.stdout
            .contains("is `git-credential-githosted 0.0.1`, not this"),
        "{}",
        run.stdout
    );

    // Through PATH: a warning with the fix; and that other one on PATH: a warning.
    set(&world, &format!("githosted --api-url {url}"));
    let path = format!(
        "{}:{}:/usr/local/bin:/usr/bin:/bin",
        std::path::Path::new(helper()).parent().unwrap().display(),
        other.parent().unwrap().display()
    );
    world.set_env("PATH", &path);
    let run = doctor(&world);
    assert!(
        run.stdout.contains("WARN")
            && run
                .stdout
                .contains("whichever git-credential-githosted comes first on PATH"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains(&format!(
            "another git-credential-githosted is on PATH: {}",
            other.display()
        )),
        "{}",
        run.stdout
    );
}

/// Issue 21 item 10: `doctor --api-url` for an API that is not configured
/// does not call the installed helper (configured for another API, and the
/// one running) "another git-credential-githosted on PATH"; a program that
/// nothing configures still is one.
#[test]
fn doctor_for_an_unconfigured_api_does_not_call_the_installed_helper_another() {
    let mut world = World::configured(&[]);
    let other = world.path("other/git-credential-githosted");
    std::fs::create_dir_all(other.parent().unwrap()).unwrap();
    std::fs::write(&other, "#!/bin/sh\necho git-credential-githosted 0.0.1\n").unwrap();
    std::fs::set_permissions(&other, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let installed = std::path::Path::new(helper());
    let path = format!(
        "{}:{}:/usr/local/bin:/usr/bin:/bin",
        installed.parent().unwrap().display(),
        other.parent().unwrap().display()
    );
    world.set_env("PATH", &path);
    let run = world.helper(&["--api-url", "http://127.0.0.1:9", "doctor"], None);
    assert!(
        !run.stdout.contains(&format!(
            "another git-credential-githosted is on PATH: {}",
            installed.display()
        )),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains(&format!(
            "another git-credential-githosted is on PATH: {}",
            other.display()
        )),
        "{}",
        run.stdout
    );
}
