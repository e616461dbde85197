//! `token` and `exec`: short-lived repo tokens for scripts, CI jobs and sandboxes.
//!
//! - `token --repo WS/REPO` prints one token (from the agent's cache when it has
//!   a fit one), for `http.extraHeader`, an SDK client, or a child job's
//!   `GITHOSTED_TOKEN`.
//! - `exec --repo WS/REPO [--repo …] -- CMD…` mints a fresh token limited to
//!   those repos, runs CMD with it as `GITHOSTED_TOKEN` (never the parent), lets
//!   git inside CMD use it, and revokes it when CMD ends, however it ends.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};

use crate::cache::{Clock, SystemClock};
use crate::issuer::{self, REVOKE_BUDGET};
use crate::keychain::{self, Parent};
use crate::minter::{ApiMinter, Grant, MintParams, Minter, Scope};
use crate::net;
use crate::sandbox::{Hidden, Sandbox, Spec};
use crate::secret::{Secret, TokenKind};
use crate::settings::{self, Settings};
use crate::target::{Resolution, Target};
use crate::token::{Issued, Permission};

/// The repos named by `--repo`, which must all be in one workspace.
fn targets(repos: &[String]) -> anyhow::Result<Vec<Target>> {
    if repos.is_empty() {
        bail!("name the repository: --repo WORKSPACE/REPO");
    }
    let targets = repos
        .iter()
        .map(|r| Target::parse(r).with_context(|| format!("`{r}` is not WORKSPACE/REPO")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if targets.iter().any(|t| t.workspace != targets[0].workspace) {
        bail!("all --repo values must be in one workspace (one workspace token mints the token)");
    }
    Ok(targets)
}

/// `token`: print one short-lived token for one repo.
pub fn token(
    settings: &Settings,
    repo: Option<&str>,
    out: &mut dyn std::io::Write,
) -> anyhow::Result<()> {
    let repo = match repo {
        Some(repo) => repo.to_owned(),
        None => repo_of_this_clone(settings)?,
    };
    let targets = targets(&[repo])?;
    let [target] = targets.as_slice() else {
        bail!("`token` makes a token for one repo; use `exec` for several");
    };
    let issued = net::block_on(issuer::issue(settings, target))??;
    let line = zeroize::Zeroizing::new(format!("{}\n", issued.token.expose()));
    out.write_all(line.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// The repo of the clone we are in (as `gh` does): the `origin` remote if it is
/// a githosted repo, else the only githosted remote.
pub(crate) fn repo_of_this_clone(settings: &Settings) -> anyhow::Result<String> {
    let listing =
        crate::git::output(&["config", "--get-regexp", r"^remote\..*\.url$"]).unwrap_or_default();
    let mut ours: Vec<(String, Target)> = Vec::new();
    for line in listing.lines() {
        let Some((key, url)) = line.split_once(' ') else {
            continue;
        };
        let name = key
            .strip_prefix("remote.")
            .and_then(|k| k.strip_suffix(".url"))
            .unwrap_or(key);
        let Ok(url) = url::Url::parse(url.trim()) else {
            continue;
        };
        let host = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_owned(),
            _ => continue,
        };
        let path = url.path().trim_start_matches('/');
        if let Resolution::Repo(target) =
            settings
                .service
                .resolve(Some(url.scheme()), Some(&host), Some(path))
        {
            ours.push((name.to_owned(), target));
        }
    }
    let pick = match ours.iter().find(|(name, _)| name == "origin") {
        Some((_, target)) => Some(target),
        None if ours.len() == 1 => ours.first().map(|(_, t)| t),
        None => None,
    };
    match pick {
        Some(t) => Ok(format!("{}/{}", t.workspace, t.repo)),
        None if ours.is_empty() => bail!(
            "name the repository: --repo WORKSPACE/REPO (or run `token` in a clone of a githosted repository)"
        ),
        None => bail!(
            "this clone has several githosted remotes ({}): name one with --repo WORKSPACE/REPO",
            ours.iter()
                .map(|(name, t)| format!("{name} = {}/{}", t.workspace, t.repo))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The lifetime of an `exec` token unless `--ttl` says otherwise.
pub const EXEC_TTL_SECS: u64 = 900;

/// The shortest `--ttl` `exec` accepts: each token is renewed shortly before
/// it expires, so a shorter one would mostly be renewing.
pub const EXEC_MIN_TTL_SECS: u64 = 60;

/// `exec`: run `command` with a fresh token for `repos`, revoked when it ends.
/// With `isolate` (the default) the command runs confined ([`crate::sandbox`]);
/// the confinement is checked before anything is minted (Linux only: elsewhere
/// `exec` refuses unless `--no-isolate`). While it runs, git inside gets fresh
/// tokens for the granted repos (only) through `exec`'s renewal channel, for
/// at most `max_session` when given. Returns the command's exit status (128 +
/// signal if a signal ended it). On Windows the command runs in a job object
/// that kills it when `exec` ends. `writable`: the `--rw` paths.
pub fn exec(
    settings: &Settings,
    repos: &[String],
    command: &[String],
    isolate: bool,
    writable: &[std::path::PathBuf],
    max_session: Option<std::time::Duration>,
) -> anyhow::Result<ExitCode> {
    let targets = targets(repos)?;
    if command.is_empty() {
        bail!("name the command to run after `--`: exec --repo WS/REPO -- CMD…");
    }
    if settings.broker.is_some() && targets.len() > 1 {
        bail!(
            "with --broker, `exec` gives the command a token for one repo (the broker mints one repo per request): name a single --repo WS/REPO"
        );
    }
    if settings.ttl_secs < EXEC_MIN_TTL_SECS {
        bail!(
            "`exec --ttl {}` is too short: give --ttl {EXEC_MIN_TTL_SECS} or more (the command's git gets a fresh token before each one expires)",
            settings.ttl_secs
        );
    }
    let code = net::block_on(run_leased(
        settings,
        &targets,
        command,
        isolate,
        writable,
        max_session,
    ))??;
    #[cfg(unix)]
    let status = crate::supervise::as_exit_code(code);
    #[cfg(windows)]
    let status = match u8::try_from(code) {
        Ok(small) => ExitCode::from(small),
        // An exit code no ExitCode can carry (an NTSTATUS such as 0xC000013A
        // after Ctrl-C): leave with it as it is, the token revoked already.
        Err(_) => std::process::exit(code),
    };
    Ok(status)
}

/// `exec` past its checks: mints, runs the command with the token and renews
/// it, and revokes every token it minted when the command ends (however it
/// ends); returns the command's exit code. The command's one crossing into
/// async I/O.
async fn run_leased(
    settings: &Settings,
    targets: &[Target],
    command: &[String],
    isolate: bool,
    writable: &[std::path::PathBuf],
    max_session: Option<std::time::Duration>,
) -> anyhow::Result<i32> {
    let lease = std::sync::Arc::new(Lease::new(settings, targets, max_session)?);
    // The channel the command renews its token through: made before the
    // sandbox, which makes it (and only it of ours) reachable inside.
    #[cfg(unix)]
    let mut channel = crate::channel::Channel::open(&std::env::temp_dir())
        .context("opening exec's token channel for the command")?;
    let sandbox = if isolate {
        let spec = Spec {
            hidden: job_files(settings)?,
            writable: writable.to_vec(),
            #[cfg(unix)]
            channel: Some(channel.dir().to_owned()),
            #[cfg(not(unix))]
            channel: None,
        };
        Some(Sandbox::prepare(spec)?)
    } else {
        tracing::info!("exec --no-isolate: the command can reach everything this user can");
        None
    };
    let first = lease.token().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    tracing::info!(token = %first.token, "exec: minted");

    let mut env = git_config_env(settings);
    let unset = job_variables(settings);
    env.push((
        keychain::ENV_TOKEN.to_owned(),
        first.token.expose().to_owned(),
    ));
    drop(first);
    #[cfg(unix)]
    let channel = {
        let serving = lease.clone();
        let task = channel.serve(move |ask| {
            let lease = serving.clone();
            async move { lease.answer(ask).await }
        });
        env.push((
            settings::EXEC_CHANNEL_ENV.to_owned(),
            channel.socket().to_string_lossy().into_owned(),
        ));
        (channel, task)
    };
    let env = zeroize::Zeroizing::new(env);
    let status = run(sandbox.as_ref(), command, &env, &unset).await;
    #[cfg(unix)]
    {
        let (channel, task) = channel;
        if let Some(task) = task {
            task.abort();
        }
        drop(channel);
    }

    // Whatever happened to the command, its tokens die with it.
    let deadline = Instant::now() + REVOKE_BUDGET;
    lease.revoke_all(deadline).await;
    status
}

/// Whether `exec`'s grant covers an ask (pure): the same workspace, one of
/// the granted repos, no more than the granted permission.
pub fn admits(
    scope: &Scope,
    workspace: &str,
    repo: &str,
    permission: Permission,
) -> Result<(), String> {
    let granted = scope
        .repos
        .iter()
        .map(|r| format!("{}/{r}", scope.workspace))
        .collect::<Vec<_>>()
        .join(", ");
    if workspace != scope.workspace || !scope.repos.iter().any(|r| r == repo) {
        return Err(format!(
            "this command runs under `exec` with tokens for {granted} only, not {}/{}: run it under an `exec --repo {}/{}` of its own",
            crate::ui::printable(workspace, 100),
            crate::ui::printable(repo, 100),
            crate::ui::printable(workspace, 100),
            crate::ui::printable(repo, 100)
        ));
    }
    if permission == Permission::Write && scope.permission == Permission::Read {
        return Err(format!(
            "this command runs under `exec` with {} tokens for {granted}: it cannot have a {} token; start `exec --permission {}`",
            scope.permission.as_str(),
            permission.as_str(),
            permission.as_str()
        ));
    }
    Ok(())
}

/// What `exec` knows of its session when its command's git asks or is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The granted repos, `WS/REPO, …`.
    pub granted: String,
    /// `--max-session`, in seconds.
    pub max_session_secs: Option<u64>,
    /// `--max-session` has passed since the first token: no more renewals.
    pub over: bool,
}

/// What happened to the command's git.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// It asks for a token and the current one is not fit to hand out.
    Ask,
    /// githosted refused the token it was given (git's `erase`).
    Rejected,
}

/// `exec`'s answer to an [`Event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Mint a fresh token (on the next ask).
    Renew,
    /// No token: this one line for the command's git says why and what to do.
    Say(String),
}

/// What `exec` tells its command's git about its tokens (pure): a fresh one
/// while the session lasts; after `--max-session`, or when githosted refused
/// one, the line that says what happened and what to do.
pub fn verdict(event: Event, session: &Session) -> Verdict {
    let granted = &session.granted;
    match (event, session.over, session.max_session_secs) {
        (_, true, Some(max)) => Verdict::Say(format!(
            "exec's session for {granted} ended after --max-session {max} s; run exec again (with a longer --max-session)"
        )),
        (Event::Ask, _, _) => Verdict::Renew,
        (Event::Rejected, _, _) => Verdict::Say(format!(
            "githosted rejected exec's token for {granted} (revoked, or expired early); exec mints a fresh one for the next git command: run it again"
        )),
    }
}

/// What `exec` pays its mints with.
enum Payer {
    /// A workspace token (environment or keychain), and what we know of it.
    Parent { parent: Parent, grant: Grant },
    /// The job's ID token for a broker, fetched afresh for each mint.
    Broker {
        broker: settings::BrokerSettings,
        source: crate::id_token::Source,
    },
}

impl Payer {
    /// A workspace token pays; anything else cannot mint a narrower token.
    fn parent(parent: Parent, grant: impl FnOnce(&Parent) -> Grant) -> anyhow::Result<Payer> {
        if parent.token.kind() != TokenKind::Workspace {
            bail!(
                "{} holds no workspace token (gw_…); `exec` needs one to mint a narrower token",
                parent.source
            );
        }
        let grant = grant(&parent);
        Ok(Payer::Parent { parent, grant })
    }
}

/// `exec`'s grant for its command: the scope, what pays for it, the current
/// token and every token minted (all revoked at the end).
struct Lease {
    scope: Scope,
    payer: Payer,
    minter: ApiMinter,
    /// For the error lines (`classify`), the first repo.
    settings: Settings,
    target: Target,
    /// No renewal after this.
    until: Option<Instant>,
    max_session: Option<std::time::Duration>,
    state: tokio::sync::Mutex<LeaseState>,
}

#[derive(Default)]
struct LeaseState {
    current: Option<Held>,
    minted: Vec<Held>,
}

#[derive(Clone)]
struct Held {
    token: Secret,
    id: String,
    expires_at: i64,
    /// Milliseconds between minting and expiry.
    lifetime_ms: i64,
}

impl Lease {
    fn new(
        settings: &Settings,
        targets: &[Target],
        max_session: Option<std::time::Duration>,
    ) -> anyhow::Result<Lease> {
        let target = targets[0].clone();
        let scope = Scope {
            api: settings.service.api_url().to_string(),
            workspace: target.workspace.clone(),
            repos: targets.iter().map(|t| t.repo.clone()).collect(),
            permission: settings.permission,
        };
        let payer = match crate::plan::parent(settings, &crate::plan::Env::read(settings)) {
            Some(crate::plan::Parent::Broker { broker, source }) => {
                Payer::Broker { broker, source }
            }
            Some(crate::plan::Parent::Env { token, declared }) => {
                let parent = Parent {
                    token,
                    source: keychain::Source::Env,
                };
                Payer::parent(parent, |p| crate::plan::stored_grant(p, declared))?
            }
            Some(crate::plan::Parent::Keychain { declared }) => {
                let api_host = settings.service.api_host();
                let workspace = &target.workspace;
                let parent = keychain::parent_token(api_host, workspace)?.with_context(|| {
                    format!(
                        "no githosted workspace token for {workspace} on {api_host}: run `git-credential-githosted login{} --workspace {workspace}`, or set {}",
                        settings.api_url_flag(),
                        keychain::ENV_TOKEN
                    )
                })?;
                Payer::parent(parent, |p| crate::plan::stored_grant(p, declared))?
            }
            None => {
                return Err(issuer::id_token_source(settings)
                    .err()
                    .map_or_else(|| anyhow::anyhow!("no ID token"), anyhow::Error::from));
            }
        };
        Ok(Lease {
            scope,
            payer,
            minter: ApiMinter::default(),
            settings: settings.clone(),
            target,
            until: max_session.map(net::deadline_in),
            max_session,
            state: tokio::sync::Mutex::new(LeaseState::default()),
        })
    }

    /// The current token if it still has the margin, else a fresh one.
    async fn token(&self) -> Result<Issued, issuer::GetError> {
        let mut state = self.state.lock().await;
        if let Some(held) = &state.current
            && crate::cache::fit(
                held.expires_at,
                held.lifetime_ms,
                self.settings.min_ttl_secs,
                SystemClock.now_ms(),
            )
        {
            return Ok(held.issued());
        }
        match verdict(Event::Ask, &self.session(&state)) {
            Verdict::Renew => {}
            Verdict::Say(line) => return Err(issuer::GetError::Exec(line)),
        }
        let held = self.mint().await?;
        state.minted.push(held.clone());
        let issued = held.issued();
        state.current = Some(held);
        Ok(issued)
    }

    async fn mint(&self) -> Result<Held, issuer::GetError> {
        let deadline = net::deadline_in(self.settings.timeout);
        let params = MintParams {
            ttl: self.settings.ttl_secs,
            subject: format!("{} exec", settings::subject()),
            timeout: self.settings.timeout,
            network: net::Network::from_env(),
        };
        let minted_at_ms = SystemClock.now_ms();
        let minted = match &self.payer {
            Payer::Parent { parent, grant } => self
                .minter
                .mint(&self.scope, &params, grant)
                .await
                .map_err(|e| issuer::classify(&self.settings, &self.target, parent, e))?,
            Payer::Broker { broker, source } => {
                let id_token = issuer::id_token(broker, source, deadline).await?;
                let grant = Grant::Broker {
                    broker: broker.url.clone(),
                    id_token,
                };
                self.minter
                    .mint(&self.scope, &params, &grant)
                    .await
                    .map_err(|e| issuer::GetError::Broker(e.to_string()))?
            }
        };
        Ok(Held {
            token: minted.token,
            id: minted.record.id,
            expires_at: minted.expires_at,
            lifetime_ms: crate::cache::lifetime_ms(minted.expires_at, minted_at_ms),
        })
    }

    /// What `verdict` needs to know of this session now.
    fn session(&self, state: &LeaseState) -> Session {
        Session {
            granted: self
                .scope
                .repos
                .iter()
                .map(|r| format!("{}/{r}", self.scope.workspace))
                .collect::<Vec<_>>()
                .join(", "),
            max_session_secs: self.max_session.map(|m| m.as_secs()),
            over: !state.minted.is_empty() && self.until.is_some_and(|u| Instant::now() >= u),
        }
    }

    /// The answer to the command's ask, through the channel.
    #[cfg_attr(not(unix), allow(dead_code))]
    async fn answer(&self, ask: crate::channel::Ask) -> crate::channel::Answer {
        use crate::channel::{Answer, Ask};
        match ask {
            Ask::Token {
                workspace,
                repo,
                permission,
            } => {
                if let Err(why) = admits(&self.scope, &workspace, &repo, permission) {
                    tracing::info!("exec: refused a token for {workspace}/{repo}");
                    return Answer::Refused(why);
                }
                match self.token().await {
                    Ok(issued) => {
                        tracing::debug!(token = %issued.token, "exec: handed out");
                        Answer::Token {
                            token: issued.token,
                            expires_at: issued.expires_at.unwrap_or(0),
                        }
                    }
                    Err(e) => Answer::Refused(e.to_string()),
                }
            }
            Ask::Forget { password } => {
                let mut state = self.state.lock().await;
                if state
                    .current
                    .as_ref()
                    .is_some_and(|held| held.token.ct_eq(password.expose()))
                {
                    tracing::info!(
                        "exec: git was refused with the current token; the next ask mints"
                    );
                    state.current = None;
                }
                match verdict(Event::Rejected, &self.session(&state)) {
                    Verdict::Say(line) => Answer::Hint(line),
                    Verdict::Renew => Answer::Forgotten,
                }
            }
        }
    }

    /// Revokes every token minted for the command (best effort, by `deadline`).
    async fn revoke_all(&self, deadline: Instant) {
        let minted = std::mem::take(&mut self.state.lock().await.minted);
        let now = SystemClock.now();
        for held in minted.iter().filter(|h| h.expires_at > now) {
            match self.revoke(&held.id, deadline).await {
                Ok(()) => tracing::info!(token = %held.token, "exec: revoked"),
                Err(e) => crate::say!(
                    "could not revoke the exec token {} ({e}); it expires on its own in {}",
                    held.token,
                    crate::cmd::status::duration(held.expires_at.saturating_sub(now))
                ),
            }
        }
    }

    async fn revoke(&self, id: &str, deadline: Instant) -> anyhow::Result<()> {
        match &self.payer {
            Payer::Parent { parent, .. } => {
                let client = self
                    .minter
                    .client(&self.scope.api, &net::Network::from_env())?;
                client.revoke_token(&parent.token, id, deadline).await?;
            }
            Payer::Broker { broker, source } => {
                let id_token = issuer::id_token(broker, source, deadline).await?;
                crate::broker_client::revoke(&broker.url, &id_token, id, deadline).await?;
            }
        }
        Ok(())
    }
}

impl Held {
    fn issued(&self) -> Issued {
        Issued {
            token: self.token.clone(),
            expires_at: Some(self.expires_at),
        }
    }
}

/// With `--broker`, the variables that let a process get the job's ID token
/// (and so any token the broker's policy allows): the command gets none.
fn job_variables(settings: &Settings) -> Vec<String> {
    let Some(broker) = &settings.broker else {
        return Vec::new();
    };
    // ACTIONS_RUNTIME_TOKEN is the same job token as the request token.
    let mut names: Vec<String> = [
        "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
        "ACTIONS_ID_TOKEN_REQUEST_URL",
        "ACTIONS_RUNTIME_TOKEN",
        settings::BROKER_ENV,
    ]
    .map(str::to_owned)
    .to_vec();
    names.extend(broker.token_env.clone());
    names
}

/// With `--broker`, the ID-token file, hidden from a confined command: the
/// file itself (by its real path) and, when it is reached through links (a
/// Kubernetes projected volume renews it by swapping `..data`), the directory
/// it is named in, unless the command works there. A file with other names
/// (hard links) cannot be hidden: refused.
fn job_files(settings: &Settings) -> anyhow::Result<Hidden> {
    let Some(file) = settings.broker.as_ref().and_then(|b| b.token_file.as_ref()) else {
        return Ok(Hidden::default());
    };
    let given = std::path::absolute(file)
        .with_context(|| format!("the ID-token file {}", file.display()))?;
    let real = std::fs::canonicalize(&given)
        .with_context(|| format!("cannot find the ID-token file {}", file.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if std::fs::metadata(&real)?.nlink() > 1 {
            bail!(
                "`exec` cannot hide the ID-token file {} from the command: it has other names (hard links); give --oidc-token-file a file with one name, or use --oidc-token-env",
                file.display()
            );
        }
    }
    let mut hidden = Hidden {
        dirs: Vec::new(),
        files: vec![real.clone()],
    };
    if given != real
        && let Some(dir) = given.parent()
        && !std::env::current_dir().is_ok_and(|cwd| cwd.starts_with(dir))
    {
        hidden.dirs.push(dir.to_owned());
    }
    Ok(hidden)
}

/// Starts the command (in the sandbox, or directly in a session of its own),
/// passes signals on until it ends, and returns its exit code. It dies with us:
/// bubblewrap's `--die-with-parent`, or `PR_SET_PDEATHSIG` without it. On a
/// terminal, the command gets a pseudo-terminal of its own as its controlling
/// terminal, relayed to ours ([`crate::pty`]); without one, plain pipes and a
/// new session without a terminal.
#[cfg(unix)]
async fn run(
    sandbox: Option<&Sandbox>,
    command: &[String],
    env: &[(String, String)],
    unset: &[String],
) -> anyhow::Result<i32> {
    use std::os::fd::{AsFd, AsRawFd};
    let mut forwarding = crate::supervise::Forwarding::install()?;
    let terminal = if crate::pty::wanted() {
        Some(
            crate::pty::Terminal::like(rustix::stdio::stdin())
                .context("making a terminal for the command")?,
        )
    } else {
        None
    };
    let own_terminal = terminal.is_some();
    let (mut cmd, info) = match sandbox {
        Some(sandbox) => {
            let (read, write) = cloexec_pipe()?;
            let fd = write.as_raw_fd();
            let exe = std::env::current_exe().context("finding this program")?;
            let info_fd = cfg!(target_os = "linux").then_some(fd);
            let mut cmd = sandbox.command(&exe, info_fd, command, own_terminal);
            // The sandbox inherits the info pipe; on its own terminal, if any.
            crate::unix::before_exec(
                &mut cmd,
                crate::unix::BeforeExec {
                    inherit: Some(fd),
                    session: if own_terminal {
                        crate::unix::Session::NewOnStdinTerminal
                    } else {
                        crate::unix::Session::Same
                    },
                    dies_with: None,
                },
            );
            // The D-Bus session is out of sight inside; do not point at it.
            cmd.env_remove("DBUS_SESSION_BUS_ADDRESS");
            (cmd, info_fd.map(|_| (read, write)))
        }
        None => {
            let mut cmd = std::process::Command::new(&command[0]);
            cmd.args(&command[1..]);
            let parent = rustix::process::getpid();
            // Its own session: no keystrokes pushed into our terminal, and
            // signals reach it once, through us (or its own terminal's); it
            // dies with `exec`.
            crate::unix::before_exec(
                &mut cmd,
                crate::unix::BeforeExec {
                    inherit: None,
                    session: if own_terminal {
                        crate::unix::Session::NewOnStdinTerminal
                    } else {
                        crate::unix::Session::New
                    },
                    dies_with: Some(parent),
                },
            );
            (cmd, None)
        }
    };
    for name in unset {
        cmd.env_remove(name);
    }
    for (key, value) in env {
        cmd.env(key, value);
    }
    // The user's terminal is never handed to the command: its own instead.
    let mut screen = None;
    if let Some(terminal) = &terminal {
        let slave = || -> std::io::Result<std::process::Stdio> {
            Ok(std::process::Stdio::from(terminal.slave.try_clone()?))
        };
        cmd.stdin(slave()?);
        for (fd, is_stdout) in [
            (rustix::stdio::stdout(), true),
            (rustix::stdio::stderr(), false),
        ] {
            if rustix::termios::isatty(fd) {
                screen.get_or_insert(fd.try_clone_to_owned()?);
                if is_stdout {
                    cmd.stdout(slave()?);
                } else {
                    cmd.stderr(slave()?);
                }
            }
        }
    }
    let raw = match &terminal {
        Some(_) => Some(crate::pty::RawMode::enter(rustix::stdio::stdin())?),
        None => None,
    };
    let child = cmd
        .spawn()
        .with_context(|| format!("cannot run `{}`", command[0]))?;
    drop(cmd);
    let child_pid = rustix::process::Pid::from_child(&child);
    let mut relay = None;
    let mut winch = None;
    if let Some(terminal) = terminal {
        drop(terminal.slave);
        let screen = match screen {
            Some(fd) => fd,
            None => std::fs::OpenOptions::new()
                .write(true)
                .open("/dev/null")?
                .into(),
        };
        let input = rustix::stdio::stdin().try_clone_to_owned()?;
        relay = Some(crate::pty::Relay::start(&terminal.master, input, screen)?);
        let mut changes =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())?;
        let master = terminal.master;
        winch = Some(tokio::spawn(async move {
            while changes.recv().await.is_some() {
                crate::pty::copy_window_size(rustix::stdio::stdin(), master.as_fd());
            }
        }));
    }
    // Signals go to process 1 inside the sandbox, whose pid bubblewrap tells us.
    let target = match info {
        Some((read, write)) => {
            drop(write);
            let read = std::fs::File::from(read);
            tokio::time::timeout(
                std::time::Duration::from_secs(5),
                tokio::task::spawn_blocking(move || sandbox_pid(read)),
            )
            .await
            .ok()
            .and_then(Result::ok)
            .flatten()
        }
        None => None,
    };
    let code = forwarding.wait(child_pid, || target, false).await;
    if let Some(winch) = winch {
        winch.abort();
    }
    if let Some(relay) = relay {
        relay.finish();
    }
    drop(raw);
    Ok(code?)
}

/// Starts the command in a job object that kills it (and everything it
/// started) when `exec` ends, however `exec` ends, and returns its exit code.
/// No confinement on Windows: `exec` runs here only with `--no-isolate`.
/// Ctrl-C and Ctrl-Break reach the command through the console it shares;
/// `exec` outlives them to revoke the token.
#[cfg(windows)]
async fn run(
    sandbox: Option<&Sandbox>,
    command: &[String],
    env: &[(String, String)],
    unset: &[String],
) -> anyhow::Result<i32> {
    use windows_sys::Win32::System::Threading::CREATE_SUSPENDED;
    if sandbox.is_some() {
        bail!("`exec` cannot confine a command on Windows: run `exec --no-isolate`");
    }
    let job =
        crate::win32::Job::kill_on_close().context("creating a job object for the command")?;
    let mut cmd = tokio::process::Command::new(&command[0]);
    cmd.args(&command[1..]);
    // Suspended until it is in the job: nothing it starts escapes it.
    cmd.creation_flags(CREATE_SUSPENDED);
    for name in unset {
        cmd.env_remove(name);
    }
    for (key, value) in env {
        cmd.env(key, value);
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot run `{}`", command[0]))?;
    let adopted = match (child.raw_handle(), child.id()) {
        (Some(handle), Some(pid)) => job.adopt_suspended(handle, pid),
        _ => Err(std::io::Error::other("the command is gone")),
    };
    if let Err(e) = adopted {
        let _ = child.start_kill();
        bail!("cannot put `{}` in a job object: {e}", command[0]);
    }
    let mut ctrl_c = tokio::signal::windows::ctrl_c()?;
    let mut ctrl_break = tokio::signal::windows::ctrl_break()?;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status?,
            _ = ctrl_c.recv() => {}
            _ = ctrl_break.recv() => {}
        }
    };
    // Whatever the command left running goes with it.
    drop(job);
    // Windows exit codes are 32-bit; `code` is always there.
    Ok(status.code().unwrap_or(1))
}

/// A pipe whose ends are closed on exec.
#[cfg(unix)]
fn cloexec_pipe() -> std::io::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    #[cfg(any(target_os = "linux", target_os = "freebsd"))]
    {
        Ok(rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?)
    }
    #[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
    {
        let (read, write) = rustix::pipe::pipe()?;
        for fd in [&read, &write] {
            rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::CLOEXEC)?;
        }
        Ok((read, write))
    }
}

