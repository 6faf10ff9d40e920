//! Hierarchical Dominant Resource Fairness, as Mesos' `Sorter`: it knows only clients (a framework in a role),
//! weights and allocations — nothing of agents or offers — and answers in what order clients should be offered
//! resources.
//!
//! A client's dominant share is the largest, over cpus, mem and disk, of what it holds divided by the cluster's
//! total, divided by its weight. Roles nest by name (`eng/web` under `eng`); at every level of the role tree the
//! children are ordered by the dominant share of everything their subtree holds, divided by the role's weight,
//! lowest first; a role's own frameworks are ordered the same way by their own allocation and weight. Ties go to
//! the name, so the order is deterministic.

use std::collections::BTreeMap;

/// An amount of each kind of resource that DRF counts (ports are not shared out by DRF).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Amount {
    /// Cores.
    pub cpus: f64,
    /// MiB.
    pub mem: f64,
    /// MiB.
    pub disk: f64,
}

impl Amount {
    /// `cpus`, `mem`, `disk`.
    #[must_use]
    pub const fn new(cpus: f64, mem: f64, disk: f64) -> Self {
        Self { cpus, mem, disk }
    }

    /// The sum.
    #[must_use]
    pub fn plus(self, other: Self) -> Self {
        Self::new(self.cpus + other.cpus, self.mem + other.mem, self.disk + other.disk)
    }

    /// The difference, never below zero.
    #[must_use]
    pub fn minus(self, other: Self) -> Self {
        Self::new((self.cpus - other.cpus).max(0.0), (self.mem - other.mem).max(0.0), (self.disk - other.disk).max(0.0))
    }

    /// The smaller of each.
    #[must_use]
    pub fn min(self, other: Self) -> Self {
        Self::new(self.cpus.min(other.cpus), self.mem.min(other.mem), self.disk.min(other.disk))
    }

    /// Each kind times `factor`.
    #[must_use]
    pub fn scaled(self, factor: f64) -> Self {
        Self::new(self.cpus * factor, self.mem * factor, self.disk * factor)
    }

    /// Whether every kind is at least `other`'s.
    #[must_use]
    pub fn covers(self, other: Self) -> bool {
        const SLACK: f64 = 1e-9;
        self.cpus + SLACK >= other.cpus && self.mem + SLACK >= other.mem && self.disk + SLACK >= other.disk
    }

    /// Whether nothing is left of any kind.
    #[must_use]
    pub fn is_empty(self) -> bool {
        self.cpus <= 1e-9 && self.mem <= 1e-9 && self.disk <= 1e-9
    }

    /// The largest share of `total` this amount is (kinds the cluster has none of count as 0).
    #[must_use]
    pub fn dominant_share(self, total: Self) -> f64 {
        let share = |have: f64, all: f64| if all > 0.0 { have / all } else { 0.0 };
        share(self.cpus, total.cpus).max(share(self.mem, total.mem)).max(share(self.disk, total.disk))
    }
}

/// A client: a framework receiving offers in one of its roles.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Client {
    /// The role (`*`, `eng`, `eng/web`).
    pub role: String,
    /// The framework's name.
    pub framework: String,
}

/// The sorter's state: the cluster's total, every client's allocation and weight, every role's weight.
#[derive(Clone, Debug, Default)]
pub struct Sorter {
    total: Amount,
    clients: BTreeMap<Client, (Amount, f64)>,
    role_weights: BTreeMap<String, f64>,
}

/// The parent of role `role` (`eng` for `eng/web`; `None` for a top-level role).
fn parent(role: &str) -> Option<&str> {
    role.rsplit_once('/').map(|(parent, _)| parent)
}

impl Sorter {
    /// A sorter over a cluster of `total` resources.
    #[must_use]
    pub fn new(total: Amount) -> Self {
        Self { total, ..Self::default() }
    }

    /// The cluster's total.
    #[must_use]
    pub fn total(&self) -> Amount {
        self.total
    }

    /// Sets the cluster's total (agents came or went).
    pub fn set_total(&mut self, total: Amount) {
        self.total = total;
    }

    /// Adds (or updates the weight of) a client; its allocation is kept.
    pub fn add(&mut self, client: Client, weight: f64) {
        self.clients.entry(client).or_insert((Amount::default(), weight)).1 = weight;
    }

