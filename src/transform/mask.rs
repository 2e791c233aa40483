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

/// Masks an email address for people who need to recognise it, not use it: the first
/// character of the local part and the whole domain stay, the rest of the local part becomes
/// `*` with its length kept (`ada.lovelace@example.com` → `a***********@example.com`). A string
/// that is not an address (no `@`, or nothing before or after the last one) is masked whole, a
/// number too; other types become null, as with [`mask`].
pub fn mask_email(value: &Value) -> Value {
    let Value::String(s) = value else {
        return mask(value, 0);
    };
    match s.rsplit_once('@') {
        Some((local, domain)) if !local.is_empty() && !domain.is_empty() => {
            let mut chars = local.chars();
            let first = chars.next().expect("the local part is not empty");
            let mut out = String::with_capacity(s.len());
            out.push(first);
            out.extend(chars.map(|_| '*'));
            out.push('@');
            out.push_str(domain);
            Value::String(out)
        }
        _ => mask(value, 0),
    }
}

/// Generalises a date to its year, for data minimisation (a date of birth kept for an age
/// bracket): a string starting with a four-digit year followed by `-` (`1985-04-12`,
/// `1985-04-12T08:00:00Z`) becomes that year as a string (`"1985"`). Anything else becomes
/// null: generalising what is not a date would pass it on.
pub fn year(value: &Value) -> Value {
    match value {
        Value::String(s)
            if s.len() > 4
                && s.as_bytes()[..4].iter().all(u8::is_ascii_digit)
                && s.as_bytes()[4] == b'-' =>
        {
            Value::String(s[..4].to_string())
        }
        _ => Value::Null,
    }
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
    fn masks_emails_keeping_the_first_character_and_the_domain() {
        assert_eq!(
            mask_email(&json!("ada.lovelace@example.com")),
            json!("a***********@example.com")
        );
        assert_eq!(mask_email(&json!("a@b.io")), json!("a@b.io"));
        // The domain is what follows the last `@` (a quoted local part may hold one).
        assert_eq!(mask_email(&json!("\"q@x\"@ex.org")), json!("\"****@ex.org"));
        // Not an address: masked whole; numbers too; other types null.
        assert_eq!(mask_email(&json!("no-at-sign")), json!("**********"));
        assert_eq!(mask_email(&json!("@example.com")), json!("************"));
        assert_eq!(mask_email(&json!(12345)), json!("*****"));
        assert_eq!(mask_email(&json!({"a": 1})), json!(null));
        assert_eq!(mask_email(&json!(null)), json!(null));
    }

    #[test]
    fn years_of_dates_and_null_for_anything_else() {
        assert_eq!(year(&json!("1985-04-12")), json!("1985"));
        assert_eq!(year(&json!("1985-04-12T08:00:00Z")), json!("1985"));
        for other in [
            json!("1985"),
            json!("12/04/1985"),
            json!(1985),
            json!("abcd-01-01"),
            json!(null),
            json!(true),
        ] {
            assert_eq!(year(&other), json!(null), "{other}");
        }
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
