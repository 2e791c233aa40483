//! Byte-level selection for simple selectors: find the selected values' byte spans in the body
//! text without building a `serde_json::Value`, so the caller can splice replacements into the
//! original bytes.
//!
//! Why: parsing a body into a `Value`, rewriting it and serialising it again costs about twice
//! a plain parse, and it reorders members (serde_json's default maps are sorted). A route
//! sealing three fields of a 1 KiB record paid more for that round trip than for the crypto.
//! Here serde_json still validates the whole document — the walk is a `DeserializeSeed` that
//! skips unselected values with `IgnoredAny` (which allocates nothing) and captures selected
//! ones as borrowed `RawValue`s — and everything outside the selected spans is forwarded
//! byte for byte.
//!
//! Supported selectors (a [`Plan`] compiles only when every selector of a rule set is one):
//! names, non-negative indexes, wildcards (`[*]`, `.*`) and descendant names (`..name`). The
//! selection rules are those of [`super::select_all`]: outermost wins, a node selected by
//! several selectors belongs to the first of them, and the member rule names the context.
//! Unlike the `Value` route, duplicate member names are all selected (each occurrence is
//! rewritten), which is the safe reading of an ambiguous document.

use std::borrow::Cow;
use std::fmt;

use jsonpath_rust::parser::model::{JpQuery, Segment, Selector};
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::path::push_normal_name;

/// One step of a simple selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PlanStep {
    Name(String),
    Index(usize),
    Wildcard,
    /// `..name`: a member `name` of this node or of any of its descendants.
    DescendantName(String),
}

/// Selectors compiled for the byte-level walk, indexed like the queries they came from.
#[derive(Debug, Clone)]
pub struct Plan {
    pub(crate) selectors: Vec<Vec<PlanStep>>,
}

impl Plan {
    /// The one selection step of both byte-level engines: pushes onto `active` the (selector,
    /// next step) pairs still active at `child` of a node whose pairs are `active[from..to]`.
    #[inline]
    pub(crate) fn advance(
        &self,
        active: &mut Vec<(usize, usize)>,
        from: usize,
        to: usize,
        child: &Child<'_>,
    ) {
        for i in from..to {
            let (selector, pos) = active[i];
            let Some(step) = self.selectors[selector].get(pos) else {
                continue;
            };
            let hit = match (step, child) {
                (PlanStep::Name(n), Child::Key(k)) => n == k,
                (PlanStep::Index(n), Child::Index(i)) => n == i,
                (PlanStep::Wildcard, _) => true,
                (PlanStep::DescendantName(n), Child::Key(k)) => n == k,
                _ => false,
            };
            if let PlanStep::DescendantName(_) = step {
                // The descendant segment keeps looking below every child.
                active.push((selector, pos));
            }
            if hit {
                active.push((selector, pos + 1));
            }
        }
    }

    /// A plan for `queries`, or `None` when one of them needs the full JSONPath engine.
    pub fn compile(queries: &[&JpQuery]) -> Option<Self> {
        let selectors = queries
            .iter()
            .map(|q| q.segments.iter().map(plan_step).collect())
            .collect::<Option<Vec<Vec<PlanStep>>>>()?;
        Some(Self { selectors })
    }

    /// How many selectors the plan holds.
    pub fn len(&self) -> usize {
        self.selectors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.selectors.is_empty()
    }
}

fn plan_step(segment: &Segment) -> Option<PlanStep> {
    let (selector, descendant) = match segment {
        Segment::Selector(s) => (s, false),
        Segment::Selectors(list) if list.len() == 1 => (&list[0], false),
        Segment::Descendant(inner) => match inner.as_ref() {
            Segment::Selector(s) => (s, true),
            Segment::Selectors(list) if list.len() == 1 => (&list[0], true),
            _ => return None,
        },
        Segment::Selectors(_) => return None,
    };
    match (selector, descendant) {
        (Selector::Name(name), false) => Some(PlanStep::Name(name.clone())),
        (Selector::Name(name), true) => Some(PlanStep::DescendantName(name.clone())),
        (Selector::Index(i), false) => usize::try_from(*i).ok().map(PlanStep::Index),
        (Selector::Wildcard, false) => Some(PlanStep::Wildcard),
        _ => None,
    }
}

