//! Placement and hierarchical, idempotent replica division (pure).
//!
//! A workload's chosen clusters plus their ancestors form a sub-forest. For a
//! `Divided` workload the total is apportioned top-down: a virtual top divides
//! it among the roots' subtrees, then every node divides its share between
//! itself (if chosen) and each child subtree holding chosen clusters, weighted
//! by the subtree's summed weight. Every division is the Webster
//! (Sainte-Laguë) method.
//!
//! Because a subtree's result depends only on the share it receives and on its
//! own clusters, any node can re-run the scheduler for its subtree with the
//! share its parent gave it and get exactly the full run's answer: the
//! property that lets each level of the tree schedule its children on its own,
//! and that makes adding a cluster elsewhere invisible to an unaffected subtree.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use crate::core::model::{
    Capacity, CapacityValues, DynamicWeight, OnShortfall, ReplicaMode, Workload,
};
use crate::core::select;
use crate::core::topology::Topology;
use crate::core::validate::Checked;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("no cluster is chosen, so {total} replicas cannot be divided")]
    NoClusters { total: u32 },
    #[error("every chosen cluster has weight 0, so {total} replicas cannot be divided")]
    AllWeightsZero { total: u32 },
    #[error("every chosen cluster with weight has failed, so {total} replicas have nowhere to go")]
    AllFailed { total: u32 },
    #[error("the limits of {cluster}'s subtree cannot all hold: it needs at least {least} replicas and takes at most {most}")]
    LimitsConflict {
        cluster: String,
        least: u64,
        most: u64,
    },
    #[error("{total} replicas are fewer than the limits' minimums need ({least})")]
    BelowLimits { total: u32, least: u64 },
    #[error("{total} replicas do not fit: the chosen clusters hold {fits} ({detail})")]
    Shortfall {
        total: u32,
        fits: u64,
        /// Where they fit, largest first, bounded.
        detail: String,
    },
}

/// Webster (Sainte-Laguë) apportionment of `seats` among parties with the
/// given weights. Each next seat goes to the highest `weight / (2·seats + 1)`;
/// ties go to the party with fewer seats, then to the smaller `tie` key
/// (canopy passes cluster indexes, which follow name order). Parties of
/// weight 0 get nothing.
///
/// ```
/// // 7 replicas by weights 53, 24, 23: quotients 53, 24, 23, 17.7, 10.6, 8, 7.7 win.
/// assert_eq!(canopy::core::schedule::webster(&[(53, 0), (24, 1), (23, 2)], 7), vec![3, 2, 2]);
/// // A zero weight gets nothing.
/// assert_eq!(canopy::core::schedule::webster(&[(0, 0), (1, 1)], 3), vec![0, 3]);
/// ```
pub fn webster(parties: &[(u64, usize)], seats: u32) -> Vec<u32> {
    webster_bounded(parties, None, None, seats)
}

/// [`webster`] with bounds per party: each party first takes its least
/// (`floors[i]`, weight or not), and the seats left go by the Webster
/// quotients of the seats each then holds; a party at its most (`caps[i]`)
/// takes no more, and the next seat goes to the best of the others. Seats
/// no party can take are left over: the result then sums to less than
/// `seats`. `seats` must cover the floors.
pub fn webster_bounded(
    parties: &[(u64, usize)],
    floors: Option<&[u64]>,
    caps: Option<&[u64]>,
    seats: u32,
) -> Vec<u32> {
    let floor = |at: usize| floors.map_or(0, |f| f[at].min(u64::from(u32::MAX)) as u32);
    #[derive(PartialEq, Eq)]
    struct Entry {
        weight: u64,
        seats: u32,
        tie: usize,
        at: usize,
    }
    impl Ord for Entry {
        fn cmp(&self, o: &Self) -> Ordering {
            // weight/(2s+1) compared exactly by cross-multiplying.
            let a = u128::from(self.weight) * u128::from(2 * o.seats + 1);
            let b = u128::from(o.weight) * u128::from(2 * self.seats + 1);
            a.cmp(&b)
                .then_with(|| o.seats.cmp(&self.seats))
                .then_with(|| o.tie.cmp(&self.tie))
        }
    }
    impl PartialOrd for Entry {
        fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
            Some(self.cmp(o))
        }
    }
    let cap = |at: usize| caps.map_or(u64::MAX, |c| c[at]);
    let mut out: Vec<u32> = (0..parties.len()).map(floor).collect();
    let given: u32 = out.iter().sum();
    debug_assert!(
        given <= seats,
        "the floors {given} exceed the seats {seats}"
    );
    let mut heap: BinaryHeap<Entry> = parties
        .iter()
        .enumerate()
        .filter(|&(at, (w, _))| *w > 0 && u64::from(out[at]) < cap(at))
        .map(|(at, &(weight, tie))| Entry {
            weight,
            seats: out[at],
            tie,
            at,
        })
        .collect();
    for _ in 0..seats.saturating_sub(given) {
        let Some(mut top) = heap.peek_mut() else {
            break;
        };
        top.seats += 1;
        out[top.at] += 1;
        if u64::from(top.seats) >= cap(top.at) {
            std::collections::binary_heap::PeekMut::pop(top);
        }
    }
    out
}

/// Calm division of `seats` among `parties` that held `prev[i]` before:
/// each keeps what it held (no more than its cap; nothing when its weight
/// is 0), and only the difference moves, by the same Webster quotients
/// from what each holds: a seat added goes to the highest
/// weight/(2·held+1), as [`webster_bounded`] gives it; a seat taken away
/// comes off the lowest weight/(2·held−1), the party its last seat was
/// least due to, never below its floor. Where that cannot keep every
/// bound, or nothing was held before, the division is the fresh one.
pub fn calm_split(
    parties: &[(u64, usize)],
    floors: Option<&[u64]>,
    caps: Option<&[u64]>,
    seats: u32,
    prev: &[u64],
) -> Vec<u32> {
    let fresh = || webster_bounded(parties, floors, caps, seats);
    if prev.iter().all(|&p| p == 0) {
        return fresh();
    }
    let floor = |i: usize| floors.map_or(0, |f| f[i]);
    let cap = |i: usize| caps.map_or(u64::MAX, |c| c[i]);
    let keep: Vec<u64> = (0..parties.len())
        .map(|i| {
            if parties[i].0 == 0 {
                0
            } else {
                prev[i].min(cap(i)).max(floor(i))
            }
        })
        .collect();
    let kept: u64 = keep.iter().sum();
    let out: Vec<u64> = if u64::from(seats) >= kept {
        webster_bounded(parties, Some(&keep), caps, seats)
            .into_iter()
            .map(u64::from)
            .collect()
    } else {
        webster_remove(parties, keep, floors, (kept - u64::from(seats)) as u32)
    };
    let holds = out.iter().sum::<u64>() == u64::from(seats)
        && (0..parties.len()).all(|i| out[i] >= floor(i) && out[i] <= cap(i));
    if !holds {
        return fresh();
    }
    out.into_iter().map(|n| n as u32).collect()
}

/// Takes `cut` seats away from `held`, each from the party whose last
/// seat has the lowest Webster quotient weight/(2·held−1) (a party of
/// weight 0 first), never below its floor; ties take from the party with
/// more seats, then the later one.
fn webster_remove(
    parties: &[(u64, usize)],
    mut held: Vec<u64>,
    floors: Option<&[u64]>,
    cut: u32,
) -> Vec<u64> {
    #[derive(PartialEq, Eq)]
    struct Entry {
        weight: u64,
        seats: u64,
        tie: usize,
        at: usize,
    }
    impl Ord for Entry {
        // The max of the heap is the party to take from: the lowest quotient.
        fn cmp(&self, o: &Self) -> Ordering {
            let a = u128::from(self.weight) * u128::from(2 * o.seats - 1);
            let b = u128::from(o.weight) * u128::from(2 * self.seats - 1);
            b.cmp(&a)
                .then_with(|| self.seats.cmp(&o.seats))
                .then_with(|| self.tie.cmp(&o.tie))
        }
    }
    impl PartialOrd for Entry {
        fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
            Some(self.cmp(o))
        }
    }
    let floor = |i: usize| floors.map_or(0, |f| f[i]);
    let mut heap: BinaryHeap<Entry> = parties
        .iter()
        .enumerate()
        .filter(|&(at, _)| held[at] > floor(at))
        .map(|(at, &(weight, tie))| Entry {
            weight,
            seats: held[at],
            tie,
            at,
        })
        .collect();
    for _ in 0..cut {
        let Some(mut top) = heap.peek_mut() else {
            break;
        };
        top.seats -= 1;
        held[top.at] -= 1;
        if top.seats <= floor(top.at) {
            std::collections::binary_heap::PeekMut::pop(top);
        }
    }
    held
}

