//! Did-you-mean: the closest known word to a misspelt one, for the hints of
//! workflow and manifest errors (`unknown key "retrys" (did you mean
//! "retries"?)`).
//!
//! This module owns the distance and the rule for "close enough". It must not
//! word whole error messages nor know which names are valid where: callers
//! pass the candidates.

use std::cell::Cell;

/// Words longer than this are not compared: the cost stays bounded whatever
/// a user writes.
const WORD_CHARS_MAX: usize = 256;

/// `did you mean "x"?` for the closest candidate, if it is close enough.
pub(crate) fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    let mut best: Option<(usize, &str)> = None;
    for c in candidates {
        let Some(d) = edit_distance(word, c) else {
            continue;
        };
        let len = word.chars().count().max(c.chars().count());
        if d <= (len / 3).max(1) && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| format!("did you mean {c:?}?"))
}

/// [`did_you_mean`] within a budget of work shared over a whole file, in
/// character pairs compared: a file of thousands of misspelt names stays
/// cheap to check. Only candidates whose length is close enough to be within
/// reach are compared; once the budget is spent, no more are.
pub(crate) fn did_you_mean_within<'c>(
    budget: &Cell<u64>,
    word: &str,
    candidates: impl IntoIterator<Item = &'c str>,
) -> Option<String> {
    let lw = word.chars().count() as u64;
    let mut near = Vec::new();
    for c in candidates {
        let lc = c.chars().count() as u64;
        if lw.abs_diff(lc) > (lw.max(lc) / 3).max(1) {
            continue;
        }
        let cost = (lw + 1) * (lc + 1);
        let left = budget.get();
        if cost > left {
            break;
        }
        budget.set(left - cost);
        near.push(c);
    }
    did_you_mean(word, near)
}

/// Edit distance over chars where swapping two neighbours counts as one edit
/// (optimal string alignment), since `jbos` for `jobs` is a typical typo.
/// `None` for words longer than [`WORD_CHARS_MAX`].
fn edit_distance(a: &str, b: &str) -> Option<usize> {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    if a.len() > WORD_CHARS_MAX || b.len() > WORD_CHARS_MAX {
        return None;
    }
    // d[i][j]: distance between the first i chars of a and the first j of b.
    let width = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * width];
    for (i, row) in d.chunks_mut(width).enumerate() {
        row[0] = i;
    }
    for (j, cell) in d.iter_mut().take(width).enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[(i - 1) * width + j - 1] + cost)
                .min(d[(i - 1) * width + j] + 1)
                .min(d[i * width + j - 1] + 1);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[(i - 2) * width + j - 2] + 1);
            }
            d[i * width + j] = best;
        }
    }
    Some(d[a.len() * width + b.len()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn did_you_mean_is_picky() {
        assert_eq!(
            did_you_mean("retrys", ["retries", "range"]),
            Some("did you mean \"retries\"?".into())
        );
        assert_eq!(did_you_mean("x", ["tag", "env"]), None);
        assert_eq!(did_you_mean(&"a".repeat(1000), ["a"]), None);
        assert_eq!(edit_distance("jbos", "jobs"), Some(1));
        assert_eq!(edit_distance("kitten", "sitting"), Some(3));
        assert_eq!(edit_distance("", "abc"), Some(3));
    }

    #[test]
    fn budget_stops_comparing_when_spent() {
        let budget = Cell::new(1_000);
        assert_eq!(
            did_you_mean_within(&budget, "queu", ["zzzzzzzzzzzzzzzzzzzz", "queue"]),
            Some("did you mean \"queue\"?".into()),
            "far lengths are skipped for free"
        );
        assert_eq!(budget.get(), 1_000 - 5 * 6);
        let budget = Cell::new(10);
        assert_eq!(did_you_mean_within(&budget, "queu", ["queue"]), None);
        assert_eq!(budget.get(), 10, "an unaffordable comparison costs nothing");
    }
}
