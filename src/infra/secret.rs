//! Secrets in the configuration: values that must never reach a log line, an error message or
//! `--print-config`.
//!
//! A [`Secret`] reads like a string from YAML, environment or flags, but prints and serializes
//! as `***`, so the whole configuration can be logged. Its value is reached only through
//! [`Secret::expose`], and compared in constant time ([`Secret::matches`]), so a wrong token
//! takes as long to refuse as a nearly right one.

use serde::{Deserialize, Serialize, Serializer};
use subtle::ConstantTimeEq;

/// What a secret shows instead of its value.
pub const REDACTED: &str = "***";

#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for the one place that sends it (a header, a client property).
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `presented` is this secret, in time that does not depend on where they differ.
    pub fn matches(&self, presented: &str) -> bool {
        self.0.as_bytes().ct_eq(presented.as_bytes()).into()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(REDACTED)
    }
}

/// Whether a property of this name holds a secret: `sasl.password`, `ssl.key.password`,
/// `sasl.oauthbearer.client.secret`, `ssl.key.pem`, a token, ...
pub fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["password", "secret", "token", "key"]
        .iter()
        .any(|word| key.contains(word))
}

/// A string with any `user:password@` in it replaced, for URLs that are shown (an MLflow
/// tracking URI may carry credentials).
pub fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) if !parsed.username().is_empty() || parsed.password().is_some() => {
            let _ = parsed.set_username(REDACTED);
            let _ = parsed.set_password(None);
            parsed.to_string().trim_end_matches('/').to_string()
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_never_prints_its_value() {
        let secret = Secret::new("hunter2-token");
        assert_eq!(format!("{secret:?}"), REDACTED);
        assert_eq!(
            serde_json::to_string(&secret).expect("json"),
            format!("\"{REDACTED}\"")
        );
        assert!(secret.matches("hunter2-token"));
        assert!(
            !secret.matches("hunter2-tokeN"),
            "same length, one byte off"
        );
        assert!(!secret.matches("hunter2"));
    }

    #[test]
    fn secret_property_names_are_recognised() {
        for key in [
            "sasl.password",
            "ssl.key.password",
            "sasl.oauthbearer.client.secret",
            "ssl.key.pem",
            "SASL.TOKEN",
        ] {
            assert!(is_secret_key(key), "{key}");
        }
        for key in ["security.protocol", "sasl.mechanism", "session.timeout.ms"] {
            assert!(!is_secret_key(key), "{key}");
        }
    }

    #[test]
    fn credentials_in_urls_are_hidden() {
        assert_eq!(
            redact_url("https://ana:s3cret@mlflow.example.com"),
            "https://***@mlflow.example.com"
        );
        assert_eq!(redact_url("http://127.0.0.1:5000"), "http://127.0.0.1:5000");
    }
}
