//! `./install --from DIR_OR_URL` (issue 21, item 4): prebuilt programs from a
//! release — the archive for this machine and `SHA256SUMS` — served by a real
//! HTTP server on 127.0.0.1 or read from a directory, installed into a
//! temporary HOME and configured, then used by git. A checksum mismatch is
//! refused with one line and installs nothing.
//!
//! The release is built here from the already-built programs, packed as the
//! release workflow packs them (`.github/workflows/release.yml`). The script
//! runs under `sh` (dash here): the `--from` mode needs no bash.
#![cfg(unix)]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use githosted_testkit::*;

const NAME: &str = "git-credential-githosted";

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The archive name `./install --from` looks for on this machine.
fn archive_name() -> String {
    let arch = std::env::consts::ARCH;
    let target = match std::env::consts::OS {
        "macos" => format!("{arch}-apple-darwin"),
        _ => format!("{arch}-unknown-linux-musl"),
    };
    format!("{NAME}-{target}.tar.gz")
}

fn run_ok(cmd: &mut Command) {
    let out = cmd.output().expect("run");
    assert!(out.status.success(), "{cmd:?}: {out:?}");
}

/// A release directory: the three programs (stripped: the debug builds are
/// mostly debug info) in one archive, and `SHA256SUMS`, as the workflow makes them.
fn release_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let stage = dir.path().join("stage");
    std::fs::create_dir(&stage).expect("stage");
    let built = Path::new(helper()).parent().expect("built dir");
    for program in [
        NAME,
        "git-credential-githosted-core",
        "git-credential-githosted-agent",
    ] {
        run_ok(
            Command::new("strip")
                .arg("-o")
                .arg(stage.join(program))
                .arg(built.join(program)),
        );
    }
    let archive = archive_name();
    run_ok(
        Command::new("tar")
            .arg("-czf")
            .arg(dir.path().join(&archive))
            .arg("-C")
            .arg(&stage)
            .args([
                NAME,
                "git-credential-githosted-core",
                "git-credential-githosted-agent",
            ]),
    );
    let sums = Command::new("sha256sum")
        .arg(&archive)
        .current_dir(dir.path())
        .output()
        .expect("sha256sum");
    assert!(sums.status.success());
    std::fs::write(dir.path().join("SHA256SUMS"), sums.stdout).expect("SHA256SUMS");
    std::fs::remove_dir_all(&stage).expect("rm stage");
    dir
}

/// A static file server on 127.0.0.1 for `dir`; returns its base URL.
fn serve(dir: &Path) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let dir = dir.to_owned();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            // Skip the headers.
            let mut header = String::new();
            while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
                header.clear();
            }
            let path = line.split_whitespace().nth(1).unwrap_or("/");
            let file = path.trim_start_matches("/release/");
            let body = (!file.contains('/') && !file.contains(".."))
                .then(|| std::fs::read(dir.join(file)).ok())
                .flatten();
            let _ = match body {
                Some(body) => stream
                    .write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .and_then(|()| stream.write_all(&body)),
                None => stream.write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                ),
            };
        }
    });
    format!("{url}/release")
}

/// A world with only the install prefix and the system on PATH, and a workspace token.
fn world() -> World {
    let mut world = World::new();
    let path = format!(
        "{}/.local/bin:/usr/local/bin:/usr/bin:/bin",
        world.home.display()
    );
    world.set_env("PATH", &path);
    world.with_env_parent();
    world
}

/// `sh install --from FROM` (dash here: no bash needed), as CI one-liners pipe it.
fn install_from(world: &World, from: &str) -> Run {
    install_from_with(world, "sh", from)
}

fn install_from_with(world: &World, shell: &str, from: &str) -> Run {
    let mut cmd = Command::new(shell);
    cmd.arg(repo_root().join("install")).args([
        "--from",
        from,
        "--api-url",
        &world.server.base_url(),
    ]);
    world.run(cmd, None)
}

fn global_config(world: &World) -> String {
    std::fs::read_to_string(world.home.join(".gitconfig")).unwrap_or_default()
}

