//! Key material and the `fs1` field token (contract §1, §2).

pub mod client_keys;
pub mod envelope;
pub mod hpke;
pub mod jwe;
pub mod kek_command;
pub mod keyring;
pub mod rsa_keys;
pub mod token;
pub mod wrap;
pub mod xwing;

pub use keyring::{Key, KeyState, Keyring, KeyringError};
pub use token::{OpenError, TOKEN_PREFIX};
pub use wrap::{Kek, KekSource};