/// One division step, kept for `canopy explain`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Division {
    /// The dividing node; `None` for the virtual top above the roots.
    pub node: Option<usize>,
    pub share: u32,
    pub parties: Vec<Party>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Party {
    /// The cluster itself (`own`) or the subtree of this child.
    pub cluster: usize,
    pub own: bool,
    pub weight: u64,
    pub seats: u32,
    /// The cluster (or every weighted cluster of the subtree) has failed:
    /// the party takes no replicas, and its siblings share what it held.
    pub failed: bool,
    /// Under a bound: the least the party takes (its subtree's limits).
    pub floor: u64,
    /// Under a bound: the most it takes (what fits, its limits); `None`
    /// when unbounded.
    pub cap: Option<u64>,
}

/// Result of dividing replicas over a (sub)tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// Replicas each cluster runs (0 when not chosen or given none).
    pub replicas: Vec<u32>,
    /// Share each node's subtree received from above (0 outside the sub-forest).
    pub share: Vec<u32>,
    /// Division steps, top-down, when tracing was asked for.
    pub divisions: Vec<Division>,
    /// Under a capacity bound with `onShortfall: PlaceWhatFits`: the
    /// replicas asked for and those placed, when fewer fit.
    pub shortfall: Option<(u32, u32)>,
}

impl Assignment {
    fn empty(n: usize) -> Self {
        Assignment {
            replicas: vec![0; n],
            share: vec![0; n],
            divisions: Vec::new(),
            shortfall: None,
        }
    }
}

/// What bounds a division: what fits in each cluster (its weight under
/// `dynamic: capacity`), and per cluster the least and most replicas its
/// subtree runs (`limits`). Unbounded by default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bound {
    /// No cluster takes more replicas than its weight.
    pub capacity: bool,
    /// When the chosen clusters hold fewer than the total: place what fits
    /// (and say so) instead of an error.
    pub place_what_fits: bool,
    /// Per cluster (by index): the least and the most replicas its subtree
    /// runs; `None` without limits.
    pub limits: Option<Vec<(u32, Option<u32>)>>,
    /// Per cluster (by index): the most it takes, where that is not its
    /// weight (static weights bound by declared capacity).
    pub caps: Option<Vec<u64>>,
    /// Calm rescheduling: per cluster (by index), the replicas the last
    /// apply gave it; every division keeps what its parties held and moves
    /// only the difference ([`calm_split`]). `None`: fresh divisions.
    pub previous: Option<Vec<u32>>,
}

impl Bound {
    /// What fits in each cluster, and nothing more.
    pub fn capacity(place_what_fits: bool) -> Bound {
        Bound {
            capacity: true,
            place_what_fits,
            limits: None,
            caps: None,
            previous: None,
        }
    }

    fn is_bounded(&self) -> bool {
        self.capacity || self.limits.is_some() || self.caps.is_some()
    }
}

/// Per cluster under a [`Bound`]: the most its own party takes, and the
/// least and most its subtree takes.
struct Bounds {
    own: Vec<u64>,
    floor: Vec<u64>,
    cap: Vec<u64>,
}

impl<'a> Inputs<'a> {
    fn with_bound(mut self, bound: &Bound) -> Result<Self, ScheduleError> {
        if let Some(prev) = &bound.previous {
            let topo = self.topo;
            let own: Vec<u64> = (0..topo.len())
                .map(|c| u64::from(prev.get(c).copied().unwrap_or(0)))
                .collect();
            let mut sums = own.clone();
            for &c in topo.preorder().iter().rev() {
                if let Some(p) = topo.parent(c) {
                    sums[p] += sums[c];
                }
            }
            self.prev = Some((own, sums));
        }
        if !bound.is_bounded() {
            return Ok(self);
        }
        let topo = self.topo;
        let n = topo.len();
        let own: Vec<u64> = (0..n)
            .map(|c| {
                // A party of weight 0 takes no replica beyond a least.
                if !self.chosen[c] || self.failed(c) || self.weight[c] == 0 {
                    0
                } else if bound.capacity {
                    self.weight[c]
                } else if let Some(caps) = &bound.caps {
                    caps[c]
                } else {
                    u64::MAX
                }
            })
            .collect();
        let mut floor = vec![0u64; n];
        let mut cap = own.clone();
        for &c in topo.preorder().iter().rev() {
            for &k in topo.children(c) {
                floor[c] += floor[k];
                cap[c] = cap[c].saturating_add(cap[k]);
            }
            if let Some(l) = &bound.limits {
                let (min, max) = l[c];
                // A subtree nothing healthy can take replicas in has no
                // least (a failed cluster's replicas move away).
                if self.healthy[c] > 0 {
                    floor[c] = floor[c].max(u64::from(min));
                }
                if let Some(max) = max {
                    cap[c] = cap[c].min(u64::from(max));
                }
            }
            if floor[c] > cap[c] {
                return Err(ScheduleError::LimitsConflict {
                    cluster: topo.name(c).to_string(),
                    least: floor[c],
                    most: cap[c],
                });
            }
        }
        self.bounds = Some(Bounds { own, floor, cap });
        Ok(self)
    }

    /// Divides `seats` among `parties` of the division at `node` (`None`:
    /// the roots; a party keyed by `node` itself is its own party): fresh,
    /// or calm when the bound says so.
    fn split(
        &self,
        node: Option<usize>,
        parties: &[(u64, usize)],
        floors: Option<&[u64]>,
        caps: Option<&[u64]>,
        seats: u32,
    ) -> Vec<u32> {
        match &self.prev {
            None => webster_bounded(parties, floors, caps, seats),
            Some((own, sums)) => {
                let prev: Vec<u64> = parties
                    .iter()
                    .map(|&(_, c)| if Some(c) == node { own[c] } else { sums[c] })
                    .collect();
                calm_split(parties, floors, caps, seats, &prev)
            }
        }
    }

    /// The least and most each party of a division takes (own party first
    /// when `own`, then the child subtrees), with a bound.
    fn party_bounds(&self, node: usize, own: bool, kids: &[usize]) -> Option<(Vec<u64>, Vec<u64>)> {
        let b = self.bounds.as_ref()?;
        let mut floors = Vec::with_capacity(kids.len() + 1);
        let mut caps = Vec::with_capacity(kids.len() + 1);
        if own {
            floors.push(0);
            caps.push(b.own[node]);
        }
        for &k in kids {
            floors.push(b.floor[k]);
            caps.push(b.cap[k]);
        }
        Some((floors, caps))
    }

    /// `want` against what the subtrees `roots` take under the bound: the
    /// replicas to divide, and the shortfall if fewer fit and that is
    /// allowed; an error if it is not.
    fn fit(
        &self,
        roots: &[usize],
        want: u32,
        bound: &Bound,
    ) -> Result<(u32, Option<(u32, u32)>), ScheduleError> {
        let Some(b) = self.bounds.as_ref() else {
            return Ok((want, None));
        };
        let least: u64 = roots.iter().map(|&r| b.floor[r]).sum();
        let fits: u64 = roots.iter().fold(0u64, |s, &r| s.saturating_add(b.cap[r]));
        if u64::from(want) < least {
            return Err(ScheduleError::BelowLimits { total: want, least });
        }
        if u64::from(want) <= fits {
            return Ok((want, None));
        }
        if bound.place_what_fits {
            let placed = fits as u32;
            return Ok((placed, Some((want, placed))));
        }
        let mut holds: Vec<(u64, usize)> = (0..b.own.len())
            .filter(|&c| {
                self.chosen[c] && b.own[c] > 0 && roots.iter().any(|&r| self.topo.in_subtree(c, r))
            })
            .map(|c| (b.own[c].min(b.cap[c]), c))
            .collect();
        holds.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut detail: Vec<String> = holds
            .iter()
            .take(5)
            .map(|&(n, c)| format!("{} fits {n}", self.topo.name(c)))
            .collect();
        if holds.len() > 5 {
            detail.push(format!("{} more", holds.len() - 5));
        }
        if detail.is_empty() {
            detail.push("no chosen cluster has room".into());
        }
        Err(ScheduleError::Shortfall {
            total: want,
            fits,
            detail: detail.join(", "),
        })
    }
}

