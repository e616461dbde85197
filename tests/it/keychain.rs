//! The real OS keychain (a Secret Service on Linux). These need a D-Bus session
//! with an unlocked keyring: `.ci/run` starts one and runs them with
//! `--include-ignored`; elsewhere they report themselves as ignored.
//!
//! Unix only: the harness runs processes as other users, uses Unix sockets and
//! `git http-backend` (Windows runs the unit tests and `protocol_props`).
#![cfg(unix)]

use std::process::Command;

use githosted_testkit::*;

/// What `secret-tool` finds for an account of this helper.
fn secret_tool_lookup(world: &World, account: &str) -> Option<String> {
    let mut cmd = Command::new("secret-tool");
    cmd.args([
        "lookup",
        "service",
        "git-credential-githosted",
        "username",
        account,
    ]);
    let run = world.run(cmd, None);
    run.ok().then_some(run.stdout)
}

#[test]
#[ignore = "needs a Secret Service (D-Bus session + unlocked keyring); .ci/run starts one"]
fn login_then_clone_then_logout() {
    let world = World::configured(&[]);
    let url = world.server.base_url();
    let host = world.server.host();
    let parent = world
        .server
        .seed_token("acme", TokenSpec::workspace_write());

    let login = world.helper(&["login", "--api-url", &url], Some(&parent));
    login.assert_ok();
    // Filed under the workspace the API says the token belongs to.
    assert!(
        login
            .stderr
            .contains(&format!("for {host}/acme in the Secret Service"))
            && login.stderr.contains("it can fetch and push"),
        "{}",
        login.stderr
    );
    world.assert_no_tokens_in("login output", &format!("{}{}", login.stdout, login.stderr));
    assert_eq!(
        world.server.calls("ListTokens"),
        1,
        "login checks the token"
    );
    assert_eq!(
        secret_tool_lookup(&world, &format!("{host}/acme")).as_deref(),
        Some(parent.as_str())
    );

    // No GITHOSTED_TOKEN anywhere: the keychain provides the parent.
    assert!(world.env.is_empty());
    for git in GITS {
        let work = world.clone(git, &world.url("app"), &format!("work-{}", git.len()));
        world.commit(git, &work, &format!("k{}.txt", git.len()));
        world
            .git(git, Some(&work), &["push", "-q", "origin", "HEAD:main"])
            .assert_ok();
    }
    assert!(world.server.exchange_count() >= 1);
    for e in world.server.exchanges() {
        assert_eq!(e.parent_id, world.server.record_for(&parent).unwrap().id);
    }

    let logout = world.helper(&["logout", "--api-url", &url], None);
    logout.assert_ok();
    assert!(logout.stderr.contains("removed"), "{}", logout.stderr);
    assert_eq!(secret_tool_lookup(&world, &format!("{host}/acme")), None);
    let get = world.helper(
        &["--api-url", &url, "get"],
        Some(&request("http", &host, Some("acme/app.git"))),
    );
    assert_eq!(field(&get.stdout, "password"), None);
    assert!(get.stderr.contains("login"), "{}", get.stderr);
}

#[test]
#[ignore = "needs a Secret Service (D-Bus session + unlocked keyring); .ci/run starts one"]
fn workspace_entry_wins_over_host_entry() {
    let world = World::configured(&[]);
    let url = world.server.base_url();
    world.server.add_workspace("other");
    world.server.add_repo("other", "lib");
    let acme = world
        .server
        .seed_token("acme", TokenSpec::workspace_write());
    let other = world
        .server
        .seed_token("other", TokenSpec::workspace_write());
    world
        .helper(&["login", "--api-url", &url], Some(&acme))
        .assert_ok();
    world
        .helper(
            &["login", "--api-url", &url, "--workspace", "other"],
            Some(&other),
        )
        .assert_ok();

    world.clone(GIT_NEW, &format!("{url}/other/lib.git"), "lib");
    world.clone(GIT_NEW, &world.url("app"), "app");
    let parents: Vec<String> = world
        .server
        .exchanges()
        .into_iter()
        .map(|e| e.parent_id)
        .collect();
    let id = |t: &str| world.server.record_for(t).unwrap().id;
    assert_eq!(parents, vec![id(&other), id(&acme)]);

    world
        .helper(&["logout", "--api-url", &url, "--workspace", "other"], None)
        .assert_ok();
    world
        .helper(&["logout", "--api-url", &url], None)
        .assert_ok();
}

