//! JSONPath selectors of route rules, compiled once at config time.
//!
//! The transforms that use them arrive with field encryption; compiling now means `check`
//! reports a bad selector before anything runs.

use jsonpath_rust::parser::model::JpQuery;
use jsonpath_rust::parser::parse_json_path;

/// A compiled selector and the AAD context its tokens are bound to (contract §1).
#[derive(Debug, Clone)]
pub struct Selector {
    /// The selector as written, for `check` output and error messages.
    pub source: String,
    pub query: JpQuery,
    /// Explicit context; `None` means the member-name rule of contract §1.
    pub context: Option<String>,
}

impl Selector {
    /// Compiles `path`; the error is the parser's readable explanation.
    pub fn compile(path: &str, context: Option<String>) -> Result<Self, String> {
        if !path.starts_with('$') {
            return Err("a JSONPath selector must start with `$`".into());
        }
        let query = parse_json_path(path).map_err(|e| format!("invalid JSONPath: {e}"))?;
        if let Some(c) = &context {
            if c.is_empty() {
                return Err("context must not be empty".into());
            }
        }
        Ok(Self {
            source: path.to_string(),
            query,
            context,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiles_common_selectors() {
        for p in ["$.ssn", "$.cards[*].number", "$..password", "$['a b'][0]"] {
            Selector::compile(p, None).unwrap_or_else(|e| panic!("{p}: {e}"));
        }
    }

    #[test]
    fn rejects_bad_selectors() {
        assert!(Selector::compile("ssn", None).is_err());
        assert!(Selector::compile("$.cards[", None).is_err());
        assert!(Selector::compile("$.a", Some(String::new())).is_err());
    }
}
