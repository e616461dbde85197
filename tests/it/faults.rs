//! The fault matrix: the helper against a failing githosted API and keychain.
//! It keeps working, or fails within its deadline with one clear line and no
//! password; git never hangs.
//!
//! Unix only: the harness runs processes as other users, uses Unix sockets and
//! `git http-backend` (Windows runs the unit tests and `protocol_props`).
#![cfg(unix)]

use std::time::Duration;

use githosted_testkit::server::Fault;
use githosted_testkit::*;

const EXCHANGE: Option<&str> = Some("ExchangeToken");

fn world_with_parent() -> World {
    let mut world = World::new();
    world.with_env_parent();
    world
}

/// `get` failed cleanly: no password, `quit=1` (no terminal here), one line on stderr.
#[track_caller]
fn assert_clean_failure(run: &Run, wanted: &str) {
    assert_eq!(field(&run.stdout, "password"), None, "{run:#?}");
    assert_eq!(field(&run.stdout, "quit"), Some("1"), "{run:#?}");
    assert!(
        run.stderr.contains(wanted),
        "wanted {wanted:?} in {}",
        run.stderr
    );
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
}

#[test]
fn two_500s_then_success() {
    let world = world_with_parent();
    world
        .server
        .inject_fault(Fault::status(EXCHANGE, 2, 500, "internal"));
    let run = world.get("app", &[]);
    assert!(field(&run.stdout, "password").is_some(), "{run:#?}");
    assert_eq!(world.server.calls("ExchangeToken"), 3);
    assert_eq!(world.server.exchange_count(), 1);
}

#[test]
fn unavailable_and_non_json_5xx_are_retried_too() {
    let world = world_with_parent();
    world
        .server
        .inject_fault(Fault::status(EXCHANGE, 1, 503, "unavailable"));
    world.server.inject_fault(Fault::raw_body(
        EXCHANGE,
        1,
        502,
        "<html>bad gateway</html>",
    ));
    let run = world.get("app", &[]);
    assert!(field(&run.stdout, "password").is_some(), "{run:#?}");
    assert_eq!(world.server.calls("ExchangeToken"), 3);
}

#[test]
fn rate_limit_honours_retry_after() {
    let world = world_with_parent();
    world
        .server
        .inject_fault(Fault::rate_limited(EXCHANGE, 1, Some(1)));
    let run = world.get("app", &[]);
    assert!(field(&run.stdout, "password").is_some(), "{run:#?}");
    assert_eq!(world.server.calls("ExchangeToken"), 2);
    // It waited as told (a lower bound, not a speed claim).
    assert!(run.elapsed >= Duration::from_secs(1), "{:?}", run.elapsed);
}

#[test]
fn rate_limit_longer_than_the_deadline_fails_at_once() {
    let world = world_with_parent();
    world
        .server
        .inject_fault(Fault::rate_limited(EXCHANGE, 1, Some(3600)));
    let run = world.get("app", &[]);
    assert_clean_failure(&run, "429 resource_exhausted");
    assert_eq!(world.server.calls("ExchangeToken"), 1);
}

#[test]
fn final_errors_are_never_retried() {
    for (http, code) in [
        (401, "unauthenticated"),
        (403, "permission_denied"),
        (404, "not_found"),
        (400, "invalid_argument"),
    ] {
        let world = world_with_parent();
        world
            .server
            .inject_fault(Fault::status(EXCHANGE, 5, http, code));
        let run = world.get("app", &[]);
        assert_eq!(field(&run.stdout, "password"), None, "{code}");
        assert_eq!(world.server.calls("ExchangeToken"), 1, "{code} was retried");
    }
}

#[test]
fn a_stalled_server_fails_within_the_deadline() {
    let world = world_with_parent();
    world
        .server
        .inject_fault(Fault::delay(EXCHANGE, 5, Duration::from_secs(30)));
    let run = world.get("app", &["--timeout", "3"]);
    assert_clean_failure(&run, "could not get a token for acme/app");
    assert!(run.stderr.contains("timed out"), "{}", run.stderr);
    // The deadline, not the 30 s stall, ended it (generous bound: git must not hang).
    assert!(run.elapsed < Duration::from_secs(15), "{:?}", run.elapsed);
}

#[test]
fn the_default_deadline_holds_against_a_stall() {
    let world = world_with_parent();
    world
        .server
        .inject_fault(Fault::delay(EXCHANGE, 5, Duration::from_secs(30)));
    let run = world.get("app", &["--no-agent"]);
    // The first attempt timed out and was retried: said once ("retrying"), before the failure.
    let (retrying, rest): (Vec<&str>, Vec<&str>) =
        run.stderr.lines().partition(|l| l.contains("retrying"));
    assert!(retrying.len() <= 1, "{}", run.stderr);
    let run = Run {
        stderr: rest.join("\n"),
        ..run
    };
    assert_clean_failure(&run, "timed out");
    assert!(run.elapsed < Duration::from_secs(28), "{:?}", run.elapsed);
}

