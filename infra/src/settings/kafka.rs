//! The Kafka settings: the cluster, the event topics, and any librdkafka property an
//! operator passes through (TLS, SASL, ...).

use serde::Deserialize;

/// The Kafka cluster and the event topics.
#[derive(Debug, Clone, Deserialize)]
pub struct KafkaSettings {
    pub bootstrap_servers: String,
    /// Prepended to `users.events`, `orders.events`, `payments.events`.
    pub topic_prefix: String,
    /// Partitions of each event topic when the relay creates it.
    pub partitions: i32,
    /// Replicas of each event topic when the relay creates it; -1 takes the cluster's
    /// `default.replication.factor` (three on the local clusters, one on a single broker).
    pub replication_factor: i32,
    /// How long the producer keeps retrying one message before reporting it failed.
    pub delivery_timeout_ms: u64,
    /// Longest a consumer's fetch waits at the broker for new messages. The broker answers a
    /// waiting fetch as soon as data arrives, so this costs no freshness; it only bounds how
    /// often an idle consumer asks.
    pub fetch_wait_max_ms: u64,
    /// Whether the relay creates missing event topics (off where the platform manages them).
    pub create_topics: bool,
    /// Any librdkafka property, passed to every client after the built-in ones (so it wins):
    /// TLS, SASL and the like. See [`KafkaProperties`].
    #[serde(default)]
    pub properties: KafkaProperties,
}

/// librdkafka properties from settings. A key's `_` stand for librdkafka's `.`, so that an
/// environment variable can carry it: `APP__KAFKA__PROPERTIES__SECURITY_PROTOCOL=SASL_SSL`
/// sets `security.protocol`. In a TOML file, `[kafka.properties]` with
/// `"sasl.mechanisms" = "SCRAM-SHA-512"` (or nested tables) works as well. Debug output shows
/// the keys only: values may be passwords.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct KafkaProperties(pub std::collections::BTreeMap<String, String>);

impl std::fmt::Debug for KafkaProperties {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl<'de> Deserialize<'de> for KafkaProperties {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        fn flatten(
            prefix: &str,
            value: serde_json::Value,
            out: &mut std::collections::BTreeMap<String, String>,
        ) {
            let key = |k: &str| {
                let k = k.replace('_', ".");
                if prefix.is_empty() {
                    k
                } else {
                    format!("{prefix}.{k}")
                }
            };
            match value {
                serde_json::Value::Object(map) => {
                    for (k, v) in map {
                        flatten(&key(&k), v, out);
                    }
                }
                serde_json::Value::String(s) => {
                    out.insert(prefix.to_owned(), s);
                }
                serde_json::Value::Null => {}
                other => {
                    out.insert(prefix.to_owned(), other.to_string());
                }
            }
        }
        let value = serde_json::Value::deserialize(deserializer)?;
        let mut out = std::collections::BTreeMap::new();
        match value {
            serde_json::Value::Object(_) | serde_json::Value::Null => flatten("", value, &mut out),
            _ => {
                return Err(serde::de::Error::custom(
                    "kafka.properties must be a table of librdkafka properties",
                ))
            }
        }
        Ok(Self(out))
    }
}

#[cfg(test)]
mod tests {
    use crate::settings::Settings;

    #[test]
    fn kafka_properties_come_from_a_file_with_dots_or_nesting_and_do_not_print() {
        let dir = std::env::temp_dir().join(format!("kafka-props-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("settings.toml");
        std::fs::write(
            &file,
            "[kafka]\ncreate_topics = false\n[kafka.properties]\nsecurity_protocol = \"SASL_SSL\"\n\
             sasl_password = \"hunter2hunter2\"\n[kafka.properties.ssl.ca]\nlocation = \"/etc/ca.pem\"\n\
             [kafka.properties.socket]\nkeepalive_enable = true\n",
        )
        .unwrap();
        let settings = Settings::load_from(Some(file.to_str().unwrap())).unwrap();
        let properties = &settings.kafka.properties.0;
        assert_eq!(properties["security.protocol"], "SASL_SSL");
        assert_eq!(properties["ssl.ca.location"], "/etc/ca.pem");
        assert_eq!(properties["socket.keepalive.enable"], "true");
        assert!(!settings.kafka.create_topics);
        let debug = format!("{:?}", settings.kafka);
        assert!(debug.contains("sasl.password"), "{debug}");
        assert!(
            !debug.contains("hunter2"),
            "a Kafka password leaked: {debug}"
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
