//! `./install` into a temporary HOME: the binary lands where it says, git's
//! config holds the reset, the helper and useHttpPath for both hosts, and a
//! second run changes nothing. Also `configure --remove` undoes exactly that.
//!
//! Unix only: the harness runs processes as other users, uses Unix sockets and
//! `git http-backend` (Windows runs the unit tests and `protocol_props`).
#![cfg(unix)]

use std::path::{Path, PathBuf};

use githosted_testkit::*;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A world whose commands can run cargo (real CARGO_HOME, toolchain on PATH),
/// in `target/install-test` (shared with `release_install`).
pub(crate) fn world_with_cargo() -> World {
    let mut world = World::new();
    let cargo = std::env::var("CARGO").expect("cargo sets CARGO for tests");
    let cargo_dir = Path::new(&cargo).parent().expect("cargo dir").to_owned();
    let path = format!("{}:/usr/local/bin:/usr/bin:/bin", cargo_dir.display());
    world.set_env("PATH", &path);
    for key in ["CARGO_HOME", "RUSTUP_HOME", "RUSTUP_TOOLCHAIN"] {
        if let Ok(value) = std::env::var(key) {
            world.set_env(key, &value);
        }
    }
    if let (Err(_), Some(home)) = (std::env::var("CARGO_HOME"), std::env::var_os("HOME")) {
        world.set_env("CARGO_HOME", &format!("{}/.cargo", home.to_string_lossy()));
        world.set_env(
            "RUSTUP_HOME",
            &format!("{}/.rustup", home.to_string_lossy()),
        );
    }
    // A target dir of its own, kept between runs, so the test does not wait on
    // the lock of the one `cargo test` is using.
    let target = repo_root().join("target").join("install-test");
    world.set_env("CARGO_TARGET_DIR", &target.to_string_lossy());
    world
}

fn global_config(world: &World) -> String {
    std::fs::read_to_string(world.home.join(".gitconfig")).unwrap_or_default()
}

#[test]
fn install_into_a_temporary_home_twice() {
    let world = world_with_cargo();
    let script = repo_root().join("install");
    let run = || {
        let mut cmd = std::process::Command::new("bash");
        cmd.arg(&script);
        // The first run makes a release build: minutes on a small machine.
        world.run_within(cmd, None, std::time::Duration::from_secs(1200))
    };

    let list = |world: &World| {
        world
            .git(GIT_NEW, None, &["config", "--global", "--list"])
            .stdout
    };
    let before = list(&world);
    let first = run();
    first.assert_ok();
    assert!(
        first.stdout.contains("takes a few minutes") || first.stdout.contains("a few minutes"),
        "{}",
        first.stdout
    );
    let bin = world.home.join(".local/bin/git-credential-githosted");
    // The front git runs hands all but a warm `get` to the core beside it.
    let core = world.home.join(".local/bin/git-credential-githosted-core");
    // The core starts the agent, its own smaller program beside it.
    let agent = world.home.join(".local/bin/git-credential-githosted-agent");
    // The CI token broker, its own program, which `broker` runs.
    let broker = world.home.join(".local/bin/githosted-broker");
    let man = world
        .home
        .join(".local/share/man/man1/git-credential-githosted.1");
    let completion = world
        .home
        .join(".local/share/bash-completion/completions/git-credential-githosted");
    assert!(
        std::fs::read_to_string(&man)
            .unwrap()
            .contains(".TH git-credential-githosted")
    );
    assert!(
        std::fs::read_to_string(&completion)
            .unwrap()
            .contains("--api-url")
    );
    assert!(
        first
            .stdout
            .contains(&format!("Installed {}", bin.display())),
        "{first:#?}"
    );
    assert!(
        first.stderr.contains("is not on your PATH"),
        "{}",
        first.stderr
    );
    assert!(core.is_file(), "{} is missing", core.display());
    assert!(agent.is_file(), "{} is missing", agent.display());
    assert!(broker.is_file(), "{} is missing", broker.display());
    // `broker` runs the installed broker program (its help is that program's).
    let mut cmd = std::process::Command::new(&bin);
    cmd.args(["broker", "--help"]);
    let help = world.run(cmd, None);
    help.assert_ok();
    assert!(
        help.stdout.contains("Usage: githosted-broker"),
        "{}",
        help.stdout
    );
    // On Linux the front is static: the loader, asked to list its libraries
    // (what `ldd` does), is not there to list them; the front answers a `get`
    // for another host itself (silence) without handing over to the core.
    if cfg!(target_os = "linux") {
        assert!(
            runs_without_the_loader(&bin),
            "the front is linked dynamically"
        );
        assert!(
            !runs_without_the_loader(Path::new(helper())),
            "the check cannot tell: the test build's front should be dynamic"
        );
    }
    let mut cmd = std::process::Command::new(&bin);
    cmd.arg("--version");
    let version = world.run(cmd, None);
    version.assert_ok();
    assert!(
        version.stdout.starts_with("git-credential-githosted "),
        "{}",
        version.stdout
    );

    let config = global_config(&world);
    for host in ["githosted.dev", "api.githosted.dev"] {
        let key = format!("credential.https://{host}.helper");
        let helpers = world.git(GIT_NEW, None, &["config", "--global", "--get-all", &key]);
        // The installed binary by absolute path (issue: as git runs it).
        assert_eq!(helpers.stdout, format!("\n{}\n", bin.display()), "{config}");
        let path = world.git(
            GIT_NEW,
            None,
            &[
                "config",
                "--global",
                "--get",
                &format!("credential.https://{host}.useHttpPath"),
            ],
        );
        assert_eq!(path.stdout.trim(), "true");
    }

    let second = run();
    second.assert_ok();
    assert_eq!(
        global_config(&world),
        config,
        "a second install changed the config"
    );

    // The helper is configured by absolute path: git's own `credential fill`
    // reaches the installed binary although its directory is not on PATH.
    let mut cmd = std::process::Command::new(GIT_NEW);
    cmd.args(["credential", "fill"]);
    let fill = world.run(cmd, Some("protocol=https\nhost=githosted.dev\n"));
    // No path was sent (useHttpPath applies to URLs, not to raw fill input), so
    // the helper explains itself: proof that git ran it, and that the front
    // found the installed core (only the core says this).
    assert!(
        fill.stderr.contains("git sent no repository path"),
        "{}",
        fill.stderr
    );

    // First hour item 11: --uninstall removes the files and exactly the config.
    let mut cmd = std::process::Command::new("bash");
    cmd.args([script.to_str().unwrap(), "--uninstall"]);
    world.run(cmd, None).assert_ok();
    for gone in [&bin, &core, &agent, &broker, &man, &completion] {
        assert!(!gone.exists(), "{} is still there", gone.display());
    }
    assert_eq!(list(&world), before, "--uninstall left config behind");
}

