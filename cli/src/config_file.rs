//! The TOML configuration file: one table per subcommand, the same keys as
//! the flags (kebab-case). Precedence: flag > MAGNETAR_* variable > file >
//! built-in default.

use std::path::Path;

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::bookie_cmd::BookieArgs;
use crate::broker_cmd::BrokerArgs;
use crate::standalone_cmd::StandaloneArgs;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    pub bookie: BookieArgs,
    #[serde(default)]
    pub standalone: StandaloneArgs,
    #[serde(default)]
    pub broker: BrokerArgs,
}

impl ConfigFile {
    pub fn load(path: Option<&Path>) -> Result<Self> {
        let Some(path) = path else {
            return Ok(ConfigFile::default());
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))
    }
}

/// For each listed field, keeps the command-line value (flag or variable)
/// and falls back to the file's.
macro_rules! prefer_cli {
    ($cli:expr, $file:expr; $($field:ident),+ $(,)?) => {
        $( if $cli.$field.is_none() { $cli.$field = $file.$field; } )+
    };
}
pub(crate) use prefer_cli;

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct TestCli {
        #[command(flatten)]
        bookie: BookieArgs,
    }

    #[test]
    fn flags_override_the_file_and_the_file_fills_the_rest() {
        let file: ConfigFile = toml::from_str(
            r#"
            [bookie]
            metadata = "etcd://10.0.0.1:2379/from-file"
            data-dir = "/var/lib/bookie"
            rack = "rack-a"
            max-entry-bytes = 1024
            "#,
        )
        .unwrap();
        let cli = TestCli::parse_from(["test", "--rack", "rack-b", "--listen", "127.0.0.1:4000"]);
        let merged = cli.bookie.merged(file.bookie);
        assert_eq!(merged.rack.as_deref(), Some("rack-b"));
        assert_eq!(
            merged.metadata.as_deref(),
            Some("etcd://10.0.0.1:2379/from-file")
        );
        assert_eq!(merged.max_entry_bytes, Some(1024));
        assert_eq!(merged.listen, Some("127.0.0.1:4000".parse().unwrap()));

        let mut config = magnetar_bookie::BookieConfig::new("/tmp/x".into());
        merged.apply(&mut config).unwrap();
        assert_eq!(config.journal.max_entry_bytes, 1024);
        assert_eq!(config.rack.as_deref(), Some("rack-b"));
    }

    #[test]
    fn unknown_keys_in_the_file_are_rejected() {
        let parsed: Result<ConfigFile, _> = toml::from_str("[bookie]\nlisten-adress = \"x\"\n");
        assert!(parsed.is_err());
    }

    #[test]
    fn broker_tuning_keys_sit_in_the_subcommands_own_table() {
        let file: ConfigFile = toml::from_str(
            r#"
            [broker]
            metadata = "etcd://10.0.0.1:2379"
            lease-ttl = "5s"
            ensemble-size = 3
            housekeeping-interval = "90s"
            auth-enabled = true

            [standalone]
            data-dir = "/var/lib/magnetar"
            architecture = "monolithic"
            "#,
        )
        .unwrap();
        assert_eq!(
            file.broker.lease_ttl,
            Some(std::time::Duration::from_secs(5))
        );
        assert_eq!(file.broker.tuning.ensemble_size, Some(3));
        assert!(file.broker.tuning.auth_enabled);
        assert_eq!(
            file.broker.tuning.housekeeping_interval,
            Some(std::time::Duration::from_secs(90))
        );
        assert!(file.standalone.broker.architecture.is_some());

        for typo in [
            "[broker]\nensemble-sise = 3\n",
            "[standalone]\nlease-ttl = \"5s\"\n",
        ] {
            let parsed: Result<ConfigFile, _> = toml::from_str(typo);
            let error = parsed.expect_err(typo).to_string();
            assert!(error.contains("unknown field"), "{typo}: {error}");
        }
    }

    #[test]
    fn inconsistent_water_marks_are_refused() {
        let args = BookieArgs {
            disk_high_water: Some(0.5),
            disk_low_water: Some(0.8),
            ..Default::default()
        };
        let mut config = magnetar_bookie::BookieConfig::new("/tmp/x".into());
        assert!(args.apply(&mut config).is_err());
    }
}
