//! `tributary group create | setid | delete` and `tributary trim`.

use serde_json::json;
use tributary::{Admin, BoxError, Connection, HoldReason, Retention};

use crate::cli::{GroupCommand, Output, TrimArgs};
use crate::output;

pub(crate) async fn group(conn: Connection, out: Output, command: GroupCommand) -> Result<(), BoxError> {
    let admin = Admin::new(conn);
    match command {
        GroupCommand::Create { topic, group, from } => {
            let created = admin.create_group(&topic, &group, from).await?;
            output::single(out, "created", json!(created));
        }
        GroupCommand::Setid { topic, group, to } => {
            admin.set_group_position(&topic, &group, to).await?;
            output::single(out, "moved", json!(true));
        }
        GroupCommand::Delete { topic, group } => {
            let deleted = admin.delete_group(&topic, &group).await?;
            output::single(out, "deleted", json!(deleted));
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
    let trimmed = Admin::new(conn).trim(&args.topic, retention).await?;
    let held = trimmed.held_by.as_ref();
    match out {
        Output::Json => println!(
            "{}",
            json!({
                "removed": trimmed.removed,
                "remaining": trimmed.remaining,
                "held_by": held.map(|h| json!({
                    "group": h.group,
                    "reason": match h.reason { HoldReason::Pending => "pending", _ => "unread" },
                    "from": h.from.to_string(),
                })),
            })
        ),
        Output::Table => match held {
            None => println!("removed {}; {} remain", trimmed.removed, trimmed.remaining),
            Some(h) => println!(
                "removed {}; kept {}: group `{}` needs them ({} from {} on)",
                trimmed.removed, trimmed.remaining, h.group, h.reason, h.from
            ),
        },
    }
    Ok(())
}
