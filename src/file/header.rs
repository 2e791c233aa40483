//! The age v1 header (age-encryption.org/v1): read within a bound, parsed strictly, the file
//! key unwrapped by the first identity that matches and the header MAC verified under it; and
//! written for new recipients. Sealing, opening and rewrapping all go through here, so every
//! file fieldseal accepts passes the same checks (the C2SP age test suite's header, stanza and
//! MAC vectors: `tests/python/test_age_vectors.py`).
//!
//! Parsing is strict where the `age` crate is lenient for old files: every stanza must end with
//! a short body line (the spec's rule since 2022; legacy bodies of a multiple of 64 columns are
//! refused), and the MAC line must be exactly `--- ` and 43 canonical base64 characters.

use std::collections::HashSet;
use std::io::{self, Read};

use age::secrecy::ExposeSecret;
use age::Recipient as _;
use age_core::format::{FileKey, Stanza};
use aws_lc_rs::{hkdf, hmac};
use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine;

use super::FileError;

/// Largest header read: age headers are a few hundred bytes per recipient (a post-quantum one
/// about 1.6 KB); this bounds what a file that is not an age file can make the command buffer.
pub const MAX_HEADER: usize = 1024 * 1024;

const INTRO: &[u8] = b"age-encryption.org/v1\n";

/// Length of the MAC line's base64: HMAC-SHA256's 32 bytes without padding.
const MAC_B64_LEN: usize = 43;

/// A fresh random file key (16 bytes, age v1).
pub fn new_file_key() -> Result<FileKey, FileError> {
    FileKey::try_init_with_mut(|k| {
        getrandom::fill(k)
            .map_err(|e| FileError::Io(io::Error::other(format!("random source: {e}"))))
    })
}

/// `file_key` wrapped for every recipient. age seals only to recipients whose labels agree (a
/// post-quantum recipient beside a classical one would leave the file only as strong as the
/// classical one), and neither does this.
pub fn wrap(recipients: &[super::Recipient], file_key: &FileKey) -> Result<Vec<Stanza>, FileError> {
    if recipients.is_empty() {
        return Err(FileError::Recipient("none given".into()));
    }
    let mut wrapped = Vec::new();
    let mut labels: Option<HashSet<String>> = None;
    for r in recipients {
        let (stanzas, l) = r
            .wrap_file_key(file_key)
            .map_err(|e| FileError::Recipient(e.to_string()))?;
        match &labels {
            Some(first) if *first != l => {
                let name = |l: &HashSet<String>| {
                    let mut v: Vec<&str> = l.iter().map(String::as_str).collect();
                    v.sort_unstable();
                    if v.is_empty() {
                        "none".to_string()
                    } else {
                        v.join(", ")
                    }
                };
                return Err(FileError::Recipient(format!(
                    "these recipients cannot share a file: their labels differ ({} and {}); \
                     a postquantum recipient beside a classical one would leave the file only \
                     as strong as the classical one",
                    name(first),
                    name(&l)
                )));
            }
            _ => labels = Some(l),
        }
        wrapped.extend(stanzas);
    }
    Ok(wrapped)
}

/// The file key of the header `header` (as [`read`] returned it), unwrapped by the first
/// identity that matches a stanza, once the header's MAC verifies under it.
pub fn unwrap(identities: &[Box<dyn age::Identity>], header: &[u8]) -> Result<FileKey, FileError> {
    let (stanzas, mac_at) = parse(header)?;
    let file_key = identities
        .iter()
        .find_map(|id| id.unwrap_stanzas(&stanzas))
        .ok_or_else(|| FileError::Refused("no identity unwraps the file key".into()))?
        .map_err(|e| FileError::Refused(e.to_string()))?;
    let mac_text = &header[mac_at + 4..header.len() - 1];
    let mac = match STANDARD_NO_PAD.decode(mac_text) {
        Ok(mac) if mac_text.len() == MAC_B64_LEN => mac,
        _ => {
            return Err(FileError::Refused(
                "the header's MAC is not 43 characters of canonical base64".into(),
            ))
        }
    };
    hmac::verify(&header_key(&file_key), &header[..mac_at + 3], &mac)
        .map_err(|_| FileError::Refused("the header's MAC does not verify".into()))?;
    Ok(file_key)
}

