//! Command-line arguments.

use clap::{Args, Parser, Subcommand, ValueEnum};

/// kcat for Redis Streams: publish, consume, inspect and repair Tributary topics.
#[derive(Debug, Parser)]
#[command(name = "tributary", version)]
pub(crate) struct Cli {
    /// Redis URL: `redis://[user:password@]host:port[/db]`, `rediss://...` for TLS,
    /// `redis-cluster://[user:password@]host:port[?node=host:port...]` for Redis Cluster,
    /// `redis-sentinel://host:port?sentinelServiceName=NAME` for Sentinel. Passwords are never
    /// printed.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "REDIS_URL",
        default_value = "redis://127.0.0.1:6379",
        hide_env_values = true
    )]
    pub(crate) url: String,
    /// A saved connection to use (see `tributary context`); the current one is used when
    /// neither this nor `--url`/`REDIS_URL` is given.
    #[arg(long, global = true, help_heading = "Global options", env = "TRIBUTARY_CONTEXT")]
    pub(crate) context: Option<String>,
    /// Key namespace.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "TRIBUTARY_NAMESPACE",
        default_value = "tributary"
    )]
    pub(crate) namespace: String,
    /// PEM file of the CA that signed the server's certificate (for `rediss://` with a private CA).
    #[arg(long, global = true, help_heading = "Global options", env = "TRIBUTARY_TLS_CA")]
    pub(crate) tls_ca: Option<std::path::PathBuf>,
    /// Output format: tables for people, JSON lines for scripts (default `table`). Not for
    /// `consume`, `tail` and `get`, which always print one JSON line per message.
    #[arg(long, global = true, help_heading = "Global options", value_enum)]
    pub(crate) output: Option<Output>,
    /// More log lines on standard error: `-v` info, `-vv` debug, `-vvv` trace. (Warnings and
    /// errors are always shown; `RUST_LOG` overrides both flags.)
    #[arg(short, long, global = true, help_heading = "Global options", action = clap::ArgAction::Count)]
    pub(crate) verbose: u8,
    /// Only errors on standard error.
    #[arg(short, long, global = true, help_heading = "Global options", conflicts_with = "verbose")]
    pub(crate) quiet: bool,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// `tributary stats`.
#[derive(Debug, Args)]
pub(crate) struct StatsArgs {
    /// Topics to show (default: every topic of the namespace).
    pub(crate) topics: Vec<String>,
    /// Refresh every `--interval` until interrupted: in place on a terminal, else a table (or
    /// JSON lines) per round.
    #[arg(long)]
    pub(crate) watch: bool,
    /// Time between two samples: the rates are measured over it.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    pub(crate) interval: std::time::Duration,
}

