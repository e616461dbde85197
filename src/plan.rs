//! The one decision: for a repo that git (or `token`) asks about, where the
//! token comes from, under which cache key, whether the agent may be used, and
//! which workspace is declared for the parent. `exec` takes its parent from
//! [`parent`] too.
//!
//! [`get`] is a pure function of the settings, a snapshot of the environment
//! ([`Env`], read once by [`Env::read`]) and the target; the front, `get`,
//! `token` and `exec` all call it and none builds a cache key itself (models:
//! git's `credential_match`, one function deciding whether a stored credential
//! applies). Its table tests below cover options × environment × request.

use std::path::PathBuf;

use crate::cache::{Key, Origin};
use crate::minter::Grant;
use crate::secret::{Secret, TokenKind};
use crate::settings::{BrokerSettings, Settings};
use crate::target::Target;

/// What the process was started with that decides where tokens come from.
#[derive(Debug, Clone, Default)]
pub struct Env {
    /// `GITHOSTED_TOKEN`.
    pub token: Option<Secret>,
    /// With a broker: where the job's ID token comes from, and what
    /// identifies the job without asking anyone (`None`: nothing to read).
    pub job: Option<Job>,
}

/// A CI job's identity for the broker.
#[derive(Debug, Clone)]
pub struct Job {
    pub source: crate::id_token::Source,
    pub identity: Option<Secret>,
}

impl Env {
    /// The snapshot for `settings`: `GITHOSTED_TOKEN` (as taken at start) and,
    /// with `--broker`, the job's ID-token source and identity.
    pub fn read(settings: &Settings) -> Env {
        let job = settings.broker.as_ref().and_then(|broker| {
            let source = crate::id_token::Source::choose(
                broker.token_file.as_deref(),
                broker.token_env.as_deref(),
            )?;
            let identity = source.identity();
            Some(Job { source, identity })
        });
        Env {
            token: crate::keychain::env_token(),
            job,
        }
    }
}

/// Where the parent of a mint comes from.
#[derive(Debug, Clone)]
pub enum Parent {
    /// `GITHOSTED_TOKEN` (a `gw_`), and the workspace declared for it.
    Env {
        token: Secret,
        declared: Option<String>,
    },
    /// The keychain's entry, read on a miss; `--workspace`/`GITHOSTED_WORKSPACE`
    /// declares the workspace of a host-wide entry.
    Keychain { declared: Option<String> },
    /// A CI job's ID token, presented to the broker.
    Broker {
        broker: BrokerSettings,
        source: crate::id_token::Source,
    },
}

impl Parent {
    /// The grant for a mint, when the parent is at hand without I/O.
    pub fn grant(&self) -> Option<Grant> {
        match self {
            Parent::Env { token, declared } => Some(Grant::Parent {
                token: token.clone(),
                workspace: declared.clone(),
            }),
            Parent::Keychain { .. } | Parent::Broker { .. } => None,
        }
    }
}

/// The grant for a parent read from the keychain: the workspace its entry was
/// stored for (`login` records it), else the declared one.
pub fn stored_grant(parent: &crate::keychain::Parent, declared: Option<String>) -> Grant {
    let from_entry = match &parent.source {
        crate::keychain::Source::Keychain { account } => {
            account.split_once('/').map(|(_, ws)| ws.to_owned())
        }
        crate::keychain::Source::Env => None,
    };
    Grant::Parent {
        token: parent.token.clone(),
        workspace: from_entry.or(declared),
    }
}

/// What to do for one `get` (or `token`). Made once per process: its size
/// does not matter.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)]
pub enum Plan {
    /// Inside `exec`: ask its channel, nothing else.
    Exec(PathBuf),
    /// `GITHOSTED_TOKEN` holds a repo token: handed to git as it is.
    PassThrough(Secret),
    /// `GITHOSTED_TOKEN` holds no githosted token.
    NotAToken,
    /// `--broker` without any way to get the job's ID token.
    NoIdToken,
    /// A token from the agent's cache (`key`, when the origin can be keyed)
    /// or minted from `parent`.
    Token {
        key: Key,
        /// Whether the token may be cached: a broker job without an identity
        /// to key it by asks the broker every time.
        cacheable: bool,
        /// Use the agent at all.
        agent: bool,
        /// Look the key up first (not when the front has just missed it).
        lookup: bool,
        parent: Parent,
    },
}

