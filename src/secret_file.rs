//! Permission checks for files that hold secrets (TLS and RSA private keys, keyrings).
//!
//! Contract §2: refuse a secret file that others can read; warn when the group can, because a
//! Kubernetes Secret mounted for a non-root container with `fsGroup` is typically 0440 and must
//! work. Symlinks are followed (Secrets are mounted as symlinked directories).

use std::path::Path;

/// How readable a secret file is beyond its owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exposure {
    OwnerOnly,
    GroupReadable,
}

/// Checks `path`; `Err` explains why the file must not be used.
pub fn check(path: &Path) -> Result<Exposure, String> {
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    exposure_of(mode_of(&meta)).map_err(|m| format!("{} {m}", path.display()))
}

#[cfg(unix)]
fn mode_of(meta: &std::fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode()
}

#[cfg(not(unix))]
fn mode_of(_meta: &std::fs::Metadata) -> u32 {
    0o600
}

fn exposure_of(mode: u32) -> Result<Exposure, String> {
    if mode & 0o007 != 0 {
        Err(format!(
            "holds a secret but is accessible to other users (mode {:04o}); run `chmod 600` on it",
            mode & 0o7777
        ))
    } else if mode & 0o070 != 0 {
        Ok(Exposure::GroupReadable)
    } else {
        Ok(Exposure::OwnerOnly)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert_eq!(exposure_of(0o100600), Ok(Exposure::OwnerOnly));
        assert_eq!(exposure_of(0o100400), Ok(Exposure::OwnerOnly));
        assert_eq!(exposure_of(0o100440), Ok(Exposure::GroupReadable));
        let err = exposure_of(0o100644).unwrap_err();
        assert!(err.contains("0644") && err.contains("chmod 600"), "{err}");
        assert!(exposure_of(0o100604).is_err());
    }
}

/// Writes a secret file atomically with mode 0600: a temporary file in the same directory,
/// fsynced, then renamed over the target, so readers never see a partial or exposed file.
pub fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    write_staged(path, contents, |staged, path| std::fs::rename(staged, path))
}

/// Like [`write_private`], but never replaces an existing file, even one that appears while
/// writing: the staged file is hard-linked to `path` (which fails with `AlreadyExists`), then
/// unlinked. For new keys, whose loss would orphan what they protect.
pub fn create_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    write_staged(path, contents, |staged, path| {
        let linked = std::fs::hard_link(staged, path);
        let _ = std::fs::remove_file(staged);
        linked
    })
}

/// Writes `contents` to a private (0600, create-new) temporary file beside `path`, fsyncs it,
/// then lets `finish` move it into place.
fn write_staged(
    path: &Path,
    contents: &[u8],
    finish: impl FnOnce(&Path, &Path) -> std::io::Result<()>,
) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("secret");
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let result = (|| {
        let mut file = opts.open(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        finish(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod write_tests {
    use super::*;

    #[test]
    fn written_secrets_are_owner_only() {
        let dir = std::env::temp_dir().join(format!("fieldseal-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("key.pem");
        write_private(&path, b"first").unwrap();
        write_private(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        assert_eq!(check(&path), Ok(Exposure::OwnerOnly));
        let err = create_private(&path, b"third").unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        let fresh = dir.join("new.pem");
        create_private(&fresh, b"new").unwrap();
        assert_eq!(check(&fresh), Ok(Exposure::OwnerOnly));
        let leftovers = std::fs::read_dir(&dir).unwrap().count();
        assert_eq!(leftovers, 2, "no staged files left behind");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// Reads a PEM key file as text into memory that is zeroized on drop. `what` names the key in
/// errors ("RSA key"); errors never contain file contents.
pub fn read_pem(path: &Path, what: &str) -> Result<zeroize::Zeroizing<String>, String> {
    let bytes =
        std::fs::read(path).map_err(|e| format!("cannot read {what} {}: {e}", path.display()))?;
    String::from_utf8(bytes)
        .map(zeroize::Zeroizing::new)
        .map_err(|e| {
            // The rejected bytes are key material too.
            zeroize::Zeroize::zeroize(&mut e.into_bytes());
            format!("{} is not a PEM file (not UTF-8 text)", path.display())
        })
}
