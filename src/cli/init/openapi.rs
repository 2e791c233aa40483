//! Proposes a field policy from an OpenAPI 3 document: every schema property whose name or
//! `format` marks it as sensitive becomes one `fields` entry (contract §9).
//!
//! The walk covers `components.schemas` (and `components.requestBodies` / `responses`) and the
//! inline schemas of every operation's request body and responses, following `properties`,
//! `items`, `prefixItems`, `allOf` / `anyOf` / `oneOf`, `additionalProperties` and
//! `patternProperties`. `$ref`s are not resolved for the walk (the schemas they name are walked
//! where they are defined; nothing is fetched from other files).
//!
//! What counts as sensitive is the table [`RULES`], in one place so it is easy to extend.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

/// What a `fields` entry does to the selected value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Encrypt,
    Redact,
    Mask { keep_last: usize },
}

/// One kind of sensitive data: the names and formats that mark it, and what to do with it.
#[derive(Debug)]
pub struct Rule {
    /// Plural, for a heading: "email addresses".
    pub category: &'static str,
    /// Singular, for a reason: "an email address".
    pub noun: &'static str,
    /// Why this action, for the heading's comment.
    pub why: &'static str,
    pub action: Action,
    /// Property names in normalised form (see [`normalize`]). A leading `*` also matches any
    /// name that ends with `_` and the rest (`*password` matches `new_password`).
    pub names: &'static [&'static str],
    /// Values of the schema's `format` (compared case-insensitively).
    pub formats: &'static [&'static str],
}

/// The sensitive kinds, in the order their entries are written. A property matched by name
/// takes the first rule its name matches; otherwise the first rule one of its formats matches.
///
/// Suffix patterns (`*…`) are used where a qualifier in front keeps the meaning
/// (`contact_email`, `hashed_password`), not for short or generic words (`token`, `pan`,
/// `tin`, `mobile`), whose longer forms are often something else (`next_page_token`).
pub const RULES: &[Rule] = &[
    Rule {
        category: "passwords and secrets",
        noun: "a password or secret",
        why: "redact: clients never need them",
        action: Action::Redact,
        names: &[
            "*password",
            "*passwd",
            "*password_hash",
            "*secret",
            "*api_key",
            "apikey",
            "*private_key",
            "token",
        ],
        formats: &["password"],
    },
    Rule {
        category: "SSNs and national ids",
        noun: "an SSN or national id",
        why: "encrypt: clients get tokens they can send back",
        action: Action::Encrypt,
        names: &[
            "*ssn",
            "*social_security_number",
            "*national_id",
            "*tax_id",
            "tin",
            "*passport_number",
        ],
        formats: &[],
    },
    Rule {
        category: "card numbers",
        noun: "a card number",
        why: "encrypt: clients get tokens they can send back",
        action: Action::Encrypt,
        names: &["*card_number", "*cc_number", "pan", "credit_card"],
        formats: &["payment-card-number"],
    },
    Rule {
        category: "email addresses",
        noun: "an email address",
        why: "encrypt: clients get tokens they can send back",
        action: Action::Encrypt,
        names: &["*email", "*e_mail", "*email_address"],
        formats: &["email", "idn-email"],
    },
    Rule {
        category: "phone numbers",
        noun: "a phone number",
        why: "mask: clients see the last 4 digits, never the number",
        action: Action::Mask { keep_last: 4 },
        names: &[
            "*phone",
            "*phone_number",
            "mobile",
            "*mobile_number",
            "*telephone",
        ],
        formats: &["phone"],
    },
    Rule {
        category: "dates of birth",
        noun: "a date of birth",
        why: "encrypt: clients get tokens they can send back",
        action: Action::Encrypt,
        names: &["dob", "*date_of_birth", "*birthdate", "*birth_date"],
        formats: &[],
    },
    Rule {
        category: "bank accounts",
        noun: "a bank account",
        why: "encrypt: clients get tokens they can send back",
        action: Action::Encrypt,
        names: &[
            "*iban",
            "*account_number",
            "bank_account",
            "*routing_number",
        ],
        formats: &[],
    },
];

