//! `rpc`: an echo call (64 B payload) with one sequential caller and with many concurrent
//! callers.
//!
//! - Tributary: `RpcClient::call` to an `RpcServer` method returning its request (default
//!   settings; the payload is `bytes::Bytes`, MessagePack `bin`).
//! - fred-pubsub: the usual Redis recipe, request/reply over pub/sub, of
//!   [`crate::baseline::pubsub_rpc`] (nothing durable: what an RPC that keeps nothing costs).
//! - fred: the hand-written request/reply over streams of [`crate::baseline::rpc`].
//! - NATS: async-nats `request` to a responder on a private `nats-server`, when one is
//!   installed.
//!
//! Every system has its own client and server connections (as separate processes would) and
//! is warmed up first; the systems take turns in each round. Targets (#19): with many callers,
//! throughput >= 0.8x the pub/sub RPC's and >= 0.6x NATS'; with one caller, p50 <= 1.1x the
//! pub/sub RPC's. The streams loop's ratios are reported.

use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use tributary::{BoxError, RpcClient, RpcHandlerError, RpcServer, RpcServerHandle};

use super::{closed_loop, encoded, payload, progress, Options};
use crate::baseline::pubsub_rpc;
use crate::baseline::rpc as fred_rpc;
use crate::env::{delete_keys, Env};
use crate::nats::{self, Nats};
use crate::report::{Figures, Report, Run, Target};

const SERVICE: &str = "bench";

/// One system under test.
#[derive(Clone)]
enum System {
    Tributary(RpcClient),
    Fred(fred_rpc::RpcClient),
    PubSub(pubsub_rpc::RpcClient),
    Nats(async_nats::Client),
}

impl System {
    fn name(&self) -> &'static str {
        match self {
            System::Tributary(_) => "tributary",
            System::Fred(_) => "fred",
            System::PubSub(_) => "fred-pubsub",
            System::Nats(_) => "nats",
        }
    }

    async fn call(&self, body: &Bytes, encoded: &Bytes) -> Result<(), BoxError> {
        let echoed = match self {
            System::Tributary(client) => client.call::<_, Bytes>(SERVICE, "echo", body).await?.len(),
            System::Fred(client) => client.call(encoded.clone()).await?.len(),
            System::PubSub(client) => client.call(encoded.clone()).await?.len(),
            System::Nats(client) => nats::call(client, encoded.clone()).await?.len(),
        };
        if echoed == 0 {
            return Err(format!("{} echoed an empty payload", self.name()).into());
        }
        Ok(())
    }

    async fn closed_loop(&self, calls: u64, callers: usize, body: &Bytes, encoded: &Bytes) -> Result<Run, BoxError> {
        let (system, body, encoded) = (self.clone(), body.clone(), encoded.clone());
        closed_loop(calls, callers, move || {
            let (system, body, encoded) = (system.clone(), body.clone(), encoded.clone());
            async move { system.call(&body, &encoded).await }
        })
        .await
    }
}