/// A selected value found in the body text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span<'a> {
    /// Byte range of the value in the text.
    pub start: usize,
    pub end: usize,
    /// Index of the selector that selected it.
    pub selector: usize,
    /// The value's JSON text, exactly as in the body.
    pub raw: &'a str,
    /// RFC 9535 Normalized Path, for operations and errors.
    pub path: String,
    /// The member rule's context (see [`super::Location::member`]).
    pub member: Cow<'a, str>,
}

/// The body is not a JSON document.
#[derive(Debug)]
pub struct ScanError(serde_json::Error);

impl fmt::Display for ScanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid JSON: {}", self.0)
    }
}

impl std::error::Error for ScanError {}

/// Validates `text` as one JSON document and returns the spans `plan` selects, in document
/// order, non-overlapping.
pub fn scan<'a>(plan: &Plan, text: &'a str) -> Result<Vec<Span<'a>>, ScanError> {
    let mut walker = Walker {
        plan,
        active: (0..plan.selectors.len()).map(|s| (s, 0)).collect(),
        path: Vec::new(),
        spans: Vec::new(),
        base: text.as_ptr() as usize,
    };
    let mut de = serde_json::Deserializer::from_str(text);
    let root_end = walker.active.len();
    match walker.terminal(0, root_end) {
        Some(selector) => {
            let raw: &RawValue = de::Deserialize::deserialize(&mut de).map_err(ScanError)?;
            walker.capture(selector, raw.get());
        }
        None => NodeSeed {
            walker: &mut walker,
            from: 0,
        }
        .deserialize(&mut de)
        .map_err(ScanError)?,
    }
    de.end().map_err(ScanError)?;
    Ok(walker.spans)
}

/// The nesting bound of request bodies: the deepest serde_json parses (its recursion limit of
/// 128 refuses a 128th level), so both engines refuse the same documents.
pub const MAX_NESTING: usize = 127;

/// Whether `text` nests arrays and objects deeper than `limit` (brackets inside strings do
/// not count). [`scan`] validates skipped values without recursing, so it has no depth bound
/// of its own; request bodies are checked with this so that the app is never handed a
/// document too deep for its own parser.
pub fn nesting_exceeds(text: &str, limit: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in text.as_bytes() {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// One replacement of a span's bytes.
pub struct Edit {
    pub start: usize,
    pub end: usize,
    /// Zeroized on drop: it may be an opened plaintext.
    pub replacement: zeroize::Zeroizing<Vec<u8>>,
}

/// Builds the output: `text` with each edit's range replaced. Edits must be in order and
/// non-overlapping, as [`scan`]'s spans are.
pub fn splice(text: &str, edits: &[Edit]) -> Vec<u8> {
    let grown: usize = edits.iter().map(|e| e.replacement.len()).sum();
    let mut out = Vec::with_capacity(text.len() + grown);
    let mut at = 0;
    for edit in edits {
        debug_assert!(at <= edit.start && edit.start <= edit.end);
        out.extend_from_slice(&text.as_bytes()[at..edit.start]);
        out.extend_from_slice(&edit.replacement);
        at = edit.end;
    }
    out.extend_from_slice(&text.as_bytes()[at..]);
    out
}

/// One step from the root to the node being visited.
enum PathStep<'a> {
    Key(Cow<'a, str>),
    Index(usize),
}

/// The walk's state. `active` is a stack of frames: each node's (selector, next step) pairs
/// sit above its parent's, so visiting a child allocates nothing once the stack has grown.
struct Walker<'p, 'a> {
    plan: &'p Plan,
    active: Vec<(usize, usize)>,
    path: Vec<PathStep<'a>>,
    spans: Vec<Span<'a>>,
    base: usize,
}

/// A child of the node being visited.
pub(crate) enum Child<'k> {
    Key(&'k str),
    Index(usize),
}

impl<'a> Walker<'_, 'a> {
    /// Pushes the pairs still active at `child` of the node whose pairs are
    /// `active[from..to]`.
    fn advance(&mut self, from: usize, to: usize, child: &Child<'_>) {
        self.plan.advance(&mut self.active, from, to, child);
    }

    /// The first selector that ends at the node whose pairs are `active[from..to]`.
    fn terminal(&self, from: usize, to: usize) -> Option<usize> {
        self.active[from..to]
            .iter()
            .filter(|(s, pos)| *pos == self.plan.selectors[*s].len())
            .map(|(s, _)| *s)
            .min()
    }

    fn capture(&mut self, selector: usize, raw: &'a str) {
        let start = raw.as_ptr() as usize - self.base;
        let mut path = String::from("$");
        let mut member = Cow::Borrowed("");
        for step in &self.path {
            match step {
                PathStep::Key(k) => {
                    path.push('[');
                    push_normal_name(&mut path, k);
                    path.push(']');
                    member = k.clone();
                }
                PathStep::Index(i) => {
                    use std::fmt::Write as _;
                    let _ = write!(path, "[{i}]");
                }
            }
        }
        self.spans.push(Span {
            start,
            end: start + raw.len(),
            selector,
            raw,
            path,
            member,
        });
    }

    /// What to do with a child whose pairs are `active[to..]`.
    fn decide(&self, to: usize) -> Visit {
        let end = self.active.len();
        if end == to {
            Visit::Skip
        } else if let Some(selector) = self.terminal(to, end) {
            Visit::Capture(selector)
        } else {
            Visit::Walk
        }
    }
}

/// The fate of one child value.
enum Visit {
    /// Nothing selects it or anything inside it: validate and move on.
    Skip,
    /// The given selector selects it (outermost wins: nothing inside is visited).
    Capture(usize),
    /// Something inside it may be selected.
    Walk,
}

/// Visits one node whose active pairs are `walker.active[from..]`.
struct NodeSeed<'w, 'p, 'a> {
    walker: &'w mut Walker<'p, 'a>,
    from: usize,
}

