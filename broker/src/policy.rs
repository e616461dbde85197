//! The broker's policy: which OIDC identities may have which repo tokens.
//!
//! A TOML file of `[[allow]]` rules, deny by default, first match wins:
//!
//! ```toml
//! [[allow]]
//! issuer = "https://token.actions.githubusercontent.com"
//! subject = "repo:acme-org/app:ref:refs/heads/main"   # or subject_pattern = "^repo:acme-org/.*$"
//! claims = { repository_owner = "acme-org" }          # exact, or "^…$" patterns
//! repos = ["acme/app", "acme/lib-*"]                  # githosted WS/REPO, globs
//! permission = "write"                                # the most it grants
//! max_ttl_seconds = 3600                              # default 3600, at most 86400
//! ```
//!
//! Keys and values are checked strictly: an unknown key, an unknown
//! permission, a bad pattern stop the load with the file's line and column.
//! Patterns are anchored whether or not they say so.

use std::collections::BTreeMap;
use std::path::Path;

use regex::Regex;
use serde::Deserialize;
use toml::Spanned;

use crate::token::Permission;

/// A rule's TTL when it names none.
pub const DEFAULT_MAX_TTL_SECS: u64 = 3600;
/// The longest TTL a rule may grant (the API's own maximum).
pub const MAX_TTL_SECS: u64 = 86_400;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default)]
    allow: Vec<RawRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    issuer: Spanned<String>,
    subject: Option<Spanned<String>>,
    subject_pattern: Option<Spanned<String>>,
    #[serde(default)]
    claims: BTreeMap<String, Spanned<String>>,
    repos: Spanned<Vec<Spanned<String>>>,
    permission: Spanned<RawPermission>,
    max_ttl_seconds: Option<Spanned<u64>>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum RawPermission {
    Read,
    Write,
}

/// A string matched exactly, or by an anchored regular expression.
#[derive(Debug, Clone)]
pub enum Matcher {
    Exact(String),
    Pattern(Regex),
}

impl Matcher {
    pub fn matches(&self, value: &str) -> bool {
        match self {
            Matcher::Exact(s) => s == value,
            Matcher::Pattern(r) => r.is_match(value),
        }
    }

    fn describe(&self) -> String {
        match self {
            Matcher::Exact(s) => format!("{s:?}"),
            Matcher::Pattern(r) => format!("pattern {:?}", r.as_str()),
        }
    }
}

/// One `[[allow]]` rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// 1-based, in file order.
    pub number: usize,
    pub issuer: String,
    pub subject: Matcher,
    pub claims: Vec<(String, Matcher)>,
    pub repos: Vec<glob::Pattern>,
    pub permission: Permission,
    pub max_ttl_seconds: u64,
}

/// What a request asks for, from whom.
pub struct Ask<'a> {
    pub issuer: &'a str,
    pub subject: &'a str,
    /// The ID token's claims.
    pub claims: &'a serde_json::Map<String, serde_json::Value>,
    /// `WS/REPO`.
    pub repo: &'a str,
    pub permission: Permission,
}

/// Which part of a request no rule allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dimension {
    Subject,
    Repo,
    Permission,
}

impl Dimension {
    pub fn as_str(self) -> &'static str {
        match self {
            Dimension::Subject => "subject",
            Dimension::Repo => "repo",
            Dimension::Permission => "permission",
        }
    }
}

/// A refusal: the dimension, and one line saying why.
#[derive(Debug, Clone)]
pub struct Denied {
    pub dimension: Dimension,
    pub message: String,
}

/// The policy: rules in file order.
#[derive(Debug, Clone)]
pub struct Policy {
    pub rules: Vec<Rule>,
}

