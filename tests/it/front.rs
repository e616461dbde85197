//! The front git runs answers what it can without the full program: a warm
//! `get` for every kind of parent (keychain, `GITHOSTED_TOKEN`, a CI job's
//! broker), and a CI miss with `GITHOSTED_TOKEN`, minted through the agent.
//! Checked with a copy of the front that has no core beside it: whatever it
//! hands over fails, so a success proves the front answered alone.
#![cfg(unix)]

use std::path::PathBuf;

use githosted_testkit::oidc::{Issuer, start_broker};
use githosted_testkit::*;

/// A copy of the front alone in a directory of its own (outside the world,
/// whose files are scanned for tokens: a program of megabytes is slow to scan).
fn lonely_front() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let front = dir.path().join("git-credential-githosted");
    std::fs::copy(helper(), &front).unwrap();
    (dir, front)
}

/// `get` for `acme/<repo>` through `program` with `options`.
fn get_with(world: &World, program: &PathBuf, repo: &str, options: &[&str]) -> Run {
    let mut cmd = world.command(program);
    cmd.args(["--api-url", &world.server.base_url()])
        .args(options)
        .arg("get");
    let path = format!("acme/{repo}.git");
    world.run(
        cmd,
        Some(&request("http", &world.server.host(), Some(&path))),
    )
}

#[test]
fn the_front_alone_serves_warm_gets_and_mints_ci_misses() {
    let mut world = World::new();
    world.with_env_parent();
    world.server.add_repo("acme", "lib");
    let (_dir, front) = lonely_front();

    // Nothing cached yet, no agent: handed over, and the core is missing.
    let cold = get_with(&world, &front, "app", &[]);
    assert!(!cold.status.success());
    assert!(
        cold.stderr.contains("reinstall with ./install"),
        "{}",
        cold.stderr
    );

    // The full program starts the agent and caches a token; the front serves it.
    let token = world.token("app", &[]);
    let warm = get_with(&world, &front, "app", &[]);
    warm.assert_ok();
    assert_eq!(field(&warm.stdout, "password"), Some(token.as_str()));
    assert_eq!(world.server.exchange_count(), 1);

    // A miss with GITHOSTED_TOKEN: minted through the agent, by the front alone.
    let minted = get_with(&world, &front, "lib", &["--permission", "read"]);
    minted.assert_ok();
    assert!(field(&minted.stdout, "password").is_some_and(|p| p.starts_with("gr_")));
    assert_eq!(world.server.exchange_count(), 2);
    assert_eq!(
        world.token("lib", &["--permission", "read"]),
        field(&minted.stdout, "password").unwrap()
    );
}

#[test]
fn the_front_alone_serves_a_ci_jobs_broker_tokens() {
    let mut job = World::new();
    let issuer = Issuer::start();
    let policy = format!(
        "[[allow]]\nissuer = \"{}\"\nsubject_pattern = \"^repo:acme-org/.*$\"\nrepos = [\"acme/app\"]\npermission = \"write\"\n",
        issuer.url()
    );
    let broker = start_broker(&job, &policy).unwrap();
    for (k, v) in issuer.actions_env() {
        job.set_env(k, &v);
    }
    let (_dir, front) = lonely_front();
    let options = ["--broker", broker.url.as_str()];
    // The core asks the broker once; the front serves the job from the agent.
    let first = job.get("app", &options);
    first.assert_ok();
    let warm = get_with(&job, &front, "app", &options);
    warm.assert_ok();
    assert_eq!(
        field(&warm.stdout, "password"),
        field(&first.stdout, "password")
    );
    // Another job identity on the same agent gets nothing from the front.
    job.set_env("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "another-job");
    let other = get_with(&job, &front, "app", &options);
    assert!(!other.status.success(), "served another job's token");
    assert_eq!(job.server.exchange_count(), 1);
}

#[test]
fn a_failed_ci_mint_is_told_by_the_front_as_the_core_tells_it() {
    let mut world = World::new();
    let parent = world.with_env_parent();
    world.server.add_repo("acme", "lib");
    let (_dir, front) = lonely_front();
    world.token("app", &[]); // the agent runs
    world.server.revoke(&parent);
    let exchanges = world.server.calls("ExchangeToken");

    let by_front = get_with(&world, &front, "lib", &[]);
    let core = PathBuf::from(helper()).with_file_name("git-credential-githosted-core");
    let by_core = get_with(&world, &core, "lib", &[]);
    assert!(!by_front.status.success() && !by_core.status.success());
    assert!(by_front.stderr.contains("rejected"), "{}", by_front.stderr);
    assert_eq!(by_front.stderr, by_core.stderr);
    assert_eq!(
        by_front.stdout, by_core.stdout,
        "git is told to stop the same way"
    );
    // One exchange each: the front did not leave a second one to the core.
    assert_eq!(world.server.calls("ExchangeToken"), exchanges + 2);
}