/// `dateOfBirth`, `Date-Of-Birth`, `date_of_birth` → `date_of_birth`; `APIKey` → `api_key`;
/// `e-mail`, `eMail` → `e_mail`. Words split at `_`, `-`, `.`, spaces and camelCase humps.
pub fn normalize(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut words: Vec<String> = Vec::new();
    let mut current = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if matches!(c, '_' | '-' | '.' | ' ') {
            if !current.is_empty() {
                words.push(std::mem::take(&mut current));
            }
            continue;
        }
        if c.is_uppercase() && !current.is_empty() {
            let prev = chars[i - 1];
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
            // `dateOf` | `APIKey` (the K starts a word) | not inside `API`.
            if prev.is_lowercase() || prev.is_ascii_digit() || (prev.is_uppercase() && next_lower) {
                words.push(std::mem::take(&mut current));
            }
        }
        current.extend(c.to_lowercase());
    }
    if !current.is_empty() {
        words.push(current);
    }
    words.join("_")
}

/// How a normalised name matches `pattern` (see [`Rule::names`]).
fn name_matches(normalized: &str, pattern: &str) -> bool {
    match pattern.strip_prefix('*') {
        Some(word) => {
            normalized == word
                || normalized
                    .strip_suffix(word)
                    .is_some_and(|front| front.ends_with('_'))
        }
        None => normalized == pattern,
    }
}

/// The first rule `name` matches by name.
pub fn rule_by_name(name: &str) -> Option<usize> {
    let normalized = normalize(name);
    RULES
        .iter()
        .position(|r| r.names.iter().any(|p| name_matches(&normalized, p)))
}

/// The first rule `format` marks.
pub fn rule_by_format(format: &str) -> Option<usize> {
    RULES.iter().position(|r| {
        r.formats
            .iter()
            .any(|f| f.eq_ignore_ascii_case(format.trim()))
    })
}

/// The JSONPath that selects member `name` at any depth: `$..email`, or `$..['first-name']`
/// for names that are not plain identifiers.
pub fn selector_for(name: &str) -> String {
    let mut chars = name.chars();
    let plain = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if plain {
        return format!("$..{name}");
    }
    let mut quoted = String::with_capacity(name.len() + 2);
    for c in name.chars() {
        match c {
            '\'' => quoted.push_str("\\'"),
            '\\' => quoted.push_str("\\\\"),
            c if (c as u32) < 0x20 => quoted.push_str(&format!("\\u{:04x}", c as u32)),
            c => quoted.push(c),
        }
    }
    format!("$..['{quoted}']")
}

/// One proposed `fields` entry: a property name and why it was picked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The property name as the schemas spell it.
    pub name: String,
    /// Index into [`RULES`].
    pub rule: usize,
    /// Matched by its name (else by format only).
    pub by_name: bool,
    /// The sensitive formats it was seen with.
    pub formats: BTreeSet<String>,
    /// Where it was seen: schema names (`UserOut`) and inline schemas (`POST /users request`).
    pub locations: BTreeSet<String>,
}

impl Finding {
    pub fn rule(&self) -> &'static Rule {
        &RULES[self.rule]
    }

    pub fn selector(&self) -> String {
        selector_for(&self.name)
    }

    /// `named like an email address, format "email" in UserOut, Profile`.
    pub fn reason(&self) -> String {
        let mut why = Vec::new();
        if self.by_name {
            why.push(format!("named like {}", self.rule().noun));
        }
        if !self.formats.is_empty() {
            let formats: Vec<String> = self.formats.iter().map(|f| format!("\"{f}\"")).collect();
            why.push(format!("format {}", formats.join(", ")));
        }
        const SHOWN: usize = 6;
        let mut places: Vec<&str> = self
            .locations
            .iter()
            .map(String::as_str)
            .take(SHOWN)
            .collect();
        let more = self.locations.len().saturating_sub(SHOWN);
        let more_text = format!("{more} more");
        if more > 0 {
            places.push(&more_text);
        }
        format!("{} in {}", why.join(", "), places.join(", "))
    }
}