/// A policy file that cannot be used: where and why, in one line.
#[derive(Debug, thiserror::Error)]
#[error("{path}:{line}:{column}: {message}")]
pub struct PolicyError {
    pub path: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl Policy {
    /// Reads and checks a policy file.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|e| PolicyError {
            path: path.display().to_string(),
            line: 0,
            column: 0,
            message: format!("cannot read the policy: {e}"),
        })?;
        Policy::parse(&text, &path.display().to_string())
    }

    /// Parses and checks policy text; `path` names it in errors.
    pub fn parse(text: &str, path: &str) -> Result<Policy, PolicyError> {
        let at = |span: std::ops::Range<usize>, message: String| {
            let (line, column) = line_column(text, span.start);
            PolicyError {
                path: path.to_owned(),
                line,
                column,
                message,
            }
        };
        let raw: RawPolicy = toml::from_str(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            at(span, e.message().trim().to_owned())
        })?;
        let mut rules = Vec::with_capacity(raw.allow.len());
        for (i, r) in raw.allow.into_iter().enumerate() {
            let issuer = r.issuer.get_ref().clone();
            if !crate::target::is_secure_url(&issuer) {
                return Err(at(
                    r.issuer.span(),
                    format!(
                        "issuer {issuer:?} must be an https URL (http only on 127.0.0.1 or localhost)"
                    ),
                ));
            }
            let subject = match (r.subject, r.subject_pattern) {
                (Some(s), None) => Matcher::Exact(s.into_inner()),
                (None, Some(p)) => {
                    Matcher::Pattern(anchored(p.get_ref()).map_err(|m| at(p.span(), m))?)
                }
                (Some(s), Some(_)) => {
                    return Err(at(
                        s.span(),
                        "give `subject` or `subject_pattern`, not both".into(),
                    ));
                }
                (None, None) => {
                    return Err(at(
                        r.issuer.span(),
                        "this rule needs `subject` or `subject_pattern` (use subject_pattern = \"^.*$\" to allow any)".into(),
                    ));
                }
            };
            let mut claims = Vec::new();
            for (name, value) in r.claims {
                let matcher = if value.get_ref().starts_with('^') {
                    Matcher::Pattern(anchored(value.get_ref()).map_err(|m| at(value.span(), m))?)
                } else {
                    Matcher::Exact(value.into_inner())
                };
                claims.push((name, matcher));
            }
            let repos_span = r.repos.span();
            let mut repos = Vec::new();
            for repo in r.repos.into_inner() {
                let text = repo.get_ref();
                if text.split('/').count() != 2 || text.starts_with('/') || text.ends_with('/') {
                    return Err(at(
                        repo.span(),
                        format!("repo {text:?} is not WS/REPO (globs allowed: \"acme/lib-*\")"),
                    ));
                }
                repos.push(
                    glob::Pattern::new(text)
                        .map_err(|e| at(repo.span(), format!("repo {text:?}: {e}")))?,
                );
            }
            if repos.is_empty() {
                return Err(at(
                    repos_span,
                    "`repos` is empty: the rule would allow nothing".into(),
                ));
            }
            let max_ttl_seconds = match r.max_ttl_seconds {
                None => DEFAULT_MAX_TTL_SECS,
                Some(t) if (60..=MAX_TTL_SECS).contains(t.get_ref()) => *t.get_ref(),
                Some(t) => {
                    return Err(at(
                        t.span(),
                        format!("max_ttl_seconds must be between 60 and {MAX_TTL_SECS}"),
                    ));
                }
            };
            rules.push(Rule {
                number: i.saturating_add(1),
                issuer,
                subject,
                claims,
                repos,
                permission: match r.permission.into_inner() {
                    RawPermission::Read => Permission::Read,
                    RawPermission::Write => Permission::Write,
                },
                max_ttl_seconds,
            });
        }
        Ok(Policy { rules })
    }

    /// The issuers the policy trusts: exactly those its rules name.
    pub fn issuers(&self) -> Vec<String> {
        let mut issuers: Vec<String> = self.rules.iter().map(|r| r.issuer.clone()).collect();
        issuers.sort();
        issuers.dedup();
        issuers
    }

    /// The first rule that allows `ask`, or why none does (from the rule
    /// that came closest: subject, then repo, then permission).
    pub fn decide(&self, ask: &Ask<'_>) -> Result<&Rule, Denied> {
        let mut closest: Option<(Dimension, &Rule)> = None;
        for rule in &self.rules {
            match rule.check(ask) {
                Ok(()) => return Ok(rule),
                Err(dimension) => {
                    if closest.is_none_or(|(d, _)| rank(dimension) > rank(d)) {
                        closest = Some((dimension, rule));
                    }
                }
            }
        }
        Err(match closest {
            None => Denied {
                dimension: Dimension::Subject,
                message: "the policy has no rules".into(),
            },
            Some((Dimension::Subject, _)) => Denied {
                dimension: Dimension::Subject,
                message: format!("no rule allows subject {:?} of {}", ask.subject, ask.issuer),
            },
            Some((Dimension::Repo, rule)) => Denied {
                dimension: Dimension::Repo,
                message: format!(
                    "rule {} allows this subject but not repo {} (it allows {})",
                    rule.number,
                    ask.repo,
                    rule.repos_text()
                ),
            },
            Some((Dimension::Permission, rule)) => Denied {
                dimension: Dimension::Permission,
                message: format!(
                    "rule {} allows {} for this subject, not {}",
                    rule.number,
                    rule.permission.as_str(),
                    ask.permission.as_str()
                ),
            },
        })
    }
}

