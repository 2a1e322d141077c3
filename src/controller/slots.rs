//! Upgrade slots: at most N apps roll out a new operator version's pod template at once, so an
//! operator upgrade does not restart every Meteor app in the cluster together (a cluster-wide
//! reconnect storm). A user's own change never takes a slot.
//!
//! Holders are kept in memory and announced in status (`Progressing` reason
//! `UpgradeRollingOut`); an app whose stored status says so rejoins the holders after an
//! operator restart, so a restart mid-wave does not open the gates.

use kube::runtime::reflector::ObjectRef;
use std::collections::HashSet;
use std::sync::Mutex;

pub struct RolloutSlots {
    slots: usize,
    holders: Mutex<HashSet<ObjectRef<crate::api::MeteorApp>>>,
}

/// What [`RolloutSlots::acquire`] answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    Granted,
    Busy { busy: usize, slots: usize },
}

impl RolloutSlots {
    pub fn new(slots: usize) -> Self {
        Self {
            slots,
            holders: Mutex::default(),
        }
    }

    /// A slot for `app`: the one it holds, one free, or none. `was_holding` says its stored
    /// status shows it rolling out an upgrade already (it keeps its slot across restarts).
    pub fn acquire(&self, app: ObjectRef<crate::api::MeteorApp>, was_holding: bool) -> Slot {
        let mut holders = self.holders.lock().expect("lock is never poisoned");
        if holders.contains(&app) || was_holding || holders.len() < self.slots {
            holders.insert(app);
            return Slot::Granted;
        }
        Slot::Busy {
            busy: holders.len(),
            slots: self.slots,
        }
    }

    /// `app` no longer rolls out an upgrade (done, stuck, rolled back, changed by its user, or
    /// deleted).
    pub fn release(&self, app: &ObjectRef<crate::api::MeteorApp>) {
        self.holders
            .lock()
            .expect("lock is never poisoned")
            .remove(app);
    }

    pub fn holds(&self, app: &ObjectRef<crate::api::MeteorApp>) -> bool {
        self.holders
            .lock()
            .expect("lock is never poisoned")
            .contains(app)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(name: &str) -> ObjectRef<crate::api::MeteorApp> {
        ObjectRef::new(name).within("default")
    }

    #[test]
    fn at_most_n_hold_a_slot_and_a_release_frees_one() {
        let slots = RolloutSlots::new(2);
        assert_eq!(slots.acquire(app("a"), false), Slot::Granted);
        assert_eq!(slots.acquire(app("b"), false), Slot::Granted);
        assert_eq!(
            slots.acquire(app("a"), false),
            Slot::Granted,
            "a holder keeps its slot"
        );
        assert_eq!(
            slots.acquire(app("c"), false),
            Slot::Busy { busy: 2, slots: 2 }
        );
        slots.release(&app("a"));
        assert!(!slots.holds(&app("a")));
        assert_eq!(slots.acquire(app("c"), false), Slot::Granted);
    }

    #[test]
    fn a_holder_from_before_a_restart_rejoins_even_when_full() {
        let slots = RolloutSlots::new(1);
        assert_eq!(slots.acquire(app("new"), false), Slot::Granted);
        assert_eq!(slots.acquire(app("old"), true), Slot::Granted);
        assert_eq!(
            slots.acquire(app("third"), false),
            Slot::Busy { busy: 2, slots: 1 }
        );
    }
}
