//! The field engine. [`selector`] compiles JSONPath once; [`rules`] applies a route's rules (its
//! own and the field policy's, one ordered table) to a body — sealing, redacting and masking
//! answers, opening tokens and JWEs in requests — on the byte-level engine ([`splice`]) or on a
//! `serde_json::Value`; [`outcome`] is what it reports (operations done, failures with a
//! [`crate::reason::Reason`]).
//!
//! Selection itself is two pure steps, kept apart so the crypto stays out of the JSONPath logic:
//!
//! 1. [`select`] / [`select_all`] turn compiled JSONPath queries into [`Location`]s: an RFC 6901
//!    JSON Pointer to mutate through, the RFC 9535 Normalized Path for messages, and the member
//!    name that binds a sealed token to its place (the AAD context rule of the contract).
//! 2. [`rewrite`] applies a transform to each location through `Value::pointer_mut`.
//!
//! jsonpath-rust has no mutable query API, and its `reference_mut` re-parses each path (~8 µs
//! per node), so results are converted to JSON Pointers here (see `path`). Simple selectors
//! (names, indexes, `[*]`) skip the library altogether and walk the document directly (see
//! `fast`); both routes produce identical locations, which the tests check.
//!
//! Selection rules, chosen so that no field is transformed twice or half-way:
//! - **De-duplication**: RFC 9535 lets one query select a node twice (`$.a[0,0]`), and several
//!   queries may select the same node; it is reported once (for the first query that selects it).
//! - **Outermost wins**: when a node and one of its ancestors are both selected (`$..password`
//!   on `{"password":{"password":1}}`), only the ancestor is reported. Transforming the child
//!   first would be wasted (it is inside the ancestor's new value) and transforming it after
//!   would be impossible (it no longer exists).
//! - **Order**: document order (serde_json's, which sorts member names), parents first.
//!
//! Value helpers for irreversible transforms live in `mask`: [`mask`] and [`redact`].

pub mod carrier;
mod fast;
mod mask;
pub mod operation;
pub mod outcome;
pub(crate) mod path;
pub mod rules;
pub mod selector;
pub mod splice;
pub mod stream;
pub mod subject;
pub mod view;

use std::fmt;

use jsonpath_rust::parser::model::JpQuery;
use jsonpath_rust::query::js_path_process;
use serde_json::Value;

use path::Step;
use selector::Selector;

pub use mask::{mask, mask_email, redact, year};

/// Where a selected node is, spelled three ways.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Location {
    /// RFC 6901 JSON Pointer to the node (`/cards/0/number`; `""` for the root), for
    /// `Value::pointer_mut`.
    pub pointer: String,
    /// RFC 9535 Normalized Path (`$['cards'][0]['number']`), for messages and logs.
    pub path: String,
    /// The AAD context rule: the name of the object member that holds the node (for an array
    /// element, the member that holds the array); `""` for the root and for elements of a
    /// root array.
    pub member: String,
}

/// A query could not be evaluated. Selection fails closed: a caller must not forward a body
/// whose sensitive fields it could not find.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectError {
    message: String,
}

impl fmt::Display for SelectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JSONPath evaluation failed: {}", self.message)
    }
}

impl std::error::Error for SelectError {}

/// Every node `query` selects in `doc`, de-duplicated, outermost wins, in document order.
pub fn select(query: &JpQuery, doc: &Value) -> Result<Vec<Location>, SelectError> {
    let found = select_all(&[query], doc)?;
    Ok(found.into_iter().map(|(_, location)| location).collect())
}

/// Every node any of `queries` selects, each with the index of the query that selected it.
///
/// De-duplication and outermost-wins apply across queries: a node selected by several queries
/// is reported once, for the first of them; a node inside another selected node is dropped,
/// whichever query selected either.
pub fn select_all(
    queries: &[&JpQuery],
    doc: &Value,
) -> Result<Vec<(usize, Location)>, SelectError> {
    select_all_with(queries, doc, Engine::Auto)
}

/// [`select_all`] over compiled route selectors.
pub fn select_selectors(
    selectors: &[Selector],
    doc: &Value,
) -> Result<Vec<(usize, Location)>, SelectError> {
    let queries: Vec<&JpQuery> = selectors.iter().map(|s| &s.query).collect();
    select_all(&queries, doc)
}

/// The AAD context of a node `selector` selected: its explicit context, else the member rule.
pub fn context<'a>(selector: &'a Selector, location: &'a Location) -> &'a str {
    selector.context.as_deref().unwrap_or(&location.member)
}

/// Applies `f` to the node at each location, in order, and returns how many it was applied to.
///
/// A pointer that no longer resolves (the document changed since selection) is skipped. The
/// first error stops the rewrite and is returned; nodes already rewritten stay rewritten, so on
/// error the caller should discard `doc`.
pub fn rewrite<E>(
    doc: &mut Value,
    locations: &[Location],
    mut f: impl FnMut(&Location, &mut Value) -> Result<(), E>,
) -> Result<usize, E> {
    let mut applied = 0;
    for location in locations {
        if let Some(node) = doc.pointer_mut(&location.pointer) {
            f(location, node)?;
            applied += 1;
        }
    }
    Ok(applied)
}

/// Which evaluator to use; tests force the library to compare it with the walker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Engine {
    /// The walker for simple queries, the library for the rest.
    Auto,
    /// Always jsonpath-rust.
    #[cfg_attr(not(test), allow(dead_code))]
    Library,
}

fn select_all_with(
    queries: &[&JpQuery],
    doc: &Value,
    engine: Engine,
) -> Result<Vec<(usize, Location)>, SelectError> {
    let mut found = Vec::new();
    for (index, query) in queries.iter().enumerate() {
        collect(query, doc, engine, &mut |steps| found.push((index, steps)))?;
    }
    Ok(finish(found))
}

/// Calls `emit` with the steps to each node `query` selects (duplicates and overlaps included).
fn collect(
    query: &JpQuery,
    doc: &Value,
    engine: Engine,
    emit: &mut dyn FnMut(Vec<Step>),
) -> Result<(), SelectError> {
    if engine == Engine::Auto {
        if let Some(selectors) = fast::simple_selectors(query) {
            fast::walk(&selectors, doc, &mut |steps| emit(steps.to_vec()));
            return Ok(());
        }
    }
    let results = js_path_process(query, doc).map_err(|e| SelectError {
        message: e.to_string(),
    })?;
    for result in results {
        let steps =
            path::parse_normalized(&result.path).map_err(|message| SelectError { message })?;
        emit(steps);
    }
    Ok(())
}

/// Sorts into document order, then keeps each node that is neither equal to nor inside the
/// last kept one. Sorting puts a node's descendants right after it, so this one pass applies
/// both de-duplication and outermost-wins; the stable sort keeps the first query on ties.
fn finish(mut found: Vec<(usize, Vec<Step>)>) -> Vec<(usize, Location)> {
    if !found.is_sorted_by(|a, b| a.1 <= b.1) {
        found.sort_by(|a, b| a.1.cmp(&b.1));
    }
    let mut kept = Vec::with_capacity(found.len());
    let mut outer: Option<&[Step]> = None;
    for (query, steps) in &found {
        if outer.is_some_and(|o| steps.starts_with(o)) {
            continue;
        }
        outer = Some(steps);
        kept.push((*query, path::locate(steps)));
    }
    kept
}

#[cfg(test)]
mod tests;