/// The inputs every division step reads.
struct Inputs<'a> {
    topo: &'a Topology,
    chosen: &'a [bool],
    weight: &'a [u64],
    /// Clusters that failed (failover); empty when none did.
    failed: &'a [bool],
    /// Summed weight of chosen clusters per subtree, failed ones included:
    /// a subtree keeps the share it had as long as some of it is healthy.
    sums: Vec<u64>,
    /// Summed weight of the chosen clusters that have not failed.
    healthy: Vec<u64>,
    /// Under a [`Bound`]; `None`: unbounded.
    bounds: Option<Bounds>,
    /// Calm rescheduling: what each cluster held before, and what each
    /// subtree held; `None`: fresh divisions.
    prev: Option<(Vec<u64>, Vec<u64>)>,
    trace: bool,
}

impl<'a> Inputs<'a> {
    /// Gathers the inputs and sums the weight of chosen clusters per subtree.
    fn new(
        topo: &'a Topology,
        chosen: &'a [bool],
        weight: &'a [u64],
        failed: &'a [bool],
        trace: bool,
    ) -> Self {
        let mut sums = vec![0u64; topo.len()];
        let mut healthy = vec![0u64; topo.len()];
        // Joined clusters are parties of their parent's division, but their
        // weight is not passed further up: a cluster joining takes part of
        // its parent's share, and nothing outside that subtree moves. Only
        // a parent whose Git subtree weighs nothing takes its members'
        // weight up, so that they are not left with nothing.
        let mut members = vec![(0u64, 0u64); topo.len()];
        for &c in topo.preorder().iter().rev() {
            if chosen[c] {
                sums[c] += weight[c];
                if !failed.get(c).copied().unwrap_or(false) {
                    healthy[c] += weight[c];
                }
            }
            if sums[c] == 0 {
                sums[c] += members[c].0;
                healthy[c] += members[c].1;
            }
            if let Some(p) = topo.parent(c) {
                if topo.is_joined(c) {
                    members[p].0 += sums[c];
                    members[p].1 += healthy[c];
                } else {
                    sums[p] += sums[c];
                    healthy[p] += healthy[c];
                }
            }
        }
        Inputs {
            topo,
            chosen,
            weight,
            failed,
            sums,
            healthy,
            bounds: None,
            prev: None,
            trace,
        }
    }

    fn failed(&self, c: usize) -> bool {
        self.failed.get(c).copied().unwrap_or(false)
    }

    /// A child subtree's weight in its parent's division: its full weight
    /// while any of it is healthy, so that failover moves replicas only at
    /// the lowest level that still has a healthy party; 0 once none is.
    fn subtree_weight(&self, c: usize) -> u64 {
        if self.healthy[c] > 0 {
            self.sums[c]
        } else {
            0
        }
    }
}

/// Divides `total` over the whole forest.
pub fn divide(
    topo: &Topology,
    chosen: &[bool],
    weight: &[u64],
    total: u32,
    trace: bool,
) -> Result<Assignment, ScheduleError> {
    divide_failover(topo, chosen, weight, &[], total, trace)
}

/// Divides `total` over the whole forest with the `failed` clusters taking
/// none (failover). What a failed cluster would have held is divided among
/// the other parties of the lowest level that still has a healthy one, with
/// the same Webster rules, so every other share stays as it was: a failed
/// leaf's siblings take its replicas, and only when its whole subtree has
/// failed does the level above re-divide.
pub fn divide_failover(
    topo: &Topology,
    chosen: &[bool],
    weight: &[u64],
    failed: &[bool],
    total: u32,
    trace: bool,
) -> Result<Assignment, ScheduleError> {
    divide_bounded(
        topo,
        chosen,
        weight,
        failed,
        total,
        trace,
        &Bound::default(),
    )
}

/// [`divide_failover`] under a [`Bound`]: with a capacity bound every
/// division is [`webster_bounded`] by what each party holds (a subtree
/// holds the sum of its clusters), so the subtree property still holds.
pub fn divide_bounded(
    topo: &Topology,
    chosen: &[bool],
    weight: &[u64],
    failed: &[bool],
    total: u32,
    trace: bool,
    bound: &Bound,
) -> Result<Assignment, ScheduleError> {
    let inputs = Inputs::new(topo, chosen, weight, failed, trace).with_bound(bound)?;
    let sums = &inputs.sums;
    let mut a = Assignment::empty(topo.len());
    if total == 0 {
        // Nothing to divide, unless limits ask for some.
        inputs.fit(topo.roots(), 0, bound)?;
        return Ok(a);
    }
    if !chosen.iter().any(|&c| c) {
        return Err(ScheduleError::NoClusters { total });
    }
    if topo.roots().iter().all(|&r| sums[r] == 0) {
        return Err(ScheduleError::AllWeightsZero { total });
    }
    let roots: Vec<(u64, usize)> = topo
        .roots()
        .iter()
        .map(|&r| (inputs.subtree_weight(r), r))
        .collect();
    if roots.iter().all(|(w, _)| *w == 0) {
        return Err(ScheduleError::AllFailed { total });
    }
    let (total, shortfall) = inputs.fit(topo.roots(), total, bound)?;
    a.shortfall = shortfall;
    let root_bounds: Option<(Vec<u64>, Vec<u64>)> = inputs.bounds.as_ref().map(|b| {
        (
            roots.iter().map(|&(_, r)| b.floor[r]).collect(),
            roots.iter().map(|&(_, r)| b.cap[r]).collect(),
        )
    });
    let seats = inputs.split(
        None,
        &roots,
        root_bounds.as_ref().map(|(f, _)| f.as_slice()),
        root_bounds.as_ref().map(|(_, c)| c.as_slice()),
        total,
    );
    if trace {
        a.divisions.push(Division {
            node: None,
            share: total,
            parties: roots
                .iter()
                .zip(&seats)
                .filter(|((_, r), _)| has_chosen(topo, chosen, *r))
                .map(|(&(w, r), &s)| Party {
                    cluster: r,
                    own: false,
                    weight: w,
                    seats: s,
                    failed: inputs.healthy[r] == 0 && sums[r] > 0,
                    floor: inputs.bounds.as_ref().map_or(0, |b| b.floor[r]),
                    cap: inputs
                        .bounds
                        .as_ref()
                        .map(|b| b.cap[r])
                        .filter(|&c| c != u64::MAX),
                })
                .collect(),
        });
    }
    for (&(_, r), &s) in roots.iter().zip(&seats) {
        inputs.descend(r, s, &mut a);
    }
    Ok(a)
}

/// Divides `share` over the subtree of `root` alone: the scheduler a parent
/// level runs for its own children, with the `failed` clusters of the
/// subtree taking none (failover inside it; may be empty). Equal, on that
/// subtree, to [`divide_failover`]'s result whenever `share` is what it gave
/// the subtree: failures inside a subtree that still has a healthy weighted
/// cluster never change its share, so a relay fails over among its own
/// clusters and nothing outside moves.
pub fn divide_subtree(
    topo: &Topology,
    chosen: &[bool],
    weight: &[u64],
    failed: &[bool],
    root: usize,
    share: u32,
    trace: bool,
) -> Result<Assignment, ScheduleError> {
    divide_subtree_bounded(
        topo,
        chosen,
        weight,
        failed,
        root,
        share,
        trace,
        &Bound::default(),
    )
}

/// [`divide_subtree`] under a [`Bound`]: equal, on the subtree, to
/// [`divide_bounded`] whenever `share` is what it gave the subtree.
#[allow(clippy::too_many_arguments)]
pub fn divide_subtree_bounded(
    topo: &Topology,
    chosen: &[bool],
    weight: &[u64],
    failed: &[bool],
    root: usize,
    share: u32,
    trace: bool,
    bound: &Bound,
) -> Result<Assignment, ScheduleError> {
    let inputs = Inputs::new(topo, chosen, weight, failed, trace).with_bound(bound)?;
    let mut a = Assignment::empty(topo.len());
    if share > 0 && inputs.sums[root] == 0 {
        return Err(if topo.subtree(root).iter().any(|&c| chosen[c]) {
            ScheduleError::AllWeightsZero { total: share }
        } else {
            ScheduleError::NoClusters { total: share }
        });
    }
    if share > 0 && inputs.healthy[root] == 0 {
        // The level above must divide around this subtree.
        return Err(ScheduleError::AllFailed { total: share });
    }
    // A relay's own failures can leave less room than its share.
    let (share, shortfall) = inputs.fit(&[root], share, bound)?;
    a.shortfall = shortfall;
    inputs.descend(root, share, &mut a);
    Ok(a)
}

