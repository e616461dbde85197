//! The CI token broker, attacked as a CI job would be: forged, expired and
//! misdirected ID tokens, requests beyond the policy, revoking another job's
//! token, an issuer or an API that is down — and a job that clones and pushes
//! with real git holding nothing but its ID-token request variables.
#![cfg(unix)]

use std::time::Duration;

use githosted_testkit::oidc::{
    AUDIENCE, Broker, Issuer, start_broker, start_broker_configured, start_broker_with,
};
use githosted_testkit::server::Fault;
use githosted_testkit::{GIT_NEW, World, broker_program, helper};
use serde_json::{Value, json};

const MAIN: &str = "repo:acme-org/app:ref:refs/heads/main";

fn policy_for(issuer: &Issuer) -> String {
    format!(
        r#"
[[allow]]
issuer = "{iss}"
subject = "{MAIN}"
claims = {{ repository_owner = "acme-org" }}
repos = ["acme/app", "acme/lib-*"]
permission = "write"
max_ttl_seconds = 600

[[allow]]
issuer = "{iss}"
subject_pattern = "^repo:acme-org/.*$"
repos = ["acme/app"]
permission = "read"
"#,
        iss = issuer.url()
    )
}

fn runtime() -> tokio::runtime::Runtime {
    let _ = rustls::crypto::ring::default_provider().install_default();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// POSTs `body` to `path` with `bearer`; returns status, headers' Retry-After and JSON body.
fn post(
    broker: &Broker,
    path: &str,
    bearer: Option<&str>,
    body: &Value,
) -> (u16, Option<String>, Value) {
    runtime().block_on(async {
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let mut request = client.post(format!("{}{path}", broker.url)).json(body);
        if let Some(b) = bearer {
            request = request.bearer_auth(b);
        }
        let response = request.send().await.expect("the broker answers");
        let status = response.status().as_u16();
        let retry = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        let body: Value = response.json().await.unwrap_or(Value::Null);
        (status, retry, body)
    })
}

fn ask(repo: &str, permission: &str) -> Value {
    json!({"repo": repo, "permission": permission})
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A CI job on GitHub Actions: a world whose environment holds the ID-token
/// request variables, its issuer, and a broker trusting it (`policy_for`).
fn ci_job() -> (World, Issuer, Broker) {
    let mut job = World::new();
    let issuer = Issuer::start();
    let broker = start_broker(&job, &policy_for(&issuer)).unwrap();
    for (k, v) in issuer.actions_env() {
        job.set_env(k, &v);
    }
    (job, issuer, broker)
}

/// A valid claim set "signed" HS256 with the current key's public half (what
/// the JWKS shows) as the HMAC secret: the algorithm-confusion forgery.
fn hs256_keyed_with_public_key(issuer: &Issuer, kid: &str) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(
        &header,
        &issuer.claims(MAIN),
        &jsonwebtoken::EncodingKey::from_secret(&issuer.key().public).unwrap(),
    )
    .unwrap()
}

/// Asserts a refusal: status, error code, and words of its message.
#[track_caller]
fn refused(answer: (u16, Option<String>, Value), status: u16, error: &str, words: &str) {
    let (got, _, body) = answer;
    assert_eq!(got, status, "{body}");
    assert_eq!(body["error"], error, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(words),
        "{message:?} does not say {words:?}"
    );
    assert!(body.get("token").is_none(), "{body}");
    println!("{status} {error}: {message}");
}

#[test]
fn forged_misdirected_and_stale_id_tokens_are_refused_naming_the_check() {
    let world = World::new();
    let issuer = Issuer::start();
    let broker = start_broker(&world, &policy_for(&issuer)).unwrap();
    let exchanges = world.server.exchange_count();
    let body = ask("acme/app", "read");

    refused(
        post(&broker, "/v1/token", None, &body),
        401,
        "unauthenticated",
        "no Authorization",
    );
    refused(
        post(&broker, "/v1/token", Some("not-a-jwt"), &body),
        401,
        "invalid_token",
        "not a JWT",
    );

    // alg none: a header and claims, no signature.
    use base64::Engine;
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT", "kid": "key-1"})),
        b64(&issuer.claims(MAIN))
    );
    refused(
        post(&broker, "/v1/token", Some(&none), &body),
        401,
        "invalid_token",
        "alg",
    );

    // HS256 "signed" with the issuer's public key: the classic confusion.
    let hs = hs256_keyed_with_public_key(&issuer, "key-1");
    refused(
        post(&broker, "/v1/token", Some(&hs), &body),
        401,
        "invalid_token",
        "alg",
    );

    // A valid token whose signature was made by another key under the same kid.
    let good = issuer.token(MAIN);
    let mut parts: Vec<&str> = good.split('.').collect();
    let other = githosted_testkit::oidc::Issuer::start();
    let forged_sig = other.token(MAIN);
    parts[2] = forged_sig.rsplit('.').next().unwrap();
    refused(
        post(&broker, "/v1/token", Some(&parts.join(".")), &body),
        401,
        "invalid_token",
        "signature",
    );

    // Another issuer (its own valid keys): not one the policy names.
    refused(
        post(&broker, "/v1/token", Some(&other.token(MAIN)), &body),
        401,
        "invalid_token",
        "iss",
    );
    let mut claims = issuer.claims(MAIN);
    claims["iss"] = json!(other.url());
    refused(
        post(&broker, "/v1/token", Some(&issuer.sign(&claims)), &body),
        401,
        "invalid_token",
        "iss",
    );

    let mut claims = issuer.claims(MAIN);
    claims["aud"] = json!("someone-else");
    refused(
        post(&broker, "/v1/token", Some(&issuer.sign(&claims)), &body),
        401,
        "invalid_token",
        "aud",
    );

    let mut claims = issuer.claims(MAIN);
    claims["exp"] = json!(now() - 3600);
    refused(
        post(&broker, "/v1/token", Some(&issuer.sign(&claims)), &body),
        401,
        "invalid_token",
        "exp",
    );

    let mut claims = issuer.claims(MAIN);
    claims["nbf"] = json!(now() + 3600);
    refused(
        post(&broker, "/v1/token", Some(&issuer.sign(&claims)), &body),
        401,
        "invalid_token",
        "nbf",
    );

    // Unknown kid: one refetch of the keys, then refused; again at once: no refetch.
    let fetches = issuer.jwks_fetches();
    issuer.rotate("key-unpublished", false);
    refused(
        post(&broker, "/v1/token", Some(&issuer.token(MAIN)), &body),
        401,
        "invalid_token",
        "kid",
    );
    assert_eq!(
        issuer.jwks_fetches(),
        fetches + 1,
        "one refetch for an unknown kid"
    );
    refused(
        post(&broker, "/v1/token", Some(&issuer.token(MAIN)), &body),
        401,
        "invalid_token",
        "kid",
    );
    assert_eq!(
        issuer.jwks_fetches(),
        fetches + 1,
        "no second refetch within the cooldown"
    );

    assert_eq!(
        world.server.exchange_count(),
        exchanges,
        "a refused request reached the API"
    );
    let audit = broker.audit();
    assert!(audit.lines().count() >= 12, "{audit}");
    for line in audit.lines() {
        let v: Value = serde_json::from_str(line).expect("one JSON object per line");
        assert_eq!(v["outcome"], "refused", "{line}");
        assert!(
            v["time"].is_string() && v["request_id"].is_string(),
            "{line}"
        );
        assert!(
            !line.contains(&good) && !line.contains("eyJ"),
            "an ID token in the audit: {line}"
        );
    }
}

