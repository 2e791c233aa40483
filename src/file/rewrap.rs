//! A sealed file's header rewrapped to new recipients without touching its payload: after a
//! keyring rotation, or to add or drop a recipient, the file key is unwrapped once, wrapped
//! again for each new recipient, the header re-authenticated, and the payload copied byte for
//! byte (its key depends only on the file key and the payload's own nonce).
//!
//! The old header is checked first — an identity must unwrap the file key and the header's
//! MAC must verify under it — so a header altered by someone without the file key is refused,
//! not laundered into a valid new one.

use std::collections::HashSet;
use std::io::{self, Read, Write};

use age::secrecy::ExposeSecret;
use age_core::format::{FileKey, Stanza};
use aws_lc_rs::{hkdf, hmac};
use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine;

use super::FileError;
use age::Recipient as _;

/// Largest header read: age headers are a few hundred bytes per recipient; this bounds what a
/// file that is not an age file can make the command buffer.
pub const MAX_HEADER: usize = 1024 * 1024;

const INTRO: &[u8] = b"age-encryption.org/v1\n";

/// Rewraps `input`'s header for `recipients` (unwrapping with the first identity that
/// matches) into `output`, then copies the payload. Returns the payload bytes copied.
pub fn rewrap(
    identities: &[Box<dyn age::Identity>],
    recipients: &[super::Recipient],
    input: &mut dyn Read,
    output: &mut dyn Write,
) -> Result<u64, FileError> {
    if recipients.is_empty() {
        return Err(FileError::Recipient("none given".into()));
    }
    let (buf, header_end) = read_header(input)?;
    let header = &buf[..header_end];
    let (stanzas, mac_at) = parse(header)?;
    let file_key = identities
        .iter()
        .find_map(|id| id.unwrap_stanzas(&stanzas))
        .ok_or_else(|| FileError::Refused("no identity unwraps the file key".into()))?
        .map_err(|e| FileError::Refused(e.to_string()))?;
    let mac = STANDARD_NO_PAD
        .decode(header[mac_at + 4..header_end - 1].trim_ascii())
        .map_err(|_| FileError::Refused("the header's MAC is not base64".into()))?;
    hmac::verify(&header_key(&file_key), &header[..mac_at + 3], &mac)
        .map_err(|_| FileError::Refused("the header's MAC does not verify".into()))?;

    let mut wrapped = Vec::new();
    let mut labels: Option<HashSet<String>> = None;
    for r in recipients {
        let (stanzas, l) = r
            .wrap_file_key(&file_key)
            .map_err(|e| FileError::Recipient(e.to_string()))?;
        match &labels {
            Some(first) if *first != l => {
                return Err(FileError::Recipient(
                    "these recipients cannot be combined (their labels differ)".into(),
                ))
            }
            _ => labels = Some(l),
        }
        wrapped.extend(stanzas);
    }
    output.write_all(&new_header(&file_key, &wrapped))?;
    output.write_all(&buf[header_end..])?;
    let rest = super::copy(input, output)?;
    Ok((buf.len() - header_end) as u64 + rest)
}

/// Reads until the end of the MAC line (`--- …\n`); returns what was read and where the
/// header ends.
fn read_header(input: &mut dyn Read) -> Result<(Vec<u8>, usize), FileError> {
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
fn new_header(file_key: &FileKey, stanzas: &[Stanza]) -> Vec<u8> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::file::{open, parse_recipient, seal, KeyringIdentity, Recipient};
    use std::sync::Arc;

    fn opened(ids: &[Box<dyn age::Identity>], file: &[u8]) -> Result<Vec<u8>, FileError> {
        let mut out = Vec::new();
        open(ids, &mut &file[..], &mut out).map(|_| out)
    }

    #[test]
    fn rewrapped_files_open_for_the_new_recipients_with_the_same_payload() {
        let old = age::x25519::Identity::generate();
        let new = age::x25519::Identity::generate();
        let ring = Arc::new(
            crate::crypto::Keyring::single("k1", &[3; 32], "2026-12-01T00:00:00Z").unwrap(),
        );
        let plain: Vec<u8> = (0..200_000u32).map(|i| (i % 241) as u8).collect();
        let mut file = Vec::new();
        seal(
            &[parse_recipient(&old.to_public().to_string()).unwrap()],
            &mut &plain[..],
            &mut file,
            false,
        )
        .unwrap();
        let ids: Vec<Box<dyn age::Identity>> = vec![Box::new(old.clone())];
        let new_recipient = parse_recipient(&new.to_public().to_string()).unwrap();
        let keyring = Recipient::keyring(ring.clone(), std::slice::from_ref(&new_recipient));
        let to = [new_recipient, keyring];
        let mut rewrapped = Vec::new();
        rewrap(&ids, &to, &mut &file[..], &mut rewrapped).unwrap();
        // The payload (everything after the MAC line) is the same bytes; the header is new.
        let payload = |f: &[u8]| {
            let (_, end) = read_header(&mut &f[..]).unwrap();
            f[end..].to_vec()
        };
        assert_eq!(payload(&file), payload(&rewrapped));
        assert_ne!(file, rewrapped);
        // The new recipients open it; the old one no longer does.
        let new_ids: Vec<Box<dyn age::Identity>> = vec![Box::new(new.clone())];
        assert_eq!(opened(&new_ids, &rewrapped).unwrap(), plain);
        let ring_ids: Vec<Box<dyn age::Identity>> = vec![Box::new(KeyringIdentity::new(ring))];
        assert_eq!(opened(&ring_ids, &rewrapped).unwrap(), plain);
        assert!(opened(&ids, &rewrapped).is_err());
    }

    /// The MAC line is found wherever reads cut it (here: one byte per read), and a file with
    /// no header within the bound is refused.
    #[test]
    fn the_header_end_is_found_across_reads() {
        struct Drip<'a>(&'a [u8]);
        impl Read for Drip<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = self.0.len().min(1).min(buf.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let file = b"age-encryption.org/v1\n-> X25519 abc\nAAAA\n--- MAC\npayload";
        let (_, end) = read_header(&mut Drip(file)).unwrap();
        assert_eq!(&file[end..], b"payload");
        let junk = vec![b'x'; MAX_HEADER + 10];
        assert!(matches!(
            read_header(&mut &junk[..]),
            Err(FileError::Refused(_))
        ));
    }

    #[test]
    fn an_altered_header_is_refused() {
        let id = age::x25519::Identity::generate();
        let mut file = Vec::new();
        seal(
            &[parse_recipient(&id.to_public().to_string()).unwrap()],
            &mut &b"secret"[..],
            &mut file,
            false,
        )
        .unwrap();
        let ids: Vec<Box<dyn age::Identity>> = vec![Box::new(id.clone())];
        let to = [parse_recipient(&id.to_public().to_string()).unwrap()];
        // A grease stanza slipped in: the MAC no longer verifies.
        let at = memchr::memmem::find(&file, b"---").unwrap();
        let mut bad = file[..at].to_vec();
        bad.extend_from_slice(b"-> extra arg\n\n");
        bad.extend_from_slice(&file[at..]);
        let mut out = Vec::new();
        assert!(matches!(
            rewrap(&ids, &to, &mut &bad[..], &mut out),
            Err(FileError::Refused(_))
        ));
        out.clear();
        assert!(rewrap(&ids, &to, &mut &file[..], &mut out).is_ok());
    }
}
