//! Hierarchical Dominant Resource Fairness, as Mesos' `Sorter`: it knows only clients (a framework in a role),
//! weights and allocations — nothing of agents or offers — and answers in what order clients should be offered
//! resources.
//!
//! A client's dominant share is the largest, over cpus, mem and disk, of what it holds divided by the cluster's
//! total, divided by its weight. Roles nest by name (`eng/web` under `eng`); at every level of the role tree the
//! children are ordered by the dominant share of everything their subtree holds, divided by the role's weight,
//! lowest first; a role's own frameworks are ordered the same way by their own allocation and weight. Ties go to
//! the name, so the order is deterministic.

use std::collections::{BTreeSet, HashMap};

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
        agora_schemas::shortfall([other.cpus, other.mem, other.disk], [self.cpus, self.mem, self.disk]).is_none()
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

/// A weighted share with a total order (shares are finite; NaN cannot arise from non-negative amounts).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Share(f64);

impl Eq for Share {}

impl PartialOrd for Share {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Share {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// Members of one level of the tree, lowest weighted share first, ties by name.
type Ordered = BTreeSet<(Share, String, usize)>;

#[derive(Clone, Debug)]
struct Entry {
    client: Client,
    held: Amount,
    weight: f64,
    key: Share,
    node: usize,
}

#[derive(Clone, Debug)]
struct Node {
    role: String,
    parent: Option<usize>,
    /// What every client in this role's subtree holds.
    held: Amount,
    key: Share,
    /// The role's own clients.
    own: Ordered,
    /// The roles directly below it.
    children: Ordered,
}

/// The sorter's state: the cluster's total, every client's allocation and weight, every role's weight and its
/// subtree's allocation, and each level of the role tree kept in order — so a change of one client's allocation
/// costs a few ordered-set updates (one per level), not a sort.
#[derive(Clone, Debug, Default)]
pub struct Sorter {
    total: Amount,
    entries: Vec<Option<Entry>>,
    index: HashMap<Client, usize>,
    nodes: Vec<Node>,
    node_index: HashMap<String, usize>,
    roots: Ordered,
    role_weights: HashMap<String, f64>,
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

    /// Sets the cluster's total (agents came or went): every share changes, so every level is ordered anew.
    pub fn set_total(&mut self, total: Amount) {
        self.total = total;
        for id in 0..self.entries.len() {
            self.rekey_entry(id);
        }
        for node in 0..self.nodes.len() {
            self.rekey_node(node);
        }
    }

    fn client_share(&self, entry: &Entry) -> Share {
        Share(entry.held.dominant_share(self.total) / entry.weight.max(1e-9))
    }

    fn node_share(&self, node: &Node) -> Share {
        let weight = self.role_weights.get(&node.role).copied().unwrap_or(1.0).max(1e-9);
        Share(node.held.dominant_share(self.total) / weight)
    }

    /// The node of `role`, made (with its ancestors) when new.
    fn node(&mut self, role: &str) -> usize {
        if let Some(&id) = self.node_index.get(role) {
            return id;
        }
        let up = parent(role).map(|p| self.node(p));
        let id = self.nodes.len();
        let node = Node {
            role: role.to_owned(),
            parent: up,
            held: Amount::default(),
            key: Share(0.0),
            own: Ordered::new(),
            children: Ordered::new(),
        };
        let key = self.node_share(&node);
        self.nodes.push(Node { key, ..node });
        self.level(up).insert((key, role.to_owned(), id));
        self.node_index.insert(role.to_owned(), id);
        id
    }

    fn level(&mut self, parent: Option<usize>) -> &mut Ordered {
        match parent {
            Some(p) => &mut self.nodes[p].children,
            None => &mut self.roots,
        }
    }

    /// Puts entry `id` where its current share belongs among its role's clients.
    fn rekey_entry(&mut self, id: usize) {
        let Some(entry) = &self.entries[id] else { return };
        let (old, new, node) = (entry.key, self.client_share(entry), entry.node);
        let name = entry.client.framework.clone();
        let own = &mut self.nodes[node].own;
        own.remove(&(old, name.clone(), id));
        own.insert((new, name, id));
        if let Some(entry) = &mut self.entries[id] {
            entry.key = new;
        }
    }

    /// Puts role node `id` where its current share belongs among its siblings.
    fn rekey_node(&mut self, id: usize) {
        let (old, new) = (self.nodes[id].key, self.node_share(&self.nodes[id]));
        let (role, up) = (self.nodes[id].role.clone(), self.nodes[id].parent);
        let level = self.level(up);
        level.remove(&(old, role.clone(), id));
        level.insert((new, role, id));
        self.nodes[id].key = new;
    }

    /// Adds `delta` (or takes it away) from `node` and every ancestor's subtree allocation.
    fn change_subtree(&mut self, node: usize, delta: Amount, add: bool) {
        let mut at = Some(node);
        while let Some(id) = at {
            let held = self.nodes[id].held;
            self.nodes[id].held = if add { held.plus(delta) } else { held.minus(delta) };
            self.rekey_node(id);
            at = self.nodes[id].parent;
        }
    }

    /// Adds (or updates the weight of) a client; its allocation is kept.
    pub fn add(&mut self, client: Client, weight: f64) {
        if let Some(&id) = self.index.get(&client) {
            if let Some(entry) = &mut self.entries[id] {
                entry.weight = weight;
            }
            self.rekey_entry(id);
            return;
        }
        let node = self.node(&client.role);
        let id = self.entries.len();
        let entry = Entry { client: client.clone(), held: Amount::default(), weight, key: Share(0.0), node };
        let key = self.client_share(&entry);
        self.nodes[node].own.insert((key, client.framework.clone(), id));
        self.entries.push(Some(Entry { key, ..entry }));
        self.index.insert(client, id);
    }

