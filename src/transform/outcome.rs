//! The field engine's outcome vocabulary: what was done to a field ([`FieldOp`], [`Action`])
//! and why a field was refused ([`FieldFailure`], with a [`Reason`]). Small and at the bottom of
//! the engine so the audit log and the metrics can name outcomes without importing the engine.

use crate::reason::Reason;

/// What was done to one field, for metrics and the audit event (no values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldOp {
    pub path: String,
    pub action: Action,
    /// The key used (sealing, opening).
    pub kid: Option<String>,
    /// The selector (as written) that picked the field, for
    /// `fieldseal_selector_matches_total`; `None` for whole-body operations.
    pub selector: Option<std::sync::Arc<str>>,
    /// For a rule with views: which one chose what the field got (`None`: the rule has none).
    pub view: Option<ViewMark>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Sealed,
    /// Sealed as an expiring token (`fse1`, a rule with `ttl`).
    SealedExpiring,
    /// Sealed as a searchable token (`fsd1`, a rule with `searchable: true`).
    SealedSearchable,
    /// Sealed for one data subject (`fsb1`).
    SealedForSubject,
    Redacted,
    Masked,
    Opened,
    /// An expiring token (`fse1`) opened.
    OpenedExpiring,
    /// A searchable token (`fsd1`) opened.
    OpenedSearchable,
    /// A subject-bound token (`fsb1`) opened for the request's subject.
    OpenedForSubject,
    /// A client-encrypted JWE value opened with an RSA or HPKE key.
    Decrypted,
    /// A whole-body request envelope opened (kid: the RSA key).
    EnvelopeOpened,
    /// A whole response body sealed under the envelope's session key.
    EnvelopeSealed,
    /// Plaintext at a decrypt path, allowed because the route does not require tokens.
    PassedPlaintext,
    /// Left as the app sent it, because a view (by caller identity) shows it.
    Shown,
}

impl Action {
    /// Whether a request value was opened (so the body forwarded is not the client's).
    pub fn opened_a_value(self) -> bool {
        matches!(
            self,
            Action::Opened
                | Action::OpenedExpiring
                | Action::OpenedSearchable
                | Action::OpenedForSubject
                | Action::Decrypted
        )
    }

    /// Label for metrics and audit events.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Sealed => "sealed",
            Action::SealedExpiring => "sealed_expiring",
            Action::SealedSearchable => "sealed_searchable",
            Action::SealedForSubject => "sealed_for_subject",
            Action::Redacted => "redacted",
            Action::Masked => "masked",
            Action::Opened => "opened",
            Action::OpenedExpiring => "opened_expiring",
            Action::OpenedSearchable => "opened_searchable",
            Action::OpenedForSubject => "opened_for_subject",
            Action::Decrypted => "decrypted",
            Action::EnvelopeOpened => "envelope_opened",
            Action::EnvelopeSealed => "envelope_sealed",
            Action::PassedPlaintext => "plaintext_passed",
            Action::Shown => "shown",
        }
    }
}

/// A field the rules could not be applied to; the whole body is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldFailure {
    /// Normalized JSONPath of the field (`$` when selection itself failed).
    pub path: String,
    pub reason: Reason,
    pub kid: Option<String>,
}

impl FieldFailure {
    pub fn new(path: impl Into<String>, reason: Reason, kid: Option<String>) -> Self {
        Self {
            path: path.into(),
            reason,
            kid,
        }
    }
}

/// Which view chose what a field got: the rule's own action, or its `views.N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewMark {
    /// No view held: the rule's action.
    Default,
    /// `views.N` held.
    View(u16),
}

impl ViewMark {
    /// `default` or `views.N`, for metrics and audit records.
    pub fn label(self) -> String {
        match self {
            ViewMark::Default => "default".into(),
            ViewMark::View(n) => format!("views.{n}"),
        }
    }
}
