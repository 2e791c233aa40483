//! Permission checks for files that hold secrets: the keyring, TLS, RSA and X25519 private keys,
//! keyring passphrase and KEK files, the RSA key passphrase file and the audit key.
//!
//! Contract §2: refuse a secret file that others can read; warn when the group can, because a
//! Kubernetes Secret mounted for a non-root container with `fsGroup` is typically 0440 and must
//! work. On top of that, a secret file is refused when
//!
//! - its group or other users can **write** it (`mode & 0o022`): whoever can write it can put
//!   keys of their choosing in place (or a plain keyring where a wrapped one was), and
//! - it is **owned by another user** than the one fieldseal runs as (the effective uid), unless
//!   that owner is root: the owner can change the mode and the contents at any time, so the
//!   mode bits would promise nothing. Root is accepted because Kubernetes Secret volumes are
//!   root-owned (group `fsGroup`, mode 0440), and root can replace any file anyway.
//!
//! # Symlinks
//!
//! The checks apply to the file the path finally resolves to — the file whose bytes are read —
//! not to the symlinks on the way. Kubernetes mounts each Secret key as a symlink through
//! `..data` into a timestamped directory, so the path a configuration names is a link. A
//! link's own mode is always 0777 on Linux and is never consulted for access, and its owner
//! does not decide who can replace it: the permissions of the directory holding it do (as they
//! do for a regular file). So the links' `lstat` would tell nothing, while the target's mode
//! and owner are what protect the secret. Directories are not checked: keep the directories
//! that hold key files unwritable by other users (a Secret volume is read-only).
//!
//! [`read`] checks the opened file itself (`fstat` on the descriptor it then reads), so a file
//! swapped between the check and the read cannot slip through.

use std::path::Path;

use zeroize::Zeroizing;

/// How readable a secret file is beyond its owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exposure {
    OwnerOnly,
    GroupReadable,
}

/// Checks `path` (following symlinks); `Err` explains why the file must not be used. Messages
/// name the path and what is wrong with it, never its contents.
pub fn check(path: &Path) -> Result<Exposure, String> {
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    check_metadata(path, &meta)
}

/// A 32-byte key as key files hold it: exactly 32 raw bytes, or the standard base64 of 32
/// bytes (surrounding whitespace, such as a trailing newline, ignored). `what` names the key in
/// messages (`"the audit key"`), which give sizes, never contents.
pub fn key_32(bytes: &[u8], what: &str) -> Result<Zeroizing<[u8; 32]>, String> {
    use base64::Engine;
    let mut key = Zeroizing::new([0u8; 32]);
    if bytes.len() == 32 {
        key.copy_from_slice(bytes);
        return Ok(key);
    }
    let decoded = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(bytes.trim_ascii())
            .map_err(|_| {
                format!(
                    "{what} must be 32 raw bytes or standard base64 text of 32 bytes; found {} \
                     bytes that are neither",
                    bytes.len()
                )
            })?,
    );
    if decoded.len() != 32 {
        return Err(format!(
            "{what} must be 32 bytes; its base64 text decodes to {}",
            decoded.len()
        ));
    }
    key.copy_from_slice(&decoded);
    Ok(key)
}

/// Reads a 32-byte key file ([`key_32`]) after checking it like [`read`]. Errors name the
/// file, never its contents.
pub fn read_key_32(path: &Path, what: &str) -> Result<(Zeroizing<[u8; 32]>, Exposure), String> {
    let (bytes, exposure) = read(path)?;
    let key = key_32(&bytes, what).map_err(|m| format!("{}: {m}", path.display()))?;
    Ok((key, exposure))
}

/// Opens `path` (following symlinks), checks the opened file like [`check`], and reads it into
/// memory that is zeroized on drop.
pub fn read(path: &Path) -> Result<(Zeroizing<Vec<u8>>, Exposure), String> {
    use std::io::Read;
    // Not a regular file (a FIFO would block `open`): refused before opening.
    check(path)?;
    let mut file =
        std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let exposure = check_metadata(path, &meta)?;
    let mut bytes = Zeroizing::new(Vec::with_capacity(
        usize::try_from(meta.len()).unwrap_or(0).saturating_add(1),
    ));
    file.read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok((bytes, exposure))
}

