//! The Lua scripts behind multi-step atomic operations, one file per operation in
//! `scripts/`. Every key a script touches shares one hash tag, so they run on Redis Cluster.

use std::sync::LazyLock;

use fred::types::scripts::Script;
use fred::types::{FromValue, Value};
use tributary_core::{Connection, RedisError};

/// A script with the name used in errors.
pub(crate) struct Lua {
    name: &'static str,
    script: Script,
}

impl Lua {
    fn new(name: &'static str, source: &'static str) -> Self {
        Self { name, script: Script::from_lua(source) }
    }

    /// `EVALSHA`, loading the script first if the server does not know it yet.
    pub(crate) async fn run<R: FromValue>(
        &self,
        conn: &Connection,
        keys: Vec<String>,
        args: Vec<Value>,
    ) -> Result<R, RedisError> {
        // Every key shares the first one's hash tag (see above): its node runs the script.
        let client = conn.client_for(keys.first().map_or("", String::as_str)).await;
        self.run_on(&client, keys, args).await.map_err(|e| crate::redis::noted(conn, e))
    }

    /// [`run`](Self::run) over `client`, already chosen for the keys' node.
    pub(crate) async fn run_on<R: FromValue>(
        &self,
        client: &fred::clients::Client,
        keys: Vec<String>,
        args: Vec<Value>,
    ) -> Result<R, RedisError> {
        self.script.evalsha_with_reload(client, keys, args).await.map_err(|e| RedisError::new(self.name, e))
    }
}

macro_rules! script {
    ($static:ident, $file:literal) => {
        pub(crate) static $static: LazyLock<Lua> =
            LazyLock::new(|| Lua::new(concat!("EVALSHA ", $file), include_str!(concat!("scripts/", $file, ".lua"))));
    };
}

script!(PUBLISH_IDEMPOTENT, "publish_idempotent");
script!(DEAD_LETTER, "dead_letter");
script!(CLAIM_OWNED, "claim_owned");
script!(RELEASE_OWNED, "release_owned");
script!(DELETE_IDLE_CONSUMERS, "delete_idle_consumers");
script!(DELETE_CONSUMER_IF_EMPTY, "delete_consumer_if_empty");
script!(TRIM_SAFE, "trim_safe");
script!(SET_RETENTION, "set_retention");
script!(REPLAY_DEAD_LETTER, "replay_dead_letter");
script!(SCHEDULE, "schedule");
script!(TAKE_DUE_TOPICS, "take_due_topics");
script!(RELEASE_DUE_TOPIC, "release_due_topic");
script!(REGISTER_TOPICS, "register_topics");
script!(NEW_TOPICS, "new_topics");
script!(MOVE_DUE, "move_due");
script!(CANCEL_SCHEDULED, "cancel_scheduled");
script!(LEASE_RENEW, "lease_renew");
script!(LEASE_RELEASE, "lease_release");
script!(FENCED_ACK, "fenced_ack");
script!(PARTITION_MEMBERS, "partition_members");
