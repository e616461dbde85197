//! The benchmark itself (Unix: the testkit harness); see `../broker.rs`.

use std::time::{Duration, Instant};

use githosted_testkit::World;
use githosted_testkit::oidc::{Issuer, start_broker};

const REQUESTS: usize = 2000;
const CLIENTS: usize = 64;

pub fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    println!("git-credential-githosted broker benchmark");
    println!(
        "machine: nproc {}, load average at start: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        loadavg()
    );
    let world = World::new();
    let issuer = Issuer::start();
    let policy = format!(
        "[[allow]]\nissuer = \"{}\"\nsubject_pattern = \"^job-.*$\"\nrepos = [\"acme/app\"]\npermission = \"write\"\nmax_ttl_seconds = 600\n",
        issuer.url()
    );
    let broker = start_broker(&world, &policy).expect("the broker starts");
    let tokens: Vec<String> = (0..CLIENTS)
        .map(|i| issuer.token(&format!("job-{i}")))
        .collect();
    let url = format!("{}/v1/token", broker.url);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // One request first: the broker fetches the issuer's keys (its workspace is settled at start).
    runtime.block_on(ask(&reqwest::Client::new(), &url, &tokens[0]));
    let exchanges_before = world.server.exchange_count();
    let calls_before = world.server.api_calls().len();

    let started = Instant::now();
    let latencies: Vec<Duration> = runtime.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for (i, token) in tokens.iter().enumerate() {
            let n = REQUESTS / CLIENTS + usize::from(i < REQUESTS % CLIENTS);
            let (url, token) = (url.clone(), token.clone());
            tasks.spawn(async move {
                let client = reqwest::Client::builder()
                    .no_proxy()
                    .build()
                    .expect("client");
                let mut mine = Vec::with_capacity(n);
                for _ in 0..n {
                    let t = Instant::now();
                    ask(&client, &url, &token).await;
                    mine.push(t.elapsed());
                }
                mine
            });
        }
        let mut all = Vec::with_capacity(REQUESTS);
        while let Some(done) = tasks.join_next().await {
            all.extend(done.expect("a client"));
        }
        all
    });
    let wall = started.elapsed();
    let exchanges = world.server.exchange_count() - exchanges_before;
    let mut api: Vec<Duration> = world.server.api_calls()[calls_before..]
        .iter()
        .filter(|c| c.method == "ExchangeToken")
        .map(|c| c.elapsed)
        .collect();
    let mut latencies = latencies;
    latencies.sort();
    api.sort();
    let (rss, hwm) = memory(broker.pid());

    println!();
    println!(
        "{REQUESTS} token requests, {CLIENTS} concurrent clients (one ID token each), keep-alive"
    );
    println!(
        "    throughput            {:>8.0} requests/s ({:.2} s)",
        REQUESTS as f64 / wall.as_secs_f64(),
        wall.as_secs_f64()
    );
    println!("    {:<22}{:>10}{:>10}", "", "p50", "p99");
    println!(
        "    {:<22}{:>10}{:>10}",
        "broker, end to end",
        ms(pct(&latencies, 50)),
        ms(pct(&latencies, 99))
    );
    println!(
        "    {:<22}{:>10}{:>10}",
        "API handler time",
        ms(pct(&api, 50)),
        ms(pct(&api, 99))
    );
    println!(
        "    {:<22}{:>10}",
        "broker over API (p50)",
        ms(pct(&latencies, 50).saturating_sub(pct(&api, 50)))
    );
    println!("    exchanges             {exchanges} for {REQUESTS} requests (one each)");
    println!("    broker memory         VmRSS {rss}, VmHWM {hwm}");
    println!("load average at end: {}", loadavg());
    assert_eq!(exchanges, REQUESTS, "one exchange per request");
}

async fn ask(client: &reqwest::Client, url: &str, token: &str) {
    let response = client
        .post(url)
        .bearer_auth(token)
        .json(&serde_json::json!({"repo": "acme/app", "permission": "read"}))
        .send()
        .await
        .expect("the broker answers");
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
}

fn pct(sorted: &[Duration], p: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = (sorted.len() * p / 100).min(sorted.len() - 1);
    sorted[i]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn memory(pid: u32) -> (String, String) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or("?".to_owned(), |kb| format!("{:.1} MiB", kb / 1024.0))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
