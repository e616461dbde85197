//! The benchmark itself (Unix: the agent is a Unix socket); see `../agent.rs`.
//! Every scenario runs in a testkit `World` (private HOME and runtime dir, the
//! local githosted-compatible server), as the tests do.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use githosted_testkit::{World, helper, request};

const GIT: &str = "/usr/local/bin/git";

/// (a): measured rounds and warm-up rounds.
const WARM_ROUNDS: usize = 200;
const WARM_UP: usize = 20;
/// (b): runs per case.
const COLD_RUNS: usize = 30;
/// (c): processes per burst, bursts.
const BURST: usize = 64;
const BURSTS: usize = 5;
/// (d): tokens in the full cache.
const MANY: usize = 1000;

pub fn main() {
    let started = Instant::now();
    println!("git-credential-githosted agent benchmark");
    link_front_as_installed();
    machine_info();
    warm_fill();
    cold_get();
    concurrent_cold_gets();
    agent_memory();
    println!();
    println!(
        "bench run time: {:.1} s; load average at end: {}",
        started.elapsed().as_secs_f64(),
        loadavg()
    );
}

/// Runs `cmd` with `input` on stdin; its wall time and output.
fn timed(mut cmd: Command, input: &str) -> (Duration, Output) {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd.spawn().expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write stdin");
    let output = child.wait_with_output().expect("wait");
    (started.elapsed(), output)
}

fn password(what: &str, output: &Output) -> String {
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("password="))
        .unwrap_or_else(|| {
            panic!(
                "{what}: no password: {}",
                String::from_utf8_lossy(&output.stderr)
            )
        })
        .to_owned()
}

fn sorted(values: &[f64]) -> Vec<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v
}

fn median(values: &[f64]) -> f64 {
    percentile(values, 0.5)
}

fn percentile(values: &[f64], p: f64) -> f64 {
    let v = sorted(values);
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn first_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_owned()
        })
        .unwrap_or_else(|_| "(not found)".into())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn machine_info() {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    println!(
        "machine: nproc {}, {cpu}, {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        first_line("uname", &["-sr"])
    );
    println!("git: {GIT} = {}", first_line(GIT, &["--version"]));
    let size = |name: &str| {
        let path = Path::new(helper()).with_file_name(name);
        std::fs::metadata(path).map_or(0, |m| m.len()) as f64 / 1048576.0
    };
    println!(
        "helper: {} ({:.2} MiB, {}), core beside it ({:.1} MiB), agent ({:.1} MiB)",
        helper(),
        size("git-credential-githosted"),
        linkage(helper()),
        size("git-credential-githosted-core"),
        size("git-credential-githosted-agent"),
    );
    println!("load average at start: {}", loadavg());
}

/// Links the front as `./install` does (statically, on Linux), unless an
/// installed copy is measured (`GITHOSTED_BENCH_HELPER`).
fn link_front_as_installed() {
    if !cfg!(target_os = "linux") || std::env::var_os("GITHOSTED_BENCH_HELPER").is_some() {
        return;
    }
    let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["rustc", "--release", "--locked", "--quiet"])
        .args(["--bin", "git-credential-githosted", "--"])
        .args(["-C", "target-feature=+crt-static"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("cargo");
    if !status.success() {
        println!("note: the front could not be linked statically; measuring it as built");
    }
}

/// On Linux, whether the front runs without the dynamic loader: asked to
/// list its libraries (what `ldd` does), a dynamic one lists them instead.
fn linkage(program: &str) -> &'static str {
    if !cfg!(target_os = "linux") {
        return "as built";
    }
    let mut cmd = Command::new(program);
    // (Nothing that makes the front hand over to the dynamic core.)
    cmd.arg("get")
        .env("LD_TRACE_LOADED_OBJECTS", "1")
        .env_remove("GITHOSTED_LOG")
        .env_remove("GITHOSTED_NO_AGENT");
    let (_, out) = timed(cmd, "protocol=https\nhost=example.com\n\n");
    match out.status.success() && out.stdout.is_empty() {
        true => "static",
        false => "dynamic",
    }
}

/// Builds the std-only floor helper (`floor.rs`) with rustc.
fn build_floor(dir: &Path) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/agent/floor.rs");
    let out = dir.join("floor");
    let status = Command::new("rustc")
        .args(["-O", "--edition", "2024", "-o"])
        .arg(&out)
        .arg(&source)
        .status()
        .expect("rustc");
    assert!(status.success(), "building {}", source.display());
    out
}

