//! Paged replies: a long list (runs for `status`, failed tasks for `analyze`,
//! the rows of a report) or a long byte string (`logs`) goes out one page at
//! a time, each page within a byte budget, so no reply outgrows the cap of
//! one message however much the store holds.
//!
//! It only measures and cuts values it is given; it must not read the store
//! or the core (the callers iterate, from the key the CLI sent).

use scalable_common::frame::encoded_len;
use scalable_common::protocol::Page;
use serde::Serialize;

/// Fills one page with items in key order until the next would pass the
/// budget. The first item always goes in, however large, so every page makes
/// progress (the reply cap refuses a page that still cannot be sent).
pub struct PageBuilder<T> {
    items: Vec<T>,
    last_key: Option<u64>,
    used_bytes: usize,
    budget_bytes: usize,
    full: bool,
}

impl<T: Serialize> PageBuilder<T> {
    pub fn new(budget_bytes: usize) -> PageBuilder<T> {
        PageBuilder {
            items: Vec::new(),
            last_key: None,
            used_bytes: 0,
            budget_bytes,
            full: false,
        }
    }

    /// Adds the item with key `key`; false (and the item dropped) when the
    /// page is full: stop there, the next page starts after the last key.
    pub fn push(&mut self, key: u64, item: T) -> bool {
        let bytes = encoded_len(&item);
        if !self.items.is_empty() && self.used_bytes.saturating_add(bytes) > self.budget_bytes {
            self.full = true;
            return false;
        }
        self.used_bytes = self.used_bytes.saturating_add(bytes);
        self.items.push(item);
        self.last_key = Some(key);
        true
    }

    /// The page; `next` is set when an item did not fit.
    pub fn finish(self) -> Page<T> {
        Page {
            next: if self.full { self.last_key } else { None },
            items: self.items,
        }
    }
}

/// The page of two byte strings read as one (`first` then `second`) that
/// starts at byte `from` and holds at most `budget_bytes`: each string's
/// share of it, and where the next page starts (`None`: this is the last).
pub fn bytes_page(
    first: &[u8],
    second: &[u8],
    from: u64,
    budget_bytes: usize,
) -> (Vec<u8>, Vec<u8>, Option<u64>) {
    let total = first.len() + second.len();
    let start = usize::try_from(from).unwrap_or(usize::MAX).min(total);
    let end = start.saturating_add(budget_bytes.max(1)).min(total);
    let slice = |s: &[u8], offset: usize| -> Vec<u8> {
        let lo = start.saturating_sub(offset).min(s.len());
        let hi = end.saturating_sub(offset).min(s.len());
        s[lo..hi].to_vec()
    };
    let next = (end < total).then_some(end as u64);
    (slice(first, 0), slice(second, first.len()), next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_takes_items_until_the_budget_and_says_where_to_go_on() {
        let item = "x".repeat(100);
        let one = encoded_len(&item);
        let mut page = PageBuilder::new(2 * one);
        assert!(page.push(7, item.clone()));
        assert!(page.push(9, item.clone()));
        assert!(!page.push(12, item.clone()), "the third does not fit");
        let page = page.finish();
        assert_eq!(page.items.len(), 2);
        assert_eq!(page.next, Some(9), "the next page starts after key 9");
    }

    #[test]
    fn the_last_page_has_no_next_and_a_huge_first_item_still_goes() {
        let mut page = PageBuilder::new(10);
        assert!(page.push(1, "y".repeat(1000)));
        let page = page.finish();
        assert_eq!((page.items.len(), page.next), (1, None));
    }

    #[test]
    fn bytes_pages_walk_both_strings_in_order() {
        let (out, err) = (b"abcde".as_slice(), b"XYZ".as_slice());
        let mut from = 0;
        let mut got = (Vec::new(), Vec::new());
        let mut pages = 0;
        loop {
            let (o, e, next) = bytes_page(out, err, from, 3);
            got.0.extend(o);
            got.1.extend(e);
            pages += 1;
            match next {
                Some(n) => from = n,
                None => break,
            }
        }
        assert_eq!((got.0.as_slice(), got.1.as_slice()), (out, err));
        assert_eq!(pages, 3);
        assert_eq!(bytes_page(b"", b"", 0, 3), (vec![], vec![], None));
        assert_eq!(bytes_page(out, err, 99, 3), (vec![], vec![], None));
    }
}
