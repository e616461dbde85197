//! The cache policy: what is cached, for how long, and what is minted when.
//!
//! Plain logic over a [`Clock`] and a [`Minter`], so it is tested without
//! sockets or servers; the agent ([`crate::agent`]) is a thin transport around it.
//!
//! - A token is filed under a [`Key`] (API, workspace, repo, permission, parent).
//! - It is handed out only while it has the minimum remaining lifetime: by
//!   default the smaller of 5 minutes and a quarter of its TTL (git's own check
//!   has no margin, so a token about to die must never reach it).
//! - Concurrent misses for one key wait for one exchange; a failed exchange is
//!   not cached.
//! - Erase drops the token whose value matches (compared in constant time), or
//!   everything for an API/workspace/repo when no value is given.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::watch;

use serde::{Deserialize, Serialize};

use crate::api::ApiError;
pub use crate::minter::{Grant, MintParams, Minter, Scope};
use crate::secret::Secret;
use crate::token::{Issued, Permission};

/// What a cached token is filed under. A read token never answers a write key,
/// and tokens minted from different parents never answer for each other.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Key {
    /// The API base URL.
    pub api: String,
    pub workspace: String,
    pub repo: String,
    pub permission: Permission,
    /// Where the parent token comes from.
    pub origin: Origin,
}

/// Where the parent of a cached token came from (part of its [`Key`]): tokens
/// of different origins never answer for each other. Nothing printed (a
/// fingerprint, `status`) lets another process name an env or broker origin.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Origin {
    /// The keychain's entry for the API host (and workspace).
    Keychain,
    /// `GITHOSTED_TOKEN`, by [`Secret::holder_id`]: a keyed hash only the
    /// holder of the token can compute.
    Env { holder: String },
    /// A CI job's broker: the broker, the audience, and a keyed hash of what
    /// identifies the job (see `id_token::Source::identity`).
    Broker {
        broker: String,
        audience: String,
        holder: String,
    },
}

impl Origin {
    /// The origin of tokens minted from `GITHOSTED_TOKEN` holding `token`.
    pub fn env(token: &Secret) -> Origin {
        Origin::Env {
            holder: token.holder_id(),
        }
    }

    /// The origin of the tokens a broker mints for a job with this identity.
    pub fn broker(broker: &url::Url, audience: &str, identity: &Secret) -> Origin {
        Origin::Broker {
            broker: broker.to_string(),
            audience: audience.to_owned(),
            holder: identity.holder_id(),
        }
    }
}

impl Key {
    /// What a mint for this key is for: its one repo.
    pub fn scope(&self) -> Scope {
        Scope {
            api: self.api.clone(),
            workspace: self.workspace.clone(),
            repos: vec![self.repo.clone()],
            permission: self.permission,
        }
    }
}

/// A token the agent forgot, to be revoked by the caller (who has the parent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dropped {
    pub id: String,
    pub workspace: String,
    pub repo: String,
    pub fingerprint: String,
    pub expires_at: i64,
    /// A broker minted it (revoke it through the broker, not with a workspace
    /// token). The key itself never leaves the agent.
    #[serde(default)]
    pub from_broker: bool,
}

/// One cached token, without its value.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EntryInfo {
    pub api: String,
    pub workspace: String,
    pub repo: String,
    pub permission: Permission,
    pub expires_at: i64,
    pub fingerprint: String,
    /// The broker that minted it (its URL; never what names the job).
    #[serde(default)]
    pub broker: Option<String>,
}

/// The default upper bound of the lifetime margin, in seconds.
pub const DEFAULT_MARGIN_SECS: i64 = 300;

/// Unix time: milliseconds, so the margin is kept exactly (a quarter of a
/// 30 s lifetime is 7.5 s, not 7 or 8).
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> i64;

    /// Whole seconds (rounded down).
    fn now(&self) -> i64 {
        self.now_ms().div_euclid(1000)
    }
}

/// The system clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }
}

/// While the API fails, a cached token inside the margin is still served if it
/// has at least this many seconds left.
pub const STALE_MIN_SECS: i64 = 10;

#[derive(Debug, Clone)]
struct Cached {
    token: Secret,
    id: String,
    expires_at: i64,
    /// Milliseconds between minting and expiry.
    lifetime_ms: i64,
}

