//! When a companion looks at which owners again.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Instant;

/// Timers over owner keys, in one heap: an owner may have any number of timers ([`add`](Self::add): each fires
/// once) or one that replaces the last ([`set`](Self::set): a plan's next wake-up). Owners due at the same instant
/// share its entry, so they fire — and are planned — as one batch.
#[derive(Debug, Default)]
pub struct Timers {
    at: BTreeMap<Instant, BTreeSet<String>>,
    /// The timer each owner [`set`](Self::set).
    set: HashMap<String, Instant>,
}

impl Timers {
    /// Adds a timer for `owner` at `at`, besides any it has.
    pub fn add(&mut self, owner: &str, at: Instant) {
        self.at.entry(at).or_default().insert(owner.to_owned());
    }

    /// Adds a timer at `at` for each of `owners`.
    pub fn add_all(&mut self, owners: impl IntoIterator<Item = String>, at: Instant) {
        self.at.entry(at).or_default().extend(owners);
    }

    /// Sets `owner`'s one timer to `at` (`None`: clears it), replacing the one set before.
    pub fn set(&mut self, owner: &str, at: Option<Instant>) {
        if let Some(old) = self.set.remove(owner)
            && let Some(owners) = self.at.get_mut(&old)
        {
            owners.remove(owner);
            if owners.is_empty() {
                self.at.remove(&old);
            }
        }
        if let Some(at) = at {
            self.at.entry(at).or_default().insert(owner.to_owned());
            self.set.insert(owner.to_owned(), at);
        }
    }

    /// Removes the timers due by `now` and returns their owners.
    pub fn fired(&mut self, now: Instant) -> BTreeSet<String> {
        let due: Vec<Instant> = self.at.range(..=now).map(|(t, _)| *t).collect();
        let mut owners = BTreeSet::new();
        for t in due {
            for owner in self.at.remove(&t).unwrap_or_default() {
                if self.set.get(&owner) == Some(&t) {
                    self.set.remove(&owner);
                }
                owners.insert(owner);
            }
        }
        owners
    }

    /// The earliest timer.
    #[must_use]
    pub fn next(&self) -> Option<Instant> {
        self.at.keys().next().copied()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_set_timer_replaces_the_last_and_added_ones_accumulate() {
        let now = Instant::now();
        let (soon, later) = (now + Duration::from_secs(1), now + Duration::from_secs(2));
        let mut timers = Timers::default();
        timers.set("a", Some(soon));
        timers.set("a", Some(later));
        assert_eq!(timers.next(), Some(later), "the first set timer is gone");
        timers.add("b", soon);
        timers.add("b", later);
        assert_eq!(timers.fired(soon), BTreeSet::from(["b".to_owned()]));
        assert_eq!(timers.fired(later), BTreeSet::from(["a".to_owned(), "b".to_owned()]));
        assert_eq!(timers.next(), None);
    }

    #[test]
    fn a_cleared_timer_never_fires_and_a_fired_one_can_be_set_again() {
        let now = Instant::now();
        let mut timers = Timers::default();
        timers.set("a", Some(now));
        timers.set("a", None);
        assert!(timers.fired(now).is_empty());
        timers.set("a", Some(now));
        assert_eq!(timers.fired(now).len(), 1);
        // Fired: setting it again does not find (and remove) the fired entry.
        timers.add("b", now + Duration::from_secs(1));
        timers.set("a", Some(now + Duration::from_secs(1)));
        assert_eq!(timers.fired(now + Duration::from_secs(1)).len(), 2);
    }

    #[test]
    fn owners_due_together_fire_as_one_batch() {
        let now = Instant::now();
        let mut timers = Timers::default();
        timers.add_all(["a".to_owned(), "b".to_owned()], now);
        timers.set("c", Some(now));
        assert_eq!(timers.fired(now + Duration::from_millis(1)).len(), 3);
    }
}