/// `child-pid` from bubblewrap's `--info-fd` JSON.
#[cfg(unix)]
fn sandbox_pid(info: std::fs::File) -> Option<rustix::process::Pid> {
    #[derive(serde::Deserialize)]
    struct Info {
        #[serde(rename = "child-pid")]
        child_pid: i32,
    }
    let info: Info = serde_json::from_reader(std::io::Read::take(info, 64 * 1024)).ok()?;
    rustix::process::Pid::from_raw(info.child_pid)
}

/// `GIT_CONFIG_*` variables that point git inside the command at this helper
/// for the service's hosts, so it uses the scoped token even without `configure`.
fn git_config_env(settings: &Settings) -> Vec<(String, String)> {
    // The command's git uses the token it is given, never the broker.
    let settings = Settings {
        broker: None,
        ..settings.clone()
    };
    let helper = match crate::cmd::configure::helper_line(&settings) {
        Ok(line) => line,
        Err(e) => {
            tracing::debug!("exec: not configuring git for the command: {e}");
            return Vec::new();
        }
    };
    let mut entries = Vec::new();
    for host in settings.service.git_hosts() {
        let section = format!("credential.{}://{host}", settings.service.scheme());
        entries.push((format!("{section}.helper"), String::new()));
        entries.push((format!("{section}.helper"), helper.clone()));
        entries.push((format!("{section}.useHttpPath"), "true".to_owned()));
    }
    let start: usize = std::env::var("GIT_CONFIG_COUNT")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let mut env = Vec::new();
    for (i, (key, value)) in entries.into_iter().enumerate() {
        env.push((format!("GIT_CONFIG_KEY_{}", start + i), key));
        env.push((format!("GIT_CONFIG_VALUE_{}", start + i), value));
    }
    env.push((
        "GIT_CONFIG_COUNT".to_owned(),
        (start + env.len() / 2).to_string(),
    ));
    env
}

