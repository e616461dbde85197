//! The benchmark itself (Unix: the agent is a Unix socket); see `../agent.rs`.

use githosted_testkit::server;

use std::collections::HashSet;
use std::ffi::OsString;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::{Barrier, OnceLock};
use std::time::{Duration, Instant};

use server::{Server, TokenSpec};

const GIT: &str = "/usr/local/bin/git";
const OLD_GIT: &str = "/usr/bin/git";
const BENCH_HELPER: &str = env!("CARGO_BIN_EXE_git-credential-githosted");
const HELPER_ENV: &str = "GITHOSTED_BENCH_HELPER";

/// The helper under test: `$GITHOSTED_BENCH_HELPER`, else the binary cargo built for the bench.
fn helper_exe() -> &'static str {
    static EXE: OnceLock<String> = OnceLock::new();
    EXE.get_or_init(|| {
        std::env::var(HELPER_ENV)
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| BENCH_HELPER.to_owned())
    })
}

/// (a): measured rounds and warm-up rounds.
const WARM_ROUNDS: usize = 300;
const WARM_UP: usize = 20;
/// (b): runs per case.
const COLD_RUNS: usize = 30;
/// (c): processes per burst, bursts.
const BURST: usize = 64;
const BURSTS: usize = 5;
/// (d): tokens in the full cache.
const MANY: usize = 1000;

pub fn main() {
    let bench_started = Instant::now();
    println!("git-credential-githosted agent benchmark");
    machine_info();

    warm_get();
    cold_get();
    concurrent_cold_gets();
    agent_memory();

    println!();
    println!(
        "bench run time: {:.1} s; load average at end: {}",
        bench_started.elapsed().as_secs_f64(),
        loadavg()
    );
}

// ---------------------------------------------------------------------------------------------
// The isolated environment
// ---------------------------------------------------------------------------------------------

/// A private HOME and XDG_RUNTIME_DIR (0700) for the processes of one measurement. Dropping
/// it removes both, which makes an agent serving from it exit within a second.
struct Sandbox {
    dir: tempfile::TempDir,
    env: Vec<(String, OsString)>,
}

impl Sandbox {
    fn new() -> Sandbox {
        let dir = tempfile::tempdir().expect("temp dir");
        let home = dir.path().join("home");
        let run = dir.path().join("run");
        std::fs::create_dir_all(&home).expect("create HOME");
        std::fs::create_dir_all(&run).expect("create XDG_RUNTIME_DIR");
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700)).expect("chmod 700");
        // `bin/git-credential-githosted` first on PATH, so `git credential-githosted` finds it.
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).expect("create bin");
        std::os::unix::fs::symlink(helper_exe(), bin.join("git-credential-githosted"))
            .expect("link the helper");
        let mut path = OsString::from(bin);
        path.push(":/usr/local/bin:/usr/bin:/bin");
        let env = vec![
            ("PATH".to_owned(), path),
            ("HOME".to_owned(), home.clone().into()),
            ("XDG_RUNTIME_DIR".to_owned(), run.into()),
            ("XDG_CONFIG_HOME".to_owned(), home.join(".config").into()),
            ("XDG_CACHE_HOME".to_owned(), home.join(".cache").into()),
            ("GIT_CONFIG_NOSYSTEM".to_owned(), "1".into()),
            ("GIT_TERMINAL_PROMPT".to_owned(), "0".into()),
            ("LANG".to_owned(), "C".into()),
        ];
        Sandbox { dir, env }
    }

    fn set(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_owned(), value.into()));
    }

    fn runtime_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `program args…` with only this sandbox's environment.
    fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(program);
        cmd.args(args).current_dir(self.dir.path()).env_clear();
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// The helper with `--api-url` of `server`, then `args`.
    fn helper(&self, server: &Server, args: &[&str]) -> Command {
        let url = server.base_url();
        let mut all = vec!["--api-url", url.as_str()];
        all.extend_from_slice(args);
        self.command(helper_exe(), &all)
    }

    /// Removes the agent's socket: the agent exits at its next tick (1 s).
    fn stop_agent(&self) {
        let _ = std::fs::remove_dir_all(self.runtime_dir().join("git-credential-githosted"));
    }

    /// Pids of helper agents serving this sandbox (found by their environment).
    fn agent_pids(&self) -> Vec<u32> {
        let marker = format!("XDG_RUNTIME_DIR={}", self.runtime_dir().display());
        let mut pids = Vec::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            if args.get(1) != Some(&&b"agent"[..]) {
                continue;
            }
            let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
            if environ.split(|b| *b == 0).any(|v| v == marker.as_bytes()) {
                pids.push(pid);
            }
        }
        pids
    }

    /// Stops the agent and waits (up to 3 s) until no agent of this sandbox is left.
    fn finish(self) {
        self.stop_agent();
        let deadline = Instant::now() + Duration::from_secs(3);
        while !self.agent_pids().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let left = self.agent_pids();
        if !left.is_empty() {
            eprintln!("warning: agent(s) {left:?} still running 3 s after their socket went");
        }
    }
}

