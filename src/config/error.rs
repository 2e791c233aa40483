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
        Kind::Message(m) => m.clone(),
        Kind::InvalidType(actual, expected) => {
            format!("expected {expected}, found {}", kind_of(actual))
        }
        Kind::InvalidValue(actual, expected) => {
            format!("invalid {} value, expected {expected}", kind_of(actual))
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
