//! The first hour of a new user: the right workspace or a clear refusal, what
//! a read-only token can do, a CLI that answers a person typing.
//!
//! Unix only: the harness runs processes as other users, uses Unix sockets and
//! `git http-backend` (Windows runs the unit tests and `protocol_props`).
#![cfg(unix)]

use std::time::Duration;

use githosted_testkit::pty::Pty;
use githosted_testkit::*;

/// Item 1: a parent of another workspace (or a typo of the workspace) is never
/// exchanged, nothing is cached, and one line says what to do.
#[test]
fn another_workspaces_token_is_refused_before_any_exchange() {
    for options in [&[][..], &["--no-agent"][..]] {
        let mut world = World::new();
        world.server.add_workspace("globex");
        world.server.add_repo("globex", "lib");
        world.server.add_repo("acme", "lib");
        world.with_env_parent(); // an acme token
        let url = world.server.base_url();
        for (ws, repo) in [("globex", "lib"), ("acmee", "app")] {
            let path = format!("{ws}/{repo}.git");
            let run = world.helper(
                &[&["--api-url", url.as_str()][..], options, &["get"]].concat(),
                Some(&request("http", &world.server.host(), Some(&path))),
            );
            assert_eq!(field(&run.stdout, "password"), None, "{run:#?}");
            assert!(
                run.stderr
                    .contains(&format!("your token is for acme, not {ws}"))
                    && run
                        .stderr
                        .contains(&format!("login --api-url {url} --workspace {ws}")),
                "{}",
                run.stderr
            );
            assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
        }
        assert_eq!(world.server.exchange_count(), 0, "{options:?}: exchanged");
        if options.is_empty() {
            let status = world.helper(&["--api-url", &url, "status"], None);
            assert!(
                status.stdout.contains("0 cached tokens"),
                "{}",
                status.stdout
            );
        }
        // The right workspace still works.
        assert!(world.token("app", options).starts_with("gr_"));
    }
}

/// Item 2: with a read-only workspace token, a write request fails with the
/// exact command that fixes it.
#[test]
fn a_read_only_parent_says_where_permission_goes() {
    let mut world = World::new();
    let parent = world.server.seed_token("acme", TokenSpec::workspace_read());
    world.set_env("GITHOSTED_TOKEN", &parent);
    let url = world.server.base_url();
    let run = world.get("app", &[]);
    assert_eq!(field(&run.stdout, "password"), None);
    assert!(
        run.stderr
            .contains(&format!("configure --api-url {url} --permission auto")),
        "{}",
        run.stderr
    );
    assert!(
        world
            .token("app", &["--permission", "read"])
            .starts_with("gr_")
    );
}

/// Item 3: a person typing a wrong word is told, with the closest command;
/// git (stdin not a terminal) inventing an operation gets silence.
#[test]
fn unknown_words_typed_by_a_person_get_did_you_mean() {
    let world = World::new();
    for (typed, meant) in [
        ("statsu", "status"),
        ("doctr", "doctor"),
        ("loginn", "login"),
    ] {
        let mut cmd = world.command(helper());
        cmd.arg(typed);
        let mut pty = Pty::spawn(cmd);
        let status = pty.wait(Duration::from_secs(20));
        assert_eq!(status.code(), Some(2), "{typed}: {}", pty.screen());
        assert!(
            pty.screen().contains(&format!("did you mean `{meant}`")),
            "{}",
            pty.screen()
        );
        // From git (stdin a pipe): quiet success.
        let run = world.helper(&[typed], Some(""));
        run.assert_ok();
        assert_eq!(run.stdout, "");
        assert_eq!(run.stderr, "");
    }
}

/// Item 5: a token pasted as an argument is never echoed back.
#[test]
fn a_token_in_argv_is_refused_without_showing_it() {
    let world = World::new();
    let secret = "gw_pastedbymistake0123456789";
    for args in [
        vec!["login", secret],
        vec!["login", "--workspace", secret],
        vec![secret],
        vec!["--api-url=gr_oops0123456789", "status"],
    ] {
        let run = world.helper(&args, None);
        assert_eq!(run.status.code(), Some(2), "{args:?}");
        assert!(
            run.stderr.contains("tokens are read from stdin"),
            "{}",
            run.stderr
        );
        assert!(!run.stderr.contains("pastedbymistake") && !run.stderr.contains("oops0123"));
        assert!(!run.stdout.contains("pastedbymistake"));
    }
}

