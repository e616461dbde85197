//! `git-credential-githosted`: the program git runs.
//!
//! A warm `get` — the agent holds a fit token — is answered here, by a small
//! program that loads no async runtime, TLS, HTTP client, keychain or D-Bus
//! code: read git's request, one round trip on the agent's socket (checked as
//! the full program checks it), print the answer. A miss with a workspace
//! token in `GITHOSTED_TOKEN` (CI) is minted through the agent from here too.
//! Everything else — a keychain parent, a failure, every other command,
//! anything unusual — is handed to the full program,
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
    #[cfg(any(unix, windows))]
    {
        match warm::get(&args) {
            Some(warm::Outcome::Answered) => ExitCode::SUCCESS,
            Some(warm::Outcome::Failed) => ExitCode::FAILURE,
            Some(warm::Outcome::HandOver(request)) => hand_over(&args, Some(&request)),
            Some(warm::Outcome::AgentStuck(request, left)) => {
                hand_over(&warm::without_agent(&args, left), Some(&request))
            }
            None => hand_over(&args, None),
        }
    }
    #[cfg(not(any(unix, windows)))]
    hand_over(&args, None)
}

/// The path of the full program.
fn core() -> std::path::PathBuf {
    std::env::current_exe()
        .map(|exe| exe.with_file_name(format!("{CORE}{}", std::env::consts::EXE_SUFFIX)))
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

/// Without `exec`: run the full program and pass its status on; its stdin
/// is git's request (`request`, when this program read it already: written
/// to it through a pipe), else this program's.
#[cfg(not(unix))]
fn hand_over(args: &[OsString], request: Option<&[u8]>) -> ExitCode {
    let core = core();
    let mut command = std::process::Command::new(&core);
    command.args(args);
    if request.is_some() {
        command.stdin(std::process::Stdio::piped());
    }
    let status = command.spawn().and_then(|mut child| {
        if let (Some(request), Some(mut stdin)) = (request, child.stdin.take()) {
            // The full program reads it all before answering; if it stops
            // reading early, its status says why.
            let _ = std::io::Write::write_all(&mut stdin, request);
        }
        child.wait()
    });
    match status {
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

#[cfg(any(unix, windows))]
mod warm {
    use std::ffi::OsString;
    use std::io::Read;
    use std::time::{Duration, Instant};

    use git_credential_githosted::agent::client::Agent;
    use git_credential_githosted::api::Network;
    use git_credential_githosted::cache::{Grant, Key, MintParams};
    use git_credential_githosted::cmd::helper::{USERNAME, answer as answer_git};
    use git_credential_githosted::issuer::broker_key_parent;
    use git_credential_githosted::issuer::classify;
    use git_credential_githosted::keychain::ENV_TOKEN;
    use git_credential_githosted::keychain::{self, Parent};
    use git_credential_githosted::oidc::Source;
    use git_credential_githosted::protocol::Request;
    use git_credential_githosted::secret::Secret;
    use git_credential_githosted::settings::{
        BrokerRequested, DEFAULT_TTL_SECS, Requested, Settings, subject,
    };
    use git_credential_githosted::target::Resolution;
    use git_credential_githosted::token::Permission;

    /// The most of git's request this program reads (its own limits are far lower).
    const MAX_REQUEST: u64 = 1024 * 1024;

    pub enum Outcome {
        /// Answered (or, for another host, rightly said nothing).
        Answered,
        /// A mint failed, and git was told so (as the full program tells it).
        Failed,
        /// The full program takes over, with the request read so far.
        HandOver(Vec<u8>),
        /// The agent did not answer a mint: the full program takes over
        /// without it, with what is left of the deadline.
        AgentStuck(Vec<u8>, Duration),
    }

    /// The options of a `get` this program understands; anything else (or
    /// logging asked for) is the full program's.
    #[derive(Default)]
    struct Options {
        api_url: Option<String>,
        permission: Option<String>,
        min_ttl: Option<u64>,
        ttl: Option<u64>,
        timeout: Option<u64>,
        broker: BrokerRequested,
    }

    /// The options, when the line is one the full program would accept as
    /// this program reads it: anything doubtful (an option given twice, a
    /// value that looks like an option or a token) is the full program's to
    /// judge.
    fn options(args: &[OsString]) -> Option<Options> {
        let (last, before) = args.split_last()?;
        if last != "get" {
            return None;
        }
        let mut options = Options::default();
        let mut seen: Vec<&str> = Vec::new();
        let mut words = before.iter().map(|a| a.to_str()).peekable();
        while let Some(word) = words.next() {
            let word = word?;
            let (name, inline) = match word.split_once('=') {
                Some((name, value)) => (name, Some(value.to_owned())),
                None => (word, None),
            };
            if seen.contains(&name) {
                return None;
            }
            seen.push(name);
            let mut value = || {
                inline
                    .clone()
                    .or_else(|| words.next().flatten().map(str::to_owned))
                    .filter(|v| {
                        !v.starts_with('-') && !v.starts_with("gw_") && !v.starts_with("gr_")
                    })
            };
            match name {
                "--api-url" => options.api_url = Some(value()?),
                "--permission" => options.permission = Some(value()?),
                "--min-ttl" => options.min_ttl = Some(value()?.parse().ok()?),
                "--ttl" => options.ttl = Some(value()?.parse().ok()?),
                "--timeout" => options.timeout = Some(value()?.parse().ok()?),
                "--broker" => options.broker.url = Some(value()?),
                "--oidc-token-file" => options.broker.token_file = Some(value()?.into()),
                "--oidc-token-env" => options.broker.token_env = Some(value()?),
                "--oidc-audience" => options.broker.audience = Some(value()?),
                _ => return None,
            }
        }
        if std::env::var_os("GITHOSTED_LOG").is_some_and(|v| !v.is_empty()) {
            return None;
        }
        if std::env::var_os("GITHOSTED_NO_AGENT").is_some_and(|v| !v.is_empty() && v != "0") {
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
        let started = Instant::now();
        let mut stuck = None;
        Some(match answer(&options, &request, &mut stuck) {
            Some(true) => Outcome::Answered,
            Some(false) => Outcome::Failed,
            None => match stuck {
                Some(timeout) => {
                    Outcome::AgentStuck(request, timeout.saturating_sub(started.elapsed()))
                }
                None => Outcome::HandOver(request),
            },
        })
    }

    /// `args` for the full program after the agent failed a mint: `--no-agent`
    /// and `--timeout` what is left (one deadline for the whole `get`).
    pub fn without_agent(args: &[OsString], left: Duration) -> Vec<OsString> {
        let mut kept = Vec::new();
        let mut words = args.iter();
        while let Some(word) = words.next() {
            if word == "--timeout" {
                words.next();
            } else if !word.to_str().is_some_and(|w| w.starts_with("--timeout=")) {
                kept.push(word.clone());
            }
        }
        let last = kept.pop();
        kept.push("--no-agent".into());
        kept.push("--timeout".into());
        kept.push(left.as_secs().max(1).to_string().into());
        kept.extend(last);
        kept
    }

    /// `Some` when answered (`false`: with a failure); `None` hands over
    /// (`stuck`: the agent did not answer a mint within this timeout).
    fn answer(options: &Options, bytes: &[u8], stuck: &mut Option<Duration>) -> Option<bool> {
        let request = Request::read_from(&mut &bytes[..]).ok()?;
        let api_url = options.api_url.clone().or_else(|| {
            std::env::var("GITHOSTED_API_URL")
                .ok()
                .filter(|v| !v.trim().is_empty())
        });
        let permission = match options.permission.as_deref() {
            None | Some("write") => Permission::Write,
            Some("read") => Permission::Read,
            Some("auto") => git_credential_githosted::permission::from_git_command(),
            Some(_) => return None,
        };
        // The full program's rules for defaults and bounds.
        let settings = Settings::new(
            &Requested {
                api_url,
                permission: Some(permission),
                ttl_secs: options.ttl,
                min_ttl_secs: options.min_ttl,
                timeout_secs: options.timeout,
                broker: options.broker.clone(),
                ..Requested::default()
            },
            DEFAULT_TTL_SECS,
        )
        .ok()?;
        let service = &settings.service;
        if request.username.as_deref().is_some_and(|u| u != USERNAME) {
            return Some(true);
        }
        let target = match service.resolve(
            request.protocol.as_deref(),
            request.host.as_deref(),
            request.path.as_deref(),
        ) {
            Resolution::NotOurs => return Some(true),
            Resolution::Repo(target) => target,
            _ => return None,
        };
        let env_parent = match std::env::var(ENV_TOKEN) {
            Ok(value) if !value.trim().is_empty() => {
                let token = Secret::new(value.trim().to_owned());
                // A repo token passes through, a non-token is explained: the full program's job.
                if !token.expose().starts_with("gw_") {
                    return None;
                }
                Some(token)
            }
            _ => None,
        };
        let (parent, env_parent) = match (&settings.broker, env_parent) {
            // A CI job's broker tokens (a broker wins over a workspace token,
            // as in the full program): filed under the job's identity; a miss
            // (an ID token to fetch) is the full program's.
            (Some(broker), _) => {
                let source =
                    Source::choose(broker.token_file.as_deref(), broker.token_env.as_deref())?;
                (broker_key_parent(broker, &source)?, None)
            }
            (None, Some(token)) => (format!("env:{}", token.holder_id()), Some(token)),
            (None, None) => ("keychain".to_owned(), None),
        };
        let key = Key {
            api: service.api_url().to_string(),
            workspace: target.workspace.clone(),
            repo: target.repo.clone(),
            permission,
            parent,
        };
        let mut agent = connect()?;
        let issued = match (agent.lookup(&key, settings.min_ttl_secs).ok()?, env_parent) {
            (Some(issued), _) => Ok(issued),
            // A miss with the parent at hand: the agent mints (once, however
            // many ask); a failure is said as the full program says it.
            (None, Some(parent)) => {
                let params = MintParams {
                    ttl: settings.ttl_secs,
                    subject: subject(),
                    timeout: settings.timeout,
                    network: Network::from_env(),
                };
                let grant = Grant::Parent(parent);
                match agent.mint(&key, settings.min_ttl_secs, &params, &grant) {
                    Ok(Ok(issued)) => Ok(issued),
                    Ok(Err(e)) => {
                        let Grant::Parent(token) = grant else {
                            return None;
                        };
                        let parent = Parent {
                            token,
                            source: keychain::Source::Env,
                        };
                        Err(anyhow::anyhow!(
                            "{}",
                            classify(&settings, &target, &parent, e)
                        ))
                    }
                    Err(_) => {
                        *stuck = Some(settings.timeout);
                        return None;
                    }
                }
            }
            (None, None) => return None,
        };
        let mut out = std::io::stdout().lock();
        // Whatever happens to git's pipe, nothing more to do.
        Some(answer_git(&request, issued, &mut out).unwrap_or(true))
    }

    /// The running agent of this user, if any (this program starts none).
    #[cfg(unix)]
    fn connect() -> Option<Agent> {
        let dir = git_credential_githosted::agent::AgentDir::open().ok()?;
        Agent::connect_in(&dir).ok()
    }

    /// The running agent of this user, on its named pipe, if any.
    #[cfg(windows)]
    fn connect() -> Option<Agent> {
        Agent::connect().ok()
    }
}

#[cfg(all(test, any(unix, windows)))]
mod tests {
    use std::ffi::OsString;
    use std::time::Duration;

    #[test]
    fn the_core_gets_no_agent_and_what_is_left_of_the_timeout() {
        let args: Vec<OsString> = [
            "--api-url",
            "http://x",
            "--timeout",
            "9",
            "--timeout=8",
            "get",
        ]
        .map(OsString::from)
        .to_vec();
        let words = super::warm::without_agent(&args, Duration::from_millis(2500));
        assert_eq!(
            words,
            [
                "--api-url",
                "http://x",
                "--no-agent",
                "--timeout",
                "2",
                "get"
            ]
            .map(OsString::from)
        );
        let words = super::warm::without_agent(&args[5..], Duration::ZERO);
        assert_eq!(
            words,
            ["--no-agent", "--timeout", "1", "get"].map(OsString::from)
        );
    }
}
