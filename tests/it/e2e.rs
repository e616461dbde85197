//! End to end: the real git client clones, fetches and pushes through the helper
//! against the local githosted-compatible server.
//!
//! Unix only: the harness runs processes as other users, uses Unix sockets and
//! `git http-backend` (Windows runs the unit tests and `protocol_props`).
#![cfg(unix)]

use githosted_testkit::*;

/// Every git request that carried a token carried a `gr_` repo token
/// allowlisted to exactly `repo`, with `permission`.
#[track_caller]
fn assert_only_repo_tokens(world: &World, repo: &str, permission: Permission) {
    let seen = world.server.git_requests();
    let with_token: Vec<_> = seen.iter().filter_map(|r| r.token.as_ref()).collect();
    assert!(
        !with_token.is_empty(),
        "no authenticated git request: {seen:#?}"
    );
    for record in with_token {
        assert_eq!(
            record.kind,
            Kind::Repo,
            "git saw a non-repo token: {record:#?}"
        );
        assert_eq!(record.prefix, "gr");
        assert_eq!(record.repo_allowlist, vec![repo.to_owned()]);
        assert_eq!(record.permission, permission);
    }
}

fn clone_fetch_push(git: &str, url_of: fn(&World, &str) -> String) {
    let mut world = World::configured(&[]);
    world.with_env_parent();
    let url = url_of(&world, "app");

    let work = world.clone(git, &url, "work");
    let pushed = world.commit(git, &work, "change.txt");
    let push = world.git(git, Some(&work), &["push", "-q", "origin", "HEAD:main"]);
    push.assert_ok();
    world.assert_no_tokens_in("git push output", &push.stderr);

    // The server has the commit.
    let on_server = world.server.git(
        Some(&world.server.repo_path("acme", "app")),
        &["rev-parse", "main"],
        None,
    );
    assert_eq!(on_server.trim(), pushed);

    // A second clone fetches it.
    let other = world.clone(git, &url, "other");
    world.commit(git, &other, "second.txt");
    world
        .git(git, Some(&other), &["push", "-q", "origin", "HEAD:main"])
        .assert_ok();
    world
        .git(git, Some(&work), &["fetch", "-q", "origin"])
        .assert_ok();
    let fetched = world.git(git, Some(&work), &["rev-parse", "origin/main"]);
    let second = world.git(git, Some(&other), &["rev-parse", "HEAD"]);
    assert_eq!(fetched.stdout, second.stdout);

    assert_only_repo_tokens(&world, "app", Permission::Write);
    let exchanges = world.server.exchanges();
    assert!(!exchanges.is_empty());
    for e in &exchanges {
        assert_eq!(e.allowlist, vec!["app".to_string()]);
        assert_eq!(e.requested_permission, Some(Permission::Write));
        assert_eq!(e.ttl_seconds, 3600);
        assert!(
            e.subject.starts_with("git-credential-githosted:tester@"),
            "{}",
            e.subject
        );
    }
}

#[test]
fn clone_fetch_push_new_git_plain_urls() {
    clone_fetch_push(GIT_NEW, World::url);
}

#[test]
fn clone_fetch_push_new_git_api_urls() {
    clone_fetch_push(GIT_NEW, World::git_prefixed_url);
}

#[test]
fn clone_fetch_push_old_git_plain_urls() {
    clone_fetch_push(GIT_OLD, World::url);
}

#[test]
fn clone_fetch_push_old_git_api_urls() {
    clone_fetch_push(GIT_OLD, World::git_prefixed_url);
}

#[test]
fn read_permission_clones_but_cannot_push() {
    for git in GITS {
        let mut world = World::configured(&["--permission", "read"]);
        world.with_env_parent();
        let work = world.clone(git, &world.url("app"), "work");
        world.commit(git, &work, "change.txt");
        let push = world.git(git, Some(&work), &["push", "origin", "HEAD:main"]);
        push.assert_failed();
        assert!(push.stderr.contains("403"), "{git}: {}", push.stderr);
        assert_only_repo_tokens(&world, "app", Permission::Read);
        for e in world.server.exchanges() {
            assert_eq!(e.requested_permission, Some(Permission::Read));
        }
    }
}

