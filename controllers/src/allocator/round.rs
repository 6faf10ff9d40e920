//! One allocation round, as a pure function of a [`Snapshot`]: which framework gets an offer of what on which
//! agent. No I/O and no clock: the caller passes the time and the order to visit agents in (random, as Mesos does).
//!
//! - Only agents that are ready and schedulable, with at least [`MIN_CPUS`] and [`MIN_MEM`] free, are offered.
//! - An agent's resources in a role's reservation go only to that role; the rest (`*`) to any role.
//! - Frameworks are asked in hierarchical DRF order ([`Sorter`]); one that is suppressed, not connected, or filtered
//!   for the agent (a declined offer's `refuseUntil`) is skipped. The first that can use something gets ONE offer
//!   of everything on the agent its role may use; the sorter then counts it, and the next framework may get what is
//!   left (another role's reservation, say).
//! - Quota (Mesos' two stages): roles below their guarantee are served first, each up to its guarantee; then every
//!   role by fair share, with the unmet guarantees of other roles held back from the unreserved pool (headroom).
//!   Nothing is offered that would take a role past its limit.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use agora_schemas::PortRange;
use jiff::Timestamp;

use super::sorter::{Amount, Client, Sorter};

/// The least cpus an offer is made of.
pub const MIN_CPUS: f64 = 0.01;
/// The least memory an offer is made of, MiB.
pub const MIN_MEM: f64 = 32.0;

/// What the round knows of one agent.
#[derive(Clone, Debug, Default)]
pub struct AgentView {
    /// The Agent's name.
    pub name: String,
    /// Everything it has.
    pub total: Amount,
    /// Its ports.
    pub ports: Vec<PortRange>,
    /// The parts of `total` (and of its ports) reserved per role.
    pub reservations: BTreeMap<String, (Amount, Vec<PortRange>)>,
    /// What non-terminal tasks and outstanding offers hold, per role.
    pub used: BTreeMap<String, Amount>,
    /// Ports held by tasks.
    pub used_ports: BTreeSet<u16>,
    /// Port ranges held by outstanding offers.
    pub offered_ports: Vec<PortRange>,
    /// Ready (its lease is fresh) and not cordoned.
    pub offerable: bool,
}

impl AgentView {
    /// What is free in `role`'s reservation (nothing for `*`).
    fn free_reserved(&self, role: &str) -> Amount {
        match self.reservations.get(role) {
            Some((reserved, _)) if role != "*" => reserved.minus(self.used.get(role).copied().unwrap_or_default()),
            _ => Amount::default(),
        }
    }

    /// What is free in the unreserved pool: the total less every reservation, less what roles use beyond their own
    /// reservations.
    fn free_unreserved(&self) -> Amount {
        let reserved = self.reservations.values().fold(Amount::default(), |sum, (r, _)| sum.plus(*r));
        let overflow = self.used.iter().fold(Amount::default(), |sum, (role, used)| {
            let own = self.reservations.get(role).map(|(r, _)| *r).unwrap_or_default();
            sum.plus(used.minus(own))
        });
        self.total.minus(reserved).minus(overflow)
    }

    /// The free ports `role` may be offered: its reserved ranges and the unreserved ones, less the ports in use.
    fn free_ports(&self, role: &str) -> Vec<PortRange> {
        let mut blocked: Vec<PortRange> = self
            .reservations
            .iter()
            .filter(|(r, _)| r.as_str() != role)
            .flat_map(|(_, (_, ports))| ports.iter().copied())
            .chain(self.offered_ports.iter().copied())
            .collect();
        blocked.sort_unstable();
        let mut free = Vec::new();
        for range in &self.ports {
            // Walk the range, skipping the blocked ranges and used ports inside it, in order.
            let mut from = u32::from(range.0);
            let end = u32::from(range.1);
            let mut singles = self.used_ports.range(range.0..=range.1).map(|p| PortRange(*p, *p)).peekable();
            let mut ranges = blocked.iter().copied().filter(|b| b.1 >= range.0 && b.0 <= range.1).peekable();
            loop {
                let next = match (ranges.peek(), singles.peek()) {
                    (Some(r), Some(p)) if r.0 <= p.0 => ranges.next(),
                    (_, Some(_)) => singles.next(),
                    (Some(_), None) => ranges.next(),
                    (None, None) => None,
                };
                let Some(block) = next else { break };
                if u32::from(block.0) > from {
                    free.push(PortRange(port(from), block.0 - 1));
                }
                from = from.max(u32::from(block.1) + 1);
            }
            if from <= end {
                free.push(PortRange(port(from), range.1));
            }
        }
        free
    }

