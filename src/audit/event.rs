//! What an audit line says. Every event names fields, keys and outcomes — never values,
//! tokens or secrets: the types here cannot hold them (a [`FieldOp`] is a path, an action and
//! a key id; a keyring appears as ids, states and dates).

use std::net::SocketAddr;
use std::sync::Arc;

use serde::ser::{SerializeSeq, SerializeStruct};
use serde::{Serialize, Serializer};

use super::chain::Previous;
use crate::crypto::keyring::KeyState;
use crate::crypto::Keyring;
use crate::transform::outcome::FieldOp;

/// How the field stage ended for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every selected field was processed.
    Ok,
    /// The request was refused because of a field (bad token, plaintext where a token is
    /// required): 400, the app was not called.
    Rejected,
    /// The response could not be sealed (not JSON, too large, unknown encoding): 502, nothing
    /// of it reached the client.
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Rejected => "rejected",
            Outcome::Failed => "failed",
        }
    }
}

/// Why the field stage refused a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldFailureInfo {
    /// Stable snake_case reason (`authentication_failed`, `unknown_key`, `not_json`…).
    pub reason: &'static str,
    /// Normalized JSONPath of the field (`$` when the whole body was refused).
    pub field: String,
    pub kid: Option<String>,
}

/// One request's field operations: the `fields` event.
#[derive(Debug, Clone)]
pub struct FieldsEvent {
    pub request_id: String,
    pub route: Arc<str>,
    /// The client's address (`ip:port`) as the proxy saw it.
    pub client: Option<SocketAddr>,
    pub outcome: Outcome,
    /// Path, action and key id of each field processed (no values).
    pub fields: Vec<FieldOp>,
    /// Set when `outcome` is not `ok`.
    pub failure: Option<FieldFailureInfo>,
    /// Who called, when a rule's views asked (written only then, so lines without views
    /// are as before).
    pub caller: Option<CallerInfo>,
}

/// The caller of a request whose answer had views: never the subject or a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerInfo {
    /// `verified`, `anonymous`, or why the token was refused.
    pub identity: &'static str,
    /// The verified subject's pseudonym ([`crate::identity::Verifier::subject_hash`]).
    pub subject: Option<String>,
}

impl Serialize for FieldsEvent {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let n =
            if self.failure.is_some() { 8 } else { 5 } + if self.caller.is_some() { 2 } else { 0 };
        let mut st = s.serialize_struct("FieldsEvent", n)?;
        st.serialize_field("request_id", &self.request_id)?;
        st.serialize_field("route", &*self.route)?;
        st.serialize_field("client", &self.client)?;
        st.serialize_field("outcome", self.outcome.as_str())?;
        st.serialize_field("fields", &Ops(&self.fields))?;
        if let Some(c) = &self.caller {
            st.serialize_field("identity", c.identity)?;
            st.serialize_field("subject", &c.subject)?;
        }
        if let Some(f) = &self.failure {
            st.serialize_field("reason", f.reason)?;
            st.serialize_field("field", &f.field)?;
            st.serialize_field("kid", &f.kid)?;
        }
        st.end()
    }
}

/// `[{"path": …, "action": …, "kid": …}, …]` without an intermediate allocation per field.
struct Ops<'a>(&'a [FieldOp]);

impl Serialize for Ops<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for op in self.0 {
            seq.serialize_element(&OpEntry {
                path: &op.path,
                action: op.action.as_str(),
                kid: op.kid.as_deref(),
                view: op.view.map(|v| v.label()),
            })?;
        }
        seq.end()
    }
}

#[derive(Serialize)]
struct OpEntry<'a> {
    path: &'a str,
    action: &'static str,
    kid: Option<&'a str>,
    /// `default` or `views.N` for a rule with views; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    view: Option<String>,
}

/// A key as the audit log shows it: no secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyInfo {
    pub id: String,
    pub state: KeyState,
    pub created_at: String,
}

/// Every kind of audit line.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Event {
    /// The first line of every segment (each time a writer starts writing to the log): where
    /// the log ended before it — nothing (`"none"`), the last audit line's seq and MAC, or
    /// `"unlinked"` when the writer could not read the end — and, when the segment did not
    /// begin at an ordinary open, why (`reason`).
    ChainStart {
        previous: Previous,
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<&'static str>,
    },
    Fields(FieldsEvent),
    KeyringLoaded {
        reason: String,
        primary: String,
        keys: Vec<KeyInfo>,
    },
    RotationDetected {
        old_primary: String,
        new_primary: String,
    },
    KeyRetired {
        kid: String,
        from: KeyState,
    },
    KeyStateChanged {
        kid: String,
        from: KeyState,
        to: KeyState,
    },
    KeyAdded {
        kid: String,
        state: KeyState,
        created_at: String,
    },
    KeyRemoved {
        kid: String,
        state: KeyState,
    },
    /// A data subject erased (`keys shred`) reached this proxy: its subject-bound tokens no
    /// longer open. The subject's digest only (docs/tokens.md), never the subject.
    SubjectErased {
        subject_sha256: String,
        at: String,
    },
    /// A `fieldseal file` operation (docs/files.md): what was done to which sealed file, for
    /// whom, by which keys — never a key, a file key or any plaintext.
    File(FileEvent),
}

