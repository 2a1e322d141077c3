//! The cookie Secret `<name>-proxy-cookie`: the HMAC key every proxy replica signs and checks
//! the sticky cookie with, so every replica accepts every other replica's cookies. Created once
//! and never rewritten (a new key would unpin every session); the key comes in as an input, so
//! this builder draws no randomness.

use super::super::meta::{Component, child_meta};
use crate::api::MeteorApp;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use std::collections::BTreeMap;

/// Key of the HMAC key inside the Secret (and the file name the proxy reads).
pub const COOKIE_SECRET_KEY: &str = "cookie-key";
/// Random bytes in a key: 256 bits, as HMAC-SHA256 wants.
pub const COOKIE_KEY_BYTES: usize = 32;

/// Name of the cookie Secret.
pub fn secret_name(app: &MeteorApp) -> String {
    format!("{}-proxy-cookie", app.name_any())
}

/// The key as the proxy reads it: hex, since the proxy trims whitespace around a key file and
/// raw random bytes may begin or end with some.
pub fn cookie_key_text(random: &[u8; COOKIE_KEY_BYTES]) -> String {
    hex::encode(random)
}

/// The cookie Secret holding `key` (from [`cookie_key_text`]).
pub fn cookie_secret(app: &MeteorApp, key: &str) -> Secret {
    Secret {
        metadata: child_meta(app, secret_name(app), Component::Proxy.as_str()),
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(
            COOKIE_SECRET_KEY.to_string(),
            ByteString(key.as_bytes().to_vec()),
        )])),
        ..Secret::default()
    }
}