    /// Whether anything on the agent could be offered to some role.
    fn has_offerable(&self) -> bool {
        offerable(self.free_unreserved())
            || self.reservations.keys().any(|role| offerable(self.free_unreserved().plus(self.free_reserved(role))))
    }
}

/// A port number known to fit (`from` only exceeds 65535 after the last port, where nothing is pushed).
fn port(value: u32) -> u16 {
    u16::try_from(value).unwrap_or(u16::MAX)
}

/// What the round knows of one framework.
#[derive(Clone, Debug, Default)]
pub struct FrameworkView {
    /// The Framework's name.
    pub name: String,
    /// The roles it receives offers in.
    pub roles: Vec<String>,
    /// Its DRF weight within each role.
    pub weight: f64,
    /// It asked for no offers.
    pub suppressed: bool,
    /// It renews its lease.
    pub connected: bool,
    /// Agents it declined, until when.
    pub filters: BTreeMap<String, Timestamp>,
    /// What its tasks and outstanding offers hold, per role.
    pub allocated: BTreeMap<String, Amount>,
}

/// What the round knows of one role with a Role object.
#[derive(Clone, Debug, Default)]
pub struct RoleView {
    /// Its DRF weight.
    pub weight: f64,
    /// Resources it is guaranteed (a kind it does not name is 0: no guarantee of it).
    pub guarantee: Option<Amount>,
    /// Resources it may never exceed (a kind it does not name is infinite).
    pub limit: Option<Amount>,
}

/// Everything a round decides on.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// The agents the round may visit (every agent, or only those whose resources changed).
    pub agents: Vec<AgentView>,
    /// What every agent in the cluster has (the denominator of dominant shares), whichever agents are in `agents`;
    /// when empty, the sum of `agents`.
    pub total: Amount,
    /// Every framework.
    pub frameworks: Vec<FrameworkView>,
    /// Roles with a Role object (others have weight 1 and no quota).
    pub roles: BTreeMap<String, RoleView>,
}

/// One offer to make.
#[derive(Clone, Debug, PartialEq)]
pub struct OfferPlan {
    /// The framework it is for.
    pub framework: String,
    /// The role its resources are in.
    pub role: String,
    /// The agent they are on.
    pub agent: String,
    /// cpus, mem, disk.
    pub resources: Amount,
    /// Ports.
    pub ports: Vec<PortRange>,
}

fn offerable(amount: Amount) -> bool {
    agora_schemas::shortfall([MIN_CPUS, MIN_MEM, 0.0], [amount.cpus, amount.mem, f64::INFINITY]).is_none()
}

