//! `tributary dlq list | replay | purge`.

use serde_json::json;
use tributary::{Admin, BoxError, Connection, DeadLetters, EntryId};

use crate::checks;
use crate::cli::{DlqCommand, Output};
use crate::output;

pub(crate) async fn run(conn: Connection, out: Output, command: DlqCommand) -> Result<(), BoxError> {
    let topic = match &command {
        DlqCommand::List { topic, .. } | DlqCommand::Replay { topic, .. } | DlqCommand::Purge { topic, .. } => topic,
    };
    // A partitioned topic's dead letters are in each partition's dead-letter stream.
    let dlqs = dead_letter_streams(&conn, topic).await?;
    let mut total = 0;
    for dlq in &dlqs {
        total += dlq.count().await?;
    }
    // Dead letters may outlive their topic's stream (deleted by hand): they are still listed.
    if total == 0 {
        checks::topic(&Admin::new(conn.clone()), conn.namespace().as_str(), topic).await?;
    }
    match command {
        DlqCommand::List { count, filter, raw, .. } => {
            let mut letters = Vec::new();
            for dlq in &dlqs {
                letters.extend(dlq.list_matching(&filter.to_filter(), count).await?);
            }
            letters.sort_by_key(|l| l.dead_at);
            letters.truncate(count);
            if raw {
                for l in letters {
                    let fields: serde_json::Map<String, serde_json::Value> = l
                        .fields
                        .iter()
                        .map(|(name, value)| (String::from_utf8_lossy(name).into_owned(), text_or_base64(value)))
                        .collect();
                    println!("{}", json!({ "id": l.id.to_string(), "reason": l.reason, "fields": fields }));
                }
                return Ok(());
            }
            let rows = letters
                .into_iter()
                .map(|l| {
                    let payload = l.envelope().map(|e| output::payload(&e)).unwrap_or(serde_json::Value::Null);
                    vec![
                        json!(l.id.to_string()),
                        json!(l.original_id),
                        json!(l.group),
                        json!(l.reason),
                        json!(l.attempts),
                        json!(l.error),
                        json!(humantime::format_rfc3339_millis(l.dead_at).to_string()),
                        payload,
                    ]
                })
                .collect();
            output::rows(
                out,
                &["id", "original_id", "group", "reason", "attempts", "error", "dead_at", "payload"],
                rows,
            );
        }
        DlqCommand::Replay { topic, id, all, filter } => {
            if all {
                // A malformed entry replayed is dead-lettered again (until the consumer's code
                // changes): replayed only when asked for by `--reason malformed`.
                let skip_malformed = filter.reason.is_none();
                let mut chosen = filter.to_filter();
                if skip_malformed {
                    chosen = chosen.except_reason("malformed");
                }
                let (started, mut said) = (std::time::Instant::now(), std::time::Instant::now());
                let (mut replayed, mut unreadable, mut without_fields, mut malformed_left) = (0, 0, 0, false);
                let malformed = tributary::DeadLetterFilter::all().reason("malformed");
                for dlq in &dlqs {
                    let before = replayed;
                    let report = dlq
                        .replay_matching(&chosen, |so_far| {
                            // Long replays say how far they are, about once a second.
                            if said.elapsed() >= std::time::Duration::from_secs(1) {
                                said = std::time::Instant::now();
                                eprintln!(
                                    "tributary: replayed {} of at most {total} ({:.0?} so far)",
                                    before + so_far.replayed,
                                    started.elapsed()
                                );
                            }
                        })
                        .await?;
                    replayed += report.replayed;
                    unreadable += report.unreadable;
                    without_fields += report.without_fields;
                    malformed_left |= skip_malformed && !dlq.list_matching(&malformed, 1).await?.is_empty();
                }
                output::single(out, "replayed", json!(replayed));
                if malformed_left {
                    eprintln!(
                        "tributary: malformed dead letters were left where they are (replayed, they would be \
                         dead-lettered again); replay them with --reason malformed"
                    );
                }
                if unreadable + without_fields > 0 {
                    eprintln!(
                        "tributary: left in the dead-letter stream: {unreadable} unreadable (not dead letters; see `dlq list`), \
                         {without_fields} whose original entry had been trimmed"
                    );
                }
            } else if let Some(id) = id {
                // The dead letter's own id, or the original entry's id that `dlq list` shows.
                let id: EntryId = id.parse()?;
                let mut replayed = None;
                for dlq in &dlqs {
                    replayed = match dlq.replay(id).await? {
                        Some(new_id) => Some(new_id),
                        None => match dlq.find_original(id).await? {
                            Some(letter) => dlq.replay(letter.id).await?,
                            None => None,
                        },
                    };
                    if replayed.is_some() {
                        break;
                    }
                }
                match replayed {
                    Some(new_id) => output::single(out, "entry_id", json!(new_id.to_string())),
                    None => {
                        return Err(format!(
                            "no dead letter `{id}` on topic `{topic}`, nor one of the original entry `{id}` \
                             (see `tributary dlq list {topic}`)"
                        )
                        .into())
                    }
                }
            }
        }
        DlqCommand::Purge { topic, yes } => {
            checks::confirm(&format!("Delete all {total} dead letters of `{topic}`?"), yes)?;
            let mut n = 0;
            for dlq in &dlqs {
                n += dlq.purge().await?;
            }
            output::single(out, "purged", json!(n));
        }
    }
    Ok(())
}

/// The dead letters of `topic` and, of a partitioned topic, of each partition.
async fn dead_letter_streams(conn: &Connection, topic: &str) -> Result<Vec<DeadLetters>, BoxError> {
    let partitions = Admin::new(conn.clone()).partitions(topic).await.ok().flatten().unwrap_or(0);
    let mut all = vec![DeadLetters::new(conn.clone(), topic)?];
    for p in 0..partitions {
        all.push(DeadLetters::new(conn.clone(), &format!("{topic}#{p}"))?);
    }
    Ok(all)
}

/// A field value as JSON: the text when it is UTF-8, else `{"$base64": "..."}`.
fn text_or_base64(bytes: &[u8]) -> serde_json::Value {
    match std::str::from_utf8(bytes) {
        Ok(text) => json!(text),
        Err(_) => crate::json::base64(bytes),
    }
}