    /// Removes a client.
    pub fn remove(&mut self, client: &Client) {
        self.clients.remove(client);
    }

    /// A role's weight (1 unless set).
    pub fn set_role_weight(&mut self, role: &str, weight: f64) {
        self.role_weights.insert(role.to_owned(), weight);
    }

    /// Counts `amount` as held by `client` (offered or used by its tasks).
    pub fn allocate(&mut self, client: &Client, amount: Amount) {
        if let Some((held, _)) = self.clients.get_mut(client) {
            *held = held.plus(amount);
        }
    }

    /// Counts `amount` as no longer held by `client`.
    pub fn unallocate(&mut self, client: &Client, amount: Amount) {
        if let Some((held, _)) = self.clients.get_mut(client) {
            *held = held.minus(amount);
        }
    }

    /// What `client` holds.
    #[must_use]
    pub fn allocation(&self, client: &Client) -> Amount {
        self.clients.get(client).map(|(held, _)| *held).unwrap_or_default()
    }

    /// What every client of `role` and of the roles below it holds.
    #[must_use]
    pub fn role_allocation(&self, role: &str) -> Amount {
        self.clients
            .iter()
            .filter(|(c, _)| c.role == role || c.role.strip_prefix(role).is_some_and(|rest| rest.starts_with('/')))
            .fold(Amount::default(), |sum, (_, (held, _))| sum.plus(*held))
    }

    /// `client`'s dominant share divided by its weight.
    #[must_use]
    pub fn share(&self, client: &Client) -> f64 {
        self.clients.get(client).map_or(0.0, |(held, weight)| held.dominant_share(self.total) / weight.max(1e-9))
    }

    /// `role`'s weighted dominant share (its whole subtree's allocation).
    #[must_use]
    pub fn role_share(&self, role: &str) -> f64 {
        let weight = self.role_weights.get(role).copied().unwrap_or(1.0).max(1e-9);
        self.role_allocation(role).dominant_share(self.total) / weight
    }

    /// Every client, in the order offers should go to them: the role tree walked lowest share first at each level,
    /// then each role's frameworks lowest share first.
    #[must_use]
    pub fn order(&self) -> Vec<Client> {
        // Every role that has clients, with all its ancestors, as a tree of children by parent.
        let mut children: BTreeMap<Option<String>, Vec<String>> = BTreeMap::new();
        let mut known = std::collections::BTreeSet::new();
        for client in self.clients.keys() {
            let mut role = client.role.as_str();
            loop {
                if !known.insert(role.to_owned()) {
                    break;
                }
                let up = parent(role);
                children.entry(up.map(str::to_owned)).or_default().push(role.to_owned());
                match up {
                    Some(up) => role = up,
                    None => break,
                }
            }
        }
        let by_share = |a: &f64, b: &f64| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal);
        for roles in children.values_mut() {
            let shares: BTreeMap<String, f64> = roles.iter().map(|r| (r.clone(), self.role_share(r))).collect();
            roles.sort_by(|a, b| by_share(&shares[a], &shares[b]).then_with(|| a.cmp(b)));
        }
        let mut ordered = Vec::with_capacity(self.clients.len());
        let mut stack: Vec<String> = children.get(&None).cloned().unwrap_or_default().into_iter().rev().collect();
        while let Some(role) = stack.pop() {
            // The role's own frameworks first, then the roles below it (as Mesos' hierarchical sorter does).
            let mut own: Vec<&Client> = self.clients.keys().filter(|c| c.role == role).collect();
            own.sort_by(|a, b| by_share(&self.share(a), &self.share(b)).then_with(|| a.framework.cmp(&b.framework)));
            ordered.extend(own.into_iter().cloned());
            if let Some(below) = children.get(&Some(role)) {
                stack.extend(below.iter().rev().cloned());
            }
        }
        ordered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(role: &str, framework: &str) -> Client {
        Client { role: role.into(), framework: framework.into() }
    }

