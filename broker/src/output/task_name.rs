//! How a task is named to a person: its path `RUN/JOB/INDEX` (the index
//! counts from 0) and, for a job with items, the item beside it, so an index
//! is never read as an item (`3/sim/3 (item 4)` for `range: 1..=10`).
//!
//! Words only: must not resolve or check names (the broker does).

use super::escape::printable;

/// `3/sim/3 (item 4)`, or the path alone for a job without items.
pub fn task_label(path: &str, item: Option<&str>) -> String {
    match item {
        Some(i) => format!("{} (item {})", printable(path), printable(i)),
        None => printable(path).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_item_stands_beside_the_index() {
        assert_eq!(task_label("3/sim/3", Some("4")), "3/sim/3 (item 4)");
        assert_eq!(task_label("3/one/0", None), "3/one/0");
        assert_eq!(
            task_label("3/f/0", Some("a\u{1b}b")),
            "3/f/0 (item a\\u{1b}b)"
        );
    }
}