/// One `fieldseal file seal|open|rewrap|verify`.
#[derive(Debug, Clone, Serialize)]
pub struct FileEvent {
    /// `seal`, `open`, `rewrap` or `verify`.
    pub op: &'static str,
    /// `ok` or `refused` (the file did not open, verify or rewrap), `failed` (I/O, arguments).
    pub outcome: &'static str,
    /// The sealed file's path, as given.
    pub file: String,
    /// SHA-512 (hex) of the sealed file when it was hashed (signed or verified files).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha512: Option<String>,
    /// Plaintext bytes sealed or opened, payload bytes rewrapped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// The recipients sealed to: `x25519`, `ssh`, `keyring:<kid>`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub recipients: Vec<String>,
    /// The signing (seal) or verifying (open, verify) key's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
    /// Why it was refused or failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Event {
    /// The `event` member.
    pub fn name(&self) -> &'static str {
        match self {
            Event::ChainStart { .. } => "chain_start",
            Event::Fields(_) => "fields",
            Event::KeyringLoaded { .. } => "keyring_loaded",
            Event::RotationDetected { .. } => "rotation_detected",
            Event::KeyRetired { .. } => "key_retired",
            Event::KeyStateChanged { .. } => "key_state_changed",
            Event::KeyAdded { .. } => "key_added",
            Event::KeyRemoved { .. } => "key_removed",
            Event::SubjectErased { .. } => "subject_erased",
            Event::File(_) => "file",
        }
    }

    pub fn keyring_loaded(ring: &Keyring, reason: &str) -> Self {
        Event::KeyringLoaded {
            reason: reason.to_string(),
            primary: ring.primary().id.clone(),
            keys: ring
                .keys()
                .iter()
                .map(|k| KeyInfo {
                    id: k.id.clone(),
                    state: k.state,
                    created_at: k.created_at.clone(),
                })
                .collect(),
        }
    }

    /// What changed between two keyrings: a new primary, then each key whose state changed
    /// (a key that became `disabled` is retired), then keys added, then keys removed.
    pub fn keyring_changes(old: &Keyring, new: &Keyring) -> Vec<Self> {
        let mut events = Vec::new();
        if old.primary().id != new.primary().id {
            events.push(Event::RotationDetected {
                old_primary: old.primary().id.clone(),
                new_primary: new.primary().id.clone(),
            });
        }
        for key in new.keys() {
            match old.get(&key.id) {
                Some(before) if before.state == key.state => {}
                Some(before) if key.state == KeyState::Disabled => events.push(Event::KeyRetired {
                    kid: key.id.clone(),
                    from: before.state,
                }),
                Some(before) => events.push(Event::KeyStateChanged {
                    kid: key.id.clone(),
                    from: before.state,
                    to: key.state,
                }),
                None => events.push(Event::KeyAdded {
                    kid: key.id.clone(),
                    state: key.state,
                    created_at: key.created_at.clone(),
                }),
            }
        }
        for key in old.keys() {
            if new.get(&key.id).is_none() {
                events.push(Event::KeyRemoved {
                    kid: key.id.clone(),
                    state: key.state,
                });
            }
        }
        let before: std::collections::HashSet<&[u8; 32]> = old.shredded().map(|(d, _)| d).collect();
        let mut erased: Vec<(&[u8; 32], &str)> = new
            .shredded()
            .filter(|(d, _)| !before.contains(d))
            .collect();
        erased.sort();
        for (digest, at) in erased {
            events.push(Event::SubjectErased {
                subject_sha256: digest.iter().map(|b| format!("{b:02x}")).collect(),
                at: at.to_string(),
            });
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::keyring::{KeyEntry, KeyringFile};
    use crate::transform::outcome::Action;
    use base64::Engine;

    pub(crate) fn ring(primary: &str, keys: &[(&str, KeyState)]) -> Keyring {
        Keyring::from_file(KeyringFile {
            shredded: Vec::new(),
            primary: primary.into(),
            keys: keys
                .iter()
                .map(|(id, state)| KeyEntry {
                    id: (*id).into(),
                    secret: zeroize::Zeroizing::new(
                        base64::engine::general_purpose::STANDARD.encode([id.len() as u8; 32]),
                    ),
                    created_at: "2026-11-01T00:00:00Z".into(),
                    state: *state,
                })
                .collect(),
        })
        .unwrap()
    }

    /// A subject erased between two keyrings is one `subject_erased` event naming its digest
    /// and date — never the subject; one erased before is not repeated.
    #[test]
    fn keyring_changes_name_erased_subjects_by_digest() {
        use crate::crypto::keyring::{subject_digest, Shred};
        let with = |subjects: &[&str]| {
            let mut file = crate::crypto::keyring::tests::test_keyring_file();
            for s in subjects {
                file.shredded.push(Shred {
                    subject_sha256: subject_digest(s)
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect(),
                    at: "2026-12-05T10:00:00Z".into(),
                });
            }
            Keyring::from_file(file).unwrap()
        };
        let events = Event::keyring_changes(&with(&["41"]), &with(&["41", "42"]));
        assert_eq!(events.len(), 1, "{events:?}");
        let line = serde_json::to_string(&events[0]).unwrap();
        assert_eq!(events[0].name(), "subject_erased");
        assert!(
            line.contains("d32def2b6b68aa14d94973fe3709c6874a622b627a0f81c2f25fddcc94cc6d90"),
            "{line}"
        );
        assert!(
            line.contains("2026-12-05T10:00:00Z") && !line.contains("\"42\""),
            "{line}"
        );
        assert!(Event::keyring_changes(&with(&["42"]), &with(&["42"])).is_empty());
    }

    #[test]
    fn keyring_changes_name_rotation_retirement_and_state_changes() {
        use KeyState::*;
        let old = ring("k1", &[("k1", Active), ("k0", DecryptOnly), ("kx", Active)]);
        let new = ring(
            "k2",
            &[("k1", DecryptOnly), ("k0", Disabled), ("k2", Active)],
        );
        let names: Vec<String> = Event::keyring_changes(&old, &new)
            .iter()
            .map(|e| format!("{} {}", e.name(), serde_json::to_string(e).unwrap()))
            .collect();
        assert_eq!(
            names,
            [
                r#"rotation_detected {"old_primary":"k1","new_primary":"k2"}"#,
                r#"key_state_changed {"kid":"k1","from":"active","to":"decrypt_only"}"#,
                r#"key_retired {"kid":"k0","from":"decrypt_only"}"#,
                r#"key_added {"kid":"k2","state":"active","created_at":"2026-11-01T00:00:00Z"}"#,
                r#"key_removed {"kid":"kx","state":"active"}"#,
            ]
        );
        assert!(Event::keyring_changes(&new, &new).is_empty());
    }

    #[test]
    fn fields_events_serialize_paths_actions_and_kids_only() {
        let e = FieldsEvent {
            request_id: "r1".into(),
            route: Arc::from("user"),
            client: Some("127.0.0.1:5000".parse().unwrap()),
            outcome: Outcome::Rejected,
            fields: vec![FieldOp {
                path: "$['a']".into(),
                action: Action::Opened,
                kid: Some("k1".into()),
                selector: None,
                view: None,
            }],
            failure: Some(FieldFailureInfo {
                reason: "authentication_failed",
                field: "$['ssn']".into(),
                kid: Some("k1".into()),
            }),
            caller: None,
        };
        assert_eq!(
            serde_json::to_string(&Event::Fields(e)).unwrap(),
            r#"{"request_id":"r1","route":"user","client":"127.0.0.1:5000","outcome":"rejected","fields":[{"path":"$['a']","action":"opened","kid":"k1"}],"reason":"authentication_failed","field":"$['ssn']","kid":"k1"}"#
        );
    }

    /// A request whose answer had views names the caller by result and pseudonym, and each
    /// field of a rule with views by the view that chose.
    #[test]
    fn fields_events_name_the_caller_and_view_only_with_views() {
        use crate::transform::view::ViewMark;
        let e = FieldsEvent {
            request_id: "r2".into(),
            route: Arc::from("profile"),
            client: None,
            outcome: Outcome::Ok,
            fields: vec![FieldOp {
                path: "$['bio']".into(),
                action: Action::Shown,
                kid: None,
                selector: None,
                view: Some(ViewMark::View(0)),
            }],
            failure: None,
            caller: Some(CallerInfo {
                identity: "verified",
                subject: Some("00ff".into()),
            }),
        };
        assert_eq!(
            serde_json::to_string(&Event::Fields(e)).unwrap(),
            r#"{"request_id":"r2","route":"profile","client":null,"outcome":"ok","fields":[{"path":"$['bio']","action":"shown","kid":null,"view":"views.0"}],"identity":"verified","subject":"00ff"}"#
        );
    }
}