/// What [`analyze`] found in a document.
#[derive(Debug, Default)]
pub struct Analysis {
    /// Ordered by rule (category), then name.
    pub findings: Vec<Finding>,
    /// Distinct property names seen.
    pub properties: usize,
    /// The document has FastAPI's `HTTPValidationError` schema: its 422 answers echo the
    /// request's input in `$.detail[*].input`.
    pub fastapi_validation_errors: bool,
    /// A GET path whose success response holds a proposed field (`{params}` filled with `1`),
    /// for the next-steps example; else the first GET path without parameters.
    pub example_get: Option<String>,
}

/// The operations of a path item.
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Reads an OpenAPI 3 document (JSON, or YAML) from `bytes`.
pub fn parse(bytes: &[u8]) -> Result<Value, String> {
    let doc: Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(json_err) => {
            let text = std::str::from_utf8(bytes)
                .map_err(|_| "not a JSON or YAML document (not UTF-8)".to_string())?;
            use figment::providers::{Format, Yaml};
            figment::Figment::from(Yaml::string(text))
                .extract::<Value>()
                .map_err(|yaml_err| format!("neither JSON ({json_err}) nor YAML ({yaml_err})"))?
        }
    };
    let version = doc.get("openapi").and_then(Value::as_str);
    match version {
        Some(v) if v.starts_with("3.") => Ok(doc),
        Some(v) => Err(format!(
            "OpenAPI {v} is not supported; fieldseal init reads OpenAPI 3.x documents"
        )),
        None if doc.get("swagger").is_some() => Err(
            "this is a Swagger 2.0 document; fieldseal init reads OpenAPI 3.x (convert it first)"
                .into(),
        ),
        None => Err("not an OpenAPI 3 document (no `openapi` version member)".into()),
    }
}

/// Per property name, while walking.
#[derive(Default)]
struct Seen {
    name_rule: Option<usize>,
    /// Sensitive formats and the rule each marks.
    formats: BTreeMap<String, usize>,
    locations: BTreeSet<String>,
}

struct Walker {
    seen: BTreeMap<String, Seen>,
    properties: BTreeSet<String>,
}

impl Walker {
    /// Walks a schema; `owner` labels where its properties are reported.
    fn schema(&mut self, node: &Value, owner: &str) {
        let Some(obj) = node.as_object() else { return };
        if let Some(props) = obj.get("properties").and_then(Value::as_object) {
            for (name, sub) in props {
                self.property(name, sub, owner);
                self.schema(sub, owner);
            }
        }
        if let Some(patterns) = obj.get("patternProperties").and_then(Value::as_object) {
            for sub in patterns.values() {
                self.schema(sub, owner);
            }
        }
        // Not `not`: its properties are what a value must not look like.
        for key in ["items", "additionalProperties"] {
            match obj.get(key) {
                // `items` as a list: the tuple form of older drafts.
                Some(Value::Array(list)) => list.iter().for_each(|s| self.schema(s, owner)),
                Some(sub) => self.schema(sub, owner),
                None => {}
            }
        }
        for key in ["allOf", "anyOf", "oneOf", "prefixItems"] {
            if let Some(list) = obj.get(key).and_then(Value::as_array) {
                for sub in list {
                    self.schema(sub, owner);
                }
            }
        }
    }

    fn property(&mut self, name: &str, schema: &Value, owner: &str) {
        if name.is_empty() {
            return;
        }
        self.properties.insert(name.to_string());
        let name_rule = rule_by_name(name);
        let mut formats = BTreeMap::new();
        collect_formats(schema, &mut formats, 0);
        if name_rule.is_none() && formats.is_empty() {
            return;
        }
        let seen = self.seen.entry(name.to_string()).or_default();
        seen.name_rule = seen.name_rule.or(name_rule);
        seen.formats.extend(formats);
        seen.locations.insert(owner.to_string());
    }

    fn media(&mut self, content: Option<&Value>, owner: &str) {
        if let Some(content) = content.and_then(Value::as_object) {
            for media in content.values() {
                if let Some(schema) = media.get("schema") {
                    self.schema(schema, owner);
                }
            }
        }
    }
}

