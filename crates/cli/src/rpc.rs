//! `tributary rpc call`.

use serde_json::Value;
use tributary::{BoxError, Connection, Json, RpcClient, RpcError};

use crate::cli::{Output, RpcCommand};

pub(crate) async fn run(conn: Connection, out: Output, command: RpcCommand) -> Result<(), BoxError> {
    let RpcCommand::Call { service, method, json, timeout } = command;
    let request: Value = serde_json::from_str(&json).map_err(|e| format!("--json is not valid JSON: {e}"))?;
    // A call to a service no server ever read would wait for its timeout, and its request would
    // create the request stream and stay there: say so at once instead, and write nothing.
    let topic = tributary::rpc_keys::request_topic(&service)?;
    let admin = tributary::Admin::new(conn.clone());
    let served = admin.topic_exists(topic.as_str()).await? && !admin.groups(topic.as_str()).await?.is_empty();
    if !served {
        return Err(format!(
            "no server has ever read `{topic}`: is a server for service `{service}` running, \
             in namespace `{}`?",
            conn.namespace().as_str()
        )
        .into());
    }
    // JSON on the wire, so the server answers in JSON too.
    let client = RpcClient::builder(conn).codec(Json).build()?;
    let result = client.call_with_timeout::<Value, Value>(&service, &method, &request, timeout).await;
    let _ = client.close().await;
    match result {
        Ok(reply) => {
            match out {
                Output::Json => crate::output::message_line(&serde_json::json!({ "reply": reply }))?,
                Output::Table => crate::output::message_line(&reply)?,
            }
            Ok(())
        }
        Err(RpcError::Remote { code, message, details, .. }) => {
            let details = details.map(|d| format!(" {d}")).unwrap_or_default();
            Err(format!("{service}.{method} failed with `{code}`: {message}{details}").into())
        }
        Err(e) => Err(e.into()),
    }
}
