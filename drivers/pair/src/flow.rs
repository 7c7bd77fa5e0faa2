//! A port's flow rules, matched on the *sender's* thread when it enqueues a frame.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::RwLock;
use vdpdk_core::flow::FlowVerdict;
use vdpdk_core::{Error, FlowHandle, FlowRule, Result};

/// A rule with its handle and its precomputed verdict.
pub(crate) struct FlowEntry {
    pub handle: FlowHandle,
    pub priority: u32,
    pub rule: FlowRule,
    pub verdict: FlowVerdict,
}

/// A port's flow rules, matched on the *sender's* thread when it enqueues a frame.
#[derive(Default)]
pub(crate) struct FlowTable {
    /// Whether any rule exists: lets the common no-rule case skip the lock.
    pub active: AtomicBool,
    /// Ordered by priority (lower value first), then by creation.
    pub rules: RwLock<Vec<FlowEntry>>,
    /// Frames a DROP rule discarded.
    pub dropped: AtomicU64,
}

impl FlowTable {
    /// Accepts rules that pass `check_shape`, in group 0, whose QUEUE is below `nb_rx_queues`.
    pub fn validate(rule: &FlowRule, nb_rx_queues: u16) -> Result<()> {
        rule.check_shape()?;
        if rule.attr.group != 0 {
            return Err(Error::Unsupported(format!(
                "flow group {}: pair ports have only group 0",
                rule.attr.group
            )));
        }
        if let Some(q) = rule.queues().find(|&q| q >= nb_rx_queues) {
            return Err(Error::InvalidArg(format!(
                "flow rule targets RX queue {q}, but {nb_rx_queues} are configured"
            )));
        }
        Ok(())
    }

    /// Refuses a reconfiguration to `nb_rx_queues` while a rule targets a queue beyond it.
    pub fn check_queues(&self, nb_rx_queues: u16) -> Result<()> {
        if let Some(q) = self
            .rules
            .read()
            .iter()
            .flat_map(|e| e.rule.queues())
            .find(|&q| q >= nb_rx_queues)
        {
            return Err(Error::InvalidArg(format!(
                "a flow rule targets RX queue {q}, beyond the {nb_rx_queues} requested; destroy it first"
            )));
        }
        Ok(())
    }

    /// Inserts a validated rule after those of lower or equal priority value.
    pub fn insert(&self, handle: FlowHandle, rule: &FlowRule) {
        let entry = FlowEntry {
            handle,
            priority: rule.attr.priority,
            rule: rule.clone(),
            verdict: rule.verdict(),
        };
        let mut rules = self.rules.write();
        let at = rules.partition_point(|e| e.priority <= entry.priority);
        rules.insert(at, entry);
        self.active.store(true, Ordering::Release);
    }

    /// Removes the rule `handle`; an unknown handle is `InvalidArg`.
    pub fn remove(&self, handle: FlowHandle) -> Result<()> {
        let mut rules = self.rules.write();
        let at = rules
            .iter()
            .position(|e| e.handle == handle)
            .ok_or_else(|| Error::InvalidArg(format!("no flow rule {handle:?} on this port")))?;
        rules.remove(at);
        self.active.store(!rules.is_empty(), Ordering::Release);
        Ok(())
    }

    /// Removes every rule.
    pub fn clear(&self) {
        let mut rules = self.rules.write();
        rules.clear();
        self.active.store(false, Ordering::Release);
    }
}
