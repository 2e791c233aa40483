//! The route from the document root to a selected node, and its three spellings.
//!
//! jsonpath-rust reports each result as an RFC 9535 Normalized Path (`$['users'][0]['ssn']`,
//! §2.7), but `serde_json` can only mutate through an RFC 6901 JSON Pointer (`/users/0/ssn`).
//! Both are renderings of the same list of [`Step`]s, so we parse the Normalized Path into steps
//! and render every spelling from those steps. The fast walker builds the same steps directly,
//! which is what makes its [`Location`]s identical to the library's.

use std::fmt::Write as _;

use super::Location;

/// One move from a node to one of its children.
///
/// The derived order (indexes numerically, names by code point, a prefix before its extensions)
/// is serde_json's iteration order for its default `BTreeMap`-backed objects, i.e. document
/// order, with every node before its descendants.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Step {
    /// An array element.
    Index(usize),
    /// An object member.
    Key(String),
}

/// Builds the [`Location`] of the node reached by `steps` from the root.
pub(crate) fn locate(steps: &[Step]) -> Location {
    let mut pointer = String::new();
    let mut path = String::from("$");
    for step in steps {
        match step {
            Step::Index(i) => {
                // Writing to a String cannot fail.
                let _ = write!(pointer, "/{i}");
                let _ = write!(path, "[{i}]");
            }
            Step::Key(name) => {
                pointer.push('/');
                push_pointer_token(&mut pointer, name);
                path.push('[');
                push_normal_name(&mut path, name);
                path.push(']');
            }
        }
    }
    Location {
        pointer,
        path,
        member: member(steps).to_string(),
    }
}

/// The AAD member rule: the innermost object member on the route (for an array element, the
/// member holding the array, however deeply nested), or `""` when there is none (the root, or
/// elements of a root array).
pub(crate) fn member(steps: &[Step]) -> &str {
    steps
        .iter()
        .rev()
        .find_map(|s| match s {
            Step::Key(name) => Some(name.as_str()),
            Step::Index(_) => None,
        })
        .unwrap_or("")
}

/// Appends `name` as an RFC 6901 reference token: `~` becomes `~0`, `/` becomes `~1`.
pub(crate) fn push_pointer_token(out: &mut String, name: &str) {
    for ch in name.chars() {
        match ch {
            '~' => out.push_str("~0"),
            '/' => out.push_str("~1"),
            c => out.push(c),
        }
    }
}

/// Appends `name` as an RFC 9535 `normal-name-selector` (§2.7): single-quoted, escaping only
/// `'`, `\` and the C0 controls (the short forms where they exist, else lowercase `\u00xx`).
/// This is byte-for-byte what jsonpath-rust 1.0.12 emits.
pub(crate) fn push_normal_name(out: &mut String, name: &str) {
    out.push('\'');
    for ch in name.chars() {
        match ch {
            '\u{0008}' => out.push_str("\\b"),
            '\u{000C}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\'' => out.push_str("\\'"),
            '\\' => out.push_str("\\\\"),
            c if c < '\u{0020}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('\'');
}

/// Parses a Normalized Path (`$`, then `[index]` / `['name']` segments) into steps.
///
/// Accepts exactly the §2.7 escapes, plus any `\uXXXX` (surrogate pairs included) for leniency.
pub(crate) fn parse_normalized(path: &str) -> Result<Vec<Step>, String> {
    let mut chars = path.chars().peekable();
    if chars.next() != Some('$') {
        return Err(format!("normalized path `{path}` does not start with `$`"));
    }
    let mut steps = Vec::new();
    while let Some(open) = chars.next() {
        if open != '[' {
            return Err(format!(
                "normalized path `{path}`: expected `[`, found `{open}`"
            ));
        }
        let step = match chars.peek() {
            Some('\'') => {
                chars.next();
                Step::Key(parse_name(&mut chars).map_err(|e| format!("`{path}`: {e}"))?)
            }
            _ => Step::Index(parse_index(&mut chars).map_err(|e| format!("`{path}`: {e}"))?),
        };
        if chars.next() != Some(']') {
            return Err(format!("normalized path `{path}`: unclosed `[`"));
        }
        steps.push(step);
    }
    Ok(steps)
}

type Chars<'a> = std::iter::Peekable<std::str::Chars<'a>>;

/// Reads decimal digits up to (not including) the closing `]`.
fn parse_index(chars: &mut Chars<'_>) -> Result<usize, String> {
    let mut digits = String::new();
    while let Some(c) = chars.peek().copied().filter(char::is_ascii_digit) {
        digits.push(c);
        chars.next();
    }
    digits
        .parse()
        .map_err(|_| format!("bad array index `{digits}`"))
}

/// Reads a quoted name after its opening `'`, consuming the closing `'`.
fn parse_name(chars: &mut Chars<'_>) -> Result<String, String> {
    let mut name = String::new();
    loop {
        match chars.next() {
            None => return Err("unterminated member name".into()),
            Some('\'') => return Ok(name),
            Some('\\') => name.push(parse_escape(chars)?),
            Some(c) => name.push(c),
        }
    }
}

/// Decodes the escape sequence after a `\`.
fn parse_escape(chars: &mut Chars<'_>) -> Result<char, String> {
    match chars.next() {
        Some('b') => Ok('\u{0008}'),
        Some('f') => Ok('\u{000C}'),
        Some('n') => Ok('\n'),
        Some('r') => Ok('\r'),
        Some('t') => Ok('\t'),
        Some('\'') => Ok('\''),
        Some('\\') => Ok('\\'),
        Some('u') => parse_unicode_escape(chars),
        other => Err(format!("bad escape `\\{}`", other.unwrap_or(' '))),
    }
}

/// Decodes `XXXX` after `\u`, joining a UTF-16 surrogate pair when one follows.
fn parse_unicode_escape(chars: &mut Chars<'_>) -> Result<char, String> {
    let high = hex4(chars)?;
    if !(0xD800..0xDC00).contains(&high) {
        return char::from_u32(high).ok_or_else(|| format!("lone surrogate \\u{high:04x}"));
    }
    if chars.next() != Some('\\') || chars.next() != Some('u') {
        return Err(format!("lone surrogate \\u{high:04x}"));
    }
    let low = hex4(chars)?;
    if !(0xDC00..0xE000).contains(&low) {
        return Err(format!("bad surrogate pair \\u{high:04x}\\u{low:04x}"));
    }
    let code = 0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00);
    char::from_u32(code).ok_or_else(|| "bad surrogate pair".to_string())
}

