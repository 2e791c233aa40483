//! Files and backups sealed with the proxy's keys (issue 19, docs/files.md): `fieldseal file
//! seal|open`.
//!
//! The format is age v1 (age-encryption.org/v1) rather than a new one: its payload is a chunked AEAD (ChaCha20-Poly1305 over 64 KiB chunks, a counter nonce
//! and a last-chunk flag — STREAM), so truncation, reordering and chunk swapping fail, and a
//! file of any size is sealed and opened in constant memory. Its header carries the file key
//! wrapped once per recipient and is authenticated by an HMAC under the file key. Files sealed
//! to X25519 (`age1…`) or SSH RSA/Ed25519 recipients open with the age and rage tools, and
//! theirs open here; a host that only seals holds no key that opens.
//!
//! The `age` crate provides the recipient and identity types and the armor; the header
//! ([`header`]: strict parsing, MAC) and the payload ([`stream`]: STREAM on AWS-LC's
//! ChaCha20-Poly1305, ~2× the crate's speed) are fieldseal's, checked by the C2SP age suite.
//!
//! Post-quantum recipients (`age1pq1…`, age's `mlkem768x25519` type, X-Wing) are in [`pq`].
//!
//! One recipient type is fieldseal's own, [`keyring::KeyringRecipient`]: the file key wrapped
//! under a keyring key (stanza `fieldseal-keyring <kid>`), so the proxy's keyring opens the
//! backups of the data it seals in flight, and rotates with it.
//!
//! Opening never leaves plaintext of a file that fails: the output is written to a temporary
//! file beside the destination (mode 0600) and renamed into place only once the last chunk
//! has authenticated.

mod header;
pub mod keyring;
pub mod pq;
pub mod rewrap;
pub mod sign;
mod stream;

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

pub use keyring::{KeyringIdentity, KeyringRecipient};
pub use pq::{PqIdentity, PqRecipient};

/// Why a file could not be sealed or opened.
#[derive(Debug)]
pub enum FileError {
    /// No recipient given, or one that does not parse.
    Recipient(String),
    /// No identity given, or one that cannot be read.
    Identity(String),
    /// Not an age file, no identity opens it, or it was altered (header or any chunk).
    Refused(String),
    Io(io::Error),
}

impl std::fmt::Display for FileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FileError::Recipient(m) => write!(f, "recipient: {m}"),
            FileError::Identity(m) => write!(f, "identity: {m}"),
            FileError::Refused(m) => write!(f, "the file does not open: {m}"),
            FileError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl From<io::Error> for FileError {
    fn from(e: io::Error) -> Self {
        FileError::Io(e)
    }
}

/// Every kind of recipient `fieldseal file` seals to, one variant each: the audit log names
/// the kind, and the keyring stanza takes the label of the recipients beside it.
pub enum Recipient {
    /// age's `mlkem768x25519` (`age1pq1…`, X-Wing): labelled `postquantum`.
    PostQuantum(PqRecipient),
    /// `age1…`.
    X25519(age::x25519::Recipient),
    /// An OpenSSH `ssh-rsa` (RSA-OAEP) or `ssh-ed25519` public key.
    Ssh(age::ssh::Recipient),
    /// The keyring's primary key (fieldseal's own stanza).
    Keyring(KeyringRecipient),
}

impl Recipient {
    /// The keyring's primary as a recipient beside `others`. age seals only to recipients
    /// whose labels agree, so that a file is never weaker than its strongest recipient
    /// promises; the keyring stanza is a 256-bit symmetric wrap, as safe from a quantum
    /// computer as the payload itself, so it takes the `postquantum` label when every other
    /// recipient is post-quantum and none otherwise: it joins either kind.
    pub fn keyring(ring: std::sync::Arc<crate::crypto::Keyring>, others: &[Recipient]) -> Self {
        let pq = !others.is_empty()
            && others
                .iter()
                .all(|r| matches!(r, Recipient::PostQuantum(_)));
        Recipient::Keyring(KeyringRecipient::new(ring).post_quantum(pq))
    }

    /// The kind, as the audit log's `recipients` name it.
    pub fn kind(&self) -> String {
        match self {
            Recipient::PostQuantum(_) => "mlkem768x25519".into(),
            Recipient::X25519(_) => "x25519".into(),
            Recipient::Ssh(_) => "ssh".into(),
            Recipient::Keyring(k) => format!("keyring:{}", k.kid()),
        }
    }
}

impl age::Recipient for Recipient {
    fn wrap_file_key(
        &self,
        file_key: &age_core::format::FileKey,
    ) -> Result<
        (
            Vec<age_core::format::Stanza>,
            std::collections::HashSet<String>,
        ),
        age::EncryptError,
    > {
        match self {
            Recipient::PostQuantum(r) => r.wrap_file_key(file_key),
            Recipient::X25519(r) => r.wrap_file_key(file_key),
            Recipient::Ssh(r) => r.wrap_file_key(file_key),
            Recipient::Keyring(r) => r.wrap_file_key(file_key),
        }
    }
}