/// The sensitive formats of a property's schema, looking through `allOf` / `anyOf` / `oneOf`
/// (pydantic writes an optional `EmailStr` as `anyOf: [{format: email}, {type: null}]`) and
/// `items` (a list of emails).
fn collect_formats(schema: &Value, out: &mut BTreeMap<String, usize>, depth: usize) {
    if depth > 4 {
        return;
    }
    let Some(obj) = schema.as_object() else {
        return;
    };
    if let Some(format) = obj.get("format").and_then(Value::as_str) {
        if let Some(rule) = rule_by_format(format) {
            out.insert(format.to_string(), rule);
        }
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        if let Some(list) = obj.get(key).and_then(Value::as_array) {
            for sub in list {
                collect_formats(sub, out, depth + 1);
            }
        }
    }
    if let Some(items) = obj.get("items") {
        collect_formats(items, out, depth + 1);
    }
}

/// Finds the sensitive properties of an OpenAPI 3 document.
pub fn analyze(doc: &Value) -> Analysis {
    let mut w = Walker {
        seen: BTreeMap::new(),
        properties: BTreeSet::new(),
    };
    let components = doc.get("components").and_then(Value::as_object);
    if let Some(schemas) = components
        .and_then(|c| c.get("schemas"))
        .and_then(Value::as_object)
    {
        for (name, schema) in schemas {
            w.schema(schema, name);
        }
    }
    for (section, label) in [("requestBodies", "request body"), ("responses", "response")] {
        if let Some(items) = components
            .and_then(|c| c.get(section))
            .and_then(Value::as_object)
        {
            for (name, item) in items {
                w.media(item.get("content"), &format!("{label} {name}"));
            }
        }
    }
    let paths = doc.get("paths").and_then(Value::as_object);
    for (path, item) in paths.into_iter().flatten() {
        for method in METHODS {
            let Some(op) = item.get(method) else { continue };
            let upper = method.to_ascii_uppercase();
            w.media(
                op.get("requestBody").and_then(|b| b.get("content")),
                &format!("{upper} {path} request"),
            );
            if let Some(responses) = op.get("responses").and_then(Value::as_object) {
                for (status, response) in responses {
                    w.media(
                        response.get("content"),
                        &format!("{upper} {path} {status} response"),
                    );
                }
            }
        }
    }
    let mut findings: Vec<Finding> = w
        .seen
        .into_iter()
        .filter_map(|(name, seen)| {
            let rule = seen
                .name_rule
                .or_else(|| seen.formats.values().copied().min())?;
            Some(Finding {
                name,
                rule,
                by_name: seen.name_rule.is_some(),
                formats: seen.formats.into_keys().collect(),
                locations: seen.locations,
            })
        })
        .collect();
    findings.sort_by(|a, b| {
        (a.rule, a.name.to_lowercase(), &a.name).cmp(&(b.rule, b.name.to_lowercase(), &b.name))
    });
    let fastapi_validation_errors = components
        .and_then(|c| c.get("schemas"))
        .and_then(|s| s.get("HTTPValidationError"))
        .is_some();
    let example_get = example_get(doc, &findings);
    Analysis {
        findings,
        properties: w.properties.len(),
        fastapi_validation_errors,
        example_get,
    }
}

/// A GET path to show in the next steps: the first (in path order) whose 2xx response
/// schema, following local `#/components/schemas/…` references, holds a proposed field.
fn example_get(doc: &Value, findings: &[Finding]) -> Option<String> {
    let schemas = doc
        .pointer("/components/schemas")
        .and_then(Value::as_object);
    let sensitive: BTreeSet<&str> = findings.iter().map(|f| f.name.as_str()).collect();
    let paths = doc.get("paths").and_then(Value::as_object)?;
    let mut fallback = None;
    for (path, item) in paths {
        let Some(op) = item.get("get") else { continue };
        if fallback.is_none() && !path.contains('{') {
            fallback = Some(path.clone());
        }
        let Some(responses) = op.get("responses").and_then(Value::as_object) else {
            continue;
        };
        let holds = responses
            .iter()
            .filter(|(status, _)| status.starts_with('2'))
            .any(|(_, r)| {
                let mut visited = BTreeSet::new();
                holds_property(r.get("content"), schemas, &sensitive, &mut visited, 0)
            });
        if holds {
            return Some(fill_params(path));
        }
    }
    fallback
}

