//! `git-credential-githosted`: the program git runs.
//!
//! A warm `get` — the agent holds a fit token — is answered here, by a small
//! program that loads no async runtime, TLS, HTTP client, keychain or D-Bus
//! code: read git's request, one round trip on the agent's socket (checked as
//! the full program checks it), print the answer. Everything else — a miss,
//! every other command, anything unusual — is handed to the full program,
//! `git-credential-githosted-core` beside this one, by `exec`, with git's
//! request as its stdin. One name on git's side, one `./install`.

use std::ffi::OsString;
use std::process::ExitCode;

use git_credential_githosted::wipe::ZeroingAlloc;

/// Freed memory holds no token (see `wipe`).
#[global_allocator]
static ALLOC: ZeroingAlloc = ZeroingAlloc;

/// The full program's name, beside this one.
const CORE: &str = "git-credential-githosted-core";

fn main() -> ExitCode {
    git_credential_githosted::harden::process();
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    #[cfg(unix)]
    {
        match warm::get(&args) {
            Some(warm::Outcome::Answered) => ExitCode::SUCCESS,
            Some(warm::Outcome::HandOver(request)) => hand_over(&args, Some(&request)),
            None => hand_over(&args, None),
        }
    }
    #[cfg(not(unix))]
    hand_over(&args, None)
}

/// The path of the full program.
fn core() -> std::path::PathBuf {
    std::env::current_exe()
        .map(|exe| exe.with_file_name(CORE))
        .unwrap_or_else(|_| std::path::PathBuf::from(CORE))
}

