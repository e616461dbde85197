//! Tests of the githosted-compatible test server itself (testkit/src/server): its
//! Connect-JSON API through reqwest, its git smart HTTP through the real git clients, and
//! (ignored unless the SDK is installed) a cross-check against the official Python SDK.
//!
//! Unix only: the harness runs processes as other users, uses Unix sockets and
//! `git http-backend` (Windows runs the unit tests and `protocol_props`).
#![cfg(unix)]

use githosted_testkit::server;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use server::{AuthScheme, Fault, FaultKind, Kind, PathForm, Permission, Server, TokenSpec};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

// ----- helpers -----------------------------------------------------------------------------------

struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
    fn code(&self) -> String {
        self.json()["code"].as_str().unwrap_or_default().to_string()
    }
}

fn send(build: impl FnOnce(&reqwest::Client) -> reqwest::RequestBuilder) -> Reply {
    // reqwest is built with `rustls-no-provider`: a provider must be installed before any
    // Client is built, even for plain http.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = reqwest::Client::builder().build().unwrap();
        let resp = build(&client).send().await.expect("request");
        Reply {
            status: resp.status().as_u16(),
            headers: resp.headers().clone(),
            body: resp.text().await.unwrap(),
        }
    })
}

fn api(s: &Server, token: Option<&str>, method: &str, body: Value) -> Reply {
    let url = format!("{}/githosted.v1.ApiService/{method}", s.base_url());
    send(|c| {
        let mut rb = c
            .post(url)
            .header("Content-Type", "application/json")
            .header("X-Githosted-Client", "server-test")
            .body(body.to_string());
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        rb
    })
}

fn exchange(s: &Server, token: &str, body: Value) -> Reply {
    api(s, Some(token), "ExchangeToken", body)
}

fn ts(v: &Value) -> i64 {
    OffsetDateTime::parse(v.as_str().expect("timestamp string"), &Rfc3339)
        .expect("RFC 3339")
        .unix_timestamp()
}

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// acme (ws) with repos app + lib, and globex with repo secret.
fn fixture() -> Server {
    let s = Server::start();
    s.add_workspace("acme");
    s.add_repo("acme", "app");
    s.add_repo("acme", "lib");
    s.add_workspace("globex");
    s.add_repo("globex", "secret");
    s
}

const GITS: [&str; 2] = ["/usr/local/bin/git", "/usr/bin/git"];

fn gits() -> Vec<&'static str> {
    let found: Vec<_> = GITS.into_iter().filter(|g| Path::new(g).exists()).collect();
    assert!(!found.is_empty(), "no git binary found");
    found
}

fn git_version(bin: &str) -> (u32, u32) {
    let out = Command::new(bin).arg("--version").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Vec<u32> = text
        .split_whitespace()
        .nth(2)
        .unwrap()
        .split('.')
        .take(2)
        .map(|n| n.parse().unwrap())
        .collect();
    (v[0], v[1])
}

