//! Fuzzes git's credential wire format: any bytes on stdin.
//!
//! Invariants: parsing never panics; a request over the limits is refused; and
//! an answer built from whatever the request held either is refused whole or is
//! exactly its own lines, each `key=value` with a known key (no injection).

#![no_main]

use git_credential_githosted::protocol::{MAX_LINE, Request, Response};
use git_credential_githosted::secret::Secret;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = Request::read_from(&mut &data[..]) else {
        return;
    };
    // Accepted: no value can be longer than a line or hold a NUL or newline.
    for value in [&request.protocol, &request.host, &request.path, &request.username]
        .into_iter()
        .flatten()
        .chain(request.wwwauth.iter())
        .chain(request.capabilities.iter())
    {
        assert!(value.len() <= MAX_LINE);
        assert!(!value.contains(['\0', '\n']));
    }
    // Echo what we were sent into an answer, as a careless helper might.
    let response = Response {
        username: request.host.clone(),
        password: request.path.clone().map(Secret::new),
        bearer: request.username.clone().map(Secret::new),
        password_expiry_utc: None,
        quit: request.ephemeral,
    };
    let mut out = Vec::new();
    match response.write_to(&mut out) {
        Ok(()) => {
            let text = std::str::from_utf8(&out).expect("answer is UTF-8");
            let mut lines = 0;
            for line in text.lines() {
                let (key, _) = line.split_once('=').expect("every line is key=value");
                assert!(
                    matches!(key, "capability[]" | "authtype" | "credential" | "ephemeral" | "username" | "password" | "quit"),
                    "injected key {key:?}"
                );
                lines += 1;
            }
            let expected = 4 * usize::from(response.bearer.is_some())
                + usize::from(response.username.is_some())
                + usize::from(response.password.is_some())
                + usize::from(response.quit);
            assert_eq!(lines, expected, "an answer grew extra lines");
        }
        Err(_) => assert!(out.is_empty(), "a refused answer wrote something"),
    }
});