/// Runs `cmd` with `input` on stdin; the wall time covers spawn, writing stdin, reading
/// stdout and stderr, and the exit.
fn timed(mut cmd: Command, input: &str) -> (Duration, Output) {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    // Not `{cmd:?}`: a Command's Debug shows its environment, GITHOSTED_TOKEN included.
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", cmd.get_program().display()));
    {
        let mut stdin = child.stdin.take().expect("stdin pipe");
        // A process may exit without reading it all: that is its business.
        let _ = stdin.write_all(input.as_bytes());
    }
    let output = child.wait_with_output().expect("wait");
    (started.elapsed(), output)
}

/// The `password` of a credential answer; panics (without printing stdout, which may hold
/// a token) when there is none.
fn password(what: &str, output: &Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout);
    match stdout.lines().find_map(|l| l.strip_prefix("password=")) {
        Some(p) if output.status.success() => p.to_owned(),
        _ => panic!(
            "{what}: no password ({}); stderr: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ),
    }
}

/// git's request for `acme/<repo>` on `server`.
fn request(server: &Server, repo: &str) -> String {
    format!(
        "protocol=http\nhost={}\npath=acme/{repo}.git\n\n",
        server.host()
    )
}

/// A server with workspace `acme`, repo records `app`, and a sandbox whose helper gets a
/// workspace token through `GITHOSTED_TOKEN`.
fn world() -> (Server, Sandbox) {
    let server = Server::start();
    server.add_workspace("acme");
    server.add_repo_record_only("acme", "app");
    let parent = server.seed_token("acme", TokenSpec::workspace_write());
    let mut sandbox = Sandbox::new();
    sandbox.set("GITHOSTED_TOKEN", &parent);
    (server, sandbox)
}

// ---------------------------------------------------------------------------------------------
// Statistics and printing
// ---------------------------------------------------------------------------------------------

fn sorted(values: &[f64]) -> Vec<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v
}

fn median(values: &[f64]) -> f64 {
    let v = sorted(values);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Nearest-rank percentile.
fn percentile(values: &[f64], p: f64) -> f64 {
    let v = sorted(values);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn first_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_owned()
        })
        .unwrap_or_else(|e| format!("({e})"))
}

fn git_exec_path() -> String {
    first_line(GIT, &["--exec-path"])
}

fn machine_info() {
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|rest| rest.split_once(':'))
        .map_or("unknown", |(_, m)| m.trim());
    let kernel = first_line("/usr/bin/uname", &["-sr"]);
    println!("machine: nproc {nproc}, {model}, {kernel}");
    println!(
        "git: {GIT} = {}, {OLD_GIT} = {}",
        first_line(GIT, &["--version"]),
        first_line(OLD_GIT, &["--version"])
    );
    let exe = helper_exe();
    let size = std::fs::metadata(exe).map_or(0, |m| m.len());
    println!("helper: {exe} ({:.1} MB)", size as f64 / 1e6);
    if exe == BENCH_HELPER {
        println!(
            "  built by cargo bench, with dev-dependency features; {HELPER_ENV}=<copy of a release build> measures what ships"
        );
    }
    println!("load average at start: {}", loadavg());
}