fn has_chosen(topo: &Topology, chosen: &[bool], root: usize) -> bool {
    topo.subtree(root).iter().any(|&c| chosen[c])
}

impl Inputs<'_> {
    /// Divides `share` down the subtree of `root`, node by node.
    fn descend(&self, root: usize, share: u32, a: &mut Assignment) {
        let Inputs {
            topo,
            chosen,
            weight,
            ref sums,
            trace,
            ..
        } = *self;
        let mut stack = vec![(root, share)];
        let mut parties: Vec<(u64, usize)> = Vec::new();
        while let Some((node, share)) = stack.pop() {
            a.share[node] = share;
            if share == 0 && !trace {
                continue;
            }
            parties.clear();
            // The node's own party uses its own index as tie key, a child subtree
            // its child's index: all distinct, all in name order.
            let own = chosen[node];
            if own {
                let w = if self.failed(node) { 0 } else { weight[node] };
                parties.push((w, node));
            }
            let kids: Vec<usize> = topo
                .children(node)
                .iter()
                .copied()
                .filter(|&c| sums[c] > 0 || (trace && has_chosen(topo, chosen, c)))
                .collect();
            parties.extend(kids.iter().map(|&c| (self.subtree_weight(c), c)));
            let b = self.party_bounds(node, own, &kids);
            let seats = self.split(
                Some(node),
                &parties,
                b.as_ref().map(|(f, _)| f.as_slice()),
                b.as_ref().map(|(_, c)| c.as_slice()),
                share,
            );
            let mut at = 0;
            if own {
                a.replicas[node] = seats[0];
                at = 1;
            }
            if trace && (share > 0 || own) {
                let mut ps = Vec::with_capacity(parties.len());
                for (i, &(w, c)) in parties.iter().enumerate() {
                    let is_own = own && i == 0;
                    ps.push(Party {
                        cluster: c,
                        own: is_own,
                        weight: w,
                        seats: seats[i],
                        failed: if is_own {
                            self.failed(c) && weight[c] > 0
                        } else {
                            self.healthy[c] == 0 && sums[c] > 0
                        },
                        floor: b.as_ref().map_or(0, |(f, _)| f[i]),
                        cap: b.as_ref().map(|(_, cp)| cp[i]).filter(|&x| x != u64::MAX),
                    });
                }
                if ps.len() > 1 || !own {
                    a.divisions.push(Division {
                        node: Some(node),
                        share,
                        parties: ps,
                    });
                }
            }
            for (k, &c) in kids.iter().enumerate().rev() {
                stack.push((c, seats[at + k]));
            }
        }
    }
}

// ---------------------------------------------------------------- placement

/// Where a workload goes and how many replicas each cluster runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadPlacement {
    pub chosen: Vec<bool>,
    pub mode: ReplicaMode,
    /// Weight of each cluster (Divided only; 0 elsewhere).
    pub weight: Vec<u64>,
    /// Divided only.
    pub assignment: Option<Assignment>,
    /// Chosen, weighted clusters failed over (Divided only; may be empty).
    pub failed_over: Vec<bool>,
}

impl WorkloadPlacement {
    /// Replicas for cluster `c`: `Some(n)` when canopy sets it (Divided),
    /// `None` when the manifest's own value stands (Duplicated).
    pub fn replicas(&self, c: usize) -> Option<u32> {
        self.assignment.as_ref().map(|a| a.replicas[c])
    }

    /// Whether cluster `c` gets the workload's objects at all. Like
    /// Karmada, a Divided workload does not land on a chosen cluster that is
    /// given no replicas (weight 0, or too few replicas to go round): an
    /// empty Deployment and its config there would only be clutter. A
    /// cluster failed over keeps them, scaled to 0: taking them away would
    /// delete its Namespace and config, only to write them again when it
    /// recovers.
    pub fn lands_on(&self, c: usize) -> bool {
        self.chosen[c]
            && (self.assignment.as_ref().is_none_or(|a| a.replicas[c] > 0)
                || self.failed_over.get(c).copied().unwrap_or(false))
    }
}

/// The clusters a workload's placement chooses (selector and taints).
pub fn choose(checked: &Checked, w: &Workload) -> Vec<bool> {
    let p = &w.spec.placement;
    let picked = checked.labels.select(p.clusters.as_ref(), &checked.topo);
    (0..checked.topo.len())
        .map(|i| {
            picked.contains(i) && {
                let c = checked.cluster(i);
                c.spec.taints.is_empty() || select::blocking_taint(c, &p.tolerations).is_none()
            }
        })
        .collect()
}