fn hex4(chars: &mut Chars<'_>) -> Result<u32, String> {
    let hex: String = chars.by_ref().take(4).collect();
    if hex.len() != 4 {
        return Err("short \\u escape".into());
    }
    u32::from_str_radix(&hex, 16).map_err(|_| format!("bad \\u escape `{hex}`"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> Step {
        Step::Key(s.to_string())
    }

    #[test]
    fn parses_and_renders_plain_paths() {
        let steps = parse_normalized("$['cards'][0]['number']").unwrap();
        assert_eq!(steps, vec![key("cards"), Step::Index(0), key("number")]);
        let loc = locate(&steps);
        assert_eq!(loc.pointer, "/cards/0/number");
        assert_eq!(loc.path, "$['cards'][0]['number']");
        assert_eq!(loc.member, "number");
    }

    #[test]
    fn root_is_empty_pointer_and_member() {
        assert_eq!(parse_normalized("$").unwrap(), vec![]);
        let loc = locate(&[]);
        assert_eq!((loc.pointer.as_str(), loc.path.as_str()), ("", "$"));
        assert_eq!(loc.member, "");
    }

    #[test]
    fn member_rule() {
        let m = |p: &str| member(&parse_normalized(p).unwrap()).to_string();
        assert_eq!(m("$['cards'][0]['number']"), "number");
        assert_eq!(m("$['tags'][2]"), "tags");
        assert_eq!(m("$['a'][0][1]"), "a");
        assert_eq!(m("$[0]"), "");
        assert_eq!(m("$[0][3]"), "");
        assert_eq!(m("$[0]['x']"), "x");
        assert_eq!(m("$"), "");
    }

    #[test]
    fn escapes_round_trip() {
        let names = [
            "it's",
            "a/b",
            "t~ilde",
            "~1",
            "back\\slash",
            "ctl\u{1}\u{8}\u{c}\n\r\t\u{1f}",
            "émoji 🦀",
            "",
            "\"dq\"",
        ];
        for name in names {
            let loc = locate(&[key(name)]);
            assert_eq!(
                parse_normalized(&loc.path).unwrap(),
                vec![key(name)],
                "{name:?}"
            );
            let doc = serde_json::json!({ name: 1 });
            assert_eq!(
                doc.pointer(&loc.pointer),
                Some(&serde_json::json!(1)),
                "{name:?}"
            );
        }
    }

    #[test]
    fn pointer_escaping() {
        let loc = locate(&[key("a/b~c"), Step::Index(10)]);
        assert_eq!(loc.pointer, "/a~1b~0c/10");
        assert_eq!(loc.path, "$['a/b~c'][10]");
    }

    #[test]
    fn lenient_unicode_escapes() {
        let steps = parse_normalized("$['\\u00e9\\ud83e\\udd80\\u001F']").unwrap();
        assert_eq!(steps, vec![key("é🦀\u{1f}")]);
    }

    #[test]
    fn rejects_malformed_paths() {
        for bad in [
            "",
            "a",
            "$[",
            "$['a'",
            "$['a]",
            "$[x]",
            "$[]",
            "$.a",
            "$['\\x']",
            "$['\\ud800']",
            "$['\\u12']",
            "$[0]x",
        ] {
            assert!(parse_normalized(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn order_is_document_order() {
        let mut v = vec![
            vec![key("b")],
            vec![key("a"), Step::Index(10)],
            vec![key("a")],
            vec![key("a"), Step::Index(9)],
            vec![],
        ];
        v.sort();
        assert_eq!(
            v,
            vec![
                vec![],
                vec![key("a")],
                vec![key("a"), Step::Index(9)],
                vec![key("a"), Step::Index(10)],
                vec![key("b")],
            ]
        );
    }
}