/// The first three fields of /proc/loadavg: other work on the machine skews the figures.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}

// ---------------------------------------------------------------------------------------------
// (a) warm get against git credential-cache
// ---------------------------------------------------------------------------------------------

fn warm_get() {
    let (server, sandbox) = world();
    let input = request(&server, "app");
    // The first get starts the agent and mints; every later one is a cache hit.
    let (_, first) = timed(sandbox.helper(&server, &["get"]), &input);
    let token = password("first helper get", &first);

    // git's credential cache, holding one credential for the same host.
    let cache_dir = sandbox.path("cache");
    std::fs::create_dir_all(&cache_dir).expect("cache dir");
    std::fs::set_permissions(&cache_dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let socket = cache_dir.join("sock");
    let socket = socket.to_str().expect("utf-8 temp path");
    let stored = format!(
        "protocol=http\nhost={}\nusername=u\npassword=p\n\n",
        server.host()
    );
    let (_, out) = timed(
        sandbox.command(
            GIT,
            &[
                "credential-cache",
                "--timeout",
                "600",
                "--socket",
                socket,
                "store",
            ],
        ),
        &stored,
    );
    assert!(out.status.success(), "git credential-cache store failed");
    let cache_input = format!("protocol=http\nhost={}\n\n", server.host());
    let direct_cache = format!("{}/git-credential-cache", git_exec_path());
    let url = server.base_url();

    type Make<'a> = Box<dyn Fn() -> Command + 'a>;
    let cases: [(&str, Make, &str); 4] = [
        (
            "git-credential-githosted get (binary)",
            Box::new(|| sandbox.helper(&server, &["get"])),
            &input,
        ),
        (
            "git credential-githosted get (as git runs it)",
            Box::new(|| sandbox.command(GIT, &["credential-githosted", "--api-url", &url, "get"])),
            &input,
        ),
        (
            "git credential-cache get",
            Box::new(|| sandbox.command(GIT, &["credential-cache", "--socket", socket, "get"])),
            &cache_input,
        ),
        (
            "git-credential-cache get (binary)",
            Box::new(|| sandbox.command(&direct_cache, &["--socket", socket, "get"])),
            &cache_input,
        ),
    ];
    let mut times: [Vec<f64>; 4] = Default::default();
    for round in 0..WARM_UP + WARM_ROUNDS {
        // Rotate the order so that no case always runs first (or right after another).
        for k in 0..cases.len() {
            let i = (round + k) % cases.len();
            let (name, make, input) = &cases[i];
            let (elapsed, out) = timed(make(), input);
            let answer = password(name, &out);
            if i < 2 {
                assert!(answer == token, "{name}: not the cached token");
            } else {
                assert_eq!(answer, "p", "{name}: not the stored credential");
            }
            if round >= WARM_UP {
                times[i].push(ms(elapsed));
            }
        }
    }
    assert_eq!(
        server.exchange_count(),
        1,
        "warm gets must all be cache hits"
    );
    let _ = timed(
        sandbox.command(GIT, &["credential-cache", "--socket", socket, "exit"]),
        "",
    );

    println!();
    println!(
        "(a) warm get, wall time per process (spawn, stdin, stdout, exit); {WARM_ROUNDS} rounds after {WARM_UP} warm-up, order rotated"
    );
    println!("    {:<46} {:>9} {:>9}", "command", "median", "p90");
    for (i, (name, _, _)) in cases.iter().enumerate() {
        println!(
            "    {:<46} {:>6.2} ms {:>6.2} ms",
            name,
            median(&times[i]),
            percentile(&times[i], 90.0)
        );
    }
    println!("    ratio, median of the per-round ratios:");
    for (label, a, b) in [
        ("helper (binary) / git credential-cache", 0, 2),
        ("helper (binary) / git-credential-cache (binary)", 0, 3),
        ("git credential-githosted / git credential-cache", 1, 2),
    ] {
        let ratios: Vec<f64> = times[a].iter().zip(&times[b]).map(|(x, y)| x / y).collect();
        println!("    {label:<50} {:>5.2}", median(&ratios));
    }
    let inode = |p: &str| std::fs::metadata(p).map(|m| (m.dev(), m.ino())).ok();
    if inode(&direct_cache).is_some() && inode(&direct_cache) == inode(GIT) {
        println!(
            "    note: git-credential-cache is git itself (a builtin, hard-linked): one process either way;"
        );
    }
    println!(
        "    `helper = githosted` in git config runs `git credential-githosted get`: git, which forks the helper"
    );
    drop(cases);
    drop(server);
    sandbox.finish();
}

// ---------------------------------------------------------------------------------------------
// (b) cold get minus the server's time
// ---------------------------------------------------------------------------------------------

struct Cold {
    /// Helper wall time minus the server's ExchangeToken handler time.
    net: Vec<f64>,
    wall: Vec<f64>,
    server: Vec<f64>,
}

impl Cold {
    fn new() -> Cold {
        Cold {
            net: Vec::new(),
            wall: Vec::new(),
            server: Vec::new(),
        }
    }

    /// One cold get for `repo`: it must make exactly one ExchangeToken call.
    fn measure(&mut self, what: &str, server: &Server, cmd: Command, repo: &str) {
        let calls_before = server.api_calls().len();
        let (elapsed, out) = timed(cmd, &request(server, repo));
        password(what, &out);
        let calls = server.api_calls();
        let exchanges: Vec<_> = calls[calls_before..]
            .iter()
            .filter(|c| c.method == "ExchangeToken" && c.status == 200)
            .collect();
        assert_eq!(exchanges.len(), 1, "{what}: expected one exchange");
        let handler = exchanges[0].elapsed;
        self.wall.push(ms(elapsed));
        self.server.push(ms(handler));
        self.net.push(ms(elapsed.saturating_sub(handler)));
    }

    fn print(&self, name: &str) {
        println!(
            "    {:<40} {:>6.2} ms {:>6.2} ms {:>6.2} ms {:>7.3} ms",
            name,
            median(&self.net),
            percentile(&self.net, 90.0),
            median(&self.wall),
            median(&self.server)
        );
    }
}

fn cold_get() {
    let (server, sandbox) = world();
    for i in 0..2 * COLD_RUNS + 1 {
        server.add_repo_record_only("acme", &format!("cold{i}"));
    }
    // Start the agent (this get is not measured).
    let (_, out) = timed(
        sandbox.helper(&server, &["get"]),
        &request(&server, "cold0"),
    );
    password("agent start", &out);

    // (b1) the agent runs, the repo is new to it; (b2) no agent at all. Interleaved.
    let mut b1 = Cold::new();
    let mut b2 = Cold::new();
    for i in 0..COLD_RUNS {
        let repo = format!("cold{}", 1 + 2 * i);
        b1.measure("b1", &server, sandbox.helper(&server, &["get"]), &repo);
        let repo = format!("cold{}", 2 + 2 * i);
        b2.measure(
            "b2",
            &server,
            sandbox.helper(&server, &["--no-agent", "get"]),
            &repo,
        );
    }
    drop(server);
    sandbox.finish();

    // (b3) the first get in a fresh sandbox: it starts the agent, then mints through it.
    let (server, sandbox) = world();
    let mut b3 = Cold::new();
    for i in 0..COLD_RUNS {
        let runtime = sandbox.runtime_dir().join(format!("r{i}"));
        std::fs::create_dir(&runtime).expect("runtime dir");
        std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        let mut cmd = sandbox.helper(&server, &["get"]);
        cmd.env("XDG_RUNTIME_DIR", &runtime);
        b3.measure("b3", &server, cmd, "app");
        // Its agent exits within a second of its socket going.
        let _ = std::fs::remove_dir_all(&runtime);
    }
    drop(server);
    sandbox.finish();

    println!();
    println!(
        "(b) cold get (one ExchangeToken): helper wall time minus the server's handler time; {COLD_RUNS} runs each"
    );
    println!(
        "    {:<40} {:>9} {:>9} {:>9} {:>10}",
        "case", "median", "p90", "wall med", "server med"
    );
    b1.print("b1 agent running, cache miss");
    b2.print("b2 --no-agent");
    b3.print("b3 no agent yet (includes starting it)");
}

// ---------------------------------------------------------------------------------------------
// (c) many simultaneous cold gets
// ---------------------------------------------------------------------------------------------

fn concurrent_cold_gets() {
    println!();
    println!(
        "(c) {BURST} simultaneous cold gets for one repo, no agent running (fresh server and sandbox each)"
    );
    println!(
        "    {:<5} {:>9} {:>15} {:>7} {:>7} {:>9} {:>9}",
        "run", "exchanges", "distinct tokens", "failed", "agents", "slowest", "median"
    );
    for run in 1..=BURSTS {
        let (server, sandbox) = world();
        let input = request(&server, "app");
        let barrier = Barrier::new(BURST);
        let results: Vec<(Duration, Output)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..BURST)
                .map(|_| {
                    let cmd = sandbox.helper(&server, &["get"]);
                    let (barrier, input) = (&barrier, &input);
                    s.spawn(move || {
                        barrier.wait();
                        timed(cmd, input)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("thread"))
                .collect()
        });
        let mut tokens = HashSet::new();
        let mut failed = 0;
        for (_, out) in &results {
            let stdout = String::from_utf8_lossy(&out.stdout);
            match stdout.lines().find_map(|l| l.strip_prefix("password=")) {
                Some(p) if out.status.success() => {
                    tokens.insert(p.to_owned());
                }
                _ => failed += 1,
            }
        }
        let walls: Vec<f64> = results.iter().map(|(d, _)| ms(*d)).collect();
        let slowest = walls.iter().copied().fold(0.0, f64::max);
        println!(
            "    {:<5} {:>9} {:>15} {:>7} {:>7} {:>6.1} ms {:>6.1} ms",
            run,
            server.exchange_count(),
            tokens.len(),
            failed,
            sandbox.agent_pids().len(),
            slowest,
            median(&walls)
        );
        drop(server);
        sandbox.finish();
    }
}

// ---------------------------------------------------------------------------------------------
// (d) agent memory
// ---------------------------------------------------------------------------------------------

/// The agent's pid from `status` (`agent: pid N, …`).
fn agent_pid(server: &Server, sandbox: &Sandbox) -> u32 {
    let (_, out) = timed(sandbox.helper(server, &["status"]), "");
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("agent: pid "))
        .and_then(|rest| rest.split(',').next())
        .and_then(|pid| pid.trim().parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "no agent pid in `status`: {}",
                stdout.lines().next().unwrap_or("")
            )
        })
}

