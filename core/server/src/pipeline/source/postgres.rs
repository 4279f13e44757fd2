//! A PostgreSQL outbox drained in batches: `BEGIN`, lock the oldest rows
//! with `FOR UPDATE SKIP LOCKED`, store their events, `DELETE` them and
//! `COMMIT` in the same transaction. A crash before the commit leaves the
//! rows in the table (the transaction aborts, the locks go), so they are
//! read again and the log answers their keys with the stored ids; `SKIP
//! LOCKED` lets several nodes drain one table without waiting on each other.
//!
//! Identity: the row's primary key (`id_column`), which must never be
//! reused (a `bigserial` or identity column, not restarted). `LISTEN` on
//! `channel` wakes the drain when a trigger `NOTIFY`s; the table is also
//! read every `poll` in case a notification was missed.

use super::broker::{Broker, BrokerError, Message};
use crate::brokers::PostgresSource;
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_postgres::{AsyncMessage, Client, NoTls, Statement};

/// A PostgreSQL error with the server's message and SQLSTATE when it has
/// them (tokio-postgres displays a server error only as "db error").
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

/// An outbox drain on one connection.
pub struct Outbox {
    cfg: PostgresSource,
    conn: Option<Conn>,
}

struct Conn {
    client: Client,
    select: Statement,
    delete: Statement,
    count: Statement,
    /// Woken by `NOTIFY` on the channel.
    wake: Arc<Notify>,
    /// A transaction is open (rows are locked).
    open: bool,
    driver: tokio::task::JoinHandle<()>,
}

impl Outbox {
    /// A drain for `cfg`; nothing connects until [`Broker::connect`].
    pub fn new(cfg: PostgresSource) -> Outbox {
        Outbox { cfg, conn: None }
    }

    fn conn(&mut self) -> Result<&mut Conn, BrokerError> {
        self.conn
            .as_mut()
            .ok_or_else(|| BrokerError::Lost("not connected".into()))
    }

    /// Locks up to `max` rows in a new transaction; commits at once when
    /// there are none.
    async fn take(&mut self, max: usize) -> Result<Vec<Message<String>>, BrokerError> {
        let subject = self.cfg.subject_column.is_some();
        let conn = self.conn()?;
        let lost =
            |e: tokio_postgres::Error| BrokerError::Lost(format!("outbox: {}", describe(&e)));
        conn.client.batch_execute("BEGIN").await.map_err(lost)?;
        conn.open = true;
        let rows = conn
            .client
            .query(&conn.select, &[&(max as i64)])
            .await
            .map_err(lost)?;
        if rows.is_empty() {
            conn.client.batch_execute("COMMIT").await.map_err(lost)?;
            conn.open = false;
            return Ok(Vec::new());
        }
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let id: String = row.try_get(0).map_err(lost)?;
            let tid: String = row.try_get(1).map_err(lost)?;
            let payload: Option<String> = row.try_get(2).map_err(lost)?;
            let subject = if subject {
                row.try_get::<_, Option<String>>(3).map_err(lost)?
            } else {
                None
            };
            out.push(Message {
                identity: Some(id.clone()),
                subject,
                body: bytes::Bytes::from(payload.unwrap_or_default()),
                meta: vec![("row-id".into(), id)],
                ack: tid,
            });
        }
        Ok(out)
    }
}

impl Broker for Outbox {
    type Ack = String;

    fn describe(&self) -> String {
        format!("postgres outbox {}", self.cfg.table)
    }

    async fn connect(&mut self) -> Result<(), BrokerError> {
        let err =
            |e: tokio_postgres::Error| BrokerError::Connect(format!("outbox: {}", describe(&e)));
        let (client, mut connection) = tokio::time::timeout(
            Duration::from_secs(10),
            tokio_postgres::connect(&self.cfg.url, NoTls),
        )
        .await
        .map_err(|_| BrokerError::Connect("outbox: connecting took over 10s".into()))?
        .map_err(err)?;
        let wake = Arc::new(Notify::new());
        let woken = wake.clone();
        // The connection's messages: notifications wake the drain; the task
        // ends when the connection does (the client then reports closed).
        let driver = tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(m) = messages.next().await {
                match m {
                    Ok(AsyncMessage::Notification(_)) => woken.notify_one(),
                    Ok(_) => {}
                    Err(error) => {
                        tracing::debug!(%error, "outbox connection ended");
                        break;
                    }
                }
            }
            woken.notify_one();
        });
        let c = &self.cfg;
        let table = &c.table;
        let id = &c.id_column;
        let subject = c
            .subject_column
            .as_ref()
            .map(|s| format!(", {s}::text"))
            .unwrap_or_default();
        let select = format!(
            // Ordered by the column itself (`{id}` alone would name the
            // text output column and sort 10 before 9).
            "SELECT {id}::text, ctid::text, {payload}::text{subject} FROM {table} AS t \
             ORDER BY t.{id} LIMIT $1 FOR UPDATE OF t SKIP LOCKED",
            payload = c.payload_column
        );
        let setup = async {
            let select = client.prepare(&select).await?;
            let delete = client
                .prepare(&format!(
                    "DELETE FROM {table} WHERE ctid = ANY($1::text[]::tid[])"
                ))
                .await?;
            let count = client
                .prepare(&format!("SELECT count(*) FROM {table}"))
                .await?;
            let channel = c
                .channel
                .clone()
                .unwrap_or_else(|| table.rsplit('.').next().unwrap_or(table).to_owned());
            client.batch_execute(&format!("LISTEN {channel}")).await?;
            Ok::<_, tokio_postgres::Error>((select, delete, count))
        };
        let (select, delete, count) = match setup.await {
            Ok(s) => s,
            Err(e) => {
                driver.abort();
                return Err(err(e));
            }
        };
        self.conn = Some(Conn {
            client,
            select,
            delete,
            count,
            wake,
            open: false,
            driver,
        });
        Ok(())
    }

    async fn fetch(
        &mut self,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Message<String>>, BrokerError> {
        let rows = self.take(max).await?;
        if !rows.is_empty() {
            return Ok(rows);
        }
        let conn = self.conn()?;
        if conn.client.is_closed() {
            return Err(BrokerError::Lost("outbox: the connection closed".into()));
        }
        let wake = conn.wake.clone();
        let _ = tokio::time::timeout(wait.min(self.cfg.poll), wake.notified()).await;
        self.take(max).await
    }

    async fn ack(&mut self, acks: Vec<String>) -> Result<(), BrokerError> {
        let conn = self.conn()?;
        if !conn.open {
            return Ok(());
        }
        let lost =
            |e: tokio_postgres::Error| BrokerError::Lost(format!("outbox: {}", describe(&e)));
        conn.client
            .execute(&conn.delete, &[&acks])
            .await
            .map_err(lost)?;
        conn.client.batch_execute("COMMIT").await.map_err(lost)?;
        conn.open = false;
        Ok(())
    }

    async fn lag(&mut self) -> Option<u64> {
        let conn = self.conn.as_mut()?;
        if conn.open {
            return None;
        }
        let row = conn.client.query_one(&conn.count, &[]).await.ok()?;
        row.try_get::<_, i64>(0).ok().map(|n| n.max(0) as u64)
    }

    fn disconnect(&mut self) {
        // Dropping the client closes the connection: an open transaction
        // aborts and its row locks are released.
        if let Some(conn) = self.conn.take() {
            conn.driver.abort();
        }
    }
}