/// `tributary dashboard`.
#[derive(Debug, Args)]
pub(crate) struct DashboardArgs {
    /// Address to listen on. Anything but a loopback address needs `--token`.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub(crate) listen: std::net::SocketAddr,
    /// Allow replaying and purging dead letters from the page (read-only without).
    #[arg(long)]
    pub(crate) allow_actions: bool,
    /// A secret the page must present (it asks for it once); required to listen beyond
    /// loopback.
    #[arg(long, env = "TRIBUTARY_DASHBOARD_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
    /// How often the server samples the topics (the charts' resolution).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2s")]
    pub(crate) interval: std::time::Duration,
    /// The workers' `claim_idle`: a pending entry idle longer is flagged as nobody's work.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    pub(crate) claim_idle: std::time::Duration,
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Output {
    /// Aligned columns.
    Table,
    /// One JSON document per line.
    Json,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Publish messages: `--json '{..}'`, or one JSON document per line of standard input.
    #[command(
        after_help = "Examples:\n  tributary publish orders --json '{\"id\":1}' --key customer-7\n  jq -c '.[]' orders.json | tributary publish orders"
    )]
    Publish(PublishArgs),
    /// Consume as a member of a consumer group: print each message as a JSON line, then ack it.
    #[command(
        after_help = "Examples:\n  tributary consume orders --group billing --consumer billing-1\n  tributary consume orders --group audit --create-group --from 0 --count 10"
    )]
    Consume(ConsumeArgs),
    /// Follow a topic without a group (nothing is acknowledged).
    #[command(after_help = "Examples:\n  tributary tail orders\n  tributary tail orders --from 0 --count 5")]
    Tail(TailArgs),
    /// List topics with their length, groups, dead letters and scheduled messages.
    #[command(after_help = "Examples:\n  tributary topics\n  tributary --output json topics")]
    Topics,
    /// One topic at a glance: length, first and last entry, groups with their lag, consumers,
    /// dead letters, scheduled messages.
    #[command(after_help = "Examples:\n  tributary info orders")]
    Info {
        /// Topic.
        topic: String,
    },
    /// Print one message by its entry id (as `tail` would).
    #[command(after_help = "Examples:\n  tributary get orders 1795617835928-0")]
    Get {
        /// Topic.
        topic: String,
        /// Entry id (`1795617835928-0`).
        id: tributary::EntryId,
    },
    /// Print a completion script for a shell: `tributary completions bash > /etc/bash_completion.d/tributary`.
    #[command(
        after_help = "Examples:\n  tributary completions bash > /etc/bash_completion.d/tributary\n  tributary completions zsh > \"${fpath[1]}/_tributary\""
    )]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Every topic and group at a glance: rates in and out, lag, pending, oldest pending
    /// entry, consumers, dead letters, scheduled messages. Rates are measured over `--interval`.
    #[command(
        after_help = "Examples:\n  tributary stats\n  tributary stats orders payments --watch\n  tributary --output json stats --watch --interval 10s >> stats.jsonl"
    )]
    Stats(StatsArgs),
    /// A web page over the topics: lag, rates and dead letters, with charts; dead letters can be
    /// read, replayed and purged when started with `--allow-actions`.
    #[command(
        after_help = "Examples:\n  tributary dashboard                          # http://127.0.0.1:8080, read-only\n  tributary dashboard --allow-actions\n  TRIBUTARY_DASHBOARD_TOKEN=$(openssl rand -hex 16) tributary dashboard --listen 0.0.0.0:8080"
    )]
    Dashboard(DashboardArgs),
    /// List the consumer groups of a topic.
    #[command(after_help = "Examples:\n  tributary groups orders")]
    Groups {
        /// Topic.
        topic: String,
    },
    /// List the consumers of a group.
    #[command(after_help = "Examples:\n  tributary consumers orders billing")]
    Consumers {
        /// Topic.
        topic: String,
        /// Group.
        group: String,
    },
    /// List a group's pending (delivered, unacknowledged) entries.
    #[command(after_help = "Examples:\n  tributary pending orders billing --count 20")]
    Pending {
        /// Topic.
        topic: String,
        /// Group.
        group: String,
        /// Most entries to list.
        #[arg(long, default_value_t = 100)]
        count: usize,
    },
    /// Dead letters: list, replay or purge.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Consumer groups: create, move, delete.
    #[command(subcommand)]
    Group(GroupCommand),
    /// Trim a topic.
    #[command(
        after_help = "Examples:\n  tributary trim orders --maxlen 100000 --safe\n  tributary trim orders --minid 2026-11-01T00:00:00Z"
    )]
    Trim(TrimArgs),
    /// A topic's retention, which every producer applies: show, set or clear it.
    #[command(subcommand)]
    Retention(RetentionCommand),
    /// Topics: create a partitioned one.
    #[command(subcommand)]
    Topic(TopicCommand),
    /// Scheduled (delayed) messages: list or cancel.
    #[command(subcommand)]
    Scheduled(ScheduledCommand),
    /// RPC.
    #[command(subcommand)]
    Rpc(RpcCommand),
    /// Saved connections: add, list, use, remove (passwords are never printed).
    #[command(subcommand)]
    Context(ContextCommand),
}

#[derive(Debug, Subcommand)]
pub(crate) enum ContextCommand {
    /// Save a connection under a name: the `--url` (and `--namespace`, `--tls-ca`) given with it.
    /// The first one saved becomes the current one.
    #[command(
        after_help = "Examples:\n  tributary context add prod --url 'redis://app:secret@redis.internal:6379' --namespace billing"
    )]
    Add {
        /// Its name.
        name: String,
    },
    /// List the saved connections, passwords hidden.
    #[command(after_help = "Examples:\n  tributary context list")]
    List,
    /// Make a saved connection the current one.
    #[command(
        after_help = "Examples:\n  tributary context use prod\n  tributary --context staging topics   # once, without switching"
    )]
    Use {
        /// Its name.
        name: String,
    },
    /// Forget a saved connection.
    #[command(after_help = "Examples:\n  tributary context remove prod")]
    Remove {
        /// Its name.
        name: String,
    },
}