fn check_metadata(path: &Path, meta: &std::fs::Metadata) -> Result<Exposure, String> {
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    assess(mode_of(meta), owner_of(meta), effective_uid())
        .map_err(|m| format!("{} {m}", path.display()))
}

#[cfg(unix)]
fn mode_of(meta: &std::fs::Metadata) -> u32 {
    use std::os::unix::fs::MetadataExt;
    meta.mode()
}

#[cfg(not(unix))]
fn mode_of(_meta: &std::fs::Metadata) -> u32 {
    0o600
}

#[cfg(unix)]
fn owner_of(meta: &std::fs::Metadata) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    Some(meta.uid())
}

#[cfg(not(unix))]
fn owner_of(_meta: &std::fs::Metadata) -> Option<u32> {
    None
}

/// The user fieldseal runs as: the effective uid, which the kernel checks file access against.
#[cfg(unix)]
pub fn effective_uid() -> Option<u32> {
    Some(rustix::process::geteuid().as_raw())
}

#[cfg(not(unix))]
pub fn effective_uid() -> Option<u32> {
    None
}

/// The owner that is always accepted: root (Kubernetes Secret volumes are root-owned).
const ROOT: u32 = 0;

/// The verdict on a file with `mode` owned by `owner`, read by a process running as `euid`
/// (`None`: not known on this platform, not checked).
fn assess(mode: u32, owner: Option<u32>, euid: Option<u32>) -> Result<Exposure, String> {
    let shown = mode & 0o7777;
    let writers = match (mode & 0o020 != 0, mode & 0o002 != 0) {
        (true, true) => Some("its group and other users"),
        (true, false) => Some("its group"),
        (false, true) => Some("other users"),
        (false, false) => None,
    };
    if let Some(writers) = writers {
        return Err(format!(
            "holds a secret but is writable by {writers} (mode {shown:04o}), who could replace it; run `chmod 600` on it (0440 or 0400 where a group must read it)"
        ));
    }
    if mode & 0o007 != 0 {
        return Err(format!(
            "holds a secret but is accessible to other users (mode {shown:04o}); run `chmod 600` on it"
        ));
    }
    if let (Some(owner), Some(euid)) = (owner, euid) {
        if owner != euid && owner != ROOT {
            return Err(format!(
                "holds a secret but is owned by uid {owner}, not by the user fieldseal runs as (uid {euid}) or root: its owner can change it at any time; `chown {euid}` it (or `chown root`)"
            ));
        }
    }
    if mode & 0o070 != 0 {
        Ok(Exposure::GroupReadable)
    } else {
        Ok(Exposure::OwnerOnly)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: Option<u32> = Some(1000);

    #[test]
    fn modes() {
        assert_eq!(assess(0o100600, ME, ME), Ok(Exposure::OwnerOnly));
        assert_eq!(assess(0o100400, ME, ME), Ok(Exposure::OwnerOnly));
        assert_eq!(assess(0o100440, ME, ME), Ok(Exposure::GroupReadable));
        let err = assess(0o100644, ME, ME).unwrap_err();
        assert!(err.contains("0644") && err.contains("chmod 600"), "{err}");
        assert!(assess(0o100604, ME, ME).is_err());
        assert!(assess(0o100601, ME, ME).is_err());
    }

    #[test]
    fn writable_by_group_or_others_is_refused() {
        for (mode, who) in [
            (0o100620, "writable by its group (mode 0620)"),
            (0o100660, "writable by its group (mode 0660)"),
            (0o100460, "writable by its group (mode 0460)"),
            (0o100602, "writable by other users (mode 0602)"),
            (
                0o100622,
                "writable by its group and other users (mode 0622)",
            ),
            (
                0o100666,
                "writable by its group and other users (mode 0666)",
            ),
        ] {
            let err = assess(mode, ME, ME).unwrap_err();
            assert!(err.contains(who) && err.contains("chmod 600"), "{err}");
        }
    }

    #[test]
    fn owner_must_be_the_process_user_or_root() {
        // Another user's file: refused whatever its mode.
        for mode in [0o100600, 0o100400, 0o100440] {
            let err = assess(mode, Some(1001), ME).unwrap_err();
            assert!(
                err.contains("owned by uid 1001")
                    && err.contains("(uid 1000)")
                    && err.contains("chown 1000"),
                "{err}"
            );
        }
        // Root-owned (a Kubernetes Secret volume: root, group fsGroup, 0440): accepted.
        assert_eq!(assess(0o100440, Some(0), ME), Ok(Exposure::GroupReadable));
        assert_eq!(assess(0o100400, Some(0), ME), Ok(Exposure::OwnerOnly));
        // Root reading its own files, and platforms without uids.
        assert_eq!(assess(0o100600, Some(0), Some(0)), Ok(Exposure::OwnerOnly));
        assert_eq!(assess(0o100600, Some(1001), None), Ok(Exposure::OwnerOnly));
        // The mode is judged before the owner.
        assert!(assess(0o100660, Some(0), ME)
            .unwrap_err()
            .contains("writable by its group"));
    }

    #[cfg(unix)]
    fn file_with_mode(dir: &Path, name: &str, mode: u32) -> std::path::PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(name);
        std::fs::write(&path, b"secret bytes").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[cfg(unix)]
    #[test]
    fn real_files_by_mode() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for (mode, want) in [
            (0o600, Ok(Exposure::OwnerOnly)),
            (0o400, Ok(Exposure::OwnerOnly)),
            (0o440, Ok(Exposure::GroupReadable)),
            (0o640, Ok(Exposure::GroupReadable)),
        ] {
            let path = file_with_mode(d, &format!("ok-{mode:o}"), mode);
            assert_eq!(check(&path), want, "{mode:o}");
            let (bytes, exposure) = read(&path).unwrap();
            assert_eq!((&bytes[..], Ok(exposure)), (&b"secret bytes"[..], want));
        }
        for (mode, needle) in [
            (0o660, "writable by its group"),
            (0o620, "writable by its group"),
            (0o602, "writable by other users"),
            (0o644, "accessible to other users"),
        ] {
            let path = file_with_mode(d, &format!("bad-{mode:o}"), mode);
            for err in [check(&path).unwrap_err(), read(&path).unwrap_err()] {
                assert!(
                    err.starts_with(&path.display().to_string()) && err.contains(needle),
                    "{mode:o}: {err}"
                );
                assert!(!err.contains("secret bytes"), "{err}");
            }
        }
        // A symlink (a Kubernetes Secret mount) is judged by its target.
        let target = file_with_mode(d, "target", 0o660);
        let link = d.join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(check(&link).unwrap_err().contains("writable by its group"));
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o440)).unwrap();
        }
        assert_eq!(check(&link), Ok(Exposure::GroupReadable));
        assert!(check(d).unwrap_err().contains("not a regular file"));
        // A FIFO is refused before `open`, which would block.
        let fifo = d.join("fifo");
        if std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .is_ok_and(|s| s.success())
        {
            assert!(read(&fifo).unwrap_err().contains("not a regular file"));
        }
    }

    /// A file owned by another user is refused; one owned by root or by us is accepted. Needs
    /// root to `chown` a file to someone else (the sandbox and CI run as root).
    #[cfg(unix)]
    #[test]
    fn real_files_by_owner() {
        let dir = tempfile::tempdir().unwrap();
        let path = file_with_mode(dir.path(), "owned", 0o440);
        let euid = effective_uid().unwrap();
        // Our own file.
        assert_eq!(check(&path), Ok(Exposure::GroupReadable));
        if euid != 0 {
            eprintln!(
                "skipped: the foreign-owner and root-owner cases need root to chown a file (running as uid {euid})"
            );
            return;
        }
        std::os::unix::fs::chown(&path, Some(1000), None).unwrap();
        for err in [check(&path).unwrap_err(), read(&path).unwrap_err()] {
            assert!(
                err.contains("owned by uid 1000") && err.contains("(uid 0)"),
                "{err}"
            );
        }
        // A symlink owned by us to another user's file: the target decides.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(check(&link).unwrap_err().contains("owned by uid 1000"));
        // Root-owned, group-readable (a Secret volume with fsGroup): accepted.
        std::os::unix::fs::chown(&path, Some(0), Some(1000)).unwrap();
        assert_eq!(check(&path), Ok(Exposure::GroupReadable));
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