/// Item 5: Ctrl-C at the login prompt leaves the terminal as it was (echo on).
#[test]
fn ctrl_c_at_the_login_prompt_restores_the_terminal() {
    let world = World::new();
    let mut cmd = world.command(helper());
    cmd.args(["--api-url", &world.server.base_url(), "login"]);
    let mut pty = Pty::spawn(cmd);
    pty.expect("(input hidden):", Duration::from_secs(20));
    // Echo goes off before the prompt is shown (checking before it raced the
    // helper's own switch); Ctrl-C must turn it back on.
    assert!(!pty.echoes(), "the prompt left echo on");
    pty.send(b"gw_half");
    pty.send(&[0x03]);
    let status = pty.wait(Duration::from_secs(20));
    assert!(!status.success());
    assert!(pty.echoes(), "the terminal was left with echo off");
    assert!(pty.screen().contains("interrupted"), "{}", pty.screen());
    assert!(
        !pty.screen().contains("gw_half"),
        "the typed token was echoed"
    );
}

/// Item 7: the API need not be repeated: GITHOSTED_API_URL, else (for a
/// person's commands) the one API `configure` wrote.
#[test]
fn the_api_is_remembered() {
    let mut world = World::new();
    world.with_env_parent();
    let url = world.server.base_url();
    // Not configured, not named: the public API (and no token for it here).
    let run = world.helper(&["token", "--repo", "acme/app"], None);
    run.assert_failed();
    world.set_env("GITHOSTED_API_URL", &url);
    let run = world.helper(&["token", "--repo", "acme/app"], None);
    run.assert_ok();
    assert!(run.stdout.starts_with("gr_"));

    let mut world = World::configured(&["--permission", "read"]);
    world.with_env_parent();
    let url = world.server.base_url();
    let run = world.helper(&["token", "--repo", "acme/app"], None);
    run.assert_ok();
    let status = world.helper(&["status"], None);
    assert!(
        status.stdout.contains(&format!("git: {url}/ helpers = ")),
        "{}",
        status.stdout
    );
    // git's own `get` takes its options from the helper line, as always.
    let run = world.git(GIT_NEW, None, &["ls-remote", &world.url("app")]);
    run.assert_ok();
}

/// Item 7: a host that does not resolve fails at once, in one line, each
/// cause once.
#[test]
fn a_host_that_does_not_resolve_fails_at_once() {
    let mut world = World::new();
    world.with_env_parent();
    for options in [&[][..], &["--no-agent"][..]] {
        let mut args = vec![
            "--api-url",
            "https://no-such-host.invalid",
            "token",
            "--repo",
            "acme/app",
        ];
        args.extend_from_slice(options);
        let run = world.helper(&args, None);
        run.assert_failed();
        assert!(run.elapsed < Duration::from_secs(5), "{:?}", run.elapsed);
        assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
        assert!(
            run.stderr.contains("cannot resolve no-such-host.invalid"),
            "{}",
            run.stderr
        );
        assert!(!run.stderr.contains("try again later"), "{}", run.stderr);
        assert_eq!(
            run.stderr.matches("no-such-host.invalid").count(),
            1,
            "{}",
            run.stderr
        );
    }
}

/// Item 8: inside a clone, `token` needs no --repo (origin, or the only
/// githosted remote), as `gh` does.
#[test]
fn token_in_a_clone_finds_the_repo() {
    let mut world = World::configured(&[]);
    world.with_env_parent();
    world.server.add_repo("acme", "lib");
    let clone = world.clone(GIT_NEW, &world.url("lib"), "lib");
    let mut cmd = std::process::Command::new(helper());
    cmd.arg("token").current_dir(&clone);
    let run = world.run(cmd, None);
    run.assert_ok();
    let record = world
        .server
        .record_for(run.stdout.trim())
        .expect("a minted token");
    assert_eq!(record.repo_allowlist, vec!["lib".to_string()]);
    // Outside a clone it says what to do.
    let run = world.helper(&["token"], None);
    run.assert_failed();
    assert!(
        run.stderr.contains("--repo WORKSPACE/REPO"),
        "{}",
        run.stderr
    );
}

