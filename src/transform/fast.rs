//! A direct walker for simple selectors, bypassing jsonpath-rust's query engine.
//!
//! Most route rules are plain paths (`$.ssn`, `$.cards[*].number`). The library evaluates them
//! by cloning a path string per visited node and rendering every result as a Normalized Path
//! that we then have to parse back; walking the `serde_json::Value` ourselves avoids both.
//! "Simple" means every segment is one name (`.name`, `['name']`), one index (`[i]`, negative
//! counting from the end as in RFC 9535) or the wildcard (`[*]`, `.*`). Everything else —
//! descendants (`..`), filters, slices, unions — goes to the library, whose semantics this
//! walker must (and is tested to) reproduce exactly.

use jsonpath_rust::parser::model::{JpQuery, Segment, Selector};
use serde_json::Value;

use super::path::Step;

/// The selector of a segment the walker handles, or `None` if the segment needs the library.
fn simple_selector(segment: &Segment) -> Option<&Selector> {
    let selector = match segment {
        Segment::Selector(s) => s,
        Segment::Selectors(list) if list.len() == 1 => &list[0],
        Segment::Selectors(_) | Segment::Descendant(_) => return None,
    };
    match selector {
        Selector::Name(_) | Selector::Index(_) | Selector::Wildcard => Some(selector),
        Selector::Slice(..) | Selector::Filter(_) => None,
    }
}

/// The query's selectors if every segment is simple, else `None`.
pub(crate) fn simple_selectors(query: &JpQuery) -> Option<Vec<&Selector>> {
    query.segments.iter().map(simple_selector).collect()
}

/// Calls `emit` with the steps to every node the simple `selectors` reach in `doc`, in
/// document order (the library's order for these selectors).
pub(crate) fn walk(selectors: &[&Selector], doc: &Value, emit: &mut dyn FnMut(&[Step])) {
    walk_from(selectors, doc, &mut Vec::new(), emit);
}

fn walk_from(
    selectors: &[&Selector],
    node: &Value,
    steps: &mut Vec<Step>,
    emit: &mut dyn FnMut(&[Step]),
) {
    let Some((selector, rest)) = selectors.split_first() else {
        emit(steps);
        return;
    };
    let mut visit = |step: Step, child: &Value| {
        steps.push(step);
        walk_from(rest, child, steps, emit);
        steps.pop();
    };
    match (selector, node) {
        (Selector::Name(name), Value::Object(map)) => {
            if let Some(child) = map.get(name) {
                visit(Step::Key(name.clone()), child);
            }
        }
        (Selector::Index(index), Value::Array(items)) => {
            if let Some(i) = resolve_index(*index, items.len()) {
                visit(Step::Index(i), &items[i]);
            }
        }
        (Selector::Wildcard, Value::Array(items)) => {
            for (i, child) in items.iter().enumerate() {
                visit(Step::Index(i), child);
            }
        }
        (Selector::Wildcard, Value::Object(map)) => {
            for (name, child) in map {
                visit(Step::Key(name.clone()), child);
            }
        }
        // A name on a non-object, an index on a non-array, a wildcard on a scalar: no match.
        _ => {}
    }
}

/// RFC 9535 §2.3.3.2: a negative index counts back from the end; out of range selects nothing.
fn resolve_index(index: i64, len: usize) -> Option<usize> {
    if index >= 0 {
        usize::try_from(index).ok().filter(|&i| i < len)
    } else {
        let back = usize::try_from(index.unsigned_abs()).ok()?;
        len.checked_sub(back)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonpath_rust::parser::parse_json_path;

    fn is_simple(p: &str) -> bool {
        simple_selectors(&parse_json_path(p).unwrap()).is_some()
    }

    #[test]
    fn classifies_selectors() {
        for p in [
            "$",
            "$.a",
            "$['a b']",
            "$[0]",
            "$[-1]",
            "$[*]",
            "$.*",
            "$.cards[*].number",
            "$['x'][2]['y']",
        ] {
            assert!(is_simple(p), "{p} should be simple");
        }
        for p in [
            "$..a",
            "$.a[0,1]",
            "$['a','b']",
            "$[1:2]",
            "$[?@.x == 1]",
            "$[?length(@.x) > 1]",
            "$..*",
        ] {
            assert!(!is_simple(p), "{p} should use the library");
        }
    }

    #[test]
    fn resolves_indexes() {
        assert_eq!(resolve_index(0, 3), Some(0));
        assert_eq!(resolve_index(2, 3), Some(2));
        assert_eq!(resolve_index(3, 3), None);
        assert_eq!(resolve_index(-1, 3), Some(2));
        assert_eq!(resolve_index(-3, 3), Some(0));
        assert_eq!(resolve_index(-4, 3), None);
        assert_eq!(resolve_index(i64::MIN, 3), None);
        assert_eq!(resolve_index(i64::MAX, 3), None);
        assert_eq!(resolve_index(0, 0), None);
        assert_eq!(resolve_index(-1, 0), None);
    }
}
