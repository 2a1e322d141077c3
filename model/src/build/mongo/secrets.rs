//! Generated credentials and the credentials read back from Secrets.
//!
//! Passwords and the keyfile come from the OS CSPRNG ([`OsRandom`]); tests pass their own
//! [`SecretSource`]. Generated values are hex: URL-safe in a connection string without escaping,
//! and within the keyfile's base64 alphabet.

use super::names::{KEYFILE_KEY, PASSWORD_KEY, USERNAME_KEY};
use k8s_openapi::api::core::v1::Secret;
use thiserror::Error;

/// Bytes of entropy of a generated password (192 bits).
const PASSWORD_BYTES: usize = 24;
/// Bytes of entropy of a generated keyfile (768 hex characters, under mongod's 1024 limit).
const KEYFILE_BYTES: usize = 384;

/// Where new secret values come from.
pub trait SecretSource {
    /// A new password.
    fn password(&mut self) -> String;
    /// New keyfile contents.
    fn keyfile(&mut self) -> String;
}

/// The operating system's CSPRNG (`getrandom`).
#[derive(Debug, Default, Clone, Copy)]
pub struct OsRandom;

impl OsRandom {
    fn hex(bytes: usize) -> String {
        let mut buf = vec![0u8; bytes];
        // A machine without a working OS RNG cannot run the operator safely at all.
        getrandom::fill(&mut buf).expect("the OS random number generator works");
        hex::encode(buf)
    }
}

impl SecretSource for OsRandom {
    fn password(&mut self) -> String {
        Self::hex(PASSWORD_BYTES)
    }
    fn keyfile(&mut self) -> String {
        Self::hex(KEYFILE_BYTES)
    }
}

/// A username and password read from a Secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    // Never print a password, even in debug logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// A credential Secret that cannot be used.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SecretError {
    /// The Secret lacks a key.
    #[error("Secret {secret} has no key {key}")]
    MissingKey {
        /// Secret name.
        secret: String,
        /// Missing key.
        key: String,
    },
    /// A value is not valid UTF-8 or is empty.
    #[error("Secret {secret} key {key} must be non-empty UTF-8")]
    BadValue {
        /// Secret name.
        secret: String,
        /// Bad key.
        key: String,
    },
    /// The keyfile is outside what mongod accepts.
    #[error("Secret {secret} key keyfile must be 6 to 1024 base64 characters (whitespace ignored)")]
    BadKeyfile {
        /// Secret name.
        secret: String,
    },
}

fn value(secret: &Secret, key: &str) -> Result<String, SecretError> {
    let name = secret.metadata.name.clone().unwrap_or_default();
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| b.0.clone())
        .or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(key))
                .map(|s| s.clone().into_bytes())
        })
        .ok_or_else(|| SecretError::MissingKey {
            secret: name.clone(),
            key: key.into(),
        })?;
    match String::from_utf8(bytes) {
        Ok(s) if !s.is_empty() => Ok(s),
        _ => Err(SecretError::BadValue {
            secret: name,
            key: key.into(),
        }),
    }
}

/// The `username` and `password` of a user Secret.
pub fn read_credentials(secret: &Secret) -> Result<Credentials, SecretError> {
    Ok(Credentials {
        username: value(secret, USERNAME_KEY)?,
        password: value(secret, PASSWORD_KEY)?,
    })
}

/// The keyfile contents, checked the way mongod checks them (so a bad user-supplied keyfile is
/// reported on the MeteorApp instead of as a crash-looping pod).
pub fn read_keyfile(secret: &Secret) -> Result<String, SecretError> {
    let raw = value(secret, KEYFILE_KEY)?;
    let compact: String = raw.chars().filter(|c| !c.is_whitespace()).collect();
    let base64ish = compact
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/' || c == '=');
    if (6..=1024).contains(&compact.len()) && base64ish {
        Ok(compact)
    } else {
        Err(SecretError::BadKeyfile {
            secret: secret.metadata.name.clone().unwrap_or_default(),
        })
    }
}

/// Values for offline `render`: says where the real value comes from instead of inventing one.
#[derive(Debug, Default, Clone, Copy)]
pub struct Placeholder;

/// What [`Placeholder`] puts in place of every generated value.
pub const PLACEHOLDER_VALUE: &str = "generated-once-at-creation";

impl SecretSource for Placeholder {
    fn password(&mut self) -> String {
        PLACEHOLDER_VALUE.into()
    }
    fn keyfile(&mut self) -> String {
        PLACEHOLDER_VALUE.into()
    }
}
/// The credentials of the three users, read from their Secrets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserCredentials {
    /// Root user.
    pub root: Credentials,
    /// App user.
    pub app: Credentials,
    /// Oplog user.
    pub oplog: Credentials,
}