type Outcome = Option<Result<Issued, ApiError>>;

impl Cached {
    fn issued(&self) -> Issued {
        Issued {
            token: self.token.clone(),
            expires_at: Some(self.expires_at),
        }
    }
}

#[derive(Default)]
struct State {
    cache: HashMap<Key, Cached>,
    inflight: HashMap<Key, watch::Receiver<Outcome>>,
    exchanges: u64,
}

/// The cache and its policy.
pub struct Cache<C, M> {
    clock: C,
    minter: M,
    state: Mutex<State>,
}

/// The minimum remaining lifetime, in milliseconds, for a token that lives
/// `lifetime_ms`: `min_ttl` seconds when given, else the smaller of 5 minutes
/// and a quarter of the lifetime (rounded up: the margin is never shortened).
pub fn margin_ms(lifetime_ms: i64, min_ttl: Option<u64>) -> i64 {
    match min_ttl {
        Some(secs) => i64::try_from(secs).unwrap_or(i64::MAX).saturating_mul(1000),
        None => (DEFAULT_MARGIN_SECS * 1000).min(lifetime_ms.max(0).saturating_add(3) / 4),
    }
}

/// How long a token minted at `minted_at_ms` (Unix milliseconds) lives when
/// it expires at `expires_at` (Unix seconds), in milliseconds.
pub fn lifetime_ms(expires_at: i64, minted_at_ms: i64) -> i64 {
    expires_at
        .saturating_mul(1000)
        .saturating_sub(minted_at_ms)
        .max(0)
}

/// Whether a token expiring at `expires_at` (Unix seconds), minted
/// `lifetime_ms` before it, may still be handed out at `now_ms`.
pub fn fit(expires_at: i64, lifetime_ms: i64, min_ttl: Option<u64>, now_ms: i64) -> bool {
    expires_at.saturating_mul(1000).saturating_sub(now_ms) >= margin_ms(lifetime_ms, min_ttl)
}