impl<'a> DeserializeSeed<'a> for NodeSeed<'_, '_, 'a> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'a>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'a> Visitor<'a> for NodeSeed<'_, '_, 'a> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<M: MapAccess<'a>>(self, mut map: M) -> Result<(), M::Error> {
        let (walker, from) = (self.walker, self.from);
        let to = walker.active.len();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            walker.advance(from, to, &Child::Key(&key));
            walker.path.push(PathStep::Key(key));
            match walker.decide(to) {
                Visit::Skip => {
                    map.next_value::<IgnoredAny>()?;
                }
                Visit::Capture(selector) => {
                    let raw: &'a RawValue = map.next_value()?;
                    walker.capture(selector, raw.get());
                }
                Visit::Walk => map.next_value_seed(NodeSeed {
                    walker: &mut *walker,
                    from: to,
                })?,
            }
            walker.path.pop();
            walker.active.truncate(to);
        }
        Ok(())
    }

    fn visit_seq<S: SeqAccess<'a>>(self, mut seq: S) -> Result<(), S::Error> {
        let (walker, from) = (self.walker, self.from);
        let to = walker.active.len();
        for index in 0.. {
            walker.advance(from, to, &Child::Index(index));
            walker.path.push(PathStep::Index(index));
            let more = match walker.decide(to) {
                Visit::Skip => seq.next_element::<IgnoredAny>()?.is_some(),
                Visit::Capture(selector) => match seq.next_element::<&'a RawValue>()? {
                    Some(raw) => {
                        walker.capture(selector, raw.get());
                        true
                    }
                    None => false,
                },
                Visit::Walk => seq
                    .next_element_seed(NodeSeed {
                        walker: &mut *walker,
                        from: to,
                    })?
                    .is_some(),
            };
            walker.path.pop();
            walker.active.truncate(to);
            if !more {
                break;
            }
        }
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
}

/// A member name, borrowed from the body unless it had escapes.
struct KeySeed;

impl<'a> DeserializeSeed<'a> for KeySeed {
    type Value = Cow<'a, str>;

    fn deserialize<D: de::Deserializer<'a>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'a> Visitor<'a> for KeySeed {
    type Value = Cow<'a, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a member name")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'a str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
}
