//! Placement as pure functions, shared by every framework (Marathon's and Chronos' too): whether a task fits an
//! offer ([`Remaining::fits`]: resources, ports, role, constraints), how offers rank for it ([`rank`]), and which
//! tasks go where ([`place`]: several tasks packed into one offer while they fit).

use std::collections::BTreeMap;

use agora_schemas::{Constraint, ConstraintRule, Offer, PortRange};

/// What a task needs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Demand {
    /// Cores.
    pub cpus: f64,
    /// MiB.
    pub mem: f64,
    /// MiB.
    pub disk: f64,
    /// Host ports: 0 for any free port, else that port.
    pub ports: Vec<u16>,
    /// The role whose resources it must use (`None`: any role the offer is in).
    pub role: Option<String>,
    /// Marathon-style constraints on `hostname` or an agent attribute.
    pub constraints: Vec<Constraint>,
}

/// Why a task does not fit an offer, as a counted reason (Marathon's offer-rejection summary) and a sentence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// Fewer cpus than needed.
    Cpus,
    /// Less memory than needed.
    Mem,
    /// Less disk than needed.
    Disk,
    /// Too few ports, or not the ports required.
    Ports,
    /// A placement constraint fails.
    Constraint,
    /// The offer is in another role.
    Role,
}

impl Reason {
    /// The reason's name in `status.offerRejections`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cpus => "InsufficientCpus",
            Self::Mem => "InsufficientMem",
            Self::Disk => "InsufficientDisk",
            Self::Ports => "InsufficientPorts",
            Self::Constraint => "UnfulfilledConstraint",
            Self::Role => "UnfulfilledRole",
        }
    }
}

/// A task that does not fit an offer: why, counted and in words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Misfit {
    /// The reason, for counting.
    pub reason: Reason,
    /// What is short, for people.
    pub message: String,
}

impl Misfit {
    fn new(reason: Reason, message: String) -> Self {
        Self { reason, message }
    }
}

impl std::fmt::Display for Misfit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// What is left of an offer as tasks are packed into it.
#[derive(Clone, Debug, PartialEq)]
pub struct Remaining {
    /// The offer's name.
    pub offer: String,
    /// Its agent.
    pub agent: String,
    /// The agent's hostname and attributes, for constraints.
    pub fields: BTreeMap<String, String>,
    /// Its role.
    pub role: String,
    /// What is left.
    pub cpus: f64,
    /// What is left.
    pub mem: f64,
    /// What is left.
    pub disk: f64,
    /// Ports left.
    pub ports: Vec<PortRange>,
}

/// How many of a framework's tasks already run per value of each constraint field (`rack` → `r1` → 2).
pub type Spread = BTreeMap<String, BTreeMap<String, usize>>;

impl Remaining {
    /// The whole of `offer`.
    #[must_use]
    pub fn of(offer: &Offer) -> Self {
        let spec = &offer.spec;
        let mut fields = spec.attributes.clone();
        fields.insert("hostname".to_owned(), spec.hostname.clone().unwrap_or_else(|| spec.agent.clone()));
        Self {
            offer: offer.metadata.name.clone().unwrap_or_default(),
            agent: spec.agent.clone(),
            fields,
            role: spec.role.clone().unwrap_or_else(|| "*".to_owned()),
            cpus: spec.resources.cpus,
            mem: spec.resources.mem,
            disk: spec.resources.disk,
            ports: spec.resources.ports.clone(),
        }
    }