/// The offers of one round over `snapshot` at `now`, visiting agents in `order` (indexes into `snapshot.agents`;
/// the caller shuffles them, and may pass only the agents whose resources or offerability changed).
#[must_use]
pub fn allocate(snapshot: &Snapshot, order: &[usize], now: Timestamp) -> Vec<OfferPlan> {
    let total = if snapshot.total.is_empty() {
        snapshot.agents.iter().fold(Amount::default(), |sum, a| sum.plus(a.total))
    } else {
        snapshot.total
    };
    let mut sorter = Sorter::new(total);
    for (role, view) in &snapshot.roles {
        sorter.set_role_weight(role, view.weight);
    }
    // Every (role, framework) is a client, holding what its tasks and outstanding offers hold.
    let frameworks: HashMap<&str, &FrameworkView> = snapshot.frameworks.iter().map(|f| (f.name.as_str(), f)).collect();
    for framework in &snapshot.frameworks {
        for role in &framework.roles {
            let client = Client { role: role.clone(), framework: framework.name.clone() };
            sorter.add(client.clone(), framework.weight);
            sorter.allocate(&client, framework.allocated.get(role).copied().unwrap_or_default());
        }
    }
    let guaranteed: Vec<(&str, Amount)> =
        snapshot.roles.iter().filter_map(|(role, view)| Some((role.as_str(), view.guarantee?))).collect();
    let limited: HashMap<&str, Amount> =
        snapshot.roles.iter().filter_map(|(role, view)| Some((role.as_str(), view.limit?))).collect();
    // What `role` may still take under its own limit and every ancestor's.
    let cap = |sorter: &Sorter, role: &str| -> Option<Amount> {
        let mut cap: Option<Amount> = None;
        let mut at = Some(role);
        while let Some(r) = at {
            if let Some(limit) = limited.get(r) {
                let left = limit.minus(sorter.role_allocation(r));
                cap = Some(cap.map_or(left, |c| c.min(left)));
            }
            at = r.rsplit_once('/').map(|(up, _)| up);
        }
        cap
    };
    let unmet = |sorter: &Sorter, role: &str| -> Amount {
        guaranteed
            .iter()
            .find(|(r, _)| *r == role)
            .map(|(_, g)| g.minus(sorter.role_allocation(role)))
            .unwrap_or_default()
    };
    // The agents this round touches, copied so offers can be counted against them as they are made.
    let mut agents: HashMap<usize, AgentView> = HashMap::new();
    // The unreserved pool free across the cluster, kept current as offers are made.
    let mut unreserved_free =
        snapshot.agents.iter().filter(|a| a.offerable).fold(Amount::default(), |sum, a| sum.plus(a.free_unreserved()));
    let mut plans = Vec::new();
    for stage in [Stage::Guarantees, Stage::FairShare] {
        for &index in order {
            let Some(original) = snapshot.agents.get(index) else { continue };
            if !original.offerable {
                continue;
            }
            let agent = agents.entry(index).or_insert_with(|| original.clone());
            loop {
                if !agent.has_offerable() {
                    break;
                }
                // What roles' unmet guarantees need is held back from the unreserved pool.
                let headroom = guaranteed.iter().fold(Amount::default(), |sum, (r, _)| sum.plus(unmet(&sorter, r)));
                if matches!(stage, Stage::Guarantees) && headroom.is_empty() {
                    break;
                }
                let mut found = None;
                let chosen = sorter.first(|client| {
                    let Some(framework) = frameworks.get(client.framework.as_str()) else { return false };
                    let filtered = framework.filters.get(&agent.name).is_some_and(|until| *until > now);
                    if framework.suppressed || !framework.connected || filtered {
                        return false;
                    }
                    let role = client.role.as_str();
                    let own_unmet = unmet(&sorter, role);
                    let mut unreserved = agent.free_unreserved();
                    let mut reserved = agent.free_reserved(role);
                    match stage {
                        Stage::Guarantees => {
                            // Up to the unmet guarantee, and the kinds it does not name in the same proportion.
                            let Some((_, guarantee)) = guaranteed.iter().find(|(r, _)| *r == role) else {
                                return false;
                            };
                            let Some(fraction) = guarantee_fraction(reserved.plus(unreserved), *guarantee, own_unmet)
                            else {
                                return false;
                            };
                            reserved = reserved.scaled(fraction);
                            unreserved = unreserved.scaled(fraction);
                        }
                        // A role may take from the headroom what its own unmet guarantee put there.
                        Stage::FairShare => {
                            unreserved = unreserved.min(unreserved_free.minus(headroom).plus(own_unmet));
                        }
                    }
                    if let Some(cap) = cap(&sorter, role) {
                        reserved = reserved.min(cap);
                        unreserved = unreserved.min(cap.minus(reserved));
                    }
                    let offer = reserved.plus(unreserved);
                    if offerable(offer) {
                        found = Some((offer, unreserved));
                        true
                    } else {
                        false
                    }
                });
                let (Some(client), Some((resources, from_unreserved))) = (chosen, found) else {
                    break;
                };
                let ports = agent.free_ports(&client.role);
                agent.offered_ports.extend(ports.iter().copied());
                let used = agent.used.entry(client.role.clone()).or_default();
                *used = used.plus(resources);
                unreserved_free = unreserved_free.minus(from_unreserved);
                sorter.allocate(&client, resources);
                plans.push(OfferPlan {
                    framework: client.framework,
                    role: client.role,
                    agent: agent.name.clone(),
                    resources,
                    ports,
                });
            }
        }
    }
    plans
}