#[test]
fn get_answers_with_the_expiry_of_the_record() {
    let mut world = World::new();
    world.with_env_parent();
    let url = world.server.base_url();
    let run = world.helper(
        &["--api-url", &url, "--ttl", "600", "get"],
        Some(&request("http", &world.server.host(), Some("acme/app.git"))),
    );
    run.assert_ok();
    assert_eq!(field(&run.stdout, "username"), Some("githosted"));
    let token = field(&run.stdout, "password").expect("a password");
    let record = world
        .server
        .record_for(token)
        .expect("a token the server minted");
    assert_eq!(record.kind, Kind::Repo);
    assert_eq!(record.repo_allowlist, vec!["app".to_string()]);
    let expiry: i64 = field(&run.stdout, "password_expiry_utc")
        .expect("expiry")
        .parse()
        .unwrap();
    assert_eq!(Some(expiry), record.expires_at);
    assert_eq!(world.server.exchanges()[0].ttl_seconds, 600);
    assert!(run.stderr.is_empty(), "{}", run.stderr);
}

#[test]
fn options_may_follow_the_operation() {
    let mut world = World::new();
    world.with_env_parent();
    let url = world.server.base_url();
    let run = world.helper(
        &["get", "--api-url", &url, "--permission", "read"],
        Some(&request("http", &world.server.host(), Some("acme/app.git"))),
    );
    run.assert_ok();
    assert!(field(&run.stdout, "password").is_some(), "{run:#?}");
    assert_eq!(
        world.server.exchanges()[0].requested_permission,
        Some(Permission::Read)
    );
}

#[test]
fn revoked_parent_fails_fast_with_a_clear_line() {
    for git in GITS {
        let mut world = World::configured(&[]);
        let parent = world.with_env_parent();
        world.server.revoke(&parent);

        let run = world.git(git, None, &["ls-remote", &world.url("app")]);
        run.assert_failed();
        let host = world.server.host();
        assert!(
            run.stderr.contains(&format!(
                "{host} rejected GITHOSTED_TOKEN (expired or revoked)"
            )),
            "{git}: {}",
            run.stderr
        );

        let url = world.server.base_url();
        let get = world.helper(
            &["--api-url", &url, "get"],
            Some(&request("http", &host, Some("acme/app.git"))),
        );
        assert_eq!(field(&get.stdout, "password"), None, "{get:#?}");
        assert_eq!(field(&get.stdout, "quit"), Some("1"));
        world.assert_no_tokens_in("helper stderr", &get.stderr);
    }
}

#[test]
fn no_parent_token_says_how_to_log_in() {
    let world = World::configured(&[]);
    let url = world.server.base_url();
    let host = world.server.host();
    let run = world.helper(
        &["--api-url", &url, "get"],
        Some(&request("http", &host, Some("acme/app.git"))),
    );
    assert_eq!(field(&run.stdout, "password"), None);
    let expected = if std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some() {
        // A keychain is there (CI's keyring session) and holds nothing for this host.
        format!(
            "no githosted workspace token for acme on {host}: run `git-credential-githosted login --api-url {url} --workspace acme` (token on stdin), or set GITHOSTED_TOKEN"
        )
    } else {
        format!(
            "could not read the workspace token for acme on {host}: the Secret Service keyring (D-Bus) is not reachable"
        )
    };
    assert!(run.stderr.contains(&expected), "{}", run.stderr);
    assert!(run.stderr.contains("GITHOSTED_TOKEN"), "{}", run.stderr);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
}

#[test]
fn unknown_repo_names_repo_and_workspace() {
    let mut world = World::configured(&[]);
    world.with_env_parent();
    let run = world.git(GIT_NEW, None, &["ls-remote", &world.url("nope")]);
    run.assert_failed();
    assert!(
        run.stderr.contains("no repo `nope` in workspace `acme`"),
        "{}",
        run.stderr
    );
}

#[test]
fn parent_of_another_workspace_names_repo_and_workspace() {
    let mut world = World::configured(&[]);
    world.server.add_workspace("other");
    let foreign = world
        .server
        .seed_token("other", TokenSpec::workspace_write());
    world.set_env("GITHOSTED_TOKEN", &foreign);
    let run = world.git(GIT_NEW, None, &["ls-remote", &world.url("app")]);
    run.assert_failed();
    assert!(
        run.stderr.contains("your token is for other, not acme"),
        "{}",
        run.stderr
    );
    assert_eq!(world.server.exchange_count(), 0);
}