#[derive(Debug, Args)]
pub(crate) struct PublishArgs {
    /// Topic.
    pub(crate) topic: String,
    /// The message as JSON. Without it, the JSON documents of standard input (one per line, or
    /// pretty-printed over several), read to its end first: if one does not parse, nothing is
    /// published and the error says which document and line.
    #[arg(long)]
    pub(crate) json: Option<String>,
    /// With documents on standard input: publish the good ones even if some do not parse (each
    /// bad one is reported on standard error, and the exit status is 1).
    #[arg(long = "continue")]
    pub(crate) keep_going: bool,
    /// Partition / ordering key.
    #[arg(long)]
    pub(crate) key: Option<String>,
    /// Header `name=value` (repeatable).
    #[arg(long = "header", value_name = "NAME=VALUE")]
    pub(crate) headers: Vec<String>,
    /// Idempotency key: publishing again with it returns the first entry id.
    #[arg(long)]
    pub(crate) idempotency_key: Option<String>,
    /// Message type name.
    #[arg(long = "type", default_value = "Json")]
    pub(crate) type_name: String,
    /// Expire the message after this long (`30s`, `10m`).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub(crate) ttl: Option<std::time::Duration>,
    /// Deliver at this time (RFC 3339, e.g. `2026-12-01T09:00:00Z`) instead of now.
    #[arg(long, conflicts_with = "delay", value_parser = crate::parse::time)]
    pub(crate) at: Option<std::time::SystemTime>,
    /// Deliver after this long (`5s`, `1h`) instead of now.
    #[arg(long = "in", value_parser = humantime::parse_duration)]
    pub(crate) delay: Option<std::time::Duration>,
}

#[derive(Debug, Args)]
pub(crate) struct ConsumeArgs {
    /// Topic.
    pub(crate) topic: String,
    /// Consumer group.
    #[arg(long)]
    pub(crate) group: String,
    /// Consumer name (stable across restarts, to recover what it held).
    #[arg(long)]
    pub(crate) consumer: String,
    /// Exit after this many messages.
    #[arg(long)]
    pub(crate) count: Option<u64>,
    /// Take over entries other consumers held longer than this (`30s`).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    pub(crate) claim_idle: std::time::Duration,
    /// Create the group if the topic does not have it. Without this, a group that does not
    /// exist is an error (a mistyped group name would otherwise become a new group, read the
    /// whole topic and hold back safe trimming for ever); on a terminal, you are asked.
    #[arg(long)]
    pub(crate) create_group: bool,
    /// Where a group created by `--create-group` starts: `0` (everything the topic holds, as
    /// `group create`), `$` (new only), an entry id or an RFC 3339 time.
    #[arg(long, default_value = "0", value_parser = crate::parse::position)]
    pub(crate) from: tributary::Position,
    /// Write each message's payload bytes as they are, followed by a newline, instead of a
    /// JSON line (for binary payloads and pipes).
    #[arg(long)]
    pub(crate) raw: bool,
}

#[derive(Debug, Args)]
pub(crate) struct TailArgs {
    /// Topic.
    pub(crate) topic: String,
    /// Where to start: `$` (what arrives from now, like `tail -f`; a group starts at `0`
    /// instead, since it must not miss what was published before it existed), `0` (everything),
    /// an entry id or an RFC 3339 time.
    #[arg(long, default_value = "$", value_parser = crate::parse::position)]
    pub(crate) from: tributary::Position,
    /// Exit after this many messages.
    #[arg(long)]
    pub(crate) count: Option<u64>,
    /// Write each message's payload bytes as they are, followed by a newline, instead of a
    /// JSON line (for binary payloads and pipes).
    #[arg(long)]
    pub(crate) raw: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum DlqCommand {
    /// List dead letters, oldest first.
    #[command(
        after_help = "Examples:\n  tributary dlq list orders\n  tributary dlq list orders --reason malformed --raw"
    )]
    List {
        /// Topic.
        topic: String,
        /// Most to list.
        #[arg(long, default_value_t = 100)]
        count: usize,
        #[command(flatten)]
        filter: DlqFilter,
        /// Each entry's fields exactly as stored (names and values, `$base64` where not
        /// UTF-8), one JSON line per entry: to see what a malformed or unreadable entry holds.
        #[arg(long)]
        raw: bool,
    },
    /// Put dead letters back on their topic (same message ids).
    #[command(
        after_help = "Examples:\n  tributary dlq replay orders --id 1795617835928-0\n  tributary dlq replay orders --all --group billing"
    )]
    Replay {
        /// Topic.
        topic: String,
        /// The dead letter's id (in the dead-letter stream), or the original entry's id
        /// (`original_id` in `dlq list`).
        #[arg(long, required_unless_present = "all", conflicts_with = "all")]
        id: Option<String>,
        /// Every dead letter (or every one `--reason`/`--group` take); progress on standard
        /// error. Entries that are not dead letters are left where they are.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        filter: DlqFilter,
    },
    /// Delete every dead letter of a topic (asks on a terminal; `--yes` elsewhere).
    #[command(after_help = "Examples:\n  tributary dlq purge orders --yes")]
    Purge {
        /// Topic.
        topic: String,
        /// Do not ask.
        #[arg(long)]
        yes: bool,
    },
}

