//! `tributary topic create`.

use serde_json::json;
use tributary::{Admin, BoxError, Connection};

use crate::cli::{Output, TopicCommand};
use crate::output::report;

pub(crate) async fn run(conn: Connection, out: Output, command: TopicCommand) -> Result<(), BoxError> {
    let admin = Admin::new(conn);
    match command {
        TopicCommand::Create { topic, partitions } => {
            let created = admin.create_topic(&topic, partitions).await?;
            let said = if created {
                format!("created topic {topic} with {partitions} partitions")
            } else {
                format!("topic {topic} already has {partitions} partitions; left as it was")
            };
            report(out, &said, json!({ "created": created, "topic": topic, "partitions": partitions }));
        }
    }
    Ok(())
}