#[test]
#[ignore = "needs a Secret Service (D-Bus session + unlocked keyring); .ci/run starts one"]
fn revoked_stored_parent_says_to_log_in_again() {
    let world = World::configured(&[]);
    let url = world.server.base_url();
    let host = world.server.host();
    let parent = world
        .server
        .seed_token("acme", TokenSpec::workspace_write());
    world
        .helper(&["login", "--api-url", &url], Some(&parent))
        .assert_ok();
    world.server.revoke(&parent);

    let run = world.git(GIT_NEW, None, &["ls-remote", &world.url("app")]);
    run.assert_failed();
    assert!(
        run.stderr
            .contains(&format!("{host} rejected the Secret Service"))
            && run.stderr.contains(&format!(
                "git-credential-githosted login --api-url {url} --workspace acme"
            )),
        "{}",
        run.stderr
    );
    // A rejected parent is never deleted by the helper: only logout does that.
    assert_eq!(
        secret_tool_lookup(&world, &format!("{host}/acme")).as_deref(),
        Some(parent.as_str())
    );
    world
        .helper(&["logout", "--api-url", &url], None)
        .assert_ok();
}

#[test]
#[ignore = "needs a Secret Service (D-Bus session + unlocked keyring); .ci/run starts one"]
fn login_refuses_a_rejected_or_wrong_token() {
    let world = World::new();
    let url = world.server.base_url();
    let host = world.server.host();
    let revoked = world
        .server
        .seed_token("acme", TokenSpec::workspace_write());
    world.server.revoke(&revoked);
    let run = world.helper(&["login", "--api-url", &url], Some(&revoked));
    run.assert_failed();
    assert!(
        run.stderr.contains("rejected") && run.stderr.contains("nothing was stored"),
        "{}",
        run.stderr
    );

    let repo_token = world
        .server
        .seed_token("acme", TokenSpec::repo(Permission::Read, &["app"], None));
    let run = world.helper(&["login", "--api-url", &url], Some(&repo_token));
    run.assert_failed();
    assert!(run.stderr.contains("repo token"), "{}", run.stderr);
    assert_eq!(secret_tool_lookup(&world, &host), None);
    world.assert_no_tokens_in("login output", &run.stderr);

    // --no-verify stores without asking the API.
    let calls = world.server.calls("ListTokens");
    let fresh = world
        .server
        .seed_token("acme", TokenSpec::workspace_write());
    world
        .helper(
            &["login", "--api-url", &url, "--no-verify"],
            Some(&format!("{fresh}\n")),
        )
        .assert_ok();
    assert_eq!(world.server.calls("ListTokens"), calls);
    assert_eq!(
        secret_tool_lookup(&world, &host).as_deref(),
        Some(fresh.as_str())
    );
    world
        .helper(&["logout", "--api-url", &url], None)
        .assert_ok();
}

#[test]
#[ignore = "needs a Secret Service (D-Bus session + unlocked keyring); .ci/run starts one"]
fn logout_revokes_every_cached_token_and_empties_the_agent() {
    let world = World::configured(&[]);
    let url = world.server.base_url();
    world.server.add_repo("acme", "lib");
    let parent = world
        .server
        .seed_token("acme", TokenSpec::workspace_write());
    world
        .helper(&["login", "--api-url", &url], Some(&parent))
        .assert_ok();
    let minted = [
        world.token("app", &[]),
        world.token("app", &["--permission", "read"]),
        world.token("lib", &[]),
    ];
    let mut ids: Vec<String> = minted
        .iter()
        .map(|t| world.server.record_for(t).unwrap().id)
        .collect();

    let logout = world.helper(&["logout", "--api-url", &url], None);
    logout.assert_ok();
    assert!(
        logout.stderr.contains("revoked 3 of 3 cached repo tokens"),
        "{}",
        logout.stderr
    );
    let mut revoked = world.server.revoked_via_api();
    revoked.sort();
    ids.sort();
    assert_eq!(revoked, ids);
    for token in &minted {
        assert!(world.server.record_for(token).unwrap().revoked_at.is_some());
    }

    let status = world.helper(&["--api-url", &url, "status"], None);
    assert!(
        status.stdout.contains("0 cached tokens"),
        "{}",
        status.stdout
    );
    let get = world.get("app", &[]);
    assert_eq!(field(&get.stdout, "password"), None, "{get:#?}");
    assert_eq!(world.server.exchange_count(), 3);
}

