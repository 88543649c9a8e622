//! Acknowledging what a consumer received, one ack per entry rather than
//! per message: shared by `perf consume` and `bench`, whose consumers must
//! not spend their time acknowledging batched messages one by one.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use pulsar::consumer::Message;
use pulsar::proto::MessageIdData;
use pulsar::{Consumer, TokioExecutor};

use super::message_id::completed_entry;

/// How often exclusive and failover consumers send their cumulative ack.
const CUMULATIVE_ACK_EVERY: Duration = Duration::from_millis(100);

/// Acknowledges whole entries: each as its last message arrives, or, when
/// cumulative, the latest complete entry of each topic every
/// [`CUMULATIVE_ACK_EVERY`].
pub struct Acker {
    cumulative: bool,
    latest: HashMap<String, MessageIdData>,
    flushed: Instant,
}

impl Acker {
    pub fn new(cumulative: bool) -> Self {
        Self {
            cumulative,
            latest: HashMap::new(),
            flushed: Instant::now(),
        }
    }

    pub async fn received(
        &mut self,
        consumer: &mut Consumer<Vec<u8>, TokioExecutor>,
        message: &Message<Vec<u8>>,
    ) -> Result<()> {
        let Some(entry) = completed_entry(message.message_id(), message.message_id.batch_size)
        else {
            return Ok(());
        };
        if !self.cumulative {
            return consumer
                .ack_with_id(&message.topic, entry)
                .await
                .context("acknowledging");
        }
        match self.latest.get_mut(&message.topic) {
            Some(latest) => *latest = entry,
            None => {
                self.latest.insert(message.topic.clone(), entry);
            }
        }
        if self.flushed.elapsed() >= CUMULATIVE_ACK_EVERY {
            self.flush(consumer).await?;
        }
        Ok(())
    }

    pub async fn flush(&mut self, consumer: &mut Consumer<Vec<u8>, TokioExecutor>) -> Result<()> {
        for (topic, entry) in self.latest.drain() {
            consumer
                .cumulative_ack_with_id(&topic, entry)
                .await
                .context("acknowledging cumulatively")?;
        }
        self.flushed = Instant::now();
        Ok(())
    }
}
