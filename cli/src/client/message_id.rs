//! Message ids as the tools print them, and the id that acknowledges a whole
//! entry. A Pulsar message id is `(ledger, entry, partition, batch index)`;
//! a batch is one entry, its messages told apart by the batch index.

use pulsar::proto::MessageIdData;

/// `ledger:entry`, or `ledger:entry:batch_index` for a message in a batch.
pub fn display(id: &MessageIdData) -> String {
    match id.batch_index {
        Some(index) if index >= 0 => format!("{}:{}:{}", id.ledger_id, id.entry_id, index),
        _ => format!("{}:{}", id.ledger_id, id.entry_id),
    }
}

/// The id that acknowledges the whole entry once `id` (a message of a batch
/// of `batch_size`, or an unbatched message) has been received, or `None`
/// while messages of its batch are still to come. Messages of one batch are
/// delivered together, in order, to one consumer, so the last one stands for
/// the entry: one ack per entry instead of one per message.
pub fn completed_entry(id: &MessageIdData, batch_size: Option<i32>) -> Option<MessageIdData> {
    let last_of_entry = match (id.batch_index, batch_size) {
        (Some(index), Some(size)) if index >= 0 && size > 0 => index >= size - 1,
        _ => true,
    };
    last_of_entry.then(|| MessageIdData {
        ledger_id: id.ledger_id,
        entry_id: id.entry_id,
        partition: id.partition,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(ledger_id: u64, entry_id: u64, batch_index: Option<i32>) -> MessageIdData {
        MessageIdData {
            ledger_id,
            entry_id,
            batch_index,
            ..Default::default()
        }
    }

    #[test]
    fn unbatched_ids_print_ledger_and_entry() {
        assert_eq!(display(&id(7, 42, None)), "7:42");
        // Pulsar's "no batch index" is -1.
        assert_eq!(display(&id(7, 42, Some(-1))), "7:42");
    }

    #[test]
    fn batched_ids_print_the_batch_index() {
        assert_eq!(display(&id(7, 42, Some(0))), "7:42:0");
        assert_eq!(
            display(&id(u64::MAX, 0, Some(999))),
            "18446744073709551615:0:999"
        );
    }

    #[test]
    fn an_unbatched_message_completes_its_entry() {
        let done = completed_entry(&id(3, 9, None), None).expect("complete");
        assert_eq!(
            (done.ledger_id, done.entry_id, done.batch_index),
            (3, 9, None)
        );
    }

    #[test]
    fn only_the_last_message_of_a_batch_completes_its_entry() {
        assert!(completed_entry(&id(3, 9, Some(0)), Some(3)).is_none());
        assert!(completed_entry(&id(3, 9, Some(1)), Some(3)).is_none());
        let done = completed_entry(&id(3, 9, Some(2)), Some(3)).expect("complete");
        // The entry, not one message of it.
        assert_eq!((done.ledger_id, done.entry_id), (3, 9));
        assert_eq!(done.batch_index, None);
        assert_eq!(done.batch_size, None);
    }

    #[test]
    fn the_partition_is_kept() {
        let mut m = id(1, 2, None);
        m.partition = Some(4);
        assert_eq!(
            completed_entry(&m, None).map(|e| e.partition),
            Some(Some(4))
        );
    }

    #[test]
    fn nonsense_batch_sizes_count_as_unbatched() {
        assert!(completed_entry(&id(1, 2, Some(5)), Some(0)).is_some());
        assert!(completed_entry(&id(1, 2, Some(-1)), Some(4)).is_some());
    }
}
