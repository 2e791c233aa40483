//! Tests of selection and rewriting through the public API, plus the walker/library agreement.

use super::splice;
use super::stream;
use super::*;
use jsonpath_rust::parser::parse_json_path;
use serde_json::json;

fn q(path: &str) -> JpQuery {
    parse_json_path(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn pointers(path: &str, doc: &Value) -> Vec<String> {
    select(&q(path), doc)
        .unwrap()
        .into_iter()
        .map(|l| l.pointer)
        .collect()
}

/// Selects with both engines, asserts they agree, and returns the locations.
fn both(path: &str, doc: &Value) -> Vec<Location> {
    let query = q(path);
    let auto = select_all_with(&[&query], doc, Engine::Auto).unwrap();
    let library = select_all_with(&[&query], doc, Engine::Library).unwrap();
    assert_eq!(
        auto, library,
        "walker and library disagree on {path} over {doc}"
    );
    auto.into_iter().map(|(_, l)| l).collect()
}

fn marker(_: &Location, v: &mut Value) -> Result<(), ()> {
    *v = json!("<sealed>");
    Ok(())
}

fn sample() -> Value {
    json!({
        "user": {"name": "Ada", "ssn": "078-05-1120", "address": {"zip": "12345"}},
        "cards": [
            {"number": "4111111111110366", "cvv": 123},
            {"number": "5500000000000004", "cvv": 456}
        ],
        "tags": ["a", "b", "c"],
        "matrix": [[1, 2], [3, 4]],
        "users": [
            {"name": "root", "role": "admin", "ssn": "1"},
            {"name": "bob", "role": "user", "ssn": "2"},
            {"name": "eve", "role": "admin", "ssn": "3"}
        ]
    })
}

#[test]
fn nested_objects() {
    let locs = both("$.user.address.zip", &sample());
    assert_eq!(
        locs,
        vec![Location {
            pointer: "/user/address/zip".into(),
            path: "$['user']['address']['zip']".into(),
            member: "zip".into(),
        }]
    );
}

#[test]
fn array_index_and_member_rule() {
    let doc = sample();
    let locs = both("$.cards[1].number", &doc);
    assert_eq!(locs[0].pointer, "/cards/1/number");
    assert_eq!(locs[0].member, "number");
    let locs = both("$.tags[2]", &doc);
    assert_eq!(
        (locs[0].pointer.as_str(), locs[0].member.as_str()),
        ("/tags/2", "tags")
    );
    let locs = both("$.matrix[0][1]", &doc);
    assert_eq!(
        (locs[0].path.as_str(), locs[0].member.as_str()),
        ("$['matrix'][0][1]", "matrix")
    );
    let locs = both("$.tags[-1]", &doc);
    assert_eq!(locs[0].pointer, "/tags/2");
}

#[test]
fn root_array_elements_have_no_member() {
    let doc = json!([{"a": 1}, 2]);
    let locs = both("$[1]", &doc);
    assert_eq!(
        (locs[0].pointer.as_str(), locs[0].member.as_str()),
        ("/1", "")
    );
    let locs = both("$[0].a", &doc);
    assert_eq!(locs[0].member, "a");
}

#[test]
fn wildcard() {
    let doc = sample();
    let locs = both("$.cards[*].number", &doc);
    let ptrs: Vec<_> = locs.iter().map(|l| l.pointer.as_str()).collect();
    assert_eq!(ptrs, ["/cards/0/number", "/cards/1/number"]);
    assert!(locs.iter().all(|l| l.member == "number"));
    assert_eq!(
        pointers("$.user.*", &doc),
        ["/user/address", "/user/name", "/user/ssn"]
    );
    assert_eq!(
        pointers("$.tags.*", &doc),
        ["/tags/0", "/tags/1", "/tags/2"]
    );
}

#[test]
fn recursive_descent() {
    let doc = json!({"a": {"ssn": 1, "b": [{"ssn": 2}, {"x": {"ssn": 3}}]}, "ssn": 0});
    assert_eq!(
        pointers("$..ssn", &doc),
        ["/a/b/0/ssn", "/a/b/1/x/ssn", "/a/ssn", "/ssn"]
    );
}

#[test]
fn filters() {
    let locs = both("$.users[?@.role == 'admin'].ssn", &sample());
    let ptrs: Vec<_> = locs.iter().map(|l| l.pointer.as_str()).collect();
    assert_eq!(ptrs, ["/users/0/ssn", "/users/2/ssn"]);
    assert!(locs.iter().all(|l| l.member == "ssn"));
}

#[test]
fn slices_and_functions() {
    let doc = sample();
    assert_eq!(pointers("$.tags[1:]", &doc), ["/tags/1", "/tags/2"]);
    assert_eq!(
        pointers("$.tags[::-1]", &doc),
        ["/tags/0", "/tags/1", "/tags/2"]
    );
    assert_eq!(
        pointers("$.users[?length(@.name) == 3].name", &doc),
        ["/users/1/name", "/users/2/name"]
    );
}

#[test]
fn unions_and_duplicates_are_deduplicated() {
    let doc = json!({"a": ["x", "y", "z"]});
    assert_eq!(pointers("$.a[0,0]", &doc), ["/a/0"]);
    assert_eq!(pointers("$.a[2,0,2,0]", &doc), ["/a/0", "/a/2"]);
    assert_eq!(pointers("$['a','a'][1]", &doc), ["/a/1"]);
    assert_eq!(pointers("$.a[0,-3,0:1]", &doc), ["/a/0"]);
}

#[test]
fn selector_matching_nothing() {
    let doc = sample();
    for p in [
        "$.nope",
        "$.user.ssn.deeper",
        "$.tags[3]",
        "$.tags[-4]",
        "$.tags.name",
        "$.user[0]",
        "$..nope",
        "$.users[?@.role == 'root'].ssn",
        "$.user.name[*]",
    ] {
        assert!(both(p, &doc).is_empty(), "{p}");
    }
    assert!(pointers("$[*]", &json!([])).is_empty());
    assert!(pointers("$.*", &json!({})).is_empty());
    assert!(pointers("$.a", &json!("scalar")).is_empty());
}

#[test]
fn overlapping_selections_outermost_wins() {
    let doc = json!({"password": {"password": 1}, "x": {"password": "p"}});
    let locs = select(&q("$..password"), &doc).unwrap();
    let ptrs: Vec<_> = locs.iter().map(|l| l.pointer.as_str()).collect();
    assert_eq!(ptrs, ["/password", "/x/password"]);

    let mut out = doc.clone();
    assert_eq!(rewrite(&mut out, &locs, marker), Ok(2));
    assert_eq!(
        out,
        json!({"password": "<sealed>", "x": {"password": "<sealed>"}})
    );
}

#[test]
fn overlaps_across_queries() {
    let doc = json!({"a": {"b": {"c": 1}}, "d": 2});
    let (abc, ab, d, d2) = (q("$.a.b.c"), q("$.a.b"), q("$.d"), q("$['d']"));
    let found = select_all(&[&abc, &d, &ab, &d2], &doc).unwrap();
    let got: Vec<_> = found
        .iter()
        .map(|(i, l)| (*i, l.pointer.as_str()))
        .collect();
    // The ancestor wins whichever query selected it; on the same node the first query wins.
    assert_eq!(got, [(2, "/a/b"), (1, "/d")]);
}

#[test]
fn root_selection() {
    let doc = json!({"a": 1});
    let locs = both("$", &doc);
    assert_eq!(
        locs,
        vec![Location {
            pointer: String::new(),
            path: "$".into(),
            member: String::new(),
        }]
    );
    // The root swallows every other selection.
    let (root, a) = (q("$"), q("$.a"));
    assert_eq!(select_all(&[&a, &root], &doc).unwrap().len(), 1);
    let mut out = doc.clone();
    assert_eq!(rewrite(&mut out, &locs, marker), Ok(1));
    assert_eq!(out, json!("<sealed>"));
}

#[test]
fn awkward_member_names_round_trip() {
    let names = [
        "it's",
        "a/b",
        "t~0",
        "~1/~",
        "back\\slash",
        "é🦀",
        "",
        "tab\there",
        "\u{1}",
    ];
    let mut doc = serde_json::Map::new();
    for (i, name) in names.iter().enumerate() {
        doc.insert((*name).to_string(), json!([i]));
    }
    let doc = Value::Object(doc);
    let locs = both("$.*", &doc);
    assert_eq!(locs.len(), names.len());
    for loc in &locs {
        let name = &loc.member;
        assert_eq!(doc.pointer(&loc.pointer), doc.get(name.as_str()), "{loc:?}");
        // The path is itself a query that selects the same node.
        assert_eq!(both(&loc.path, &doc), vec![loc.clone()]);
    }
    for loc in both("$.*[0]", &doc) {
        assert!(names.contains(&loc.member.as_str()), "{loc:?}");
    }
}

#[test]
fn identity_rewrite_preserves_types() {
    let doc = json!({
        "s": "x", "i": -3, "u": 18446744073709551615u64, "f": 1.5, "b": false, "n": null,
        "o": {"k": [1, "2", {"3": null}]}, "a": []
    });
    let locs = select(&q("$..*"), &doc).unwrap();
    assert_eq!(locs.len(), 8, "outermost wins: only the root's members");
    let mut out = doc.clone();
    let n = rewrite(&mut out, &locs, |_, v| {
        *v = v.clone();
        Ok::<_, ()>(())
    });
    assert_eq!(n, Ok(8));
    assert_eq!(out, doc);
}

#[test]
fn rewrite_skips_stale_pointers_and_stops_on_error() {
    let mut doc = json!({"a": 1, "b": 2, "c": 3});
    let locs = select(&q("$.*"), &doc).unwrap();
    doc.as_object_mut().unwrap().remove("b");
    let mut seen = Vec::new();
    let n = rewrite(&mut doc, &locs, |l, v| {
        seen.push(l.member.clone());
        *v = json!(0);
        Ok::<_, ()>(())
    });
    assert_eq!((n, seen), (Ok(2), vec!["a".to_string(), "c".to_string()]));

    let mut doc = json!({"a": 1, "b": 2, "c": 3});
    let r = rewrite(&mut doc, &locs, |l, v| {
        if l.member == "b" {
            return Err(l.path.clone());
        }
        *v = json!(0);
        Ok(())
    });
    assert_eq!(r, Err("$['b']".to_string()));
    assert_eq!(doc, json!({"a": 0, "b": 2, "c": 3}));
}

#[test]
fn mask_and_redact_through_rewrite() {
    let mut doc = sample();
    let cards = select(&q("$.cards[*].number"), &doc).unwrap();
    rewrite(&mut doc, &cards, |_, v| {
        *v = mask(v, 4);
        Ok::<_, ()>(())
    })
    .unwrap();
    let cvv = select(&q("$..cvv"), &doc).unwrap();
    rewrite(&mut doc, &cvv, |_, v| {
        *v = redact(v);
        Ok::<_, ()>(())
    })
    .unwrap();
    assert_eq!(
        doc["cards"],
        json!([
            {"number": "************0366", "cvv": null},
            {"number": "************0004", "cvv": null}
        ])
    );
}

#[test]
fn selectors_and_context() {
    let rules = [
        Selector::compile("$.cards[*].number", None).unwrap(),
        Selector::compile("$.user.ssn", Some("ssn-v1".into())).unwrap(),
    ];
    let found = select_selectors(&rules, &sample()).unwrap();
    let got: Vec<_> = found
        .iter()
        .map(|(i, l)| context(&rules[*i], l).to_string())
        .collect();
    assert_eq!(got, ["number", "number", "ssn-v1"]);
}

/// Spans of `text` the byte-level engine selects for `queries`: (selector, path, raw).
fn spans(queries: &[&str], text: &str) -> Result<Vec<(usize, String, String)>, splice::ScanError> {
    let compiled: Vec<JpQuery> = queries.iter().map(|p| q(p)).collect();
    let refs: Vec<&JpQuery> = compiled.iter().collect();
    let plan = splice::Plan::compile(&refs).expect("simple selectors");
    Ok(splice::scan(&plan, text)?
        .into_iter()
        .map(|s| (s.selector, s.path, s.raw.to_string()))
        .collect())
}

#[test]
fn splice_spans_are_exact_and_in_document_order() {
    let text = r#" { "z" : [ 1 , {"ssn" : "a\"b" } ] , "ssn":  {"x": [true, null]} , "\u0073sn" : -1.5e3 } "#;
    let got = spans(&["$..ssn", "$.z[*]"], text).unwrap();
    assert_eq!(
        got,
        [
            (1, "$['z'][0]".into(), "1".into()),
            (1, "$['z'][1]".into(), r#"{"ssn" : "a\"b" }"#.into()),
            (0, "$['ssn']".into(), r#"{"x": [true, null]}"#.into()),
            // An escaped member name is matched by its value, and duplicates are all selected.
            (0, "$['ssn']".into(), "-1.5e3".into()),
        ]
    );
    // The root, and a selector matching nothing.
    assert_eq!(
        spans(&["$"], " [1] ").unwrap(),
        [(0, "$".into(), "[1]".into())]
    );
    assert!(spans(&["$.nothing", "$[3]"], text).unwrap().is_empty());
}

#[test]
fn splice_rejects_what_is_not_one_json_document() {
    for text in [
        "",
        "{",
        r#"{"a":1} {}"#,
        r#"{"a":1,}"#,
        "[1 2]",
        r#"{"a" 1}"#,
        "nul",
        "{'a':1}",
    ] {
        assert!(spans(&["$.a"], text).is_err(), "{text:?} accepted");
    }
    // Deep nesting never recurses without bound: walked levels hit serde_json's limit,
    // skipped and captured ones are validated iteratively (requests check depth apart).
    let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    let walked = format!("${}", "[0]".repeat(140));
    assert!(spans(&[&walked], &deep(10_000)).is_err());
    assert_eq!(spans(&["$[0]"], &deep(100_000)).unwrap().len(), 1);
    assert!(spans(&["$.a"], &deep(100_000)).is_ok());
    // The byte-level bound is exactly the document engine's (serde_json's): they differed by
    // one until the json_transform fuzz target was written.
    for n in 120..=135 {
        let text = format!(r#"{{"a":"x","b":{}}}"#, deep(n));
        assert_eq!(
            splice::nesting_exceeds(&text, splice::MAX_NESTING),
            serde_json::from_str::<serde_json::Value>(&text).is_err(),
            "depth {n}"
        );
    }
    let in_strings = format!(r#"{{"a":"{}\"[[","b":[[1]]}}"#, "[".repeat(500));
    assert!(!splice::nesting_exceeds(&in_strings, 3));
    assert!(splice::nesting_exceeds(&in_strings, 2));
}

#[test]
fn plan_covers_simple_and_descendant_names_only() {
    let compiles = |p: &str| splice::Plan::compile(&[&q(p)]).is_some();
    for p in [
        "$",
        "$.a",
        "$[0]",
        "$[*]",
        "$.*",
        "$..a",
        "$..['a b'].c[*]",
        "$.a..b",
    ] {
        assert!(compiles(p), "{p}");
    }
    for p in ["$[-1]", "$..*", "$..[0]", "$[0,1]", "$[1:2]", "$[?@.a]"] {
        assert!(!compiles(p), "{p}");
    }
}

#[test]
fn walker_agrees_with_library() {
    let docs = [
        sample(),
        json!(null),
        json!("s"),
        json!([]),
        json!({}),
        json!([[1, [2, 3]], {"a": [4]}, {"a": {"a": 5}}]),
        json!({"a": [{"a": 1}, {"b": 2}, 3, [4]], "b": {"a": {"b": null}}, "": {"": 0}}),
    ];
    let queries = [
        "$",
        "$.a",
        "$.b.a",
        "$.a[0]",
        "$.a[-1]",
        "$.a[*]",
        "$.a[*].a",
        "$[*]",
        "$[*][*]",
        "$[*].a",
        "$[0][1][0]",
        "$[-2]",
        "$.*.*",
        "$.*[0]",
        "$['']['']",
        "$.user.*",
        "$.cards[*].number",
        "$.users[1].ssn",
        "$.matrix[*][*]",
        "$.matrix[-1][-2]",
        "$.tags[9]",
    ];
    for doc in &docs {
        for query in queries {
            assert!(fast::simple_selectors(&q(query)).is_some(), "{query}");
            both(query, doc);
        }
    }
}

mod props {
    use super::*;
    use proptest::prelude::*;
    use proptest::sample::Index;

    fn arb_key() -> impl Strategy<Value = String> {
        // Short names over an alphabet heavy with characters that need escaping somewhere.
        "[ab0~/'\\\\\u{1}\n é🦀]{0,3}"
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i32>().prop_map(Value::from),
            "[a-z]{0,3}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 40, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::btree_map(arb_key(), inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// The steps to every node of `doc`, root included.
    fn all_paths(doc: &Value, prefix: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
        out.push(prefix.clone());
        let children: Vec<(Step, &Value)> = match doc {
            Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, v)| (Step::Index(i), v))
                .collect(),
            Value::Object(map) => map.iter().map(|(k, v)| (Step::Key(k.clone()), v)).collect(),
            _ => Vec::new(),
        };
        for (step, child) in children {
            prefix.push(step);
            all_paths(child, prefix, out);
            prefix.pop();
        }
    }

    /// A pattern step: `None` is the wildcard.
    type Pattern = Vec<Option<Step>>;

    fn pattern(steps: &[Step], wild: u32) -> Pattern {
        let wild_at = |i: usize| i < 32 && wild & (1 << i) != 0;
        steps
            .iter()
            .enumerate()
            .map(|(i, s)| (!wild_at(i)).then(|| s.clone()))
            .collect()
    }

    fn render(pattern: &Pattern) -> String {
        let mut out = String::from("$");
        for step in pattern {
            match step {
                None => out.push_str("[*]"),
                Some(Step::Index(i)) => out.push_str(&format!("[{i}]")),
                Some(Step::Key(k)) => {
                    out.push('[');
                    path::push_normal_name(&mut out, k);
                    out.push(']');
                }
            }
        }
        out
    }

    fn matches(pattern: &Pattern, steps: &[Step]) -> bool {
        pattern.len() == steps.len()
            && pattern
                .iter()
                .zip(steps)
                .all(|(p, s)| p.as_ref().is_none_or(|p| p == s))
    }

    /// Independent oracle: the document with every matched node (not inside another matched
    /// node) replaced by the marker.
    fn expected(doc: &Value, patterns: &[Pattern], here: &mut Vec<Step>) -> Value {
        if patterns.iter().any(|p| matches(p, here)) {
            return json!("<sealed>");
        }
        let mut visit = |step: Step, child: &Value| {
            here.push(step);
            let v = expected(child, patterns, here);
            here.pop();
            v
        };
        match doc {
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, c)| visit(Step::Index(i), c))
                    .collect(),
            ),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, c)| (k.clone(), visit(Step::Key(k.clone()), c)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    /// The JSON Pointer of a Normalized Path the engines print (`$['a'][0]` → `/a/0`).
    fn pointer_of(path: &str) -> String {
        let mut out = String::new();
        let mut rest = &path[1..];
        while let Some(r) = rest.strip_prefix('[') {
            if let Some(r) = r.strip_prefix('\'') {
                // A name: up to the closing quote, with \\ and \' escapes.
                let mut name = String::new();
                let mut chars = r.char_indices();
                let mut end = 0;
                while let Some((i, c)) = chars.next() {
                    match c {
                        '\\' => {
                            let (_, e) = chars.next().unwrap();
                            name.push(match e {
                                'b' => '\u{8}',
                                'f' => '\u{c}',
                                'n' => '\n',
                                'r' => '\r',
                                't' => '\t',
                                'u' => {
                                    let hex: String =
                                        (0..4).map(|_| chars.next().unwrap().1).collect();
                                    char::from_u32(u32::from_str_radix(&hex, 16).unwrap()).unwrap()
                                }
                                other => other,
                            });
                        }
                        '\'' => {
                            end = i;
                            break;
                        }
                        c => name.push(c),
                    }
                }
                out.push('/');
                out.push_str(&name.replace('~', "~0").replace('/', "~1"));
                rest = &r[end + 2..];
            } else {
                let close = r.find(']').unwrap();
                out.push('/');
                out.push_str(&r[..close]);
                rest = &r[close + 1..];
            }
        }
        out
    }

    /// (selector, normalized path, member, value) of each selection, sorted by path.
    type Selected = Vec<(usize, String, String, Value)>;

    /// The byte-level engine's selections over `doc`'s compact or pretty text.
    fn scanned(refs: &[&JpQuery], doc: &Value, pretty: bool) -> Selected {
        let text = if pretty {
            serde_json::to_string_pretty(doc).unwrap()
        } else {
            doc.to_string()
        };
        let plan = splice::Plan::compile(refs).expect("simple selectors compile to a plan");
        let mut out: Selected = splice::scan(&plan, &text)
            .unwrap()
            .into_iter()
            .map(|s| {
                assert_eq!(&text[s.start..s.end], s.raw);
                let value = serde_json::from_str(s.raw).unwrap();
                (s.selector, s.path, s.member.into_owned(), value)
            })
            .collect();
        out.sort_by(|a, b| a.1.cmp(&b.1));
        out
    }

    /// The same shape from the `Value` engine's locations.
    fn selected(found: &[(usize, Location)], doc: &Value) -> Selected {
        let mut out: Selected = found
            .iter()
            .map(|(i, l)| {
                let value = doc.pointer(&l.pointer).unwrap().clone();
                (*i, l.path.clone(), l.member.clone(), value)
            })
            .collect();
        out.sort_by(|a, b| a.1.cmp(&b.1));
        out
    }

    proptest! {
        /// `..name` (the one non-simple segment the byte-level engine supports) selects what
        /// jsonpath-rust selects, after outermost-wins.
        #[test]
        fn splice_agrees_with_library_on_descendants(
            doc in arb_json(),
            picks in prop::collection::vec(any::<Index>(), 1..3),
            tail in any::<bool>(),
        ) {
            let mut paths = Vec::new();
            all_paths(&doc, &mut Vec::new(), &mut paths);
            let keys: Vec<String> = paths
                .iter()
                .filter_map(|p| match p.last() {
                    Some(Step::Key(k)) => Some(k.clone()),
                    _ => None,
                })
                .collect();
            prop_assume!(!keys.is_empty());
            let sources: Vec<String> = picks
                .iter()
                .enumerate()
                .map(|(n, i)| {
                    let mut src = String::from("$..");
                    path::push_normal_name(&mut src, i.get::<String>(&keys));
                    let src = format!("$..[{}]", &src[3..]);
                    if tail && n == 0 { format!("{src}[*]") } else { src }
                })
                .collect();
            let queries: Vec<JpQuery> = sources.iter().map(|p| q(p)).collect();
            let refs: Vec<&JpQuery> = queries.iter().collect();
            let library = select_all_with(&refs, &doc, Engine::Library).unwrap();
            let wanted = selected(&library, &doc);
            prop_assert_eq!(&scanned(&refs, &doc, false), &wanted, "{:?}", sources);
            prop_assert_eq!(&scanned(&refs, &doc, true), &wanted, "{:?}", sources);
        }

        /// The streaming engine, fed the text cut at random places, writes exactly what the
        /// splice engine writes on the whole text: the same values replaced, with the same
        /// paths and contexts, every other byte as it was.
        #[test]
        fn streaming_agrees_with_splice_at_every_cut(
            doc in arb_json(),
            picks in prop::collection::vec((any::<Index>(), any::<u32>()), 1..4),
            descendant in any::<Option<Index>>(),
            pretty in any::<bool>(),
            cuts in prop::collection::vec(1usize..64, 1..40),
        ) {
            let mut paths = Vec::new();
            all_paths(&doc, &mut Vec::new(), &mut paths);
            let mut sources: Vec<String> =
                picks.iter().map(|(i, w)| render(&pattern(i.get::<Vec<Step>>(&paths), *w))).collect();
            let keys: Vec<&String> = paths.iter().filter_map(|p| match p.last() {
                Some(Step::Key(k)) => Some(k),
                _ => None,
            }).collect();
            if let (Some(i), false) = (descendant, keys.is_empty()) {
                let mut name = String::new();
                path::push_normal_name(&mut name, i.get::<&String>(&keys));
                sources.insert(0, format!("$..[{name}]"));
            }
            let queries: Vec<JpQuery> = sources.iter().map(|p| q(p)).collect();
            let refs: Vec<&JpQuery> = queries.iter().collect();
            let plan = splice::Plan::compile(&refs).expect("simple selectors compile to a plan");
            let text = if pretty { serde_json::to_string_pretty(&doc).unwrap() } else { doc.to_string() };
            let mark = |selector: usize, path: &str, member: &str| {
                format!("\"<{selector} {path} {member}>\"").into_bytes()
            };
            let spans = splice::scan(&plan, &text).unwrap();
            let edits: Vec<splice::Edit> = spans.iter().map(|s| splice::Edit {
                start: s.start,
                end: s.end,
                replacement: zeroize::Zeroizing::new(mark(s.selector, &s.path, &s.member)),
            }).collect();
            let wanted = splice::splice(&text, &edits);

            let mut streamer = stream::Streamer::new(plan.clone(), usize::MAX);
            let mut out = Vec::new();
            let mut replace = |v: stream::Selected<'_>, out: &mut Vec<u8>| -> Result<(), ()> {
                let raw: Value = serde_json::from_slice(v.raw).unwrap();
                let path = v.path.spell();
                assert_eq!(raw, doc.pointer(&pointer_of(&path)).cloned().unwrap_or(Value::Null));
                out.extend_from_slice(&mark(v.selector, &path, v.member));
                Ok(())
            };
            let bytes = text.as_bytes();
            let (mut at, mut cut) = (0, cuts.iter().cycle());
            while at < bytes.len() {
                let end = (at + cut.next().unwrap()).min(bytes.len());
                streamer.feed(&bytes[at..end], &mut out, &mut replace).unwrap();
                at = end;
            }
            streamer.finish(&mut out, &mut replace).unwrap();
            prop_assert_eq!(String::from_utf8(out).unwrap(), String::from_utf8(wanted).unwrap());
        }

        #[test]
        fn rewrite_touches_exactly_the_selected_nodes(
            doc in arb_json(),
            picks in prop::collection::vec((any::<Index>(), any::<u32>()), 1..4),
        ) {
            let mut paths = Vec::new();
            all_paths(&doc, &mut Vec::new(), &mut paths);
            let patterns: Vec<Pattern> =
                picks.iter().map(|(i, w)| pattern(i.get::<Vec<Step>>(&paths), *w)).collect();
            let queries: Vec<JpQuery> = patterns.iter().map(|p| q(&render(p))).collect();
            let refs: Vec<&JpQuery> = queries.iter().collect();

            let found = select_all(&refs, &doc).unwrap();
            let library = select_all_with(&refs, &doc, Engine::Library).unwrap();
            prop_assert_eq!(&found, &library);
            let wanted = selected(&library, &doc);
            prop_assert_eq!(&scanned(&refs, &doc, false), &wanted);
            prop_assert_eq!(&scanned(&refs, &doc, true), &wanted);

            let locations: Vec<Location> = found.into_iter().map(|(_, l)| l).collect();
            let mut out = doc.clone();
            let applied = rewrite(&mut out, &locations, marker).unwrap();
            prop_assert_eq!(applied, locations.len());
            for loc in &locations {
                prop_assert_eq!(out.pointer(&loc.pointer), Some(&json!("<sealed>")));
                let inside_other = locations
                    .iter()
                    .any(|o| o != loc && loc.pointer.starts_with(&format!("{}/", o.pointer)));
                prop_assert!(!inside_other, "{} is inside another location", loc.path);
            }
            prop_assert_eq!(out, expected(&doc, &patterns, &mut Vec::new()));
        }
    }
}