/// Runs the scenario.
///
/// # Errors
/// When a server cannot start or a call fails.
pub async fn run(env: &Env, o: &Options) -> Result<Report, BoxError> {
    let mut notes = Vec::new();
    let body = payload(o.payload_bytes);
    let encoded = encoded(&body);

    // Tributary: server and client on connections of their own.
    let server_conn = env.connect().await?;
    let mut server = RpcServer::builder(server_conn.clone(), SERVICE)
        .method("echo", |req: Bytes, _ctx| async move { Ok::<_, RpcHandlerError>(req) });
    if let Some(n) = o.rpc_server_concurrency {
        server = server.configure_worker(move |w| w.concurrency(n));
    }
    let server = server.build()?.start();
    let client_conn = env.connect().await?;
    let client = RpcClient::builder(client_conn.clone()).default_timeout(Duration::from_secs(10)).build()?;
    let request_key = server_conn.namespace().topic_stream(&tributary::rpc_keys::request_topic(SERVICE)?);

    // fred: the same, hand-written.
    let fred_request_key = env.raw_key("rpc");
    let fred_reply_key = env.raw_key(&format!("rpc-reply-{}", uuid::Uuid::now_v7().simple()));
    let fred_server = fred_rpc::Server::start(env.fred().await?, env.fred().await?, fred_request_key.clone()).await?;
    let fred_client = fred_rpc::RpcClient::start(
        env.fred().await?,
        env.fred().await?,
        fred_request_key.clone(),
        fred_reply_key.clone(),
    );

    // fred over pub/sub: a channel per service, a reply channel per client.
    let channel = format!("{}:rpc-pubsub", env.namespace());
    let pubsub_server = pubsub_rpc::Server::start(&env.url(), env.fred().await?, channel.clone()).await?;
    let reply_channel = format!("{channel}:reply:{}", uuid::Uuid::now_v7().simple());
    let pubsub_client = pubsub_rpc::RpcClient::start(&env.url(), env.fred().await?, channel, reply_channel).await?;

    let mut systems = vec![System::Tributary(client.clone()), System::PubSub(pubsub_client), System::Fred(fred_client)];
    let nats_server = if o.no_nats {
        notes.push("NATS baseline skipped (--no-nats)".to_owned());
        None
    } else {
        match Nats::start().await? {
            Some(n) => {
                progress("rpc", format!("nats-server on port {}", n.port()));
                systems.push(System::Nats(n.client()));
                Some(n)
            }
            None => {
                let msg = "NATS baseline missing: no `nats-server` on PATH (install Debian's nats-server)";
                progress("rpc", msg);
                notes.push(msg.to_owned());
                None
            }
        }
    };

    systems.retain(|s| match s {
        System::Tributary(_) => o.runs_tributary(),
        _ => o.runs_baseline(),
    });
    progress("rpc", "warm-up");
    for s in &systems {
        s.closed_loop(500, 1, &body, &encoded).await?;
        s.closed_loop(2_000, o.rpc_callers, &body, &encoded).await?;
    }
    let meter = env.cpu_meter().await?;
    let mut sequential: Vec<Vec<Run>> = vec![Vec::new(); systems.len()];
    let mut concurrent: Vec<Vec<Run>> = vec![Vec::new(); systems.len()];
    for round in 0..o.rounds {
        // Even rounds in the order of `systems`, odd rounds in reverse: with an even number of
        // rounds every pair of systems runs in either order equally often (the second to run
        // in a round is measurably slower on a shared machine).
        for k in 0..systems.len() {
            let i = if round % 2 == 0 { k } else { systems.len() - 1 - k };
            let system = &systems[i];
            sequential[i].push(meter.metered(system.closed_loop(o.rpc_sequential_calls, 1, &body, &encoded)).await?);
            concurrent[i]
                .push(meter.metered(system.closed_loop(o.rpc_concurrent_calls, o.rpc_callers, &body, &encoded)).await?);
        }
        let line: Vec<String> = systems
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let p50 = |r: &Run| r.latency.as_ref().map_or(0.0, |h| h.value_at_quantile(0.5) as f64 / 1000.0);
                format!(
                    "{} p50 {:.0}/{:.0} us {:.0}/s",
                    s.name(),
                    p50(&sequential[i][round]),
                    p50(&concurrent[i][round]),
                    concurrent[i][round].rate()
                )
            })
            .collect();
        progress("rpc", format!("round {}: {}", round + 1, line.join(", ")));
    }

    let callers = o.rpc_callers;
    let mut report = Report::new(
        "rpc",
        json!({
            "sequential_calls_per_round": o.rpc_sequential_calls,
            "concurrent_calls_per_round": o.rpc_concurrent_calls,
            "callers": callers,
            "rounds": o.rounds,
            "payload_bytes": o.payload_bytes,
            "tributary": "RpcClient::call -> RpcServer method echo (defaults)",
            "tributary_server_concurrency": o.rpc_server_concurrency,
            "fred": "hand-written: XADD request {corr, reply, p}; server XREADGROUP COUNT 64 BLOCK + one pipeline \
                     per read (XADD MAXLEN ~ 10000 reply per request, one XACK); client XREAD BLOCK on its \
                     reply stream from the last id",
            "fred-pubsub": "hand-written, the usual Redis recipe: client SUBSCRIBEs its reply channel once, \
                            PUBLISHes {corr, reply channel, payload}; server SUBSCRIBEd to the service channel \
                            PUBLISHes {corr, payload} back; nothing durable",
            "nats": "async-nats request/reply, private nats-server on loopback",
        }),
    );
    let mut results = Vec::new();
    for (i, s) in systems.iter().enumerate() {
        results.push(Figures::from_runs(format!("{}/1-caller", s.name()), &sequential[i]));
        results.push(Figures::from_runs(format!("{}/{callers}-callers", s.name()), &concurrent[i]));
    }
    report.notes = notes;
    let report = match o.only {
        Some(only) => report.one_side(only, results),
        None => {
            compare(&mut report, &results, callers)?;
            report.results = results;
            report
        }
    };
    shut_down(
        env,
        server,
        client,
        (fred_server, pubsub_server),
        nats_server,
        [request_key, fred_request_key, fred_reply_key],
    )
    .await?;
    Ok(report)
}

/// The ratios of Tributary to each baseline, and the targets (see the module's docs).
fn compare(report: &mut Report, results: &[Figures], callers: usize) -> Result<(), BoxError> {
    let find = |name: String| results.iter().find(|f| f.name == name).cloned();
    for mode in ["1-caller".to_owned(), format!("{callers}-callers")] {
        let t = find(format!("tributary/{mode}")).ok_or("tributary figures")?;
        let f = find(format!("fred/{mode}")).ok_or("fred figures")?;
        let one_caller = mode == "1-caller";
        let ps = find(format!("fred-pubsub/{mode}")).ok_or("fred-pubsub figures")?;
        let p50 = report.ratio(format!("p50 latency tributary/fred-pubsub {mode}"), t.p50(), ps.p50());
        let throughput = report.ratio(format!("throughput tributary/fred-pubsub {mode}"), t.per_second, ps.per_second);
        if one_caller {
            report.target(Target::at_most(format!("p50 latency tributary/fred-pubsub {mode}"), p50, 1.1));
        } else {
            report.target(Target::at_least(format!("throughput tributary/fred-pubsub {mode}"), throughput, 0.8));
        }
        report.ratio(format!("p50 latency tributary/fred {mode}"), t.p50(), f.p50());
        report.ratio(format!("throughput tributary/fred {mode}"), t.per_second, f.per_second);
        if let Some(n) = find(format!("nats/{mode}")) {
            report.ratio(format!("p50 latency tributary/nats {mode}"), t.p50(), n.p50());
            let throughput = report.ratio(format!("throughput tributary/nats {mode}"), t.per_second, n.per_second);
            if !one_caller {
                report.target(Target::at_least(format!("throughput tributary/nats {mode}"), throughput, 0.6));
            }
        }
    }
    Ok(())
}

/// Stops the servers and clients of the scenario and deletes its keys.
async fn shut_down<S, N>(
    env: &Env,
    server: RpcServerHandle,
    client: RpcClient,
    fred_server: S,
    nats_server: N,
    keys: [String; 3],
) -> Result<(), BoxError> {
    server.shutdown().await;
    let _ = client.close().await;
    drop(fred_server);
    drop(nats_server);
    let cleanup = env.fred().await?;
    delete_keys(&cleanup, &keys).await;
    Ok(())
}
