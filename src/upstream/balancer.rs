//! Per-worker balancer state: picks a node for each try of a request.
//!
//! Nodes are grouped by `priority`, highest first; a group is used only while it has an untried
//! node with a weight above 0, so lower groups take over when the higher ones fail (APISIX's
//! priority balancer). Within a group the upstream's `type` decides.

use std::time::{Duration, Instant};

use super::UpstreamDef;
use crate::config::resource::BalancerType;

/// Virtual points on the hash ring per unit of weight (as resty.chash uses).
const POINTS_PER_WEIGHT: u32 = 160;
/// Upper bound on ring size, so a huge weight cannot make a huge ring.
const MAX_POINTS: usize = 100_000;
/// How fast an EWMA latency forgets (APISIX uses 10 s).
const EWMA_DECAY: Duration = Duration::from_secs(10);
/// Latency charged to a failed try, so failing nodes score badly under EWMA.
const EWMA_FAILURE_PENALTY: Duration = Duration::from_secs(1);

/// Balancer state for one upstream, owned by one worker.
#[derive(Debug)]
pub struct Picker {
    /// Node indexes per priority group, highest priority first.
    groups: Vec<Vec<usize>>,
    /// Requests in flight per node.
    active: Vec<u32>,
    state: State,
}

#[derive(Debug)]
enum State {
    /// Smooth weighted round-robin: the current weight per node.
    RoundRobin(Vec<i64>),
    /// A ring per group: sorted (point, node).
    Chash(Vec<Vec<(u32, usize)>>),
    Ewma(Vec<Ewma>),
    LeastConn {
        next: usize,
    },
}

#[derive(Debug, Clone, Copy)]
struct Ewma {
    /// Decayed latency in milliseconds.
    value: f64,
    stamp: Option<Instant>,
}

