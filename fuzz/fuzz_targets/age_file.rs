//! Sealed files (`fieldseal file open`, docs/files.md): fieldseal's own age header parser and
//! STREAM payload (`file::header`, `file::stream`) on arbitrary bytes, checked against the
//! `age` crate, plus round trips of arbitrary plaintext.
//!
//! Input: the raw bytes are a sealed file, opened with the C2SP age suite's X25519 identity
//! (so the suite's vectors are seeds a mutation starts from). The same bytes are also the
//! plaintext of a round trip.
//!
//! Checks: no panic; what fieldseal opens, the `age` crate opens to the same bytes (fieldseal
//! parses more strictly, never more loosely); a sealed file opens to its plaintext, in binary
//! and in armor, and not after any one-byte change.
#![no_main]

use std::io::{BufRead, BufReader, Read};
use std::sync::OnceLock;

use fieldseal::file::{self, Recipient};
use libfuzzer_sys::fuzz_target;

fn identity() -> &'static age::x25519::Identity {
    static ID: OnceLock<age::x25519::Identity> = OnceLock::new();
    ID.get_or_init(|| fieldseal_fuzz::AGE_IDENTITY.parse().unwrap())
}

fn identities() -> Vec<Box<dyn age::Identity>> {
    vec![Box::new(identity().clone())]
}

/// The `age` crate's own reading of `data` (armor after leading whitespace, as fieldseal).
fn age_crate_open(data: &[u8]) -> Option<Vec<u8>> {
    let start = data.iter().take_while(|b| b.is_ascii_whitespace()).count();
    let mut input = BufReader::new(age::armor::ArmoredReader::new(&data[start..]));
    input.fill_buf().ok()?;
    let decryptor = age::Decryptor::new_buffered(input).ok()?;
    let ids = identities();
    let mut reader = decryptor
        .decrypt(ids.iter().map(|i| i.as_ref() as _))
        .ok()?;
    let mut out = Vec::new();
    reader.read_to_end(&mut out).ok()?;
    Some(out)
}

fn open(data: &[u8]) -> Result<Vec<u8>, file::FileError> {
    let mut out = Vec::new();
    file::open(&identities(), &mut &data[..], &mut out).map(|_| out)
}

fuzz_target!(|data: &[u8]| {
    // 1. Arbitrary bytes as a sealed file.
    if let Ok(plain) = open(data) {
        assert_eq!(
            age_crate_open(data).as_deref(),
            Some(&plain[..]),
            "fieldseal opened a file the age crate does not open the same"
        );
    }

    // 2. The bytes as plaintext: sealed, they open to themselves, and not once altered.
    let armor = data.first().is_some_and(|b| b & 1 == 1);
    let recipients = [Recipient::X25519(identity().to_public())];
    let mut sealed = Vec::new();
    file::seal(&recipients, &mut &data[..], &mut sealed, armor).unwrap();
    assert_eq!(open(&sealed).unwrap(), data);
    if !armor {
        let at = data
            .iter()
            .fold(7usize, |h, b| h.wrapping_mul(31).wrapping_add(*b as usize))
            % sealed.len();
        sealed[at] ^= 1 << (data.len() % 8);
        assert!(
            open(&sealed).is_err(),
            "a file opened after byte {at} changed"
        );
    }
});
