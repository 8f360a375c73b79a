//! Which templates are cheap enough to render on the broker's core task.
//!
//! Fuel counts minijinja instructions, not their cost: one `'a' * 10**8`,
//! `range(10**5) | sort` or `~` of two large strings is a single instruction
//! that may take seconds, and a loop repeats it. So the broker renders on its
//! core only templates whose every instruction is linear in the task's item
//! and few: the shape `{{ item }}`, `{{ index + 1 }}`, `{{ item | lower }}`.
//! Everything else (statements, string and list operators, function calls,
//! other filters, long sources) renders off the core with a deadline
//! (`scalable_broker::server::render_io`).
//!
//! The check is on the source text and conservative: a template it cannot
//! read as cheap is costly, which only moves its rendering, never changes
//! what it renders. Must not compile or render anything.

/// Longer sources are costly: each expression is linear in the item, so
/// their count must be small too.
pub const CHEAP_TEMPLATE_BYTES_MAX: usize = 256;

/// Filters that run in time linear in their input and produce at most a few
/// times its size, whatever their (numeric) arguments.
const CHEAP_FILTERS: [&str; 17] = [
    "abs",
    "bool",
    "capitalize",
    "count",
    "d",
    "default",
    "first",
    "float",
    "int",
    "last",
    "length",
    "lower",
    "round",
    "string",
    "title",
    "trim",
    "upper",
];

/// Whether `src` (a string with template syntax) is cheap: no statements or
/// comments, short, and every `{{ ... }}` made of names, numbers, `+ - / %`,
/// attribute access and cheap filters with numeric arguments.
pub fn is_cheap(src: &str) -> bool {
    if src.len() > CHEAP_TEMPLATE_BYTES_MAX || src.contains("{%") || src.contains("{#") {
        return false;
    }
    let mut rest = src;
    while let Some(open) = rest.find("{{") {
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            return false;
        };
        if !is_cheap_expression(&after[..close]) {
            return false;
        }
        rest = &after[close + 2..];
    }
    true
}

/// What the token before the current one was, for the two rules that need it.
#[derive(Clone, Copy, PartialEq)]
enum Prev {
    /// `|`: the next name is a filter.
    Pipe,
    /// A cheap filter's name: `(` opens its arguments.
    Filter,
    /// A variable or attribute name, or `)`: `(` would call it.
    Callable,
    Other,
}

/// One expression body (between `{{` and `}}`, whitespace control included).
fn is_cheap_expression(body: &str) -> bool {
    let body = body.strip_prefix('-').unwrap_or(body);
    let body = body.strip_suffix('-').unwrap_or(body);
    let bytes = body.as_bytes();
    let mut i = 0;
    let mut prev = Prev::Other;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            let name = &body[start..i];
            prev = match prev {
                Prev::Pipe if CHEAP_FILTERS.contains(&name) => Prev::Filter,
                Prev::Pipe => return false,
                _ => Prev::Callable,
            };
            continue;
        }
        prev = match c {
            b'|' => Prev::Pipe,
            // A call is cheap only as a cheap filter's arguments.
            b'(' if prev == Prev::Callable => return false,
            b')' => Prev::Callable,
            b'0'..=b'9' | b'.' | b'+' | b'-' | b'/' | b'%' | b',' | b'(' => Prev::Other,
            _ => return false,
        };
        i += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_common_shapes_are_cheap() {
        for src in [
            "{{ item }}",
            "{{index}}",
            "out/{{ index + 1 }}.txt",
            "{{- item | lower -}}",
            "{{ item | default(0) | round(2) }}",
            "{{ run_id }}-{{ index // 2 }}-{{ index % 7 }}",
            "--seed={{ (index + 1) / 3 }}",
        ] {
            assert!(is_cheap(src), "{src}");
        }
    }

    #[test]
    fn operators_calls_statements_and_other_filters_are_costly() {
        for src in [
            "{{ 'a' * 100000000 }}",
            "{{ item * 3 }}",
            "{{ item ~ item }}",
            "{{ range(100000) | sort | length }}",
            "{% for i in range(9) %}x{% endfor %}",
            "{# comment #}{{ item }}",
            "{{ item | replace('a', 'b') }}",
            "{{ item | indent(100000000) }}",
            "{{ item | join(',') }}",
            "{{ [item] }}",
            "{{ item if index else 1 }}x{{ lipsum() }}",
            "{{ item }",
            "{{ index ** 99 }}",
        ] {
            assert!(!is_cheap(src), "{src}");
        }
    }

    #[test]
    fn a_long_source_is_costly_however_plain() {
        let src = "{{ item }}".repeat(CHEAP_TEMPLATE_BYTES_MAX / 10 + 1);
        assert!(!is_cheap(&src));
    }
}