#[test]
fn read_only_parent_asked_for_write_says_so() {
    let mut world = World::configured(&[]);
    let parent = world.server.seed_token("acme", TokenSpec::workspace_read());
    world.set_env("GITHOSTED_TOKEN", &parent);
    let run = world.git(GIT_NEW, None, &["ls-remote", &world.url("app")]);
    run.assert_failed();
    assert!(
        run.stderr.contains("refused a write token for acme/app")
            && run.stderr.contains("--permission auto"),
        "{}",
        run.stderr
    );
}

#[test]
fn repo_token_in_env_is_passed_through() {
    for git in GITS {
        let mut world = World::configured(&[]);
        let token = world
            .server
            .seed_token("acme", TokenSpec::repo(Permission::Write, &["app"], None));
        world.set_env("GITHOSTED_TOKEN", &token);
        let work = world.clone(git, &world.url("app"), "work");
        world.commit(git, &work, "x.txt");
        world
            .git(git, Some(&work), &["push", "-q", "origin", "HEAD:main"])
            .assert_ok();
        assert_eq!(
            world.server.exchange_count(),
            0,
            "a gr_ must not be exchanged"
        );
        let id = world.server.record_for(&token).expect("record").id;
        let requests = world.server.git_requests();
        assert!(requests.iter().any(|r| r.token_id() == Some(id.as_str())));
        assert!(
            requests
                .iter()
                .filter_map(|r| r.token_id())
                .all(|t| t == id)
        );
    }
}

#[test]
fn other_hosts_and_protocols_get_no_answer() {
    let mut world = World::new();
    world.with_env_parent();
    let url = world.server.base_url();
    let host = world.server.host();
    for input in [
        request("https", "github.com", Some("acme/app.git")),
        request("ssh", &host, Some("acme/app.git")),
        request("http", "127.0.0.1:1", Some("acme/app.git")),
        request("https", "githosted.dev", Some("acme/app.git")),
        format!(
            "{}username=alice\n",
            request("http", &host, Some("acme/app.git"))
        ),
    ] {
        let run = world.helper(&["--api-url", &url, "get"], Some(&input));
        run.assert_ok();
        assert_eq!(run.stdout, "", "answered {input:?}");
        assert_eq!(run.stderr, "", "spoke about {input:?}");
    }
    assert_eq!(world.server.calls("ExchangeToken"), 0);
}

#[test]
fn missing_path_says_to_configure() {
    let mut world = World::new();
    world.with_env_parent();
    let url = world.server.base_url();
    let run = world.helper(
        &["--api-url", &url, "get"],
        Some(&request("http", &world.server.host(), None)),
    );
    // Explained, so git is told to stop (issue 21, item 3), never given a password.
    assert_eq!(run.stdout, "quit=1\n");
    assert!(
        run.stderr.contains("configure") && run.stderr.contains(&world.server.host()),
        "{}",
        run.stderr
    );
    assert_eq!(run.stderr.lines().count(), 1);
}

#[test]
fn unknown_operations_and_store_and_erase_print_nothing() {
    let mut world = World::new();
    world.with_env_parent();
    let url = world.server.base_url();
    let before = snapshot(&world.home);
    let host = world.server.host();
    let inputs = [
        format!(
            "{}username=githosted\npassword=gr_whatever\n",
            request("http", &host, Some("acme/app.git"))
        ),
        format!(
            "{}username=githosted\npassword=gr_whatever\nephemeral=1\n",
            request("http", &host, Some("acme/app.git"))
        ),
        format!(
            "{}username=alice\npassword=hunter2\n",
            request("https", "example.com", None)
        ),
    ];
    for input in &inputs {
        for op in ["store", "erase", "frobnicate"] {
            let run = world.helper(&["--api-url", &url, "-vv", op], Some(input));
            run.assert_ok();
            assert_eq!(run.stdout, "", "{op}");
            assert!(!run.stderr.contains("hunter2"), "{}", run.stderr);
        }
    }
    assert_eq!(world.server.calls("ExchangeToken"), 0);
    // Nothing was written under HOME.
    assert_eq!(snapshot(&world.home), before);
}

