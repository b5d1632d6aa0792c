//! The `tributary` command: publish, consume, inspect and repair Tributary topics from a
//! shell. See `docs/cli.md`.
// Printing to standard output is this binary's job.
#![allow(clippy::print_stdout)]

mod checks;
mod cli;
mod consume;
mod contexts;
mod dashboard;
mod dead_letters;
mod groups;
mod inspect;
mod json;
mod output;
mod parse;
mod publish;
mod retention;
mod rpc;
mod scheduled;
mod stats;
mod topic;

use std::process::ExitCode;

use tributary::{BoxError, Connection};

use cli::{Cli, Command};

#[tokio::main]
async fn main() -> ExitCode {
    use clap::{CommandFactory, FromArgMatches};
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    init_logging(&cli);
    // Given on the command line or in the environment, rather than defaulted.
    let given = |id: &str| {
        matches!(
            matches.value_source(id),
            Some(clap::parser::ValueSource::CommandLine | clap::parser::ValueSource::EnvVariable)
        )
    };
    let explicit = Explicit {
        url: given("url"),
        url_flag: matches.value_source("url") == Some(clap::parser::ValueSource::CommandLine),
        namespace: given("namespace"),
        tls_ca: given("tls_ca"),
    };
    match run(cli, explicit).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the error and its causes.
            let mut line = e.to_string();
            // A connection error says what to check; fred's text after it only adds noise.
            let mut source = if e.downcast_ref::<tributary::ConnectError>().is_some() { None } else { e.source() };
            while let Some(s) = source {
                let text = s.to_string();
                if !line.contains(&text) {
                    line.push_str(": ");
                    line.push_str(&text);
                }
                source = s.source();
            }
            eprintln!("tributary: {}", line.replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}

/// Library log lines to standard error (standard output carries the data): warnings and errors
/// by default, so an operator sees why a consumer is not consuming; `-v`/`-q` or `RUST_LOG`.
fn init_logging(cli: &Cli) {
    use tracing_subscriber::EnvFilter;
    // Tributary's own warnings say what an operator needs; those of the Redis client (fred)
    // describe its internals (a command sent to a connection closed as the program exits) and
    // show from `-v` on.
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => "error",
        (false, 0) => "warn,fred=error",
        (false, 1) => "info",
        (false, 2) => "debug",
        (false, _) => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).init();
}

/// Which connection options were given rather than defaulted.
struct Explicit {
    url: bool,
    /// `--url` itself (not `REDIS_URL`).
    url_flag: bool,
    namespace: bool,
    tls_ca: bool,
}

async fn run(mut cli: Cli, explicit: Explicit) -> Result<(), BoxError> {
    if let Command::Context(command) = cli.command {
        let url = explicit.url.then_some(cli.url);
        let namespace = explicit.namespace.then_some(cli.namespace);
        return contexts::run(cli.output.unwrap_or(cli::Output::Table), command, url, namespace, cli.tls_ca);
    }
    // A context named with --context wins; the current one applies when no URL was given.
    if cli.context.is_some() || !explicit.url {
        if let Some((name, context)) = contexts::selected(cli.context.as_deref())? {
            if explicit.url_flag {
                return Err(format!("give --context {name} or --url, not both").into());
            }
            cli.url = context.url;
            if !explicit.namespace {
                if let Some(ns) = context.namespace {
                    cli.namespace = ns;
                }
            }
            if !explicit.tls_ca {
                cli.tls_ca = cli.tls_ca.or(context.tls_ca);
            }
        }
    }
    let only_json_lines = match &cli.command {
        Command::Consume(_) => Some("consume"),
        Command::Tail(_) => Some("tail"),
        Command::Get { .. } => Some("get"),
        Command::Completions { .. } => Some("completions"),
        _ => None,
    };
    if let (Some(command), Some(_)) = (only_json_lines, cli.output) {
        return Err(format!("--output does not apply to `{command}`: it always prints the same form").into());
    }
    if let Command::Completions { shell } = cli.command {
        // Needs no server.
        use clap::CommandFactory;
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "tributary", &mut script);
        // Written here, not by clap_complete, which panics on a closed pipe (`| head`).
        use std::io::Write;
        return match std::io::stdout().write_all(&script) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
            _ => Ok(()),
        };
    }
    let mut options =
        Connection::options().namespace(cli.namespace.as_str()).connect_timeout(std::time::Duration::from_secs(3));
    if let Some(path) = &cli.tls_ca {
        let pem = std::fs::read(path).map_err(|e| format!("cannot read --tls-ca {}: {e}", path.display()))?;
        options = options.tls_root_certificates(pem);
    }
    let conn = options.connect(&cli.url).await?;
    let out = cli.output.unwrap_or(cli::Output::Table);
    let result = command(conn.clone(), out, cli.command).await;
    // Closed before the runtime stops, not by a background task it would cut short.
    conn.quit().await;
    result
}

async fn command(conn: Connection, out: cli::Output, command: Command) -> Result<(), BoxError> {
    match command {
        Command::Publish(args) => publish::run(conn, out, args).await,
        Command::Consume(args) => consume::consume(conn, args).await,
        Command::Tail(args) => consume::tail(conn, args).await,
        Command::Topics => inspect::topics(conn, out).await,
        Command::Stats(args) => stats::run(conn, out, args).await,
        Command::Dashboard(args) => dashboard::run(conn, args).await,
        Command::Info { topic } => inspect::info(conn, out, &topic).await,
        Command::Get { topic, id } => inspect::get(conn, &topic, id).await,
        Command::Completions { .. } => Ok(()),
        Command::Groups { topic } => inspect::groups(conn, out, &topic).await,
        Command::Consumers { topic, group } => inspect::consumers(conn, out, &topic, &group).await,
        Command::Pending { topic, group, count } => inspect::pending(conn, out, &topic, &group, count).await,
        Command::Dlq(command) => dead_letters::run(conn, out, command).await,
        Command::Group(command) => groups::group(conn, out, command).await,
        Command::Trim(args) => groups::trim(conn, out, args).await,
        Command::Retention(command) => retention::run(conn, out, command).await,
        Command::Topic(command) => topic::run(conn, out, command).await,
        Command::Scheduled(command) => scheduled::run(conn, out, command).await,
        Command::Rpc(command) => rpc::run(conn, out, command).await,
        // Handled before connecting.
        Command::Context(_) => Ok(()),
    }
}