/// First hour item 11: without cargo, ./install says how to get Rust.
#[test]
fn install_without_cargo_says_how_to_get_rust() {
    let mut world = World::new();
    // A PATH with what the script needs before it looks for cargo, and no cargo.
    let bin = world.path("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink("/usr/bin/dirname", bin.join("dirname")).unwrap();
    world.set_env("PATH", &bin.to_string_lossy());
    let mut cmd = std::process::Command::new("/bin/bash");
    cmd.arg(repo_root().join("install"));
    let run = world.run(cmd, None);
    assert_eq!(run.status.code(), Some(1), "{run:#?}");
    assert!(run.stderr.contains("https://rustup.rs"), "{}", run.stderr);
}

#[test]
fn configure_is_idempotent_and_remove_undoes_exactly_it() {
    let world = World::new();
    // Something of the user's own, which must survive.
    world
        .git(
            GIT_NEW,
            None,
            &["config", "--global", "credential.helper", "store"],
        )
        .assert_ok();
    world
        .git(
            GIT_NEW,
            None,
            &["config", "--global", "user.name", "Someone"],
        )
        .assert_ok();
    let before = global_config(&world);

    world.helper(&["configure"], None).assert_ok();
    let configured = global_config(&world);
    assert_ne!(configured, before);
    world.helper(&["configure"], None).assert_ok();
    assert_eq!(global_config(&world), configured);

    // Store must not answer for githosted hosts: the reset clears it.
    let helpers = world.git(
        GIT_NEW,
        None,
        &[
            "config",
            "--global",
            "--get-urlmatch",
            "credential.helper",
            "https://githosted.dev/acme/app.git",
        ],
    );
    assert_eq!(helpers.stdout.trim(), helper(), "{}", helpers.stdout);

    // Other options: the helper line is replaced, not added to.
    world
        .helper(&["configure", "--permission", "read"], None)
        .assert_ok();
    let helpers = world.git(
        GIT_NEW,
        None,
        &[
            "config",
            "--global",
            "--get-all",
            "credential.https://githosted.dev.helper",
        ],
    );
    assert_eq!(
        helpers.stdout,
        format!("\n{} --permission read\n", helper())
    );
    // Run again, it keeps what it wrote (first hour item 7); told otherwise, it changes.
    world.helper(&["configure"], None).assert_ok();
    let again = world.git(
        GIT_NEW,
        None,
        &[
            "config",
            "--global",
            "--get-all",
            "credential.https://githosted.dev.helper",
        ],
    );
    assert_eq!(again.stdout, format!("\n{} --permission read\n", helper()));
    world
        .helper(&["configure", "--permission", "write"], None)
        .assert_ok();
    assert_eq!(global_config(&world), configured);

    world.helper(&["configure", "--remove"], None).assert_ok();
    assert_eq!(global_config(&world), before);

    // A helper of the user's own for the same host stays (silenced by the reset,
    // which is the point), and configure is still idempotent around it.
    let key = "credential.https://githosted.dev.helper";
    world
        .git(GIT_NEW, None, &["config", "--global", key, "mine"])
        .assert_ok();
    let with_own = global_config(&world);
    world.helper(&["configure"], None).assert_ok();
    let once = global_config(&world);
    world.helper(&["configure"], None).assert_ok();
    assert_eq!(global_config(&world), once);
    let helpers = world.git(GIT_NEW, None, &["config", "--global", "--get-all", key]);
    assert_eq!(helpers.stdout, format!("mine\n\n{}\n", helper()));
    world.helper(&["configure", "--remove"], None).assert_ok();
    assert_eq!(global_config(&world), with_own);

    // --local writes the repository's config, with the API's options.
    let repo = world.path("r");
    world.git(GIT_NEW, None, &["init", "-q", "r"]).assert_ok();
    let url = world.server.base_url();
    let mut cmd = std::process::Command::new(helper());
    cmd.args([
        "configure",
        "--local",
        "--api-url",
        &url,
        "--permission",
        "read",
    ])
    .current_dir(&repo);
    world.run(cmd, None).assert_ok();
    let key = format!("credential.{url}.helper");
    let local = world.git(
        GIT_NEW,
        Some(&repo),
        &["config", "--local", "--get-all", &key],
    );
    assert_eq!(
        local.stdout,
        format!("\n{} --api-url {url} --permission read\n", helper())
    );
    assert_eq!(
        global_config(&world),
        with_own,
        "--local touched the global config"
    );
}

/// Security item 12: `configure --remove` takes out exactly what `configure`
/// added. A user's own reset (and the helper after it) survives, so `store`
/// stays silenced for githosted hosts afterwards.
#[test]
fn configure_remove_keeps_the_users_own_reset() {
    let world = World::new();
    let key = "credential.https://githosted.dev.helper";
    for args in [
        &["config", "--global", "credential.helper", "store"][..],
        &["config", "--global", "--add", key, ""][..],
        &["config", "--global", "--add", key, "cache"][..],
    ] {
        world.git(GIT_NEW, None, args).assert_ok();
    }
    let before = global_config(&world);
    let helpers = |world: &World| {
        world
            .git(GIT_NEW, None, &["config", "--global", "--get-all", key])
            .stdout
    };
    assert_eq!(helpers(&world), "\ncache\n");

    world.helper(&["configure"], None).assert_ok();
    assert_eq!(helpers(&world), format!("\ncache\n\n{}\n", helper()));
    world.helper(&["configure"], None).assert_ok();
    assert_eq!(helpers(&world), format!("\ncache\n\n{}\n", helper()));

    world.helper(&["configure", "--remove"], None).assert_ok();
    assert_eq!(global_config(&world), before);
    // git still asks only `cache` for githosted.dev, never `store`.
    let run = world.git(
        GIT_NEW,
        None,
        &[
            "config",
            "--get-urlmatch",
            "credential.helper",
            "https://githosted.dev/a/b.git",
        ],
    );
    assert_eq!(run.stdout.trim(), "cache");
}

/// Issue "fast path" item 1: an old `helper = githosted` line (and its reset)
/// is replaced by this binary's absolute path, not kept beside it.
#[test]
fn configure_migrates_a_helper_line_that_goes_through_path() {
    let world = World::new();
    let key = "credential.https://githosted.dev.helper";
    world
        .git(GIT_NEW, None, &["config", "--global", "--add", key, ""])
        .assert_ok();
    world
        .git(
            GIT_NEW,
            None,
            &[
                "config",
                "--global",
                "--add",
                key,
                "githosted --permission auto",
            ],
        )
        .assert_ok();
    world.helper(&["configure"], None).assert_ok();
    let helpers = world.git(GIT_NEW, None, &["config", "--global", "--get-all", key]);
    // The options it had are kept (first hour item 7), the program is now by path.
    assert_eq!(
        helpers.stdout,
        format!("\n{} --permission auto\n", helper())
    );
}

/// Whether `front` runs without the dynamic loader: asked to list its
/// libraries (`LD_TRACE_LOADED_OBJECTS`, what `ldd` does), a dynamic program
/// prints them instead of running; the front answers a `get` for another host
/// with silence, by itself. (Not through `World::run`, which clears the
/// environment.)
fn runs_without_the_loader(front: &Path) -> bool {
    use std::io::Write;
    let mut child = std::process::Command::new(front)
        .arg("get")
        .env_clear()
        .env("LD_TRACE_LOADED_OBJECTS", "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _ = child
        .stdin
        .take()
        .unwrap()
        .write_all(b"protocol=https\nhost=example.com\n\n");
    let out = child.wait_with_output().unwrap();
    out.status.success() && out.stdout.is_empty()
}
