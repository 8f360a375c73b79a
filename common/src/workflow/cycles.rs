//! The cycle finder of `after`: one shortest cycle per strongly connected
//! component of the job graph, so each loop is reported once and readably.
//!
//! Plain graph code over job indices. It must not know names, paths or
//! messages: `check` words what it finds.

use std::collections::{HashMap, HashSet, VecDeque};

/// One cycle per strongly connected component of `deps` (an edge i -> j means
/// job i runs after job j), each as job indices starting and ending at the
/// component's first job, in the order of the jobs. Self-edges are not given.
pub(super) fn cycles(deps: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let mut components: Vec<Vec<usize>> = strongly_connected(deps)
        .into_iter()
        .filter(|c| c.len() > 1)
        .collect();
    for c in &mut components {
        c.sort_unstable();
    }
    components.sort_unstable_by_key(|c| c[0]);
    let mut out = Vec::new();
    for comp in components {
        let start = comp[0];
        let members: HashSet<usize> = comp.iter().copied().collect();
        // Breadth-first: the shortest cycle through `start` is the clearest.
        let mut parent: HashMap<usize, usize> = HashMap::new();
        let mut queue = VecDeque::from([start]);
        let mut closing = None;
        'search: while let Some(v) = queue.pop_front() {
            for &w in &deps[v] {
                if w == start {
                    closing = Some(v);
                    break 'search;
                }
                if members.contains(&w) && !parent.contains_key(&w) && w != start {
                    parent.insert(w, v);
                    queue.push_back(w);
                }
            }
        }
        // In a strongly connected component the search always closes.
        let Some(mut v) = closing else { continue };
        let mut path = vec![start];
        let mut back = vec![v];
        while let Some(&u) = parent.get(&v) {
            back.push(u);
            v = u;
        }
        // `back` walks back to `start`, the only member without a parent.
        back.reverse();
        path.extend(back.into_iter().filter(|&j| j != start));
        path.push(start);
        out.push(path);
    }
    out
}

/// Tarjan's algorithm, iterative so that a long chain of jobs cannot
/// overflow the stack.
fn strongly_connected(adj: &[Vec<usize>]) -> Vec<Vec<usize>> {
    const UNSEEN: usize = usize::MAX;
    let n = adj.len();
    let mut index = vec![UNSEEN; n];
    let mut low = vec![0; n];
    let mut on_stack = vec![false; n];
    let mut stack = Vec::new();
    let mut next = 0;
    let mut out = Vec::new();
    let mut calls: Vec<(usize, usize)> = Vec::new();
    for root in 0..n {
        if index[root] != UNSEEN {
            continue;
        }
        index[root] = next;
        low[root] = next;
        next += 1;
        stack.push(root);
        on_stack[root] = true;
        calls.push((root, 0));
        while let Some(&(v, edge)) = calls.last() {
            if let Some(&w) = adj[v].get(edge) {
                if let Some(top) = calls.last_mut() {
                    top.1 += 1;
                }
                if index[w] == UNSEEN {
                    index[w] = next;
                    low[w] = next;
                    next += 1;
                    stack.push(w);
                    on_stack[w] = true;
                    calls.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
            } else {
                calls.pop();
                if let Some(&(u, _)) = calls.last() {
                    low[u] = low[u].min(low[v]);
                }
                if low[v] == index[v] {
                    let mut comp = Vec::new();
                    while let Some(w) = stack.pop() {
                        on_stack[w] = false;
                        comp.push(w);
                        if w == v {
                            break;
                        }
                    }
                    out.push(comp);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_shortest_cycle_per_component_in_job_order() {
        // 0 -> 1 -> 2 -> 0 with a shortcut 0 -> 2; 3 <-> 4; 5 alone.
        let deps = vec![vec![1, 2], vec![2], vec![0], vec![4], vec![3], vec![]];
        assert_eq!(cycles(&deps), vec![vec![0, 2, 0], vec![3, 4, 3]]);
        assert!(cycles(&[vec![], vec![0]]).is_empty());
    }

    #[test]
    fn a_long_chain_does_not_overflow_the_stack() {
        let n = 200_000;
        let mut deps: Vec<Vec<usize>> = (0..n).map(|i| vec![i + 1]).collect();
        deps[n - 1] = vec![0];
        let found = cycles(&deps);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].len(), n + 1);
    }
}
