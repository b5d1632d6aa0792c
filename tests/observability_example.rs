//! `examples/observability.rs` run as an operator would, against a real redis-server: its
//! Prometheus endpoint is scraped over HTTP while no worker runs (the group's lag is what was
//! published) and after a worker drained the topic (lag 0, every order counted).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tributary_testkit::{http, wait_until, workspace_binary, TestRedis};

const PATIENCE: Duration = Duration::from_secs(60);

/// The example's process, killed if the test ends early.
struct Example(Child);

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The samples of a Prometheus text page: `name{labels}` → value.
async fn scrape(addr: &str) -> Result<HashMap<String, f64>, String> {
    let page = http("GET", addr, "/metrics", &[], "")?;
    if page.status != 200 {
        return Err(format!("status {}", page.status));
    }
    Ok(page
        .body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect())
}

/// The value of the one series of `name` whose labels include each of `labels` (`k="v"`) and
/// that has no `error_type` label.
fn value(page: &HashMap<String, f64>, name: &str, labels: &[&str]) -> Option<f64> {
    let mut found = page.iter().filter(|(series, _)| {
        series.split_once('{').map_or(series.as_str(), |(n, _)| n) == name
            && labels.iter().all(|l| series.contains(l))
            && !series.contains("error_type")
    });
    let (_, v) = found.next()?;
    assert!(found.next().is_none(), "more than one series of {name} with {labels:?}");
    Some(*v)
}

#[tokio::test]
async fn the_example_exports_lag_while_no_worker_runs_and_its_fall_after() {
    let redis = TestRedis::start().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let child = Command::new(workspace_binary("examples/observability"))
        .env("REDIS_URL", redis.url())
        .env("METRICS_ADDR", &addr)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("examples/observability is built (`cargo test` builds the examples; alone: `cargo build -p tributary-redis --example observability`)");
    let mut example = Example(child);
    let mut stdin = example.0.stdin.take().unwrap();
    let mut lines = BufReader::new(example.0.stdout.take().unwrap()).lines();
    let mut said = move |what: &str| {
        let line = lines.next().expect("a line").expect("utf-8");
        assert!(line.contains(what), "expected `{what}`, got `{line}`");
    };
    said("metrics at");
    said("published 200 orders");

    let topic = "messaging_destination_name=\"orders\"";
    let group = "messaging_consumer_group_name=\"billing\"";
    // No worker yet: the sampler reports the 200 as the group's lag.
    wait_until(PATIENCE, "lag 200 with no worker", || async {
        scrape(&addr).await.is_ok_and(|p| value(&p, "tributary_group_lag", &[topic, group]) == Some(200.0))
    })
    .await;
    let page = scrape(&addr).await.unwrap();
    assert_eq!(value(&page, "messaging_client_sent_messages", &[topic]), Some(200.0));
    assert_eq!(value(&page, "tributary_topic_length", &[topic]), Some(200.0));
    assert_eq!(value(&page, "tributary_group_pending", &[topic, group]), Some(0.0));

    // The worker runs: the lag falls to 0, every order is counted, two are dead letters.
    stdin.write_all(b"\n").unwrap();
    said("settled: 198 acknowledged, 2 dead letters");
    wait_until(PATIENCE, "lag and pending back to 0, the dead letters sampled", || async {
        scrape(&addr).await.is_ok_and(|p| {
            value(&p, "tributary_group_lag", &[topic, group]) == Some(0.0)
                && value(&p, "tributary_group_pending", &[topic, group]) == Some(0.0)
                && value(&p, "tributary_dead_letter_length", &[topic]) == Some(2.0)
        })
    })
    .await;
    let page = scrape(&addr).await.unwrap();
    let receive = "messaging_operation_name=\"receive\"";
    assert_eq!(value(&page, "messaging_client_consumed_messages", &[topic, group, receive]), Some(200.0));
    assert_eq!(value(&page, "tributary_dead_letters", &[topic, group, "reason=\"rejected\""]), Some(2.0));
    assert_eq!(value(&page, "tributary_handlers_in_flight", &[topic, group]), Some(0.0));
    assert_eq!(value(&page, "tributary_group_oldest_pending_idle", &[topic, group]), Some(0.0));
    // Handler durations: 198 successes, each at least the 2 ms of work.
    assert_eq!(value(&page, "messaging_process_duration_count", &[topic, group]), Some(198.0));
    let median = value(&page, "messaging_process_duration", &[topic, group, "quantile=\"0.5\""]);
    assert!(median.is_some_and(|m| (0.002..5.0).contains(&m)), "{median:?}");

    // Enter again: it stops and cleans up.
    stdin.write_all(b"\n").unwrap();
    drop(stdin);
    let status = tokio::task::spawn_blocking(move || example.0.wait()).await.unwrap().unwrap();
    // (Dropping `example` then kills nothing: it has exited.)
    assert!(status.success(), "{status}");
}
