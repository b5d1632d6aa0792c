//! `tributary dashboard` in a real browser (headless Chromium through chromedriver, which
//! `.ci/run` installs), against a real redis-server: the overview shows a topic's lag, a dead
//! letter is opened and replayed (refused read-only), a chart has data points, and the
//! overview of 1,000 topics renders in bounded time. With `UPDATE_SCREENSHOTS=1`, the views
//! are saved under `docs/` (what `docs/dashboard.md` shows).

mod support;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use support::{connect, drain_refusing_order_1, spawn_group, Order, Process};
use tributary::prelude::*;
use tributary_testkit::{eventually, http, wait_until, TestRedis};

const PATIENCE: Duration = Duration::from_secs(30);

/// `tributary dashboard` with `args`: its process and URL.
fn dashboard(redis: &TestRedis, args: &[&str]) -> (support::Dashboard, String) {
    let d = support::dashboard(redis, args);
    let url = format!("http://{}", d.addr);
    (d, url)
}

/// Headless Chromium, driven through a chromedriver of its own.
async fn browser() -> (Process, Client) {
    // chromedriver picks no port of its own: a free one, taken back at once, and retried if
    // another process took it meanwhile.
    let (driver, port) = loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = spawn_group(
            Command::new(std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into()))
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
        .expect("chromedriver (Debian: apt-get install chromium chromium-driver; .ci/run installs them)");
        let mut driver = Process(child);
        let addr = format!("127.0.0.1:{port}");
        let mut up = false;
        wait_until(PATIENCE, "chromedriver answering, or gone", || {
            up = http("GET", &addr, "/status", &[], "").is_ok_and(|r| r.status == 200);
            let exited = driver.0.try_wait().ok().flatten().is_some();
            async move { up || exited }
        })
        .await;
        if up {
            break (driver, port);
        }
    };
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({ "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,900"] }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let client = ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a browser session");
    (driver, client)
}

