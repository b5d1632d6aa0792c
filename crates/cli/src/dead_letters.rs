//! `tributary dlq list | replay | purge`.

use serde_json::json;
use tributary::{Admin, BoxError, Connection, DeadLetters, EntryId};

use crate::checks;
use crate::cli::{DlqCommand, Output};
use crate::output;

pub(crate) async fn run(conn: Connection, out: Output, command: DlqCommand) -> Result<(), BoxError> {
    let topic = match &command {
        DlqCommand::List { topic, .. } | DlqCommand::Replay { topic, .. } | DlqCommand::Purge { topic } => topic,
    };
    // Dead letters may outlive their topic's stream (deleted by hand): they are still listed.
    if DeadLetters::new(conn.clone(), topic)?.count().await? == 0 {
        checks::topic(&Admin::new(conn.clone()), conn.namespace().as_str(), topic).await?;
    }
    match command {
        DlqCommand::List { topic, count } => {
            let rows = DeadLetters::new(conn, &topic)?
                .list(count)
                .await?
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
        DlqCommand::Replay { topic, id, all } => {
            let dlq = DeadLetters::new(conn, &topic)?;
            if all {
                let report = dlq.replay_all().await?;
                output::single(out, "replayed", json!(report.replayed));
                if report.unreadable + report.without_fields > 0 {
                    eprintln!(
                        "tributary: left in the dead-letter stream: {} unreadable (not dead letters; see `dlq list`), \
                         {} whose original entry had been trimmed",
                        report.unreadable, report.without_fields
                    );
                }
            } else if let Some(id) = id {
                // The dead letter's own id, or the original entry's id that `dlq list` shows.
                let id: EntryId = id.parse()?;
                let replayed = match dlq.replay(id).await? {
                    Some(new_id) => Some(new_id),
                    None => match dlq.find_original(id).await? {
                        Some(letter) => dlq.replay(letter.id).await?,
                        None => None,
                    },
                };
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
        DlqCommand::Purge { topic } => {
            let n = DeadLetters::new(conn, &topic)?.purge().await?;
            output::single(out, "purged", json!(n));
        }
    }
    Ok(())
}
