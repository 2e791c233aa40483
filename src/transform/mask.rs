//! Irreversible value transforms: masking and redaction.
//!
//! Masking keeps a recognisable tail (`************0366`) for support staff while hiding the
//! rest; redaction removes the value entirely. Both must fail closed: a value that cannot be
//! masked meaningfully is redacted rather than passed through.

use serde_json::Value;

/// Masks `value`, keeping its last `keep_last` characters.
///
/// - String: every character but the last `keep_last` becomes `*`; the length is kept (it is
///   part of the familiar masked look). Characters are Unicode scalar values, not bytes, so a
///   multi-byte character is never split; a combining sequence may be, as graphemes are not
///   tracked. A string of at most `keep_last` characters becomes all `*`: keeping it would
///   reveal the whole value.
/// - Number: masked as its JSON text (`1234.5` → `"***4.5"` with `keep_last` 3), and so
///   becomes a string.
/// - Null: stays null (there is nothing to hide).
/// - Boolean, object, array: become null. A masked boolean would still reveal its value by its
///   length (`****` vs `*****`), and masking a container's text would leak its shape and
///   produce something no consumer can use; redacting is the only safe outcome.
pub fn mask(value: &Value, keep_last: usize) -> Value {
    match value {
        Value::String(s) => Value::String(mask_str(s, keep_last)),
        Value::Number(n) => Value::String(mask_str(&n.to_string(), keep_last)),
        Value::Null | Value::Bool(_) | Value::Array(_) | Value::Object(_) => Value::Null,
    }
}

/// Redacts `value`: whatever it was, the result is `null`. Taking the value keeps the
/// signature uniform with the other transforms.
pub fn redact(_value: &Value) -> Value {
    Value::Null
}

fn mask_str(s: &str, keep_last: usize) -> String {
    let len = s.chars().count();
    let hidden = if len <= keep_last {
        len
    } else {
        len - keep_last
    };
    let mut out = String::with_capacity(s.len());
    out.extend(std::iter::repeat_n('*', hidden));
    out.extend(s.chars().skip(hidden));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn masks_card_numbers() {
        assert_eq!(
            mask(&json!("4111111111110366"), 4),
            json!("************0366")
        );
    }

    #[test]
    fn short_strings_become_all_stars() {
        assert_eq!(mask(&json!("0366"), 4), json!("****"));
        assert_eq!(mask(&json!("366"), 4), json!("***"));
        assert_eq!(mask(&json!(""), 4), json!(""));
    }

    #[test]
    fn keep_zero_hides_everything() {
        assert_eq!(mask(&json!("secret"), 0), json!("******"));
    }

    #[test]
    fn counts_unicode_scalar_values() {
        assert_eq!(mask(&json!("héllo wörld"), 3), json!("********rld"));
        assert_eq!(mask(&json!("日本語テキスト"), 2), json!("*****スト"));
        assert_eq!(mask(&json!("ab🦀🦀"), 1), json!("***🦀"));
        assert_eq!(mask(&json!("🦀"), 1), json!("*"));
    }

    #[test]
    fn numbers_become_masked_strings() {
        assert_eq!(
            mask(&json!(4111111111110366u64), 4),
            json!("************0366")
        );
        assert_eq!(mask(&json!(-42), 1), json!("**2"));
        assert_eq!(mask(&json!(1234.5), 3), json!("***4.5"));
        assert_eq!(mask(&json!(7), 4), json!("*"));
    }

    #[test]
    fn other_types() {
        assert_eq!(mask(&json!(null), 4), json!(null));
        assert_eq!(mask(&json!(true), 4), json!(null));
        assert_eq!(mask(&json!(false), 0), json!(null));
        assert_eq!(mask(&json!({"a": "1234"}), 2), json!(null));
        assert_eq!(mask(&json!(["1234"]), 2), json!(null));
    }

    #[test]
    fn redacts_everything() {
        for v in [
            json!("x"),
            json!(1),
            json!(true),
            json!(null),
            json!({"a": 1}),
            json!([1]),
        ] {
            assert_eq!(redact(&v), Value::Null);
        }
    }
}
