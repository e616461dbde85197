//! Git's credential-helper wire format: `key=value` lines.
//!
//! Git writes a request on the helper's stdin (ended by EOF, or by a blank line
//! when a `git credential` caller sends one) and, for `get`, reads the answer from
//! its stdout. See `git help credential` (gitcredentials(7) and git-credential(1)).
//!
//! This module is strict where a mistake could leak or smuggle something:
//! - a line longer than [`MAX_LINE`] bytes, a NUL byte anywhere, or invalid UTF-8
//!   refuses the whole request (nothing is answered);
//! - an answer whose value would contain LF, CR or NUL is refused before a single
//!   byte is written, so git never sees a partial or injected answer.
//!
//! Unknown keys are ignored, as git's documentation requires.

use std::io::{self, BufRead, Write};

use zeroize::Zeroizing;

use crate::secret::Secret;

/// The longest request line accepted, in bytes, without its newline (git's own
/// limit is 65535).
pub const MAX_LINE: usize = 64 * 1024;

/// The most lines one request may have; git sends a dozen at most.
pub const MAX_LINES: usize = 1024;

/// Why a request was refused or an answer could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("a request line is longer than {MAX_LINE} bytes")]
    LineTooLong,
    #[error("the request has more than {MAX_LINES} lines")]
    TooManyLines,
    #[error("the request contains a NUL byte")]
    Nul,
    #[error("the request is not valid UTF-8")]
    NotUtf8,
    #[error("refusing to write `{0}`: its value contains a newline, CR or NUL")]
    UnsafeValue(&'static str),
    #[error("reading the request")]
    Read(#[from] io::Error),
    #[error("writing the answer")]
    Write(#[source] io::Error),
}

/// What git asked about. Only the fields this helper uses are kept.
#[derive(Debug, Default)]
pub struct Request {
    pub protocol: Option<String>,
    pub host: Option<String>,
    pub path: Option<String>,
    pub username: Option<String>,
    /// Sent by git on `store` and `erase` only.
    pub password: Option<Secret>,
    /// `credential` (with `authtype`, git 2.46+): sent on `store`/`erase` in place of a password.
    pub credential: Option<Secret>,
    /// `capability[]`: what the caller understands (git 2.46+).
    pub capabilities: Vec<String>,
    /// `wwwauth[]`: the WWW-Authenticate headers of the 401 (git 2.41+).
    pub wwwauth: Vec<String>,
    /// `ephemeral=1`: do not persist (git 2.46+).
    pub ephemeral: bool,
}

impl Request {
    /// Reads one request: lines up to EOF or a blank line.
    pub fn read_from(input: &mut impl BufRead) -> Result<Request, ProtocolError> {
        let mut request = Request::default();
        let mut line = Zeroizing::new(Vec::with_capacity(256));
        for _ in 0..MAX_LINES {
            line.clear();
            // Read at most one byte past the limit so an endless line costs bounded memory.
            let limit = (MAX_LINE + 2) as u64;
            let n = io::Read::take(&mut *input, limit).read_until(b'\n', &mut line)?;
            if n == 0 {
                return Ok(request);
            }
            if line.last() == Some(&b'\n') {
                line.pop();
            } else if n as u64 == limit {
                return Err(ProtocolError::LineTooLong);
            }
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if line.len() > MAX_LINE {
                return Err(ProtocolError::LineTooLong);
            }
            if line.contains(&0) {
                return Err(ProtocolError::Nul);
            }
            if line.is_empty() {
                return Ok(request);
            }
            let text = std::str::from_utf8(&line).map_err(|_| ProtocolError::NotUtf8)?;
            if let Some((key, value)) = text.split_once('=') {
                request.set(key, value);
            }
        }
        Err(ProtocolError::TooManyLines)
    }

    fn set(&mut self, key: &str, value: &str) {
        match key {
            "protocol" => self.protocol = Some(value.to_owned()),
            "host" => self.host = Some(value.to_owned()),
            "path" => self.path = Some(value.to_owned()),
            "username" => self.username = Some(value.to_owned()),
            "password" => self.password = Some(Secret::new(value.to_owned())),
            "credential" => self.credential = Some(Secret::new(value.to_owned())),
            "capability[]" => self.capabilities.push(value.to_owned()),
            "wwwauth[]" => self.wwwauth.push(value.to_owned()),
            "ephemeral" => self.ephemeral = value == "1" || value == "true",
            _ => {}
        }
    }

    /// Whether the caller understands `authtype`/`credential` answers.
    pub fn has_capability(&self, name: &str) -> bool {
        self.capabilities.iter().any(|c| c == name)
    }
}

/// The answer to `get`.
#[derive(Debug, Default)]
pub struct Response {
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// `authtype=Bearer` + `credential=…` (git 2.46+): only when the request
    /// carried `capability[]=authtype`. Written with `ephemeral=1`.
    pub bearer: Option<Secret>,
    /// Unix seconds after which git must not use the password or credential.
    pub password_expiry_utc: Option<i64>,
    /// Tell git to stop asking helpers and fail now, without prompting.
    pub quit: bool,
}

impl Response {
    /// Writes the answer in one piece, or nothing if any value is unsafe.
    pub fn write_to(&self, out: &mut impl Write) -> Result<(), ProtocolError> {
        let mut buf = Zeroizing::new(String::with_capacity(256));
        let mut field = |key: &'static str, value: &str| {
            if value.contains(['\n', '\r', '\0']) {
                return Err(ProtocolError::UnsafeValue(key));
            }
            buf.push_str(key);
            buf.push('=');
            buf.push_str(value);
            buf.push('\n');
            Ok(())
        };
        if let Some(credential) = &self.bearer {
            // git requires the capability first, before the fields that need it.
            field("capability[]", "authtype")?;
            field("authtype", "Bearer")?;
            field("credential", credential.expose())?;
            field("ephemeral", "1")?;
        }
        if let Some(username) = &self.username {
            field("username", username)?;
        }
        if let Some(password) = &self.password {
            field("password", password.expose())?;
        }
        if let Some(expiry) = self.password_expiry_utc {
            field("password_expiry_utc", &expiry.to_string())?;
        }
        if self.quit {
            field("quit", "1")?;
        }
        out.write_all(buf.as_bytes())
            .map_err(ProtocolError::Write)?;
        out.flush().map_err(ProtocolError::Write)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(input: &[u8]) -> Result<Request, ProtocolError> {
        Request::read_from(&mut &input[..])
    }

    fn written(response: &Response) -> Result<String, ProtocolError> {
        let mut out = Vec::new();
        response.write_to(&mut out)?;
        Ok(String::from_utf8(out).unwrap_or_default())
    }

    #[test]
    fn parses_git_request_ended_by_eof() {
        let r = parse(b"protocol=https\nhost=githosted.dev\npath=acme/app.git\ncapability[]=authtype\ncapability[]=state\nwwwauth[]=Basic realm=\"x\"\n").unwrap();
        assert_eq!(r.protocol.as_deref(), Some("https"));
        assert_eq!(r.host.as_deref(), Some("githosted.dev"));
        assert_eq!(r.path.as_deref(), Some("acme/app.git"));
        assert!(r.has_capability("authtype") && r.has_capability("state"));
        assert_eq!(r.wwwauth, vec!["Basic realm=\"x\"".to_string()]);
    }

    #[test]
    fn blank_line_ends_the_request() {
        let r = parse(b"protocol=https\n\nhost=evil.example\n").unwrap();
        assert_eq!(r.protocol.as_deref(), Some("https"));
        assert_eq!(r.host, None);
    }

    #[test]
    fn value_splits_at_first_equals_and_crlf_is_stripped() {
        let r = parse(b"path=a=b/c.git\r\nusername=u\r\n").unwrap();
        assert_eq!(r.path.as_deref(), Some("a=b/c.git"));
        assert_eq!(r.username.as_deref(), Some("u"));
    }

    #[test]
    fn unknown_keys_and_lines_without_equals_are_ignored() {
        let r = parse(b"frobnicate=1\nnonsense\nstate[]=other:1\nhost=h\n").unwrap();
        assert_eq!(r.host.as_deref(), Some("h"));
    }

    #[test]
    fn password_is_kept_as_a_secret() {
        let r = parse(b"password=gr_secretvalue\n").unwrap();
        let p = r.password.unwrap();
        assert_eq!(p.expose(), "gr_secretvalue");
        assert!(!format!("{p:?}").contains("secretvalue"));
    }

    #[test]
    fn nul_byte_refuses_the_request() {
        assert!(matches!(parse(b"host=a\0b\n"), Err(ProtocolError::Nul)));
    }

    #[test]
    fn line_over_the_limit_refuses_the_request() {
        let mut input = b"wwwauth[]=".to_vec();
        input.extend(std::iter::repeat_n(b'a', MAX_LINE));
        input.extend(b"\nhost=githosted.dev\n");
        assert!(matches!(parse(&input), Err(ProtocolError::LineTooLong)));
        // Also without a final newline.
        let mut input = b"path=".to_vec();
        input.extend(std::iter::repeat_n(b'a', MAX_LINE * 3));
        assert!(matches!(parse(&input), Err(ProtocolError::LineTooLong)));
    }

    #[test]
    fn line_at_the_limit_is_accepted() {
        let mut input = b"wwwauth[]=".to_vec();
        input.extend(std::iter::repeat_n(b'a', MAX_LINE - "wwwauth[]=".len()));
        input.extend(b"\nhost=h\n");
        let r = parse(&input).unwrap();
        assert_eq!(r.host.as_deref(), Some("h"));
    }

    /// t/lib-credential.sh "helper can't be tricked by long wwwauth": a value long
    /// enough to split a fixed-size buffer must not become a `host=` line.
    #[test]
    fn long_wwwauth_cannot_smuggle_a_host() {
        let mut value = "x".repeat(1023);
        value.push_str("host=evil.example");
        let input = format!("protocol=https\nhost=githosted.dev\nwwwauth[]={value}\n");
        let r = parse(input.as_bytes()).unwrap();
        assert_eq!(r.host.as_deref(), Some("githosted.dev"));
        assert_eq!(r.wwwauth.len(), 1);
    }

    #[test]
    fn answer_is_written_in_order() {
        let out = written(&Response {
            username: Some("githosted".into()),
            password: Some(Secret::new("gr_abc".into())),
            password_expiry_utc: Some(1_800_000_000),
            ..Response::default()
        })
        .unwrap();
        assert_eq!(
            out,
            "username=githosted\npassword=gr_abc\npassword_expiry_utc=1800000000\n"
        );
    }

    #[test]
    fn bearer_answer_starts_with_the_capability() {
        let out = written(&Response {
            bearer: Some(Secret::new("gr_abc".into())),
            password_expiry_utc: Some(1_800_000_000),
            ..Response::default()
        })
        .unwrap();
        assert_eq!(
            out,
            "capability[]=authtype\nauthtype=Bearer\ncredential=gr_abc\nephemeral=1\npassword_expiry_utc=1800000000\n"
        );
    }

    #[test]
    fn quit_is_written() {
        let out = written(&Response {
            quit: true,
            ..Response::default()
        })
        .unwrap();
        assert_eq!(out, "quit=1\n");
    }

    #[test]
    fn unsafe_values_write_nothing() {
        for bad in ["gr_a\nhost=evil", "gr_a\rb", "gr_a\0b"] {
            let response = Response {
                username: Some("githosted".into()),
                password: Some(Secret::new(bad.into())),
                ..Response::default()
            };
            let mut out = Vec::new();
            assert!(matches!(
                response.write_to(&mut out),
                Err(ProtocolError::UnsafeValue("password"))
            ));
            assert!(out.is_empty(), "partial answer written");
        }
    }
}
