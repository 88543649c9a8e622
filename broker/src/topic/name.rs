//! Topic names: `persistent://tenant/namespace/topic`. Partitions of a
//! partitioned topic are ordinary topics named `topic-partition-N`.

use std::fmt;

use thiserror::Error;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TopicName {
    pub tenant: String,
    pub namespace: String,
    pub local: String,
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("invalid topic name {name:?}: {reason}")]
pub struct InvalidTopicName {
    pub name: String,
    pub reason: &'static str,
}

/// Characters Pulsar allows in tenant, namespace and topic names.
pub(crate) fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 512
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '=' | ':' | '.' | '%'))
}

impl TopicName {
    /// This topic's identity for storage.
    pub fn log_name(&self) -> crate::storage::LogName {
        crate::storage::LogName::new(&self.tenant, &self.namespace, &self.local)
    }

    /// Parses a full name or a short one (`topic` alone means
    /// `persistent://public/default/topic`, `t/ns/topic` means persistent).
    pub fn parse(name: &str) -> Result<TopicName, InvalidTopicName> {
        let invalid = |reason| InvalidTopicName {
            name: name.to_string(),
            reason,
        };
        let rest = if let Some(rest) = name.strip_prefix("persistent://") {
            rest
        } else if name.starts_with("non-persistent://") {
            return Err(invalid("non-persistent topics are not supported"));
        } else if name.contains("://") {
            return Err(invalid("domain must be persistent://"));
        } else if !name.contains('/') {
            return TopicName::parse(&format!("persistent://public/default/{name}"));
        } else {
            name
        };
        let parts: Vec<&str> = rest.split('/').collect();
        let [tenant, namespace, local] = parts.as_slice() else {
            return Err(invalid("expected tenant/namespace/topic"));
        };
        if !valid_segment(tenant) || !valid_segment(namespace) {
            return Err(invalid(
                "tenant and namespace must be non-empty [A-Za-z0-9-_=:.%]",
            ));
        }
        if !valid_segment(local) {
            return Err(invalid("topic must be non-empty [A-Za-z0-9-_=:.%]"));
        }
        Ok(TopicName {
            tenant: tenant.to_string(),
            namespace: namespace.to_string(),
            local: local.to_string(),
        })
    }

    /// The `tenant/namespace` this topic lives in.
    pub fn namespace_name(&self) -> String {
        format!("{}/{}", self.tenant, self.namespace)
    }

    /// Partition `index` of this (partitioned) topic: `{topic}-partition-{index}`.
    pub fn partition(&self, index: u32) -> TopicName {
        TopicName {
            tenant: self.tenant.clone(),
            namespace: self.namespace.clone(),
            local: format!("{}-partition-{index}", self.local),
        }
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "persistent://{}/{}/{}",
            self.tenant, self.namespace, self.local
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_full_and_short_names() {
        let t = TopicName::parse("persistent://acme/orders/in-1").unwrap();
        assert_eq!(
            (t.tenant.as_str(), t.namespace.as_str(), t.local.as_str()),
            ("acme", "orders", "in-1")
        );
        assert_eq!(t.to_string(), "persistent://acme/orders/in-1");
        assert_eq!(
            TopicName::parse("my-topic").unwrap().to_string(),
            "persistent://public/default/my-topic"
        );
        assert_eq!(
            TopicName::parse("a/b/c").unwrap().to_string(),
            "persistent://a/b/c"
        );
        assert_eq!(
            t.partition(3).to_string(),
            "persistent://acme/orders/in-1-partition-3"
        );
    }

    #[test]
    fn rejects_malformed_names() {
        for bad in [
            "persistent://public/default/",
            "persistent://public/default",
            "persistent://a/b/c/d",
            "persistent:///default/t",
            "non-persistent://public/default/t",
            "http://public/default/t",
            "persistent://public/default/t t",
            "",
        ] {
            assert!(TopicName::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
