//! Ranges as users write them for `range:` and `submit --array`: `A..=B`,
//! `A..B` and `A-B`.
//!
//! This module owns only the text form; it must not know jobs or limits.

/// Parses a range: `A..=B` (inclusive), `A..B` (end exclusive) or `A-B`
/// (inclusive, the `--array 1-100` form). Returns inclusive bounds with
/// start <= end.
pub fn parse_range(text: &str) -> Result<(i64, i64), String> {
    let t = text.trim();
    let bad = || format!("invalid range {text:?} (expected A..=B, A..B or A-B, e.g. 1..=100)");
    let num = |s: &str| s.trim().parse::<i64>().map_err(|_| bad());
    let (start, end) = if let Some((a, b)) = t.split_once("..=") {
        (num(a)?, num(b)?)
    } else if let Some((a, b)) = t.split_once("..") {
        let (a, b) = (num(a)?, num(b)?);
        if b <= a {
            return Err(format!(
                "range {text:?} is empty (the end of A..B is exclusive)"
            ));
        }
        // b > a, so b - 1 cannot overflow.
        (a, b - 1)
    } else if let Some(dash) = t
        .char_indices()
        .skip(1)
        .find(|&(_, c)| c == '-')
        .map(|(i, _)| i)
    {
        // Skip a leading minus: "-5-5" is -5 to 5.
        (num(&t[..dash])?, num(&t[dash + 1..])?)
    } else {
        return Err(bad());
    };
    if start > end {
        return Err(format!(
            "range {text:?} is empty (start {start} is after end {end})"
        ));
    }
    Ok((start, end))
}
