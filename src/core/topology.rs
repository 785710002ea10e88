//! The cluster tree: parents, children, levels and subtree queries.
//!
//! Clusters are numbered by their position in the fleet's name-sorted list, so
//! every walk (children by name, roots by name) is deterministic. Subtree
//! membership is an O(1) interval test on pre-order numbers, which keeps
//! placement over 10,000 clusters linear.

use foldhash::HashMap;

/// A problem with the shape of the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopologyError {
    /// `cluster` names a parent that is not a cluster of the fleet.
    UnknownParent { cluster: usize, parent: String },
    /// These clusters' parents form a loop (listed in parent order, starting
    /// from the smallest name).
    Cycle { members: Vec<usize> },
}

#[derive(Debug, Clone)]
pub struct Topology {
    names: Vec<String>,
    index: HashMap<String, usize>,
    parent: Vec<Option<usize>>,
    children: Vec<Vec<usize>>,
    roots: Vec<usize>,
    depth: Vec<usize>,
    /// Pre-order position and the end (exclusive) of the subtree's interval.
    enter: Vec<usize>,
    exit: Vec<usize>,
    preorder: Vec<usize>,
    /// Clusters that joined (`canopy join`) rather than being written in
    /// Git: their weight counts in their parent's division only.
    joined: Vec<bool>,
}

