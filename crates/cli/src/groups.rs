//! `tributary group create | setid | delete` and `tributary trim`.

use serde_json::json;
use tributary::{Admin, BoxError, Connection, HoldReason, Retention};

use crate::checks;
use crate::cli::{GroupCommand, Output, TrimArgs};
use crate::output;
use crate::output::report;

pub(crate) async fn group(conn: Connection, out: Output, command: GroupCommand) -> Result<(), BoxError> {
    let namespace = conn.namespace().as_str().to_owned();
    let admin = Admin::new(conn);
    match command {
        GroupCommand::Create { topic, group, from } => {
            let created = admin.create_group(&topic, &group, from).await?;
            let said = if created {
                format!("created group {group} on {topic} at {}", output::position(from))
            } else {
                format!("group {group} already exists on {topic}; left as it was")
            };
            report(out, &said, json!({ "created": created, "topic": topic, "group": group }));
        }
        GroupCommand::Setid { topic, group, to } => {
            checks::group(&admin, &namespace, &topic, &group).await?;
            admin.set_group_position(&topic, &group, to).await?;
            let said = format!("moved group {group} on {topic} to {}", output::position(to));
            report(out, &said, json!({ "moved": true, "topic": topic, "group": group }));
        }
        GroupCommand::Delete { topic, group, yes } => {
            checks::group(&admin, &namespace, &topic, &group).await?;
            let pending = admin.pending_count(&topic, &group).await?;
            checks::confirm(
                &format!("Delete group `{group}` of `{topic}` (its cursor and {pending} pending entries)?"),
                yes,
            )?;
            let deleted = admin.delete_group(&topic, &group).await?;
            let said = format!("deleted group {group} from {topic}");
            report(out, &said, json!({ "deleted": deleted, "topic": topic, "group": group }));
        }
    }
    Ok(())
}

pub(crate) async fn trim(conn: Connection, out: Output, args: TrimArgs) -> Result<(), BoxError> {
    let mut retention = match (args.maxlen, args.minid) {
        (Some(n), _) => Retention::max_len(n),
        (None, Some(id)) => Retention::min_id(id),
        (None, None) => return Err("give --maxlen or --minid".into()),
    };
    if args.safe {
        retention = retention.safe();
    }
    if args.approx {
        retention = retention.approximate();
    }
    let admin = Admin::new(conn.clone());
    checks::topic(&admin, conn.namespace().as_str(), &args.topic).await?;
    // Of a partitioned topic, its own stream and each partition, each to the limit (as its
    // retention applies).
    let streams = crate::inspect::streams_of(&admin, &args.topic).await?;
    if !args.safe {
        let mut len = 0;
        for (_, name) in &streams {
            len += admin.len(name).await?;
        }
        checks::confirm(
            &format!(
                "Trim `{}` ({len} entries) without --safe? Entries a group has not read or acknowledged may go.",
                args.topic
            ),
            args.yes,
        )?;
    }
    for (partition, name) in &streams {
        let trimmed = admin.trim(name, retention).await?;
        let held = trimmed.held_by.as_ref();
        // A line per stream of a partitioned topic, each saying which.
        let partitioned = streams.len() > 1;
        let which = partition.map_or_else(|| "-".to_owned(), |p| p.to_string());
        match out {
            Output::Json => {
                let mut line = json!({
                    "removed": trimmed.removed,
                    "remaining": trimmed.remaining,
                    "held_by": held.map(|h| json!({
                        "group": h.group,
                        "reason": match h.reason { HoldReason::Pending => "pending", _ => "unread" },
                        "from": h.from.to_string(),
                    })),
                });
                if partitioned {
                    line["partition"] = json!(which);
                }
                println!("{line}");
            }
            Output::Table => {
                let prefix = if partitioned { format!("partition {which}: ") } else { String::new() };
                match held {
                    None => println!("{prefix}removed {}; {} remain", trimmed.removed, trimmed.remaining),
                    Some(h) => println!(
                        "{prefix}removed {}; kept {}: group `{}` needs them ({} from {} on)",
                        trimmed.removed, trimmed.remaining, h.group, h.reason, h.from
                    ),
                }
            }
        }
    }
    Ok(())
}
