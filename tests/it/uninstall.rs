//! Nothing left behind (issue 21, item 2): `configure --remove` and
//! `./install --uninstall` take out every line this project added, for every
//! API, and nothing of the user's own; uninstall logs out first, never waits
//! for input, and goes on when logout cannot run.
//!
//! Unix only, like the harness.
#![cfg(unix)]

use std::path::{Path, PathBuf};

use githosted_testkit::*;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn global_config(world: &World) -> String {
    std::fs::read_to_string(world.home.join(".gitconfig")).unwrap_or_default()
}

/// The global config as git reads it: each key's values in order (sections
/// rewritten by `git config` may move in the file; each key's order is what counts).
fn settings(world: &World) -> Vec<String> {
    let list = world.git(GIT_NEW, None, &["config", "--global", "--list"]);
    let mut lines: Vec<String> = list.stdout.lines().map(str::to_owned).collect();
    lines.sort_by_key(|l| l.split_once('=').map_or(l.clone(), |(k, _)| k.to_owned()));
    lines
}

/// The user's own credential config, which must survive: a helper for
/// everything, and for githosted.dev an empty `helper =` of their own and a
/// helper after it.
fn users_own_config(world: &World) {
    let key = "credential.https://githosted.dev.helper";
    for args in [
        &["config", "--global", "credential.helper", "store"][..],
        &["config", "--global", "--add", key, ""][..],
        &["config", "--global", "--add", key, "cache"][..],
        &["config", "--global", "user.name", "Someone"][..],
    ] {
        world.git(GIT_NEW, None, args).assert_ok();
    }
}

/// The helper's three programs copied where `./install` puts them.
fn installed(world: &World) -> PathBuf {
    let bin = world.home.join(".local/bin");
    std::fs::create_dir_all(&bin).unwrap();
    let built = Path::new(helper()).parent().unwrap();
    for program in [
        "git-credential-githosted",
        "git-credential-githosted-core",
        "git-credential-githosted-agent",
    ] {
        std::fs::copy(built.join(program), bin.join(program)).unwrap();
    }
    bin.join("git-credential-githosted")
}

/// The README's path: the public API (./install), then the local server's.
fn configure_two_apis(world: &World, program: &Path) {
    let url = world.server.base_url();
    for args in [
        &["configure"][..],
        &["configure", "--api-url", &url, "--permission", "auto"][..],
    ] {
        let mut cmd = std::process::Command::new(program);
        cmd.args(args);
        world.run(cmd, None).assert_ok();
    }
    let config = global_config(world);
    assert!(
        config.contains(&format!("--api-url {url}")) && config.contains("githosted.dev"),
        "{config}"
    );
}

#[test]
fn configure_remove_takes_out_every_api_and_nothing_of_yours() {
    let world = World::new();
    users_own_config(&world);
    let before = settings(&world);
    let program = installed(&world);
    configure_two_apis(&world, &program);

    let mut cmd = std::process::Command::new(&program);
    cmd.args(["configure", "--remove"]);
    let run = world.run(cmd, None);
    run.assert_ok();
    assert_eq!(settings(&world), before, "{}", run.stderr);

    // With --api-url, only that API's lines go.
    configure_two_apis(&world, &program);
    let url = world.server.base_url();
    let mut cmd = std::process::Command::new(&program);
    cmd.args(["configure", "--remove", "--api-url", &url]);
    world.run(cmd, None).assert_ok();
    let config = global_config(&world);
    assert!(!config.contains(&url), "{config}");
    assert!(
        config.contains(&program.to_string_lossy().into_owned()),
        "the public API's line went too: {config}"
    );
}

#[test]
fn uninstall_logs_out_first_removes_everything_and_never_waits() {
    let world = World::new();
    users_own_config(&world);
    let before = settings(&world);
    let program = installed(&world);
    configure_two_apis(&world, &program);
    let core = program.with_file_name("git-credential-githosted-core");

    let mut cmd = std::process::Command::new("bash");
    cmd.arg(repo_root().join("install")).arg("--uninstall");
    // stdin is /dev/null: it must not wait for an answer.
    let run = world.run(cmd, None);
    run.assert_ok();
    assert_eq!(settings(&world), before, "{run:#?}");
    assert!(!program.exists() && !core.exists(), "{run:#?}");
    let logging_out = run.stdout.find("Logging out first").expect("logs out");
    let removed = run.stdout.find("Removed ").expect("removes the files");
    assert!(logging_out < removed, "{}", run.stdout);
    // No keychain here (no D-Bus session) or nothing stored: said, not fatal.
    let url = world.server.base_url();
    assert!(
        run.stderr.contains(&world.server.host()) || run.stderr.contains(&url),
        "no logout for the local API: {}",
        run.stderr
    );

    // git fetches again as before: no line points at the deleted program.
    let fetch = world.git(GIT_NEW, None, &["ls-remote", &world.url("app")]);
    assert!(
        !fetch.stderr.contains("git-credential-githosted"),
        "{}",
        fetch.stderr
    );
}

/// With a keychain: uninstall deletes every workspace token stored for each
/// configured API (`logout --all`), not only one.
#[test]
#[ignore = "needs a Secret Service (D-Bus session + unlocked keyring); .ci/run starts one"]
fn uninstall_logs_out_of_every_workspace() {
    let world = World::new();
    world.server.add_workspace("globex");
    let program = installed(&world);
    configure_two_apis(&world, &program);
    let url = world.server.base_url();
    for ws in ["acme", "globex"] {
        let parent = world.server.seed_token(ws, TokenSpec::workspace_write());
        let mut cmd = std::process::Command::new(&program);
        cmd.args(["login", "--api-url", &url]);
        world.run(cmd, Some(&parent)).assert_ok();
    }
    let mut cmd = std::process::Command::new("bash");
    cmd.arg(repo_root().join("install")).arg("--uninstall");
    let run = world.run(cmd, None);
    run.assert_ok();
    let host = world.server.host();
    for ws in ["acme", "globex"] {
        assert!(
            run.stderr
                .contains(&format!("removed the workspace token for {host}/{ws}")),
            "{}",
            run.stderr
        );
    }
    let status = world.helper(&["--api-url", &url, "status"], None);
    assert!(
        !status.stdout.contains(&format!("{host}/acme")),
        "{}",
        status.stdout
    );
}

/// Nothing left running: `./install --uninstall` removes the agent's socket,
/// so the agent stops (the logout before it only empties its cache: without
/// this it would idle on for minutes, from programs that are gone).
#[test]
fn uninstall_stops_the_agent() {
    let mut world = World::new();
    world.with_env_parent();
    let program = installed(&world);
    configure_two_apis(&world, &program);
    assert!(world.token("app", &[]).starts_with("gr_"));
    assert_eq!(world.agent_pids().len(), 1, "an agent runs");

    let mut cmd = std::process::Command::new("bash");
    cmd.arg(repo_root().join("install")).arg("--uninstall");
    let run = world.run(cmd, None);
    run.assert_ok();
    // The agent looks at its socket once a second.
    let mut waited = 0;
    while !world.agent_pids().is_empty() && waited < 200 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        waited += 1;
    }
    assert!(
        world.agent_pids().is_empty(),
        "the agent still runs: {run:#?}"
    );
    assert!(!world.agent_dir().exists(), "{run:#?}");
    assert!(run.stdout.contains("the agent stops"), "{}", run.stdout);
}
