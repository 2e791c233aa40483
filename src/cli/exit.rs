//! Exit codes of every command, in one place.

/// Startup errors of `run`/`demo` and unusable inputs of the key commands (bad configuration,
/// unreadable files, unbindable ports): `EX_USAGE` from sysexits.h, so supervisors can tell
/// them from crashes.
pub const STARTUP: u8 = 64;

/// A command ran and failed (a key operation refused, a token that does not open, `init`
/// refusing to overwrite, `rewrap` stopping at a bad token).
pub const FAILED: u8 = 1;

/// `check`: the configuration has problems (each is printed).
pub const CHECK_FAILED: u8 = 1;

/// `audit verify`: the chain is broken (or `audit keygen` failed).
pub const AUDIT_BROKEN: u8 = 1;

/// `audit verify`: the log or the key could not be read, so nothing was checked.
pub const AUDIT_CANNOT_CHECK: u8 = 2;
