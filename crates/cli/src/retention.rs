//! `tributary retention get | set | clear`: a topic's stored retention, which every producer
//! applies.

use serde_json::json;
use tributary::{Admin, BoxError, Connection, Retention};

use crate::checks;
use crate::cli::{Output, RetentionCommand};
use crate::output::report;

pub(crate) async fn run(conn: Connection, out: Output, command: RetentionCommand) -> Result<(), BoxError> {
    let namespace = conn.namespace().as_str().to_owned();
    let admin = Admin::new(conn);
    match command {
        RetentionCommand::Get { topic } => {
            let retention = admin.retention(&topic).await?;
            if retention.is_none() {
                // A mistyped name has no retention either: say so rather than `none`.
                checks::topic(&admin, &namespace, &topic).await?;
            }
            let said = match retention {
                Some(r) => format!("{topic}: {r}"),
                None => format!("{topic}: none (publishes do not trim it)"),
            };
            report(out, &said, json!({ "topic": topic, "retention": retention.map(|r| r.to_string()) }));
        }
        RetentionCommand::Set(args) => {
            let mut retention = match (args.maxlen, args.max_age) {
                (Some(n), _) => Retention::max_len(n),
                (None, Some(age)) => Retention::max_age(age),
                (None, None) => return Err("give --maxlen or --max-age".into()),
            };
            if args.safe {
                retention = retention.safe();
            }
            let topic = args.topic;
            if !args.safe {
                checks::confirm(
                    &format!(
                        "Set the retention of `{topic}` to {retention} without --safe? Publishes will then remove \
                         entries a group has not read or acknowledged."
                    ),
                    args.yes,
                )?;
            }
            admin.set_retention(&topic, retention).await?;
            let exists = admin.topic_exists(&topic).await?;
            let said = if exists {
                format!("set the retention of {topic} to {retention}")
            } else {
                format!("set the retention of {topic} to {retention} (the topic does not exist yet)")
            };
            report(out, &said, json!({ "topic": topic, "retention": retention.to_string(), "topic_exists": exists }));
        }
        RetentionCommand::Clear { topic } => {
            let cleared = admin.clear_retention(&topic).await?;
            let said = if cleared {
                format!("cleared the retention of {topic}; publishes no longer trim it")
            } else {
                format!("{topic} had no retention; nothing changed")
            };
            report(out, &said, json!({ "topic": topic, "cleared": cleared }));
        }
    }
    Ok(())
}