/// FNV-1a: small, fast and stable across processes and versions, so a key maps to the same
/// node on every worker and after restarts.
fn hash(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes {
        h ^= *b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    // Mix the low bits, which FNV leaves weak for short inputs.
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h
}

impl Picker {
    pub fn new(def: &UpstreamDef) -> Picker {
        let mut prios: Vec<i32> = def.nodes.iter().map(|n| n.priority).collect();
        prios.sort_unstable_by(|a, b| b.cmp(a));
        prios.dedup();
        let groups: Vec<Vec<usize>> = prios
            .iter()
            .map(|p| {
                (0..def.nodes.len())
                    .filter(|i| def.nodes[*i].priority == *p)
                    .collect()
            })
            .collect();
        let n = def.nodes.len();
        let state = match def.kind {
            BalancerType::Roundrobin => State::RoundRobin(vec![0; n]),
            BalancerType::Chash => State::Chash(
                groups
                    .iter()
                    .map(|g| {
                        let total: u64 = g.iter().map(|i| def.nodes[*i].weight as u64).sum();
                        let scale = if total * POINTS_PER_WEIGHT as u64 > MAX_POINTS as u64 {
                            MAX_POINTS as f64 / (total as f64 * POINTS_PER_WEIGHT as f64)
                        } else {
                            1.0
                        };
                        let mut ring = Vec::new();
                        for &i in g {
                            let node = &def.nodes[i];
                            let points =
                                ((node.weight * POINTS_PER_WEIGHT) as f64 * scale).ceil() as u32;
                            for p in 0..points {
                                let id = format!("{}:{}#{p}", node.host, node.port);
                                ring.push((hash(id.as_bytes()), i));
                            }
                        }
                        ring.sort_unstable();
                        ring
                    })
                    .collect(),
            ),
            BalancerType::Ewma => State::Ewma(vec![
                Ewma {
                    value: 0.0,
                    stamp: None
                };
                n
            ]),
            BalancerType::LeastConn => State::LeastConn { next: 0 },
        };
        Picker {
            groups,
            active: vec![0; n],
            state,
        }
    }

    /// Picks a node index into `def.nodes`, never one in `tried`; `None` when none is left.
    pub fn pick(
        &mut self,
        def: &UpstreamDef,
        hash_key: Option<&str>,
        tried: &[usize],
    ) -> Option<usize> {
        let usable =
            |i: &usize| def.nodes.get(*i).is_some_and(|n| n.weight > 0) && !tried.contains(i);
        for (gi, group) in self.groups.iter().enumerate() {
            if !group.iter().any(usable) {
                continue;
            }
            return match &mut self.state {
                State::RoundRobin(current) => {
                    let mut total = 0i64;
                    let mut best: Option<usize> = None;
                    for &i in group.iter().filter(|i| usable(i)) {
                        let w = def.nodes[i].weight as i64;
                        current[i] += w;
                        total += w;
                        if best.is_none_or(|b| current[i] > current[b]) {
                            best = Some(i);
                        }
                    }
                    let b = best?;
                    current[b] -= total;
                    Some(b)
                }
                State::Chash(rings) => {
                    let ring = &rings[gi];
                    let h = hash(hash_key.unwrap_or("").as_bytes());
                    let start = ring.partition_point(|(p, _)| *p < h);
                    (0..ring.len())
                        .map(|k| ring[(start + k) % ring.len()].1)
                        .find(|i| usable(i))
                }
                State::Ewma(stats) => {
                    let cands: Vec<usize> = group.iter().copied().filter(|i| usable(i)).collect();
                    let now = Instant::now();
                    let score = |i: usize| {
                        let e = stats[i];
                        let decayed = match e.stamp {
                            Some(t) => {
                                e.value
                                    * (-(now.duration_since(t).as_secs_f64())
                                        / EWMA_DECAY.as_secs_f64())
                                    .exp()
                            }
                            None => 0.0,
                        };
                        decayed * (self.active[i] as f64 + 1.0)
                    };
                    if cands.len() <= 2 {
                        return cands
                            .into_iter()
                            .min_by(|a, b| score(*a).total_cmp(&score(*b)));
                    }
                    // Power of two choices: two distinct random candidates, the better one wins.
                    let a = fastrand::usize(..cands.len());
                    let mut b = fastrand::usize(..cands.len() - 1);
                    if b >= a {
                        b += 1;
                    }
                    let (a, b) = (cands[a], cands[b]);
                    Some(if score(b) < score(a) { b } else { a })
                }
                State::LeastConn { next } => {
                    let cands: Vec<usize> = group.iter().copied().filter(|i| usable(i)).collect();
                    let score =
                        |i: usize| (self.active[i] as f64 + 1.0) / def.nodes[i].weight as f64;
                    let best = cands
                        .iter()
                        .map(|i| score(*i))
                        .fold(f64::INFINITY, f64::min);
                    let tied: Vec<usize> =
                        cands.into_iter().filter(|i| score(*i) <= best).collect();
                    // Rotate among equally loaded nodes so idle nodes share the load.
                    let pick = tied[*next % tied.len()];
                    *next = next.wrapping_add(1);
                    Some(pick)
                }
            };
        }
        None
    }

    /// A request to `node` started.
    pub fn on_start(&mut self, node: usize) {
        if let Some(a) = self.active.get_mut(node) {
            *a += 1;
        }
    }

    /// A request to `node` finished after `elapsed`; `failed` when it could not be served.
    pub fn on_finish(&mut self, node: usize, elapsed: Duration, failed: bool) {
        if let Some(a) = self.active.get_mut(node) {
            *a = a.saturating_sub(1);
        }
        if let State::Ewma(stats) = &mut self.state
            && let Some(e) = stats.get_mut(node)
        {
            let now = Instant::now();
            let rtt_ms = elapsed.as_secs_f64() * 1000.0;
            e.value = match e.stamp {
                None => rtt_ms,
                Some(t) => {
                    let w =
                        (-(now.duration_since(t).as_secs_f64()) / EWMA_DECAY.as_secs_f64()).exp();
                    e.value * w + rtt_ms * (1.0 - w)
                }
            };
            // A failure counts as at least the penalty at once: APISIX's EWMA only skips a failed
            // node for the current request, which keeps sending new requests to a dead node.
            if failed {
                e.value = e.value.max(EWMA_FAILURE_PENALTY.as_secs_f64() * 1000.0);
            }
            e.stamp = Some(now);
        }
    }
}
