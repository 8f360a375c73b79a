//! Deep merge of overlays onto the manifest (SPEC §3): maps merge key by
//! key, lists and scalars replace, and `null` removes a key (as a JSON merge
//! patch does), so an overlay can also take a setting away.

use std::collections::HashMap;

use super::tree::{Node, Value};

/// Marks every node of an overlay with its index, so an error found after
/// merging still points into the overlay.
pub(super) fn mark(node: &mut Node, origin: u16) {
    node.origin = Some(origin);
    match &mut node.value {
        Value::Seq(items) => items.iter_mut().for_each(|n| mark(n, origin)),
        Value::Map(entries) => entries.iter_mut().for_each(|e| mark(&mut e.value, origin)),
        _ => {}
    }
}

/// Merges `over` into `base`.
pub(super) fn merge(base: &mut Node, over: &Node) {
    let (Value::Map(base_entries), Value::Map(over_entries)) = (&mut base.value, &over.value)
    else {
        *base = over.clone();
        return;
    };
    // An index, so a large mapping merges in linear time.
    let mut index: HashMap<String, usize> = base_entries
        .iter()
        .enumerate()
        .map(|(i, e)| (e.key.clone(), i))
        .collect();
    // Removed after the loop, so indices stay valid while merging.
    let mut removed = vec![false; base_entries.len()];
    for o in over_entries {
        match index.get(&o.key) {
            Some(&i) if o.value.is_null() => {
                if let Some(r) = removed.get_mut(i) {
                    *r = true;
                }
            }
            Some(&i) => {
                let b = &mut base_entries[i];
                let both_maps = matches!(
                    (&b.value.value, &o.value.value),
                    (Value::Map(_), Value::Map(_))
                );
                if !both_maps {
                    // The entry now comes from the overlay: errors about it
                    // point at the overlay's key.
                    b.key_at = o.key_at;
                }
                merge(&mut b.value, &o.value);
            }
            None if o.value.is_null() => {}
            None => {
                index.insert(o.key.clone(), base_entries.len());
                base_entries.push(o.clone());
            }
        }
    }
    if removed.contains(&true) {
        let mut i = 0;
        base_entries.retain(|_| {
            let keep = !removed.get(i).copied().unwrap_or(false);
            i += 1;
            keep
        });
    }
}