/// Weight of every chosen cluster for a Divided workload. Without weights,
/// every chosen cluster weighs 1 (an even split).
pub fn weights(checked: &Checked, w: &Workload, chosen: &[bool]) -> Vec<u64> {
    let topo = &checked.topo;
    let spec = w.spec.placement.replicas.weights.as_ref();
    let rule_sets: Vec<(u64, fixedbitset::FixedBitSet)> = spec
        .and_then(|ws| ws.static_weights.as_ref())
        .map(|rules| {
            rules
                .iter()
                .map(|r| {
                    (
                        u64::from(r.weight),
                        checked.labels.select(Some(&r.clusters), topo),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let want = per_replica(spec.and_then(|ws| ws.per_replica.as_ref()));
    (0..topo.len())
        .map(|i| {
            if !chosen[i] {
                return 0;
            }
            match spec {
                None => 1,
                Some(ws) => match (&ws.static_weights, ws.dynamic) {
                    (Some(_), _) => rule_sets
                        .iter()
                        .filter(|(_, set)| set.contains(i))
                        .map(|(w, _)| *w)
                        .max()
                        .unwrap_or(0),
                    (None, Some(DynamicWeight::Capacity)) => {
                        fits(&checked.capacity_values(i), &want).0
                    }
                    (None, None) => 1,
                },
            }
        })
        .collect()
}

/// How many replicas fit in `cap`: the smallest `capacity / request` over the
/// resources a replica requests (one pod when nothing is said). A requested
/// resource the cluster does not declare fits nothing. Returns the weight and
/// the limiting resource, for `explain`.
pub fn capacity_weight(cap: &Capacity, per: Option<&Capacity>) -> (u64, &'static str) {
    fits(&CapacityValues::of(cap), &per_replica(per))
}

/// What one replica requests, as numbers: `per`, or one pod when nothing
/// is said.
fn per_replica(per: Option<&Capacity>) -> CapacityValues {
    match per {
        Some(p) => CapacityValues::of(p),
        None => CapacityValues {
            pods: Some(1.0),
            ..CapacityValues::default()
        },
    }
}

/// [`capacity_weight`] on numbers: the division asks it of every cluster.
fn fits(have: &CapacityValues, want: &CapacityValues) -> (u64, &'static str) {
    let mut best: Option<(u64, &'static str)> = None;
    for (name, have, want) in [
        ("cpu", have.cpu, want.cpu),
        ("memory", have.memory, want.memory),
        ("pods", have.pods, want.pods),
    ] {
        let Some(want) = want.filter(|v| *v > 0.0) else {
            continue;
        };
        let have = have.unwrap_or(0.0);
        let fit = (have / want + 1e-9).floor().max(0.0) as u64;
        if best.is_none_or(|(b, _)| fit < b) {
            best = Some((fit, name));
        }
    }
    best.unwrap_or((0, "pods"))
}

/// Whether workload `w`'s clusters take at most what fits in them: with
/// `weights: {dynamic: capacity}`, where a cluster's weight is just that.
pub fn capacity_bound(w: &Workload) -> bool {
    matches!(&w.spec.placement.replicas.weights,
        Some(ws) if ws.static_weights.is_none() && ws.dynamic == Some(DynamicWeight::Capacity))
}

/// The bound of workload `w`'s division: what fits in each cluster, with
/// `weights: {dynamic: capacity}`, where a cluster's weight is just that;
/// and its `limits`, per cluster.
pub fn bound_of(checked: &Checked, w: &Workload) -> Bound {
    let r = &w.spec.placement.replicas;
    let capacity = capacity_bound(w);
    let limits = (!r.limits.is_empty()).then(|| {
        let topo = &checked.topo;
        let mut out: Vec<(u32, Option<u32>)> = vec![(0, None); topo.len()];
        for l in &r.limits {
            let picked = checked.labels.select(Some(&l.clusters), topo);
            for c in picked.ones() {
                let (min, max) = &mut out[c];
                *min = (*min).max(l.min.unwrap_or(0));
                *max = match (*max, l.max) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
        }
        out
    });
    // Static weights bound by what each cluster that declares capacity fits.
    let caps = r
        .weights
        .as_ref()
        .filter(|ws| ws.static_weights.is_some() && ws.bound_by_capacity)
        .map(|ws| {
            let want = per_replica(ws.per_replica.as_ref());
            (0..checked.topo.len())
                .map(|c| {
                    let have = checked.capacity_values(c);
                    if have.declares_nothing() {
                        u64::MAX
                    } else {
                        fits(&have, &want).0
                    }
                })
                .collect()
        });
    // Calm: what the last apply gave each cluster (none recorded: fresh).
    let previous = (r.rescheduling == crate::core::model::Rescheduling::Calm)
        .then(|| {
            let all = checked.previous.all();
            let by = all.get(w.name())?;
            Some(
                (0..checked.topo.len())
                    .map(|c| by.get(checked.topo.name(c)).copied().unwrap_or(0))
                    .collect(),
            )
        })
        .flatten();
    Bound {
        capacity,
        place_what_fits: r.on_shortfall == OnShortfall::PlaceWhatFits,
        limits,
        caps,
        previous,
    }
}

/// Places workload `wi`: chooses clusters and, for Divided, divides its total
/// among them, the `failed` ones (failover; may be empty) taking none.
pub fn place(
    checked: &Checked,
    wi: usize,
    trace: bool,
    failed: &[bool],
) -> Result<WorkloadPlacement, ScheduleError> {
    place_as(checked, wi, trace, failed, true)
}

/// [`place`] as a fresh division would place it, whatever the workload's
/// rescheduling: what `explain` shows beside a calm division.
pub fn place_fresh(
    checked: &Checked,
    wi: usize,
    failed: &[bool],
) -> Result<WorkloadPlacement, ScheduleError> {
    place_as(checked, wi, false, failed, false)
}

fn place_as(
    checked: &Checked,
    wi: usize,
    trace: bool,
    failed: &[bool],
    calm: bool,
) -> Result<WorkloadPlacement, ScheduleError> {
    let w = &checked.fleet.workloads[wi];
    let chosen = choose(checked, w);
    let mode = w.spec.placement.replicas.mode;
    match mode {
        ReplicaMode::Duplicated => Ok(WorkloadPlacement {
            weight: vec![0; chosen.len()],
            chosen,
            mode,
            assignment: None,
            failed_over: Vec::new(),
        }),
        ReplicaMode::Divided => {
            let weight = weights(checked, w, &chosen);
            let total = checked.facts[wi].total.unwrap_or(0);
            let mut bound = bound_of(checked, w);
            if !calm {
                bound.previous = None;
            }
            let assignment = divide_bounded(
                &checked.topo,
                &chosen,
                &weight,
                failed,
                total,
                trace,
                &bound,
            )?;
            let failed_over = (0..chosen.len())
                .map(|c| chosen[c] && weight[c] > 0 && failed.get(c).copied().unwrap_or(false))
                .collect();
            Ok(WorkloadPlacement {
                chosen,
                mode,
                weight,
                failed_over,
                assignment: Some(assignment),
            })
        }
    }
}

/// Places workload `wi` on the subtree of `root` alone, as a relay does for
/// the clusters it reconciles: the clusters chosen there, and for Divided,
/// the `share` its parent level gave the subtree divided as [`place`]
/// divides it. Clusters outside the subtree are not this level's and get
/// nothing.
pub fn place_subtree(
    checked: &Checked,
    wi: usize,
    root: usize,
    share: u32,
    failed: &[bool],
) -> Result<WorkloadPlacement, ScheduleError> {
    let w = &checked.fleet.workloads[wi];
    let topo = &checked.topo;
    let mut chosen = choose(checked, w);
    for (c, ch) in chosen.iter_mut().enumerate() {
        *ch = *ch && topo.in_subtree(c, root);
    }
    let mode = w.spec.placement.replicas.mode;
    let (weight, assignment) = match mode {
        ReplicaMode::Duplicated => (vec![0; chosen.len()], None),
        ReplicaMode::Divided => {
            let weight = weights(checked, w, &chosen);
            let a = divide_subtree_bounded(
                topo,
                &chosen,
                &weight,
                failed,
                root,
                share,
                false,
                &bound_of(checked, w),
            )?;
            (weight, Some(a))
        }
    };
    let failed_over = match mode {
        ReplicaMode::Duplicated => Vec::new(),
        ReplicaMode::Divided => (0..chosen.len())
            .map(|c| chosen[c] && weight[c] > 0 && failed.get(c).copied().unwrap_or(false))
            .collect(),
    };
    Ok(WorkloadPlacement {
        chosen,
        mode,
        weight,
        assignment,
        failed_over,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn webster_textbook_example() {
        // Weights 53/24/23 with 7 seats: quotients 53, 24, 23, 17.7, 10.6,
        // 8, 7.7 win, so Sainte-Laguë gives 3/2/2.
        assert_eq!(webster(&[(53, 0), (24, 1), (23, 2)], 7), vec![3, 2, 2]);
        // Ties: equal weights, 1 seat → the smaller tie key.
        assert_eq!(webster(&[(5, 1), (5, 0)], 1), vec![0, 1]);
        // 3 vs 1 with 4 seats: A, then a tie at 1 = 3/3 = 1/1 won by B (fewer
        // seats), then A (1 > 1/3), then A (3/5 > 1/3).
        assert_eq!(webster(&[(3, 0), (1, 1)], 4), vec![3, 1]);
        assert_eq!(webster(&[(0, 0), (1, 1)], 3), vec![0, 3]);
        assert_eq!(webster(&[(0, 0)], 3), vec![0]);
    }

    #[test]
    fn webster_tie_prefers_fewer_seats() {
        // Weights 3 and 1, 2 seats: seat 1 → A (3 > 1). Seat 2: A has 3/3 = 1,
        // B has 1/1 = 1, a tie: B has fewer seats, so B wins.
        assert_eq!(webster(&[(3, 0), (1, 1)], 2), vec![1, 1]);
    }

    /// (name, parent) pairs sorted by name → topology.
    fn topo_of(pairs: &[(String, Option<String>)]) -> Topology {
        let v: Vec<(&str, Option<&str>)> = pairs
            .iter()
            .map(|(n, p)| (n.as_str(), p.as_deref()))
            .collect();
        Topology::build(&v).unwrap()
    }

    #[test]
    fn divides_down_the_tree() {
        // root(own 1) → {a(1) → {a1(1), a2(1)}, b(2)}
        let pairs: Vec<(String, Option<String>)> = vec![
            ("a".into(), Some("root".into())),
            ("a1".into(), Some("a".into())),
            ("a2".into(), Some("a".into())),
            ("b".into(), Some("root".into())),
            ("root".into(), None),
        ];
        let t = topo_of(&pairs);
        let chosen = vec![true; 5];
        let weight = vec![1, 1, 1, 2, 1];
        let a = divide(&t, &chosen, &weight, 12, true).unwrap();
        // Top: root subtree weight 6 gets 12. root divides 12 among own(1),
        // a(3), b(2) → 2, 6, 4. a divides 6 among own(1), a1(1), a2(1) → 2 each.
        assert_eq!(a.replicas, vec![2, 2, 2, 4, 2]);
        assert_eq!(a.replicas.iter().sum::<u32>(), 12);
        assert_eq!(a.share[0], 6);
    }

    #[test]
    fn all_zero_is_an_error() {
        let t = topo_of(&[("a".into(), None)]);
        assert_eq!(
            divide(&t, &[true], &[0], 3, false),
            Err(ScheduleError::AllWeightsZero { total: 3 })
        );
        assert_eq!(
            divide(&t, &[false], &[0], 3, false),
            Err(ScheduleError::NoClusters { total: 3 })
        );
        assert!(divide(&t, &[true], &[0], 0, false).is_ok());
    }

    #[test]
    fn divided_workloads_skip_clusters_without_replicas() {
        let t = topo_of(&[("a".into(), None), ("b".into(), Some("a".into()))]);
        let chosen = vec![true, true];
        let assignment = divide(&t, &chosen, &[0, 1], 2, false).unwrap();
        let p = WorkloadPlacement {
            chosen: chosen.clone(),
            mode: ReplicaMode::Divided,
            weight: vec![0, 1],
            failed_over: Vec::new(),
            assignment: Some(assignment),
        };
        assert!(!p.lands_on(0), "weight 0, no replicas");
        assert!(p.lands_on(1));
        let dup = WorkloadPlacement {
            chosen,
            mode: ReplicaMode::Duplicated,
            weight: vec![0, 0],
            assignment: None,
            failed_over: Vec::new(),
        };
        assert!(dup.lands_on(0) && dup.lands_on(1));
    }

    #[test]
    fn capacity_weights() {
        use crate::core::model::Quantity::Text;
        let cap = Capacity {
            cpu: Some(Text("16".into())),
            memory: Some(Text("64Gi".into())),
            pods: Some(Text("110".into())),
        };
        assert_eq!(capacity_weight(&cap, None), (110, "pods"));
        let per = Capacity {
            cpu: Some(Text("500m".into())),
            memory: Some(Text("4Gi".into())),
            pods: None,
        };
        assert_eq!(capacity_weight(&cap, Some(&per)), (16, "memory"));
        assert_eq!(capacity_weight(&Capacity::default(), None), (0, "pods"));
    }

    /// (name, parent) pairs sorted by name, chosen flags, weights, total.
    type Case = (Vec<(String, Option<String>)>, Vec<bool>, Vec<u64>, u32);

    /// A random forest: each node's parent is an earlier node or none.
    fn arb_forest() -> impl Strategy<Value = Case> {
        (2usize..40).prop_flat_map(|n| {
            (
                proptest::collection::vec(
                    proptest::option::weighted(0.85, any::<prop::sample::Index>()),
                    n,
                ),
                proptest::collection::vec(proptest::bool::weighted(0.7), n),
                proptest::collection::vec(0u64..6, n),
                0u32..200,
                Just(n),
            )
                .prop_map(|(parents, chosen, weight, total, n)| {
                    // Names with a random-looking but fixed order, so that index
                    // order and creation order differ.
                    let name = |i: usize| format!("c{:03}", (i * 7919) % 1000);
                    let mut pairs: Vec<(String, Option<String>)> = (0..n)
                        .map(|i| {
                            let p = if i == 0 {
                                None
                            } else {
                                parents[i].map(|ix| name(ix.index(i)))
                            };
                            (name(i), p)
                        })
                        .collect();
                    let mut idx: Vec<usize> = (0..n).collect();
                    idx.sort_by_key(|&i| pairs[i].0.clone());
                    let chosen: Vec<bool> = idx.iter().map(|&i| chosen[i]).collect();
                    let weight: Vec<u64> = idx.iter().map(|&i| weight[i]).collect();
                    pairs.sort();
                    (pairs, chosen, weight, total)
                })
        })
    }

    proptest! {
        #[test]
        fn sum_equals_total((pairs, chosen, weight, total) in arb_forest()) {
            let t = topo_of(&pairs);
            match divide(&t, &chosen, &weight, total, false) {
                Ok(a) => {
                    prop_assert_eq!(a.replicas.iter().map(|&r| u64::from(r)).sum::<u64>(), u64::from(total));
                    for i in 0..t.len() {
                        if !chosen[i] || weight[i] == 0 {
                            prop_assert_eq!(a.replicas[i], 0);
                        }
                    }
                }
                Err(ScheduleError::AllWeightsZero { .. }) => {
                    prop_assert!((0..t.len()).all(|i| !chosen[i] || weight[i] == 0));
                }
                Err(ScheduleError::NoClusters { .. }) => prop_assert!(!chosen.iter().any(|&c| c)),
                Err(ScheduleError::AllFailed { .. }) => prop_assert!(false, "nothing failed"),
                Err(
                    ScheduleError::Shortfall { .. }
                    | ScheduleError::LimitsConflict { .. }
                    | ScheduleError::BelowLimits { .. },
                ) => prop_assert!(false, "unbounded"),
            }
        }

        #[test]
        fn subtree_rerun_equals_full_run((pairs, chosen, weight, total) in arb_forest()) {
            let t = topo_of(&pairs);
            let Ok(full) = divide(&t, &chosen, &weight, total, false) else { return Ok(()) };
            for r in 0..t.len() {
                let sub = divide_subtree(&t, &chosen, &weight, &[], r, full.share[r], false);
                let sub = sub.expect("a share the full run gave is divisible");
                for &c in t.subtree(r) {
                    prop_assert_eq!(sub.replicas[c], full.replicas[c], "cluster {} under {}", t.name(c), t.name(r));
                }
            }
        }

        /// A relay fails over inside its subtree: with failures only there
        /// (and a healthy weighted cluster left in it), the full run's
        /// failover gives the subtree the share it had, divides it as the
        /// subtree's own re-run does, and moves nothing outside it.
        #[test]
        fn failover_inside_a_subtree_stays_inside_it(
            (pairs, chosen, weight, total) in arb_forest(),
            seed in any::<u64>(),
        ) {
            let t = topo_of(&pairs);
            let Ok(plain) = divide(&t, &chosen, &weight, total, false) else { return Ok(()) };
            for r in 0..t.len() {
                let failed: Vec<bool> = (0..t.len())
                    .map(|c| t.in_subtree(c, r) && (seed >> (c % 64)) & 1 == 1)
                    .collect();
                let healthy_left = t
                    .subtree(r)
                    .iter()
                    .any(|&c| chosen[c] && weight[c] > 0 && !failed[c]);
                if !healthy_left {
                    continue;
                }
                let full = divide_failover(&t, &chosen, &weight, &failed, total, false)
                    .expect("a healthy cluster is left");
                prop_assert_eq!(full.share[r], plain.share[r], "the share of {}", t.name(r));
                let sub = divide_subtree(&t, &chosen, &weight, &failed, r, full.share[r], false)
                    .expect("the subtree has a healthy weighted cluster");
                for (c, &down) in failed.iter().enumerate() {
                    if t.in_subtree(c, r) {
                        prop_assert_eq!(sub.replicas[c], full.replicas[c], "{} under {}", t.name(c), t.name(r));
                        if down {
                            prop_assert_eq!(full.replicas[c], 0);
                        }
                    } else {
                        prop_assert_eq!(full.replicas[c], plain.replicas[c], "{} outside {} moved", t.name(c), t.name(r));
                    }
                }
            }
        }

        #[test]
        fn order_of_input_does_not_matter((pairs, chosen, weight, total) in arb_forest(), seed in any::<u64>()) {
            // Present the same clusters in another order; after the canonical
            // sort by name (what the loader does) the result by name is equal.
            let mut rows: Vec<(String, Option<String>, bool, u64)> = pairs.iter().cloned()
                .zip(chosen.iter().zip(&weight))
                .map(|((n, p), (c, w))| (n, p, *c, *w))
                .collect();
            let k = (seed as usize) % rows.len();
            rows.rotate_left(k);
            rows.reverse();
            rows.sort_by(|a, b| a.0.cmp(&b.0));
            let pairs2: Vec<(String, Option<String>)> = rows.iter().map(|r| (r.0.clone(), r.1.clone())).collect();
            let chosen2: Vec<bool> = rows.iter().map(|r| r.2).collect();
            let weight2: Vec<u64> = rows.iter().map(|r| r.3).collect();
            let t1 = topo_of(&pairs);
            let t2 = topo_of(&pairs2);
            let a = divide(&t1, &chosen, &weight, total, false);
            let b = divide(&t2, &chosen2, &weight2, total, false);
            match (a, b) {
                (Ok(a), Ok(b)) => {
                    for i in 0..t1.len() {
                        let j = t2.get(t1.name(i)).unwrap();
                        prop_assert_eq!(a.replicas[i], b.replicas[j]);
                    }
                }
                (Err(x), Err(y)) => prop_assert_eq!(x, y),
                _ => prop_assert!(false, "one ordering failed and the other did not"),
            }
        }

        #[test]
        fn failover_keeps_the_total_and_gives_failed_clusters_nothing(
            (pairs, chosen, weight, total) in arb_forest(),
            failed in proptest::collection::vec(proptest::bool::weighted(0.2), 40),
        ) {
            let t = topo_of(&pairs);
            let failed = &failed[..t.len()];
            if divide(&t, &chosen, &weight, total, false).is_err() {
                return Ok(());
            }
            match divide_failover(&t, &chosen, &weight, failed, total, false) {
                Ok(a) => {
                    prop_assert_eq!(a.replicas.iter().map(|&r| u64::from(r)).sum::<u64>(), u64::from(total));
                    for (i, _) in failed.iter().enumerate().filter(|(_, f)| **f) {
                        prop_assert_eq!(a.replicas[i], 0, "failed {} holds replicas", t.name(i));
                    }
                }
                Err(e) => {
                    prop_assert_eq!(e, ScheduleError::AllFailed { total });
                    prop_assert!((0..t.len()).all(|i| !chosen[i] || weight[i] == 0 || failed[i]));
                }
            }
        }

        #[test]
        fn failover_moves_replicas_only_below_the_lowest_healthy_level(
            (pairs, chosen, weight, total) in arb_forest(),
            pick in any::<prop::sample::Index>(),
        ) {
            let t = topo_of(&pairs);
            let Ok(before) = divide(&t, &chosen, &weight, total, false) else { return Ok(()) };
            let f = pick.index(t.len());
            let mut failed = vec![false; t.len()];
            failed[f] = true;
            let Ok(after) = divide_failover(&t, &chosen, &weight, &failed, total, false) else {
                return Ok(());
            };
            // The lowest ancestor-or-self of f whose subtree keeps a healthy
            // weighted cluster: outside it, nothing moves.
            let healthy_in = |r: usize| t.subtree(r).iter().any(|&c| c != f && chosen[c] && weight[c] > 0);
            let mut level = Some(f);
            while let Some(l) = level {
                if healthy_in(l) {
                    break;
                }
                level = t.parent(l);
            }
            for c in 0..t.len() {
                // No healthy level in f's tree: the top re-divides.
                let inside = level.is_none_or(|l| t.in_subtree(c, l));
                if !inside {
                    prop_assert_eq!(before.replicas[c], after.replicas[c], "{} moved", t.name(c));
                }
            }
        }

        #[test]
        fn adding_a_cluster_elsewhere_keeps_unaffected_subtrees(
            (pairs, chosen, weight, total) in arb_forest(),
            parent_pick in any::<prop::sample::Index>(),
            new_weight in 1u64..6,
        ) {
            let t = topo_of(&pairs);
            let Ok(before) = divide(&t, &chosen, &weight, total, false) else { return Ok(()) };
            // Add a chosen leaf "zz-new" under a random existing cluster.
            let parent = pairs[parent_pick.index(pairs.len())].0.clone();
            let mut pairs2 = pairs.clone();
            pairs2.push(("zz-new".into(), Some(parent.clone())));
            let t2 = topo_of(&pairs2);
            let mut chosen2 = chosen.clone();
            chosen2.push(true);
            let mut weight2 = weight.clone();
            weight2.push(new_weight);
            let after = divide(&t2, &chosen2, &weight2, total, false).unwrap();
            let new = t2.get("zz-new").unwrap();
            for r in 0..t.len() {
                let r2 = t2.get(t.name(r)).unwrap();
                if t2.in_subtree(new, r2) || before.share[r] != after.share[r2] {
                    continue;
                }
                for &c in t.subtree(r) {
                    let c2 = t2.get(t.name(c)).unwrap();
                    prop_assert_eq!(before.replicas[c], after.replicas[c2]);
                }
            }
        }
    }

    /// Three clusters that each fit 3 replicas and a total of 12: an error
    /// that says what fits where; with `PlaceWhatFits`, 9 placed; with a
    /// total that fits, no cluster over its bound and the overflow of a
    /// small one taken by the others.
    #[test]
    fn capacity_bounds_the_division() {
        // root → {a, b, c}, weights (replicas that fit) 3, 3, 3; root none.
        let pairs: Vec<(String, Option<String>)> = ["a", "b", "c", "root"]
            .iter()
            .map(|n| (n.to_string(), (*n != "root").then(|| "root".to_string())))
            .collect();
        let t = topo_of(&pairs);
        let at = |n: &str| t.get(n).unwrap();
        let mut chosen = vec![true; t.len()];
        chosen[at("root")] = false;
        let mut weight = vec![3u64; t.len()];
        weight[at("root")] = 0;
        let strict = &Bound::capacity(false);
        let err = divide_bounded(&t, &chosen, &weight, &[], 12, false, strict).unwrap_err();
        assert_eq!(
            err.to_string(),
            "12 replicas do not fit: the chosen clusters hold 9 (a fits 3, b fits 3, c fits 3)"
        );
        let lenient = &Bound::capacity(true);
        let a = divide_bounded(&t, &chosen, &weight, &[], 12, false, lenient).unwrap();
        assert_eq!(a.replicas.iter().sum::<u32>(), 9);
        assert_eq!(a.shortfall, Some((12, 9)));
        // Unbounded, as before: 4 each, more than fits.
        assert_eq!(
            divide(&t, &chosen, &weight, 12, false).unwrap().replicas[at("a")],
            4
        );
        // a fits 1, b and c 5: 9 replicas weighted 1:5:5 would give a 1 (fine),
        // but 10 by weight give b and c 5 each, a 0; with a bound of 1 on a
        // and 20 replicas, a takes 1, and b and c take 5 each only: 11 fit.
        weight[at("a")] = 1;
        weight[at("b")] = 5;
        weight[at("c")] = 5;
        let a = divide_bounded(&t, &chosen, &weight, &[], 11, false, strict).unwrap();
        assert_eq!(
            (
                a.replicas[at("a")],
                a.replicas[at("b")],
                a.replicas[at("c")]
            ),
            (1, 5, 5)
        );
        assert!(divide_bounded(&t, &chosen, &weight, &[], 12, false, strict).is_err());
    }

    proptest! {
        /// Under a capacity bound, for random forests, weights and totals
        /// that fit: no cluster takes more than its weight, the total is
        /// placed, and a subtree re-run with its share gives the full run's
        /// answer (the property relays rely on). A total that does not fit
        /// is an error that says how many fit, or with `PlaceWhatFits`
        /// exactly that many placed.
        #[test]
        fn bounded_divisions_hold_their_bounds_and_the_subtree_property(
            (pairs, chosen, weight, _) in arb_forest(),
            extra in 0u32..20,
        ) {
            let t = topo_of(&pairs);
            let fits: u64 = (0..t.len()).filter(|&c| chosen[c]).map(|c| weight[c]).sum();
            prop_assume!(fits > 0);
            let strict = &Bound::capacity(false);
            for total in [fits as u32 / 2, fits as u32] {
                let a = divide_bounded(&t, &chosen, &weight, &[], total, false, strict).unwrap();
                prop_assert_eq!(a.replicas.iter().sum::<u32>(), total);
                for c in 0..t.len() {
                    let bound = if chosen[c] { weight[c] } else { 0 };
                    prop_assert!(u64::from(a.replicas[c]) <= bound, "{} over its bound", t.name(c));
                }
                for c in 0..t.len() {
                    let sub = divide_subtree_bounded(&t, &chosen, &weight, &[], c, a.share[c], false, strict);
                    let Ok(sub) = sub else { prop_assert_eq!(a.share[c], 0); continue };
                    for &d in t.subtree(c) {
                        prop_assert_eq!(sub.replicas[d], a.replicas[d], "under {}", t.name(c));
                    }
                }
            }
            let over = fits as u32 + 1 + extra;
            match divide_bounded(&t, &chosen, &weight, &[], over, false, strict) {
                Err(ScheduleError::Shortfall { fits: f, .. }) => prop_assert_eq!(f, fits),
                other => prop_assert!(false, "{:?}", other.map(|a| a.replicas)),
            }
            let lenient = &Bound::capacity(true);
            let a = divide_bounded(&t, &chosen, &weight, &[], over, false, lenient).unwrap();
            prop_assert_eq!(u64::from(a.replicas.iter().sum::<u32>()), fits);
            prop_assert_eq!(a.shortfall, Some((over, fits as u32)));
        }
    }

    /// Limits: at least 4 in each region and at most 3 on us-a: the small
    /// region gets its minimum, us-a stops at 3 and us-b takes the rest.
    /// Conflicting limits, and a total below the minimums, are errors.
    #[test]
    fn limits_bound_each_subtree() {
        let pairs: Vec<(String, Option<String>)> = [
            ("eu", Some("root")),
            ("eu-a", Some("eu")),
            ("eu-b", Some("eu")),
            ("root", None),
            ("us", Some("root")),
            ("us-a", Some("us")),
            ("us-b", Some("us")),
        ]
        .iter()
        .map(|(n, p)| (n.to_string(), p.map(str::to_string)))
        .collect();
        let t = topo_of(&pairs);
        let at = |n: &str| t.get(n).unwrap();
        let leaves = ["eu-a", "eu-b", "us-a", "us-b"];
        let chosen: Vec<bool> = (0..t.len()).map(|c| leaves.contains(&t.name(c))).collect();
        let mut weight = vec![0u64; t.len()];
        for (n, w) in [("eu-a", 1), ("eu-b", 1), ("us-a", 10), ("us-b", 10)] {
            weight[at(n)] = w;
        }
        let plain = divide(&t, &chosen, &weight, 12, false).unwrap();
        assert_eq!(plain.share[at("eu")], 1, "by weight alone eu gets 1");
        let mut limits = vec![(0u32, None); t.len()];
        limits[at("eu")].0 = 4;
        limits[at("us")].0 = 4;
        limits[at("us-a")].1 = Some(3);
        let bound = Bound {
            limits: Some(limits.clone()),
            ..Bound::default()
        };
        let a = divide_bounded(&t, &chosen, &weight, &[], 12, false, &bound).unwrap();
        let got: Vec<u32> = leaves.iter().map(|n| a.replicas[at(n)]).collect();
        assert_eq!(got, vec![2, 2, 3, 5]);
        let err = divide_bounded(&t, &chosen, &weight, &[], 6, false, &bound).unwrap_err();
        assert_eq!(
            err.to_string(),
            "6 replicas are fewer than the limits' minimums need (8)"
        );
        let mut conflict = limits;
        conflict[at("us-a")].0 = 5;
        let bound = Bound {
            limits: Some(conflict),
            ..Bound::default()
        };
        let err = divide_bounded(&t, &chosen, &weight, &[], 12, false, &bound).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the limits of us-a's subtree cannot all hold: it needs at least 5 replicas and takes at most 3"
        );
    }

    proptest! {
        /// Random forests with random limits: a division that succeeds
        /// places the total, keeps every healthy subtree within its limits
        /// and every cluster within its maximum, and a subtree re-run with
        /// its share gives the same answer.
        #[test]
        fn limits_always_hold_and_keep_the_subtree_property(
            (pairs, chosen, weight, total) in arb_forest(),
            mins in proptest::collection::vec(proptest::option::weighted(0.3, 0u32..4), 40),
            maxs in proptest::collection::vec(proptest::option::weighted(0.3, 0u32..12), 40),
        ) {
            let t = topo_of(&pairs);
            let limits: Vec<(u32, Option<u32>)> =
                (0..t.len()).map(|c| (mins[c].unwrap_or(0), maxs[c])).collect();
            let bound = Bound { limits: Some(limits.clone()), ..Bound::default() };
            let Ok(a) = divide_bounded(&t, &chosen, &weight, &[], total, false, &bound) else {
                return Ok(());
            };
            prop_assert_eq!(a.replicas.iter().sum::<u32>(), total);
            for (c, &(min, max)) in limits.iter().enumerate() {
                let sub: u32 = t.subtree(c).iter().map(|&d| a.replicas[d]).sum();
                let weighted = t.subtree(c).iter().any(|&d| chosen[d] && weight[d] > 0);
                if weighted {
                    prop_assert!(sub >= min, "{} holds {} < min {}", t.name(c), sub, min);
                }
                if let Some(max) = max {
                    prop_assert!(sub <= max, "{} holds {} > max {}", t.name(c), sub, max);
                }
                let again = divide_subtree_bounded(&t, &chosen, &weight, &[], c, a.share[c], false, &bound);
                if let Ok(again) = again {
                    for &d in t.subtree(c) {
                        prop_assert_eq!(again.replicas[d], a.replicas[d]);
                    }
                }
            }
        }
    }

    fn calm(previous: Vec<u32>) -> Bound {
        Bound {
            previous: Some(previous),
            ..Bound::default()
        }
    }

    #[test]
    fn calm_keeps_what_parties_held_and_moves_only_the_difference() {
        // Fresh, 7 over weights 3:2:2 is 3/2/2; from 1/4/2 held before,
        // 2 more go to the first (3/3 = 1, then 3/5 over 2/5 for the last),
        // 2 fewer come off the second (its 4th seat: 2/7, then 2/5 vs the
        // first's 3/1 and the last's 2/3).
        let p = [(3, 0), (2, 1), (2, 2)];
        assert_eq!(calm_split(&p, None, None, 7, &[0, 0, 0]), vec![3, 2, 2]);
        assert_eq!(calm_split(&p, None, None, 7, &[1, 4, 2]), vec![1, 4, 2]);
        assert_eq!(calm_split(&p, None, None, 9, &[1, 4, 2]), vec![3, 4, 2]);
        assert_eq!(calm_split(&p, None, None, 5, &[1, 4, 2]), vec![1, 2, 2]);
        // A party with weight 0 (failed, or no longer weighed) gives up
        // what it held; a cap below what it held is kept.
        let p0 = [(3, 0), (0, 1), (2, 2)];
        assert_eq!(calm_split(&p0, None, None, 7, &[1, 4, 2]), vec![4, 0, 3]);
        assert_eq!(
            calm_split(&p, None, Some(&[9, 2, 9]), 7, &[1, 4, 2]),
            vec![3, 2, 2]
        );
        // A floor that keeping cannot meet: the fresh division.
        assert_eq!(
            calm_split(&p, Some(&[0, 0, 5]), None, 7, &[4, 3, 0]),
            webster_bounded(&p, Some(&[0, 0, 5]), None, 7)
        );
    }

    proptest! {
        /// Calm divisions over random forests: the total is placed; with
        /// nothing held before it is the fresh division; and when a new
        /// cluster joins one subtree with the same total, no cluster moves
        /// (the newcomer takes none until the total grows).
        #[test]
        fn calm_divisions_place_the_total_and_move_nothing_needless(
            (pairs, chosen, weight, total) in arb_forest(),
            grow in 0u32..30,
        ) {
            let t = topo_of(&pairs);
            let Ok(fresh) = divide(&t, &chosen, &weight, total, false) else { return Ok(()) };
            let none = divide_bounded(&t, &chosen, &weight, &[], total, false, &calm(vec![0; t.len()])).unwrap();
            prop_assert_eq!(&none.replicas, &fresh.replicas);
            // The same total again: nothing moves.
            let same = divide_bounded(&t, &chosen, &weight, &[], total, false, &calm(fresh.replicas.clone())).unwrap();
            prop_assert_eq!(&same.replicas, &fresh.replicas);
            // A larger total: the sum holds and no weighted cluster loses.
            let more = divide_bounded(&t, &chosen, &weight, &[], total + grow, false, &calm(fresh.replicas.clone())).unwrap();
            prop_assert_eq!(more.replicas.iter().map(|&r| u64::from(r)).sum::<u64>(), u64::from(total + grow));
            for c in 0..t.len() {
                prop_assert!(more.replicas[c] >= fresh.replicas[c], "cluster {} lost replicas", c);
            }
            // A smaller total: the sum holds and no cluster gains.
            let fewer = total.saturating_sub(grow);
            let less = divide_bounded(&t, &chosen, &weight, &[], fewer, false, &calm(fresh.replicas.clone())).unwrap();
            prop_assert_eq!(less.replicas.iter().map(|&r| u64::from(r)).sum::<u64>(), u64::from(fewer));
            for c in 0..t.len() {
                prop_assert!(less.replicas[c] <= fresh.replicas[c], "cluster {} gained replicas", c);
            }
            // A newcomer under the first chosen cluster, same total: the
            // old clusters keep theirs exactly.
            let Some(at) = (0..t.len()).find(|&c| chosen[c] && weight[c] > 0) else { return Ok(()) };
            let mut pairs2 = pairs.clone();
            pairs2.push(("zz-new".into(), Some(t.name(at).to_string())));
            let t2 = topo_of(&pairs2);
            let map = |v: &Vec<bool>| -> Vec<bool> { (0..t2.len()).map(|c| t.get(t2.name(c)).is_none_or(|o| v[o])).collect() };
            let chosen2 = map(&chosen);
            let weight2: Vec<u64> = (0..t2.len()).map(|c| t.get(t2.name(c)).map_or(1, |o| weight[o])).collect();
            let prev2: Vec<u32> = (0..t2.len()).map(|c| t.get(t2.name(c)).map_or(0, |o| fresh.replicas[o])).collect();
            let joined = divide_bounded(&t2, &chosen2, &weight2, &[], total, false, &calm(prev2.clone())).unwrap();
            prop_assert_eq!(joined.replicas, prev2);
        }
    }
}