/// Items 9 and 10: each command's help lists its own options; status and
/// doctor speak JSON with stable fields and never a secret; colour only when
/// asked for (or on a terminal without NO_COLOR); completions and a man page
/// come from the same definition.
#[test]
fn conventions_people_expect() {
    let mut world = World::configured(&[]);
    world.with_env_parent();
    world.token("app", &[]);
    let help = |cmd: &str| world.helper(&[cmd, "--help"], None).stdout;
    let login = help("login");
    assert!(
        login.contains("--workspace") && login.contains("--no-verify"),
        "{login}"
    );
    assert!(!login.contains("--repo") && !login.contains("--remove") && !login.contains("--ttl"));
    let get = help("get");
    assert!(
        !get.contains("--remove") && get.contains("GITHOSTED_WORKSPACE"),
        "{get}"
    );
    let exec = help("exec");
    assert!(exec.contains("for the --repo repos only"), "{exec}");
    assert!(!exec.contains("in GITHOSTED_TOKEN, revoked"), "{exec}");

    let status = world.helper(&["status", "--json"], None);
    status.assert_ok();
    let json: serde_json::Value = serde_json::from_str(&status.stdout).expect("status --json");
    assert_eq!(json["agent"]["running"], true);
    assert_eq!(json["agent"]["tokens"][0]["repo"], "app");
    assert!(
        json["agent"]["tokens"][0]["fingerprint"]
            .as_str()
            .unwrap()
            .starts_with("gr_…")
    );
    assert!(json["env_token"].as_str().unwrap().starts_with("gw_…"));
    assert!(json["git"][0]["helpers"].is_array());
    let doctor = world.helper(&["doctor", "--json"], None);
    let json: serde_json::Value = serde_json::from_str(&doctor.stdout).expect("doctor --json");
    assert!(
        json["checks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["level"].is_string())
    );
    assert_eq!(json["ok"], doctor.ok());

    let plain = world.helper(&["doctor"], None).stdout;
    assert!(!plain.contains('\u{1b}'), "colour without a terminal");
    let coloured = world.helper(&["doctor", "--color", "always"], None).stdout;
    assert!(coloured.contains("\u{1b}[32mOK"), "{coloured}");
    world.set_env("NO_COLOR", "1");
    let mut cmd = world.command(helper());
    cmd.arg("doctor");
    let mut pty = githosted_testkit::pty::Pty::spawn(cmd);
    pty.wait(Duration::from_secs(30));
    assert!(
        !pty.screen().contains('\u{1b}'),
        "NO_COLOR on a terminal: {}",
        pty.screen()
    );

    let bash = world.helper(&["completions", "bash"], None);
    assert!(bash.stdout.contains("git-credential-githosted") && bash.stdout.contains("--api-url"));
    let man = world.helper(&["man"], None);
    assert!(
        man.stdout.contains(".TH git-credential-githosted"),
        "{}",
        &man.stdout[..200.min(man.stdout.len())]
    );
}

/// Lines the helper printed (git's own lines are not its).
fn helper_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.starts_with("git-credential-githosted: "))
        .collect()
}

/// Issue 21, item 6: an API where nothing listens (a wrong URL, a stopped
/// local server) fails at once with one line, "nothing listens at URL", in
/// `login`, `token` and inside `git clone`; nothing says "retrying".
#[test]
fn nothing_listening_at_the_api_fails_at_once_in_one_line() {
    let mut world = World::configured(&[]);
    world.with_env_parent();
    let url = world.server.base_url();
    world.server.stop();
    let said = format!("nothing listens at {url} (connection refused)");
    for options in [&[][..], &["--no-agent"][..]] {
        let run = world.helper(
            &[
                &["--api-url", url.as_str(), "token", "--repo", "acme/app"],
                options,
            ]
            .concat(),
            None,
        );
        run.assert_failed();
        assert_eq!(helper_lines(&run.stderr).len(), 1, "{}", run.stderr);
        assert!(run.stderr.contains(&said), "{}", run.stderr);
        assert!(!run.stderr.contains("retrying"), "{}", run.stderr);
    }
    let run = world.helper(
        &["--api-url", &url, "login"],
        Some("gw_notcheckedbecausenothinglistens"),
    );
    run.assert_failed();
    assert_eq!(helper_lines(&run.stderr).len(), 1, "{}", run.stderr);
    assert!(
        run.stderr.contains(&said) && run.stderr.contains("nothing was stored"),
        "{}",
        run.stderr
    );
    // Inside git clone: git reaches its host while the API does not (here the
    // git host is the dead address too, reached through the live server as an
    // HTTP proxy, which answers absolute-form requests like any other).
    let mut world = World::new();
    world.with_env_parent();
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let dead_url = format!("http://127.0.0.1:{dead}");
    world
        .helper(&["configure", "--api-url", &dead_url], None)
        .assert_ok();
    let said = format!("nothing listens at {dead_url} (connection refused)");
    let clone_url = format!("{dead_url}/acme/app.git");
    let proxy = format!("http.proxy={}", world.server.base_url());
    for git in GITS {
        let run = world.git(git, None, &["-c", &proxy, "clone", "-q", &clone_url, "c"]);
        run.assert_failed();
        let ours = helper_lines(&run.stderr);
        assert_eq!(ours.len(), 1, "{git}: {}", run.stderr);
        assert!(ours[0].contains(&said), "{git}: {}", run.stderr);
        assert!(!run.stderr.contains("retrying"), "{}", run.stderr);
    }
}