#[test]
fn the_policy_decides_subject_repo_permission_and_ttl() {
    let world = World::new();
    world.server.add_repo("acme", "lib-x");
    world.server.add_repo("acme", "secret");
    let issuer = Issuer::start();
    let broker = start_broker(&world, &policy_for(&issuer)).unwrap();
    let main = issuer.token(MAIN);
    let branch = issuer.token("repo:acme-org/app:ref:refs/heads/feature");
    let stranger = issuer.token("repo:evil-org/app:ref:refs/heads/main");

    refused(
        post(
            &broker,
            "/v1/token",
            Some(&stranger),
            &ask("acme/app", "read"),
        ),
        403,
        "subject_not_allowed",
        "subject",
    );
    refused(
        post(
            &broker,
            "/v1/token",
            Some(&main),
            &ask("acme/secret", "read"),
        ),
        403,
        "repo_not_allowed",
        "acme/secret",
    );
    refused(
        post(
            &broker,
            "/v1/token",
            Some(&branch),
            &ask("acme/app", "write"),
        ),
        403,
        "permission_not_allowed",
        "not write",
    );
    assert_eq!(
        world.server.exchange_count(),
        0,
        "a refused request reached the API"
    );

    // Allowed; a TTL above the rule's maximum is clamped to it.
    let (status, _, body) = post(
        &broker,
        "/v1/token",
        Some(&main),
        &json!({"repo": "acme/lib-x", "permission": "write", "ttl_seconds": 86400}),
    );
    assert_eq!(status, 200, "{body}");
    let token = body["token"].as_str().unwrap();
    assert!(token.starts_with("gr_"));
    let seen = world.server.exchanges();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].ttl_seconds, 600,
        "the TTL was not clamped to the rule's 600 s"
    );
    assert_eq!(seen[0].allowlist, vec!["lib-x".to_owned()]);
    let record = world.server.record_for(token).unwrap();
    assert_eq!(body["token_id"], record.id);
    // The id the helper keeps for /v1/revoke is a revocation handle naming the record.
    assert!(
        body["id"]
            .as_str()
            .unwrap()
            .starts_with(&format!("gbr1.{}.", record.id)),
        "{body}"
    );
    let expires = time::OffsetDateTime::parse(
        body["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert!(expires.unix_timestamp() <= now() as i64 + 601);
    // The read rule: any acme-org branch, read only, default TTL (the rule's 3600).
    let (status, _, body) = post(
        &broker,
        "/v1/token",
        Some(&branch),
        &ask("acme/app", "read"),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(world.server.exchanges()[1].ttl_seconds, 3600);

    let audit = broker.audit();
    let issued: Vec<Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &Value| v["outcome"] == "issued")
        .collect();
    assert_eq!(issued.len(), 2, "{audit}");
    assert_eq!(issued[0]["subject"], MAIN);
    assert_eq!(issued[0]["repo"], "acme/lib-x");
    assert_eq!(issued[0]["token_id"], record.id);
    assert!(
        issued[0]["fingerprint"]
            .as_str()
            .unwrap()
            .starts_with("gr_…")
    );
    assert!(!audit.contains(token), "a token in the audit");
}

#[test]
fn a_job_revokes_its_own_tokens_and_nobody_elses() {
    let world = World::new();
    let issuer = Issuer::start();
    let broker = start_broker(&world, &policy_for(&issuer)).unwrap();
    let main = issuer.token(MAIN);
    let other = issuer.token("repo:acme-org/other:ref:refs/heads/main");
    let (_, _, mine) = post(&broker, "/v1/token", Some(&main), &ask("acme/app", "read"));
    let id = mine["id"].as_str().unwrap().to_owned();
    let token_id = mine["token_id"].as_str().unwrap().to_owned();
    refused(
        post(&broker, "/v1/revoke", Some(&other), &json!({"id": id})),
        403,
        "not_yours",
        "your identity",
    );
    assert!(world.server.revoked_via_api().is_empty());
    let (status, _, body) = post(&broker, "/v1/revoke", Some(&main), &json!({"id": id}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(world.server.revoked_via_api(), vec![token_id]);
}

#[test]
fn faults_issuer_down_api_down_and_a_bad_policy() {
    let world = World::new();
    let issuer = Issuer::start();
    let broker = start_broker(&world, &policy_for(&issuer)).unwrap();
    let main = issuer.token(MAIN);
    let (status, _, body) = post(&broker, "/v1/token", Some(&main), &ask("acme/app", "read"));
    assert_eq!(status, 200, "{body}");
    // The issuer goes down: its cached keys still verify.
    issuer.set_down(true);
    let (status, _, body) = post(
        &broker,
        "/v1/token",
        Some(&issuer.token(MAIN)),
        &ask("acme/app", "read"),
    );
    assert_eq!(status, 200, "{body}");
    // The API goes down: 503 with Retry-After, no token.
    world.server.inject_fault(Fault::status(
        Some("ExchangeToken"),
        100,
        503,
        "unavailable",
    ));
    let (status, retry, body) = post(&broker, "/v1/token", Some(&main), &ask("acme/app", "read"));
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "api_unavailable", "{body}");
    assert!(retry.is_some(), "no Retry-After");
    world.server.clear_faults();

    // An invalid policy stops start-up with file, line and column.
    let bad = format!(
        "[[allow]]\nissuer = \"{}\"\nsubject = \"x\"\nrepos = [\"acme/app\"]\npermission = \"admin\"\n",
        issuer.url()
    );
    let error = start_broker(&world, &bad)
        .err()
        .expect("a broker with a bad policy started");
    assert!(error.contains(".toml:5:14:"), "{error}");
    // Plain http on a non-loopback address is refused.
    let mut cmd = world.command(helper());
    cmd.args(["broker", "--listen", "0.0.0.0:0", "--policy", "/dev/null"]);
    let run = world.run(cmd, None);
    assert!(!run.status.success());
    assert!(run.stderr.contains("--behind-proxy"), "{}", run.stderr);
}

#[test]
fn broker_check_explains_rules_and_decisions() {
    // `git-credential-githosted broker` runs githosted-broker: built, beside it.
    githosted_testkit::broker_program();
    let world = World::new();
    let issuer = Issuer::start();
    let policy = world.path("policy.toml");
    std::fs::write(&policy, policy_for(&issuer)).unwrap();
    let claims = world.path("claims.json");
    std::fs::write(
        &claims,
        issuer
            .claims("repo:acme-org/x:ref:refs/heads/dev")
            .to_string(),
    )
    .unwrap();
    let run = world.helper(
        &["broker", "check", "--policy", policy.to_str().unwrap()],
        None,
    );
    run.assert_ok();
    assert_eq!(run.stdout.lines().count(), 2, "{}", run.stdout);
    assert!(
        run.stdout.contains("rule 1")
            && run.stdout.contains(MAIN)
            && run.stdout.contains("acme/lib-*"),
        "{}",
        run.stdout
    );
    // A decision for the claims, for each permission.
    let decide = |permission: &str| {
        let (policy, claims) = (policy.to_str().unwrap(), claims.to_str().unwrap());
        world.helper(
            &[
                "broker",
                "check",
                "--policy",
                policy,
                "--claims",
                claims,
                "--repo",
                "acme/app",
                "--permission",
                permission,
            ],
            None,
        )
    };
    let run = decide("write");
    assert!(!run.status.success());
    assert!(
        run.stdout
            .contains("refused (permission): rule 2 allows read"),
        "{}",
        run.stdout
    );
    let run = decide("read");
    run.assert_ok();
    assert!(run.stdout.contains("allowed by rule 2"), "{}", run.stdout);
}

#[test]
fn a_ci_job_with_only_its_id_token_clones_and_pushes_through_the_broker() {
    // The job runs in a world whose environment holds nothing but the
    // ID-token request variables of GitHub Actions (the broker, started
    // above, got its parent through its own environment only).
    let (job, _issuer, broker) = ci_job();
    job.configure(&["--broker", &broker.url]);
    let config = std::fs::read_to_string(job.home.join(".gitconfig")).unwrap();
    assert!(
        config.contains(&format!("--broker {}", broker.url)),
        "{config}"
    );
    let server = &job.server;

    let url = server.repo_url("acme", "app");
    job.git(GIT_NEW, None, &["clone", &url, "app"]).assert_ok();
    let repo = job.path("app");
    std::fs::write(repo.join("ci.txt"), "built\n").unwrap();
    job.git(GIT_NEW, Some(&repo), &["add", "ci.txt"])
        .assert_ok();
    job.git(
        GIT_NEW,
        Some(&repo),
        &[
            "-c",
            "user.name=ci",
            "-c",
            "user.email=ci@example.com",
            "commit",
            "-m",
            "ci",
        ],
    )
    .assert_ok();
    job.git(GIT_NEW, Some(&repo), &["push", "origin", "HEAD"])
        .assert_ok();

    // Every token git used came from the broker, minted for this job's
    // identity, once: the agent served the push what it kept from the clone.
    let exchanges = server.exchanges();
    assert_eq!(exchanges.len(), 1, "{exchanges:?}");
    assert_eq!(broker.audit().matches(r#""outcome":"issued""#).count(), 1);
    assert!(
        exchanges
            .iter()
            .all(|e| e.subject.starts_with("githosted-broker:")),
        "{exchanges:?}"
    );
    // No workspace token in the job's files: git's config and the clone.
    for token in server.issued_tokens() {
        for file in [job.home.join(".gitconfig"), repo.join(".git/config")] {
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            assert!(!text.contains(&token), "a token in {}", file.display());
        }
    }
    // doctor in the clone: a dry run of the broker's decision, no token minted.
    let exchanges = server.exchange_count();
    let mut cmd = job.command(helper());
    cmd.current_dir(&repo).arg("doctor");
    let run = job.run(cmd, None);
    assert!(
        run.stdout
            .contains("read and write tokens for acme/app (rule 1, up to 600 s)"),
        "{}",
        run.stdout
    );
    assert_eq!(
        server.exchange_count(),
        exchanges,
        "the dry run minted a token"
    );
    // `token` is served from the agent too: the same token, no new exchange.
    let run = job.helper(&["token", "--repo", "acme/app"], None);
    run.assert_ok();
    let token = run.stdout.trim().to_owned();
    assert!(token.starts_with("gr_"), "not a repo token");
    assert_eq!(server.exchange_count(), exchanges);
    let id = server.exchanges()[0].minted.id.clone();

    // git rejects it (a 401): the agent forgets it and the broker revokes it.
    let mut reject = job.command(GIT_NEW);
    reject.current_dir(&repo).args(["credential", "reject"]);
    let host = server.host();
    let request =
        format!("protocol=http\nhost={host}\npath=acme/app.git\nusername=x\npassword={token}\n\n");
    job.run(reject, Some(&request)).assert_ok();
    assert_eq!(server.revoked_via_api(), vec![id.clone()]);
    assert!(
        broker
            .audit()
            .lines()
            .any(|l| l.contains(r#""outcome":"revoked""#) && l.contains(&id)),
        "{}",
        broker.audit()
    );
    let run = job.helper(&["token", "--repo", "acme/app"], None);
    run.assert_ok();
    assert_ne!(
        run.stdout.trim(),
        token,
        "the agent still served the rejected token"
    );
    assert_eq!(server.exchange_count(), exchanges + 1);

    // Wrong audience asked by the helper: the broker refuses, and git says which.
    // (A repo the agent holds no token for: a cached one would still be served.)
    job.configure(&["--broker", &broker.url, "--oidc-audience", "elsewhere"]);
    server.add_repo("acme", "lib-a");
    let run = job.git(
        GIT_NEW,
        Some(&repo),
        &["ls-remote", &server.repo_url("acme", "lib-a")],
    );
    assert!(!run.status.success());
    assert!(
        run.stderr.contains("refused (401 invalid_token): aud"),
        "{}",
        run.stderr
    );
    let _ = AUDIENCE;
    drop(broker);
    std::thread::sleep(Duration::from_millis(10));
}

#[test]
fn doctor_checks_the_broker_and_the_id_token_source() {
    let mut job = World::new();
    let issuer = Issuer::start();
    let broker = start_broker(&job, &policy_for(&issuer)).unwrap();
    job.configure(&["--broker", &broker.url]);
    // Not in a job: the broker is up, but there is no ID token to show it.
    let run = job.helper(&["doctor"], None);
    assert!(run.stdout.contains("is up"), "{}", run.stdout);
    assert!(
        run.stdout.contains("WARN no OIDC ID token here"),
        "{}",
        run.stdout
    );
    // No workspace token is wanted with a broker.
    assert!(!run.stdout.contains("login"), "{}", run.stdout);
    for (k, v) in issuer.actions_env() {
        job.set_env(k, &v);
    }
    let run = job.helper(&["doctor"], None);
    run.assert_ok();
    assert!(
        run.stdout.contains("ID token comes from GitHub Actions"),
        "{}",
        run.stdout
    );
    // The broker goes away: one FAIL with the fix.
    drop(broker);
    let run = job.helper(&["doctor"], None);
    assert!(!run.status.success());
    assert!(
        run.stdout.contains("does not answer") && run.stdout.contains("configure --broker"),
        "{}",
        run.stdout
    );
}

#[test]
fn the_broker_serves_https_with_its_certificate() {
    let world = World::new();
    let issuer = Issuer::start();
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    let cert_pem = certified.cert.pem();
    let (cert, key) = (world.path("broker.crt"), world.path("broker.key"));
    std::fs::write(&cert, &cert_pem).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let broker = start_broker_with(
        &world,
        &policy_for(&issuer),
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    )
    .unwrap();
    assert!(broker.url.starts_with("https://"), "{}", broker.url);
    let token = issuer.token(MAIN);
    let (https, http) = runtime().block_on(async {
        let client = reqwest::Client::builder()
            .no_proxy()
            .add_root_certificate(reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap())
            .build()
            .unwrap();
        let https = client
            .post(format!("{}/v1/token", broker.url))
            .bearer_auth(&token)
            .json(&ask("acme/app", "read"))
            .send()
            .await
            .map(|r| r.status().as_u16());
        // The same port in clear: no answer at all.
        let http = client
            .post(format!(
                "{}/v1/token",
                broker.url.replacen("https", "http", 1)
            ))
            .bearer_auth(&token)
            .json(&ask("acme/app", "read"))
            .send()
            .await
            .map(|r| r.status().as_u16());
        (https, http)
    });
    assert_eq!(https.unwrap(), 200);
    assert!(http.is_err(), "plain http was answered: {http:?}");
    // A certificate without its key is refused at start, with the option named.
    let error = start_broker_with(
        &world,
        &policy_for(&issuer),
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            cert.to_str().unwrap(),
        ],
    )
    .err()
    .expect("started with a certificate as its own key");
    assert!(error.contains("--tls-key"), "{error}");
}

/// A proxy in the job's environment never sees the ID token or the Actions
/// request token on their way to a loopback broker and endpoint (as the API's
/// own requests: security review, item 3).
#[test]
fn a_proxy_never_sees_the_jobs_id_token_on_loopback() {
    use std::net::TcpListener;
    let proxy = TcpListener::bind("127.0.0.1:0").unwrap();
    proxy.set_nonblocking(true).unwrap();
    let proxy_url = format!("http://{}", proxy.local_addr().unwrap());
    let (mut job, _issuer, broker) = ci_job();
    job.set_proxies(&proxy_url);
    job.configure(&["--broker", &broker.url]);
    let run = job.helper(&["token", "--repo", "acme/app"], None);
    run.assert_ok();
    assert!(run.stdout.starts_with("gr_"), "not a repo token");
    assert!(proxy.accept().is_err(), "the proxy got a connection");
}

#[test]
fn exec_with_a_broker_gives_one_repo_and_hides_the_jobs_identity() {
    // A job on GitHub Actions (request variables) and jobs with a token file
    // (absolute, relative, behind Kubernetes-style links): in each, the command
    // sees its repo token and nothing that gets another.
    let (mut job, issuer, broker) = ci_job();
    job.set_env("ACTIONS_RUNTIME_TOKEN", "the-job-token");
    let file = job.path("id-token");
    std::fs::write(&file, issuer.token(MAIN)).unwrap();
    // A projected volume: token -> ..data/token, ..data -> ..2026_12_04.
    let projected = job.path("projected");
    std::fs::create_dir_all(projected.join("..2026_12_04")).unwrap();
    let real = projected.join("..2026_12_04/token");
    std::fs::write(&real, issuer.token(MAIN)).unwrap();
    std::os::unix::fs::symlink("..2026_12_04", projected.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/token", projected.join("token")).unwrap();

    let clone_url = job.server.repo_url("acme", "app");
    let script = format!(
        r#"case "$GITHOSTED_TOKEN" in gr_*) echo scoped;; *) echo "not scoped";; esac
env | grep -c -e ACTIONS_ID_TOKEN -e ACTIONS_RUNTIME_TOKEN -e GITHOSTED_BROKER || true
for f in "$@"; do cat "$f" 2>/dev/null; echo; done | grep -c . || true
git ls-remote {clone_url} >/dev/null && echo git-ok
exit 7"#
    );
    let api = job.server.base_url();
    let (file, real) = (file.to_str().unwrap(), real.to_str().unwrap());
    let link = projected.join("token");
    let link = link.to_str().unwrap();
    for (source, readable, lines) in [
        // The file is this job's identity only when it is the source.
        (vec![], vec![file], 1),
        (vec!["--oidc-token-file", file], vec![file], 0),
        (vec!["--oidc-token-file", "id-token"], vec![file], 0),
        (vec!["--oidc-token-file", link], vec![link, real], 0),
    ] {
        let before = job.server.revoked_via_api().len();
        let mut args = vec!["--api-url", &api, "--broker", &broker.url];
        args.extend(&source);
        args.extend([
            "exec", "--repo", "acme/app", "--", "sh", "-c", &script, "sh",
        ]);
        args.extend(&readable);
        let run = job.helper(&args, None);
        assert_eq!(run.status.code(), Some(7), "{run:#?}");
        assert_eq!(
            run.stdout,
            format!("scoped\n0\n{lines}\ngit-ok\n"),
            "{source:?}: {}",
            run.stderr
        );
        // The token git used inside was the exec token, revoked through the broker.
        let exchange = job.server.exchanges().pop().unwrap();
        assert!(exchange.subject.starts_with("githosted-broker:"));
        let revoked = job.server.revoked_via_api();
        assert_eq!(revoked.len(), before + 1);
        assert_eq!(revoked.last(), Some(&exchange.minted.id));
    }
    // A file with a second name cannot be hidden: refused before anything is minted.
    std::fs::hard_link(file, job.path("second-name")).unwrap();
    let exchanges = job.server.exchange_count();
    let run = job.helper(
        &[
            "--api-url",
            &api,
            "--broker",
            &broker.url,
            "--oidc-token-file",
            file,
            "exec",
            "--repo",
            "acme/app",
            "--",
            "true",
        ],
        None,
    );
    assert!(!run.status.success());
    assert!(run.stderr.contains("hard links"), "{}", run.stderr);
    assert_eq!(job.server.exchange_count(), exchanges);
    // Several repos: the broker mints one per request, so exec says so.
    let run = job.helper(
        &[
            "--broker",
            &broker.url,
            "exec",
            "--repo",
            "acme/app",
            "--repo",
            "acme/lib-a",
            "--",
            "true",
        ],
        None,
    );
    assert!(!run.status.success());
    assert!(
        run.stderr.contains("name a single --repo"),
        "{}",
        run.stderr
    );
}

#[test]
fn two_jobs_on_one_agent_never_share_or_erase_each_others_tokens() {
    // A self-hosted runner: one user, one agent, two jobs with their own identities.
    let (mut world, issuer, broker) = ci_job();
    world.set_env("JOB_B_ID_TOKEN", &issuer.token(MAIN));
    let api = world.server.base_url();
    let job_a = ["--api-url", &api, "--broker", &broker.url];
    let job_b = [
        "--api-url",
        &api,
        "--broker",
        &broker.url,
        "--oidc-token-env",
        "JOB_B_ID_TOKEN",
    ];
    let token = |job: &[&str]| {
        let run = world.helper(&[job, &["token", "--repo", "acme/app"]].concat(), None);
        run.assert_ok();
        run.stdout.trim().to_owned()
    };
    let a = token(&job_a);
    let b = token(&job_b);
    assert_ne!(a, b, "job B was served job A's token");
    assert_eq!(world.server.exchange_count(), 2);
    assert_eq!(token(&job_a), a);
    assert_eq!(token(&job_b), b);
    assert_eq!(world.server.exchange_count(), 2, "not cached per job");

    // Job B's git erases everything for the host: only B's token goes, and
    // only B's is revoked.
    let host_only = format!("protocol=http\nhost={}\n\n", world.server.host());
    world
        .helper(&[&job_b[..], &["erase"]].concat(), Some(&host_only))
        .assert_ok();
    let b_id = world.server.exchanges()[1].minted.id.clone();
    assert_eq!(world.server.revoked_via_api(), vec![b_id]);
    assert_eq!(token(&job_a), a, "job A lost its token to job B's erase");
    assert_ne!(token(&job_b), b);
    assert_eq!(world.server.exchange_count(), 3);

    // Logged at trace level, a mint, an erase and its revocation through the
    // broker show no ID token (JWTs start `eyJ`) and no repo token.
    world.set_env("GITHOSTED_LOG", "trace");
    let mut logged = String::new();
    for (args, input) in [
        (
            &["token", "--repo", "acme/app", "--permission", "read"][..],
            None,
        ),
        (&["erase"][..], Some(host_only.as_str())),
    ] {
        let run = world.helper(&[&job_b[..], args].concat(), input);
        run.assert_ok();
        logged.push_str(&run.stderr);
    }
    assert!(logged.contains("revoked through the broker"), "{logged}");
    assert!(!logged.contains("eyJ"), "an ID token in the log: {logged}");
}

#[test]
fn rs256_id_tokens_verify_and_their_key_cannot_be_used_as_an_hmac_secret() {
    // GitHub and GitLab sign with RS256; the issuer rotates to an RSA key.
    let world = World::new();
    let issuer = Issuer::start();
    let broker = start_broker(&world, &policy_for(&issuer)).unwrap();
    let body = ask("acme/app", "read");
    let (status, _, answer) = post(&broker, "/v1/token", Some(&issuer.token(MAIN)), &body);
    assert_eq!(status, 200, "ES256: {answer}");
    issuer.rotate_to_rsa("rsa-1");
    let rs = issuer.token(MAIN);
    assert_eq!(
        jsonwebtoken::decode_header(&rs).unwrap().alg,
        jsonwebtoken::Algorithm::RS256
    );
    let (status, _, answer) = post(&broker, "/v1/token", Some(&rs), &body);
    assert_eq!(status, 200, "RS256: {answer}");
    assert!(
        answer["token"]
            .as_str()
            .is_some_and(|t| t.starts_with("gr_"))
    );

    // HS256 keyed with the RSA modulus the JWKS publishes: refused.
    let hs = hs256_keyed_with_public_key(&issuer, "rsa-1");
    refused(
        post(&broker, "/v1/token", Some(&hs), &body),
        401,
        "invalid_token",
        "alg",
    );
}

/// A policy allowing MAIN write on `repos` (TOML list items, quoted).
fn policy_allowing(issuer: &Issuer, repos: &str) -> String {
    format!(
        r#"
[[allow]]
issuer = "{iss}"
subject = "{MAIN}"
repos = [{repos}]
permission = "write"
"#,
        iss = issuer.url()
    )
}

/// GET `path`, within the client's 10 s timeout: status and body.
fn get(url: &str, path: &str) -> Result<(u16, String), String> {
    runtime().block_on(async {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let response = client
            .get(format!("{url}{path}"))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        Ok((status, response.text().await.unwrap_or_default()))
    })
}

#[test]
fn the_workspace_check_fails_closed_and_never_mints_for_another_workspace() {
    let mut world = World::new();
    let issuer = Issuer::start();
    // A shared policy: a rule for a workspace this broker does not serve.
    let policy = policy_allowing(&issuer, r#""acme/app", "sandbox/*""#);
    let main = issuer.token(MAIN);

    // The API cannot tell the parent's workspace (404, or `unimplemented`):
    // without --workspace the broker does not start, and says what to give.
    for (http, code) in [(404, "not_found"), (501, "unimplemented")] {
        world
            .server
            .inject_fault(Fault::status(Some("ListWorkspaces"), 100, http, code));
        let error = start_broker(&world, &policy)
            .err()
            .expect("a broker whose workspace nobody knows started");
        assert!(error.contains("--workspace WS"), "{error}");
        assert_eq!(error.trim().lines().count(), 1, "{error}");
        // Declared: it serves that workspace, and only that one, with no API call.
        let broker = start_broker_with(&world, &policy, &["--workspace", "acme"]).unwrap();
        let exchanges = world.server.exchange_count();
        refused(
            post(
                &broker,
                "/v1/token",
                Some(&main),
                &ask("sandbox/app", "write"),
            ),
            403,
            "repo_not_allowed",
            "not sandbox",
        );
        assert_eq!(world.server.exchange_count(), exchanges);
        let (status, _, body) = post(&broker, "/v1/token", Some(&main), &ask("acme/app", "read"));
        assert_eq!(status, 200, "{body}");
        world.server.clear_faults();
    }

    // The API answers: a declared workspace that differs is refused, never preferred.
    let error = start_broker_with(&world, &policy, &["--workspace", "sandbox"])
        .err()
        .expect("a broker declared for another workspace than its token's started");
    assert!(
        error.contains("is for workspace acme") && error.contains("--workspace acme"),
        "{error}"
    );
    // Told by the API: the same refusal without --workspace.
    let broker = start_broker(&world, &policy).unwrap();
    refused(
        post(
            &broker,
            "/v1/token",
            Some(&main),
            &ask("sandbox/app", "write"),
        ),
        403,
        "repo_not_allowed",
        "not sandbox",
    );
    drop(broker);

    // The API cannot be reached at start: a network error, named as one.
    let parent = world
        .server
        .seed_token("acme", githosted_testkit::TokenSpec::workspace_write());
    world.server.stop();
    let error = start_broker_configured(&world, &policy, &[], |cmd| {
        cmd.env("GITHOSTED_TOKEN", &parent);
    })
    .err()
    .expect("a broker started with its workspace unknown and the API unreachable");
    assert!(
        error.contains("nothing listens at") && error.contains("--workspace WS"),
        "{error}"
    );
}

#[test]
fn a_token_the_api_minted_in_another_workspace_is_revoked_and_never_handed_out() {
    let world = World::new();
    let issuer = Issuer::start();
    let broker = start_broker(&world, &policy_for(&issuer)).unwrap();
    let expires = time::OffsetDateTime::from_unix_timestamp(now() as i64 + 600)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let fake = format!("gr_{}", "x".repeat(40));
    world.server.inject_fault(Fault::raw_body(
        Some("ExchangeToken"),
        1,
        200,
        &json!({
            "token": fake,
            "record": {
                "id": "tk_elsewhere", "workspaceId": "ws_not_acme", "kind": "TOKEN_KIND_REPO",
                "permission": "PERMISSION_READ", "repoAllowlist": ["app"], "expiresAt": expires,
            }
        })
        .to_string(),
    ));
    let revokes = world.server.calls("RevokeToken");
    let (status, _, body) = post(
        &broker,
        "/v1/token",
        Some(&issuer.token(MAIN)),
        &ask("acme/app", "read"),
    );
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"], "wrong_workspace", "{body}");
    assert!(!body.to_string().contains(&fake), "{body}");
    assert_eq!(
        world.server.calls("RevokeToken"),
        revokes + 1,
        "the stray token was not revoked"
    );
}

#[test]
fn revoking_is_one_api_call_for_an_allowed_identity_and_nothing_for_a_stranger() {
    let world = World::new();
    let issuer = Issuer::start();
    let parent = world
        .server
        .seed_token("acme", githosted_testkit::TokenSpec::workspace_write());
    let with_parent = |cmd: &mut std::process::Command| {
        cmd.env("GITHOSTED_TOKEN", &parent);
    };
    let broker = start_broker_configured(&world, &policy_for(&issuer), &[], with_parent).unwrap();
    // A replica: same parent, no shared state.
    let replica = start_broker_configured(&world, &policy_for(&issuer), &[], with_parent).unwrap();
    // A workspace with a long history.
    for _ in 0..300 {
        world.server.seed_token(
            "acme",
            githosted_testkit::TokenSpec::repo(
                githosted_testkit::server::Permission::Read,
                &["app"],
                None,
            ),
        );
    }
    let main = issuer.token(MAIN);
    let (status, _, mine) = post(&broker, "/v1/token", Some(&main), &ask("acme/app", "read"));
    assert_eq!(status, 200, "{mine}");
    let handle = mine["id"].as_str().unwrap().to_owned();
    let token_id = mine["token_id"].as_str().unwrap().to_owned();
    let api_calls = |w: &World| w.server.calls("ListTokens") + w.server.calls("RevokeToken");
    let before = api_calls(&world);

    // An identity no rule allows: 403 before any API call, then 429 with Retry-After.
    let stranger = issuer.token("repo:evil-org/app:ref:refs/heads/main");
    let mut limited = None;
    for attempt in 0..60 {
        let (status, retry, body) = post(
            &broker,
            "/v1/revoke",
            Some(&stranger),
            &json!({ "id": handle }),
        );
        match status {
            403 => assert_eq!(body["error"], "subject_not_allowed", "{body}"),
            429 => {
                assert!(retry.is_some(), "429 without Retry-After");
                limited = Some(attempt);
                break;
            }
            other => panic!("{other}: {body}"),
        }
    }
    let limited = limited.expect("60 revocations from a stranger were never rate-limited");
    println!("the stranger was limited after {limited} revocations");
    // The same for a stranger's token requests; an allowed subject's are never limited.
    let mut limited = false;
    for _ in 0..60 {
        let (status, retry, body) = post(
            &broker,
            "/v1/token",
            Some(&stranger),
            &ask("acme/app", "read"),
        );
        if status == 429 {
            assert!(retry.is_some(), "429 without Retry-After");
            limited = true;
            break;
        }
        assert_eq!(status, 403, "{body}");
    }
    assert!(limited, "60 refused token requests were never rate-limited");
    assert_eq!(
        api_calls(&world),
        before,
        "a stranger's requests reached the API"
    );

    // Another allowed identity, a forged handle, a bare record id: not theirs.
    let other = issuer.token("repo:acme-org/other:ref:refs/heads/main");
    let mut forged = handle.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == '0' { '1' } else { '0' });
    for (who, id) in [
        (&other, handle.as_str()),
        (&main, forged.as_str()),
        (&main, token_id.as_str()),
    ] {
        refused(
            post(&broker, "/v1/revoke", Some(who), &json!({ "id": id })),
            403,
            "not_yours",
            "your identity",
        );
    }
    assert_eq!(
        api_calls(&world),
        before,
        "a refused revocation reached the API"
    );

    // The owner, at the other replica: one RevokeToken, no ListTokens.
    let (status, _, body) = post(
        &replica,
        "/v1/revoke",
        Some(&main),
        &json!({ "id": handle }),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(world.server.revoked_via_api(), vec![token_id]);
    assert_eq!(world.server.calls("ListTokens"), 0);
    assert_eq!(api_calls(&world), before + 1);
    // An allowed subject's CI fleet is one subject: its token requests are not limited.
    for _ in 0..40 {
        let (status, _, body) = post(&broker, "/v1/token", Some(&main), &ask("acme/app", "read"));
        assert_eq!(status, 200, "{body}");
    }
}

#[test]
#[allow(unsafe_code)] // its broker's lower open-files limit, set in the child
fn two_thousand_half_open_connections_leave_healthz_answering() {
    use std::os::unix::process::CommandExt;
    let world = World::new();
    let issuer = Issuer::start();
    let hard = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .maximum
        .unwrap_or(u64::MAX);
    if hard < 4096 {
        println!(
            "ignored: the hard limit of open files is {hard}, below the 2,000 connections and the broker's own"
        );
        return;
    }
    let broker = start_broker_configured(&world, &policy_for(&issuer), &[], |cmd| {
        // SAFETY: setrlimit is async-signal-safe; nothing else runs in the child.
        unsafe {
            cmd.pre_exec(|| {
                let hard = rustix::process::getrlimit(rustix::process::Resource::Nofile).maximum;
                rustix::process::setrlimit(
                    rustix::process::Resource::Nofile,
                    rustix::process::Rlimit {
                        current: Some(1024),
                        maximum: hard,
                    },
                )
                .map_err(std::io::Error::from)
            });
        }
    })
    .unwrap();
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", broker.pid())).unwrap();
    let open_files: Vec<&str> = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(
        open_files[3], open_files[4],
        "the broker left its soft limit of open files below the hard limit: {limits}"
    );

    let addr: std::net::SocketAddr = broker.url.trim_start_matches("http://").parse().unwrap();
    let rt = runtime();
    let flood = rt.block_on(async {
        use tokio::io::AsyncWriteExt;
        let mut tasks = Vec::new();
        for _ in 0..2000 {
            tasks.push(tokio::spawn(async move {
                let mut stream = tokio::time::timeout(
                    Duration::from_secs(3),
                    tokio::net::TcpStream::connect(addr),
                )
                .await
                .ok()?
                .ok()?;
                stream
                    .write_all(b"POST /v1/token HTTP/1.1\r\nHost: broker\r\nContent-")
                    .await
                    .ok()?;
                Some(stream)
            }));
        }
        let mut open = Vec::new();
        for task in tasks {
            if let Ok(Some(stream)) = task.await {
                open.push(stream);
            }
        }
        open
    });
    println!("{} half-open connections", flood.len());
    assert!(
        flood.len() >= 1900,
        "only {} connections opened",
        flood.len()
    );

    // Under the flood, /healthz answers (within the client's 10 s timeout).
    let (status, body) =
        get(&broker.url, "/healthz").expect("/healthz did not answer under the flood");
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    // A real request is served, or shed with a 503 and Retry-After: never left hanging.
    let (status, retry, body) = post(&broker, "/v1/token", None, &ask("acme/app", "read"));
    assert!(
        status == 401 || (status == 503 && retry.is_some()),
        "{status} {retry:?} {body}"
    );

    // A half-sent request head is dropped by the broker (header-read timeout
    // of at most 10 s; the bound here is generous).
    let dropped = rt.block_on(async {
        use tokio::io::AsyncReadExt;
        let mut stream = flood.into_iter().next().unwrap();
        let mut buf = [0u8; 1024];
        loop {
            match tokio::time::timeout(Duration::from_secs(30), stream.read(&mut buf)).await {
                Err(_) => return false,
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                // A 408 or the like before closing: read on.
                Ok(Ok(_)) => {}
            }
        }
    });
    assert!(
        dropped,
        "a half-sent request head was still open after 30 s"
    );
}

#[test]
fn an_issuer_down_at_start_is_asked_once_and_a_hanging_fetch_blocks_no_cached_key() {
    let world = World::new();
    let issuer = Issuer::start();
    issuer.set_down(true);
    let broker = start_broker(&world, &policy_for(&issuer)).unwrap();
    for _ in 0..30 {
        refused(
            post(
                &broker,
                "/v1/token",
                Some(&issuer.token(MAIN)),
                &ask("acme/app", "read"),
            ),
            401,
            "keys_unavailable",
            "unavailable",
        );
    }
    assert_eq!(
        issuer.discovery_requests(),
        1,
        "each request asked the issuer that is down"
    );
    drop(broker);

    // Keys cached; then a token with an unknown kid makes the broker fetch
    // from an issuer that hangs: a token whose key is cached does not wait.
    let issuer = Issuer::start();
    let broker = start_broker(&world, &policy_for(&issuer)).unwrap();
    let cached = issuer.token(MAIN);
    let (status, _, body) = post(
        &broker,
        "/v1/token",
        Some(&cached),
        &ask("acme/app", "read"),
    );
    assert_eq!(status, 200, "{body}");
    issuer.rotate("key-unpublished", false);
    issuer.set_hang(true);
    let unknown = issuer.token(MAIN);
    let url = broker.url.clone();
    let waiting = std::thread::spawn(move || {
        let broker_url = url;
        runtime().block_on(async {
            reqwest::Client::builder()
                .no_proxy()
                .build()
                .unwrap()
                .post(format!("{broker_url}/v1/token"))
                .bearer_auth(unknown)
                .json(&ask("acme/app", "read"))
                .send()
                .await
                .map(|r| r.status().as_u16())
                .ok()
        })
    });
    for _ in 0..200 {
        if issuer.hanging() > 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        issuer.hanging(),
        1,
        "the broker never fetched the keys again"
    );
    let (status, _, body) = post(
        &broker,
        "/v1/token",
        Some(&cached),
        &ask("acme/app", "read"),
    );
    assert_eq!(status, 200, "{body}");
    assert!(
        !waiting.is_finished() && issuer.hanging() == 1,
        "the request with a cached key waited for the fetch"
    );
    issuer.set_hang(false);
    assert_eq!(waiting.join().unwrap(), Some(401));
    // Within the cooldown: an unknown kid is refused at once, with no fetch.
    let discoveries = issuer.discovery_requests();
    refused(
        post(
            &broker,
            "/v1/token",
            Some(&issuer.token(MAIN)),
            &ask("acme/app", "read"),
        ),
        401,
        "invalid_token",
        "kid",
    );
    assert_eq!(issuer.discovery_requests(), discoveries);
}

#[test]
fn repo_ids_and_other_non_slugs_are_refused_before_the_policy() {
    let world = World::new();
    world.server.add_repo("acme", "ops");
    let issuer = Issuer::start();
    // "All but ops".
    let broker = start_broker(&world, &policy_allowing(&issuer, r#""acme/[!o]*""#)).unwrap();
    let main = issuer.token(MAIN);
    let ops_id = world.server.repo_id("acme", "ops");
    assert!(ops_id.starts_with("rp_"), "{ops_id}");
    for repo in [
        format!("acme/{ops_id}"),
        "acme/app/x".into(),
        "acme/.git".into(),
        "acme/a b".into(),
        "acme".into(),
    ] {
        refused(
            post(&broker, "/v1/token", Some(&main), &ask(&repo, "write")),
            400,
            "invalid_request",
            "only slugs are accepted",
        );
    }
    refused(
        post(&broker, "/v1/token", Some(&main), &ask("acme/ops", "write")),
        403,
        "repo_not_allowed",
        "acme/ops",
    );
    assert_eq!(world.server.exchange_count(), 0);
}

#[test]
fn a_long_kid_is_not_echoed_and_the_shared_audience_is_warned_about() {
    let world = World::new();
    let issuer = Issuer::start();
    let broker = start_broker(&world, &policy_for(&issuer)).unwrap();
    let kid = "k".repeat(3000);
    // Signed by the issuer's key, under a kid it never published.
    let token = {
        issuer.rotate(&kid, false);
        issuer.token(MAIN)
    };
    let (status, _, body) = post(&broker, "/v1/token", Some(&token), &ask("acme/app", "read"));
    assert_eq!(status, 401, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("kid"), "{message}");
    assert!(
        message.len() < 300,
        "{} bytes echoed: {message}",
        message.len()
    );
    assert!(
        !broker.audit().contains(&"k".repeat(100)),
        "the kid in the audit"
    );

    // Started with the shared default audience: a warning after the listening line.
    let stderr_of = |audience: Option<&str>| {
        use std::io::{BufRead, BufReader};
        let policy = world.path(&format!("aud-{}.toml", rand::random::<u32>()));
        std::fs::write(&policy, policy_for(&issuer)).unwrap();
        let parent = world
            .server
            .seed_token("acme", githosted_testkit::TokenSpec::workspace_write());
        let mut cmd = world.command(githosted_testkit::helper());
        cmd.args(["broker", "--listen", "127.0.0.1:0", "--policy"])
            .arg(&policy)
            .args(["--api-url", &world.server.base_url()])
            .args(audience.map(|a| vec!["--audience", a]).unwrap_or_default())
            .env("GITHOSTED_TOKEN", &parent)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut lines = String::new();
        stderr.read_line(&mut lines).unwrap();
        assert!(lines.contains("listening on"), "{lines}");
        if audience.is_none() {
            stderr.read_line(&mut lines).unwrap();
        }
        let _ = child.kill();
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut rest);
        let _ = child.wait();
        lines + &rest
    };
    let shared = stderr_of(None);
    assert!(
        shared.contains("shared default audience") && shared.contains("--audience"),
        "{shared}"
    );
    let own = stderr_of(Some("https://broker.example.com"));
    assert!(!own.contains("warning"), "{own}");
}

#[test]
fn configure_writes_the_oidc_audience_whenever_it_is_given() {
    let world = World::new();
    world.configure(&[
        "--broker",
        "https://broker.example.com",
        "--oidc-audience",
        AUDIENCE,
    ]);
    let config = std::fs::read_to_string(world.home.join(".gitconfig")).unwrap();
    assert!(
        config.contains(&format!("--oidc-audience {AUDIENCE}")),
        "{config}"
    );
}

#[test]
fn a_dead_parent_stops_start_up_and_a_refused_one_turns_healthz_503() {
    let world = World::new();
    let issuer = Issuer::start();
    let policy = policy_for(&issuer);
    let file = world.path("parent");
    let dead = world
        .server
        .seed_token("acme", githosted_testkit::TokenSpec::workspace_write());
    world.server.revoke(&dead);
    for token in [dead.clone(), format!("gw_{}", "0".repeat(40))] {
        std::fs::write(&file, &token).unwrap();
        let error = start_broker_with(&world, &policy, &["--token-file", file.to_str().unwrap()])
            .err()
            .expect("a broker with a dead parent started");
        assert!(
            error.contains("--token-file") && error.contains("401"),
            "{error}"
        );
        assert!(!error.contains(&token), "the token in: {error}");
        assert_eq!(error.trim().lines().count(), 1, "{error}");
    }

    let live = world
        .server
        .seed_token("acme", githosted_testkit::TokenSpec::workspace_write());
    std::fs::write(&file, &live).unwrap();
    let broker =
        start_broker_with(&world, &policy, &["--token-file", file.to_str().unwrap()]).unwrap();
    let main = issuer.token(MAIN);
    // The API down: jobs get 503, the broker stays healthy.
    world.server.inject_fault(Fault::status(
        Some("ExchangeToken"),
        100,
        503,
        "unavailable",
    ));
    let (status, retry, body) = post(&broker, "/v1/token", Some(&main), &ask("acme/app", "read"));
    assert_eq!((status, retry.is_some()), (503, true), "{body}");
    assert_eq!(get(&broker.url, "/healthz").unwrap().0, 200);
    world.server.clear_faults();
    // The API refuses the parent: /healthz says so.
    world.server.revoke(&live);
    let (status, _, body) = post(&broker, "/v1/token", Some(&main), &ask("acme/app", "read"));
    assert_eq!(status, 502, "{body}");
    let (status, body) = get(&broker.url, "/healthz").unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("parent_refused"), "{body}");
    // A mounted secret, not a token left behind.
    std::fs::remove_file(&file).unwrap();
}

#[test]
fn broker_check_warns_about_issuers_and_foreign_workspaces_and_works_offline() {
    // `git-credential-githosted broker` runs githosted-broker: built, beside it.
    githosted_testkit::broker_program();
    let world = World::new();
    let issuer = Issuer::start();
    let write = |name: &str, text: &str| {
        let path = world.path(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    };
    // A trailing slash: every job would get 401.
    let slash = write(
        "slash.toml",
        &policy_for(&issuer).replace(&issuer.url(), &format!("{}/", issuer.url())),
    );
    let run = world.helper(&["broker", "check", "--policy", &slash], None);
    run.assert_ok();
    assert!(run.stdout.contains("ends in /"), "{}", run.stdout);
    assert!(
        run.stdout.contains("its discovery document names issuer"),
        "{}",
        run.stdout
    );
    // Offline: an issuer nobody answers for is a warning, rc 0.
    let offline = write(
        "offline.toml",
        &policy_allowing(&issuer, r#""acme/app", "sandbox/*""#)
            .replace(&issuer.url(), "https://127.0.0.1:1"),
    );
    let run = world.helper(
        &[
            "broker",
            "check",
            "--policy",
            &offline,
            "--workspace",
            "acme",
        ],
        None,
    );
    run.assert_ok();
    assert!(
        run.stdout.contains("could not be checked"),
        "{}",
        run.stdout
    );
    // A rule for another workspace than --workspace.
    assert!(
        run.stdout
            .contains("rule 1 names sandbox/*, not in workspace acme"),
        "{}",
        run.stdout
    );
    // Claims without iss.
    let claims = write("claims.json", r#"{"sub": "x"}"#);
    let run = world.helper(
        &[
            "broker", "check", "--policy", &offline, "--claims", &claims, "--repo", "acme/app",
        ],
        None,
    );
    assert!(!run.status.success());
    assert!(run.stdout.contains("no \"iss\" claim"), "{}", run.stdout);
}

#[test]
fn a_request_whose_body_never_ends_gets_a_json_503_at_the_deadline() {
    let world = World::new();
    let issuer = Issuer::start();
    let broker = start_broker(&world, &policy_for(&issuer)).unwrap();
    let addr: std::net::SocketAddr = broker.url.trim_start_matches("http://").parse().unwrap();
    let answer = runtime().block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(
                format!(
                    "POST /v1/token HTTP/1.1\r\nHost: broker\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"repo\":",
                    issuer.token(MAIN)
                )
                .as_bytes(),
            )
            .await
            .unwrap();
        // The rest of the body never comes. The bound is generous: the
        // broker's deadline is at most 30 s.
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_secs(60), stream.read(&mut buf)).await
        {
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
            if answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.ends_with(b"}") {
                break;
            }
        }
        String::from_utf8_lossy(&answer).into_owned()
    });
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer:?}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after") && answer.contains("\"deadline\""),
        "{answer:?}"
    );
    assert_eq!(world.server.exchange_count(), 0);
}

/// `git-credential-githosted broker ARGS…` (what deployments run) becomes
/// `githosted-broker ARGS…` in the same process: the pid the caller started
/// is the broker's program, with its output and exit status.
#[cfg(target_os = "linux")]
#[test]
fn the_helpers_broker_command_is_the_broker_program_in_the_same_process() {
    use std::io::{BufRead, BufReader};
    let world = World::new();
    let issuer = Issuer::start();
    let broker = broker_program();
    let policy = world.path("policy.toml");
    std::fs::write(&policy, policy_for(&issuer)).unwrap();
    let parent = world
        .server
        .seed_token("acme", githosted_testkit::TokenSpec::workspace_write());
    let mut cmd = world.command(helper());
    cmd.args(["broker", "--listen", "127.0.0.1:0", "--policy"])
        .arg(&policy)
        .args(["--api-url", &world.server.base_url()])
        .env("GITHOSTED_TOKEN", &parent)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    // Serving: so it found the workspace token the helper was started with.
    assert!(line.starts_with("githosted-broker: listening on"), "{line}");
    let exe = std::fs::read_link(format!("/proc/{}/exe", child.id())).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        exe.file_name().and_then(|n| n.to_str()),
        Some("githosted-broker"),
        "the process git-credential-githosted started is {}",
        exe.display()
    );

    // The same output and exit status as the program run directly.
    let bad = world.path("bad.toml");
    std::fs::write(&bad, "[[allow]]\nissuer = 1\n").unwrap();
    let args = ["check", "--policy", bad.to_str().unwrap()];
    let through = world.helper(&[&["broker"][..], &args[..]].concat(), None);
    let mut direct = world.command(broker);
    direct.args(args);
    let direct = world.run(direct, None);
    assert!(!direct.ok(), "{}", direct.stderr);
    assert_eq!(through.status.code(), direct.status.code());
    assert_eq!(through.stdout, direct.stdout);
    assert_eq!(through.stderr, direct.stderr);
    // Its help is the broker program's.
    let help = world.helper(&["broker", "--help"], None);
    help.assert_ok();
    assert!(help.stdout.contains("githosted-broker"), "{}", help.stdout);
}

/// Without the broker program beside it, `broker` says in one line how to get it.
#[test]
fn the_helpers_broker_command_says_how_to_get_the_broker_when_it_is_missing() {
    let world = World::new();
    let dir = world.path("bin");
    std::fs::create_dir(&dir).unwrap();
    let built = std::path::Path::new(helper());
    for program in ["git-credential-githosted", "git-credential-githosted-core"] {
        std::fs::copy(built.with_file_name(program), dir.join(program)).unwrap();
    }
    let mut cmd = world.command(dir.join("git-credential-githosted"));
    cmd.args(["broker", "check", "--policy", "/dev/null"]);
    let run = world.run(cmd, None);
    assert!(!run.ok());
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("githosted-broker")
            && run.stderr.contains("./install")
            && run
                .stderr
                .contains("cargo build --release -p githosted-broker"),
        "{}",
        run.stderr
    );
}

/// The broker's own program refuses a token pasted as an argument, as the
/// helper does, without repeating it.
#[test]
fn the_broker_program_refuses_a_token_given_as_an_argument() {
    let world = World::new();
    let token = world
        .server
        .seed_token("acme", githosted_testkit::TokenSpec::workspace_write());
    let mut cmd = world.command(broker_program());
    cmd.args(["--policy", "/dev/null", "--token-file", &token]);
    let run = world.run(cmd, None);
    assert_eq!(run.status.code(), Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("--token-file PATH"), "{}", run.stderr);
    assert!(!run.stderr.contains(&token) && !run.stdout.contains(&token));
}