/// Every file under `dir` with its contents.
fn snapshot(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut files: Vec<_> = walk(dir)
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap_or_default();
            (p, bytes)
        })
        .collect();
    files.sort();
    files
}

#[test]
fn hostile_input_is_refused_without_an_answer() {
    let mut world = World::new();
    world.with_env_parent();
    let url = world.server.base_url();
    let host = world.server.host();
    let long = format!(
        "{}wwwauth[]={}\n",
        request("http", &host, Some("acme/app.git")),
        "a".repeat(70_000)
    );
    let nul = format!("protocol=http\nhost={host}\npath=acme/app.git\0\n");
    for input in [long, nul] {
        let run = world.helper(&["--api-url", &url, "get"], Some(&input));
        assert_eq!(run.stdout, "");
        assert!(!run.ok());
        assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    }
    assert_eq!(world.server.calls("ExchangeToken"), 0);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// The authentication scheme of every authenticated git request.
fn schemes(world: &World) -> Vec<githosted_testkit::server::AuthScheme> {
    world
        .server
        .git_requests()
        .iter()
        .filter(|r| r.token.is_some())
        .map(|r| r.auth_scheme)
        .collect()
}

#[test]
fn new_git_puts_bearer_on_the_wire_old_git_basic() {
    use githosted_testkit::server::AuthScheme;
    for (git, scheme) in [(GIT_NEW, AuthScheme::Bearer), (GIT_OLD, AuthScheme::Basic)] {
        let mut world = World::configured(&[]);
        world.with_env_parent();
        let work = world.clone(git, &world.url("app"), "work");
        world.commit(git, &work, "b.txt");
        world
            .git(git, Some(&work), &["push", "-q", "origin", "HEAD:main"])
            .assert_ok();
        let seen = schemes(&world);
        assert!(!seen.is_empty());
        assert!(seen.iter().all(|s| *s == scheme), "{git}: {seen:?}");
        assert_only_repo_tokens(&world, "app", Permission::Write);
    }
}

#[test]
fn bearer_answer_only_with_the_capability() {
    let mut world = World::new();
    world.with_env_parent();
    let url = world.server.base_url();
    let host = world.server.host();
    let plain = request("http", &host, Some("acme/app.git"));
    let run = world.helper(
        &["--api-url", &url, "get"],
        Some(&format!("capability[]=authtype\n{plain}")),
    );
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(
        lines[..2],
        ["capability[]=authtype", "authtype=Bearer"],
        "{}",
        run.stdout
    );
    assert!(field(&run.stdout, "credential").is_some_and(|t| t.starts_with("gr_")));
    assert_eq!(field(&run.stdout, "ephemeral"), Some("1"));
    assert!(field(&run.stdout, "password_expiry_utc").is_some());
    assert_eq!(field(&run.stdout, "password"), None);

    let run = world.helper(
        &["--api-url", &url, "get"],
        Some(&format!("capability[]=state\n{plain}")),
    );
    assert_eq!(field(&run.stdout, "authtype"), None);
    assert!(field(&run.stdout, "password").is_some());
}

#[test]
fn a_push_whose_first_401_comes_on_a_post_still_works() {
    for git in GITS {
        let mut world = World::configured(&[]);
        world.with_env_parent();
        let work = world.clone(git, &world.url("app"), "work");
        world.commit(git, &work, "post.txt");
        world.server.set_anonymous_info_refs(true);
        let before = world.server.git_requests().len();
        world
            .git(git, Some(&work), &["push", "-q", "origin", "HEAD:main"])
            .assert_ok();
        let push: Vec<_> = world
            .server
            .git_requests()
            .into_iter()
            .skip(before)
            .collect();
        let first_401 = push
            .iter()
            .find(|r| r.status == 401)
            .expect("a 401 during the push");
        assert_eq!(first_401.method, "POST", "{git}: {push:#?}");
        assert!(
            push.iter()
                .any(|r| r.method == "POST" && r.status == 200 && r.token.is_some())
        );
    }
}