/// (a) `git credential fill`, as git runs the helper before a fetch or push:
/// `helper = cache` with the credential stored, our configured line with a
/// token in the agent, and the std-only floor; interleaved, in random order.
fn warm_fill() {
    let mut world = World::configured(&[]);
    world.with_env_parent();
    let floor = build_floor(world.dir.path());
    let floor_socket = world.path("floor.sock");
    let listener = std::os::unix::net::UnixListener::bind(&floor_socket).expect("floor socket");
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let mut conn = conn;
            let mut byte = [0u8; 1];
            let _ = std::io::Read::read(&mut conn, &mut byte);
            let _ = conn.write_all(b"y");
        }
    });
    world.set_env("FLOOR_SOCKET", &floor_socket.to_string_lossy());
    let ours_input = request("http", &world.server.host(), Some("acme/app.git"));
    let cache_input = request("https", "cache.test", Some("acme/app.git"));
    let floor_input = request("https", "floor.test", Some("acme/app.git"));
    let fill = |config: &[&str]| {
        let mut cmd = world.command(GIT);
        for c in config {
            cmd.args(["-c", c]);
        }
        cmd.args(["credential", "fill"]);
        cmd
    };
    // Prime the agent, and git's cache daemon with a stored credential.
    password("prime ours", &timed(fill(&[]), &ours_input).1);
    let mut approve = world.command(GIT);
    approve.args(["-c", "credential.helper=cache", "credential", "approve"]);
    timed(
        approve,
        &format!("{cache_input}username=u\npassword=cache-password\n"),
    );
    let floor_line = format!("credential.helper={}", floor.display());
    let configured = world
        .git(
            GIT,
            None,
            &[
                "config",
                "--global",
                "--get-all",
                &format!("credential.{}.helper", world.server.base_url()),
            ],
        )
        .stdout;
    let cases: [(&str, Vec<String>, &str); 3] = [
        (
            "git credential fill, helper = cache",
            vec!["credential.helper=cache".into()],
            cache_input.as_str(),
        ),
        (
            "git credential fill, our configured line",
            Vec::new(),
            ours_input.as_str(),
        ),
        (
            "git credential fill, helper = floor (std only)",
            vec![floor_line],
            floor_input.as_str(),
        ),
    ];
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    for round in 0..(WARM_UP + WARM_ROUNDS) {
        let mut order: Vec<usize> = (0..cases.len()).collect();
        order.rotate_left(round % cases.len());
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let (_, config, input) = &cases[i];
            let config: Vec<&str> = config.iter().map(String::as_str).collect();
            let (took, out) = timed(fill(&config), input);
            password(cases[i].0, &out);
            if round >= WARM_UP {
                times[i].push(ms(took));
            }
        }
    }
    println!();
    println!(
        "(a) warm `git credential fill` (what git does before each fetch or push); {WARM_ROUNDS} rounds after {WARM_UP} warm-up, order rotated"
    );
    println!(
        "    our helper line: {}",
        configured.lines().last().unwrap_or("").trim()
    );
    println!("    {:<48} {:>9} {:>9}", "command", "median", "p90");
    for (i, (name, _, _)) in cases.iter().enumerate() {
        println!(
            "    {name:<48} {:>6.2} ms {:>6.2} ms",
            median(&times[i]),
            percentile(&times[i], 0.9)
        );
    }
    let ratio = |a: usize, b: usize| -> Vec<f64> {
        times[a].iter().zip(&times[b]).map(|(x, y)| x / y).collect()
    };
    println!("    ratio, median of the per-round ratios:");
    println!(
        "    ours / cache                                      {:.2}",
        median(&ratio(1, 0))
    );
    println!(
        "    floor / cache                                     {:.2}",
        median(&ratio(2, 0))
    );
}

/// The server's time for the API calls made since `from`.
fn server_time(world: &World, from: usize) -> Duration {
    world.server.api_calls()[from..]
        .iter()
        .map(|c| c.elapsed)
        .sum()
}

