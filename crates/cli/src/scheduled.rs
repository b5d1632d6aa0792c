//! `tributary scheduled list | cancel`.

use serde_json::json;
use tributary::{BoxError, Connection, Scheduler};

use crate::cli::{Output, ScheduledCommand};
use crate::output;

pub(crate) async fn run(conn: Connection, out: Output, command: ScheduledCommand) -> Result<(), BoxError> {
    let scheduler = Scheduler::new(conn);
    match command {
        ScheduledCommand::List { topic, count } => {
            let rows = scheduler
                .list(&topic, count)
                .await?
                .into_iter()
                .map(|s| {
                    let payload = s.envelope.as_ref().map(output::payload).unwrap_or(serde_json::Value::Null);
                    vec![json!(s.id), json!(humantime::format_rfc3339_millis(s.due).to_string()), payload]
                })
                .collect();
            output::rows(out, &["id", "due", "payload"], rows);
        }
        ScheduledCommand::Cancel { topic, id } => {
            if !scheduler.cancel(&topic, &id).await? {
                return Err(
                    format!("`{id}` is not scheduled on topic `{topic}` (already delivered, or unknown)").into()
                );
            }
            output::single(out, "cancelled", json!(id));
        }
        ScheduledCommand::RunNow { topic, id } => {
            if !scheduler.run_now(&topic, &id).await? {
                return Err(
                    format!("`{id}` is not scheduled on topic `{topic}` (already delivered, or unknown)").into()
                );
            }
            output::single(out, "delivered", json!(id));
        }
    }
    Ok(())
}