    /// The host ports `demand` would get here, or why it does not fit.
    ///
    /// # Errors
    /// What is short: `cpus`, `mem`, `disk`, `ports`, `role`, or the constraint that fails.
    pub fn fits(&self, demand: &Demand, spread: &Spread) -> Result<Vec<u16>, Misfit> {
        if demand.role.as_ref().is_some_and(|r| *r != self.role) {
            return Err(Misfit::new(Reason::Role, format!("the offer is in role {}", self.role)));
        }
        if let Some(short) =
            agora_schemas::shortfall([demand.cpus, demand.mem, demand.disk], [self.cpus, self.mem, self.disk])
        {
            let reason = match short.kind {
                "cpus" => Reason::Cpus,
                "mem" => Reason::Mem,
                _ => Reason::Disk,
            };
            return Err(Misfit::new(
                reason,
                format!("{}: needs {}, {} left", short.kind, short.needed, short.available),
            ));
        }
        for constraint in &demand.constraints {
            if !self.satisfies(constraint, spread) {
                let message = format!("constraint {} fails on agent {}", constraint.0.join(" "), self.agent);
                return Err(Misfit::new(Reason::Constraint, message));
            }
        }
        let mut taken: Vec<u16> = Vec::new();
        for &want in &demand.ports {
            let free = |p: u16| self.ports.iter().any(|r| r.contains(p)) && !taken.contains(&p);
            let port = if want == 0 {
                self.ports.iter().flat_map(|r| r.0..=r.1).find(|p| free(*p))
            } else {
                free(want).then_some(want)
            };
            match port {
                Some(p) => taken.push(p),
                None if want == 0 => {
                    return Err(Misfit::new(
                        Reason::Ports,
                        format!("ports: needs {}, fewer are left", demand.ports.len()),
                    ));
                }
                None => return Err(Misfit::new(Reason::Ports, format!("ports: {want} is not offered"))),
            }
        }
        Ok(taken)
    }

    fn satisfies(&self, constraint: &Constraint, spread: &Spread) -> bool {
        let field = constraint.field();
        let value = self.fields.get(field);
        let placed = |v: &String| spread.get(field).and_then(|m| m.get(v)).copied().unwrap_or(0);
        match constraint.parse() {
            Ok(ConstraintRule::Unique) => value.is_some_and(|v| placed(v) == 0),
            Ok(ConstraintRule::MaxPer(n)) => value.is_some_and(|v| placed(v) < n as usize),
            Ok(ConstraintRule::Cluster(Some(want)) | ConstraintRule::Is(want)) => value == Some(&want),
            Ok(ConstraintRule::Cluster(None)) => {
                // The first placement fixes the value.
                let fixed = spread.get(field).and_then(|m| m.iter().find(|(_, n)| **n > 0)).map(|(v, _)| v);
                value.is_some_and(|v| fixed.is_none_or(|f| f == v))
            }
            Ok(ConstraintRule::Like(re)) => value.is_some_and(|v| re.is_match(v)),
            Ok(ConstraintRule::Unlike(re)) => value.is_none_or(|v| !re.is_match(v)),
            // Marathon's rule: a value holding none of the tasks yet is always fine; one that holds some only once at
            // least `n` values are in use and it is among the least used (so tasks spread evenly).
            Ok(ConstraintRule::GroupBy(n)) => value.is_some_and(|v| {
                let counts = spread.get(field);
                let used = || counts.into_iter().flat_map(|m| m.values()).filter(|c| **c > 0);
                match placed(v) {
                    0 => true,
                    here => used().count() >= n.unwrap_or(0) as usize && used().min().is_none_or(|m| *m == here),
                }
            }),
            Err(_) => false,
        }
    }

    /// Takes what `demand` uses, with the `ports` it was given.
    pub fn take(&mut self, demand: &Demand, ports: &[u16]) {
        self.cpus -= demand.cpus;
        self.mem -= demand.mem;
        self.disk -= demand.disk;
        for &port in ports {
            self.ports = self
                .ports
                .iter()
                .flat_map(|r| {
                    if !r.contains(port) {
                        return vec![*r];
                    }
                    let mut parts = Vec::new();
                    if port > r.0 {
                        parts.push(PortRange(r.0, port - 1));
                    }
                    if port < r.1 {
                        parts.push(PortRange(port + 1, r.1));
                    }
                    parts
                })
                .collect();
        }
    }
}

/// Orders candidate offers for `demand`, best first: for a `GROUP_BY` constraint, values holding fewer of the
/// framework's tasks first (spreading); otherwise the offer left with the least after the task (packing, as
/// Mesos' and Nomad's bin-packing rankers do), ties by name.
#[must_use]
pub fn rank<'a>(candidates: &'a [Remaining], demand: &Demand, spread: &Spread) -> Vec<&'a Remaining> {
    let group_by: Vec<&str> = demand
        .constraints
        .iter()
        .filter(|c| matches!(c.parse(), Ok(ConstraintRule::GroupBy(_))))
        .map(Constraint::field)
        .collect();
    let crowding = |r: &Remaining| -> usize {
        group_by.iter().map(|f| r.fields.get(*f).and_then(|v| spread.get(*f)?.get(v)).copied().unwrap_or(0)).sum()
    };
    let leftover = |r: &Remaining| (r.cpus - demand.cpus).max(0.0) + (r.mem - demand.mem).max(0.0) / 1024.0;
    let mut ranked: Vec<&Remaining> = candidates.iter().collect();
    ranked.sort_by(|a, b| {
        crowding(a).cmp(&crowding(b)).then(leftover(a).total_cmp(&leftover(b))).then_with(|| a.offer.cmp(&b.offer))
    });
    ranked
}

