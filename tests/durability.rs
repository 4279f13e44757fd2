//! The log survives restarts and, with `fsync = "always"`, `kill -9`.

use crate::support;

use serde_json::json;
use std::time::Duration;
use support::*;

#[tokio::test]
async fn events_and_ids_survive_a_restart() {
    let server = Server::start(|_| {}).await;
    for i in 1..=10 {
        server
            .publish(json!({"topic":"keep","type":"n","data":format!("event {i}")}))
            .await;
    }
    let dir = server.stop().await.unwrap();

    let server = Server::start_in(dir.path(), |_| {}).await;
    let mut sse = server
        .sse("/events?topic=keep", &[("last-event-id", "0")])
        .await;
    sse.connected().await;
    let replayed = sse.events(10).await;
    assert_eq!(ids(&replayed), (1..=10).collect::<Vec<_>>());
    assert_eq!(replayed[9].data, "event 10");
    assert_eq!(replayed[9].kind, "n");
    assert_eq!(
        server.publish(json!({"topic":"keep","data":"after"})).await,
        [11]
    );
    assert_eq!(sse.events(1).await[0].last_id, "11");
    server.stop().await;
}

#[tokio::test]
async fn ids_keep_increasing_even_after_retention_empties_the_log() {
    let server = Server::start(|c| {
        c.log.retention.max_age = Some(Duration::from_millis(1));
        c.log.retention.interval = Duration::from_millis(20);
    })
    .await;
    server
        .publish(json!([{"topic":"x","data":1},{"topic":"x","data":2}]))
        .await;
    wait_stats(server.addr, |s| s["log"]["events"] == 0).await;
    let dir = server.stop().await.unwrap();
    let server = Server::start_in(dir.path(), |_| {}).await;
    assert_eq!(server.publish(json!({"topic":"x","data":3})).await, [3]);
    server.stop().await;
}

#[tokio::test]
async fn acknowledged_events_survive_sigkill_with_fsync_always() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    std::fs::write(&cfg, "[log]\nfsync = \"always\"\n").unwrap();
    let data = dir.path().join("data");
    let mut proc = spawn_binary(&cfg, &data);
    let addr = proc.addr;

    // Several concurrent publishers, so kills land in the middle of group commits.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u64, String)>();
    let mut publishers = Vec::new();
    for p in 0..4 {
        let tx = tx.clone();
        publishers.push(tokio::spawn(async move {
            for i in 0.. {
                let payload = format!("p{p}-{i}");
                let body = json!({"topic":"crash","data":payload}).to_string();
                let Some(v) = try_publish(addr, body).await else {
                    return;
                };
                let _ = tx.send((v["ids"][0].as_u64().unwrap(), payload));
            }
        }));
    }
    drop(tx);
    let mut acked = Vec::new();
    while acked.len() < 150 {
        acked.push(rx.recv().await.expect("publishers stopped early"));
    }
    proc.child.kill().unwrap(); // SIGKILL
    proc.child.wait().unwrap();
    for p in publishers {
        p.await.unwrap();
    }
    while let Ok(a) = rx.try_recv() {
        acked.push(a);
    }

    let proc = spawn_binary(&cfg, &data);
    let stored: std::collections::HashMap<u64, String> =
        poll_all(proc.addr, "crash").await.into_iter().collect();
    for (id, payload) in &acked {
        assert_eq!(
            stored.get(id),
            Some(payload),
            "acknowledged event {id} lost after SIGKILL"
        );
    }
    let mut proc = proc;
    let _ = proc.child.kill();
    let _ = proc.child.wait();
}