/// A recipient written as age writes them: `age1pq1…` (post-quantum X-Wing), `age1…`
/// (X25519) or an OpenSSH public key line (`ssh-rsa …`, `ssh-ed25519 …`).
pub fn parse_recipient(text: &str) -> Result<Recipient, FileError> {
    let text = text.trim();
    if text.starts_with("age1pq1") {
        return text
            .parse::<PqRecipient>()
            .map(Recipient::PostQuantum)
            .map_err(FileError::Recipient);
    }
    if text.starts_with("age1") {
        return text
            .parse::<age::x25519::Recipient>()
            .map(Recipient::X25519)
            .map_err(|e| FileError::Recipient(e.to_string()));
    }
    if text.starts_with("ssh-") {
        return text
            .parse::<age::ssh::Recipient>()
            .map(Recipient::Ssh)
            .map_err(|e| FileError::Recipient(format!("{e:?}")));
    }
    Err(FileError::Recipient(
        "expected an age1pq1… or age1… recipient or an OpenSSH public key".into(),
    ))
}

/// The recipients of a file: one per non-empty line that is not a `#` comment.
pub fn read_recipients(path: &Path) -> Result<Vec<Recipient>, FileError> {
    let text = fs::read_to_string(path)
        .map_err(|e| FileError::Recipient(format!("{}: {e}", path.display())))?;
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(parse_recipient)
        .collect()
}

/// The identities in a file: age identities (`AGE-SECRET-KEY-1…` and post-quantum
/// `AGE-SECRET-KEY-PQ-1…` lines) or one OpenSSH private key (unencrypted).
pub fn read_identities(path: &Path) -> Result<Vec<Box<dyn age::Identity>>, FileError> {
    // Secret keys: read into memory that is zeroized when dropped.
    let text = crate::secret_file::read_pem(path, "identity file").map_err(FileError::Identity)?;
    if text.contains("PRIVATE KEY-----") {
        let identity = age::ssh::Identity::from_buffer(
            io::Cursor::new(text.as_bytes()),
            Some(path.display().to_string()),
        )
        .map_err(|e| FileError::Identity(format!("{}: {e}", path.display())))?;
        return match identity {
            age::ssh::Identity::Unencrypted(_) => Ok(vec![Box::new(identity)]),
            _ => Err(FileError::Identity(format!(
                "{}: an encrypted or unsupported SSH key",
                path.display()
            ))),
        };
    }
    let bad = |e: &dyn std::fmt::Display| FileError::Identity(format!("{}: {e}", path.display()));
    // age's reader does not know the post-quantum type yet: those lines are parsed here, the
    // rest by age.
    let mut identities: Vec<Box<dyn age::Identity>> = Vec::new();
    let mut rest = zeroize::Zeroizing::new(String::new());
    for line in text.lines() {
        if pq::is_identity_line(line) {
            identities.push(Box::new(PqIdentity::parse(line).map_err(|e| bad(&e))?));
        } else {
            rest.push_str(line);
            rest.push('\n');
        }
    }
    let has_classical = rest
        .lines()
        .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
    if has_classical || identities.is_empty() {
        identities.extend(
            age::IdentityFile::from_buffer(io::Cursor::new(rest.as_bytes()))
                .map_err(|e| bad(&e))?
                .into_identities()
                .map_err(|e| bad(&e))?,
        );
    }
    Ok(identities)
}

/// Seals `input` to every recipient into `output` (ASCII armor when `armor`): a fresh file
/// key, the header ([`header`]), then the payload ([`stream`]). Returns the plaintext bytes
/// read.
pub fn seal(
    recipients: &[Recipient],
    input: &mut dyn Read,
    output: &mut dyn Write,
    armor: bool,
) -> Result<u64, FileError> {
    let file_key = header::new_file_key()?;
    let stanzas = header::wrap(recipients, &file_key)?;
    let header = header::write(&file_key, &stanzas);
    if !armor {
        output.write_all(&header)?;
        return stream::seal(&file_key, input, output);
    }
    let mut armored =
        age::armor::ArmoredWriter::wrap_output(output, age::armor::Format::AsciiArmor)?;
    armored.write_all(&header)?;
    let n = stream::seal(&file_key, input, &mut armored)?;
    armored.finish()?;
    Ok(n)
}

