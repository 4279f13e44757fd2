//! `spout bench --via KIND`: publish the bench's events into a broker that
//! the measured hub relays (`[[source]]` in its config; see
//! `docs/bench/sources.toml` for the names used here) instead of `POST
//! /publish`. Each message is a `/publish` JSON object, so the hub needs no
//! plugin; deliveries and latency are measured the same way.

use std::time::Duration;

/// Where bench events are published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Via {
    /// `POST /publish` on the hub.
    Http,
    /// Rows in the `spout_bench_outbox` table.
    Postgres,
    /// JetStream stream `SPOUT_BENCH`, subjects `spout.bench.>`.
    Nats,
    /// RabbitMQ queue `spout_bench`.
    Amqp,
    /// MQTT topics `spout/bench/T`, QoS 1.
    Mqtt,
    /// Redis stream `spout:bench`.
    Redis,
}

impl Via {
    /// The broker's default URL on this machine.
    pub fn default_url(self) -> &'static str {
        match self {
            Via::Http => "",
            Via::Postgres => "host=127.0.0.1 user=postgres dbname=test",
            Via::Nats => "nats://127.0.0.1:4222",
            Via::Amqp => "amqp://guest:guest@127.0.0.1:5672/%2f",
            Via::Mqtt => "127.0.0.1:1883",
            Via::Redis => "redis://127.0.0.1:6379",
        }
    }
}

/// A connection that publishes bench events into one broker.
pub enum Feed {
    /// A PostgreSQL client inserting outbox rows.
    Postgres(tokio_postgres::Client),
    /// A JetStream context.
    Nats(async_nats::jetstream::Context),
    /// A channel with publisher confirms (and its connection, kept open).
    Amqp(lapin::Channel, lapin::Connection),
    /// An MQTT client, and PUBACKs counted by its event loop task.
    Mqtt(
        rumqttc::AsyncClient,
        tokio::sync::mpsc::UnboundedReceiver<()>,
    ),
    /// A Redis connection.
    Redis(redis::aio::MultiplexedConnection),
}

/// Why a broker could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{via:?}: {detail}")]
pub struct FeedError {
    via: Via,
    detail: String,
}

fn fail(via: Via) -> impl Fn(&dyn std::fmt::Display) -> FeedError {
    move |e| FeedError {
        via,
        detail: e.to_string(),
    }
}