/// One task placed: which demand (by index), on which offer, with which host ports.
#[derive(Clone, Debug, PartialEq)]
pub struct Placement {
    /// The index into the demands.
    pub demand: usize,
    /// The offer.
    pub offer: String,
    /// Its agent.
    pub agent: String,
    /// The host ports given.
    pub ports: Vec<u16>,
}

/// Places `demands` in order onto `offers`, each on the best-ranked offer it fits, several per offer while they
/// fit; `spread` counts placements as they are made. Demands that fit nowhere are left out.
#[must_use]
pub fn place<'a>(offers: impl IntoIterator<Item = &'a Offer>, demands: &[Demand], spread: &Spread) -> Vec<Placement> {
    let mut remaining: Vec<Remaining> = offers.into_iter().map(Remaining::of).collect();
    let mut spread = spread.clone();
    let mut placements = Vec::new();
    for (index, demand) in demands.iter().enumerate() {
        let chosen = rank(&remaining, demand, &spread)
            .into_iter()
            .find_map(|r| r.fits(demand, &spread).ok().map(|ports| (r.offer.clone(), ports)));
        let Some((offer, ports)) = chosen else { continue };
        let Some(target) = remaining.iter_mut().find(|r| r.offer == offer) else { continue };
        target.take(demand, &ports);
        for constraint in &demand.constraints {
            if let Some(value) = target.fields.get(constraint.field()) {
                *spread.entry(constraint.field().to_owned()).or_default().entry(value.clone()).or_default() += 1;
            }
        }
        placements.push(Placement { demand: index, offer, agent: target.agent.clone(), ports });
    }
    placements
}