/// Reads until the end of the MAC line (`--- …\n`); returns what was read (the header and
/// whatever of the payload came with it) and where the header ends.
pub fn read(input: &mut dyn Read) -> Result<(Vec<u8>, usize), FileError> {
    const MAC_LINE: &[u8] = b"\n--- ";
    let mut buf = Vec::new();
    let mut piece = [0u8; 4096];
    // Where the next search starts: each byte is searched once, not once per read.
    let mut searched = 0;
    loop {
        if let Some(at) = memchr::memmem::find(&buf[searched..], MAC_LINE).map(|i| searched + i) {
            if let Some(nl) = memchr::memchr(b'\n', &buf[at + 1..]) {
                return Ok((buf, at + 1 + nl + 1));
            }
            searched = at;
        } else {
            searched = buf.len().saturating_sub(MAC_LINE.len() - 1);
        }
        if buf.len() > MAX_HEADER {
            return Err(FileError::Refused("no age header within 1 MiB".into()));
        }
        let n = match input.read(&mut piece) {
            Ok(0) => return Err(FileError::Refused("not an age file (no header)".into())),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        buf.extend_from_slice(&piece[..n]);
    }
}

/// The stanzas of a binary age header and where its `---` line starts.
fn parse(header: &[u8]) -> Result<(Vec<Stanza>, usize), FileError> {
    if !header.starts_with(INTRO) {
        return Err(FileError::Refused(
            "not a binary age v1 file (armored files: open and seal again)".into(),
        ));
    }
    let mut rest = &header[INTRO.len()..];
    let mut stanzas = Vec::new();
    while !rest.starts_with(b"---") {
        match age_core::format::read::age_stanza(rest) {
            Ok((after, stanza)) => {
                stanzas.push(Stanza::from(stanza));
                rest = after;
            }
            Err(_) => return Err(FileError::Refused("a malformed header stanza".into())),
        }
    }
    if stanzas.is_empty() || !rest.starts_with(b"--- ") {
        return Err(FileError::Refused("a malformed header".into()));
    }
    Ok((stanzas, header.len() - rest.len()))
}

/// `HMAC key = HKDF-SHA256(ikm = file key, salt = empty, info = "header")` (age v1).
fn header_key(file_key: &FileKey) -> hmac::Key {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &[]).extract(file_key.expose_secret());
    let okm = prk
        .expand(&[b"header"], hmac::HMAC_SHA256)
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    hmac::Key::from(okm)
}

/// A binary age v1 header for `stanzas`, authenticated under `file_key`.
pub fn write(file_key: &FileKey, stanzas: &[Stanza]) -> Vec<u8> {
    let mut out = INTRO.to_vec();
    for s in stanzas {
        out.extend_from_slice(b"-> ");
        out.extend_from_slice(s.tag.as_bytes());
        for arg in &s.args {
            out.push(b' ');
            out.extend_from_slice(arg.as_bytes());
        }
        out.push(b'\n');
        // Wrapped at 64 columns; the last line is always shorter (empty if need be).
        let body = STANDARD_NO_PAD.encode(&s.body);
        let mut lines = body.as_bytes().chunks(64).peekable();
        let mut last_full = body.is_empty();
        while let Some(line) = lines.next() {
            out.extend_from_slice(line);
            out.push(b'\n');
            last_full = lines.peek().is_none() && line.len() == 64;
        }
        if last_full {
            out.push(b'\n');
        }
    }
    out.extend_from_slice(b"---");
    let mac = hmac::sign(&header_key(file_key), &out);
    out.push(b' ');
    out.extend_from_slice(STANDARD_NO_PAD.encode(mac.as_ref()).as_bytes());
    out.push(b'\n');
    out
}