#[cfg(all(test, windows))]
mod windows_tests {
    use super::*;

    fn run_now(command: &[&str]) -> anyhow::Result<i32> {
        let command: Vec<String> = command.iter().map(|s| (*s).to_owned()).collect();
        let env = vec![("GITHOSTED_TEST_VALUE".to_owned(), "seen".to_owned())];
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(run(None, &command, &env, &[]))
    }

    #[test]
    fn the_command_runs_in_the_job_and_its_exit_code_is_passed_on() {
        assert_eq!(run_now(&["cmd", "/c", "exit 7"]).unwrap(), 7);
        assert_eq!(
            run_now(&[
                "cmd",
                "/c",
                "if \"%GITHOSTED_TEST_VALUE%\"==\"seen\" (exit 0) else (exit 3)"
            ])
            .unwrap(),
            0
        );
    }

    #[test]
    fn exec_refuses_to_run_confined_here() {
        let err = Sandbox::prepare(Spec::default()).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("--no-isolate"), "{text}");
        assert!(!text.contains('\n'), "{text}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_renews_until_its_session_ends_and_then_says_so() {
        let mut session = Session {
            granted: "acme/app".into(),
            max_session_secs: Some(60),
            over: false,
        };
        assert_eq!(verdict(Event::Ask, &session), Verdict::Renew);
        let Verdict::Say(rejected) = verdict(Event::Rejected, &session) else {
            panic!("a rejected token is explained");
        };
        assert!(
            rejected.starts_with("githosted rejected exec's token for acme/app"),
            "{rejected}"
        );
        session.over = true;
        let over = "exec's session for acme/app ended after --max-session 60 s; run exec again (with a longer --max-session)";
        assert_eq!(verdict(Event::Ask, &session), Verdict::Say(over.into()));
        assert_eq!(
            verdict(Event::Rejected, &session),
            Verdict::Say(over.into())
        );
        // Without --max-session a session never ends.
        session.max_session_secs = None;
        assert_eq!(verdict(Event::Ask, &session), Verdict::Renew);
    }
}