/// Opens `input` with the first identity that unwraps its file key, writing the plaintext to
/// `output` as each chunk authenticates. The caller must not keep `output` if this fails
/// (see [`open_file`]). Returns the plaintext bytes written.
pub fn open(
    identities: &[Box<dyn age::Identity>],
    input: &mut dyn Read,
    output: &mut dyn Write,
) -> Result<u64, FileError> {
    if identities.is_empty() {
        return Err(FileError::Identity("none given".into()));
    }
    let mut input = BufReader::with_capacity(COPY_BUFFER, input);
    // Binary files skip the armor layer, which copies every byte once more. Armor may follow
    // whitespace (age v1), which is passed over here (the armor reader does not); a binary
    // file may not.
    let mut blank = false;
    loop {
        let text = input.fill_buf()?;
        let n = text.iter().take_while(|b| b.is_ascii_whitespace()).count();
        if n == 0 {
            break;
        }
        input.consume(n);
        blank = true;
    }
    let armored = input.fill_buf()?.starts_with(b"-----BEGIN");
    if blank && !armored {
        return Err(FileError::Refused(
            "not an age file (leading whitespace)".into(),
        ));
    }
    if armored {
        let mut armored = age::armor::ArmoredReader::new(input);
        decrypt(identities, &mut armored, output).map_err(|e| match e {
            // The armor reader reports bad armor as invalid data.
            FileError::Io(e) if e.kind() == io::ErrorKind::InvalidData => {
                FileError::Refused(format!("bad armor: {e}"))
            }
            e => e,
        })
    } else {
        decrypt(identities, &mut input, output)
    }
}

fn decrypt(
    identities: &[Box<dyn age::Identity>],
    input: &mut dyn Read,
    output: &mut dyn Write,
) -> Result<u64, FileError> {
    let (buf, header_end) = header::read(input)?;
    let file_key = header::unwrap(identities, &buf[..header_end])?;
    stream::open(&file_key, &mut (&buf[header_end..]).chain(input), output)
}

/// One STREAM chunk: what is read and written at a time (`io::copy`'s 8 KiB buffer cost a
/// quarter of the throughput in calls).
const COPY_BUFFER: usize = 64 * 1024;

/// `io::copy` with a chunk-sized buffer.
pub(crate) fn copy(input: &mut dyn Read, output: &mut dyn Write) -> io::Result<u64> {
    let mut buf = vec![0u8; COPY_BUFFER];
    let mut total = 0u64;
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        output.write_all(&buf[..n])?;
        total += n as u64;
    }
}

/// [`open`] from the file `input` into a new file `output`, which appears only if the whole
/// file authenticated ([`write_new`]).
pub fn open_file(
    identities: &[Box<dyn age::Identity>],
    input: &Path,
    output: &Path,
) -> Result<u64, FileError> {
    let mut source = File::open(input)?;
    write_new(output, |out| open(identities, &mut source, out))
}

/// [`open_file`] of a signed file: the signature (`sig_text`) is verified over the whole file
/// first, before any plaintext is written; then the file is decrypted while it is hashed again,
/// and the output appears only if those bytes are the ones that were verified.
pub fn open_file_signed(
    identities: &[Box<dyn age::Identity>],
    input: &Path,
    output: &Path,
    verifier: &sign::Verifier,
    sig_text: &str,
) -> Result<u64, FileError> {
    let verified = sign::digest_file(input)?;
    verifier.verify(sig_text, &verified)?;
    let mut source = sign::Hashing::new(File::open(input)?);
    write_new(output, |out| {
        let n = open(identities, &mut source, out)?;
        copy(&mut source, &mut io::sink())?;
        if source.digest() != verified {
            return Err(FileError::Refused(
                "the file changed between the signature check and decryption".into(),
            ));
        }
        Ok(n)
    })
}

/// Writes the new file `path` through `write`: into a temporary file beside it (created 0600,
/// never an existing file), synced and renamed into place only when `write` succeeded, removed
/// otherwise — a failed seal or open leaves nothing behind. An existing `path` is refused.
pub fn write_new(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> Result<u64, FileError>,
) -> Result<u64, FileError> {
    if path.exists() {
        return Err(FileError::Io(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists; not overwritten", path.display()),
        )));
    }
    let partial = partial_path(path);
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut writer = BufWriter::new(options.open(&partial)?);
    let result = write(&mut writer).and_then(|n| {
        let file = writer.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        fs::rename(&partial, path)?;
        Ok(n)
    });
    if result.is_err() {
        let _ = fs::remove_file(&partial);
    }
    result
}

