//! A string that holds a credential value and never shows it in `Debug` or `Display`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A credential value (API key, password, client secret, token, private key, ...).
///
/// It travels on the wire as a plain JSON string, but its `Debug` and `Display`
/// implementations print `<redacted>`, so it cannot leak through logs, events, error
/// messages or `{:?}` of any struct that contains it. Use [`SecretValue::expose`] at the
/// single place where the raw value is really needed.
#[derive(Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretValue(String);

impl SecretValue {
    /// The text printed in place of the value.
    pub const REDACTED: &'static str = "<redacted>";

    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The raw value. Never log or format the result.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the value is the empty string (e.g. redacted to nothing on a read).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Self::REDACTED)
    }
}

impl fmt::Display for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Self::REDACTED)
    }
}

impl From<String> for SecretValue {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for SecretValue {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CANARY: &str = "canary-8f3b2c1d-do-not-print";

    #[test]
    fn debug_and_display_never_show_the_value() {
        let secret = SecretValue::from(CANARY.to_owned());
        let debug = format!("{secret:?}");
        let pretty = format!("{secret:#?}");
        let display = format!("{secret}");
        let padded = format!("{secret:>40}");
        for out in [&debug, &pretty, &display, &padded] {
            assert!(!out.contains(CANARY), "leaked: {out}");
            assert!(out.contains("<redacted>"));
        }
    }

    #[test]
    fn debug_of_a_containing_struct_is_redacted() {
        #[derive(Debug)]
        #[allow(dead_code)]
        struct Holder {
            password: SecretValue,
            list: Vec<SecretValue>,
            maybe: Option<SecretValue>,
        }
        let holder = Holder {
            password: CANARY.into(),
            list: vec![CANARY.into()],
            maybe: Some(CANARY.into()),
        };
        assert!(!format!("{holder:?}").contains(CANARY));
        assert!(!format!("{holder:#?}").contains(CANARY));
    }

    #[test]
    fn serialises_transparently_as_a_string() {
        let secret = SecretValue::new(CANARY);
        let json = serde_json::to_string(&secret).expect("serialise");
        assert_eq!(json, format!("\"{CANARY}\""));
        let back: SecretValue = serde_json::from_str(&json).expect("deserialise");
        assert_eq!(back, secret);
        assert_eq!(back.expose(), CANARY);
    }

    #[test]
    fn equality_and_clone() {
        let a = SecretValue::from("x");
        let b = a.clone();
        assert_eq!(a, b);
        assert_ne!(a, SecretValue::from("y"));
        assert!(SecretValue::default().is_empty());
    }
}