/// Issue 21, item 6: an error that can pass is retried, and the helper says so.
#[test]
fn a_passing_error_is_retried_and_says_retrying() {
    let mut world = World::new();
    world.with_env_parent();
    world
        .server
        .inject_fault(githosted_testkit::server::Fault::status(
            Some("ExchangeToken"),
            1,
            503,
            "unavailable",
        ));
    let run = world.helper(
        &[
            "--api-url",
            &world.server.base_url(),
            "--no-agent",
            "token",
            "--repo",
            "acme/app",
        ],
        None,
    );
    run.assert_ok();
    assert!(run.stdout.starts_with("gr_"));
    assert!(
        run.stderr.contains("503 unavailable") && run.stderr.contains("retrying"),
        "{}",
        run.stderr
    );
    assert_eq!(world.server.calls("ExchangeToken"), 2);
}

/// Issue 21, item 3: on a terminal, a failure the helper explained ends git's
/// request (`quit=1`) instead of git's `Username for …` prompt, where people
/// would type their account password; `--git-prompt` on the helper line gives
/// git its prompt back.
#[test]
fn an_explained_failure_stops_git_instead_of_its_password_prompt() {
    for git in GITS {
        let mut world = World::configured(&[]);
        let parent = world.with_env_parent();
        world.server.revoke(&parent);
        world.set_env("GIT_TERMINAL_PROMPT", "1");
        let mut cmd = world.command(git);
        cmd.args(["clone", "-q", &world.url("app"), "c"]);
        let mut pty = Pty::spawn(cmd);
        let status = pty.wait(Duration::from_secs(60));
        let screen = pty.screen();
        assert!(!status.success(), "{git}: {screen}");
        assert!(
            screen.contains("git-credential-githosted: ") && screen.contains("rejected"),
            "{git}: {screen}"
        );
        assert!(!screen.contains("Username for"), "{git}: {screen}");

        // Asked for: git prompts as it would without this helper.
        world.configure(&["--git-prompt"]);
        let mut cmd = world.command(git);
        cmd.args(["clone", "-q", &world.url("app"), "d"]);
        let mut pty = Pty::spawn(cmd);
        pty.expect("Username for", Duration::from_secs(60));
        assert!(pty.screen().contains("rejected"), "{git}: {}", pty.screen());
        pty.send(&[0x03]);
        assert!(!pty.wait(Duration::from_secs(60)).success());
    }
}

/// Issue 21, item 3: Ctrl-C at the helper's own token prompt ends git's
/// request too (no second Ctrl-C at git's `Username for …`).
#[test]
#[ignore = "needs a Secret Service (D-Bus session + unlocked keyring); .ci/run starts one"]
fn ctrl_c_at_the_helpers_prompt_ends_git_too() {
    for git in GITS {
        let mut world = World::configured(&[]);
        world.set_env("GIT_TERMINAL_PROMPT", "1");
        let mut cmd = world.command(git);
        cmd.args(["clone", "-q", &world.url("app"), "c"]);
        let mut pty = Pty::spawn(cmd);
        pty.expect("Paste it here (input hidden", Duration::from_secs(60));
        pty.send(&[0x03]);
        let status = pty.wait(Duration::from_secs(60));
        let screen = pty.screen();
        assert!(!status.success(), "{git}: {screen}");
        assert!(screen.contains("interrupted"), "{git}: {screen}");
        assert!(!screen.contains("Username for"), "{git}: {screen}");
        assert!(pty.echoes(), "the terminal was left with echo off");
    }
}