/// The text of the first element matching `css`, once it satisfies `ready`.
async fn text_when(client: &Client, css: &str, ready: impl Fn(&str) -> bool) -> String {
    let last = std::sync::Mutex::new(String::new());
    eventually(PATIENCE, || async {
        let text = match client.find(Locator::Css(css)).await {
            Ok(e) => e.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        let ok = ready(&text);
        *last.lock().unwrap() = text.clone();
        if ok {
            Ok(())
        } else {
            Err(format!("`{css}` reads `{text}`"))
        }
    })
    .await;
    last.into_inner().unwrap()
}

/// Clicks the first element matching `css`, again if the page re-rendered it meanwhile.
async fn click(client: &Client, css: &str) {
    act_on(client, css, "click", |e| async move { e.click().await }).await;
}

/// Chooses `value` in the select matching `css`, again if the page re-rendered it meanwhile.
async fn choose(client: &Client, css: &str, value: &str) {
    act_on(client, css, "choose in", |e| async move { e.select_by_value(value).await }).await;
}

/// Does `act` to the first element matching `css`, found again when a re-render made it stale.
async fn act_on<F, Fut>(client: &Client, css: &str, what: &str, act: F)
where
    F: Fn(fantoccini::elements::Element) -> Fut,
    Fut: std::future::Future<Output = Result<(), fantoccini::error::CmdError>>,
{
    eventually(PATIENCE, || async {
        match client.find(Locator::Css(css)).await {
            Ok(e) => act(e).await.map_err(|e| format!("cannot {what} `{css}`: {e}")),
            Err(e) => Err(format!("cannot {what} `{css}`: {e}")),
        }
    })
    .await;
}

/// An attribute of the first element matching `css`, once there is one.
async fn attr(client: &Client, css: &str, name: &str) -> Option<String> {
    text_when(client, css, |_| true).await;
    client.find(Locator::Css(css)).await.ok()?.attr(name).await.ok()?
}

/// Saves a screenshot of the page under `docs/` when asked to (`UPDATE_SCREENSHOTS=1`).
async fn screenshot(client: &Client, name: &str) {
    let png = client.screenshot().await.expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    if std::env::var_os("UPDATE_SCREENSHOTS").is_some() {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs").join(format!("dashboard-{name}.png"));
        std::fs::write(&path, png).unwrap();
    }
}

#[tokio::test]
async fn an_operator_sees_lag_opens_a_dead_letter_and_replays_it_in_a_browser() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    Admin::new(conn.clone()).create_group("orders", "billing", Position::Beginning).await.unwrap();
    let producer = Producer::new(conn.clone());
    let mut ids = Vec::new();
    for id in 0..3 {
        ids.push(producer.publish("orders", &Order { id }).await.unwrap());
    }
    let reminder = producer.message("orders", &Order { id: 9 }).schedule_in(Duration::from_secs(3600)).await.unwrap();
    let (_read_only, read_only) = dashboard(&redis, &["--interval", "300ms"]);
    let (_driver, client) = browser().await;

    // The overview: the group's lag while no worker runs.
    client.goto(&read_only).await.unwrap();
    let lag = r#"#overview tr[data-topic="orders"][data-group="billing"] td.lag"#;
    text_when(&client, lag, |t| t == "3").await;
    text_when(&client, "#mode", |t| t == "read-only").await;
    screenshot(&client, "overview").await;

    // A worker refuses order 1: the topic's page lists the dead letter, with charts.
    drain_refusing_order_1(&conn, 3).await;
    text_when(&client, lag, |t| t == "0").await;
    client.goto(&format!("{read_only}/#/topic/orders")).await.unwrap();
    text_when(&client, "#dead-letters tbody tr td:nth-child(3)", |t| t == "rejected").await;
    let points: usize = attr(&client, r#"svg.chart[data-title="lag"]"#, "data-points").await.unwrap().parse().unwrap();
    assert!(points >= 2, "the lag chart has {points} points");
    assert!(!client.find(Locator::Id("replay-selected")).await.unwrap().is_enabled().await.unwrap(), "read-only");
    screenshot(&client, "topic").await;
    // Filtered by reason: none of another reason, then all again.
    choose(&client, "#filter-reason", "expired").await;
    text_when(&client, "main", |t| t.contains("No dead letters.")).await;
    choose(&client, "#filter-reason", "rejected").await;
    text_when(&client, "#dead-letters tbody tr td:nth-child(3)", |t| t == "rejected").await;

    // Opened in full: the payload decoded, the error.
    click(&client, "#dead-letters tbody tr td:nth-child(2) a").await;
    text_when(&client, "#message", |t| t.contains("\"id\": 1")).await;
    assert!(!client.find(Locator::Id("replay-one")).await.unwrap().is_enabled().await.unwrap(), "read-only");
    screenshot(&client, "dead-letter").await;
    let dlq = DeadLetters::new(conn.clone(), "orders").unwrap();
    assert_eq!(dlq.count().await.unwrap(), 1, "nothing replayed read-only");

    // With actions allowed: chosen, confirmed, replayed onto the topic.
    let (_writable, writable) = dashboard(&redis, &["--interval", "300ms", "--allow-actions"]);
    client.goto(&format!("{writable}/#/topic/orders")).await.unwrap();
    text_when(&client, "#mode", |t| t == "actions allowed").await;
    text_when(&client, "#dead-letters tbody tr td:nth-child(3)", |t| t == "rejected").await;
    click(&client, "#dead-letters tbody input[type=checkbox]").await;
    click(&client, "#replay-selected").await;
    client.accept_alert().await.expect("a confirmation was asked");
    text_when(&client, "#status", |t| t.contains("replayed 1")).await;
    assert_eq!(dlq.count().await.unwrap(), 0);
    assert_eq!(Admin::new(conn.clone()).len("orders").await.unwrap(), 4, "back on the topic");

    // The group's consumers and pending entries (a consumer that read the replayed entry and
    // died), a message by its id, and a scheduled message cancelled.
    let key = conn.namespace().topic_stream(&tributary::Topic::new("orders").unwrap());
    redis.cli(&["XREADGROUP", "GROUP", "billing", "gone-1", "COUNT", "1", "STREAMS", &key, ">"]);
    client.goto(&format!("{writable}/#/topic/orders/group/billing")).await.unwrap();
    text_when(&client, "#consumers tbody tr td:nth-child(1)", |t| t == "gone-1").await;
    text_when(&client, "#pending tbody tr td:nth-child(2)", |t| t == "gone-1").await;
    screenshot(&client, "group").await;
    client.goto(&format!("{writable}/#/topic/orders/message/{}", ids[2])).await.unwrap();
    text_when(&client, "#message", |t| t.contains("\"id\": 2")).await;
    client.goto(&format!("{writable}/#/topic/orders")).await.unwrap();
    text_when(&client, "#scheduled tbody tr td:nth-child(1)", |t| t == reminder).await;
    click(&client, "#scheduled tbody tr button").await;
    client.accept_alert().await.expect("a confirmation was asked");
    text_when(&client, "#status", |t| t.contains("cancelled 1")).await;
    assert_eq!(Scheduler::new(conn.clone()).count("orders").await.unwrap(), 0);
    client.close().await.unwrap();
}

#[tokio::test]
async fn the_overview_of_a_thousand_topics_renders_a_page_at_a_time() {
    let redis = TestRedis::start().await;
    let conn = connect(&redis).await;
    let producer = Producer::new(conn.clone());
    for n in 0..1000 {
        producer.publish(&format!("load.t{n:04}"), &Order { id: n }).await.unwrap();
    }
    let (_d, url) = dashboard(&redis, &["--interval", "2s"]);
    let (_driver, client) = browser().await;
    client.goto(&url).await.unwrap();
    text_when(&client, ".toolbar .muted", |t| t == "topics 1–100 of 1000").await;
    let rows = client.find_all(Locator::Css("#overview tbody tr")).await.unwrap().len();
    assert_eq!(rows, 100, "a page of topics");
    // The render time of the view, request included, as the page measured it.
    let render_ms: u64 = attr(&client, "body", "data-render-ms").await.unwrap().parse().unwrap();
    eprintln!("overview of 1,000 topics: a page of 100 rendered in {render_ms} ms");
    assert!(render_ms < 5_000, "{render_ms} ms");
    client.close().await.unwrap();
}
