//! Property tests of git's credential wire format (the parser is also fuzzed:
//! see fuzz/). No network, no processes.

use git_credential_githosted::cmd::helper;
use git_credential_githosted::protocol::{MAX_LINE, Request, Response};
use git_credential_githosted::secret::Secret;
use git_credential_githosted::settings::{DEFAULT_TTL_SECS, Requested, Settings};
use proptest::prelude::*;

/// A value git could send: no LF, no NUL, no trailing CR.
fn value() -> impl Strategy<Value = String> {
    "[^\n\r\0]{0,200}"
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_accepted_request_round_trips(
        protocol in value(),
        host in value(),
        path in value(),
        username in value(),
        password in value(),
        wwwauth in proptest::collection::vec(value(), 0..4),
        blank_line_end in any::<bool>(),
    ) {
        let mut wire = format!("protocol={protocol}\nhost={host}\npath={path}\nusername={username}\npassword={password}\n");
        for w in &wwwauth {
            wire.push_str(&format!("wwwauth[]={w}\n"));
        }
        if blank_line_end {
            wire.push_str("\nhost=after-the-end\n");
        }
        let r = Request::read_from(&mut wire.as_bytes()).unwrap();
        prop_assert_eq!(r.protocol.as_deref(), Some(protocol.as_str()));
        prop_assert_eq!(r.host.as_deref(), Some(host.as_str()));
        prop_assert_eq!(r.path.as_deref(), Some(path.as_str()));
        prop_assert_eq!(r.username.as_deref(), Some(username.as_str()));
        prop_assert_eq!(r.password.as_ref().map(|p| p.expose().to_owned()), Some(password));
        prop_assert_eq!(r.wwwauth, wwwauth);
    }

    #[test]
    fn no_output_value_can_hold_lf_cr_or_nul(
        username in ".{0,50}",
        password in ".{0,50}",
        expiry in any::<Option<i64>>(),
        quit in any::<bool>(),
        bearer in any::<bool>(),
    ) {
        let response = Response {
            username: Some(username.clone()),
            password: Some(Secret::new(password.clone())),
            bearer: bearer.then(|| Secret::new(password.clone())),
            password_expiry_utc: expiry,
            quit,
        };
        let mut out = Vec::new();
        let unsafe_input = [&username, &password].iter().any(|v| v.contains(['\n', '\r', '\0']));
        match response.write_to(&mut out) {
            Ok(()) => {
                prop_assert!(!unsafe_input);
                let text = String::from_utf8(out).unwrap();
                prop_assert!(!text.contains(['\r', '\0']));
                let lines: Vec<&str> = text.lines().collect();
                prop_assert_eq!(
                    lines.len(),
                    2 + 4 * usize::from(bearer) + usize::from(expiry.is_some()) + usize::from(quit)
                );
                if bearer {
                    prop_assert_eq!(lines[0], "capability[]=authtype");
                }
                for line in lines {
                    let (key, _) = line.split_once('=').unwrap();
                    prop_assert!([
                        "capability[]", "authtype", "credential", "ephemeral",
                        "username", "password", "password_expiry_utc", "quit",
                    ].contains(&key));
                }
            }
            Err(_) => {
                prop_assert!(unsafe_input);
                prop_assert!(out.is_empty(), "partial answer");
            }
        }
    }

    #[test]
    fn requests_over_the_limits_get_no_answer_at_all(
        extra in 1usize..4096,
        line_no in 0usize..4,
        with_nul in any::<bool>(),
    ) {
        let mut lines = [
            "protocol=https".to_owned(),
            "host=githosted.dev".to_owned(),
            "path=acme/app.git".to_owned(),
            "capability[]=authtype".to_owned(),
        ];
        if with_nul {
            lines[line_no].insert(3, '\0');
        } else {
            lines[line_no].push_str(&"a".repeat(MAX_LINE + extra));
        }
        let input = lines.join("\n");
        let no_agent = Requested { no_agent: true, ..Requested::default() };
        let settings = Settings::new(&no_agent, DEFAULT_TTL_SECS).unwrap();
        let mut out = Vec::new();
        let result = helper::get(&settings, &mut input.as_bytes(), &mut out);
        prop_assert!(result.is_err());
        prop_assert!(out.is_empty(), "partial answer");
    }

    /// git's t/lib-credential.sh "helper can't be tricked by long wwwauth", at every length.
    #[test]
    fn a_long_header_cannot_smuggle_a_host(pad in 0usize..(MAX_LINE + 100)) {
        let input = format!(
            "protocol=https\nhost=githosted.dev\nwwwauth[]={}host=evil.example\npath=acme/app.git\n",
            "x".repeat(pad)
        );
        match Request::read_from(&mut input.as_bytes()) {
            Ok(r) => {
                prop_assert_eq!(r.host.as_deref(), Some("githosted.dev"));
                prop_assert_eq!(r.wwwauth.len(), 1);
            }
            // Too long: the whole request is refused, never read in pieces.
            Err(_) => prop_assert!(pad + "wwwauth[]=host=evil.example".len() > MAX_LINE),
        }
    }
}
