//! How logs are written, as the configuration and the command line name it: the format and
//! the filter. `metrics::logs` writes the records.

use std::str::FromStr;

/// How log records are written (`--log-format`, `[proxy] log_format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// `TIME LEVEL target [thread] message key=value...`, for people.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
    /// One logfmt line (`key=value ...`) per record.
    Logfmt,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<LogFormat, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            "logfmt" => Ok(LogFormat::Logfmt),
            _ => Err(format!(
                "unknown log format \"{s}\"; use \"text\", \"json\" or \"logfmt\""
            )),
        }
    }
}

/// Checks a log filter (`info`, `warn,mcp_proxy::mcp::routing=debug`); the error says how to fix it.
pub fn check_filter(filter: &str) -> Result<(), String> {
    const LEVELS: &[&str] = &["off", "error", "warn", "info", "debug", "trace"];
    for directive in filter.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let level = directive.rsplit_once('=').map_or(directive, |(_, l)| l);
        // A bare word must be a level: env_logger would take a typo for a module name.
        if !LEVELS.iter().any(|l| l.eq_ignore_ascii_case(level)) {
            return Err(format!(
                "invalid log level \"{directive}\"; use one of {} or module=level, \
                 e.g. \"info,mcp_proxy::mcp::routing=debug\"",
                LEVELS.join(", ")
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_and_formats_parse() {
        assert!(check_filter("info").is_ok());
        assert!(check_filter("warn,mcp_proxy::mcp::routing=debug").is_ok());
        assert!(check_filter("mcp_proxy").is_err());
        assert!(check_filter("loud").is_err());
        assert!(check_filter("mcp_proxy=loud").is_err());
        assert_eq!("json".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert!("xml".parse::<LogFormat>().is_err());
    }
}