/// Where the parent comes from, for a `get` or for `exec` (pure); `None`:
/// `--broker` without any way to get the job's ID token.
pub fn parent(settings: &Settings, env: &Env) -> Option<Parent> {
    if let Some(broker) = &settings.broker {
        let job = env.job.as_ref()?;
        return Some(Parent::Broker {
            broker: broker.clone(),
            source: job.source.clone(),
        });
    }
    Some(match &env.token {
        Some(token) => Parent::Env {
            token: token.clone(),
            declared: settings.declared_workspace.clone(),
        },
        None => Parent::Keychain {
            declared: settings.declared_workspace.clone(),
        },
    })
}

/// The plan for a token for `target` (pure).
pub fn get(settings: &Settings, env: &Env, target: &Target) -> Plan {
    if let Some(channel) = &settings.exec_channel {
        return Plan::Exec(channel.clone());
    }
    // A repo token is already narrow: it wins even over a broker.
    if let Some(token) = &env.token {
        match token.kind() {
            TokenKind::Repo => return Plan::PassThrough(token.clone()),
            TokenKind::Unknown if settings.broker.is_none() => return Plan::NotAToken,
            _ => {}
        }
    }
    let Some(parent) = parent(settings, env) else {
        return Plan::NoIdToken;
    };
    let (origin, cacheable) = match (&parent, &settings.broker) {
        (Parent::Broker { .. }, Some(broker)) => {
            match env.job.as_ref().and_then(|j| j.identity.as_ref()) {
                Some(identity) => (
                    Origin::broker(&broker.url, &broker.audience, identity),
                    true,
                ),
                None => (Origin::Keychain, false),
            }
        }
        (Parent::Env { token, .. }, _) => (Origin::env(token), true),
        _ => (Origin::Keychain, true),
    };
    let key = Key {
        api: settings.service.api_url().to_string(),
        workspace: target.workspace.clone(),
        repo: target.repo.clone(),
        permission: settings.permission,
        origin,
    };
    let agent = cacheable && !settings.no_agent;
    Plan::Token {
        key,
        cacheable,
        agent,
        lookup: agent && !settings.agent_missed,
        parent,
    }
}