/// As [`place`], with at most `per_offer` tasks on any one offer, offers taken in turn: a burst of launches becomes
/// several small acceptances the apiserver admits side by side, instead of one large one (a framework whose tasks
/// are due at one instant, as Chronos' are, cares more about that latency than about packing).
#[must_use]
pub fn place_spread<'a>(
    offers: impl IntoIterator<Item = &'a Offer>,
    demands: &[Demand],
    spread: &Spread,
    per_offer: usize,
) -> Vec<Placement> {
    let mut remaining: Vec<Remaining> = offers.into_iter().map(Remaining::of).collect();
    let mut used = vec![0usize; remaining.len()];
    let mut spread = spread.clone();
    let mut placements = Vec::new();
    let mut cursor = 0;
    for (index, demand) in demands.iter().enumerate() {
        // Constraints decide the order when there are any; otherwise offers are taken in turn.
        let order: Vec<usize> = if demand.constraints.is_empty() {
            (0..remaining.len()).map(|i| (cursor + i) % remaining.len()).collect()
        } else {
            rank(&remaining, demand, &spread)
                .into_iter()
                .filter_map(|r| remaining.iter().position(|x| x.offer == r.offer))
                .collect()
        };
        let chosen = order
            .into_iter()
            .filter(|i| used[*i] < per_offer)
            .find_map(|i| remaining[i].fits(demand, &spread).ok().map(|ports| (i, ports)));
        let Some((at, ports)) = chosen else { continue };
        let target = &mut remaining[at];
        target.take(demand, &ports);
        used[at] += 1;
        cursor = at + 1;
        for constraint in &demand.constraints {
            if let Some(value) = target.fields.get(constraint.field()) {
                *spread.entry(constraint.field().to_owned()).or_default().entry(value.clone()).or_default() += 1;
            }
        }
        placements.push(Placement { demand: index, offer: target.offer.clone(), agent: target.agent.clone(), ports });
    }
    placements
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn offer(name: &str, agent: &str, cpus: f64, mem: f64, rack: &str) -> Offer {
        serde_json::from_value(json!({"apiVersion": "agora/v1", "kind": "Offer", "metadata": {"name": name},
            "spec": {"framework": "f", "agent": agent, "role": "*", "attributes": {"rack": rack},
                     "resources": {"cpus": cpus, "mem": mem, "ports": [[31000, 31002]]}}}))
        .unwrap()
    }

    fn demand(cpus: f64, mem: f64) -> Demand {
        Demand { cpus, mem, ..Demand::default() }
    }

    fn constraint(parts: &[&str]) -> Constraint {
        Constraint(parts.iter().map(|p| (*p).to_owned()).collect())
    }

    #[test]
    fn feasibility_names_what_is_short() {
        let r = Remaining::of(&offer("o", "a1", 1.0, 1024.0, "r1"));
        assert_eq!(r.fits(&demand(0.5, 512.0), &Spread::new()), Ok(vec![]));
        assert_eq!(r.fits(&demand(2.0, 512.0), &Spread::new()).unwrap_err().message, "cpus: needs 2, 1 left");
        let ports = Demand { ports: vec![0, 31002], ..demand(0.1, 32.0) };
        assert_eq!(r.fits(&ports, &Spread::new()), Ok(vec![31000, 31002]));
        let too_many = Demand { ports: vec![0, 0, 0, 0], ..demand(0.1, 32.0) };
        assert_eq!(r.fits(&too_many, &Spread::new()).unwrap_err().reason, Reason::Ports);
        let reserved = Demand { role: Some("eng".into()), ..demand(0.1, 32.0) };
        assert_eq!(r.fits(&reserved, &Spread::new()).unwrap_err().message, "the offer is in role *");
        let spread = Spread::from([("rack".to_owned(), BTreeMap::from([("r1".to_owned(), 1)]))]);
        let unique = Demand { constraints: vec![constraint(&["rack", "UNIQUE"])], ..demand(0.1, 32.0) };
        assert!(r.fits(&unique, &spread).is_err() && r.fits(&unique, &Spread::new()).is_ok());
        let like = Demand { constraints: vec![constraint(&["rack", "LIKE", "r[0-9]"])], ..demand(0.1, 32.0) };
        assert!(r.fits(&like, &Spread::new()).is_ok());
    }

    #[test]
    fn tasks_pack_into_offers_and_spread_when_asked() {
        let offers = [offer("big", "a1", 4.0, 4096.0, "r1"), offer("small", "a2", 1.0, 1024.0, "r2")];
        // Packing: the tightest fit first, then more tasks into the same offer while they fit.
        let placed = place(&offers, &vec![demand(1.0, 512.0); 4], &Spread::new());
        let on: Vec<&str> = placed.iter().map(|p| p.offer.as_str()).collect();
        assert_eq!(on, ["small", "big", "big", "big"]);
        // Spreading over racks with GROUP_BY.
        let spread_demand = Demand { constraints: vec![constraint(&["rack", "GROUP_BY"])], ..demand(0.5, 256.0) };
        let placed = place(&offers, &vec![spread_demand; 2], &Spread::new());
        let on: Vec<&str> = placed.iter().map(|p| p.agent.as_str()).collect();
        assert_eq!(on, ["a2", "a1"]);
        // What fits nowhere is left out.
        assert!(place(&offers, &[demand(8.0, 512.0)], &Spread::new()).is_empty());
    }

    #[test]
    fn a_burst_is_spread_over_offers_a_few_tasks_each() {
        let offers = [offer("o1", "a1", 4.0, 4096.0, "r1"), offer("o2", "a2", 4.0, 4096.0, "r2")];
        let placed = place_spread(&offers, &vec![demand(0.1, 32.0); 5], &Spread::new(), 2);
        let on: Vec<&str> = placed.iter().map(|p| p.offer.as_str()).collect();
        assert_eq!(on, ["o1", "o2", "o1", "o2"], "at most two per offer; the fifth waits for another offer");
        // What does not fit is skipped, not forced.
        let placed = place_spread(&offers, &[demand(5.0, 32.0), demand(1.0, 32.0)], &Spread::new(), 2);
        assert_eq!(placed.len(), 1);
        assert_eq!(placed[0].demand, 1);
    }
}