/// First hour item 2: `login` says what the token can do; a token of another
/// workspace than `--workspace` says is refused and nothing is stored.
#[test]
#[ignore = "needs a Secret Service (D-Bus session + unlocked keyring); .ci/run starts one"]
fn login_says_what_the_token_can_do_and_refuses_another_workspace() {
    let world = World::new();
    world.server.add_workspace("globex");
    let url = world.server.base_url();
    let host = world.server.host();
    let read_only = world.server.seed_token("acme", TokenSpec::workspace_read());
    let login = world.helper(&["login", "--api-url", &url], Some(&read_only));
    login.assert_ok();
    assert!(
        login.stderr.contains("it is read-only: fetches only")
            && login
                .stderr
                .contains(&format!("configure --api-url {url} --permission auto")),
        "{}",
        login.stderr
    );

    let acme = world
        .server
        .seed_token("acme", TokenSpec::workspace_write());
    let run = world.helper(
        &["login", "--api-url", &url, "--workspace", "globex"],
        Some(&acme),
    );
    run.assert_failed();
    assert!(
        run.stderr
            .contains("this token is for acme, not globex: nothing was stored")
            && run.stderr.contains("--workspace acme"),
        "{}",
        run.stderr
    );
    assert_eq!(secret_tool_lookup(&world, &format!("{host}/globex")), None);
    // Two entries now? Only acme's (read-only) one: logout needs no --workspace.
    world
        .helper(&["logout", "--api-url", &url], None)
        .assert_ok();
    assert_eq!(secret_tool_lookup(&world, &format!("{host}/acme")), None);
}

/// First hour item 6: on a terminal, with no parent for the workspace, the
/// first clone asks on /dev/tty (never git's own `Username for …` prompt),
/// stores the token for that workspace, and the next clone does not ask.
#[test]
#[ignore = "needs a Secret Service (D-Bus session + unlocked keyring); .ci/run starts one"]
fn the_first_clone_asks_once_on_the_terminal() {
    use githosted_testkit::pty::Pty;
    use std::time::Duration;
    let mut world = World::configured(&[]);
    world.set_env("GIT_TERMINAL_PROMPT", "1");
    let parent = world
        .server
        .seed_token("acme", TokenSpec::workspace_write());
    let mut cmd = world.command(GIT_NEW);
    cmd.args(["clone", "-q", &world.url("app"), "first"]);
    let mut pty = Pty::spawn(cmd);
    pty.expect("Paste it here (input hidden", Duration::from_secs(60));
    assert!(!pty.screen().contains("Username for"), "{}", pty.screen());
    pty.send(format!("{parent}\r").as_bytes());
    let status = pty.wait(Duration::from_secs(60));
    assert!(status.success(), "{}", pty.screen());
    assert!(!pty.screen().contains(&parent), "the token was echoed");
    assert!(
        pty.screen().contains("git will not ask again"),
        "{}",
        pty.screen()
    );
    let host = world.server.host();
    assert_eq!(
        secret_tool_lookup(&world, &format!("{host}/acme")).as_deref(),
        Some(parent.as_str())
    );
    // The next one does not ask (and needs no terminal).
    world.clone(GIT_NEW, &world.url("app"), "second");
}

/// A token stored for some API is no reason for `configure` to point git at
/// it: without `--api-url`, `configure` writes the public hosts (it once chose
/// "the only API with a stored token", so a token stored by anyone on the
/// same keyring redirected it).
#[test]
#[ignore = "needs a Secret Service (D-Bus session + unlocked keyring); .ci/run starts one"]
fn configure_is_not_steered_by_a_stored_token() {
    let world = World::new();
    let url = world.server.base_url();
    let parent = world
        .server
        .seed_token("acme", TokenSpec::workspace_write());
    world
        .helper(&["login", "--api-url", &url], Some(&parent))
        .assert_ok();
    world.helper(&["configure"], None).assert_ok();
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
    assert_eq!(helpers.stdout.trim(), helper(), "{helpers:#?}");
    world
        .helper(&["logout", "--api-url", &url], None)
        .assert_ok();
}
