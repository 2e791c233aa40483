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

/// How an `encrypt` rule's tokens are made (docs/tokens.md). One value per rule, held alike by
/// a JSONPath selector and a carrier rule (`header:`, `form:`, `query:`), so every format
/// works on every carrier: a new format is a field here and an arm in `rules::operate`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenOptions {
    /// Seal expiring tokens (`fse1`) that open for this long.
    pub ttl: Option<std::time::Duration>,
    /// Seal searchable tokens (`fsd1`): equal values, equal tokens.
    pub searchable: bool,
    /// Seal subject-bound tokens (`fsb1`) for the data subject; at a decrypt path, take
    /// only those.
    pub per_subject: bool,
}

impl TokenOptions {
    /// The options set, as `check` lists them (`ttl 1h`, `searchable`, `per_subject`).
    pub fn notes(self) -> Vec<String> {
        let mut notes = Vec::new();
        if let Some(ttl) = self.ttl {
            notes.push(format!("ttl {}", humantime::format_duration(ttl)));
        }
        if self.searchable {
            notes.push("searchable".into());
        }
        if self.per_subject {
            notes.push("per_subject".into());
        }
        notes
    }

    /// The first option written, by its configuration key (for "applies to … only").
    pub fn first_set(self) -> Option<&'static str> {
        if self.ttl.is_some() {
            Some("ttl")
        } else if self.searchable {
            Some("searchable")
        } else if self.per_subject {
            Some("per_subject")
        } else {
            None
        }
    }
}