impl<C: Clock, M: Minter> Cache<C, M> {
    pub fn new(clock: C, minter: M) -> Self {
        Cache {
            clock,
            minter,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind: keep going.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A cached token for `key` with enough lifetime left.
    pub fn lookup(&self, key: &Key, min_ttl: Option<u64>) -> Option<Issued> {
        fresh(&self.state(), key, min_ttl, self.clock.now_ms())
    }

    /// A token for `key`: from the cache if fit, else one exchange shared by all
    /// who ask at the same time.
    pub async fn get_or_mint(
        &self,
        key: &Key,
        min_ttl: Option<u64>,
        params: &MintParams,
        grant: Grant,
    ) -> Result<Issued, ApiError> {
        loop {
            enum Next {
                Wait(watch::Receiver<Outcome>),
                Mint(watch::Sender<Outcome>),
            }
            let next = {
                let mut state = self.state();
                if let Some(issued) = fresh(&state, key, min_ttl, self.clock.now_ms()) {
                    return Ok(issued);
                }
                match state.inflight.get(key) {
                    Some(rx) => Next::Wait(rx.clone()),
                    None => {
                        let (tx, rx) = watch::channel(None);
                        state.inflight.insert(key.clone(), rx);
                        Next::Mint(tx)
                    }
                }
            };
            let mut waiting = match next {
                Next::Mint(tx) => return self.mint_now(key, params, grant, tx).await,
                Next::Wait(rx) => rx,
            };
            // Someone else is minting this key: wait for their outcome.
            match waiting.wait_for(Option::is_some).await {
                Ok(outcome) => {
                    if let Some(result) = outcome.clone() {
                        return result;
                    }
                }
                // The minting task went away without an outcome: try ourselves.
                Err(_) => continue,
            }
        }
    }

    async fn mint_now(
        &self,
        key: &Key,
        params: &MintParams,
        grant: Grant,
        tx: watch::Sender<Outcome>,
    ) -> Result<Issued, ApiError> {
        // Remove the in-flight marker even if this future is dropped midway.
        struct Inflight<'a>(&'a Mutex<State>, &'a Key);
        impl Drop for Inflight<'_> {
            fn drop(&mut self) {
                let mut state = self.0.lock().unwrap_or_else(|p| p.into_inner());
                state.inflight.remove(self.1);
            }
        }
        let _marker = Inflight(&self.state, key);

        let minted_at_ms = self.clock.now_ms();
        let result = self.minter.mint(&key.scope(), params, &grant).await;
        drop(grant);
        let outcome = match result {
            Ok(minted) => {
                let issued = Issued {
                    token: minted.token.clone(),
                    expires_at: Some(minted.expires_at),
                };
                let mut state = self.state();
                state.exchanges += 1;
                state.cache.insert(
                    key.clone(),
                    Cached {
                        token: minted.token,
                        id: minted.record.id,
                        expires_at: minted.expires_at,
                        lifetime_ms: lifetime_ms(minted.expires_at, minted_at_ms),
                    },
                );
                Ok(issued)
            }
            Err(e) if e.is_transient() => {
                // The API is down: a cached token that still lives beats none.
                let state = self.state();
                match state.cache.get(key) {
                    Some(cached)
                        if cached.expires_at.saturating_sub(self.clock.now()) >= STALE_MIN_SECS =>
                    {
                        tracing::warn!(token = %cached.token, "the API failed ({e}); serving a cached token close to expiry");
                        Ok(cached.issued())
                    }
                    _ => Err(e),
                }
            }
            Err(e) => Err(e),
        };
        tx.send_replace(Some(outcome.clone()));
        outcome
    }

    /// Forgets tokens: the one equal to `password` (within `api`), or, without
    /// a password, all for `api` and the optional workspace and repo; only
    /// those minted from `origin`, when given (a CI job's broker tokens).
    pub fn erase(
        &self,
        api: &str,
        workspace: Option<&str>,
        repo: Option<&str>,
        password: Option<&Secret>,
        origin: Option<&Origin>,
    ) -> Vec<Dropped> {
        self.remove_where(|key, cached| {
            key.api == api
                && origin.is_none_or(|o| *o == key.origin)
                && match password {
                    Some(password) => cached.token.ct_eq(password.expose()),
                    None => {
                        workspace.is_none_or(|ws| ws == key.workspace)
                            && repo.is_none_or(|r| r == key.repo)
                    }
                }
        })
    }

    /// Drops entries whose token has expired; returns how many.
    pub fn purge_expired(&self) -> usize {
        let now = self.clock.now();
        self.remove_where(|_, cached| cached.expires_at <= now)
            .len()
    }

    fn remove_where(&self, mut doomed: impl FnMut(&Key, &Cached) -> bool) -> Vec<Dropped> {
        let mut state = self.state();
        let keys: Vec<Key> = state
            .cache
            .iter()
            .filter(|(k, c)| doomed(k, c))
            .map(|(k, _)| k.clone())
            .collect();
        keys.into_iter()
            .filter_map(|key| {
                let cached = state.cache.remove(&key)?;
                Some(Dropped {
                    id: cached.id,
                    fingerprint: cached.token.fingerprint(),
                    workspace: key.workspace,
                    repo: key.repo,
                    expires_at: cached.expires_at,
                    from_broker: matches!(key.origin, Origin::Broker { .. }),
                })
            })
            .collect()
    }

    /// Whether nothing is cached and nothing is being minted.
    pub fn is_idle(&self) -> bool {
        let state = self.state();
        state.cache.is_empty() && state.inflight.is_empty()
    }

    /// Successful exchanges so far.
    pub fn exchanges(&self) -> u64 {
        self.state().exchanges
    }

    /// The cached entries, without their values.
    pub fn entries(&self) -> Vec<EntryInfo> {
        let state = self.state();
        let mut entries: Vec<EntryInfo> = state
            .cache
            .iter()
            .map(|(key, cached)| EntryInfo {
                api: key.api.clone(),
                workspace: key.workspace.clone(),
                repo: key.repo.clone(),
                permission: key.permission,
                expires_at: cached.expires_at,
                fingerprint: cached.token.fingerprint(),
                broker: match &key.origin {
                    Origin::Broker { broker, .. } => Some(broker.clone()),
                    Origin::Keychain | Origin::Env { .. } => None,
                },
            })
            .collect();
        entries
            .sort_by(|a, b| (&a.api, &a.workspace, &a.repo).cmp(&(&b.api, &b.workspace, &b.repo)));
        entries
    }

    /// Forgets everything (zeroizing the tokens).
    pub fn clear(&self) {
        self.state().cache.clear();
    }
}

fn fresh(state: &State, key: &Key, min_ttl: Option<u64>, now_ms: i64) -> Option<Issued> {
    let cached = state.cache.get(key)?;
    fit(cached.expires_at, cached.lifetime_ms, min_ttl, now_ms).then(|| cached.issued())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::api::{Code, Minted, TokenRecord};

    #[derive(Clone, Default)]
    struct FakeClock(Arc<AtomicI64>);
    impl Clock for FakeClock {
        fn now_ms(&self) -> i64 {
            self.0.load(Ordering::SeqCst)
        }
    }
    impl FakeClock {
        fn advance(&self, secs: i64) {
            self.advance_ms(secs * 1000);
        }
        fn advance_ms(&self, ms: i64) {
            self.0.fetch_add(ms, Ordering::SeqCst);
        }
    }

    /// Mints `gr_<n>` tokens living `ttl` seconds from the fake clock's now;
    /// fails while `fail` is set; takes `delay` to answer.
    #[derive(Clone, Default)]
    struct FakeMinter {
        clock: FakeClock,
        calls: Arc<AtomicUsize>,
        fail: Arc<std::sync::atomic::AtomicBool>,
        delay_ms: u64,
    }
    impl Minter for FakeMinter {
        async fn mint(
            &self,
            _scope: &Scope,
            params: &MintParams,
            grant: &Grant,
        ) -> Result<Minted, ApiError> {
            assert!(
                matches!(grant, Grant::Parent { token, .. } if token.expose().starts_with("gw_"))
            );
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(self.delay_ms)).await;
            if self.fail.load(Ordering::SeqCst) {
                return Err(ApiError::Status {
                    host: "h".into(),
                    status: 503,
                    code: Code::Unavailable,
                    message: "down".into(),
                    retry_after: None,
                });
            }
            let expires_at = self.clock.now() + params.ttl as i64;
            Ok(Minted {
                token: Secret::new(format!("gr_{n}")),
                record: TokenRecord {
                    id: format!("tk_{n}"),
                    ..TokenRecord::default()
                },
                expires_at,
            })
        }
    }

