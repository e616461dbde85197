#![cfg(unix)]
//! Issue 21 item 1: the commands a person types act on the right API.
//! `cli::choose_api` is the one decision (table tests); the end-to-end tests
//! configure two APIs as the README leads to (`./install`, then the local
//! server's `configure --api-url …`).

use git_credential_githosted::cli::{self, ApiChoice, ApiFacts, BrokerOptions, HelperOptions};
use githosted_testkit::{GIT_NEW, World};

const PUBLIC: &str = "https://api.githosted.dev";
const LOCAL: &str = "http://127.0.0.1:8080";

fn line(api: Option<&str>) -> String {
    match api {
        Some(url) => {
            format!("/usr/local/bin/git-credential-githosted --api-url {url} --permission auto")
        }
        None => "/usr/local/bin/git-credential-githosted --permission auto".to_owned(),
    }
}

fn options(api: Option<&str>) -> HelperOptions {
    let mut o = HelperOptions::default();
    o.api.api_url = api.map(str::to_owned);
    o
}

/// (flag, env, remotes, configured lines, stored accounts) → the API chosen,
/// or `Err(candidates)`.
#[test]
fn one_decision_table() {
    type Row = (
        Option<&'static str>,
        Option<&'static str>,
        Vec<&'static str>,
        Vec<Option<&'static str>>,
        Vec<&'static str>,
        Result<&'static str, Vec<&'static str>>,
    );
    let rows: Vec<Row> = vec![
        // Nothing at all: the public API.
        (None, None, vec![], vec![], vec![], Ok(PUBLIC)),
        // The flag and the environment decide, whatever else.
        (
            Some(LOCAL),
            None,
            vec!["https://githosted.dev/acme/app.git"],
            vec![None, Some(LOCAL)],
            vec![],
            Ok(LOCAL),
        ),
        (
            None,
            Some(LOCAL),
            vec![],
            vec![None, Some(LOCAL)],
            vec![],
            Ok(LOCAL),
        ),
        // The only configured API.
        (None, None, vec![], vec![Some(LOCAL)], vec![], Ok(LOCAL)),
        // Two configured: inside a clone its remote decides.
        (
            None,
            None,
            vec!["http://127.0.0.1:8080/acme/app.git"],
            vec![None, Some(LOCAL)],
            vec![],
            Ok(LOCAL),
        ),
        (
            None,
            None,
            vec!["http://127.0.0.1:8080/git/acme/app.git"],
            vec![None, Some(LOCAL)],
            vec![],
            Ok(LOCAL),
        ),
        (
            None,
            None,
            vec!["https://githosted.dev/acme/app.git"],
            vec![None, Some(LOCAL)],
            vec![],
            Ok(PUBLIC),
        ),
        // origin comes first; a remote elsewhere (GitHub) decides nothing.
        (
            None,
            None,
            vec![
                "https://github.com/x/y.git",
                "http://127.0.0.1:8080/acme/app.git",
            ],
            vec![None, Some(LOCAL)],
            vec![],
            Ok(LOCAL),
        ),
        // Two configured, outside a clone: ask, never the default; the one
        // holding a token is named first (the line to type uses it).
        (
            None,
            None,
            vec![],
            vec![None, Some(LOCAL)],
            vec!["127.0.0.1:8080/acme"],
            Err(vec![LOCAL, PUBLIC]),
        ),
        (
            None,
            None,
            vec!["https://github.com/x/y.git"],
            vec![None, Some(LOCAL)],
            vec![],
            Err(vec![PUBLIC, LOCAL]),
        ),
        // Nothing configured: the only API with a stored token.
        (
            None,
            None,
            vec![],
            vec![],
            vec!["127.0.0.1:8080/acme", "127.0.0.1:8080"],
            Ok(LOCAL),
        ),
        (
            None,
            None,
            vec![],
            vec![],
            vec!["api.githosted.dev/acme"],
            Ok(PUBLIC),
        ),
        (
            None,
            None,
            vec![],
            vec![],
            vec!["git.example.com/acme"],
            Ok("https://git.example.com"),
        ),
        (
            None,
            None,
            vec![],
            vec![],
            vec!["api.githosted.dev/acme", "127.0.0.1:8080/acme"],
            Err(vec![LOCAL, PUBLIC]),
        ),
        // A clone on an unconfigured self-hosted API with a stored token... the remote
        // names a host no candidate serves: the stored token decides.
        (
            None,
            None,
            vec!["https://git.example.com/acme/app.git"],
            vec![],
            vec!["git.example.com"],
            Ok("https://git.example.com"),
        ),
    ];
    for (i, (flag, env, remotes, configured, stored, want)) in rows.into_iter().enumerate() {
        let facts = ApiFacts {
            given: env.map(str::to_owned),
            remotes: remotes.iter().map(|r| (*r).to_owned()).collect(),
            configured: cli::configured_apis(configured.iter().map(|c| line(*c))),
            broker_env: false,
        };
        let stored: Vec<String> = stored.iter().map(|s| (*s).to_owned()).collect();
        let got = match cli::choose_api(&options(flag), &facts, || stored) {
            ApiChoice::One(o) => Ok(cli::api_key(o.api.api_url.as_deref())),
            ApiChoice::Several(apis) => Err(apis),
        };
        let want = want
            .map(|w| cli::api_key(Some(w)))
            .map_err(|v| v.iter().map(|w| cli::api_key(Some(w))).collect::<Vec<_>>());
        assert_eq!(got, want, "row {i}");
    }
}