/// Replaces this process with the full program, its stdin what git sent
/// (`request`, when this program read it already).
#[cfg(unix)]
fn hand_over(args: &[OsString], request: Option<&[u8]>) -> ExitCode {
    use std::os::unix::process::CommandExt;
    let core = core();
    let mut command = std::process::Command::new(&core);
    command.args(args);
    if let Some(request) = request {
        match replay(request) {
            Ok(stdin) => {
                command.stdin(stdin);
            }
            Err(e) => {
                git_credential_githosted::say!("cannot pass git's request on: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let e = command.exec();
    git_credential_githosted::say!(
        "cannot run {} ({e}); reinstall with ./install",
        core.display()
    );
    ExitCode::FAILURE
}

/// Without `exec`: run the full program and pass its status on.
#[cfg(not(unix))]
fn hand_over(args: &[OsString], _: Option<&[u8]>) -> ExitCode {
    let core = core();
    match std::process::Command::new(&core).args(args).status() {
        Ok(status) => ExitCode::from(u8::try_from(status.code().unwrap_or(1)).unwrap_or(1)),
        Err(e) => {
            git_credential_githosted::say!(
                "cannot run {} ({e}); reinstall with ./install",
                core.display()
            );
            ExitCode::FAILURE
        }
    }
}

/// A file to read `request` back from, from its start: a memory file on
/// Linux, a pipe elsewhere (git's requests are far smaller than a pipe's buffer).
#[cfg(unix)]
fn replay(request: &[u8]) -> std::io::Result<std::process::Stdio> {
    use std::io::Write;
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
    {
        use std::io::{Seek, SeekFrom};
        let fd = rustix::fs::memfd_create("git-request", rustix::fs::MemfdFlags::empty())?;
        let mut file = std::fs::File::from(fd);
        file.write_all(request)?;
        file.seek(SeekFrom::Start(0))?;
        Ok(file.into())
    }
    #[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
    {
        let (read, write) = rustix::pipe::pipe()?;
        let mut write = std::fs::File::from(write);
        write.write_all(request)?;
        Ok(std::fs::File::from(read).into())
    }
}

#[cfg(unix)]
mod warm {
    use std::ffi::OsString;
    use std::io::Read;

    use git_credential_githosted::agent::AgentDir;
    use git_credential_githosted::agent::client::Agent;
    use git_credential_githosted::cache::Key;
    use git_credential_githosted::cmd::helper::USERNAME;
    use git_credential_githosted::keychain::ENV_TOKEN;
    use git_credential_githosted::protocol::{Request, Response};
    use git_credential_githosted::secret::Secret;
    use git_credential_githosted::target::{Resolution, Service};
    use git_credential_githosted::token::Permission;

    /// The most of git's request this program reads (its own limits are far lower).
    const MAX_REQUEST: u64 = 1024 * 1024;

    pub enum Outcome {
        /// Answered (or, for another host, rightly said nothing).
        Answered,
        /// The full program takes over, with the request read so far.
        HandOver(Vec<u8>),
    }

    /// The options of a `get` this program understands; anything else (or
    /// logging asked for) is the full program's.
    #[derive(Default)]
    struct Options {
        api_url: Option<String>,
        permission: Option<String>,
        min_ttl: Option<u64>,
    }

    fn options(args: &[OsString]) -> Option<Options> {
        let (last, before) = args.split_last()?;
        if last != "get" {
            return None;
        }
        let mut options = Options::default();
        let mut words = before.iter().map(|a| a.to_str()).peekable();
        while let Some(word) = words.next() {
            let word = word?;
            let (name, inline) = match word.split_once('=') {
                Some((name, value)) => (name, Some(value.to_owned())),
                None => (word, None),
            };
            let mut value = || {
                inline
                    .clone()
                    .or_else(|| words.next().flatten().map(str::to_owned))
            };
            match name {
                "--api-url" => options.api_url = Some(value()?),
                "--permission" => options.permission = Some(value()?),
                "--min-ttl" => options.min_ttl = Some(value()?.parse().ok()?),
                // Only a mint uses these.
                "--ttl" | "--timeout" => {
                    value()?;
                }
                _ => return None,
            }
        }
        if std::env::var_os("GITHOSTED_LOG").is_some_and(|v| !v.is_empty()) {
            return None;
        }
        if std::env::var_os("GITHOSTED_NO_AGENT").is_some_and(|v| !v.is_empty() && v != "0") {
            return None;
        }
        // A CI job's broker (`--broker` is handed over above): the full program's.
        if std::env::var_os("GITHOSTED_BROKER").is_some_and(|v| !v.is_empty()) {
            return None;
        }
        Some(options)
    }

    /// Answers `get` from the agent's cache, or says who should.
    pub fn get(args: &[OsString]) -> Option<Outcome> {
        let options = options(args)?;
        let mut request = Vec::new();
        let read = std::io::stdin()
            .lock()
            .take(MAX_REQUEST)
            .read_to_end(&mut request);
        if read.is_err() {
            return Some(Outcome::HandOver(request));
        }
        Some(match answer(&options, &request) {
            Some(()) => Outcome::Answered,
            None => Outcome::HandOver(request),
        })
    }

    /// `Some` when answered; `None` hands over.
    fn answer(options: &Options, bytes: &[u8]) -> Option<()> {
        let request = Request::read_from(&mut &bytes[..]).ok()?;
        let api_url = options.api_url.clone().or_else(|| {
            std::env::var("GITHOSTED_API_URL")
                .ok()
                .filter(|v| !v.trim().is_empty())
        });
        let service = Service::new(api_url.as_deref()).ok()?;
        if request.username.as_deref().is_some_and(|u| u != USERNAME) {
            return Some(());
        }
        let target = match service.resolve(
            request.protocol.as_deref(),
            request.host.as_deref(),
            request.path.as_deref(),
        ) {
            Resolution::NotOurs => return Some(()),
            Resolution::Repo(target) => target,
            _ => return None,
        };
        let permission = match options.permission.as_deref() {
            None | Some("write") => Permission::Write,
            Some("read") => Permission::Read,
            Some("auto") => git_credential_githosted::permission::from_git_command(),
            Some(_) => return None,
        };
        let parent = match std::env::var(ENV_TOKEN) {
            Ok(value) if !value.trim().is_empty() => {
                let token = Secret::new(value.trim().to_owned());
                // A repo token passes through, a non-token is explained: the full program's job.
                if !token.expose().starts_with("gw_") {
                    return None;
                }
                format!("env:{}", token.holder_id())
            }
            _ => "keychain".to_owned(),
        };
        let key = Key {
            api: service.api_url().to_string(),
            workspace: target.workspace,
            repo: target.repo,
            permission,
            parent,
        };
        let dir = AgentDir::open().ok()?;
        let mut agent = Agent::connect_in(&dir).ok()?;
        let issued = agent.lookup(&key, options.min_ttl).ok()??;
        let response = match request.has_capability("authtype") {
            true => Response {
                bearer: Some(issued.token),
                password_expiry_utc: issued.expires_at,
                ..Response::default()
            },
            false => Response {
                username: Some(USERNAME.into()),
                password: Some(issued.token),
                password_expiry_utc: issued.expires_at,
                ..Response::default()
            },
        };
        let mut out = std::io::stdout().lock();
        // Whatever happens to git's pipe, nothing more to do.
        let _ = response.write_to(&mut out);
        Some(())
    }
}
