//! `tributary consume` (a real group member) and `tributary tail` (no group).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tributary::replay::Tail;
use tributary::{Admin, BoxError, Connection, Context, HandlerError, Worker};

use crate::checks;
use crate::cli::{ConsumeArgs, TailArgs};
use crate::output;

/// Prints each message, flushes, then lets the worker acknowledge it: a message is never
/// acknowledged before it was written out, so a killed consumer loses nothing.
///
/// With `--count N` it takes exactly N entries and exits once all N are settled: printed and
/// acknowledged, or settled without a print (dead-lettered as malformed or expired, deleted
/// before it was read), which a line on standard error reports.
pub(crate) async fn consume(conn: Connection, args: ConsumeArgs) -> Result<(), BoxError> {
    join_group(&conn, &args).await?;
    let printed = Arc::new(AtomicU64::new(0));
    let p = printed.clone();
    let limit = args.count;
    let raw = args.raw;
    let mut builder = Worker::builder(conn, args.group.as_str())
        .consumer_name(args.consumer.as_str())
        .concurrency(1)
        .max_in_flight(16)
        .claim_idle(args.claim_idle)
        .start_from(args.from);
    if let Some(n) = limit {
        // Take exactly n entries: nothing beyond them is read, so nothing is left half-done.
        builder = builder.limit(n);
    }
    let worker = builder
        .handler(
            args.topic.as_str(),
            tributary::raw_handler_fn(move |ctx: Context| {
                let p = p.clone();
                async move {
                    if raw {
                        output::raw_line(&ctx.envelope().payload).map_err(HandlerError::retry)?;
                    } else {
                        let line = output::message(ctx.entry_id(), ctx.envelope(), Some(ctx.attempt()));
                        output::message_line(&line).map_err(HandlerError::retry)?;
                    }
                    p.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                }
            }),
        )
        .build()?
        .start();
    let all_settled = async {
        match limit {
            Some(n) => drop(worker.settled(n).await),
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = all_settled => {}
        _ = stop_signal() => {}
    }
    let stats = worker.stats();
    worker.shutdown().await;
    let printed = printed.load(Ordering::SeqCst);
    if let Some(n) = limit.filter(|n| printed < *n) {
        // The CLI's worker keeps expired messages as dead letters (the default policy).
        eprintln!(
            "tributary: {} of {n} entries taken were not printed: {} dead-lettered ({} malformed, {} expired), \
             {} deleted before they were read, {} replays for other groups",
            n - printed,
            stats.dead_lettered,
            stats.malformed,
            stats.expired,
            stats.tombstones,
            stats.replays_for_other_groups,
        );
    }
    Ok(())
}

/// Checks that the group exists before joining it: a worker creates a missing group, and a
/// mistyped name would become a group for ever. With `--create-group` (or a yes on a terminal)
/// it is created at `--from`.
async fn join_group(conn: &Connection, args: &ConsumeArgs) -> Result<(), BoxError> {
    let admin = Admin::new(conn.clone());
    let create = "check the name, or pass --create-group to create it";
    let missing = match checks::group_or(&admin, conn.namespace().as_str(), &args.topic, &args.group, create).await {
        Ok(()) => return Ok(()),
        Err(missing) => missing,
    };
    let create = args.create_group || {
        use std::io::{BufRead, IsTerminal, Write};
        let interactive = std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
        interactive && {
            eprint!("tributary: {missing}\ncreate group `{}` on `{}` now? [y/N] ", args.group, args.topic);
            let _ = std::io::stderr().flush();
            let mut answer = String::new();
            std::io::stdin().lock().read_line(&mut answer)?;
            matches!(answer.trim(), "y" | "Y" | "yes")
        }
    };
    if !create {
        if !admin.topic_exists(&args.topic).await? {
            // A consumer started before anything was published: say how to wait for the topic.
            return Err(format!("{missing}; pass --create-group to create it with group `{}`", args.group).into());
        }
        return Err(missing);
    }
    if admin.create_group(&args.topic, &args.group, args.from).await? {
        eprintln!("tributary: created group `{}` on `{}` at {}", args.group, args.topic, output::position(args.from));
    }
    Ok(())
}

/// Ctrl-C (SIGINT) or SIGTERM, what systemd and Kubernetes send to stop a process: both stop
/// the consumer gracefully (settle what runs, hand back the rest, leave the group if empty).
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

pub(crate) async fn tail(conn: Connection, args: TailArgs) -> Result<(), BoxError> {
    let admin = Admin::new(conn.clone());
    let streams = crate::inspect::streams_of(&admin, &args.topic).await?;
    if streams.len() == 1 && !admin.topic_exists(&args.topic).await? {
        // Waiting is right (tail follows what arrives), silently is not: a typo looks the same.
        eprintln!("tributary: topic `{}` does not exist yet; waiting for its first message", args.topic);
    }
    // Of a partitioned topic, every partition and its own stream, each printed as it arrives
    // (partitions have no order between them; each one's is kept).
    let tails =
        streams.iter().map(|(_, name)| Tail::topic(conn.clone(), name, args.from)).collect::<Result<Vec<_>, _>>()?;
    let mut batches = futures::stream::select_all(tails.into_iter().map(|tail| {
        Box::pin(futures::stream::unfold(Some(tail), |tail| async move {
            let mut tail = tail?;
            let batch = tail.next_batch().await;
            // A failed read ends the whole tail (as with one stream).
            let next = batch.is_ok().then_some(tail);
            Some((batch, next))
        }))
    }));
    let limit = args.count.unwrap_or(u64::MAX);
    let mut n = 0;
    while n < limit {
        let batch = tokio::select! {
            b = futures::StreamExt::next(&mut batches) => match b {
                Some(b) => b?,
                None => break,
            },
            _ = stop_signal() => break,
        };
        for received in batch {
            match (&received.envelope, args.raw) {
                (Ok(env), true) => output::raw_line(&env.payload)?,
                (Ok(env), false) => output::message_line(&output::message(received.entry_id, env, None))?,
                (Err(e), _) => output::message_line(
                    &serde_json::json!({ "entry_id": received.entry_id.to_string(), "malformed": e.to_string() }),
                )?,
            }
            n += 1;
            if n >= limit {
                break;
            }
        }
    }
    drop(batches); // closes the read connections, in the background
    Ok(())
}
