//! git-lfs through the helper (issue 21, item 8): the real `git lfs` pushes and
//! clones an LFS object against the test server's LFS batch API, over the HTTP
//! remote and with an `ssh://` origin whose `lfs.url` is the HTTP endpoint (git-lfs
//! then asks the helper for `<ws>/<repo>.git/info/lfs` and the transfer URLs below
//! it itself).
//!
//! Needs `git-lfs` (Debian package `git-lfs`): ignored elsewhere, CI installs it and
//! runs it with `--include-ignored`.
#![cfg(unix)]

use std::path::{Path, PathBuf};

use githosted_testkit::*;

fn require_git_lfs(world: &World) {
    let run = world.git(GIT_NEW, None, &["lfs", "version"]);
    assert!(
        run.ok(),
        "git-lfs is not installed (apt-get install git-lfs): {}",
        run.stderr
    );
    // Filters in the world's own global config (its private HOME).
    world
        .git(GIT_NEW, None, &["lfs", "install", "--skip-repo"])
        .assert_ok();
}

/// Adds `name` (tracked by LFS) with `content` to `repo`, commits it and
/// returns the object's id (its SHA-256, from the pointer git committed).
fn commit_lfs_file(world: &World, git: &str, repo: &Path, name: &str, content: &str) -> String {
    world
        .git(git, Some(repo), &["lfs", "track", "*.bin"])
        .assert_ok();
    std::fs::write(repo.join(name), content).expect("write the LFS file");
    world
        .git(git, Some(repo), &["add", ".gitattributes", name])
        .assert_ok();
    world
        .git(git, Some(repo), &["commit", "-q", "-m", name])
        .assert_ok();
    // The commit holds a pointer, not the content.
    let blob = world.git(
        git,
        Some(repo),
        &["cat-file", "-p", &format!("HEAD:{name}")],
    );
    assert!(
        blob.stdout
            .starts_with("version https://git-lfs.github.com/spec/v1"),
        "not an LFS pointer: {}",
        blob.stdout
    );
    blob.stdout
        .lines()
        .find_map(|l| l.strip_prefix("oid sha256:"))
        .expect("the pointer's oid")
        .to_owned()
}

/// The object is on the server, and every LFS request that carried a token
/// carried a `gr_` limited to `app`; uploads with write, and there were some.
#[track_caller]
fn assert_lfs_through_repo_tokens(world: &World, oid: &str, content: &str) {
    let stored = world
        .server
        .repo_path("acme", "app")
        .join("lfs/objects")
        .join(&oid[0..2])
        .join(&oid[2..4])
        .join(oid);
    assert_eq!(
        std::fs::read_to_string(&stored).ok().as_deref(),
        Some(content),
        "the LFS object is not on the server"
    );
    let lfs: Vec<_> = world
        .server
        .git_requests()
        .into_iter()
        .filter(|r| r.service.as_deref().is_some_and(|s| s.starts_with("lfs-")))
        .collect();
    for service in ["lfs-batch", "lfs-upload", "lfs-download"] {
        assert!(
            lfs.iter()
                .any(|r| r.service.as_deref() == Some(service) && r.status == 200),
            "no successful {service} request: {lfs:#?}"
        );
    }
    for r in lfs.iter().filter(|r| r.token.is_some()) {
        let t = r.token.as_ref().expect("filtered");
        assert_eq!(t.kind, Kind::Repo, "LFS saw a non-repo token: {r:#?}");
        assert_eq!(t.repo_allowlist, vec!["app".to_owned()]);
    }
}

/// A fake `ssh` for `ssh://git@githosted.test/acme/app.git`: runs git's
/// `git-upload-pack '/acme/app.git'` (or receive-pack) in the server's repo root,
/// and refuses anything else (git-lfs's `git-lfs-authenticate`, `git-lfs-transfer`).
fn fake_ssh(world: &World) -> PathBuf {
    let root = world
        .server
        .repo_path("acme", "app")
        .parent()
        .and_then(Path::parent)
        .expect("the server's repo root")
        .to_path_buf();
    let script = world.path("fake-ssh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n\
             for last; do :; done\n\
             case \"$last\" in\n\
             git-upload-pack\\ *|git-receive-pack\\ *) ;;\n\
             *) echo \"fake ssh: refusing $last\" >&2; exit 1 ;;\n\
             esac\n\
             cd '{}' || exit 1\n\
             exec sh -c \"$(printf '%s' \"$last\" | sed -e \"s#^git-#git #\" -e \"s#'/#'#\")\"\n",
            root.display()
        ),
    )
    .expect("write the fake ssh");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    script
}

#[test]
#[ignore = "needs git-lfs (Debian package git-lfs); CI installs it"]
fn lfs_push_and_clone_over_the_http_remote() {
    for git in GITS {
        let mut world = World::configured(&[]);
        world.with_env_parent();
        require_git_lfs(&world);
        let url = world.url("app");
        let work = world.clone(git, &url, "work");
        let content = format!("large content pushed over HTTP with {git}\n");
        let oid = commit_lfs_file(&world, git, &work, "big.bin", &content);
        let push = world.git(git, Some(&work), &["push", "-q", "origin", "HEAD:main"]);
        assert!(push.ok(), "{git}: push failed: {}", push.stderr);

        let other = world.clone(git, &url, "other");
        assert_eq!(
            std::fs::read_to_string(other.join("big.bin"))
                .ok()
                .as_deref(),
            Some(content.as_str()),
            "{git}: the clone did not get the LFS content"
        );
        assert_lfs_through_repo_tokens(&world, &oid, &content);
    }
}

#[test]
#[ignore = "needs git-lfs (Debian package git-lfs); CI installs it"]
fn lfs_push_and_clone_with_an_ssh_origin_and_lfs_url() {
    for git in GITS {
        let mut world = World::configured(&[]);
        world.with_env_parent();
        require_git_lfs(&world);
        let ssh = fake_ssh(&world);
        world.set_env("GIT_SSH_COMMAND", &ssh.to_string_lossy());
        world.set_env("GIT_SSH_VARIANT", "simple");
        let ssh_url = "ssh://git@githosted.test/acme/app.git";
        let lfs_url = format!("{}/info/lfs", world.url("app"));

        let work = world.clone(git, ssh_url, "work");
        world
            .git(git, Some(&work), &["config", "lfs.url", &lfs_url])
            .assert_ok();
        let content = format!("large content pushed with an ssh origin, {git}\n");
        let oid = commit_lfs_file(&world, git, &work, "big.bin", &content);
        let push = world.git(git, Some(&work), &["push", "-q", "origin", "HEAD:main"]);
        assert!(push.ok(), "{git}: push failed: {}", push.stderr);
        assert!(
            !push.stderr.contains("does not name a githosted repository"),
            "{}",
            push.stderr
        );

        let lfs_config = format!("lfs.url={lfs_url}");
        let clone = world.git(
            git,
            None,
            &["-c", &lfs_config, "clone", "-q", ssh_url, "other"],
        );
        assert!(clone.ok(), "{git}: clone failed: {}", clone.stderr);
        assert_eq!(
            std::fs::read_to_string(world.path("other").join("big.bin"))
                .ok()
                .as_deref(),
            Some(content.as_str()),
            "{git}: the clone did not get the LFS content"
        );
        assert_lfs_through_repo_tokens(&world, &oid, &content);
    }
}
