//! What must exist before a command acts, and the errors that say so: what is missing, what
//! there is instead, and what to do (rather than `ERR no such key` or an empty table).

use tributary::{Admin, BoxError};

/// Most names listed in an error.
const LISTED: usize = 10;

/// Fails unless `topic` exists, listing the topics that do.
pub(crate) async fn topic(admin: &Admin, namespace: &str, topic: &str) -> Result<(), BoxError> {
    // A partitioned topic may have no stream of its own yet.
    if admin.topic_exists(topic).await? || admin.partitions(topic).await.ok().flatten().is_some() {
        return Ok(());
    }
    let topics: Vec<String> = admin.topics().await?.iter().map(ToString::to_string).collect();
    let there = if topics.is_empty() {
        format!("namespace `{namespace}` has no topics; is `--namespace` right?")
    } else {
        format!("topics in namespace `{namespace}`: {}", listed(&topics))
    };
    Err(format!("topic `{topic}` does not exist ({there})").into())
}

/// Fails unless `topic` exists and has `group`, listing the groups it has.
pub(crate) async fn group(admin: &Admin, namespace: &str, topic_name: &str, group: &str) -> Result<(), BoxError> {
    let create = format!("create it with `tributary group create {topic_name} {group}`");
    group_or(admin, namespace, topic_name, group, &create).await
}

/// [`group`], with `create` saying how to create a missing group.
pub(crate) async fn group_or(
    admin: &Admin,
    namespace: &str,
    topic_name: &str,
    group: &str,
    create: &str,
) -> Result<(), BoxError> {
    topic(admin, namespace, topic_name).await?;
    let groups: Vec<String> = admin.groups(topic_name).await?.into_iter().map(|g| g.name).collect();
    if groups.iter().any(|g| g == group) {
        return Ok(());
    }
    let there = if groups.is_empty() { "it has no groups".to_owned() } else { format!("groups: {}", listed(&groups)) };
    Err(format!("group `{group}` does not exist on `{topic_name}` ({there}; {create})").into())
}

fn listed(names: &[String]) -> String {
    let mut sorted = names.to_vec();
    sorted.sort();
    let mut text = sorted.iter().take(LISTED).cloned().collect::<Vec<_>>().join(", ");
    if sorted.len() > LISTED {
        text.push_str(&format!(" and {} more", sorted.len() - LISTED));
    }
    text
}

/// Goes ahead with a destructive command: at once with `--yes`; on a terminal, when the answer
/// to `question` is yes; elsewhere (a script, a pipe) not at all.
pub(crate) fn confirm(question: &str, yes: bool) -> Result<(), BoxError> {
    use std::io::{BufRead, IsTerminal, Write};
    if yes {
        return Ok(());
    }
    if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
        return Err(format!("{question} Not without --yes (no terminal to ask on).").into());
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        Err("cancelled; nothing changed".into())
    }
}