/// Issue 21, item 7: a typo of a workspace whose token is stored is not a new
/// workspace: "no token for acmee — did you mean acme?", never the prompt to
/// create and paste a token for `acmee`.
#[test]
#[ignore = "needs a Secret Service (D-Bus session + unlocked keyring); .ci/run starts one"]
fn a_workspace_typo_says_did_you_mean() {
    let mut world = World::configured(&[]);
    let url = world.server.base_url();
    let parent = world
        .server
        .seed_token("acme", TokenSpec::workspace_write());
    world
        .helper(&["login", "--api-url", &url], Some(&parent))
        .assert_ok();
    world.server.add_workspace("acmee");
    world.server.add_repo("acmee", "app");
    let said = "no token for acmee — did you mean acme?";
    let run = world.helper(
        &["--api-url", &url, "get"],
        Some(&request(
            "http",
            &world.server.host(),
            Some("acmee/app.git"),
        )),
    );
    assert_eq!(field(&run.stdout, "password"), None, "{run:#?}");
    assert_eq!(field(&run.stdout, "quit"), Some("1"), "{run:#?}");
    assert!(run.stderr.contains(said), "{}", run.stderr);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    // On a terminal too: no prompt to paste a token for acmee.
    world.set_env("GIT_TERMINAL_PROMPT", "1");
    let mut cmd = world.command(GIT_NEW);
    cmd.args(["clone", "-q", &format!("{url}/acmee/app.git"), "c"]);
    let mut pty = Pty::spawn(cmd);
    let status = pty.wait(Duration::from_secs(60));
    let screen = pty.screen();
    assert!(!status.success(), "{screen}");
    assert!(screen.contains(said), "{screen}");
    assert!(!screen.contains("Paste it here"), "{screen}");
    // The right workspace still works.
    world.clone(GIT_NEW, &world.url("app"), "right");
    // A workspace that is no typo of a stored one still gets the prompt's line.
    world.set_env("GIT_TERMINAL_PROMPT", "0");
    world.server.add_workspace("globex");
    world.server.add_repo("globex", "lib");
    let run = world.helper(
        &["--api-url", &url, "get"],
        Some(&request(
            "http",
            &world.server.host(),
            Some("globex/lib.git"),
        )),
    );
    assert!(!run.stderr.contains("did you mean"), "{}", run.stderr);
}

/// Issue 21, item 9 (outside exec's token): a command that does not exist
/// exits 127 as a shell's does, Ctrl-C at `login`'s prompt exits 130, and a
/// command after `exec` without `--` gets a hint.
#[test]
fn exit_statuses_and_hints_people_expect() {
    let mut world = World::new();
    world.with_env_parent();
    let url = world.server.base_url();
    for isolation in [&["--no-isolate"][..], &[][..]] {
        let run = world.helper(
            &[
                &["--api-url", url.as_str(), "exec", "--repo", "acme/app"][..],
                isolation,
                &["--", "no-such-command-here"],
            ]
            .concat(),
            None,
        );
        assert_eq!(run.status.code(), Some(127), "{isolation:?}: {run:#?}");
        assert!(
            run.stderr.contains("cannot run `no-such-command-here`"),
            "{}",
            run.stderr
        );
    }

    let run = world.helper(&["exec", "--repo", "acme/app", "git", "clone", "x"], None);
    assert_eq!(run.status.code(), Some(2), "{run:#?}");
    assert!(
        run.stderr.contains("after `--`") && run.stderr.contains("exec --repo WS/REPO -- git"),
        "{}",
        run.stderr
    );

    let mut cmd = world.command(helper());
    cmd.args(["--api-url", &url, "login"]);
    let mut pty = Pty::spawn(cmd);
    pty.expect("(input hidden):", Duration::from_secs(20));
    pty.send(&[0x03]);
    let status = pty.wait(Duration::from_secs(20));
    assert_eq!(status.code(), Some(130), "{}", pty.screen());
}