/// How much of `available` a role below its guarantee may take in the first stage: the largest fraction that takes
/// no more of any guaranteed kind than is `unmet` (`None` when nothing is unmet).
fn guarantee_fraction(available: Amount, guarantee: Amount, unmet: Amount) -> Option<f64> {
    let kinds = [
        (available.cpus, guarantee.cpus, unmet.cpus),
        (available.mem, guarantee.mem, unmet.mem),
        (available.disk, guarantee.disk, unmet.disk),
    ];
    if kinds.iter().all(|(_, g, u)| *g <= 0.0 || *u <= 1e-9) {
        return None;
    }
    let fraction =
        kinds.iter().filter(|(a, g, _)| *g > 0.0 && *a > 0.0).map(|(a, _, u)| (u / a).min(1.0)).fold(1.0_f64, f64::min);
    Some(fraction)
}

#[derive(Clone, Copy)]
enum Stage {
    Guarantees,
    FairShare,
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Timestamp = Timestamp::UNIX_EPOCH;

    fn agent(name: &str, cpus: f64, mem: f64) -> AgentView {
        AgentView {
            name: name.into(),
            total: Amount::new(cpus, mem, 0.0),
            ports: vec![PortRange(31000, 31009)],
            offerable: true,
            ..AgentView::default()
        }
    }

    fn framework(name: &str, role: &str) -> FrameworkView {
        FrameworkView {
            name: name.into(),
            roles: vec![role.into()],
            weight: 1.0,
            connected: true,
            ..Default::default()
        }
    }

    fn round(snapshot: &Snapshot) -> Vec<OfferPlan> {
        allocate(snapshot, &(0..snapshot.agents.len()).collect::<Vec<_>>(), NOW)
    }

    fn offered(plans: &[OfferPlan]) -> Vec<(&str, &str, f64)> {
        plans.iter().map(|p| (p.framework.as_str(), p.agent.as_str(), p.resources.cpus)).collect()
    }

    #[test]
    fn each_agent_goes_whole_to_the_framework_with_the_lowest_share() {
        let mut busy = framework("busy", "*");
        busy.allocated.insert("*".into(), Amount::new(2.0, 1024.0, 0.0));
        let snapshot = Snapshot {
            agents: vec![agent("a1", 4.0, 4096.0), agent("a2", 4.0, 4096.0)],
            frameworks: vec![busy, framework("idle", "*")],
            ..Snapshot::default()
        };
        let plans = round(&snapshot);
        // idle (share 0) gets a1 whole; then busy (2/8) has the lower share, and gets a2.
        assert_eq!(offered(&plans), [("idle", "a1", 4.0), ("busy", "a2", 4.0)]);
        assert_eq!(plans[0].ports, [PortRange(31000, 31009)]);
        assert_eq!(plans[0].resources.mem, 4096.0);
    }

    #[test]
    fn too_little_is_not_offered() {
        let mut small = agent("a1", 4.0, 4096.0);
        small.used.insert("*".into(), Amount::new(3.995, 0.0, 0.0));
        let mut no_memory = agent("a2", 4.0, 4096.0);
        no_memory.used.insert("*".into(), Amount::new(0.0, 4080.0, 0.0));
        let snapshot =
            Snapshot { agents: vec![small, no_memory], frameworks: vec![framework("f", "*")], ..Default::default() };
        assert!(round(&snapshot).is_empty(), "less than 0.01 cpus or 32 MiB free is no offer");
    }

    #[test]
    fn suppressed_disconnected_and_filtered_frameworks_get_nothing() {
        let mut suppressed = framework("a-suppressed", "*");
        suppressed.suppressed = true;
        let mut gone = framework("b-gone", "*");
        gone.connected = false;
        let mut declined = framework("c-declined", "*");
        declined.filters.insert("a1".into(), NOW + jiff::SignedDuration::from_secs(5));
        declined.filters.insert("a2".into(), NOW - jiff::SignedDuration::from_secs(1)); // expired
        let snapshot = Snapshot {
            agents: vec![agent("a1", 1.0, 1024.0), agent("a2", 1.0, 1024.0)],
            frameworks: vec![suppressed, gone, declined],
            ..Default::default()
        };
        assert_eq!(offered(&round(&snapshot)), [("c-declined", "a2", 1.0)]);
        // A cordoned or unreachable agent is not offered at all.
        let mut snapshot = snapshot;
        snapshot.agents[1].offerable = false;
        assert!(round(&snapshot).is_empty());
    }

