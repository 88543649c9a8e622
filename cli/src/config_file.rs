//! The TOML configuration file: one table per subcommand, the same keys as
//! the flags (kebab-case). Precedence: flag > MAGNETAR_* variable > file >
//! built-in default.

use std::path::Path;

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::bookie_cmd::BookieArgs;
use crate::standalone_cmd::StandaloneArgs;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    pub bookie: BookieArgs,
    #[serde(default)]
    pub standalone: StandaloneArgs,
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
