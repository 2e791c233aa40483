//! What a response rule does to the nodes it selects: the engine's one list of operations,
//! at the bottom of the engine so the config, the views and the engine all name it without
//! importing each other. A new operation is a variant here, a name in [`Operation::KINDS`],
//! and an arm in `rules::operate`.

/// What a response rule does to each node it selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Replace with an `fs1` token (contract §1).
    Seal,
    /// Replace with `null`.
    Redact,
    /// Keep the last `keep_last` characters, star the rest.
    Mask { keep_last: usize },
    /// Keep an email address's first character and domain, star the rest.
    MaskEmail,
    /// Generalise a date to its year; anything else becomes `null`.
    Year,
}

impl Operation {
    /// The name `check`, `explain` and the field policy use.
    pub fn name(self) -> &'static str {
        match self {
            Operation::Seal => "encrypt",
            Operation::Redact => "redact",
            Operation::Mask { .. } => "mask",
            Operation::MaskEmail => "mask_email",
            Operation::Year => "year",
        }
    }

    /// Every operation a rule can name, by its configuration name (`keep_last` is filled in
    /// for `mask`): the one table the route lists, the field policy's `action` and `explain`
    /// read.
    pub const KINDS: [&'static str; 5] = ["encrypt", "redact", "mask", "mask_email", "year"];
}