impl Feed {
    /// Connects to `url` and creates what the bench's source reads (table,
    /// stream, queue) if it is absent.
    pub async fn connect(via: Via, url: &str, index: usize) -> Result<Feed, FeedError> {
        let err = fail(via);
        match via {
            Via::Http => Err(err(&"not a broker")),
            Via::Postgres => {
                let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                    .await
                    .map_err(|e| err(&e))?;
                tokio::spawn(conn);
                // Creating it twice at once may race: the loser's error is harmless.
                let _ = client
                    .batch_execute(
                        "CREATE TABLE IF NOT EXISTS spout_bench_outbox (id bigserial PRIMARY KEY, payload jsonb NOT NULL);
                         CREATE OR REPLACE FUNCTION spout_bench_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS
                           $$ BEGIN PERFORM pg_notify('spout_bench_outbox', ''); RETURN NULL; END $$;
                         DROP TRIGGER IF EXISTS spout_bench_outbox_notify ON spout_bench_outbox;
                         CREATE TRIGGER spout_bench_outbox_notify AFTER INSERT ON spout_bench_outbox
                           FOR EACH STATEMENT EXECUTE FUNCTION spout_bench_outbox_notify();",
                    )
                    .await;
                Ok(Feed::Postgres(client))
            }
            Via::Nats => {
                let client = async_nats::connect(url).await.map_err(|e| err(&e))?;
                let js = async_nats::jetstream::new(client);
                js.get_or_create_stream(async_nats::jetstream::stream::Config {
                    name: "SPOUT_BENCH".into(),
                    subjects: vec!["spout.bench.>".into()],
                    ..Default::default()
                })
                .await
                .map_err(|e| err(&e))?;
                Ok(Feed::Nats(js))
            }
            Via::Amqp => {
                let conn = lapin::Connection::connect(url, lapin::ConnectionProperties::default())
                    .await
                    .map_err(|e| err(&e))?;
                let ch = conn.create_channel().await.map_err(|e| err(&e))?;
                ch.confirm_select(Default::default())
                    .await
                    .map_err(|e| err(&e))?;
                ch.queue_declare(
                    "spout_bench".into(),
                    lapin::options::QueueDeclareOptions {
                        durable: true,
                        ..Default::default()
                    },
                    Default::default(),
                )
                .await
                .map_err(|e| err(&e))?;
                Ok(Feed::Amqp(ch, conn))
            }
            Via::Mqtt => {
                let (host, port) = url.rsplit_once(':').unwrap_or((url, "1883"));
                let port: u16 = port.parse().map_err(|e| err(&e))?;
                let mut opts = rumqttc::MqttOptions::new(
                    format!("spout-bench-{}-{index}", std::process::id()),
                    host,
                    port,
                );
                opts.set_keep_alive(Duration::from_secs(30));
                opts.set_inflight(500);
                let (client, mut events) = rumqttc::AsyncClient::new(opts, 10_000);
                let (tx, acked) = tokio::sync::mpsc::unbounded_channel();
                tokio::spawn(async move {
                    while let Ok(ev) = events.poll().await {
                        if let rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)) = ev {
                            let _ = tx.send(());
                        }
                    }
                });
                Ok(Feed::Mqtt(client, acked))
            }
            Via::Redis => {
                let client = redis::Client::open(url).map_err(|e| err(&e))?;
                // Pipelines of XADDs can take longer than the default
                // 500 ms response timeout on a loaded machine.
                let config = redis::AsyncConnectionConfig::new()
                    .set_response_timeout(Some(Duration::from_secs(10)));
                let conn = client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .map_err(|e| err(&e))?;
                Ok(Feed::Redis(conn))
            }
        }
    }

    /// Publishes `(topic, body)` events (`bench/T`, data) as `/publish`
    /// objects, each with a unique `id`; true once the broker has them all.
    pub async fn send(&mut self, batch: &[(usize, String)], ids: &mut u64) -> bool {
        let mut bodies = Vec::with_capacity(batch.len());
        for (t, data) in batch {
            *ids += 1;
            bodies.push((
                *t,
                *ids,
                serde_json::json!({"topic": format!("bench/{t}"), "data": data, "id": format!("b{}", *ids)})
                    .to_string(),
            ));
        }
        match self {
            Feed::Postgres(client) => {
                let payloads: Vec<&str> = bodies.iter().map(|(_, _, b)| b.as_str()).collect();
                client
                    .execute(
                        "INSERT INTO spout_bench_outbox (payload) SELECT unnest($1::text[])::jsonb",
                        &[&payloads],
                    )
                    .await
                    .is_ok()
            }
            Feed::Nats(js) => {
                for chunk in bodies.chunks(200) {
                    let mut acks = Vec::with_capacity(chunk.len());
                    for (t, _, b) in chunk {
                        match js
                            .publish(format!("spout.bench.{t}"), b.clone().into())
                            .await
                        {
                            Ok(a) => acks.push(a),
                            Err(_) => return false,
                        }
                    }
                    for a in acks {
                        if a.await.is_err() {
                            return false;
                        }
                    }
                }
                true
            }
            Feed::Amqp(ch, _) => {
                let mut confirms = Vec::with_capacity(bodies.len());
                for (_, id, b) in &bodies {
                    let props = lapin::BasicProperties::default()
                        .with_message_id(format!("b{id}").into())
                        .with_delivery_mode(2);
                    match ch
                        .basic_publish(
                            "".into(),
                            "spout_bench".into(),
                            Default::default(),
                            b.as_bytes(),
                            props,
                        )
                        .await
                    {
                        Ok(c) => confirms.push(c),
                        Err(_) => return false,
                    }
                }
                for c in confirms {
                    if c.await.is_err() {
                        return false;
                    }
                }
                true
            }
            Feed::Mqtt(client, acked) => {
                for (t, _, b) in &bodies {
                    if client
                        .publish(
                            format!("spout/bench/{t}"),
                            rumqttc::QoS::AtLeastOnce,
                            false,
                            b.clone(),
                        )
                        .await
                        .is_err()
                    {
                        return false;
                    }
                }
                for _ in &bodies {
                    match tokio::time::timeout(Duration::from_secs(10), acked.recv()).await {
                        Ok(Some(())) => {}
                        _ => return false,
                    }
                }
                true
            }
            Feed::Redis(conn) => {
                let mut pipe = redis::pipe();
                for (_, _, b) in &bodies {
                    pipe.cmd("XADD")
                        .arg("spout:bench")
                        .arg("*")
                        .arg("payload")
                        .arg(b.as_str())
                        .ignore();
                }
                pipe.query_async::<()>(conn).await.is_ok()
            }
        }
    }
}