/// Installed and configured: the programs are in ~/.local/bin, git's config
/// names the installed front, and git fetches through them.
fn assert_installed(world: &World, run: &Run) {
    run.assert_ok();
    let bin = world.home.join(".local/bin");
    for program in [
        NAME,
        "git-credential-githosted-core",
        "git-credential-githosted-agent",
    ] {
        assert!(
            bin.join(program).is_file(),
            "{program} missing: {}",
            run.stdout
        );
    }
    assert!(run.stdout.contains("SHA-256 checked"), "{}", run.stdout);
    let config = global_config(world);
    let front = bin.join(NAME);
    assert!(config.contains(&front.display().to_string()), "{config}");
    let url = world.url("app");
    world.git(GIT_NEW, None, &["ls-remote", &url]).assert_ok();
}

#[test]
fn install_from_a_url_and_refuse_a_corrupted_archive() {
    let release = release_dir();
    let url = serve(release.path());

    let world = world();
    let run = install_from(&world, &url);
    assert_installed(&world, &run);

    // The same release with one byte of the archive changed after SHA256SUMS.
    let archive = release.path().join(archive_name());
    let mut bytes = std::fs::read(&archive).expect("archive");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&archive, bytes).expect("corrupt");
    let world = self::world();
    let run = install_from(&world, &url);
    run.assert_failed();
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {}", run.stderr);
    assert!(lines[0].contains("checksum mismatch"), "{}", run.stderr);
    assert!(lines[0].contains("nothing was installed"), "{}", run.stderr);
    assert!(
        !world.home.join(".local/bin").exists(),
        "something was installed"
    );
    assert!(!global_config(&world).contains(NAME), "git was configured");
}

#[test]
fn install_from_a_directory() {
    let release = release_dir();
    let world = world();
    // As ./install runs it (bash).
    let run = install_from_with(&world, "bash", &release.path().display().to_string());
    assert_installed(&world, &run);

    // A second run changes nothing in git's config.
    let before = global_config(&world);
    install_from(&world, &release.path().display().to_string()).assert_ok();
    assert_eq!(before, global_config(&world));
}

/// The Linux release is static (musl, built by the release workflow). Here there
/// is no musl C toolchain and a second fat-LTO build of every program would cost
/// minutes, so this builds what `./install` builds — the release programs, the
/// front linked statically against glibc (`-C target-feature=+crt-static`) in
/// `target/install-test`, which `tests/install.rs` shares, so CI pays only for
/// this test's few seconds — and checks that `file` calls the front statically
/// linked, runs it (`--version`), installs it with `--from` and has git `get`
/// through it from the test server.
use crate::install::world_with_cargo;

/// What `file` says of a program that needs no libc from the host.
fn is_static(file: &str) -> bool {
    file.contains("statically linked") || file.contains("static-pie linked")
}