    fn key(repo: &str, permission: Permission) -> Key {
        Key {
            api: "http://127.0.0.1:1/".into(),
            workspace: "acme".into(),
            repo: repo.into(),
            permission,
            origin: Origin::Keychain,
        }
    }

    fn params(ttl: u64) -> MintParams {
        MintParams {
            ttl,
            subject: "test".into(),
            timeout: Duration::from_secs(20),
            network: crate::net::Network::default(),
        }
    }

    fn parent() -> Grant {
        Grant::Parent {
            token: Secret::new("gw_parent".into()),
            workspace: None,
        }
    }

    fn broker(delay_ms: u64) -> (Arc<Cache<FakeClock, FakeMinter>>, FakeClock, FakeMinter) {
        let clock = FakeClock::default();
        clock.advance(1_000_000);
        let minter = FakeMinter {
            clock: clock.clone(),
            delay_ms,
            ..FakeMinter::default()
        };
        (
            Arc::new(Cache::new(clock.clone(), minter.clone())),
            clock,
            minter,
        )
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn margin_is_the_smaller_of_five_minutes_and_a_quarter() {
        assert_eq!(margin_ms(3_600_000, None), 300_000);
        assert_eq!(margin_ms(600_000, None), 150_000);
        assert_eq!(margin_ms(600_000, Some(30)), 30_000);
        assert_eq!(
            margin_ms(30_001, None),
            7_501,
            "rounded up, never shortened"
        );
    }

    /// `--ttl 30` (a 7.5 s margin), minted 0.6 s into a second: a token with
    /// 6.5 s left is never handed out; with whole seconds it was (the clock
    /// read 23 s at 23.5 s, leaving "7 s", equal to a margin of 7).
    #[test]
    fn the_margin_is_kept_to_the_millisecond() {
        let (broker, clock, _) = broker(0);
        clock.advance_ms(600);
        let k = key("app", Permission::Write);
        rt().block_on(broker.get_or_mint(&k, None, &params(30), parent()))
            .unwrap();
        // Expires at 30.000 s, minted at 0.600 s: lifetime 29.4 s, margin 7.35 s.
        clock.advance_ms(22_650 - 600);
        assert!(broker.lookup(&k, None).is_some(), "exactly at the margin");
        clock.advance_ms(1);
        assert!(broker.lookup(&k, None).is_none(), "1 ms inside the margin");
        clock.advance_ms(23_500 - 22_651);
        assert!(broker.lookup(&k, None).is_none(), "6.5 s left");
    }

    #[test]
    fn a_token_is_served_until_the_margin_then_reminted() {
        let (broker, clock, minter) = broker(0);
        let k = key("app", Permission::Write);
        rt().block_on(async {
            let first = broker
                .get_or_mint(&k, None, &params(3600), parent())
                .await
                .unwrap();
            assert_eq!(
                broker.lookup(&k, None).unwrap().token.expose(),
                first.token.expose()
            );
            clock.advance(3600 - 300);
            assert_eq!(
                broker.lookup(&k, None).unwrap().token.expose(),
                first.token.expose(),
                "exactly at the margin"
            );
            clock.advance(1);
            assert!(broker.lookup(&k, None).is_none(), "inside the margin");
            let second = broker
                .get_or_mint(&k, None, &params(3600), parent())
                .await
                .unwrap();
            assert_ne!(second.token.expose(), first.token.expose());
            assert_eq!(minter.calls.load(Ordering::SeqCst), 2);
        });
    }

    #[test]
    fn min_ttl_overrides_the_margin() {
        let (broker, clock, _) = broker(0);
        let k = key("app", Permission::Write);
        rt().block_on(broker.get_or_mint(&k, None, &params(3600), parent()))
            .unwrap();
        clock.advance(3000);
        assert!(broker.lookup(&k, Some(600)).is_some());
        assert!(broker.lookup(&k, Some(601)).is_none());
    }

    #[test]
    fn read_tokens_never_answer_write_keys() {
        let (broker, _, _) = broker(0);
        rt().block_on(broker.get_or_mint(
            &key("app", Permission::Read),
            None,
            &params(3600),
            parent(),
        ))
        .unwrap();
        assert!(
            broker
                .lookup(&key("app", Permission::Write), None)
                .is_none()
        );
        assert!(
            broker
                .lookup(&key("other", Permission::Read), None)
                .is_none()
        );
        let mut other_parent = key("app", Permission::Read);
        other_parent.origin = Origin::Env {
            holder: "1234".into(),
        };
        assert!(broker.lookup(&other_parent, None).is_none());
    }

    #[test]
    fn concurrent_misses_share_one_exchange() {
        let (broker, _, minter) = broker(50);
        let k = key("app", Permission::Write);
        let tokens = rt().block_on(async {
            let tasks: Vec<_> = (0..64)
                .map(|_| {
                    let broker = broker.clone();
                    let k = k.clone();
                    tokio::spawn(async move {
                        broker.get_or_mint(&k, None, &params(3600), parent()).await
                    })
                })
                .collect();
            let mut tokens = Vec::new();
            for t in tasks {
                tokens.push(t.await.unwrap().unwrap().token);
            }
            tokens
        });
        assert_eq!(minter.calls.load(Ordering::SeqCst), 1);
        assert!(tokens.iter().all(|t| t.ct_eq(tokens[0].expose())));
    }

    #[test]
    fn a_failed_exchange_is_shared_but_not_cached() {
        let (broker, _, minter) = broker(20);
        minter.fail.store(true, Ordering::SeqCst);
        let k = key("app", Permission::Write);
        rt().block_on(async {
            let p = params(3600);
            let a = broker.get_or_mint(&k, None, &p, parent());
            let b = broker.get_or_mint(&k, None, &p, parent());
            let (a, b) = tokio::join!(a, b);
            assert!(a.is_err() && b.is_err());
            assert_eq!(minter.calls.load(Ordering::SeqCst), 1);
            assert!(broker.lookup(&k, None).is_none());
            assert!(broker.is_idle());
            minter.fail.store(false, Ordering::SeqCst);
            assert!(
                broker
                    .get_or_mint(&k, None, &params(3600), parent())
                    .await
                    .is_ok()
            );
        });
    }

    #[test]
    fn while_the_api_is_down_a_cached_token_with_life_left_is_served() {
        let (broker, clock, minter) = broker(0);
        let k = key("app", Permission::Write);
        let first = rt()
            .block_on(broker.get_or_mint(&k, None, &params(3600), parent()))
            .unwrap();
        clock.advance(3600 - 60);
        minter.fail.store(true, Ordering::SeqCst);
        let served = rt()
            .block_on(broker.get_or_mint(&k, None, &params(3600), parent()))
            .unwrap();
        assert_eq!(served.token.expose(), first.token.expose());
        clock.advance(60 - STALE_MIN_SECS + 1);
        assert!(
            rt().block_on(broker.get_or_mint(&k, None, &params(3600), parent()))
                .is_err()
        );
    }

    #[test]
    fn erase_by_value_drops_only_that_token() {
        let (broker, _, _) = broker(0);
        let (app, lib) = (key("app", Permission::Write), key("lib", Permission::Write));
        let issued = rt().block_on(async {
            broker
                .get_or_mint(&lib, None, &params(3600), parent())
                .await
                .unwrap();
            broker
                .get_or_mint(&app, None, &params(3600), parent())
                .await
                .unwrap()
        });
        assert!(
            broker
                .erase(
                    &app.api,
                    None,
                    None,
                    Some(&Secret::new("gr_other".into())),
                    None
                )
                .is_empty()
        );
        assert!(
            broker
                .erase("http://elsewhere/", None, None, Some(&issued.token), None)
                .is_empty()
        );
        let dropped = broker.erase(&app.api, None, None, Some(&issued.token), None);
        assert_eq!(dropped.len(), 1);
        assert_eq!(dropped[0].repo, "app");
        assert!(broker.lookup(&app, None).is_none());
        assert!(broker.lookup(&lib, None).is_some());
    }

    #[test]
    fn erase_without_value_drops_by_host_and_path() {
        let (broker, _, _) = broker(0);
        rt().block_on(async {
            for repo in ["app", "lib"] {
                for p in [Permission::Read, Permission::Write] {
                    broker
                        .get_or_mint(&key(repo, p), None, &params(3600), parent())
                        .await
                        .unwrap();
                }
            }
        });
        let api = key("app", Permission::Read).api;
        assert_eq!(
            broker
                .erase(&api, Some("acme"), Some("lib"), None, None)
                .len(),
            2
        );
        assert_eq!(broker.entries().len(), 2);
        // Only a given parent's, when one is named.
        assert!(
            broker
                .erase(
                    &api,
                    None,
                    None,
                    None,
                    Some(&Origin::Env { holder: "x".into() })
                )
                .is_empty()
        );
        assert_eq!(
            broker
                .erase(&api, None, None, None, Some(&Origin::Keychain))
                .len(),
            2
        );
        assert!(broker.is_idle());
    }

    /// A write token for `app`, living `ttl` seconds.
    fn mint_app(broker: &Cache<FakeClock, FakeMinter>, ttl: u64) -> Issued {
        rt().block_on(broker.get_or_mint(
            &key("app", Permission::Write),
            None,
            &params(ttl),
            parent(),
        ))
        .unwrap()
    }

    #[test]
    fn expired_entries_are_purged() {
        let (broker, clock, _) = broker(0);
        mint_app(&broker, 60);
        assert_eq!(broker.purge_expired(), 0);
        clock.advance(60);
        assert_eq!(broker.purge_expired(), 1);
        assert!(broker.is_idle());
    }

    #[test]
    fn entries_show_fingerprints_only() {
        let (broker, _, _) = broker(0);
        mint_app(&broker, 60);
        let shown = format!("{:?}", broker.entries());
        assert!(!shown.contains("gr_0\""), "{shown}");
        assert!(shown.contains("gr_…"), "{shown}");
    }
}