impl Topology {
    /// Builds the forest from `(name, parent)` pairs whose names are unique
    /// and sorted. Every problem is returned, not only the first.
    pub fn build(clusters: &[(&str, Option<&str>)]) -> Result<Topology, Vec<TopologyError>> {
        let n = clusters.len();
        let names: Vec<String> = clusters.iter().map(|(n, _)| n.to_string()).collect();
        let index: HashMap<String, usize> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i))
            .collect();
        let mut errors = Vec::new();
        let mut parent = vec![None; n];
        for (i, (_, p)) in clusters.iter().enumerate() {
            if let Some(p) = p {
                match index.get(*p) {
                    Some(&pi) => parent[i] = Some(pi),
                    None => errors.push(TopologyError::UnknownParent {
                        cluster: i,
                        parent: p.to_string(),
                    }),
                }
            }
        }
        // Cycle detection: 0 = unvisited, 1 = on the current chain, 2 = done.
        let mut state = vec![0u8; n];
        for start in 0..n {
            let mut chain = Vec::new();
            let mut cur = Some(start);
            while let Some(c) = cur {
                match state[c] {
                    2 => break,
                    1 => {
                        let pos = chain.iter().position(|&x| x == c).unwrap_or(0);
                        let mut members: Vec<usize> = chain[pos..].to_vec();
                        let min_at = members
                            .iter()
                            .enumerate()
                            .min_by_key(|(_, &m)| m)
                            .map(|(i, _)| i)
                            .unwrap_or(0);
                        members.rotate_left(min_at);
                        errors.push(TopologyError::Cycle { members });
                        break;
                    }
                    _ => {
                        state[c] = 1;
                        chain.push(c);
                        cur = parent[c];
                    }
                }
            }
            for c in chain {
                state[c] = 2;
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let mut children = vec![Vec::new(); n];
        let mut roots = Vec::new();
        for (i, p) in parent.iter().enumerate() {
            match p {
                Some(p) => children[*p].push(i),
                None => roots.push(i),
            }
        }
        // Indexes follow name order already, so children and roots are sorted.
        let mut t = Topology {
            names,
            index,
            parent,
            children,
            roots,
            depth: vec![0; n],
            enter: vec![0; n],
            exit: vec![0; n],
            preorder: Vec::with_capacity(n),
            joined: vec![false; n],
        };
        let mut stack: Vec<(usize, usize, bool)> =
            t.roots.iter().rev().map(|&r| (r, 0, false)).collect();
        while let Some((c, d, done)) = stack.pop() {
            if done {
                t.exit[c] = t.preorder.len();
                continue;
            }
            t.depth[c] = d;
            t.enter[c] = t.preorder.len();
            t.preorder.push(c);
            stack.push((c, d, true));
            for &ch in t.children[c].iter().rev() {
                stack.push((ch, d + 1, false));
            }
        }
        Ok(t)
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub fn name(&self, i: usize) -> &str {
        &self.names[i]
    }

    pub fn get(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    pub fn parent(&self, i: usize) -> Option<usize> {
        self.parent[i]
    }

    pub fn children(&self, i: usize) -> &[usize] {
        &self.children[i]
    }

    pub fn roots(&self) -> &[usize] {
        &self.roots
    }

    /// Marks the clusters that joined (indexed like the topology).
    pub fn set_joined(&mut self, joined: Vec<bool>) {
        debug_assert_eq!(joined.len(), self.names.len());
        self.joined = joined;
    }

    /// Whether cluster `i` joined rather than being written in Git.
    pub fn is_joined(&self, i: usize) -> bool {
        self.joined.get(i).copied().unwrap_or(false)
    }

    /// 0 for a root.
    pub fn depth(&self, i: usize) -> usize {
        self.depth[i]
    }

    /// Every cluster, parents before children, siblings by name.
    pub fn preorder(&self) -> &[usize] {
        &self.preorder
    }

    /// Whether `i` is `root` or one of its descendants.
    pub fn in_subtree(&self, i: usize, root: usize) -> bool {
        self.enter[root] <= self.enter[i] && self.enter[i] < self.exit[root]
    }

    /// The clusters of `root`'s subtree, in pre-order.
    pub fn subtree(&self, root: usize) -> &[usize] {
        &self.preorder[self.enter[root]..self.exit[root]]
    }

    /// Names from the root down to `i`, inclusive.
    pub fn path(&self, i: usize) -> Vec<&str> {
        let mut out = vec![self.name(i)];
        let mut cur = self.parent[i];
        while let Some(p) = cur {
            out.push(self.name(p));
            cur = self.parent[p];
        }
        out.reverse();
        out
    }

    /// Clusters grouped by depth: the order in which apply pushes down the tree.
    pub fn levels(&self) -> Vec<Vec<usize>> {
        let mut levels: Vec<Vec<usize>> = Vec::new();
        for &c in &self.preorder {
            let d = self.depth[c];
            if levels.len() <= d {
                levels.resize(d + 1, Vec::new());
            }
            levels[d].push(c);
        }
        for l in &mut levels {
            l.sort_unstable();
        }
        levels
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(pairs: &[(&str, Option<&str>)]) -> Result<Topology, Vec<TopologyError>> {
        let mut v = pairs.to_vec();
        v.sort_by_key(|p| p.0);
        Topology::build(&v)
    }

    #[test]
    fn forest_shape_and_queries() {
        let t = build(&[
            ("a", None),
            ("a1", Some("a")),
            ("a2", Some("a")),
            ("a1x", Some("a1")),
            ("b", None),
        ])
        .unwrap();
        let names = |v: &[usize]| v.iter().map(|&i| t.name(i)).collect::<Vec<_>>();
        assert_eq!(names(t.roots()), ["a", "b"]);
        assert_eq!(names(t.preorder()), ["a", "a1", "a1x", "a2", "b"]);
        let a = t.get("a").unwrap();
        let a1x = t.get("a1x").unwrap();
        assert!(t.in_subtree(a1x, a));
        assert!(!t.in_subtree(t.get("b").unwrap(), a));
        assert_eq!(names(t.subtree(t.get("a1").unwrap())), ["a1", "a1x"]);
        assert_eq!(t.path(a1x), ["a", "a1", "a1x"]);
        assert_eq!(t.depth(a1x), 2);
        assert_eq!(t.levels().len(), 3);
    }

    #[test]
    fn unknown_parent_and_cycles_are_all_reported() {
        let errs = build(&[
            ("a", Some("c")),
            ("b", Some("a")),
            ("c", Some("b")),
            ("d", Some("nope")),
            ("e", Some("e")),
        ])
        .unwrap_err();
        assert!(errs.contains(&TopologyError::UnknownParent {
            cluster: 3,
            parent: "nope".into()
        }));
        assert!(errs.contains(&TopologyError::Cycle {
            members: vec![0, 2, 1]
        }));
        assert!(errs.contains(&TopologyError::Cycle { members: vec![4] }));
    }
}