/// The stored accounts are read only when nothing else decides (a keychain
/// can be slow or absent).
#[test]
fn the_keychain_is_asked_only_when_nothing_else_decides() {
    let facts = ApiFacts {
        configured: cli::configured_apis([line(Some(LOCAL))]),
        ..ApiFacts::default()
    };
    let choice = cli::choose_api(&options(None), &facts, || panic!("keychain read"));
    assert!(matches!(choice, ApiChoice::One(_)));
}

/// A broker job: the chosen API's configured broker is used, unless one is named.
#[test]
fn the_configured_broker_comes_with_its_api() {
    let facts = ApiFacts {
        configured: cli::configured_apis([format!(
            "/bin/git-credential-githosted --api-url {LOCAL} --broker https://broker.example"
        )]),
        ..ApiFacts::default()
    };
    let ApiChoice::One(o) = cli::choose_api(&options(None), &facts, Vec::new) else {
        panic!("several");
    };
    assert_eq!(o.broker.broker.as_deref(), Some("https://broker.example"));
    let mut named = options(None);
    named.broker = BrokerOptions {
        broker: Some("https://other.example".into()),
        ..BrokerOptions::default()
    };
    let ApiChoice::One(o) = cli::choose_api(&named, &facts, Vec::new) else {
        panic!("several");
    };
    assert_eq!(o.broker.broker.as_deref(), Some("https://other.example"));
}

/// The README's path: the public API configured by `./install`, the local
/// server's by `configure --api-url`. Inside a clone of the local server
/// `token`, `status` and `doctor` act on it; outside, `token` and `logout`
/// name both APIs and ask for `--api-url` in one line; `status` covers both.
#[test]
fn two_configured_apis_the_clone_decides_outside_ask() {
    let mut world = World::new();
    world.helper(&["configure"], None).assert_ok();
    world.configure(&[]);
    world.with_env_parent();
    let local = world.server.base_url();
    let clone = world.clone(GIT_NEW, &world.url("app"), "app");

    let mut token = std::process::Command::new(githosted_testkit::helper());
    token.arg("token").current_dir(&clone);
    let run = world.run(token, None);
    run.assert_ok();
    assert!(run.stdout.starts_with("gr_"), "{}", run.stdout);

    let run = world.helper(&["token", "--repo", "acme/app"], None);
    run.assert_failed();
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(run.stderr.contains(&local), "{}", run.stderr);
    assert!(run.stderr.contains(PUBLIC), "{}", run.stderr);
    // The line to type is the command again, with the API added.
    assert!(
        run.stderr
            .contains("git-credential-githosted token --api-url ")
            && run.stderr.trim_end().ends_with(" --repo acme/app"),
        "{}",
        run.stderr
    );

    let run = world.helper(&["logout"], None);
    run.assert_failed();
    assert!(run.stderr.contains("--api-url"), "{}", run.stderr);

    let status = world.helper(&["status"], None);
    status.assert_ok();
    assert!(
        status.stdout.contains(&format!("git: {local}/ ")),
        "{}",
        status.stdout
    );
    assert!(
        status.stdout.contains("git: https://githosted.dev/ "),
        "{}",
        status.stdout
    );

    // doctor inside the clone checks the local API (a working setup: rc 0);
    // outside it covers both, each under its URL.
    let mut doctor = std::process::Command::new(githosted_testkit::helper());
    doctor.arg("doctor").current_dir(&clone);
    let run = world.run(doctor, None);
    assert!(run.ok(), "{}{}", run.stdout, run.stderr);
    assert!(!run.stdout.contains("githosted.dev"), "{}", run.stdout);
    let run = world.helper(&["doctor"], None);
    assert!(run.stdout.contains(&format!("{local}:")), "{}", run.stdout);
    assert!(run.stdout.contains(&format!("{PUBLIC}:")), "{}", run.stdout);

    // With --api-url it acts on that one, as always.
    let run = world.helper(&["--api-url", &local, "token", "--repo", "acme/app"], None);
    run.assert_ok();
}