#[test]
#[ignore = "a release build (minutes the first time); .ci/run runs it with --include-ignored"]
fn static_front_from_a_release_answers_git() {
    let cargo = std::env::var("CARGO").expect("cargo sets CARGO for tests");
    let target = repo_root().join("target").join("install-test");
    let world_with_cargo = world_with_cargo();
    let build = |args: &[&str]| {
        // The environment tests/install.rs gives ./install (its `world_with_cargo`), so
        // that build scripts see the same and the two tests share one build.
        let mut cmd = world_with_cargo.command(&cargo);
        let out = cmd
            .args(args)
            .current_dir(repo_root())
            .output()
            .expect("cargo");
        assert!(
            out.status.success(),
            "cargo {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    // The core and the agent as ./install builds them; the front only below, so that
    // after tests/install.rs (which ends the same way) nothing is rebuilt.
    build(&[
        "build",
        "--release",
        "--locked",
        "--quiet",
        "--bin",
        "git-credential-githosted-core",
        "--bin",
        "git-credential-githosted-agent",
    ]);
    // Exactly the command ./install runs, so the build is shared with tests/install.rs.
    build(&[
        "rustc",
        "--release",
        "--locked",
        "--quiet",
        "--bin",
        NAME,
        "--",
        "-C",
        "target-feature=+crt-static",
    ]);
    let built = target.join("release");
    let file = Command::new("file")
        .arg("-L")
        .arg(built.join(NAME))
        .output()
        .expect("file (apt-get install file)");
    let file = String::from_utf8_lossy(&file.stdout);
    assert!(is_static(&file), "{file}");
    let version = Command::new(built.join(NAME))
        .arg("--version")
        .env_clear()
        .output()
        .expect("run the static front");
    assert!(version.status.success(), "{version:?}");
    assert!(String::from_utf8_lossy(&version.stdout).starts_with(NAME));

    let release = tempfile::tempdir().expect("temp dir");
    let archive = archive_name();
    run_ok(
        Command::new("tar")
            .arg("-czf")
            .arg(release.path().join(&archive))
            .arg("-C")
            .arg(&built)
            .args([
                NAME,
                "git-credential-githosted-core",
                "git-credential-githosted-agent",
            ]),
    );
    let sums = Command::new("sha256sum")
        .arg(&archive)
        .current_dir(release.path())
        .output()
        .expect("sha256sum");
    std::fs::write(release.path().join("SHA256SUMS"), sums.stdout).expect("SHA256SUMS");
    let url = serve(release.path());
    let world = world();
    let run = install_from(&world, &url);
    assert_installed(&world, &run);
    // The installed front is the static one, and git's `get` went through it.
    let installed = Command::new("file")
        .arg(world.home.join(".local/bin").join(NAME))
        .output()
        .expect("file");
    assert!(
        is_static(&String::from_utf8_lossy(&installed.stdout)),
        "{installed:?}"
    );
    let fill = world.run(
        {
            let mut cmd = Command::new(world.home.join(".local/bin").join(NAME));
            cmd.args(["--api-url", &world.server.base_url(), "get"]);
            cmd
        },
        Some(&request("http", &world.server.host(), Some("acme/app.git"))),
    );
    fill.assert_ok();
    assert!(field(&fill.stdout, "password").is_some(), "{}", fill.stdout);
}

/// The helper's three programs and the broker, linked statically against glibc, run
/// where the host's C library cannot reach them: in a root that holds nothing but them
/// (bubblewrap: no `/lib`, `/usr` or `/etc`; `/proc`, `/dev`, a tmpfs `/tmp` and the
/// world's HOME and runtime directory). The release's Linux programs are musl (the
/// workflow); here there is no musl target, and static glibc proves the same: nothing
/// is loaded from the host. The test server and git stay outside; git runs the front
/// through bubblewrap, the front hands over to the core, the core starts the agent, all
/// three from the empty root. A dynamic program (this test's own debug front) cannot
/// even start there: that is what shows the root is empty.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod empty_root {
    use super::*;
    use std::ffi::OsString;

    /// The four programs of a release.
    const PROGRAMS: [&str; 4] = [
        NAME,
        "git-credential-githosted-core",
        "git-credential-githosted-agent",
        "githosted-broker",
    ];

    /// Where the programs are in the empty root.
    const INSIDE: &str = "/githosted";

    /// glibc's triple for this machine, named so that RUSTFLAGS links only the
    /// programs statically (build scripts and proc-macros stay as the host builds them).
    fn gnu_target() -> String {
        format!("{}-unknown-linux-gnu", std::env::consts::ARCH)
    }

    /// The static programs: `.ci/run` builds them before the tests with this very
    /// command (so here cargo finds them up to date); run alone, this builds them
    /// (a few minutes cold, in target/static).
    fn static_programs() -> PathBuf {
        let cargo = std::env::var("CARGO").expect("cargo sets CARGO for tests");
        let target_dir = repo_root().join("target").join("static");
        let target = gnu_target();
        let mut build = Command::new(&cargo);
        // Without what cargo sets for this test (ring's build script reruns when
        // CARGO_MANIFEST_DIR changes, and all above it with it): the environment of
        // `.ci/run`'s step, so that its build is found up to date.
        for (key, _) in std::env::vars_os() {
            let name = key.to_string_lossy();
            if (name.starts_with("CARGO_") && name != "CARGO_HOME") || name == "OUT_DIR" {
                build.env_remove(&key);
            }
        }
        let out = build
            .args([
                "build",
                "--locked",
                "--quiet",
                "--profile",
                "static-ci",
                "--target",
                &target,
                "--bins",
                "--target-dir",
            ])
            .arg(&target_dir)
            .env("RUSTFLAGS", "-C target-feature=+crt-static")
            .current_dir(repo_root())
            .output()
            .expect("cargo");
        assert!(
            out.status.success(),
            "the static build failed: RUSTFLAGS='-C target-feature=+crt-static' cargo build \
             --locked --profile static-ci --target {target} --bins --target-dir target/static: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        target_dir.join(target).join("static-ci")
    }

    fn bwrap() -> Option<&'static str> {
        ["/usr/bin/bwrap", "/bin/bwrap"]
            .into_iter()
            .find(|p| Path::new(p).exists())
    }

    /// bubblewrap's arguments for a root with `programs` (read-only, at [`INSIDE`]),
    /// `/proc`, `/dev`, a tmpfs `/tmp` and `data` (the
    /// world's directory: HOME, the runtime directory) at its own path; nothing of the
    /// host's file system else: no `/lib`, `/usr`, `/etc/passwd`, `/etc/nsswitch.conf`.
    /// The network is shared: the test server listens on 127.0.0.1 (an IP address, so
    /// nothing resolves a name: static glibc would need the host's NSS modules for that).
    fn empty_root(bwrap: &str, programs: &Path, data: &Path) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![bwrap.into(), "--ro-bind".into()];
        args.extend([programs.into(), INSIDE.into()]);
        for arg in ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"] {
            args.push(arg.into());
        }
        args.extend(["--bind".into(), data.into(), data.into()]);
        for arg in ["--chdir", "/", "--unshare-ipc", "--unshare-uts", "--"] {
            args.push(arg.into());
        }
        args
    }

    /// `program` with `args`, run in the empty root.
    fn inside(root: &[OsString], program: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(&root[0]);
        cmd.args(&root[1..])
            .arg(format!("{INSIDE}/{program}"))
            .args(args);
        cmd
    }

    #[test]
    #[ignore = "needs bubblewrap and a static build (minutes the first time, in target/static); .ci/run builds it first and runs this with --include-ignored"]
    fn static_programs_answer_git_from_an_empty_root() {
        let Some(bwrap) = bwrap() else {
            eprintln!("bubblewrap is not installed; skipped (CI installs it)");
            assert!(std::env::var_os("CI").is_none(), "CI must have bubblewrap");
            return;
        };
        let built = static_programs();

        // Only the four programs in the root (hard links, else copies).
        let programs = tempfile::tempdir().expect("temp dir");
        for program in PROGRAMS {
            let from = built.join(program);
            let to = programs.path().join(program);
            if std::fs::hard_link(&from, &to).is_err() {
                std::fs::copy(&from, &to).expect("copy a static program");
            }
            let file = Command::new("file")
                .arg(&to)
                .output()
                .expect("file (apt-get install file)");
            let file = String::from_utf8_lossy(&file.stdout);
            assert!(is_static(&file), "{file}");
            let ldd = Command::new("ldd").arg(&to).output().expect("ldd");
            let ldd = format!(
                "{}{}",
                String::from_utf8_lossy(&ldd.stdout),
                String::from_utf8_lossy(&ldd.stderr)
            );
            // glibc's ldd says "statically linked" of a static PIE, "not a dynamic
            // executable" of a static non-PIE; a dynamic program lists its libraries.
            assert!(
                (ldd.contains("statically linked") || ldd.contains("not a dynamic executable"))
                    && !ldd.contains("=>"),
                "{program}: {ldd}"
            );
        }

        let mut world = World::new();
        world.with_env_parent();
        // No CA certificates either: an http:// API (loopback) needs none, and an
        // https:// one says how to get them (below).
        let root = empty_root(bwrap, programs.path(), world.dir.path());

        // The control: a dynamically linked program (this test's own front) cannot start
        // in that root, for want of the loader and the C library.
        let dynamic = tempfile::tempdir().expect("temp dir");
        std::fs::copy(helper(), dynamic.path().join(NAME)).expect("copy the dynamic front");
        let dynamic_root = empty_root(bwrap, dynamic.path(), world.dir.path());
        let run = world.run(inside(&dynamic_root, NAME, &["--version"]), None);
        run.assert_failed();
        assert!(run.stderr.contains("No such file or directory"), "{run:#?}");

        // Each program starts there: the front, the core and the broker print their
        // version (the core under the helper's name); the agent (no options of its own)
        // its usage.
        for (program, says) in [
            (NAME, NAME),
            ("git-credential-githosted-core", NAME),
            ("githosted-broker", "githosted-broker"),
        ] {
            let run = world.run(inside(&root, program, &["--version"]), None);
            run.assert_ok();
            assert!(run.stdout.starts_with(&format!("{says} ")), "{run:#?}");
        }
        let run = world.run(
            inside(&root, "git-credential-githosted-agent", &["--version"]),
            None,
        );
        assert_eq!(run.status.code(), Some(2), "{run:#?}");
        assert!(
            run.stderr.contains("usage: git-credential-githosted-agent"),
            "{run:#?}"
        );

        // The core alone, straight to the API (no agent): its HTTP client, async runtime
        // and TLS library start with nothing from the host.
        let url = world.server.base_url();
        let http_request = request("http", &world.server.host(), Some("acme/app.git"));
        let run = world.run(
            inside(
                &root,
                "git-credential-githosted-core",
                &["--api-url", &url, "--no-agent", "get"],
            ),
            Some(&http_request),
        );
        run.assert_ok();
        assert!(field(&run.stdout, "password").is_some(), "{run:#?}");
        assert_eq!(world.server.exchange_count(), 1);

        // An https:// API on a host without CA certificates (a `scratch` image): one
        // line that says so and how to get them, not "try again later".
        let https = "https://127.0.0.1:9";
        let https_request = request("https", "127.0.0.1:9", Some("acme/app.git"));
        let run = world.run(
            inside(
                &root,
                "git-credential-githosted-core",
                &["--api-url", https, "--no-agent", "get"],
            ),
            Some(&https_request),
        );
        assert!(
            run.stderr.contains("no CA certificates")
                && run.stderr.contains("apt-get install ca-certificates")
                && !run.stderr.contains("try again later"),
            "{run:#?}"
        );

        // git, outside, runs the front in the empty root: a cold fetch (the front hands
        // over to the core, which starts the agent), then a warm `get` the agent answers.
        let helper_line = world.path("helper-in-empty-root");
        let mut script = String::from("#!/bin/sh\nexec");
        for arg in &root {
            script.push(' ');
            script.push_str(&quote(&arg.to_string_lossy()));
        }
        script.push_str(&format!(
            " {INSIDE}/{NAME} --api-url {} \"$@\"\n",
            quote(&url)
        ));
        std::fs::write(&helper_line, script).expect("helper script");
        std::fs::set_permissions(
            &helper_line,
            <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755),
        )
        .expect("chmod");
        let helper_config = format!("credential.helper={}", helper_line.display());
        let git_args = |rest: &[&str]| -> Vec<String> {
            let mut args = vec![
                "-c".to_owned(),
                "credential.helper=".to_owned(),
                "-c".to_owned(),
                helper_config.clone(),
                "-c".to_owned(),
                "credential.useHttpPath=true".to_owned(),
            ];
            args.extend(rest.iter().map(|a| (*a).to_owned()));
            args
        };
        let repo = world.url("app");
        let args = git_args(&["ls-remote", &repo]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        world.git(GIT_NEW, None, &args).assert_ok();
        assert_eq!(world.server.exchange_count(), 2);
        let agents = world.agent_pids();
        assert_eq!(agents.len(), 1, "one agent");
        // The agent runs the static program from the empty root: its executable is
        // the one mounted there, and it maps no shared object.
        let exe = std::fs::read_link(format!("/proc/{}/exe", agents[0]));
        let maps = std::fs::read_to_string(format!("/proc/{}/maps", agents[0]));
        match (exe, maps) {
            (Ok(exe), Ok(maps)) => {
                assert_eq!(
                    exe,
                    Path::new(INSIDE).join("git-credential-githosted-agent")
                );
                assert!(!maps.contains(".so"), "the agent mapped a library: {maps}");
            }
            // The agent is not dumpable: only root reads these (CI runs as root).
            (exe, maps) => assert!(!rustix::process::getuid().is_root(), "{exe:?} {maps:?}"),
        }

        let args = git_args(&["credential", "fill"]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut fill = Command::new(GIT_NEW);
        fill.args(&args).current_dir(world.dir.path());
        let fill = world.run(fill, Some(&format!("url={repo}\n\n")));
        fill.assert_ok();
        assert!(field(&fill.stdout, "password").is_some(), "{fill:#?}");
        assert_eq!(world.server.exchange_count(), 2, "the agent answered");
    }

    /// One shell word.
    fn quote(word: &str) -> String {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}