/// (VmRSS, VmHWM) in KiB.
fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (kib("VmRSS:"), kib("VmHWM:"))
}

fn agent_memory() {
    let (server, sandbox) = world();
    for i in 1..MANY {
        server.add_repo_record_only("acme", &format!("many{i}"));
    }
    let (_, out) = timed(sandbox.helper(&server, &["get"]), &request(&server, "app"));
    password("first get", &out);
    let pid = agent_pid(&server, &sandbox);
    let one = memory(pid);

    // 999 more repos, from a few threads at a time.
    let workers = 4;
    std::thread::scope(|s| {
        for w in 0..workers {
            let (server, sandbox) = (&server, &sandbox);
            s.spawn(move || {
                for i in (1..MANY).filter(|i| i % workers == w) {
                    let repo = format!("many{i}");
                    let (_, out) = timed(sandbox.helper(server, &["get"]), &request(server, &repo));
                    password("fill", &out);
                }
            });
        }
    });
    assert_eq!(server.exchange_count(), MANY, "one exchange per repo");
    assert_eq!(agent_pid(&server, &sandbox), pid, "the same agent serves");
    let many = memory(pid);

    println!();
    println!("(d) agent memory (/proc/PID/status), pid found with `status`");
    println!(
        "    {:<14} {:>10} {:>10}",
        "cached tokens", "VmRSS", "VmHWM"
    );
    for (n, (rss, hwm)) in [(1, one), (MANY, many)] {
        println!(
            "    {:<14} {:>6.1} MiB {:>6.1} MiB",
            n,
            rss as f64 / 1024.0,
            hwm as f64 / 1024.0
        );
    }
    drop(server);
    sandbox.finish();
}
