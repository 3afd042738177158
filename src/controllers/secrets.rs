//! Reading credentials from Secrets in the resource's own namespace, and hashing what was sent.
//!
//! Secrets are read one at a time when a reconcile needs them (never cached in a watch: the
//! controllers watch Secrets as metadata only). Values travel as [`SecretValue`], which never
//! prints itself.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use sha2::{Digest, Sha256};

use super::error::Error;
use crate::versori::SecretValue;

/// Reads keys of Secrets in one namespace, fetching each Secret at most once per reconcile.
pub struct SecretReader {
    api: Api<Secret>,
    fetched: HashMap<String, Option<Secret>>,
}

impl SecretReader {
    /// A reader for `namespace`: the only namespace it can read.
    pub fn new(client: kube::Client, namespace: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            fetched: HashMap::new(),
        }
    }

    /// The value of `key` in Secret `name`, as UTF-8 text.
    pub async fn read(&mut self, name: &str, key: &str) -> Result<SecretValue, Error> {
        let bytes = self.read_bytes(name, key).await?;
        String::from_utf8(bytes)
            .map(SecretValue::from)
            .map_err(|_| Error::SecretNotText {
                name: name.to_owned(),
                key: key.to_owned(),
            })
    }

    /// The value of `key` in Secret `name` as base64 (standard, padded): for binary values
    /// such as keystores, which need not be text.
    pub async fn read_base64(&mut self, name: &str, key: &str) -> Result<SecretValue, Error> {
        use base64::Engine as _;
        let bytes = self.read_bytes(name, key).await?;
        Ok(SecretValue::from(
            base64::engine::general_purpose::STANDARD.encode(bytes),
        ))
    }

    /// The value of `key` in Secret `name`, or `None` when the Secret exists without that key.
    pub async fn read_optional(
        &mut self,
        name: &str,
        key: &str,
    ) -> Result<Option<SecretValue>, Error> {
        match self.read(name, key).await {
            Ok(value) => Ok(Some(value)),
            Err(Error::SecretKeyNotFound { .. }) => Ok(None),
            Err(other) => Err(other),
        }
    }

    async fn read_bytes(&mut self, name: &str, key: &str) -> Result<Vec<u8>, Error> {
        if !self.fetched.contains_key(name) {
            let secret = self
                .api
                .get_opt(name)
                .await
                .map_err(Error::kube("reading a Secret"))?;
            self.fetched.insert(name.to_owned(), secret);
        }
        let Some(Some(secret)) = self.fetched.get(name) else {
            return Err(Error::SecretNotFound {
                name: name.to_owned(),
                key: key.to_owned(),
            });
        };
        if let Some(bytes) = secret.data.as_ref().and_then(|d| d.get(key)) {
            return Ok(bytes.0.clone());
        }
        // stringData is write-only in the API, but an object built in memory may carry it.
        if let Some(value) = secret.string_data.as_ref().and_then(|d| d.get(key)) {
            return Ok(value.clone().into_bytes());
        }
        Err(Error::SecretKeyNotFound {
            name: name.to_owned(),
            key: key.to_owned(),
        })
    }
}

/// A SHA-256 over labelled secret values, as `sha256:<hex>`: what status keeps of the
/// credentials last sent, since Versori never returns them. `salt` (the object's UID) makes the
/// same secret hash differently on every object, so status gives no lookup table.
pub fn hash_secrets<'a>(salt: &str, parts: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut hasher = Sha256::new();
    hasher.update((salt.len() as u64).to_be_bytes());
    hasher.update(salt.as_bytes());
    for (label, value) in parts {
        for field in [label, value] {
            hasher.update((field.len() as u64).to_be_bytes());
            hasher.update(field.as_bytes());
        }
    }
    format!("sha256:{}", hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_depends_on_labels_values_and_boundaries() {
        let a = hash_secrets("uid", [("k", "ab"), ("l", "c")]);
        assert_eq!(a, hash_secrets("uid", [("k", "ab"), ("l", "c")]));
        assert_ne!(a, hash_secrets("uid", [("k", "a"), ("l", "bc")]));
        assert_ne!(a, hash_secrets("uid", [("x", "ab"), ("l", "c")]));
        assert_ne!(a, hash_secrets("other", [("k", "ab"), ("l", "c")]));
        assert!(a.starts_with("sha256:"));
        assert!(!a.contains("ab"));
    }
}