/// `dir/.name.partial-<pid>`: beside the destination, so the rename is atomic.
fn partial_path(output: &Path) -> PathBuf {
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "output".into());
    output.with_file_name(format!(".{name}.partial-{}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use age::secrecy::ExposeSecret;

    fn identity() -> (age::x25519::Identity, String) {
        let id = age::x25519::Identity::generate();
        let recipient = id.to_public().to_string();
        (id, recipient)
    }

    fn sealed(recipient: &str, plain: &[u8], armor: bool) -> Vec<u8> {
        let mut out = Vec::new();
        seal(
            &[parse_recipient(recipient).unwrap()],
            &mut &plain[..],
            &mut out,
            armor,
        )
        .unwrap();
        out
    }

    fn opened(id: &age::x25519::Identity, file: &[u8]) -> Result<Vec<u8>, FileError> {
        let ids: Vec<Box<dyn age::Identity>> = vec![Box::new(id.clone())];
        let mut out = Vec::new();
        open(&ids, &mut &file[..], &mut out).map(|_| out)
    }

    #[test]
    fn round_trip_binary_and_armored_across_chunk_sizes() {
        let (id, recipient) = identity();
        for len in [0, 1, 65_535, 65_536, 65_537, 200_000] {
            let plain: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            for armor in [false, true] {
                let file = sealed(&recipient, &plain, armor);
                assert_eq!(
                    opened(&id, &file).unwrap(),
                    plain,
                    "len {len} armor {armor}"
                );
            }
        }
        assert!(!id.to_string().expose_secret().is_empty());
    }

    /// Whitespace may come before armor (age v1), never before a binary file.
    #[test]
    fn leading_whitespace_only_before_armor() {
        let (id, recipient) = identity();
        let with_blank = |file: Vec<u8>| [b" \r\n\t\n".to_vec(), file].concat();
        let armored = with_blank(sealed(&recipient, b"payload", true));
        assert_eq!(opened(&id, &armored).unwrap(), b"payload");
        let binary = with_blank(sealed(&recipient, b"payload", false));
        assert!(matches!(opened(&id, &binary), Err(FileError::Refused(_))));
    }

    /// Every altered file fails: a flipped bit anywhere, the last chunk cut, two chunks
    /// swapped, a chunk dropped, bytes appended.
    #[test]
    fn tampering_truncation_and_reordering_fail() {
        let (id, recipient) = identity();
        let plain: Vec<u8> = (0..3 * 65_536 + 100).map(|i| (i % 253) as u8).collect();
        let file = sealed(&recipient, &plain, false);
        // The payload starts after the header's MAC line and the 16-byte nonce.
        let header_end = file.windows(4).position(|w| w == b"--- ").unwrap();
        let payload =
            header_end + file[header_end..].iter().position(|&b| b == b'\n').unwrap() + 1 + 16;
        let chunk = 65_536 + 16;
        for at in [
            10,
            header_end + 5,
            payload + 3,
            payload + chunk + 9,
            file.len() - 1,
        ] {
            let mut bad = file.clone();
            bad[at] ^= 1;
            assert!(opened(&id, &bad).is_err(), "bit flipped at {at}");
        }
        assert!(opened(&id, &file[..file.len() - 10]).is_err(), "truncated");
        assert!(
            opened(&id, &file[..payload + 2 * chunk]).is_err(),
            "last chunk dropped"
        );
        let mut swapped = file[..payload].to_vec();
        swapped.extend_from_slice(&file[payload + chunk..payload + 2 * chunk]);
        swapped.extend_from_slice(&file[payload..payload + chunk]);
        swapped.extend_from_slice(&file[payload + 2 * chunk..]);
        assert_eq!(swapped.len(), file.len());
        assert!(opened(&id, &swapped).is_err(), "chunks swapped");
        let mut longer = file.clone();
        longer.extend_from_slice(b"more");
        assert!(opened(&id, &longer).is_err(), "data appended");
        assert_eq!(opened(&id, &file).unwrap(), plain);
    }

    #[test]
    fn another_identity_does_not_open() {
        let (_, recipient) = identity();
        let (other, _) = identity();
        let file = sealed(&recipient, b"secret", false);
        assert!(matches!(opened(&other, &file), Err(FileError::Refused(_))));
    }

    #[test]
    fn a_failed_open_leaves_no_output_file() {
        let (id, recipient) = identity();
        let dir = tempfile::tempdir().unwrap();
        let plain = vec![5u8; 150_000];
        let mut file = sealed(&recipient, &plain, false);
        let input = dir.path().join("backup.age");
        let output = dir.path().join("backup.json");
        let last = file.len() - 1;
        file[last] ^= 1;
        fs::write(&input, &file).unwrap();
        let ids: Vec<Box<dyn age::Identity>> = vec![Box::new(id.clone())];
        assert!(open_file(&ids, &input, &output).is_err());
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "only the input is left"
        );
        file[last] ^= 1;
        fs::write(&input, &file).unwrap();
        assert_eq!(
            open_file(&ids, &input, &output).unwrap(),
            plain.len() as u64
        );
        assert_eq!(fs::read(&output).unwrap(), plain);
    }
}