    /// Progressive filling, one task at a time, as in the DRF paper: the client with the lowest share launches its
    /// next task while it fits.
    fn fill(sorter: &mut Sorter, tasks: &BTreeMap<Client, Amount>) -> BTreeMap<String, usize> {
        let mut launched: BTreeMap<String, usize> = BTreeMap::new();
        let mut free = sorter.total();
        while let Some(next) = sorter.order().into_iter().find(|c| free.covers(tasks[c])) {
            free = free.minus(tasks[&next]);
            sorter.allocate(&next, tasks[&next]);
            *launched.entry(next.framework.clone()).or_default() += 1;
        }
        launched
    }

    #[test]
    fn the_drf_papers_example() {
        // 9 CPUs, 18 GB; A's tasks need <1 CPU, 4 GB>, B's <3 CPUs, 1 GB>: A runs 3 tasks, B 2, each with 2/3.
        let mut sorter = Sorter::new(Amount::new(9.0, 18_432.0, 0.0));
        let (a, b) = (client("*", "a"), client("*", "b"));
        sorter.add(a.clone(), 1.0);
        sorter.add(b.clone(), 1.0);
        let tasks =
            BTreeMap::from([(a.clone(), Amount::new(1.0, 4096.0, 0.0)), (b.clone(), Amount::new(3.0, 1024.0, 0.0))]);
        let launched = fill(&mut sorter, &tasks);
        assert_eq!(launched, BTreeMap::from([("a".to_owned(), 3), ("b".to_owned(), 2)]));
        assert!((sorter.share(&a) - 2.0 / 3.0).abs() < 1e-9 && (sorter.share(&b) - 2.0 / 3.0).abs() < 1e-9);
    }

    #[test]
    fn weights_divide_shares() {
        // Equal tasks; weight 3 gets three times as much.
        let mut sorter = Sorter::new(Amount::new(40.0, 40_000.0, 0.0));
        let (light, heavy) = (client("*", "light"), client("*", "heavy"));
        sorter.add(light.clone(), 1.0);
        sorter.add(heavy.clone(), 3.0);
        let task = Amount::new(1.0, 1000.0, 0.0);
        let launched = fill(&mut sorter, &BTreeMap::from([(light, task), (heavy, task)]));
        assert_eq!(launched, BTreeMap::from([("heavy".to_owned(), 30), ("light".to_owned(), 10)]));
    }

    #[test]
    fn roles_are_sorted_before_their_frameworks_and_nest() {
        let mut sorter = Sorter::new(Amount::new(100.0, 100_000.0, 0.0));
        for (role, framework) in [("eng/web", "w1"), ("eng/web", "w2"), ("eng/batch", "b1"), ("ops", "o1")] {
            sorter.add(client(role, framework), 1.0);
        }
        // eng as a whole holds more than ops: ops comes first, however the frameworks inside eng compare.
        sorter.allocate(&client("eng/web", "w1"), Amount::new(10.0, 0.0, 0.0));
        sorter.allocate(&client("eng/batch", "b1"), Amount::new(5.0, 0.0, 0.0));
        sorter.allocate(&client("ops", "o1"), Amount::new(12.0, 0.0, 0.0));
        let order: Vec<String> = sorter.order().into_iter().map(|c| c.framework).collect();
        assert_eq!(order, ["o1", "b1", "w2", "w1"]);
        assert!((sorter.role_share("eng") - 0.15).abs() < 1e-9);
        // A weight on the role changes its place.
        sorter.set_role_weight("eng", 2.0);
        let order: Vec<String> = sorter.order().into_iter().map(|c| c.framework).collect();
        assert_eq!(order, ["b1", "w2", "w1", "o1"]);
    }

    #[test]
    fn a_dominant_share_is_the_largest_of_cpus_mem_and_disk() {
        let total = Amount::new(10.0, 1000.0, 0.0);
        assert!((Amount::new(1.0, 500.0, 7.0).dominant_share(total) - 0.5).abs() < 1e-12, "no disk in the cluster");
        let mut sorter = Sorter::new(total);
        let a = client("*", "a");
        sorter.add(a.clone(), 1.0);
        sorter.allocate(&a, Amount::new(2.0, 100.0, 0.0));
        sorter.unallocate(&a, Amount::new(5.0, 0.0, 0.0));
        assert_eq!(sorter.allocation(&a), Amount::new(0.0, 100.0, 0.0), "never below zero");
    }
}
