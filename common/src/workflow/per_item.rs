//! Per-item dependencies (`after: [{job: x, per: item}]`): which upstream
//! task each downstream task waits for, as an [`ItemMap`] computed once per
//! edge from the two jobs' `Items`, never a list of edges per task when the
//! two jobs expand the same way.
//!
//! Shared by `check` (a mismatch is a submit error) and the broker's core
//! (which follows the map when a task ends). Must not know about task state.

use std::collections::HashMap;
use std::sync::Arc;

use super::def::{Items, Per};

/// Downstream task index → upstream task index, for one per-item edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemMap {
    /// Task i waits for task i (same items in the same order, or `per: index`).
    Same,
    /// `up_of_down[i]` is the upstream index of downstream task i: the same
    /// items in another order (materialised once per edge, only for lists).
    Permuted(Arc<[u64]>),
}

impl ItemMap {
    /// The upstream index of downstream task `down`.
    pub fn up_of(&self, down: u64) -> u64 {
        match self {
            ItemMap::Same => down,
            ItemMap::Permuted(v) => v[down as usize],
        }
    }

    /// The same edge read the other way (upstream index → downstream index).
    pub fn inverse(&self) -> ItemMap {
        match self {
            ItemMap::Same => ItemMap::Same,
            ItemMap::Permuted(v) => {
                let mut inv = vec![0u64; v.len()];
                for (down, &up) in v.iter().enumerate() {
                    inv[up as usize] = down as u64;
                }
                ItemMap::Permuted(inv.into())
            }
        }
    }
}

/// Why two jobs cannot be matched task for task: the message and a hint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub message: String,
    pub hint: String,
}

/// Matches the tasks of `down` (named `down_name`) with those of `up` for a
/// `per` entry: the same number of tasks for `per: index`, the same set of
/// items (each once) for `per: item`.
pub fn match_items(
    up_name: &str,
    up: &Items,
    down_name: &str,
    down: &Items,
    per: Per,
) -> Result<ItemMap, Mismatch> {
    let (nu, nd) = (up.count_saturating(), down.count_saturating());
    let whole = format!("or wait for the whole job with after: [{up_name}]");
    if per == Per::Index || (matches!(up, Items::One) && matches!(down, Items::One)) {
        return if nu == nd {
            Ok(ItemMap::Same)
        } else {
            Err(Mismatch {
                message: format!(
                    "per {}: job {down_name:?} has {nd} tasks but job {up_name:?} has {nu}",
                    per.name()
                ),
                hint: format!("give both jobs as many tasks, {whole}"),
            })
        };
    }
    let mismatch = |message: String| Mismatch {
        message,
        hint: format!("per: item needs the same items in both jobs, {whole}"),
    };
    for (name, items) in [(up_name, up), (down_name, down)] {
        if matches!(items, Items::One) {
            return Err(mismatch(format!(
                "per item: job {name:?} has no items (no foreach or range)"
            )));
        }
    }
    if let (Items::Range { start: a, end: b }, Items::Range { start: c, end: d }) = (up, down) {
        if (a, b) == (c, d) {
            return Ok(ItemMap::Same);
        }
    }
    let up_index = index_of_items(up_name, up).map_err(mismatch)?;
    let mut up_of_down = Vec::with_capacity(nd.min(nu) as usize);
    let mut seen = vec![false; nu as usize];
    for i in 0..nd {
        let item = down.get(i).map(|x| x.to_string()).unwrap_or_default();
        let up_i = match &up_index {
            Some(map) => map.get(item.as_str()).copied(),
            None => up.index_of(&item),
        };
        let Some(j) = up_i else {
            return Err(mismatch(format!(
                "per item: item {item:?} of job {down_name:?} is not an item of job {up_name:?}"
            )));
        };
        if std::mem::replace(&mut seen[j as usize], true) {
            return Err(mismatch(format!(
                "per item: item {item:?} appears twice in job {down_name:?}"
            )));
        }
        up_of_down.push(j);
    }
    if let Some(j) = seen.iter().position(|s| !s) {
        let item = up.get(j as u64).map(|x| x.to_string()).unwrap_or_default();
        return Err(mismatch(format!(
            "per item: item {item:?} of job {up_name:?} is not an item of job {down_name:?}"
        )));
    }
    if up_of_down.iter().enumerate().all(|(i, &j)| i as u64 == j) {
        return Ok(ItemMap::Same);
    }
    Ok(ItemMap::Permuted(up_of_down.into()))
}