    #[test]
    fn reserved_resources_go_only_to_their_role() {
        let mut a1 = agent("a1", 8.0, 8192.0);
        a1.reservations.insert("eng".into(), (Amount::new(4.0, 4096.0, 0.0), vec![PortRange(31000, 31004)]));
        let snapshot = Snapshot {
            agents: vec![a1],
            frameworks: vec![framework("anyone", "*"), framework("engineer", "eng")],
            ..Default::default()
        };
        let plans = round(&snapshot);
        assert_eq!(offered(&plans), [("anyone", "a1", 4.0), ("engineer", "a1", 4.0)]);
        assert_eq!((plans[0].role.as_str(), plans[0].ports.as_slice()), ("*", &[PortRange(31005, 31009)][..]));
        assert_eq!((plans[1].role.as_str(), plans[1].ports.as_slice()), ("eng", &[PortRange(31000, 31004)][..]));
        // Alone, the reserved role gets its reservation and the unreserved pool in one offer.
        let snapshot = Snapshot { frameworks: vec![framework("engineer", "eng")], ..snapshot };
        assert_eq!(offered(&round(&snapshot)), [("engineer", "a1", 8.0)]);
    }

    #[test]
    fn guarantees_are_served_first_and_held_back_for() {
        let unlimited = f64::INFINITY;
        let gold = RoleView { weight: 1.0, guarantee: Some(Amount::new(6.0, 0.0, 0.0)), limit: None };
        let mut rich = framework("rich", "*");
        rich.allocated.insert("*".into(), Amount::new(0.0, 0.0, 0.0));
        let snapshot = Snapshot {
            agents: vec![agent("a1", 4.0, 4096.0), agent("a2", 4.0, 4096.0)],
            frameworks: vec![framework("goldie", "gold"), rich],
            roles: BTreeMap::from([("gold".to_owned(), gold.clone())]),
            ..Snapshot::default()
        };
        // Stage 1: gold up to its 6 cpus (4 on a1, 2 on a2); stage 2: the rest of a2 to rich.
        assert_eq!(offered(&round(&snapshot)), [("goldie", "a1", 4.0), ("goldie", "a2", 2.0), ("rich", "a2", 2.0)]);
        // A guaranteed role that takes nothing now still has its headroom kept: rich gets 8 - 6.
        let mut idle_gold = snapshot.clone();
        idle_gold.frameworks[0].suppressed = true;
        let plans = round(&idle_gold);
        let cpus: f64 = plans.iter().map(|p| p.resources.cpus).sum();
        assert!((cpus - 2.0).abs() < 1e-9 && plans.iter().all(|p| p.framework == "rich"), "{plans:?}");
        // A limit is never passed, whatever else is free.
        let capped = RoleView { weight: 1.0, guarantee: None, limit: Some(Amount::new(3.0, unlimited, unlimited)) };
        let snapshot = Snapshot {
            agents: vec![agent("a1", 4.0, 4096.0), agent("a2", 4.0, 4096.0)],
            frameworks: vec![framework("greedy", "capped")],
            roles: BTreeMap::from([("capped".to_owned(), capped)]),
            ..Snapshot::default()
        };
        assert_eq!(offered(&round(&snapshot)), [("greedy", "a1", 3.0)]);
    }

    #[test]
    fn used_ports_are_not_offered() {
        let mut a1 = agent("a1", 2.0, 2048.0);
        a1.used_ports.extend([31000, 31005, 31009]);
        let snapshot = Snapshot { agents: vec![a1], frameworks: vec![framework("f", "*")], ..Default::default() };
        assert_eq!(round(&snapshot)[0].ports, [PortRange(31001, 31004), PortRange(31006, 31008)]);
    }
}