/// How the git client authenticates. Raw tokens travel in the environment, never argv.
#[derive(Clone, Copy)]
enum Auth<'a> {
    None,
    /// A credential helper answering username/password (git sends HTTP Basic).
    Basic(&'a str),
    /// `http.extraHeader = Authorization: Bearer …` (set through GIT_CONFIG_* env).
    BearerHeader(&'a str),
    /// A credential helper answering `authtype=Bearer` (git >= 2.46).
    HelperBearer(&'a str),
}

fn git(bin: &str, home: &Path, cwd: &Path, args: &[&str], auth: Auth) -> Output {
    let mut cmd = Command::new(bin);
    cmd.current_dir(cwd)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("LC_ALL", "C")
        .env("GIT_AUTHOR_NAME", "Tester")
        .env("GIT_AUTHOR_EMAIL", "tester@example.test")
        .env("GIT_COMMITTER_NAME", "Tester")
        .env("GIT_COMMITTER_EMAIL", "tester@example.test")
        .stdin(Stdio::null());
    let helper = |script: &str| format!("!f() {{ test \"$1\" = get && {script}; }}; f");
    let config: Vec<(&str, String)> = match auth {
        Auth::None => vec![],
        Auth::Basic(t) => {
            cmd.env("TEST_TOKEN", t);
            vec![(
                "credential.helper",
                helper(r#"printf 'username=x\npassword=%s\n' "$TEST_TOKEN""#),
            )]
        }
        Auth::BearerHeader(t) => vec![("http.extraHeader", format!("Authorization: Bearer {t}"))],
        Auth::HelperBearer(t) => {
            cmd.env("TEST_TOKEN", t);
            vec![(
                "credential.helper",
                helper(
                    r#"printf 'capability[]=authtype\nauthtype=Bearer\ncredential=%s\n' "$TEST_TOKEN""#,
                ),
            )]
        }
    };
    cmd.env("GIT_CONFIG_COUNT", config.len().to_string());
    for (i, (k, v)) in config.iter().enumerate() {
        cmd.env(format!("GIT_CONFIG_KEY_{i}"), k)
            .env(format!("GIT_CONFIG_VALUE_{i}"), v);
    }
    cmd.output().expect("run git")
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "git failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn failed_with(out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "git unexpectedly succeeded");
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
}

fn clone(bin: &str, url: &str, auth: Auth) -> (tempfile::TempDir, PathBuf, Output) {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let out = git(bin, &home, tmp.path(), &["clone", "-q", url, "work"], auth);
    let work = tmp.path().join("work");
    (tmp, work, out)
}

fn assert_no_raw_tokens(s: &Server, text: &str) {
    for t in s.issued_tokens() {
        assert!(!text.contains(&t), "a raw token leaked into: {text}");
    }
}

// ----- ExchangeToken -----------------------------------------------------------------------------

#[test]
fn exchange_happy_path_fields() {
    let s = fixture();
    let gw = s.seed_token("acme", TokenSpec::workspace_write());
    let parent = s.record_for(&gw).unwrap();
    let before = now();
    let r = exchange(
        &s,
        &gw,
        json!({"repoAllowlist": ["app"], "permission": "PERMISSION_WRITE",
               "ttlSeconds": 600, "subject": "git-credential-githosted:alice@laptop"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.headers["content-type"].to_str().unwrap(),
        "application/json"
    );
    let body = r.json();
    let token = body["token"].as_str().unwrap();
    assert!(token.starts_with("gr_") && token.len() == 43, "{token}");
    let rec = &body["record"];
    assert!(rec["id"].as_str().unwrap().starts_with("tk_"));
    assert_eq!(rec["prefix"], "gr");
    assert_eq!(rec["kind"], "TOKEN_KIND_REPO");
    assert_eq!(rec["permission"], "PERMISSION_WRITE");
    assert_eq!(rec["repoAllowlist"], json!(["app"]));
    assert_eq!(rec["workspaceId"], s.workspace_id("acme"));
    assert!(rec["organizationId"].as_str().unwrap().starts_with("org_"));
    assert_eq!(rec["createdByTokenPrefix"], "gw");
    let created = ts(&rec["createdAt"]);
    assert!(created >= before && created <= now());
    assert_eq!(ts(&rec["expiresAt"]) - created, 600);
    // proto3 canonical JSON: unset fields are absent, not null.
    assert!(rec.get("revokedAt").is_none() && rec.get("lastUsedAt").is_none());
    assert!(!rec.to_string().contains(token));

    assert_eq!(s.exchange_count(), 1);
    assert_eq!(s.calls("ExchangeToken"), 1);
    let seen = &s.exchanges()[0];
    assert_eq!(seen.parent_id, parent.id);
    assert_eq!(seen.allowlist, vec!["app"]);
    assert_eq!(seen.requested_permission, Some(Permission::Write));
    assert_eq!(seen.ttl_seconds, 600);
    assert_eq!(seen.subject, "git-credential-githosted:alice@laptop");
    assert_eq!(seen.auth_scheme, AuthScheme::Bearer);
    assert_eq!(seen.client.as_deref(), Some("server-test"));
    assert_eq!(seen.minted.id, rec["id"].as_str().unwrap());
    assert_eq!(seen.minted.expires_at, Some(ts(&rec["expiresAt"])));
    let minted = s.record_for(token).unwrap();
    assert_eq!(minted.kind, Kind::Repo);
    assert_eq!(minted.parent_id.as_deref(), Some(parent.id.as_str()));
    assert!(s.issued_tokens().contains(&token.to_string()));
    assert_no_raw_tokens(&s, &format!("{:?}{:?}", s.exchanges(), s.api_calls()));
}

#[test]
fn exchange_ttl_default_clamp_and_permission_default() {
    let s = fixture();
    let gw = s.seed_token("acme", TokenSpec::workspace_write());
    let span = |r: &Reply| {
        let rec = &r.json()["record"];
        ts(&rec["expiresAt"]) - ts(&rec["createdAt"])
    };
    let r = exchange(&s, &gw, json!({"repoAllowlist": ["app"]}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(span(&r), 3600);
    assert_eq!(r.json()["record"]["permission"], "PERMISSION_READ");
    assert_eq!(s.exchanges()[0].requested_permission, None);

    let r = exchange(&s, &gw, json!({"repoAllowlist": ["app"], "ttlSeconds": 0}));
    assert_eq!(span(&r), 3600);
    let r = exchange(
        &s,
        &gw,
        json!({"repoAllowlist": ["app"], "ttlSeconds": 1_000_000}),
    );
    assert_eq!(span(&r), 86_400);
    // proto3 JSON int64 may arrive as a string.
    let r = exchange(
        &s,
        &gw,
        json!({"repoAllowlist": ["app"], "ttlSeconds": "90"}),
    );
    assert_eq!(span(&r), 90);
    let r = exchange(&s, &gw, json!({"repoAllowlist": ["app"], "ttlSeconds": -5}));
    assert_eq!((r.status, r.code().as_str()), (400, "invalid_argument"));
    assert_eq!(s.exchange_count(), 4);
    assert_eq!(s.calls("ExchangeToken"), 5);
}

#[test]
fn read_parent_cannot_get_write() {
    let s = fixture();
    let gw_read = s.seed_token("acme", TokenSpec::workspace_read());
    let r = exchange(
        &s,
        &gw_read,
        json!({"repoAllowlist": ["app"], "permission": "PERMISSION_WRITE"}),
    );
    assert_eq!((r.status, r.code().as_str()), (403, "permission_denied"));
    let r = exchange(
        &s,
        &gw_read,
        json!({"repoAllowlist": ["app"], "permission": "PERMISSION_READ"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(s.exchange_count(), 1);
}

#[test]
fn exchange_bad_allowlists() {
    let s = fixture();
    let gw = s.seed_token("acme", TokenSpec::workspace_write());
    let r = exchange(&s, &gw, json!({"repoAllowlist": []}));
    assert_eq!((r.status, r.code().as_str()), (400, "invalid_argument"));
    let r = exchange(&s, &gw, json!({}));
    assert_eq!((r.status, r.code().as_str()), (400, "invalid_argument"));
    let r = exchange(&s, &gw, json!({"repoAllowlist": ["app", "nope"]}));
    assert_eq!((r.status, r.code().as_str()), (404, "not_found"));
    // A slug that exists only in another workspace is simply not found here.
    let r = exchange(&s, &gw, json!({"repoAllowlist": ["secret"]}));
    assert_eq!((r.status, r.code().as_str()), (404, "not_found"));
    // An rp_ id of another workspace's repo is refused outright.
    let other = s.repo_id("globex", "secret");
    let r = exchange(&s, &gw, json!({"repoAllowlist": [other]}));
    assert_eq!((r.status, r.code().as_str()), (403, "permission_denied"));
    let r = exchange(&s, &gw, json!({"repoAllowlist": ["rp_doesnotexist"]}));
    assert_eq!((r.status, r.code().as_str()), (404, "not_found"));
    let own = s.repo_id("acme", "lib");
    let r = exchange(&s, &gw, json!({"repoAllowlist": [own]}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["record"]["repoAllowlist"], json!([own]));
    let r = exchange(
        &s,
        &gw,
        json!({"repoAllowlist": ["app"], "permission": "PERMISSION_ADMIN"}),
    );
    assert_eq!((r.status, r.code().as_str()), (400, "invalid_argument"));
    assert_eq!(s.exchange_count(), 1);
}

#[test]
fn repo_token_cannot_call_control_plane() {
    let s = fixture();
    let gr = s.seed_token("acme", TokenSpec::repo(Permission::Write, &["app"], None));
    for (method, body) in [
        ("ExchangeToken", json!({"repoAllowlist": ["app"]})),
        ("ListTokens", json!({"pageSize": 1})),
        ("ListWorkspaces", json!({})),
        (
            "RevokeToken",
            json!({"tokenId": s.record_for(&gr).unwrap().id}),
        ),
        (
            "CreateToken",
            json!({"name": "x", "kind": "TOKEN_KIND_REPO",
                   "permission": "PERMISSION_READ", "repoAllowlist": ["app"]}),
        ),
    ] {
        let r = api(&s, Some(&gr), method, body);
        assert_eq!(
            (r.status, r.code().as_str()),
            (403, "permission_denied"),
            "{method}"
        );
    }
    assert_eq!(s.exchange_count(), 0);
    assert!(s.record_for(&gr).unwrap().revoked_at.is_none());
}

/// `ListWorkspaces` (assumed; see the README): a workspace token sees its own
/// workspace, with its slug and the token's permission there.
#[test]
fn list_workspaces_names_the_tokens_workspace_and_permission() {
    let s = fixture();
    for (spec, wire) in [
        (TokenSpec::workspace_write(), "PERMISSION_WRITE"),
        (TokenSpec::workspace_read(), "PERMISSION_READ"),
    ] {
        let gw = s.seed_token("acme", spec);
        let r = api(&s, Some(&gw), "ListWorkspaces", json!({}));
        assert_eq!(r.status, 200);
        let body = r.json();
        let ws = &body["workspaces"][0];
        assert_eq!(ws["slug"], "acme");
        assert_eq!(ws["id"], s.workspace_id("acme").as_str());
        assert_eq!(ws["permission"], wire);
        assert_eq!(body["workspaces"].as_array().unwrap().len(), 1);
    }
}

#[test]
fn api_unauthenticated_is_uniform() {
    let s = fixture();
    let expired = s.seed_token("acme", TokenSpec::workspace_write());
    s.expire(&expired);
    let revoked = s.seed_token("acme", TokenSpec::workspace_write());
    s.revoke(&revoked);
    let short = s.seed_token(
        "acme",
        TokenSpec::workspace_write().with_ttl(Duration::from_millis(1500)),
    );
    assert_eq!(
        api(&s, Some(&short), "ListTokens", json!({})).status,
        200,
        "short-lived token works before expiry"
    );
    std::thread::sleep(Duration::from_millis(1600));
    let unknown = "gw_0000000000000000000000000000000000000000";
    let mut messages = Vec::new();
    for token in [
        None,
        Some(unknown),
        Some(&expired),
        Some(&revoked),
        Some(&short),
    ] {
        let r = api(&s, token, "ListTokens", json!({}));
        assert_eq!((r.status, r.code().as_str()), (401, "unauthenticated"));
        messages.push(r.json()["message"].clone());
    }
    // Basic is not accepted on the control plane.
    let valid = s.seed_token("acme", TokenSpec::workspace_write());
    let url = format!("{}/githosted.v1.ApiService/ListTokens", s.base_url());
    let r = send(|c| {
        c.post(url)
            .header("Content-Type", "application/json")
            .basic_auth("x", Some(&valid))
            .body("{}")
    });
    assert_eq!((r.status, r.code().as_str()), (401, "unauthenticated"));
    messages.dedup();
    assert_eq!(messages.len(), 1, "the wire must not say why: {messages:?}");
}

#[test]
fn api_protocol_errors() {
    let s = fixture();
    let gw = s.seed_token("acme", TokenSpec::workspace_write());
    let r = api(&s, Some(&gw), "DeleteEverything", json!({}));
    assert_eq!((r.status, r.code().as_str()), (404, "unimplemented"));
    let url = format!("{}/githosted.v1.ApiService/ListTokens", s.base_url());
    let r = send(|c| c.post(&url).bearer_auth(&gw).body("{}"));
    assert_eq!(r.status, 415);
    let r = send(|c| {
        c.post(&url)
            .bearer_auth(&gw)
            .header("Content-Type", "application/json")
            .body("{not json")
    });
    assert_eq!((r.status, r.code().as_str()), (400, "invalid_argument"));
    // Unknown fields are ignored; snake_case names are accepted like protojson does.
    let r = api(
        &s,
        Some(&gw),
        "ExchangeToken",
        json!({"repo_allowlist": ["app"], "futureField": 1}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = api(
        &s,
        Some(&gw),
        "ListTokens",
        json!({"workspaceRef": "globex"}),
    );
    assert_eq!((r.status, r.code().as_str()), (403, "permission_denied"));
    let r = api(&s, Some(&gw), "ListTokens", json!({"workspaceRef": "acme"}));
    assert_eq!(r.status, 200);
    // Hostile numbers are refused, not a panic.
    let r = api(
        &s,
        Some(&gw),
        "ListTokens",
        json!({"pageToken": usize::MAX.to_string()}),
    );
    assert_eq!(r.status, 200);
    let r = api(
        &s,
        Some(&gw),
        "CreateToken",
        json!({"name": "x", "kind": "TOKEN_KIND_WORKSPACE", "permission": "PERMISSION_READ",
               "ttlHours": i64::MAX}),
    );
    assert_eq!((r.status, r.code().as_str()), (400, "invalid_argument"));
    let r = api(
        &s,
        Some(&gw),
        "ExchangeToken",
        json!({"repoAllowlist": ["app"], "ttlSeconds": i64::MAX}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
}

// ----- RevokeToken, ListTokens, CreateToken -----------------------------------------------------

#[test]
fn revoke_token_api_then_401_everywhere() {
    let s = fixture();
    let gw = s.seed_token("acme", TokenSpec::workspace_write());
    let r = exchange(
        &s,
        &gw,
        json!({"repoAllowlist": ["app"], "permission": "PERMISSION_READ"}),
    );
    let minted = r.json()["token"].as_str().unwrap().to_string();
    let id = r.json()["record"]["id"].as_str().unwrap().to_string();
    let bin = gits()[0];
    let (_t, _w, out) = clone(bin, &s.repo_url("acme", "app"), Auth::Basic(&minted));
    ok(&out);

    let globex = s.seed_token("globex", TokenSpec::workspace_write());
    let r = api(&s, Some(&globex), "RevokeToken", json!({"tokenId": id}));
    assert_eq!(
        (r.status, r.code().as_str()),
        (404, "not_found"),
        "another workspace cannot see it"
    );
    let r = api(
        &s,
        Some(&gw),
        "RevokeToken",
        json!({"organizationRef": "", "workspaceRef": "", "tokenId": id}),
    );
    assert_eq!((r.status, r.body.as_str()), (200, "{}"));
    assert!(s.record_for(&minted).unwrap().revoked_at.is_some());
    let r = api(&s, Some(&gw), "RevokeToken", json!({"tokenId": "tk_nope"}));
    assert_eq!((r.status, r.code().as_str()), (404, "not_found"));
    assert_eq!(s.calls("RevokeToken"), 3);

    let (_t, _w, out) = clone(bin, &s.repo_url("acme", "app"), Auth::Basic(&minted));
    failed_with(&out, "Authentication failed");
    let last = s.git_requests().pop().unwrap();
    assert_eq!((last.status, last.auth_scheme), (401, AuthScheme::Basic));
    assert!(last.token.is_none());

    // Revoking the parent through the test control: 401 on the API.
    s.revoke(&gw);
    let r = exchange(&s, &gw, json!({"repoAllowlist": ["app"]}));
    assert_eq!((r.status, r.code().as_str()), (401, "unauthenticated"));
}

#[test]
fn list_tokens_pages_through_the_workspace() {
    let s = fixture();
    let gw = s.seed_token("acme", TokenSpec::workspace_read());
    s.seed_token("acme", TokenSpec::repo(Permission::Read, &["app"], None));
    s.seed_token("globex", TokenSpec::workspace_write());
    let gw2 = s.seed_token("acme", TokenSpec::workspace_write());
    s.revoke(&gw2);

    let mut ids = Vec::new();
    let mut page_token = String::new();
    loop {
        let r = api(
            &s,
            Some(&gw),
            "ListTokens",
            json!({"organizationRef": "", "workspaceRef": "", "pageSize": 1, "pageToken": page_token}),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        let body = r.json();
        let tokens = body["tokens"].as_array().unwrap();
        assert_eq!(tokens.len(), 1);
        ids.push(tokens[0]["id"].as_str().unwrap().to_string());
        match body.get("nextPageToken") {
            Some(next) => page_token = next.as_str().unwrap().to_string(),
            None => break,
        }
    }
    assert_eq!(ids.len(), 3, "acme's tokens only, revoked ones included");
    let r = api(&s, Some(&gw), "ListTokens", json!({}));
    let all = r.json();
    assert_eq!(all["tokens"].as_array().unwrap().len(), 3);
    assert!(all.get("nextPageToken").is_none());
    assert!(all["tokens"][2]["revokedAt"].is_string());
    assert!(all["tokens"][0].get("expiresAt").is_none());
    assert_no_raw_tokens(&s, &r.body);
}

#[test]
fn create_token() {
    let s = fixture();
    let gw = s.seed_token("acme", TokenSpec::workspace_write());
    let r = api(
        &s,
        Some(&gw),
        "CreateToken",
        json!({"name": "ci", "kind": "TOKEN_KIND_REPO", "permission": "PERMISSION_READ",
               "repoAllowlist": ["app"], "ttlHours": 0}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let body = r.json();
    assert!(body["token"].as_str().unwrap().starts_with("gr_"));
    assert_eq!(body["record"]["name"], "ci");
    assert!(body["record"].get("expiresAt").is_none(), "0 hours: never");
    let r = api(
        &s,
        Some(&gw),
        "CreateToken",
        json!({"name": "ws", "kind": "TOKEN_KIND_WORKSPACE", "permission": "PERMISSION_WRITE",
               "ttlHours": 2}),
    );
    let rec = &r.json()["record"];
    assert!(r.json()["token"].as_str().unwrap().starts_with("gw_"));
    assert_eq!(ts(&rec["expiresAt"]) - ts(&rec["createdAt"]), 7200);
    let r = api(
        &s,
        Some(&gw),
        "CreateToken",
        json!({"name": "x", "kind": "TOKEN_KIND_REPO", "permission": "PERMISSION_READ"}),
    );
    assert_eq!((r.status, r.code().as_str()), (400, "invalid_argument"));
    let gw_read = s.seed_token("acme", TokenSpec::workspace_read());
    let r = api(
        &s,
        Some(&gw_read),
        "CreateToken",
        json!({"name": "x", "kind": "TOKEN_KIND_WORKSPACE", "permission": "PERMISSION_READ"}),
    );
    assert_eq!((r.status, r.code().as_str()), (403, "permission_denied"));
    assert_eq!(s.exchange_count(), 0);
    assert_eq!(s.calls("CreateToken"), 4);
}

// ----- faults --------------------------------------------------------------------------------------

#[test]
fn fault_500_twice_then_ok() {
    let s = fixture();
    let gw = s.seed_token("acme", TokenSpec::workspace_write());
    s.inject_fault(Fault::status(Some("ExchangeToken"), 2, 500, "internal"));
    // A fault for another method does not fire here.
    s.inject_fault(Fault::status(Some("ListTokens"), 1, 503, "unavailable"));
    let body = json!({"repoAllowlist": ["app"]});
    for _ in 0..2 {
        let r = exchange(&s, &gw, body.clone());
        assert_eq!((r.status, r.code().as_str()), (500, "internal"));
    }
    let r = exchange(&s, &gw, body.clone());
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(s.calls("ExchangeToken"), 3);
    assert_eq!(s.exchange_count(), 1);
    let faulted: Vec<bool> = s.api_calls().iter().map(|c| c.faulted).collect();
    assert_eq!(faulted, vec![true, true, false]);
    let r = api(&s, Some(&gw), "ListTokens", json!({}));
    assert_eq!((r.status, r.code().as_str()), (503, "unavailable"));
    s.inject_fault(Fault::status(None, 5, 500, "internal"));
    s.clear_faults();
    assert_eq!(exchange(&s, &gw, body).status, 200);
}

#[test]
fn fault_429_with_and_without_retry_after() {
    let s = fixture();
    let gw = s.seed_token("acme", TokenSpec::workspace_write());
    s.inject_fault(Fault::rate_limited(None, 1, Some(7)));
    s.inject_fault(Fault::rate_limited(None, 1, None));
    let body = json!({"repoAllowlist": ["app"]});
    let r = exchange(&s, &gw, body.clone());
    assert_eq!((r.status, r.code().as_str()), (429, "resource_exhausted"));
    assert_eq!(r.headers["retry-after"], "7");
    let r = exchange(&s, &gw, body.clone());
    assert_eq!((r.status, r.code().as_str()), (429, "resource_exhausted"));
    assert!(r.headers.get("retry-after").is_none());
    assert_eq!(exchange(&s, &gw, body).status, 200);
}

#[test]
fn fault_delay_and_raw_body() {
    let s = fixture();
    let gw = s.seed_token("acme", TokenSpec::workspace_write());
    s.inject_fault(Fault::delay(
        Some("ExchangeToken"),
        1,
        Duration::from_millis(400),
    ));
    let started = Instant::now();
    let r = exchange(&s, &gw, json!({"repoAllowlist": ["app"]}));
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(s.exchange_count(), 1);

    s.inject_fault(Fault {
        method: Some("ExchangeToken".into()),
        times: 1,
        kind: FaultKind::RawBody {
            http: 200,
            body: r#"{"token":"gr_x"}"#.into(),
        },
    });
    s.inject_fault(Fault::raw_body(None, 1, 502, "<html>bad gateway</html>"));
    let r = exchange(&s, &gw, json!({"repoAllowlist": ["app"]}));
    assert_eq!((r.status, r.body.as_str()), (200, r#"{"token":"gr_x"}"#));
    let r = exchange(&s, &gw, json!({"repoAllowlist": ["app"]}));
    assert_eq!(
        (r.status, r.body.as_str()),
        (502, "<html>bad gateway</html>")
    );
    assert_eq!(s.exchange_count(), 1);
    assert_eq!(s.calls("ExchangeToken"), 3);
}

// ----- git smart HTTP -------------------------------------------------------------------------------

#[test]
fn git_401_without_credentials() {
    let s = fixture();
    let url = format!(
        "{}/acme/app.git/info/refs?service=git-upload-pack",
        s.base_url()
    );
    let r = send(|c| c.get(url));
    assert_eq!(r.status, 401);
    let challenges: Vec<_> = r
        .headers
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert!(challenges.contains(&"Basic realm=\"githosted\"".to_string()));
    for bin in gits() {
        let (_t, _w, out) = clone(bin, &s.repo_url("acme", "app"), Auth::None);
        failed_with(&out, "could not read Username");
    }
    let seen = s.git_requests();
    assert!(
        seen.iter()
            .all(|g| g.status == 401 && g.auth_scheme == AuthScheme::None)
    );
    let r = send(|c| c.get(format!("{}/nothing-here", s.base_url())));
    assert_eq!(r.status, 404);
}

#[test]
fn git_clone_with_basic_and_bearer_on_both_path_forms() {
    let s = fixture();
    let gr = s.seed_token("acme", TokenSpec::repo(Permission::Read, &["app"], None));
    let id = s.record_for(&gr).unwrap().id;
    let head = s.git(
        Some(&s.repo_path("acme", "app")),
        &["rev-parse", "main"],
        None,
    );
    for bin in gits() {
        for url in [
            s.repo_url("acme", "app"),
            s.repo_url_git_prefix("acme", "app"),
        ] {
            for auth in [Auth::Basic(&gr), Auth::BearerHeader(&gr)] {
                let (_t, work, out) = clone(bin, &url, auth);
                ok(&out);
                assert!(work.join("README").exists());
                let home = work.parent().unwrap().join("home");
                let local = git(bin, &home, &work, &["rev-parse", "HEAD"], Auth::None);
                assert_eq!(String::from_utf8_lossy(&local.stdout).trim(), head);
            }
        }
    }
    let seen = s.git_requests();
    assert!(seen.iter().any(|g| g.form == PathForm::GitPrefix));
    assert!(seen.iter().any(|g| g.form == PathForm::Plain));
    assert!(
        seen.iter()
            .any(|g| g.auth_scheme == AuthScheme::Bearer && g.status == 200)
    );
    for g in seen.iter().filter(|g| g.status == 200) {
        assert_eq!(g.token_id(), Some(id.as_str()));
        assert_eq!((g.ws.as_str(), g.repo.as_str()), ("acme", "app"));
        assert_eq!(g.service.as_deref(), Some("git-upload-pack"));
        assert!(!g.push);
    }
    // Basic: the first request carries nothing and gets 401, then git asks the helper.
    assert!(
        seen.iter()
            .any(|g| g.status == 401 && g.auth_scheme == AuthScheme::None)
    );
    assert_no_raw_tokens(&s, &format!("{seen:?}"));
}

#[test]
fn git_bearer_from_credential_helper_authtype() {
    let s = fixture();
    let gr = s.seed_token("acme", TokenSpec::repo(Permission::Read, &["app"], None));
    let bins: Vec<_> = gits()
        .into_iter()
        .filter(|b| git_version(b) >= (2, 46))
        .collect();
    if bins.is_empty() {
        eprintln!("no git >= 2.46 here; authtype not testable");
        return;
    }
    for bin in bins {
        let (_t, _w, out) = clone(bin, &s.repo_url("acme", "app"), Auth::HelperBearer(&gr));
        ok(&out);
    }
    assert!(
        s.git_requests()
            .iter()
            .any(|g| g.auth_scheme == AuthScheme::Bearer && g.status == 200)
    );
}

#[test]
fn git_push_needs_write() {
    let s = fixture();
    let read = s.seed_token("acme", TokenSpec::repo(Permission::Read, &["app"], None));
    let write = s.seed_token("acme", TokenSpec::repo(Permission::Write, &["app"], None));
    let bare = s.repo_path("acme", "app");
    for bin in gits() {
        let (tmp, work, out) = clone(bin, &s.repo_url("acme", "app"), Auth::Basic(&read));
        ok(&out);
        let home = tmp.path().join("home");
        std::fs::write(work.join("file.txt"), format!("pushed by {bin}\n")).unwrap();
        ok(&git(bin, &home, &work, &["add", "file.txt"], Auth::None));
        ok(&git(
            bin,
            &home,
            &work,
            &["commit", "-qm", "change"],
            Auth::None,
        ));
        let out = git(
            bin,
            &home,
            &work,
            &["push", "origin", "main"],
            Auth::Basic(&read),
        );
        failed_with(&out, "403");
        let last = s.git_requests().pop().unwrap();
        assert_eq!((last.status, last.push), (403, true));
        assert_eq!(last.service.as_deref(), Some("git-receive-pack"));

        let out = git(
            bin,
            &home,
            &work,
            &["push", "origin", "main"],
            Auth::Basic(&write),
        );
        ok(&out);
        let local = git(bin, &home, &work, &["rev-parse", "HEAD"], Auth::None);
        let remote = s.git(Some(&bare), &["rev-parse", "main"], None);
        assert_eq!(String::from_utf8_lossy(&local.stdout).trim(), remote);
        let last = s.git_requests().pop().unwrap();
        assert_eq!((last.method.as_str(), last.status), ("POST", 200));
        assert_eq!(last.token.unwrap().permission, Permission::Write);
    }
}

#[test]
fn git_gzip_requests_and_large_chunked_pushes() {
    use rand::RngCore;
    let s = fixture();
    let gw = s.seed_token("acme", TokenSpec::workspace_write());
    let bare = s.repo_path("acme", "app");
    // Enough refs that git's upload-pack request exceeds 1 KiB and goes out gzipped.
    for i in 0..40 {
        s.git(
            Some(&bare),
            &["update-ref", &format!("refs/heads/branch-{i:02}"), "main"],
            None,
        );
    }
    for bin in gits() {
        let (tmp, work, out) = clone(bin, &s.repo_url("acme", "app"), Auth::Basic(&gw));
        ok(&out);
        let home = tmp.path().join("home");
        let out = git(
            bin,
            &home,
            &work,
            &[
                "fetch",
                "-q",
                "origin",
                "+refs/heads/*:refs/remotes/origin/*",
            ],
            Auth::Basic(&gw),
        );
        ok(&out);
        // 3 MiB of incompressible data: more than http.postBuffer, so git streams it chunked.
        let mut blob = vec![0u8; 3 << 20];
        rand::rng().fill_bytes(&mut blob);
        std::fs::write(work.join("big.bin"), &blob).unwrap();
        ok(&git(bin, &home, &work, &["add", "big.bin"], Auth::None));
        ok(&git(
            bin,
            &home,
            &work,
            &["commit", "-qm", "big"],
            Auth::None,
        ));
        let out = git(
            bin,
            &home,
            &work,
            &["push", "-q", "origin", "HEAD:refs/heads/big"],
            Auth::Basic(&gw),
        );
        ok(&out);
        let local = git(bin, &home, &work, &["rev-parse", "HEAD"], Auth::None);
        let remote = s.git(Some(&bare), &["rev-parse", "big"], None);
        assert_eq!(String::from_utf8_lossy(&local.stdout).trim(), remote);
        s.git(Some(&bare), &["update-ref", "-d", "refs/heads/big"], None);
    }
    assert!(
        s.git_requests()
            .iter()
            .any(|g| g.content_encoding.as_deref() == Some("gzip") && g.status == 200),
        "no gzipped request seen"
    );
}

#[test]
fn git_403_outside_allowlist_or_workspace_and_404_unknown_repo() {
    let s = fixture();
    let gr = s.seed_token("acme", TokenSpec::repo(Permission::Write, &["app"], None));
    let lib_id = s.repo_id("acme", "lib");
    let gr_by_id = s.seed_token("acme", TokenSpec::repo(Permission::Read, &[&lib_id], None));
    let gw = s.seed_token("acme", TokenSpec::workspace_read());
    for bin in gits() {
        let (_t, _w, out) = clone(bin, &s.repo_url("acme", "lib"), Auth::Basic(&gr));
        failed_with(&out, "403");
        let (_t, _w, out) = clone(bin, &s.repo_url("globex", "secret"), Auth::Basic(&gw));
        failed_with(&out, "403");
        let (_t, _w, out) = clone(bin, &s.repo_url("acme", "missing"), Auth::Basic(&gw));
        failed_with(&out, "not found");
        // A repo token whose allowlist names the repo by rp_ id.
        let (_t, _w, out) = clone(bin, &s.repo_url("acme", "lib"), Auth::Basic(&gr_by_id));
        ok(&out);
        // A workspace token reaches every repo of its workspace.
        let (_t, _w, out) = clone(bin, &s.repo_url_git_prefix("acme", "lib"), Auth::Basic(&gw));
        ok(&out);
    }
    let statuses: Vec<u16> = s.git_requests().iter().map(|g| g.status).collect();
    assert!(statuses.contains(&403) && statuses.contains(&404));
}

#[test]
fn git_expired_and_revoked_tokens_get_401() {
    let s = fixture();
    let expired = s.seed_token("acme", TokenSpec::repo(Permission::Read, &["app"], None));
    s.expire(&expired);
    let revoked = s.seed_token("acme", TokenSpec::workspace_write());
    s.revoke(&revoked);
    let bin = gits()[0];
    for token in [&expired, &revoked] {
        let (_t, _w, out) = clone(bin, &s.repo_url("acme", "app"), Auth::Basic(token));
        failed_with(&out, "Authentication failed");
        let r = send(|c| {
            c.get(format!(
                "{}/acme/app.git/info/refs?service=git-upload-pack",
                s.base_url()
            ))
            .bearer_auth(token)
        });
        assert_eq!(r.status, 401);
        assert!(r.headers.contains_key("www-authenticate"));
    }
}

// ----- the official Python SDK ------------------------------------------------------------------

#[test]
#[ignore = "needs the official SDK: pip install githosted==0.1.1 (GITHOSTED_SDK_PYTHON names the interpreter)"]
fn python_sdk_speaks_the_same_wire_format() {
    let s = fixture();
    let gw = s.seed_token("acme", TokenSpec::workspace_write());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk_check.py");
    let python = std::env::var("GITHOSTED_SDK_PYTHON").unwrap_or_else(|_| "python3".into());
    let mut child = Command::new(python)
        .arg(&script)
        .arg(s.base_url())
        .arg(s.workspace_id("acme"))
        .arg(s.repo_id("globex", "secret"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    // The token goes over stdin only.
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "{gw}").unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "sdk_check failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("sdk_check: OK"), "{stdout}");

    assert_eq!(s.exchange_count(), 1);
    let seen = &s.exchanges()[0];
    assert_eq!(seen.subject, "sdk-check");
    assert_eq!(seen.ttl_seconds, 120);
    assert_eq!(seen.client.as_deref(), Some("sdk-python"));
    assert!(
        seen.request_id
            .as_deref()
            .is_some_and(|r| r.starts_with("req_"))
    );
    assert!(s.calls("CreateToken") >= 1 && s.calls("ListTokens") >= 1);
}

/// Issue 21 item 10: a server started again on the same port with the same
/// state directory (`cargo run --example server -- PORT`) knows its
/// workspaces, repos and every token it issued: a workspace token seeded and a
/// repo token exchanged before the restart work after it, on the API and for
/// git; a revoked one stays revoked. No raw token is written.
#[test]
fn state_survives_a_restart_on_the_same_port() {
    let state = tempfile::tempdir().unwrap();
    let s = Server::start_with_state(0, state.path()).unwrap();
    let port: u16 = s.host().rsplit(':').next().unwrap().parse().unwrap();
    s.add_workspace("acme");
    s.add_repo("acme", "app");
    let gw = s.seed_token("acme", TokenSpec::workspace_write());
    let r = exchange(&s, &gw, json!({"repoAllowlist": ["app"]}));
    assert_eq!(r.status, 200, "{}", r.body);
    let gr = r.json()["token"].as_str().unwrap().to_string();
    let r = exchange(&s, &gw, json!({"repoAllowlist": ["app"]}));
    let revoked = r.json()["token"].as_str().unwrap().to_string();
    let id = r.json()["record"]["id"].as_str().unwrap().to_string();
    let r = api(&s, Some(&gw), "RevokeToken", json!({"tokenId": id}));
    assert_eq!(r.status, 200, "{}", r.body);
    let issued = s.issued_tokens();
    drop(s);

    let s = Server::start_with_state(port, state.path()).unwrap();
    assert_eq!(s.host(), format!("127.0.0.1:{port}"));
    let r = exchange(&s, &gw, json!({"repoAllowlist": ["app"]}));
    assert_eq!(r.status, 200, "the workspace token still works: {}", r.body);
    let bin = gits()[0];
    let (_t, _w, out) = clone(bin, &s.repo_url("acme", "app"), Auth::Basic(&gr));
    ok(&out);
    let (_t, _w, out) = clone(bin, &s.repo_url("acme", "app"), Auth::Basic(&revoked));
    failed_with(&out, "Authentication failed");
    let kept = std::fs::read_to_string(state.path().join("state.json")).unwrap();
    for token in issued {
        assert!(!kept.contains(&token), "a raw token in the state file");
    }
}
