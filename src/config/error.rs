//! Configuration problems: each names where it came from (file or environment variable), the key
//! path, and what is wrong — and never echoes the offending value, which may be a secret.

use std::fmt;

use figment::error::{Actual, Kind};

/// One thing wrong with the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The file (or `env FIELDSEAL_…` variable) the value came from.
    pub origin: String,
    /// Dotted key path, e.g. `routes.1.match.path`; empty for the file as a whole.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.origin, self.message)
        } else {
            write!(f, "{}: {}: {}", self.origin, self.key, self.message)
        }
    }
}

/// Every problem found in one configuration; startup and `check` report all of them at once.
#[derive(Debug, Clone, Default)]
pub struct ConfigErrors(pub Vec<ConfigProblem>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Describes a figment/serde error without the value that caused it.
pub fn redacted_message(kind: &Kind) -> String {
    match kind {
        Kind::Message(m) => user_facing(m),
        Kind::InvalidType(actual, expected) => {
            format!(
                "expected {}, found {}",
                user_facing(expected),
                kind_of(actual)
            )
        }
        Kind::InvalidValue(actual, expected) => {
            format!(
                "invalid {} value, expected {}",
                kind_of(actual),
                user_facing(expected)
            )
        }
        Kind::InvalidLength(len, expected) => format!("{len} items, expected {expected}"),
        Kind::UnknownVariant(_, expected) => {
            format!("unknown value, expected one of: {}", expected.join(", "))
        }
        Kind::UnknownField(_, expected) => {
            format!("unknown key (known keys: {})", expected.join(", "))
        }
        Kind::MissingField(name) => format!("missing required key `{name}`"),
        Kind::DuplicateField(name) => format!("duplicate key `{name}`"),
        Kind::ISizeOutOfRange(_) | Kind::USizeOutOfRange(_) => "number out of range".into(),
        Kind::Unsupported(actual) => format!("unsupported {} value", kind_of(actual)),
        Kind::UnsupportedKey(actual, expected) => {
            format!("a {} cannot be a key, expected {expected}", kind_of(actual))
        }
    }
}

/// The shapes serde names by their Rust types (`struct RawMask`, `untagged enum RawSelector`),
/// in the words of the configuration reference: users never see an internal type name.
const SHAPES: &[(&str, &str)] = &[
    ("struct RawMask", "a mapping `{ path, keep_last }`"),
    ("struct RawMatch", "a mapping `{ path, methods }`"),
    ("struct RawRoute", "a route `{ name, match, … }`"),
    ("struct RawTls", "a mapping `{ cert, key, client_ca }`"),
    ("struct RawKeys", "a mapping of key settings"),
    (
        "struct RawRotation",
        "a mapping `{ max_age, max_encryptions }`",
    ),
    ("struct RawAudit", "a mapping `{ sink, key_file }`"),
    (
        "struct RawFieldRule",
        "a mapping `{ select, action, context, keep_last, seal_null }`",
    ),
    ("struct RawGuard", "a mapping `{ detect, mode }`"),
    (
        "enum RawAction",
        "one of `encrypt`, `redact`, `mask`, `mask_email`, `year`",
    ),
    ("enum GuardMode", "one of `observe`, `block`"),
    ("enum OnNonJson", "one of `fail`, `pass`"),
    ("struct RawReload", "a mapping `{ watch, interval }`"),
    ("struct RawTimeouts", "a mapping of timeouts"),
    ("struct RawLimits", "a mapping of limits"),
    (
        "struct RawResponseRules",
        "a mapping `{ encrypt, redact, mask, mask_email, year, on_non_json }`",
    ),
    (
        "struct RawRequestRules",
        "a mapping `{ decrypt, require_encrypted, require_context, max_age }`",
    ),
    (
        "struct RawSelectorWithContext",
        "a mapping `{ path, context, type, seal_null }`",
    ),
    (
        "data did not match any variant of untagged enum RawSelector",
        "expected a JSONPath string or a mapping `{ path, context, type, seal_null }`",
    ),
    (
        "data did not match any variant of untagged enum OneOrMany",
        "expected one value or a list of them",
    ),
];

/// `text` with every internal type name replaced by its user-facing shape.
fn user_facing(text: &str) -> String {
    // serde names integer types by their Rust names (`expected usize`).
    if matches!(text, "usize" | "u64" | "u32" | "u16" | "u8" | "i64" | "i32") {
        return "a whole number".into();
    }
    let mut out = text.to_string();
    for (internal, shape) in SHAPES {
        if out.contains(internal) {
            out = out.replace(internal, shape);
        }
    }
    out
}

/// The type of a value, never the value itself.
fn kind_of(actual: &Actual) -> &'static str {
    match actual {
        Actual::Bool(_) => "boolean",
        Actual::Unsigned(_) | Actual::Signed(_) => "integer",
        Actual::Float(_) => "float",
        Actual::Char(_) | Actual::Str(_) => "string",
        Actual::Bytes(_) => "bytes",
        Actual::Unit | Actual::Option => "null",
        Actual::Seq => "list",
        Actual::Map => "map",
        _ => "value",
    }
}

#[cfg(test)]
mod shape_tests {
    use super::*;

    #[test]
    fn internal_type_names_never_reach_the_user() {
        for (internal, _) in SHAPES {
            let said = user_facing(&format!("expected {internal}"));
            assert!(!said.contains("Raw"), "{said}");
            assert!(!said.contains("untagged"), "{said}");
        }
        assert_eq!(user_facing("usize"), "a whole number");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_errors_never_echo_the_value() {
        let kind = Kind::InvalidType(Actual::Str("hunter2".into()), "a boolean".into());
        let msg = redacted_message(&kind);
        assert!(!msg.contains("hunter2"), "{msg}");
        assert_eq!(msg, "expected a boolean, found string");
        let kind = Kind::UnknownVariant("s3cret".into(), &["fail", "pass"]);
        assert!(!redacted_message(&kind).contains("s3cret"));
    }
}
