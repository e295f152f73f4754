//! `stream`: Kafka in, Kafka out (off unless `brokers` is set).

use crate::infra::secret;
use serde::{Deserialize, Serialize};

/// Stream mode (Kafka): off unless `brokers` is set.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StreamConfig {
    /// `host:port,...` of the Kafka cluster; null leaves stream mode off.
    pub brokers: Option<String>,
    pub input_topic: String,
    pub output_topic: String,
    /// Messages that cannot be classified go here, with the reason in the `x-error` header.
    pub dead_letter_topic: String,
    pub group_id: String,
    /// Field names of JSON input messages (plain-text messages are taken whole).
    pub id_field: String,
    pub text_field: String,
    /// Messages being classified at once; at the limit the consumer pauses its partitions.
    pub max_in_flight: usize,
    /// librdkafka properties passed through (security.protocol, sasl.*, ssl.*, ...).
    pub kafka: KafkaProperties,
}

/// librdkafka properties by their dotted names. Values of properties whose names say they are
/// secret (`sasl.password`, `ssl.key.password`, ...; see [`secret::is_secret_key`]) print and
/// serialize as `***`.
#[derive(Clone, Default, Deserialize, PartialEq)]
#[serde(transparent)]
pub struct KafkaProperties(pub std::collections::BTreeMap<String, String>);

impl KafkaProperties {
    /// The real values, for the one place that hands them to librdkafka.
    pub fn expose(&self) -> impl Iterator<Item = (&String, &String)> {
        self.0.iter()
    }

    pub fn get(&self, key: &str) -> Option<&String> {
        self.0.get(key)
    }

    fn redacted(&self) -> std::collections::BTreeMap<&str, &str> {
        self.0
            .iter()
            .map(|(key, value)| {
                let shown = if secret::is_secret_key(key) {
                    secret::REDACTED
                } else {
                    value.as_str()
                };
                (key.as_str(), shown)
            })
            .collect()
    }
}

impl std::fmt::Debug for KafkaProperties {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.redacted().fmt(f)
    }
}

impl Serialize for KafkaProperties {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.redacted().serialize(serializer)
    }
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            brokers: None,
            input_topic: "news".into(),
            output_topic: "news-classified".into(),
            dead_letter_topic: "news-dead-letter".into(),
            group_id: "newscls".into(),
            id_field: "id".into(),
            text_field: "text".into(),
            max_in_flight: 256,
            kafka: KafkaProperties::default(),
        }
    }
}
