//! Other git clients through the helper (issue 21, item 11).
//!
//! cargo's built-in git (libgit2) asks the helper once, then sends a second
//! request without credentials and gives up on the 401; with
//! `net.git-fetch-with-cli = true` (here `CARGO_NET_GIT_FETCH_WITH_CLI=true`)
//! cargo runs git, and git asks the helper as for any fetch. This test makes
//! a crate in a private repository on the test server and a second crate that
//! depends on it by git URL, and resolves it with `cargo generate-lockfile`
//! under a private CARGO_HOME, through the helper.
#![cfg(unix)]

use githosted_testkit::*;

/// The cargo running these tests (cargo sets `CARGO` for them): the real
/// toolchain binary, which needs no rustup and no HOME of ours.
fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| {
        panic!("CARGO is not set: run this test with `cargo test --test other_clients`")
    })
}

/// A world with acme/lib holding a crate `tinylib`, and `app/`, a crate that
/// depends on it by git URL; cargo runs with a private CARGO_HOME.
fn lib_and_app() -> World {
    let mut world = World::configured(&[]);
    world.with_env_parent();
    world.server.add_repo("acme", "lib");

    // The dependency: a tiny crate pushed to acme/lib through the helper.
    let lib = world.clone(GIT_NEW, &world.url("lib"), "lib");
    std::fs::create_dir_all(lib.join("src")).expect("src");
    std::fs::write(
        lib.join("Cargo.toml"),
        "[package]\nname = \"tinylib\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
    )
    .expect("lib manifest");
    std::fs::write(lib.join("src/lib.rs"), "pub fn answer() -> u32 { 42 }\n").expect("lib.rs");
    world
        .git(GIT_NEW, Some(&lib), &["add", "Cargo.toml", "src/lib.rs"])
        .assert_ok();
    world.commit(GIT_NEW, &lib, "README");
    world
        .git(GIT_NEW, Some(&lib), &["push", "-q", "origin", "HEAD:main"])
        .assert_ok();

    // The crate that depends on it by git URL.
    let app = world.path("app");
    std::fs::create_dir_all(app.join("src")).expect("app src");
    std::fs::write(
        app.join("Cargo.toml"),
        format!(
            "[package]\nname = \"tinyapp\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n\
             [dependencies]\ntinylib = {{ git = \"{}\", branch = \"main\" }}\n",
            world.url("lib")
        ),
    )
    .expect("app manifest");
    std::fs::write(
        app.join("src/main.rs"),
        "fn main() { println!(\"{}\", tinylib::answer()); }\n",
    )
    .expect("main.rs");

    world.set_env("CARGO_HOME", &world.path("cargo-home").to_string_lossy());
    world.set_env("CARGO_NET_OFFLINE", "false");
    world
}

fn generate_lockfile(world: &World) -> Run {
    let mut cmd = std::process::Command::new(cargo());
    cmd.arg("generate-lockfile").current_dir(world.path("app"));
    world.run(cmd, None)
}

#[test]
fn cargo_fetches_a_private_git_dependency_with_git_fetch_with_cli() {
    let mut world = lib_and_app();
    world.set_env("CARGO_NET_GIT_FETCH_WITH_CLI", "true");
    let app = world.path("app");
    let run = generate_lockfile(&world);
    assert!(
        run.ok(),
        "cargo could not fetch the git dependency: {}",
        run.stderr
    );
    let lock = std::fs::read_to_string(app.join("Cargo.lock")).expect("Cargo.lock");
    assert!(lock.contains("name = \"tinylib\""), "{lock}");
    assert!(
        lock.contains(&format!("git+{}?branch=main#", world.url("lib"))),
        "{lock}"
    );
}

/// What the README says about cargo's built-in git (libgit2): it gives up
/// (after one round with the helper, a request without credentials gets 401).
/// When this starts passing through, the README's cargo section changes.
#[test]
fn cargo_s_built_in_git_gives_up_without_git_fetch_with_cli() {
    let mut world = lib_and_app();
    world.set_env("CARGO_NET_GIT_FETCH_WITH_CLI", "false");
    let run = generate_lockfile(&world);
    assert!(
        !run.ok(),
        "libgit2 fetched it: update the README's cargo section"
    );
    eprintln!("cargo (libgit2) said: {}", run.stderr);
    assert!(run.stderr.contains("credential"), "{}", run.stderr);
}