/// githosted slugs: letters, digits, `-`, `_`, `.`, not starting with a dot.
pub fn is_slug(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('.')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// A request's `WS/REPO`, when it is two slugs and the repo is not a repo id
/// (`rp_…`: the API takes those too, and policy globs would not see what they name).
pub fn slug_request(text: &str) -> Option<(&str, &str)> {
    let (workspace, repo) = text.split_once('/')?;
    (is_slug(workspace) && is_slug(repo) && !repo.starts_with("rp_")).then_some((workspace, repo))
}

impl Policy {
    /// Whether any rule allows this identity (issuer, subject and claims),
    /// whatever the repo and permission.
    pub fn knows(
        &self,
        issuer: &str,
        subject: &str,
        claims: &serde_json::Map<String, serde_json::Value>,
    ) -> bool {
        self.rules
            .iter()
            .any(|r| r.identity_matches(issuer, subject, claims))
    }

    /// Rules naming a workspace other than `workspace`: (rule number, pattern).
    pub fn foreign_repos(&self, workspace: &str) -> Vec<(usize, String)> {
        let mut out = Vec::new();
        for rule in &self.rules {
            for pattern in &rule.repos {
                let ws = pattern.as_str().split('/').next().unwrap_or_default();
                if ws != workspace {
                    out.push((rule.number, pattern.as_str().to_owned()));
                }
            }
        }
        out
    }
}

fn rank(d: Dimension) -> u8 {
    match d {
        Dimension::Subject => 0,
        Dimension::Repo => 1,
        Dimension::Permission => 2,
    }
}

impl Rule {
    fn identity_matches(
        &self,
        issuer: &str,
        subject: &str,
        claims: &serde_json::Map<String, serde_json::Value>,
    ) -> bool {
        if self.issuer != issuer || !self.subject.matches(subject) {
            return false;
        }
        self.claims.iter().all(|(name, matcher)| {
            let value = match claims.get(name) {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(v @ (serde_json::Value::Bool(_) | serde_json::Value::Number(_))) => {
                    v.to_string()
                }
                _ => return false,
            };
            matcher.matches(&value)
        })
    }

    fn check(&self, ask: &Ask<'_>) -> Result<(), Dimension> {
        if !self.identity_matches(ask.issuer, ask.subject, ask.claims) {
            return Err(Dimension::Subject);
        }
        let options = glob::MatchOptions {
            case_sensitive: true,
            require_literal_separator: true,
            require_literal_leading_dot: true,
        };
        if !self.repos.iter().any(|p| p.matches_with(ask.repo, options)) {
            return Err(Dimension::Repo);
        }
        if ask.permission == Permission::Write && self.permission == Permission::Read {
            return Err(Dimension::Permission);
        }
        Ok(())
    }

    fn repos_text(&self) -> String {
        self.repos
            .iter()
            .map(|p| p.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The rule in one line, for `broker check`.
    pub fn explain(&self) -> String {
        let mut claims = String::new();
        for (name, m) in &self.claims {
            claims.push_str(&format!(", {name} {}", m.describe()));
        }
        format!(
            "rule {}: subject {} from {}{claims} may get {} tokens for {} (up to {} s)",
            self.number,
            self.subject.describe(),
            self.issuer,
            match self.permission {
                Permission::Read => "read",
                Permission::Write => "read or write",
            },
            self.repos_text(),
            self.max_ttl_seconds
        )
    }
}

/// A pattern anchored at both ends, whatever it says.
fn anchored(pattern: &str) -> Result<Regex, String> {
    let inner = pattern.strip_prefix('^').unwrap_or(pattern);
    let inner = inner.strip_suffix('$').unwrap_or(inner);
    Regex::new(&format!("^(?:{inner})$")).map_err(|e| {
        let e = e.to_string();
        let last = e.lines().last().unwrap_or("invalid").trim().to_owned();
        format!("pattern {pattern:?}: {last}")
    })
}

/// 1-based line and column of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset.min(text.len())).unwrap_or("");
    let line = before.matches('\n').count().saturating_add(1);
    let column = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        .saturating_add(1);
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GH: &str = "https://token.actions.githubusercontent.com";

    fn policy(text: &str) -> Result<Policy, PolicyError> {
        Policy::parse(text, "policy.toml")
    }

    fn claims(owner: &str) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::new();
        m.insert("repository_owner".into(), owner.into());
        m
    }

    const RULES: &str = r#"
[[allow]]
issuer = "https://token.actions.githubusercontent.com"
subject_pattern = "repo:acme-org/.*"
claims = { repository_owner = "acme-org" }
repos = ["acme/app", "acme/lib-*"]
permission = "read"

[[allow]]
issuer = "https://token.actions.githubusercontent.com"
subject = "repo:acme-org/app:ref:refs/heads/main"
repos = ["acme/app"]
permission = "write"
max_ttl_seconds = 600
"#;

    fn ask<'a>(
        subject: &'a str,
        claims: &'a serde_json::Map<String, serde_json::Value>,
        repo: &'a str,
        permission: Permission,
    ) -> Ask<'a> {
        Ask {
            issuer: GH,
            subject,
            claims,
            repo,
            permission,
        }
    }

    #[test]
    fn first_match_wins_and_each_refusal_names_its_dimension() {
        let p = policy(RULES).unwrap();
        let c = claims("acme-org");
        let main = "repo:acme-org/app:ref:refs/heads/main";
        assert_eq!(
            p.decide(&ask(main, &c, "acme/app", Permission::Read))
                .unwrap()
                .number,
            1
        );
        let w = p
            .decide(&ask(main, &c, "acme/app", Permission::Write))
            .unwrap();
        assert_eq!((w.number, w.max_ttl_seconds), (2, 600));
        assert_eq!(
            p.decide(&ask(main, &c, "acme/lib-x", Permission::Read))
                .unwrap()
                .number,
            1
        );
        // Globs do not cross the slash; patterns are anchored.
        let d = p
            .decide(&ask(main, &c, "acme/lib-x/y", Permission::Read))
            .unwrap_err();
        assert_eq!(d.dimension, Dimension::Repo, "{}", d.message);
        let d = p
            .decide(&ask("xrepo:acme-org/app", &c, "acme/app", Permission::Read))
            .unwrap_err();
        assert_eq!(d.dimension, Dimension::Subject, "{}", d.message);
        let other = claims("evil-org");
        let d = p
            .decide(&ask(
                "repo:acme-org/x",
                &other,
                "acme/app",
                Permission::Read,
            ))
            .unwrap_err();
        assert_eq!(d.dimension, Dimension::Subject);
        let d = p
            .decide(&ask("repo:acme-org/x", &c, "acme/lib-1", Permission::Write))
            .unwrap_err();
        assert_eq!(d.dimension, Dimension::Permission, "{}", d.message);
        assert!(d.message.contains("rule 1 allows read"), "{}", d.message);
        let d = p
            .decide(&ask("repo:acme-org/x", &c, "globex/app", Permission::Read))
            .unwrap_err();
        assert!(d.message.contains("not repo globex/app"), "{}", d.message);
    }

    #[test]
    fn strict_keys_and_values_with_line_and_column() {
        let e = policy("[[allow]]\nissuer = \"https://i\"\nsubjekt = \"x\"\n").unwrap_err();
        assert_eq!(e.line, 3, "{e}");
        assert!(e.to_string().starts_with("policy.toml:3:1: "), "{e}");
        assert!(e.message.contains("subjekt"), "{e}");
        let e = policy("[[allow]]\nissuer = \"https://i\"\nsubject = \"x\"\nrepos = [\"a/b\"]\npermission = \"admin\"\n")
            .unwrap_err();
        assert_eq!((e.line, e.column), (5, 14), "{e}");
        let e = policy("[[allow]]\nissuer = \"https://i\"\nsubject_pattern = \"(\"\nrepos = [\"a/b\"]\npermission = \"read\"\n")
            .unwrap_err();
        assert_eq!(e.line, 3, "{e}");
        let e = policy("[[allow]]\nissuer = \"http://example.com\"\nsubject = \"x\"\nrepos = [\"a/b\"]\npermission = \"read\"\n")
            .unwrap_err();
        assert!(e.message.contains("https"), "{e}");
        let e = policy("[[allow]]\nissuer = \"https://i\"\nsubject = \"x\"\nrepos = [\"ab\"]\npermission = \"read\"\n")
            .unwrap_err();
        assert!(e.message.contains("WS/REPO"), "{e}");
        assert!(policy("").unwrap().rules.is_empty());
    }

    #[test]
    fn an_empty_policy_allows_nothing() {
        let p = policy("").unwrap();
        let c = claims("acme-org");
        assert!(
            p.decide(&ask("s", &c, "acme/app", Permission::Read))
                .is_err()
        );
    }

    #[test]
    fn explain_names_issuer_subject_repos_and_permission() {
        let p = policy(RULES).unwrap();
        let line = p.rules[1].explain();
        assert!(
            line.contains(GH)
                && line.contains("refs/heads/main")
                && line.contains("acme/app")
                && line.contains("read or write tokens"),
            "{line}"
        );
    }

    #[test]
    fn only_slugs_are_requests_never_repo_ids() {
        assert_eq!(slug_request("acme/app"), Some(("acme", "app")));
        assert_eq!(slug_request("acme/lib-x.y_z"), Some(("acme", "lib-x.y_z")));
        for bad in [
            "acme/rp_0123456789",
            "acme/app/x",
            "acme",
            "/app",
            "acme/",
            "acme/.hidden",
            "acme/a*",
            "acme/a b",
            "ac me/app",
            "acme/app\n",
        ] {
            assert_eq!(slug_request(bad), None, "{bad:?}");
        }
        // "All but ops" must not let a repo id through.
        let p = policy(
            "[[allow]]\nissuer = \"https://i\"\nsubject = \"s\"\nrepos = [\"acme/[!o]*\"]\npermission = \"write\"\n",
        )
        .unwrap();
        let c = serde_json::Map::new();
        assert!(p.knows("https://i", "s", &c));
        assert!(!p.knows("https://i", "t", &c));
        assert!(!p.knows("https://j", "s", &c));
        assert_eq!(p.foreign_repos("acme"), vec![]);
        assert_eq!(
            p.foreign_repos("sandbox"),
            vec![(1, "acme/[!o]*".to_owned())]
        );
    }

    #[test]
    fn the_deploy_examples_parse_and_name_one_workspace() {
        for (name, text, issuer) in [
            (
                "policy-github.toml",
                include_str!("../../deploy/policy-github.toml"),
                GH,
            ),
            (
                "policy-gitlab.toml",
                include_str!("../../deploy/policy-gitlab.toml"),
                "https://gitlab.com",
            ),
        ] {
            let p = Policy::parse(text, name).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(p.issuers(), vec![issuer.to_owned()], "{name}");
            assert!(p.foreign_repos("acme").is_empty(), "{name}");
        }
        let gitlab =
            Policy::parse(include_str!("../../deploy/policy-gitlab.toml"), "gitlab").unwrap();
        let mut claims = serde_json::Map::new();
        claims.insert("namespace_path".into(), "acme-group".into());
        claims.insert("ref_protected".into(), "true".into());
        let main = "project_path:acme-group/app:ref_type:branch:ref:main";
        let ask = Ask {
            issuer: "https://gitlab.com",
            subject: main,
            claims: &claims,
            repo: "acme/app",
            permission: Permission::Write,
        };
        assert_eq!(gitlab.decide(&ask).unwrap().number, 1);
    }
}