/// Which dead letters a `dlq` command takes.
#[derive(Debug, Args)]
pub(crate) struct DlqFilter {
    /// Only those with this reason: `max_deliveries`, `rejected`, `malformed`, `expired`,
    /// `unreadable`.
    #[arg(long)]
    pub(crate) reason: Option<String>,
    /// Only those this group gave up on.
    #[arg(long)]
    pub(crate) group: Option<String>,
}

impl DlqFilter {
    pub(crate) fn to_filter(&self) -> tributary::DeadLetterFilter {
        let mut filter = tributary::DeadLetterFilter::all();
        if let Some(reason) = &self.reason {
            filter = filter.reason(reason);
        }
        if let Some(group) = &self.group {
            filter = filter.group(group);
        }
        filter
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum GroupCommand {
    /// Create a group (and the topic's stream).
    #[command(
        after_help = "Examples:\n  tributary group create orders billing\n  tributary group create orders audit --from '$'"
    )]
    Create {
        /// Topic.
        topic: String,
        /// Group.
        group: String,
        /// Where the group starts: `0` (everything the topic holds, as `consume --create-group`
        /// and the library's workers), `$` (only messages published from now), an entry id or an
        /// RFC 3339 time.
        #[arg(long, default_value = "0", value_parser = crate::parse::position)]
        from: tributary::Position,
    },
    /// Move a group's cursor: its next new entry is the one at `--to`.
    #[command(after_help = "Examples:\n  tributary group setid orders billing --to 2026-11-25T14:00:00Z")]
    Setid {
        /// Topic.
        topic: String,
        /// Group.
        group: String,
        /// `$`, `0`, an entry id or an RFC 3339 time.
        #[arg(long, value_parser = crate::parse::position)]
        to: tributary::Position,
    },
    /// Delete a group and its pending entries list (asks on a terminal; `--yes` elsewhere).
    #[command(after_help = "Examples:\n  tributary group delete orders old-service --yes")]
    Delete {
        /// Topic.
        topic: String,
        /// Group.
        group: String,
        /// Do not ask.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, Args)]
pub(crate) struct TrimArgs {
    /// Topic.
    pub(crate) topic: String,
    /// Keep this many newest entries.
    #[arg(long, required_unless_present = "minid", conflicts_with = "minid")]
    pub(crate) maxlen: Option<u64>,
    /// Keep entries from this id (or RFC 3339 time) on.
    #[arg(long, value_parser = crate::parse::entry_id_or_time)]
    pub(crate) minid: Option<tributary::EntryId>,
    /// Never trim entries a group has not read or acknowledged.
    #[arg(long)]
    pub(crate) safe: bool,
    /// Remove whole stream nodes only: cheaper, but a few more entries than asked may stay
    /// (without `--safe`).
    #[arg(long, conflicts_with = "safe")]
    pub(crate) approx: bool,
    /// Do not ask (without `--safe`, a trim may remove entries a group has not read: it asks on
    /// a terminal and needs this elsewhere).
    #[arg(long)]
    pub(crate) yes: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum TopicCommand {
    /// Make a topic partitioned: N streams, a message with a key always in the same one, each
    /// consumed by one member of a group at a time (docs/partitions.md). The count is fixed once
    /// set; the same count again changes nothing. Create it before deploying producers and
    /// workers of the topic. A partition is named `<topic>#<p>` in other commands
    /// (`tributary groups 'orders#3'`, `tributary dlq list 'orders#3'`).
    #[command(after_help = "Examples:\n  tributary topic create orders --partitions 16")]
    Create {
        /// Topic.
        topic: String,
        /// Number of partitions (1 to 1024).
        #[arg(long)]
        partitions: u32,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum RetentionCommand {
    /// Show a topic's retention (`none`: publishes do not trim it).
    #[command(
        after_help = "Examples:\n  tributary retention get orders\n  tributary --output json retention get orders"
    )]
    Get {
        /// Topic.
        topic: String,
    },
    /// Set a topic's retention, replacing the one before: every producer applies it from its next
    /// look-up (within its `retention_refresh`, 5 s by default). Without `--safe` it asks on a
    /// terminal and needs `--yes` elsewhere.
    #[command(
        after_help = "Examples:\n  tributary retention set orders --maxlen 1000000 --safe\n  tributary retention set audit --max-age 7d --safe\n  tributary retention set metrics --maxlen 100000 --yes"
    )]
    Set(RetentionSetArgs),
    /// Remove a topic's retention: producers stop trimming it.
    #[command(after_help = "Examples:\n  tributary retention clear orders")]
    Clear {
        /// Topic.
        topic: String,
    },
}

#[derive(Debug, Args)]
pub(crate) struct RetentionSetArgs {
    /// Topic (it need not exist yet).
    pub(crate) topic: String,
    /// Keep about this many newest entries (without `--safe`, publishes trim whole stream
    /// nodes, so a few more may stay).
    #[arg(long, visible_alias = "max-len", required_unless_present = "max_age", conflicts_with = "max_age")]
    pub(crate) maxlen: Option<u64>,
    /// Keep the entries of the last this long (`7d`, `12h`).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub(crate) max_age: Option<std::time::Duration>,
    /// Never trim entries a group has not read or acknowledged.
    #[arg(long)]
    pub(crate) safe: bool,
    /// Do not ask (without `--safe`, publishes may remove entries a group has not read: it asks
    /// on a terminal and needs this elsewhere).
    #[arg(long)]
    pub(crate) yes: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ScheduledCommand {
    /// List scheduled messages, due first.
    #[command(after_help = "Examples:\n  tributary scheduled list reminders")]
    List {
        /// Topic.
        topic: String,
        /// Most to list.
        #[arg(long, default_value_t = 100)]
        count: usize,
    },
    /// Cancel a scheduled message.
    #[command(after_help = "Examples:\n  tributary scheduled cancel reminders 01a21329-cbcc-70da-8bd9-26640062997e")]
    Cancel {
        /// Topic.
        topic: String,
        /// Schedule id.
        id: String,
    },
    /// Deliver a scheduled message now instead of at its due time.
    #[command(after_help = "Examples:\n  tributary scheduled run-now reminders 01a21329-cbcc-70da-8bd9-26640062997e")]
    RunNow {
        /// Topic.
        topic: String,
        /// Schedule id.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum RpcCommand {
    /// Call a method of a running service and print the reply.
    #[command(after_help = "Examples:\n  tributary rpc call pricing quote --json '{\"sku\":\"A-1\",\"quantity\":3}'")]
    Call {
        /// Service.
        service: String,
        /// Method.
        method: String,
        /// The request as JSON.
        #[arg(long, default_value = "null")]
        json: String,
        /// Give up after this long.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
        timeout: std::time::Duration,
    },
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every command a user runs shows examples in its help, and lists the global options
    /// apart from its own.
    #[test]
    fn every_command_has_examples_and_global_options_apart() {
        fn walk(cmd: &mut clap::Command, path: &str, missing: &mut Vec<String>) {
            let path = format!("{path} {}", cmd.get_name());
            let subs: Vec<String> = cmd.get_subcommands().map(|s| s.get_name().to_owned()).collect();
            if subs.is_empty() || subs == ["help"] {
                let help = cmd.render_long_help().to_string();
                if !help.contains("Examples:") {
                    missing.push(format!("{path}: no examples"));
                }
                if path.trim() != "tributary" && !help.contains("Global options:") {
                    missing.push(format!("{path}: global options not apart"));
                }
            }
            for sub in cmd.get_subcommands_mut().filter(|s| s.get_name() != "help") {
                walk(sub, &path, missing);
            }
        }
        let mut cli = super::Cli::command();
        cli.build();
        let mut missing = Vec::new();
        walk(&mut cli, "", &mut missing);
        assert!(missing.is_empty(), "{missing:#?}");
    }
}
