//! `checkout.line_items` as a flow problem.
//!
//! Units flow from each cart SKU (capacity: its quantity) to every requirement that reveals that
//! SKU among its acceptable items, and on to the sink (capacity: the requirement's quantity).
//! The constraint holds only when the maximum flow equals both the total required quantity and
//! the total cart quantity: every requirement met in full, every cart unit accounted for, none
//! used twice. A requirement with no revealed acceptable item matches nothing.

use std::collections::{BTreeMap, VecDeque};

use super::constraint::LineItemRequirement;

/// Most distinct SKUs or requirements we evaluate (bounds the work on hostile input).
const MAX_NODES: usize = 512;

/// One line of the merchant's cart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CartLine {
    /// The item (SKU) id.
    pub item_id: String,
    /// How many units.
    pub quantity: u64,
}

/// True when the cart satisfies the requirements exactly.
pub fn satisfied(requirements: &[LineItemRequirement], cart: &[CartLine]) -> bool {
    let mut skus: BTreeMap<&str, u64> = BTreeMap::new();
    for line in cart {
        let Some(q) = skus
            .get(line.item_id.as_str())
            .copied()
            .unwrap_or(0)
            .checked_add(line.quantity)
        else {
            return false;
        };
        skus.insert(&line.item_id, q);
    }
    let cart_total = skus.values().try_fold(0u64, |acc, q| acc.checked_add(*q));
    let required = requirements
        .iter()
        .try_fold(0u64, |acc, r| acc.checked_add(r.quantity));
    let (Some(cart_total), Some(required)) = (cart_total, required) else {
        return false;
    };
    if cart_total == 0 || cart_total != required || skus.len() + requirements.len() > MAX_NODES {
        return false;
    }
    max_flow(&build(&skus, requirements)) == required
}

/// Nodes: 0 source, 1..=S SKUs, S+1..=S+R requirements, S+R+1 sink.
fn build(skus: &BTreeMap<&str, u64>, requirements: &[LineItemRequirement]) -> Graph {
    let (s, r) = (skus.len(), requirements.len());
    let sink = s + r + 1;
    let mut g = Graph::new(sink + 1);
    for (i, (sku, qty)) in skus.iter().enumerate() {
        g.add_edge(0, 1 + i, *qty);
        for (j, req) in requirements.iter().enumerate() {
            if req
                .acceptable_items
                .iter()
                .any(|a| a.id.as_bytes() == sku.as_bytes())
            {
                g.add_edge(1 + i, 1 + s + j, *qty);
            }
        }
    }
    for (j, req) in requirements.iter().enumerate() {
        g.add_edge(1 + s + j, sink, req.quantity);
    }
    g
}

struct Edge {
    to: usize,
    cap: u64,
}

struct Graph {
    edges: Vec<Edge>,
    adj: Vec<Vec<usize>>,
}

impl Graph {
    fn new(n: usize) -> Self {
        Graph {
            edges: Vec::new(),
            adj: vec![Vec::new(); n],
        }
    }

    fn add_edge(&mut self, from: usize, to: usize, cap: u64) {
        self.adj[from].push(self.edges.len());
        self.edges.push(Edge { to, cap });
        self.adj[to].push(self.edges.len());
        self.edges.push(Edge { to: from, cap: 0 });
    }
}

/// Edmonds–Karp: shortest augmenting paths, each pushing its bottleneck.
fn max_flow(g: &Graph) -> u64 {
    let n = g.adj.len();
    let (source, sink) = (0, n - 1);
    let mut cap: Vec<u64> = g.edges.iter().map(|e| e.cap).collect();
    let mut total = 0u64;
    loop {
        let mut via = vec![usize::MAX; n];
        via[source] = usize::MAX - 1;
        let mut queue = VecDeque::from([source]);
        while let Some(u) = queue.pop_front() {
            for &e in &g.adj[u] {
                let v = g.edges[e].to;
                if cap[e] > 0 && via[v] == usize::MAX {
                    via[v] = e;
                    queue.push_back(v);
                }
            }
        }
        if via[sink] == usize::MAX {
            return total;
        }
        let mut push = u64::MAX;
        let mut v = sink;
        while v != source {
            let e = via[v];
            push = push.min(cap[e]);
            v = g.edges[e ^ 1].to;
        }
        let mut v = sink;
        while v != source {
            let e = via[v];
            cap[e] -= push;
            cap[e ^ 1] += push;
            v = g.edges[e ^ 1].to;
        }
        total += push;
    }
}

#[cfg(test)]
mod tests {
    use super::super::constraint::AcceptableItem;
    use super::*;

    fn req(id: &str, items: &[&str], quantity: u64) -> LineItemRequirement {
        let acceptable_items = items
            .iter()
            .map(|i| AcceptableItem {
                id: (*i).into(),
                title: String::new(),
            })
            .collect();
        LineItemRequirement {
            id: id.into(),
            acceptable_items,
            quantity,
        }
    }

    fn cart(lines: &[(&str, u64)]) -> Vec<CartLine> {
        lines
            .iter()
            .map(|(i, q)| CartLine {
                item_id: (*i).into(),
                quantity: *q,
            })
            .collect()
    }

    #[test]
    fn exact_match_is_satisfied() {
        let reqs = [
            req("boot", &["boot42", "boot42w"], 1),
            req("sock", &["sock"], 2),
        ];
        assert!(satisfied(&reqs, &cart(&[("boot42", 1), ("sock", 2)])));
    }

    #[test]
    fn short_quantity_is_not_satisfied() {
        assert!(!satisfied(
            &[req("boot", &["boot42"], 2)],
            &cart(&[("boot42", 1)])
        ));
    }

    #[test]
    fn extra_item_is_not_satisfied() {
        let reqs = [req("boot", &["boot42"], 1)];
        assert!(!satisfied(&reqs, &cart(&[("boot42", 1), ("jacket", 1)])));
    }

    #[test]
    fn withheld_acceptable_items_match_nothing() {
        assert!(!satisfied(&[req("any", &[], 1)], &cart(&[("giftcard", 1)])));
    }

    #[test]
    fn one_unit_cannot_serve_two_requirements() {
        let reqs = [req("a", &["x"], 1), req("b", &["x"], 1)];
        assert!(!satisfied(&reqs, &cart(&[("x", 1)])));
        assert!(satisfied(&reqs, &cart(&[("x", 2)])));
    }

    #[test]
    fn greedy_order_does_not_matter() {
        // A greedy matcher that gives `x` to `a` first fails; the flow reroutes.
        let reqs = [req("a", &["x", "y"], 1), req("b", &["x"], 1)];
        assert!(satisfied(&reqs, &cart(&[("x", 1), ("y", 1)])));
    }

    #[test]
    fn empty_cart_and_overflow_are_not_satisfied() {
        assert!(!satisfied(&[req("a", &["x"], 1)], &[]));
        let reqs = [req("a", &["x"], u64::MAX), req("b", &["y"], 1)];
        assert!(!satisfied(&reqs, &cart(&[("x", u64::MAX), ("y", 1)])));
    }

    #[test]
    fn large_quantities_take_few_augmentations() {
        let reqs = [req("a", &["x"], 1_000_000_000)];
        assert!(satisfied(&reqs, &cart(&[("x", 999_999_999), ("x", 1)])));
    }
}