    /// Removes a client.
    pub fn remove(&mut self, client: &Client) {
        let Some(id) = self.index.remove(client) else { return };
        if let Some(entry) = self.entries[id].take() {
            self.nodes[entry.node].own.remove(&(entry.key, entry.client.framework, id));
            self.change_subtree(entry.node, entry.held, false);
        }
    }

    /// A role's weight (1 unless set).
    pub fn set_role_weight(&mut self, role: &str, weight: f64) {
        self.role_weights.insert(role.to_owned(), weight);
        if let Some(&id) = self.node_index.get(role) {
            self.rekey_node(id);
        }
    }

    fn change(&mut self, client: &Client, amount: Amount, add: bool) {
        let Some(&id) = self.index.get(client) else { return };
        let Some(entry) = &mut self.entries[id] else { return };
        let before = entry.held;
        entry.held = if add { before.plus(amount) } else { before.minus(amount) };
        // What actually changed (taking away never goes below zero).
        let delta = if add { amount } else { before.minus(entry.held) };
        let node = entry.node;
        self.rekey_entry(id);
        self.change_subtree(node, delta, add);
    }

    /// Counts `amount` as held by `client` (offered or used by its tasks).
    pub fn allocate(&mut self, client: &Client, amount: Amount) {
        self.change(client, amount, true);
    }

    /// Counts `amount` as no longer held by `client`.
    pub fn unallocate(&mut self, client: &Client, amount: Amount) {
        self.change(client, amount, false);
    }

    /// What `client` holds.
    #[must_use]
    pub fn allocation(&self, client: &Client) -> Amount {
        self.index.get(client).and_then(|&id| self.entries[id].as_ref()).map(|e| e.held).unwrap_or_default()
    }

    /// What every client of `role` and of the roles below it holds.
    #[must_use]
    pub fn role_allocation(&self, role: &str) -> Amount {
        self.node_index.get(role).map(|&id| self.nodes[id].held).unwrap_or_default()
    }

    /// `client`'s dominant share divided by its weight.
    #[must_use]
    pub fn share(&self, client: &Client) -> f64 {
        self.index.get(client).and_then(|&id| self.entries[id].as_ref()).map_or(0.0, |e| self.client_share(e).0)
    }

    /// `role`'s weighted dominant share (its whole subtree's allocation).
    #[must_use]
    pub fn role_share(&self, role: &str) -> f64 {
        self.node_index.get(role).map_or(0.0, |&id| self.node_share(&self.nodes[id]).0)
    }

    /// The first client, in the order offers should go to them, for which `wanted` holds: the role tree walked
    /// lowest share first at each level — a role's own frameworks (lowest share first) before the roles below it,
    /// as Mesos' hierarchical sorter does. Stops at the first: the usual case costs a walk down the tree.
    pub fn first(&self, mut wanted: impl FnMut(&Client) -> bool) -> Option<Client> {
        let mut stack: Vec<usize> = self.roots.iter().rev().map(|(_, _, id)| *id).collect();
        while let Some(node) = stack.pop() {
            let node = &self.nodes[node];
            for (_, _, id) in &node.own {
                if let Some(entry) = &self.entries[*id]
                    && wanted(&entry.client)
                {
                    return Some(entry.client.clone());
                }
            }
            stack.extend(node.children.iter().rev().map(|(_, _, id)| *id));
        }
        None
    }

    /// Every client, in the order offers should go to them (see [`Sorter::first`]).
    #[must_use]
    pub fn order(&self) -> Vec<Client> {
        let mut ordered = Vec::with_capacity(self.index.len());
        self.first(|client| {
            ordered.push(client.clone());
            false
        });
        ordered
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

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

    #[test]
    fn the_kept_order_is_the_order_sorted_from_scratch() {
        // Allocations, releases and weights in a pseudo-random sequence: after each, the incrementally kept order
        // equals a fresh sorter's given the same state.
        let roles = ["*", "a", "a/x", "a/y", "b", "b/z/w"];
        let mut sorter = Sorter::new(Amount::new(64.0, 65_536.0, 1000.0));
        let mut seed: u64 = 7;
        let mut next = move |n: u64| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) % n
        };
        for step in 0..400 {
            let c = client(roles[next(6) as usize], &format!("f{}", next(5)));
            let amount = Amount::new(next(4) as f64, (next(4) * 1024) as f64, next(100) as f64);
            match next(4) {
                0 => sorter.add(c, 1.0 + next(3) as f64),
                1 => sorter.allocate(&c, amount),
                2 => sorter.unallocate(&c, amount),
                _ => sorter.set_role_weight(roles[next(6) as usize], 1.0 + next(3) as f64),
            }
            let mut fresh = Sorter::new(sorter.total());
            for (role, weight) in &sorter.role_weights {
                fresh.set_role_weight(role, *weight);
            }
            for entry in sorter.entries.iter().flatten() {
                fresh.add(entry.client.clone(), entry.weight);
                fresh.allocate(&entry.client, entry.held);
            }
            assert_eq!(sorter.order(), fresh.order(), "after step {step}");
            for role in roles {
                let sum = sorter
                    .entries
                    .iter()
                    .flatten()
                    .filter(|e| e.client.role == role || e.client.role.starts_with(&format!("{role}/")))
                    .fold(Amount::default(), |s, e| s.plus(e.held));
                let kept = sorter.role_allocation(role);
                assert!(
                    (kept.cpus - sum.cpus).abs() < 1e-6 && (kept.mem - sum.mem).abs() < 1e-6,
                    "{role} at step {step}"
                );
            }
        }
    }
}