/// Issue 21, item 10: usage lines name `git-credential-githosted` (never the
/// `-core` program behind it), option typos get the closest option, and the
/// man page points at no page that does not exist.
#[test]
fn usage_names_the_program_and_option_typos_get_did_you_mean() {
    let world = World::new();
    let run = world.helper(&["status", "--api-ulr", "x"], None);
    assert_eq!(run.status.code(), Some(2), "{run:#?}");
    assert!(
        run.stderr
            .contains("Usage: git-credential-githosted status"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("githosted-core"), "{}", run.stderr);
    assert!(
        run.stderr.contains("did you mean `--api-url`?"),
        "{}",
        run.stderr
    );
    let help = world.helper(&["--help"], None);
    assert!(!help.stdout.contains("githosted-core"), "{}", help.stdout);

    let man = world.helper(&["man"], None);
    man.assert_ok();
    assert!(
        !man.stdout.contains("githosted\\-get(1)") && !man.stdout.contains("githosted\\-login(1)"),
        "the man page names sub-pages that are not installed"
    );
    for command in ["login", "configure", "exec", "token"] {
        assert!(
            man.stdout.contains(command),
            "{command} is not in the man page"
        );
    }
}

/// Issue 21, item 10: counts agree with their number ("1 exchange", not "1 exchanges").
#[test]
fn one_exchange_is_one_exchange() {
    let mut world = World::configured(&[]);
    world.with_env_parent();
    assert!(world.token("app", &[]).starts_with("gr_"));
    let status = world.helper(&["status"], None);
    assert!(
        status.stdout.contains("1 exchange, 1 cached token\n"),
        "{}",
        status.stdout
    );
    let doctor = world.helper(&["doctor"], None);
    assert!(
        doctor.stdout.contains("1 cached token, 1 exchange\n"),
        "{}",
        doctor.stdout
    );
}

/// Issue 21 item 5: `status` in a broker job names the broker and where the
/// job's ID token comes from, and reads no keychain (no D-Bus noise).
#[test]
fn status_in_a_broker_job_shows_the_broker_and_its_id_token() {
    let world = World::new();
    let url = world.server.base_url();
    world
        .helper(
            &[
                "configure",
                "--api-url",
                &url,
                "--broker",
                "http://127.0.0.1:9",
                "--oidc-token-env",
                "JOB_ID_TOKEN",
            ],
            None,
        )
        .assert_ok();
    let status = world.helper(&["status"], None);
    status.assert_ok();
    assert!(
        status.stdout.contains("broker: http://127.0.0.1:9"),
        "{}",
        status.stdout
    );
    assert!(status.stdout.contains("$JOB_ID_TOKEN"), "{}", status.stdout);
    assert!(
        status
            .stdout
            .contains("not used (tokens come from the broker)"),
        "{}",
        status.stdout
    );
    assert!(status.stderr.is_empty(), "{}", status.stderr);
}

/// A GitHub Actions job (its ID-token variables set) and a broker whose one
/// rule lets it read acme/app; the issuer lives as long as the returned value.
fn broker_job() -> (
    World,
    githosted_testkit::oidc::Issuer,
    githosted_testkit::oidc::Broker,
) {
    let mut job = World::new();
    let issuer = githosted_testkit::oidc::Issuer::start();
    let policy = format!(
        "[[allow]]\nissuer = \"{}\"\nsubject_pattern = \"^repo:acme-org/.*$\"\nrepos = [\"acme/app\"]\npermission = \"read\"\n",
        issuer.url()
    );
    let broker = githosted_testkit::oidc::start_broker(&job, &policy).unwrap();
    for (k, v) in issuer.actions_env() {
        job.set_env(k, &v);
    }
    (job, issuer, broker)
}

/// Issue 21 item 5: `status` in a broker job marks the tokens the agent
/// holds from the broker (with the broker's URL), never a token's value.
#[test]
fn status_marks_the_agents_broker_tokens() {
    let (job, _issuer, broker) = broker_job();
    let options = ["--broker", broker.url.as_str(), "--permission", "read"];
    let got = job.get("app", &options);
    got.assert_ok();
    let url = job.server.base_url();
    let mut args = vec!["--api-url", url.as_str(), "--broker", broker.url.as_str()];
    args.push("status");
    let status = job.helper(&args, None);
    status.assert_ok();
    let line = status
        .stdout
        .lines()
        .find(|l| l.contains("acme/app  read"))
        .unwrap_or_else(|| panic!("no cached token listed: {}", status.stdout));
    assert!(
        line.contains(&format!("broker {}", broker.url.trim_end_matches('/'))),
        "{line}"
    );
    assert!(line.contains("expires in "), "{line}");
    for token in job.server.issued_tokens() {
        assert!(!status.stdout.contains(&token), "status printed a token");
    }
    args.pop();
    args.extend(["status", "--json"]);
    let json = job.helper(&args, None);
    json.assert_ok();
    let report: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(
        report["agent"]["tokens"][0]["broker"]
            .as_str()
            .map(|b| b.trim_end_matches('/')),
        Some(broker.url.trim_end_matches('/')),
        "{report}"
    );
}

/// Issue 21 item 5 (uninstall in a job): `logout --all` in broker mode, with no
/// keychain (no D-Bus, as in CI), revokes the agent's broker tokens through the
/// broker and says so, with no keychain error and no keychain advice.
#[test]
fn logout_all_in_broker_mode_revokes_the_broker_tokens_without_a_keychain() {
    let (mut job, _issuer, broker) = broker_job();
    job.set_env("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent/bus");
    let got = job.get(
        "app",
        &["--broker", broker.url.as_str(), "--permission", "read"],
    );
    got.assert_ok();
    let url = job.server.base_url();
    let logout = job.helper(
        &[
            "--api-url",
            &url,
            "--broker",
            broker.url.as_str(),
            "logout",
            "--all",
        ],
        None,
    );
    logout.assert_ok();
    let said = format!("{}{}", logout.stdout, logout.stderr);
    assert!(said.contains("revoked 1 of 1"), "{said}");
    for noise in ["DBus", "D-Bus", "keychain", "X11"] {
        assert!(!said.contains(noise), "{noise}: {said}");
    }
    assert_eq!(job.server.revoked_via_api().len(), 1, "{said}");
}

/// Issue 21 item 5: `./install --broker …` ends with broker advice (the job's
/// ID token), never with a workspace token. `cargo` is a stand-in here whose
/// "release build" is this test build's programs (the real build is
/// `tests/install.rs`'s).
#[test]
fn install_in_broker_mode_gives_broker_advice() {
    let mut world = World::new();
    let fake = world.path("fake");
    let release = fake.join("target/release");
    std::fs::create_dir_all(&release).expect("release dir");
    let built = std::path::Path::new(helper()).parent().expect("helper dir");
    for bin in [
        "git-credential-githosted",
        "git-credential-githosted-core",
        "git-credential-githosted-agent",
    ] {
        std::fs::copy(built.join(bin), release.join(bin)).expect("copy a program");
    }
    let cargo = fake.join("cargo");
    std::fs::write(&cargo, "#!/bin/sh\nexit 0\n").expect("fake cargo");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&cargo, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    world.set_env(
        "PATH",
        &format!("{}:/usr/local/bin:/usr/bin:/bin", fake.display()),
    );
    world.set_env(
        "CARGO_TARGET_DIR",
        &release.parent().expect("target").to_string_lossy(),
    );
    let mut cmd = std::process::Command::new("bash");
    cmd.arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("install"))
        .args([
            "--broker",
            "https://broker.example.com",
            "--oidc-audience",
            "https://broker.example.com",
        ]);
    let run = world.run(cmd, None);
    run.assert_ok();
    assert!(run.stdout.contains("id-token: write"), "{}", run.stdout);
    assert!(run.stdout.contains("--oidc-token-env"), "{}", run.stdout);
    assert!(run.stdout.contains("broker.example.com"), "{}", run.stdout);
    assert!(!run.stdout.contains("GITHOSTED_TOKEN"), "{}", run.stdout);
    assert!(!run.stdout.contains("workspace token"), "{}", run.stdout);
}

/// Issue 21 item 5: with `GITHOSTED_TOKEN` set, an unreachable keychain is
/// no news: `status` prints no D-Bus/X11 error line.
#[test]
fn status_with_an_env_token_prints_no_keychain_noise() {
    let mut world = World::configured(&[]);
    world.with_env_parent();
    let status = world.helper(&["status"], None);
    status.assert_ok();
    assert!(!status.stdout.contains("DBus error"), "{}", status.stdout);
    assert!(!status.stdout.contains("X11"), "{}", status.stdout);
}