/// A list's items by their text (`None` for a range: `Items::index_of` is
/// already O(1) there); an item written twice makes the match ambiguous.
fn index_of_items(name: &str, items: &Items) -> Result<Option<HashMap<String, u64>>, String> {
    let Items::List(list) = items else {
        return Ok(None);
    };
    let mut map = HashMap::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let text = item.to_string();
        if map.insert(text.clone(), i as u64).is_some() {
            return Err(format!(
                "per item: item {text:?} appears twice in job {name:?}"
            ));
        }
    }
    Ok(Some(map))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workflow::Item;

    fn list(v: &[&str]) -> Items {
        Items::List(v.iter().map(|s| Item::Str(s.to_string())).collect())
    }

    #[test]
    fn same_items_in_the_same_order_map_to_themselves() {
        let r = Items::Range {
            start: 1,
            end: 1000,
        };
        assert_eq!(match_items("a", &r, "b", &r, Per::Item), Ok(ItemMap::Same));
        let l = list(&["x", "y"]);
        assert_eq!(match_items("a", &l, "b", &l, Per::Item), Ok(ItemMap::Same));
        assert_eq!(
            match_items(
                "a",
                &r,
                "b",
                &Items::Range {
                    start: 5,
                    end: 1004
                },
                Per::Index
            ),
            Ok(ItemMap::Same)
        );
    }

    #[test]
    fn another_order_is_a_permutation_and_its_inverse() {
        let up = list(&["x", "y", "z"]);
        let down = list(&["z", "x", "y"]);
        let map = match_items("a", &up, "b", &down, Per::Item).unwrap();
        assert_eq!(map, ItemMap::Permuted(vec![2, 0, 1].into()));
        let inv = map.inverse();
        for d in 0..3 {
            assert_eq!(inv.up_of(map.up_of(d)), d);
        }
        let ints = Items::List(vec![Item::Int(3), Item::Int(1), Item::Int(2)]);
        let range = Items::Range { start: 1, end: 3 };
        let map = match_items("a", &range, "b", &ints, Per::Item).unwrap();
        assert_eq!(map.up_of(0), 2);
    }

    #[test]
    fn mismatched_items_say_which_item_and_which_job() {
        let e = match_items(
            "up",
            &list(&["x", "y"]),
            "down",
            &list(&["x", "q"]),
            Per::Item,
        )
        .unwrap_err();
        assert_eq!(
            e.message,
            "per item: item \"q\" of job \"down\" is not an item of job \"up\""
        );
        assert!(e.hint.contains("after: [up]"), "{}", e.hint);
        let e =
            match_items("up", &list(&["x", "y"]), "down", &list(&["x"]), Per::Item).unwrap_err();
        assert_eq!(
            e.message,
            "per item: item \"y\" of job \"up\" is not an item of job \"down\""
        );
        let e =
            match_items("up", &list(&["x", "x"]), "down", &list(&["x"]), Per::Item).unwrap_err();
        assert_eq!(
            e.message,
            "per item: item \"x\" appears twice in job \"up\""
        );
        let e = match_items("up", &Items::One, "down", &list(&["x"]), Per::Item).unwrap_err();
        assert_eq!(
            e.message,
            "per item: job \"up\" has no items (no foreach or range)"
        );
        let e = match_items(
            "up",
            &Items::Range { start: 1, end: 5 },
            "down",
            &Items::Range { start: 1, end: 4 },
            Per::Index,
        )
        .unwrap_err();
        assert_eq!(
            e.message,
            "per index: job \"down\" has 4 tasks but job \"up\" has 5"
        );
    }

    /// SPEC §4: names and per-item entries mix in one `after` list; a
    /// mismatch, a bad `per` and a per-item cycle are located submit errors.
    #[test]
    fn after_lists_mix_names_and_per_item_entries() {
        use crate::workflow::{parse_workflow, PerAfter};
        let text = "workflow: w\njobs:\n  - {name: a, command: [x], range: \"1..=3\"}\n  - {name: b, command: [x], foreach: [3, 1, 2]}\n  - name: c\n    command: [x]\n    range: \"1..=3\"\n    after: [{job: b, per: item}, a]\n";
        let def = parse_workflow("wf.yaml", text).unwrap();
        assert_eq!(def.jobs[2].after, vec!["a".to_string()]);
        assert_eq!(
            def.jobs[2].after_per,
            vec![PerAfter {
                job: "b".into(),
                per: Per::Item
            }]
        );
        let bad = text.replace("foreach: [3, 1, 2]", "foreach: [3, 1, 4]");
        let e = parse_workflow("wf.yaml", &bad).unwrap_err().to_string();
        assert_eq!(
            e,
            "wf.yaml:8:13: jobs[2].after[1]: per item: item \"2\" of job \"c\" is not an \
             item of job \"b\" (per: item needs the same items in both jobs, or wait for \
             the whole job with after: [b])"
        );
        let bad = text.replace("per: item", "per: items");
        let e = parse_workflow("wf.yaml", &bad).unwrap_err().to_string();
        assert_eq!(
            e,
            "wf.yaml:8:13: jobs[2].after[1].per: unknown per \"items\" (write per: item or per: index)"
        );
        let bad = text.replace("{job: b, per: item}", "{job: b, per: item, x: 1}");
        let e = parse_workflow("wf.yaml", &bad).unwrap_err().to_string();
        assert!(e.contains("unknown key `x` in an after entry"), "{e}");
        let cyc = text.replace(
            "foreach: [3, 1, 2]}",
            "foreach: [3, 1, 2], after: [{job: c, per: index}]}",
        );
        let e = parse_workflow("wf.yaml", &cyc).unwrap_err().to_string();
        assert!(e.contains("cycle: b -> c -> b"), "{e}");
    }
}
