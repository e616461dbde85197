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
            Some(warm::Outcome::Missed(request)) => {
                hand_over(&warm::after_miss(&args), Some(&request))
            }
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
    use git_credential_githosted::cache::MintParams;
    use git_credential_githosted::cmd::helper::{USERNAME, answer as answer_git};
    use git_credential_githosted::flags;
    use git_credential_githosted::issuer::classify;
    use git_credential_githosted::keychain::{self, Parent};
    use git_credential_githosted::net::Network;
    use git_credential_githosted::plan::{self, Plan};
    use git_credential_githosted::protocol::Request;
    use git_credential_githosted::settings::{
        self, BrokerRequested, DEFAULT_TTL_SECS, Requested, Settings, subject,
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
        /// The agent has no fit token and the parent needs the full program
        /// (keychain, broker): it takes over without looking up again.
        Missed(Vec<u8>),
    }

    /// `args` for the full program after a miss in the agent.
    pub fn after_miss(args: &[OsString]) -> Vec<OsString> {
        let mut kept = args.to_vec();
        let last = kept.pop();
        kept.push(format!("--{}", flags::AGENT_MISSED).into());
        kept.extend(last);
        kept
    }

    /// The options of a `get` this program understands ([`flags::GET_VALUES`],
    /// by name); anything else (or logging asked for) is the full program's.
    #[derive(Default)]
    struct Options(Vec<(&'static str, String)>);

    impl Options {
        fn get(&self, name: &str) -> Option<&str> {
            self.0
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.as_str())
        }

        fn number(&self, name: &str) -> Result<Option<u64>, ()> {
            self.get(name).map(str::parse).transpose().map_err(|_| ())
        }

        /// What they ask for, as the full program reads the same line.
        fn requested(&self) -> Option<Requested> {
            let permission = match self.get(flags::PERMISSION) {
                None | Some("write") => Permission::Write,
                Some("read") => Permission::Read,
                Some("auto") => git_credential_githosted::permission::from_git_command(),
                Some(_) => return None,
            };
            let owned = |name| self.get(name).map(str::to_owned);
            Some(Requested {
                api_url: owned(flags::API_URL).or_else(settings::env_api_url),
                permission: Some(permission),
                ttl_secs: self.number(flags::TTL).ok()?,
                min_ttl_secs: self.number(flags::MIN_TTL).ok()?,
                timeout_secs: self.number(flags::TIMEOUT).ok()?,
                workspace: owned(flags::WORKSPACE),
                broker: BrokerRequested {
                    url: owned(flags::BROKER),
                    token_file: owned(flags::OIDC_TOKEN_FILE).map(Into::into),
                    token_env: owned(flags::OIDC_TOKEN_ENV),
                    audience: owned(flags::OIDC_AUDIENCE),
                },
                ..Requested::default()
            })
        }
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
        let mut words = before.iter().map(|a| a.to_str());
        while let Some(word) = words.next() {
            let word = word?;
            let (name, inline) = match word.split_once('=') {
                Some((name, value)) => (name, Some(value.to_owned())),
                None => (word, None),
            };
            let name = flags::GET_VALUES
                .iter()
                .find(|known| name.strip_prefix("--") == Some(**known))?;
            if options.get(name).is_some() {
                return None;
            }
            let value = inline
                .or_else(|| words.next().flatten().map(str::to_owned))
                .filter(|v| {
                    !v.starts_with('-') && !v.starts_with("gw_") && !v.starts_with("gr_")
                })?;
            options.0.push((name, value));
        }
        // Logging asked for, no agent, or inside `exec`: the full program's.
        if settings::env_log().is_some() || settings::env_no_agent() || settings::env_in_exec() {
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
        let mut missed = false;
        Some(match answer(&options, &request, &mut stuck, &mut missed) {
            Some(true) => Outcome::Answered,
            Some(false) => Outcome::Failed,
            None => match stuck {
                Some(timeout) => {
                    Outcome::AgentStuck(request, timeout.saturating_sub(started.elapsed()))
                }
                None if missed => Outcome::Missed(request),
                None => Outcome::HandOver(request),
            },
        })
    }

    /// `args` for the full program after the agent failed a mint: `--no-agent`
    /// and `--timeout` what is left (one deadline for the whole `get`).
    pub fn without_agent(args: &[OsString], left: Duration) -> Vec<OsString> {
        let timeout = format!("--{}", flags::TIMEOUT);
        let mut kept = Vec::new();
        let mut words = args.iter();
        while let Some(word) = words.next() {
            if *word == *timeout {
                words.next();
            } else if !word.to_str().is_some_and(|w| {
                w.strip_prefix(timeout.as_str())
                    .is_some_and(|r| r.starts_with('='))
            }) {
                kept.push(word.clone());
            }
        }
        let last = kept.pop();
        kept.push(format!("--{}", flags::NO_AGENT).into());
        kept.push(timeout.into());
        kept.push(left.as_secs().max(1).to_string().into());
        kept.extend(last);
        kept
    }

    /// `Some` when answered (`false`: with a failure); `None` hands over
    /// (`stuck`: the agent did not answer a mint within this timeout).
    fn answer(
        options: &Options,
        bytes: &[u8],
        stuck: &mut Option<Duration>,
        missed: &mut bool,
    ) -> Option<bool> {
        let request = Request::read_from(&mut &bytes[..]).ok()?;
        // The full program's rules for defaults and bounds.
        let settings = Settings::new(&options.requested()?, DEFAULT_TTL_SECS).ok()?;
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
        // The one decision, as the full program makes it: only a plan that
        // uses the agent is this program's.
        let env = plan::Env::read(&settings);
        let Plan::Token {
            key,
            agent: true,
            lookup,
            parent,
            ..
        } = plan::get(&settings, &env, &target)
        else {
            return None;
        };
        let mut agent = connect()?;
        let found = if lookup {
            agent.lookup(&key, settings.min_ttl_secs).ok()?
        } else {
            None
        };
        let issued = match (found, parent.grant()) {
            (Some(issued), _) => Ok(issued),
            // A miss with the parent at hand: the agent mints (once, however
            // many ask); a failure is said as the full program says it.
            (None, Some(grant)) => {
                let params = MintParams {
                    ttl: settings.ttl_secs,
                    subject: subject(),
                    timeout: settings.timeout,
                    network: Network::from_env(),
                };
                match agent.mint(&key, settings.min_ttl_secs, &params, &grant) {
                    Ok(Ok(issued)) => Ok(issued),
                    Ok(Err(e)) => {
                        let plan::Parent::Env { token, .. } = parent else {
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
            // The parent needs the keychain or the broker: the full program's,
            // told that the agent has no fit token.
            (None, None) => {
                *missed = true;
                return None;
            }
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

    /// After a miss the core is told so, and the line still parses as the
    /// core's `get` with the front's options as they were.
    #[test]
    fn after_a_miss_the_core_does_not_look_up_again() {
        use clap::Parser;
        let args: Vec<OsString> = ["--api-url", "http://127.0.0.1:9", "get"]
            .map(OsString::from)
            .to_vec();
        let words = super::warm::after_miss(&args);
        let cli = git_credential_githosted::cli::Cli::try_parse_from(
            std::iter::once(OsString::from("x")).chain(words),
        )
        .unwrap();
        assert!(cli.options.agent_missed, "{cli:?}");
        assert_eq!(
            cli.options.api.api_url.as_deref(),
            Some("http://127.0.0.1:9")
        );
        let git_credential_githosted::cli::Command::Get(_) = cli.command else {
            panic!("{:?}", cli.command);
        };
        // The same line without the flag looks up first.
        let plain = git_credential_githosted::cli::Cli::try_parse_from(
            std::iter::once(OsString::from("x")).chain(args),
        )
        .unwrap();
        assert!(!plain.options.agent_missed);
    }
}