/// (b) A cold `get` (one exchange), minus the server's own time.
fn cold_get() {
    let mut world = World::new();
    world.with_env_parent();
    for i in 0..COLD_RUNS * 3 {
        world.server.add_repo_record_only("acme", &format!("r{i}"));
    }
    let run = |repo: usize, options: &[&str]| -> (f64, f64) {
        let from = world.server.api_calls().len();
        let input = request(
            "http",
            &world.server.host(),
            Some(&format!("acme/r{repo}.git")),
        );
        let url = world.server.base_url();
        let mut cmd = world.command(helper());
        cmd.args(["--api-url", &url]).args(options).arg("get");
        let (took, out) = timed(cmd, &input);
        password("cold", &out);
        let server = server_time(&world, from);
        (ms(took) - ms(server), ms(server))
    };
    // An agent that already checked this parent's workspace.
    run(COLD_RUNS * 3 - 1, &[]);
    let mut rows = Vec::new();
    let mut b1 = (Vec::new(), Vec::new());
    for i in 0..COLD_RUNS {
        let (net, server) = run(i, &[]);
        b1.0.push(net);
        b1.1.push(server);
    }
    rows.push(("b1 agent running, cache miss", b1));
    let mut b2 = (Vec::new(), Vec::new());
    for i in COLD_RUNS..COLD_RUNS * 2 {
        let (net, server) = run(i, &["--no-agent"]);
        b2.0.push(net);
        b2.1.push(server);
    }
    rows.push(("b2 --no-agent", b2));
    let mut b3 = (Vec::new(), Vec::new());
    for i in COLD_RUNS * 2..COLD_RUNS * 3 - 1 {
        stop_agents(&world);
        let (net, server) = run(i, &[]);
        b3.0.push(net);
        b3.1.push(server);
    }
    rows.push(("b3 no agent yet (includes starting it)", b3));
    println!();
    println!(
        "(b) cold get: helper wall time minus the server's handler time; {COLD_RUNS} runs each"
    );
    println!(
        "    {:<40} {:>9} {:>9} {:>11}",
        "case", "median", "p90", "server med"
    );
    for (name, (net, server)) in rows {
        println!(
            "    {name:<40} {:>6.2} ms {:>6.2} ms {:>8.3} ms",
            median(&net),
            percentile(&net, 0.9),
            median(&server)
        );
    }
}

fn stop_agents(world: &World) {
    for pid in world.agent_pids() {
        let _ = Command::new("kill").arg(pid.to_string()).status();
    }
    let started = Instant::now();
    while !world.agent_pids().is_empty() && started.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// (c) `BURST` simultaneous cold gets for one repo, no agent running yet.
fn concurrent_cold_gets() {
    println!();
    println!(
        "(c) {BURST} simultaneous cold gets for one repo, no agent running (a fresh world each)"
    );
    println!("    run   exchanges distinct tokens  failed  agents   slowest    median");
    for run in 1..=BURSTS {
        let mut world = World::new();
        world.with_env_parent();
        let input = request("http", &world.server.host(), Some("acme/app.git"));
        let url = world.server.base_url();
        let barrier = Barrier::new(BURST);
        let results: Vec<(f64, Option<String>)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..BURST)
                .map(|_| {
                    let mut cmd = world.command(helper());
                    cmd.args(["--api-url", &url, "get"]);
                    let (input, barrier) = (&input, &barrier);
                    s.spawn(move || {
                        barrier.wait();
                        let (took, out) = timed(cmd, input);
                        let text = String::from_utf8_lossy(&out.stdout).into_owned();
                        let token = text
                            .lines()
                            .find_map(|l| l.strip_prefix("password="))
                            .map(str::to_owned);
                        (ms(took), token)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("thread"))
                .collect()
        });
        let tokens: HashSet<&String> = results.iter().filter_map(|(_, t)| t.as_ref()).collect();
        let failed = results.iter().filter(|(_, t)| t.is_none()).count();
        let times: Vec<f64> = results.iter().map(|(t, _)| *t).collect();
        println!(
            "    {run:<5} {:>9} {:>15} {:>7} {:>7} {:>7.1} ms {:>6.1} ms",
            world.server.exchange_count(),
            tokens.len(),
            failed,
            world.agent_pids().len(),
            sorted(&times).last().copied().unwrap_or(0.0),
            median(&times)
        );
    }
}

/// (VmRSS, VmHWM) in KiB.
/// VmRSS, VmHWM, RssAnon (heap, stacks) and RssFile (the program's pages), KiB.
fn memory(pid: u32) -> [u64; 4] {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    [
        kib("VmRSS:"),
        kib("VmHWM:"),
        kib("RssAnon:"),
        kib("RssFile:"),
    ]
}

/// (d) The agent's memory with one token, and with `MANY`.
fn agent_memory() {
    let mut world = World::new();
    world.with_env_parent();
    for i in 0..MANY {
        world.server.add_repo_record_only("acme", &format!("m{i}"));
    }
    let url = world.server.base_url();
    let get = |repo: usize| {
        let mut cmd = world.command(helper());
        cmd.args(["--api-url", &url, "get"]);
        let input = request(
            "http",
            &world.server.host(),
            Some(&format!("acme/m{repo}.git")),
        );
        password("memory", &timed(cmd, &input).1);
    };
    get(0);
    let pid = world.agent_pids()[0];
    let one = memory(pid);
    for i in 1..MANY {
        get(i);
    }
    let many = memory(pid);

    println!();
    println!("(d) agent memory (/proc/PID/status)");
    println!("    cached tokens       VmRSS      VmHWM    RssAnon    RssFile");
    for (n, kib) in [(1, one), (MANY, many)] {
        let [rss, hwm, anon, file] = kib.map(|k| k as f64 / 1024.0);
        println!("    {n:<14} {rss:>7.1} MiB {hwm:>6.1} MiB {anon:>6.1} MiB {file:>6.1} MiB");
    }
}
