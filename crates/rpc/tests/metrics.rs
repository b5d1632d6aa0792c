//! RPC calls recorded through the `metrics` facade (#20), read back from a recorder installed
//! for this test binary, against a real redis-server.

use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use tributary_core::Connection;
use tributary_rpc::{RpcClient, RpcError, RpcHandlerError, RpcServer};
use tributary_streams::metrics::{self as m, label};
use tributary_testkit::TestRedis;

/// A series' labels as sorted `(name, value)` pairs.
type Labels = Vec<(String, String)>;

#[tokio::test]
async fn calls_are_timed_by_service_method_and_outcome() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().expect("the only recorder of this binary");
    let redis = TestRedis::start().await;
    let conn = Connection::options().namespace(redis.namespace()).connect(&redis.url()).await.unwrap();
    let server = RpcServer::builder(conn.clone(), "pricing")
        .method("quote", |n: u64, _ctx| async move { Ok::<_, RpcHandlerError>(n * 2) })
        .build()
        .unwrap()
        .start();
    let client = RpcClient::new(conn.clone());
    for n in 0..3u64 {
        assert_eq!(client.call::<_, u64>("pricing", "quote", &n).await.unwrap(), n * 2);
    }
    // Nobody serves `stock`: the call ends at its timeout.
    let lost = client.call_with_timeout::<_, u64>("stock", "count", &1u64, Duration::from_millis(200)).await;
    assert!(matches!(lost, Err(RpcError::Timeout { .. })), "{lost:?}");

    let mut durations: Vec<(Labels, Vec<f64>)> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| key.key().name() == m::RPC_CALL_DURATION)
        .filter_map(|(key, _, _, value)| match value {
            DebugValue::Histogram(samples) => {
                let mut labels: Labels =
                    key.key().labels().map(|l| (l.key().to_owned(), l.value().to_owned())).collect();
                labels.sort();
                Some((labels, samples.into_iter().map(|s| s.into_inner()).collect()))
            }
            _ => None,
        })
        .collect();
    durations.sort_by(|a, b| a.0.cmp(&b.0));
    let pairs = |p: &[(&str, &str)]| -> Labels {
        let mut v: Vec<_> = p.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        v.sort();
        v
    };
    let ok = pairs(&[(label::SYSTEM, m::SYSTEM), (label::RPC_SERVICE, "pricing"), (label::RPC_METHOD, "quote")]);
    let timeout = pairs(&[
        (label::SYSTEM, m::SYSTEM),
        (label::RPC_SERVICE, "stock"),
        (label::RPC_METHOD, "count"),
        (label::ERROR_TYPE, "timeout"),
    ]);
    let labels: Vec<_> = durations.iter().map(|(l, _)| l.clone()).collect();
    assert_eq!(labels, {
        let mut want = vec![ok.clone(), timeout.clone()];
        want.sort();
        want
    });
    let of = |l: &Labels| durations.iter().find(|(k, _)| k == l).map(|(_, s)| s.clone()).unwrap();
    assert_eq!(of(&ok).len(), 3);
    let timed_out = of(&timeout);
    assert_eq!(timed_out.len(), 1);
    assert!((0.2..5.0).contains(&timed_out[0]), "the call lasted its timeout, in seconds: {timed_out:?}");
    server.shutdown().await;
}