#[test]
fn server_gone_with_a_cached_token_serves_it() {
    let mut world = world_with_parent();
    let cached = world.token("app", &[]);
    world.server.stop();
    assert_eq!(world.token("app", &[]), cached);
    // Even inside the margin, while the API cannot be reached.
    assert_eq!(world.token("app", &["--min-ttl", "3590"]), cached);
}

#[test]
fn server_gone_without_a_cached_token_says_so() {
    let mut world = world_with_parent();
    world.server.stop();
    let url = world.server.base_url();
    for options in [&[][..], &["--no-agent"][..]] {
        let run = world.get("app", options);
        assert_clean_failure(
            &run,
            &format!("nothing listens at {url} (connection refused)"),
        );
    }
}

#[test]
fn malformed_answers_are_clear_and_not_cached() {
    let now = "2026-01-01T00:00:00Z";
    for body in [
        "{not json".to_owned(),
        r#"{"token": "gr_fake"}"#.to_owned(),
        format!(r#"{{"token": "gr_fake", "record": {{"id": "tk_1", "createdAt": "{now}"}}}}"#),
        r#"{"token": "gr_fake", "record": {"id": "tk_1", "expiresAt": "soon"}}"#.to_owned(),
        r#"{"token": "gr_fake", "record": {"id": "tk_1", "expiresAt": "2001-01-01T00:00:00Z"}}"#
            .to_owned(),
    ] {
        let world = world_with_parent();
        world
            .server
            .inject_fault(Fault::raw_body(EXCHANGE, 1, 200, &body));
        let run = world.get("app", &[]);
        assert_clean_failure(&run, "sent an answer this helper does not understand");
        assert!(
            !run.stdout.contains("gr_fake") && !run.stderr.contains("gr_fake"),
            "{run:#?}"
        );
        // Nothing was cached: the next get mints a real token.
        let token = world.token("app", &[]);
        assert!(world.server.record_for(&token).is_some());
    }
}

#[test]
fn no_dbus_session_is_a_clear_line() {
    let mut world = World::new();
    world.set_env("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent/bus");
    let run = world.get("app", &[]);
    assert_clean_failure(&run, "the Secret Service keyring (D-Bus) is not reachable");
    assert!(run.stderr.contains("set GITHOSTED_TOKEN"), "{}", run.stderr);
}

#[test]
#[ignore = "needs dbus-run-session (Debian dbus-daemon); CI installs it"]
fn a_bus_without_a_secret_service_is_a_clear_line() {
    let world = World::new();
    let url = world.server.base_url();
    let input = request("http", &world.server.host(), Some("acme/app.git"));
    // A session bus that can start no services (so no keyring gets activated).
    let config = world.path("bus.conf");
    std::fs::write(
        &config,
        r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig><type>session</type><listen>unix:tmpdir=/tmp</listen><auth>EXTERNAL</auth>
<policy context="default"><allow send_destination="*" eavesdrop="true"/><allow eavesdrop="true"/><allow own="*"/><allow receive_sender="*"/></policy></busconfig>"#,
    )
    .unwrap();
    let mut cmd = std::process::Command::new("dbus-run-session");
    cmd.arg(format!("--config-file={}", config.display()));
    cmd.args(["--", helper(), "--api-url", &url, "get"]);
    let run = world.run(cmd, Some(&input));
    assert_eq!(field(&run.stdout, "password"), None, "{run:#?}");
    assert!(
        run.stderr.contains("no Secret Service is running"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("GITHOSTED_TOKEN"), "{}", run.stderr);
}

#[test]
#[ignore = "needs gnome-keyring, secret-tool and dbus-run-session; CI installs them"]
fn a_locked_keyring_is_a_clear_line() {
    let world = World::new();
    let url = world.server.base_url();
    let host = world.server.host();
    // A keyring of its own (the shared one must stay unlocked for the other
    // tests): store an entry, lock the collection, then ask. With no display to
    // prompt on, the keyring cannot be unlocked.
    let helper = helper();
    let script = format!(
        "printf %s gw_locked | secret-tool store --label=t service git-credential-githosted username {host}/acme
dbus-send --session --print-reply --dest=org.freedesktop.secrets /org/freedesktop/secrets \
  org.freedesktop.Secret.Service.Lock array:objpath:/org/freedesktop/secrets/collection/login >/dev/null
exec {helper} --api-url {url} get"
    );
    let session = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/keyring-session");
    let mut cmd = std::process::Command::new(session);
    cmd.args(["sh", "-c", &script]);
    let run = world.run(cmd, Some(&request("http", &host, Some("acme/app.git"))));
    assert_eq!(field(&run.stdout, "password"), None, "{run:#?}");
    assert_eq!(field(&run.stdout, "quit"), Some("1"), "{run:#?}");
    assert!(
        run.stderr
            .contains("the Secret Service keyring (D-Bus) is locked")
            && run.stderr.contains("set GITHOSTED_TOKEN"),
        "{}",
        run.stderr
    );
    assert!(!run.stdout.contains("gw_locked") && !run.stderr.contains("gw_locked"));
}

/// Security item 5: a `Retry-After` no deadline can hold is a clear, final
/// failure; nothing overflows, the agent survives.
#[test]
fn a_retry_after_past_any_deadline_is_final_and_crashes_nothing() {
    for options in [&[][..], &["--no-agent"][..]] {
        let world = world_with_parent();
        world
            .server
            .inject_fault(Fault::rate_limited(EXCHANGE, 1, Some(u64::MAX)));
        let run = world.get("app", options);
        assert_clean_failure(&run, "asks to wait 18446744073709551615 s");
        assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
        assert_eq!(world.server.calls("ExchangeToken"), 1);
        if options.is_empty() {
            assert_eq!(world.agent_pids().len(), 1, "the agent died");
        }
        // And the next one works.
        let run = world.get("app", options);
        assert!(field(&run.stdout, "password").is_some(), "{run:#?}");
    }
}

/// Security item 5: a huge `--timeout` is clamped, not an overflow.
#[test]
fn a_huge_timeout_is_clamped() {
    let world = world_with_parent();
    for options in [&[][..], &["--no-agent"][..]] {
        let mut args = vec!["--timeout", "18446744073709551615"];
        args.extend_from_slice(options);
        let run = world.get("app", &args);
        assert!(field(&run.stdout, "password").is_some(), "{run:#?}");
    }
}

/// Security item 7: an answer larger than 1 MiB is cut off at once, through the
/// agent and without it.
#[test]
fn an_endless_answer_is_cut_at_one_mebibyte() {
    for options in [
        &["--timeout", "10"][..],
        &["--timeout", "10", "--no-agent"][..],
    ] {
        let world = world_with_parent();
        world
            .server
            .inject_fault(Fault::huge_body(EXCHANGE, 1, 4 << 30));
        let run = world.get("app", options);
        assert_clean_failure(&run, "larger than 1024 KiB");
        assert_eq!(world.server.calls("ExchangeToken"), 1, "not retried");
        // Cut off, not read to the end (4 GiB) nor to the deadline.
        assert!(run.elapsed < Duration::from_secs(8), "{:?}", run.elapsed);
        if options.len() == 2 {
            assert_eq!(world.agent_pids().len(), 1, "the agent died");
        }
    }
}

/// Security item 7: a redirect is never followed and never retried.
#[test]
fn a_redirect_is_final() {
    let world = world_with_parent();
    world
        .server
        .inject_fault(Fault::raw_body(EXCHANGE, 5, 307, "{}"));
    let run = world.get("app", &[]);
    assert_clean_failure(
        &run,
        "307 Temporary Redirect (a redirect, which is not followed)",
    );
    assert_eq!(world.server.calls("ExchangeToken"), 1);
}

/// Security item 7: the agent and the direct fallback share one deadline. An
/// agent that answers the lookup and then never the mint leaves the fallback
/// only what is left, not a fresh `--timeout`.
#[test]
fn the_fallback_gets_what_is_left_of_the_deadline() {
    use std::io::{Read, Write};
    let world = world_with_parent();
    world
        .server
        .inject_fault(Fault::delay(EXCHANGE, 5, Duration::from_secs(60)));
    let dir = world.agent_dir();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let listener = std::os::unix::net::UnixListener::bind(
        dir.join(git_credential_githosted::agent::SOCKET_NAME),
    )
    .unwrap();
    // A wedged agent: "Miss" to the lookup, then silence.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming().flatten() {
            let mut conn = conn;
            let mut len = [0u8; 4];
            if conn.read_exact(&mut len).is_ok() {
                let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
                let _ = conn.read_exact(&mut body);
                let _ = conn.write_all(&[0, 0, 0, 6]);
                let _ = conn.write_all(b"\"Miss\"");
            }
            held.push(conn);
        }
    });
    let run = world.get("app", &["--timeout", "4"]);
    assert_clean_failure(&run, "could not get a token for acme/app");
    // 4 s for the mint the agent never answered (+1 s grace), then ~0 s for the
    // fallback: well under twice the deadline.
    assert!(run.elapsed < Duration::from_secs(7), "{:?}", run.elapsed);
}