/// The origin whose tokens a CI job's `erase` may forget: its own broker
/// tokens only (`None`: the job has no identity, so nothing of it was cached).
pub fn erase_origin(settings: &Settings, env: &Env) -> Option<Option<Origin>> {
    let Some(broker) = &settings.broker else {
        return Some(None);
    };
    let identity = env.job.as_ref()?.identity.as_ref()?;
    Some(Some(Origin::broker(
        &broker.url,
        &broker.audience,
        identity,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{BrokerRequested, Requested};
    use crate::token::Permission;

    fn settings(requested: Requested) -> Settings {
        Settings::new(
            &Requested {
                api_url: Some("http://127.0.0.1:8080".into()),
                ..requested
            },
            crate::settings::DEFAULT_TTL_SECS,
        )
        .unwrap()
    }

    fn broker() -> Requested {
        Requested {
            broker: BrokerRequested {
                url: Some("http://127.0.0.1:9000".into()),
                ..BrokerRequested::default()
            },
            ..Requested::default()
        }
    }

    fn target() -> Target {
        Target {
            workspace: "acme".into(),
            repo: "app".into(),
        }
    }

    fn env(token: Option<&str>, job: Option<Option<&str>>) -> Env {
        Env {
            token: token.map(|t| Secret::new(t.into())),
            job: job.map(|identity| Job {
                source: crate::id_token::Source::Env("ID".into()),
                identity: identity.map(|i| Secret::new(i.into())),
            }),
        }
    }

    /// One line per plan: what it is, the key's origin kind, agent, lookup.
    fn shown(plan: &Plan) -> String {
        match plan {
            Plan::Exec(_) => "exec".into(),
            Plan::PassThrough(t) => format!("pass {}", t.expose()),
            Plan::NotAToken => "not a token".into(),
            Plan::NoIdToken => "no id token".into(),
            Plan::Token {
                key,
                cacheable,
                agent,
                lookup,
                parent,
            } => format!(
                "{} {} cache={cacheable} agent={agent} lookup={lookup} {}",
                match &key.origin {
                    Origin::Keychain => "keychain",
                    Origin::Env { .. } => "env",
                    Origin::Broker { .. } => "broker",
                },
                key.permission.as_str(),
                match parent {
                    Parent::Env { declared, .. } => format!("parent=env:{declared:?}"),
                    Parent::Keychain { declared } => format!("parent=keychain:{declared:?}"),
                    Parent::Broker { .. } => "parent=broker".into(),
                }
            ),
        }
    }

    #[test]
    fn the_table() {
        let read = Requested {
            permission: Some(Permission::Read),
            ..Requested::default()
        };
        let no_agent = Requested {
            no_agent: true,
            ..Requested::default()
        };
        let missed = Requested {
            agent_missed: true,
            ..Requested::default()
        };
        let declared = Requested {
            workspace: Some("acme".into()),
            ..Requested::default()
        };
        let rows: Vec<(Requested, Env, &str)> = vec![
            // Laptop: the keychain, through the agent.
            (
                Requested::default(),
                env(None, None),
                "keychain write cache=true agent=true lookup=true parent=keychain:None",
            ),
            (
                read.clone(),
                env(None, None),
                "keychain read cache=true agent=true lookup=true parent=keychain:None",
            ),
            (
                no_agent,
                env(None, None),
                "keychain write cache=true agent=false lookup=false parent=keychain:None",
            ),
            // The front missed already: the core mints without a second lookup.
            (
                missed,
                env(Some("gw_ci"), None),
                "env write cache=true agent=true lookup=false parent=env:None",
            ),
            // CI with a workspace token, declared or not.
            (
                Requested::default(),
                env(Some("gw_ci"), None),
                "env write cache=true agent=true lookup=true parent=env:None",
            ),
            (
                declared,
                env(Some("gw_ci"), None),
                "env write cache=true agent=true lookup=true parent=env:Some(\"acme\")",
            ),
            // Narrow or wrong tokens in the environment.
            (
                Requested::default(),
                env(Some("gr_narrow"), None),
                "pass gr_narrow",
            ),
            (
                Requested::default(),
                env(Some("hunter2"), None),
                "not a token",
            ),
            // A broker job: keyed by its identity; without one, no cache.
            (
                broker(),
                env(None, Some(Some("job"))),
                "broker write cache=true agent=true lookup=true parent=broker",
            ),
            (
                broker(),
                env(None, Some(None)),
                "keychain write cache=false agent=false lookup=false parent=broker",
            ),
            (broker(), env(None, None), "no id token"),
            // A repo token still passes through before a broker.
            (broker(), env(Some("gr_narrow"), None), "pass gr_narrow"),
        ];
        for (requested, env, want) in rows {
            let plan = get(&settings(requested.clone()), &env, &target());
            assert_eq!(shown(&plan), want, "{requested:?}");
        }
    }

    #[test]
    fn inside_exec_only_the_channel() {
        let mut s = settings(Requested::default());
        s.exec_channel = Some("/tmp/x/socket".into());
        assert_eq!(
            shown(&get(&s, &env(Some("gw_ci"), None), &target())),
            "exec"
        );
    }

    #[test]
    fn the_key_never_holds_a_token_and_parents_never_share_keys() {
        let s = settings(Requested::default());
        let key = |e: Env| match get(&s, &e, &target()) {
            Plan::Token { key, .. } => key,
            other => panic!("{}", shown(&other)),
        };
        let a = key(env(Some("gw_one"), None));
        let b = key(env(Some("gw_two"), None));
        assert_ne!(a, b);
        assert!(!format!("{a:?}").contains("gw_one"));
        assert_ne!(a, key(env(None, None)));
    }

    #[test]
    fn erase_names_only_the_jobs_own_origin() {
        let s = settings(broker());
        assert!(matches!(
            erase_origin(&s, &env(None, Some(Some("job")))),
            Some(Some(Origin::Broker { .. }))
        ));
        assert!(erase_origin(&s, &env(None, Some(None))).is_none());
        let s = settings(Requested::default());
        assert!(matches!(erase_origin(&s, &env(None, None)), Some(None)));
    }
}
