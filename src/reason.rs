//! Why a field, a token, a client-encrypted value or an envelope was refused: one typed
//! vocabulary, shared by the crypto layer (which finds the reason), the field engine (which
//! attaches it to a field), the error JSON, metrics and the audit log (which print it).
//!
//! It sits at the bottom of the crate so every layer can name a reason without importing the
//! layer that produced it, and so no layer turns a reason string back into a type. The
//! `snake_case` spellings are public interface (contract §6 messages, the
//! `fieldseal_field_failures_total{reason}` label, audit records): never rename one.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    // --- The field engine ---------------------------------------------------------------
    /// A selector could not be evaluated on the document.
    SelectionFailed,
    /// A rule needs the keyring and none is configured (config validation prevents it).
    KeyringUnavailable,
    /// The OS random source failed while sealing.
    RandomSourceFailed,
    /// A selected value could not be read or re-serialised.
    InvalidValue,
    /// Plaintext at a decrypt path of a `require_encrypted` route.
    PlaintextNotAllowed,
    /// An opened value of a JSON type the rule does not accept.
    UnexpectedType,
    /// More client-encrypted values in one request than `limits.max_encrypted_values`.
    TooManyEncryptedValues,
    /// A JWE whose `fsc` names another field.
    ContextMismatch,
    /// A JWE without `fsc` on a `require_context` route.
    MissingContext,
    /// A `max_age` route with no replay store to check against (fail closed).
    ReplayCheckUnavailable,

    // --- Tokens and client-encrypted values ------------------------------------------------
    /// Not an `fs1.<kid>.<payload>` token.
    MalformedToken,
    /// The token payload is not unpadded base64url of nonce, ciphertext and tag.
    BadEncoding,
    /// No key with this id.
    UnknownKey,
    /// The key exists but is disabled.
    KeyDisabled,
    /// An `fs1` token failed authentication (tampered, another context, another key).
    AuthenticationFailed,
    /// Authentic, but the plaintext is not the JSON it must be.
    NotJson,
    /// An expiring token past its expiry.
    Expired,
    /// A subject-bound token where no data subject is known.
    NoSubject,
    /// A subject-bound token of an erased data subject.
    SubjectErased,
    /// Another token format where a field is sealed per subject.
    NotSubjectBound,
    /// A JWE or envelope that is not well formed.
    Malformed,
    UnsupportedAlgorithm,
    UnsupportedHeader,
    TooLarge,
    /// A JWE or envelope that did not unwrap or authenticate (deliberately not told apart).
    DecryptionFailed,
    NotUtf8,
    BadHeader,

    // --- Freshness and replay (contract §3 of 1.1) ------------------------------------------
    MissingIat,
    Stale,
    IatInFuture,
    MissingJti,
    Replayed,
    /// The replay store is full of live entries (answered 503, not 400).
    ReplayCacheFull,

    // --- Envelopes ----------------------------------------------------------------------
    /// An envelope route got no envelope.
    Missing,
}

impl Reason {
    /// The stable `snake_case` spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::SelectionFailed => "selection_failed",
            Reason::KeyringUnavailable => "keyring_unavailable",
            Reason::RandomSourceFailed => "random_source_failed",
            Reason::InvalidValue => "invalid_value",
            Reason::PlaintextNotAllowed => "plaintext_not_allowed",
            Reason::UnexpectedType => "unexpected_type",
            Reason::TooManyEncryptedValues => "too_many_encrypted_values",
            Reason::ContextMismatch => "context_mismatch",
            Reason::MissingContext => "missing_context",
            Reason::ReplayCheckUnavailable => "replay_check_unavailable",
            Reason::MalformedToken => "malformed_token",
            Reason::BadEncoding => "bad_encoding",
            Reason::UnknownKey => "unknown_key",
            Reason::KeyDisabled => "key_disabled",
            Reason::AuthenticationFailed => "authentication_failed",
            Reason::NotJson => "not_json",
            Reason::Expired => "expired",
            Reason::NoSubject => "no_subject",
            Reason::SubjectErased => "subject_erased",
            Reason::NotSubjectBound => "not_subject_bound",
            Reason::Malformed => "malformed",
            Reason::UnsupportedAlgorithm => "unsupported_algorithm",
            Reason::UnsupportedHeader => "unsupported_header",
            Reason::TooLarge => "too_large",
            Reason::DecryptionFailed => "decryption_failed",
            Reason::NotUtf8 => "not_utf8",
            Reason::BadHeader => "bad_header",
            Reason::MissingIat => "missing_iat",
            Reason::Stale => "stale",
            Reason::IatInFuture => "iat_in_future",
            Reason::MissingJti => "missing_jti",
            Reason::Replayed => "replayed",
            Reason::ReplayCacheFull => "replay_cache_full",
            Reason::Missing => "missing",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for Reason {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every spelling is distinct: two reasons printed alike could not be told apart in
    /// metrics or audit records.
    #[test]
    fn spellings_are_distinct_and_snake_case() {
        use Reason::*;
        let all = [
            SelectionFailed,
            KeyringUnavailable,
            RandomSourceFailed,
            InvalidValue,
            PlaintextNotAllowed,
            UnexpectedType,
            TooManyEncryptedValues,
            ContextMismatch,
            MissingContext,
            ReplayCheckUnavailable,
            MalformedToken,
            BadEncoding,
            UnknownKey,
            KeyDisabled,
            AuthenticationFailed,
            NotJson,
            Expired,
            NoSubject,
            SubjectErased,
            NotSubjectBound,
            Malformed,
            UnsupportedAlgorithm,
            UnsupportedHeader,
            TooLarge,
            DecryptionFailed,
            NotUtf8,
            BadHeader,
            MissingIat,
            Stale,
            IatInFuture,
            MissingJti,
            Replayed,
            ReplayCacheFull,
            Missing,
        ];
        let spellings: std::collections::HashSet<&str> = all.iter().map(|r| r.as_str()).collect();
        assert_eq!(spellings.len(), all.len());
        assert!(spellings.iter().all(|s| s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')));
    }
}
