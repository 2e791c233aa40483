//! A sealed file's header rewrapped to new recipients without touching its payload: after a
//! keyring rotation, or to add or drop a recipient, the file key is unwrapped once, wrapped
//! again for each new recipient, the header re-authenticated, and the payload copied byte for
//! byte (its key depends only on the file key and the payload's own nonce).
//!
//! The old header is checked first — an identity must unwrap the file key and the header's
//! MAC must verify under it — so a header altered by someone without the file key is refused,
//! not laundered into a valid new one.

use std::io::{Read, Write};

use super::{header, FileError};

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
    let (buf, header_end) = header::read(input)?;
    let file_key = header::unwrap(identities, &buf[..header_end])?;
    let wrapped = header::wrap(recipients, &file_key)?;
    output.write_all(&header::write(&file_key, &wrapped))?;
    output.write_all(&buf[header_end..])?;
    let rest = super::copy(input, output)?;
    Ok((buf.len() - header_end) as u64 + rest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::file::header::{self, MAX_HEADER};
    use crate::file::{open, parse_recipient, seal, KeyringIdentity, Recipient};
    use std::io::{self, Read};
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
            let (_, end) = header::read(&mut &f[..]).unwrap();
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
        let (_, end) = header::read(&mut Drip(file)).unwrap();
        assert_eq!(&file[end..], b"payload");
        let junk = vec![b'x'; MAX_HEADER + 10];
        assert!(matches!(
            header::read(&mut &junk[..]),
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
