//! How many client connections the broker holds, in all and per client
//! address (Pulsar's `brokerMaxConnections` and `brokerMaxConnectionsPerIp`;
//! 0 is no limit). A slot is given back when its guard drops, so a
//! connection task that ends in any way, a panic included, frees its slot.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(super) enum Refusal {
    #[error("the broker holds its maximum of {0} connections")]
    Broker(usize),
    #[error("{ip} holds its maximum of {max} connections")]
    PerAddress { ip: IpAddr, max: usize },
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

#[derive(Clone)]
pub(super) struct ConnectionSlots {
    max: usize,
    max_per_ip: usize,
    counts: Arc<Mutex<Counts>>,
}

/// One connection's place; given back on drop.
pub(super) struct Slot {
    ip: IpAddr,
    counts: Arc<Mutex<Counts>>,
}

impl ConnectionSlots {
    pub(super) fn new(max: usize, max_per_ip: usize) -> Self {
        ConnectionSlots {
            max,
            max_per_ip,
            counts: Arc::default(),
        }
    }

    pub(super) fn take(&self, ip: IpAddr) -> Result<Slot, Refusal> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if self.max > 0 && counts.total >= self.max {
            return Err(Refusal::Broker(self.max));
        }
        let from_ip = counts.per_ip.get(&ip).copied().unwrap_or(0);
        if self.max_per_ip > 0 && from_ip >= self.max_per_ip {
            return Err(Refusal::PerAddress {
                ip,
                max: self.max_per_ip,
            });
        }
        counts.total += 1;
        counts.per_ip.insert(ip, from_ip + 1);
        Ok(Slot {
            ip,
            counts: self.counts.clone(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.per_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_counted_per_broker_and_per_address_and_given_back() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let slots = ConnectionSlots::new(3, 2);
        let a1 = slots.take(a).unwrap();
        let _a2 = slots.take(a).unwrap();
        assert_eq!(
            slots.take(a).err(),
            Some(Refusal::PerAddress { ip: a, max: 2 })
        );
        let _b1 = slots.take(b).unwrap();
        assert_eq!(slots.take(b).err(), Some(Refusal::Broker(3)));
        drop(a1);
        let _a3 = slots.take(a).unwrap();
        let unlimited = ConnectionSlots::new(0, 0);
        let held: Vec<Slot> = (0..1000).map(|_| unlimited.take(a).unwrap()).collect();
        assert_eq!(held.len(), 1000);
    }
}