/// Whether `node` (any part of a schema) has a property named in `names`, following local
/// schema references once each.
fn holds_property<'a>(
    node: Option<&'a Value>,
    schemas: Option<&'a Map<String, Value>>,
    names: &BTreeSet<&str>,
    visited: &mut BTreeSet<&'a str>,
    depth: usize,
) -> bool {
    if depth > 64 {
        return false;
    }
    match node {
        Some(Value::Object(obj)) => {
            if let Some(props) = obj.get("properties").and_then(Value::as_object) {
                if props.keys().any(|k| names.contains(k.as_str())) {
                    return true;
                }
            }
            if let Some(target) = obj
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix("#/components/schemas/"))
            {
                if visited.insert(target) {
                    let schema = schemas.and_then(|s| s.get(target));
                    if holds_property(schema, schemas, names, visited, depth + 1) {
                        return true;
                    }
                }
            }
            obj.values()
                .any(|v| holds_property(Some(v), schemas, names, visited, depth + 1))
        }
        Some(Value::Array(list)) => list
            .iter()
            .any(|v| holds_property(Some(v), schemas, names, visited, depth + 1)),
        _ => false,
    }
}

/// `/users/{user_id}/cards/{id}` → `/users/1/cards/1`.
fn fill_params(path: &str) -> String {
    path.split('/')
        .map(|seg| {
            if seg.starts_with('{') && seg.ends_with('}') {
                "1"
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn names(a: &Analysis) -> Vec<(&str, Action)> {
        a.findings
            .iter()
            .map(|f| (f.name.as_str(), f.rule().action))
            .collect()
    }

    fn doc(schemas: Value) -> Value {
        json!({"openapi": "3.1.0", "info": {"title": "t", "version": "1"}, "paths": {},
               "components": {"schemas": schemas}})
    }

    #[test]
    fn names_are_normalised() {
        for (raw, want) in [
            ("dateOfBirth", "date_of_birth"),
            ("DateOfBirth", "date_of_birth"),
            ("date-of-birth", "date_of_birth"),
            ("DATE_OF_BIRTH", "date_of_birth"),
            ("APIKey", "api_key"),
            ("apiKey", "api_key"),
            ("e-mail", "e_mail"),
            ("eMail", "e_mail"),
            ("SSN", "ssn"),
            ("ccNumber", "cc_number"),
            ("phone2Home", "phone2_home"),
            ("user.email", "user_email"),
            ("__email__", "email"),
        ] {
            assert_eq!(normalize(raw), want, "{raw}");
        }
    }

    #[test]
    fn the_rule_table_by_name() {
        let action = |n: &str| rule_by_name(n).map(|i| RULES[i].action);
        let redact = Some(Action::Redact);
        let encrypt = Some(Action::Encrypt);
        let mask = Some(Action::Mask { keep_last: 4 });
        for (name, want) in [
            ("password", redact),
            ("hashed_password", redact),
            ("newPassword", redact),
            ("passwd", redact),
            ("client_secret", redact),
            ("api-key", redact),
            ("apikey", redact),
            ("privateKey", redact),
            ("token", redact),
            ("ssn", encrypt),
            ("spouse_ssn", encrypt),
            ("socialSecurityNumber", encrypt),
            ("national_id", encrypt),
            ("taxId", encrypt),
            ("TIN", encrypt),
            ("passportNumber", encrypt),
            ("card_number", encrypt),
            ("creditCardNumber", encrypt),
            ("cc_number", encrypt),
            ("PAN", encrypt),
            ("credit_card", encrypt),
            ("email", encrypt),
            ("E-Mail", encrypt),
            ("contactEmail", encrypt),
            ("email_address", encrypt),
            ("phone", mask),
            ("phoneNumber", mask),
            ("home_phone", mask),
            ("mobile", mask),
            ("telephone", mask),
            ("dob", encrypt),
            ("dateOfBirth", encrypt),
            ("birthdate", encrypt),
            ("birth_date", encrypt),
            ("IBAN", encrypt),
            ("accountNumber", encrypt),
            ("bank_account", encrypt),
            ("routing_number", encrypt),
            // Not sensitive: other words, or generic words inside longer names.
            ("name", None),
            ("access_token", None),
            ("next_page_token", None),
            ("token_type", None),
            ("email_verified", None),
            ("is_mobile", None),
            ("japan", None),
            ("setting", None),
            ("company", None),
            ("passwordless", None),
        ] {
            assert_eq!(action(name), want, "{name}");
        }
    }

    #[test]
    fn formats_mark_properties() {
        let a = analyze(&doc(json!({
            "Profile": {"type": "object", "properties": {
                "contact": {"type": "string", "format": "email"},
                "reach": {"anyOf": [{"type": "string", "format": "phone"}, {"type": "null"}]},
                "login": {"type": "string", "format": "password", "writeOnly": true},
                "cards": {"type": "array", "items": {"type": "string", "format": "payment-card-number"}},
                "born": {"type": "string", "format": "date"},
                "site": {"type": "string", "format": "uri"}
            }}
        })));
        assert_eq!(
            names(&a),
            [
                ("login", Action::Redact),
                ("cards", Action::Encrypt),
                ("contact", Action::Encrypt),
                ("reach", Action::Mask { keep_last: 4 }),
            ]
        );
        assert_eq!(a.findings[2].reason(), "format \"email\" in Profile");
        assert_eq!(a.properties, 6);
    }

    #[test]
    fn nested_composed_and_inline_schemas() {
        let mut d = doc(json!({
            "UserOut": {"allOf": [
                {"$ref": "#/components/schemas/Base"},
                {"type": "object", "properties": {
                    "address": {"type": "object", "properties": {
                        "phone": {"type": "string"}}},
                    "accounts": {"type": "array", "items": {"type": "object", "properties": {
                        "iban": {"type": "string"}}}}
                }}
            ]},
            "Wallet": {"type": "object", "additionalProperties": {
                "oneOf": [{"type": "object", "properties": {"card_number": {"type": "string"}}}]}},
            "Tuple": {"type": "array", "prefixItems": [{"type": "object", "properties": {
                "dob": {"type": "string"}}}]}
        }));
        d["paths"] = json!({
            "/signup": {"post": {
                "requestBody": {"content": {"application/json": {"schema": {
                    "type": "object", "properties": {"password": {"type": "string"},
                                                      "first-name": {"type": "string"}}}}}},
                "responses": {"201": {"content": {"application/json": {"schema": {
                    "type": "object", "properties": {"ssn": {"type": "string"}}}}}}}
            }}
        });
        let a = analyze(&d);
        assert_eq!(
            names(&a),
            [
                ("password", Action::Redact),
                ("ssn", Action::Encrypt),
                ("card_number", Action::Encrypt),
                ("phone", Action::Mask { keep_last: 4 }),
                ("dob", Action::Encrypt),
                ("iban", Action::Encrypt),
            ]
        );
        let place = |n: &str| {
            a.findings
                .iter()
                .find(|f| f.name == n)
                .unwrap()
                .locations
                .iter()
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(place("password"), ["POST /signup request"]);
        assert_eq!(place("ssn"), ["POST /signup 201 response"]);
        assert_eq!(place("phone"), ["UserOut"]);
        assert_eq!(place("card_number"), ["Wallet"]);
    }

    #[test]
    fn one_entry_per_name_with_every_place() {
        let a = analyze(&doc(json!({
            "UserOut": {"properties": {"email": {"type": "string", "format": "email"}}},
            "UserIn": {"properties": {"email": {"anyOf": [{"type": "string", "format": "email"}, {"type": "null"}]}}},
            "Admin": {"properties": {"email": {"type": "string"}, "Email": {"type": "string"}}}
        })));
        assert_eq!(
            names(&a),
            [("Email", Action::Encrypt), ("email", Action::Encrypt)]
        );
        let email = &a.findings[1];
        assert_eq!(
            email.reason(),
            "named like an email address, format \"email\" in Admin, UserIn, UserOut"
        );
        assert_eq!(email.selector(), "$..email");
        assert_eq!(
            a.findings[0].reason(),
            "named like an email address in Admin"
        );
    }

    #[test]
    fn the_name_decides_over_a_format() {
        // `token`: a secret by its name, whatever its format says.
        let a = analyze(&doc(json!({
            "A": {"properties": {"token": {"type": "string", "format": "email"}}}
        })));
        assert_eq!(names(&a), [("token", Action::Redact)]);
        assert_eq!(
            a.findings[0].reason(),
            "named like a password or secret, format \"email\" in A"
        );
    }

    #[test]
    fn many_places_are_summarised() {
        let schemas: Map<String, Value> = (0..9)
            .map(|i| {
                (
                    format!("S{i}"),
                    json!({"properties": {"ssn": {"type": "string"}}}),
                )
            })
            .collect();
        let a = analyze(&doc(Value::Object(schemas)));
        assert_eq!(
            a.findings[0].reason(),
            "named like an SSN or national id in S0, S1, S2, S3, S4, S5, 3 more"
        );
    }

    #[test]
    fn selectors_for_odd_names_use_brackets_and_compile() {
        for (name, want) in [
            ("email", "$..email"),
            ("_email2", "$.._email2"),
            ("first-name", "$..['first-name']"),
            ("e-mail", "$..['e-mail']"),
            ("2fa_secret", "$..['2fa_secret']"),
            ("it's", "$..['it\\'s']"),
            ("back\\slash", "$..['back\\\\slash']"),
            ("with space", "$..['with space']"),
            ("tab\there", "$..['tab\\u0009here']"),
            ("ünïcode", "$..['ünïcode']"),
        ] {
            let sel = selector_for(name);
            assert_eq!(sel, want, "{name}");
            let compiled = crate::transform::selector::Selector::compile(&sel, None)
                .unwrap_or_else(|e| panic!("{sel}: {e}"));
            // It selects that member, and only it.
            let mut sample = serde_json::Map::new();
            sample.insert(name.to_string(), json!("x"));
            sample.insert("other".into(), json!("y"));
            let sample = json!({"nested": [Value::Object(sample)]});
            let hits = crate::transform::select(&compiled.query, &sample).unwrap();
            assert_eq!(hits.len(), 1, "{sel}");
            // Its tokens are bound to the member name (contract §1).
            assert_eq!(crate::transform::context(&compiled, &hits[0]), name);
        }
    }

    #[test]
    fn documents_are_json_or_yaml_openapi_3() {
        let json_doc = br#"{"openapi": "3.0.3", "paths": {}}"#;
        assert!(parse(json_doc).is_ok());
        let yaml = b"openapi: 3.1.0\npaths: {}\ncomponents:\n  schemas:\n    U:\n      properties:\n        email: {type: string}\n";
        let a = analyze(&parse(yaml).unwrap());
        assert_eq!(names(&a), [("email", Action::Encrypt)]);
        assert!(parse(br#"{"swagger": "2.0"}"#)
            .unwrap_err()
            .contains("Swagger 2.0"));
        assert!(parse(br#"{"openapi": "4.0"}"#)
            .unwrap_err()
            .contains("not supported"));
        assert!(parse(b"{").unwrap_err().contains("neither JSON"));
        assert!(parse(br#"{"paths": {}}"#)
            .unwrap_err()
            .contains("not an OpenAPI 3 document"));
    }

    #[test]
    fn example_get_prefers_a_path_that_returns_a_field() {
        let d = json!({"openapi": "3.1.0",
        "paths": {
            "/health": {"get": {"responses": {"200": {"content": {"application/json": {"schema": {}}}}}}},
            "/users/{user_id}": {"get": {"responses": {"200": {"content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/UserOut"}}}}}}}
        },
        "components": {"schemas": {
            "UserOut": {"properties": {"profile": {"$ref": "#/components/schemas/Profile"}}},
            "Profile": {"properties": {"email": {"type": "string"}}}
        }}});
        assert_eq!(analyze(&d).example_get.as_deref(), Some("/users/1"));
        let plain = json!({"openapi": "3.1.0", "paths": {
            "/items/{id}": {"get": {}}, "/items": {"get": {}}}});
        assert_eq!(analyze(&plain).example_get.as_deref(), Some("/items"));
    }

    #[test]
    fn fastapi_validation_errors_are_noticed() {
        let a = analyze(&doc(json!({"HTTPValidationError": {"properties": {}}})));
        assert!(a.fastapi_validation_errors);
        assert!(!analyze(&doc(json!({}))).fastapi_validation_errors);
    }
}
