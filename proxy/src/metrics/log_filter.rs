//! The running log filter: set at start, changed without a restart by the admin API
//! (`PUT /api/v1/log-level`, `mcpctl log-level`) or a reload of an edited `[proxy] log_level`.
//!
//! The installed logger is one process-wide `log::Log`, so every shard and every other thread
//! follows a change at once. It holds an `env_logger::Logger` (filter and format together)
//! behind an [`ArcSwap`]: writing a record loads it without a lock, and a change builds a new
//! one and swaps it in whole.

use std::sync::{Arc, Mutex, OnceLock};

use arc_swap::ArcSwap;

use crate::config::logging::{check_filter, LogFormat};

/// The filter used when none is configured.
pub const DEFAULT_FILTER: &str = "info";

/// A filter in force and the logger built from it.
struct Active {
    logger: env_logger::Logger,
    filter: String,
}

/// The installed logger.
struct Switchable {
    active: ArcSwap<Active>,
    format: LogFormat,
    secrets: Vec<String>,
    /// `[proxy] log_level` as the file last said it (at start or the last reload), so a reload
    /// of an unchanged file leaves a filter set through the admin API alone.
    file_filter: Mutex<Option<String>>,
}

static LOGGER: OnceLock<Switchable> = OnceLock::new();

impl log::Log for Switchable {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        self.active.load().logger.enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        self.active.load().logger.log(record);
    }

    fn flush(&self) {
        self.active.load().logger.flush();
    }
}

/// An env_logger with `filter` (already checked) and the proxy's record format.
fn build(format: LogFormat, filter: &str, secrets: &[String]) -> env_logger::Logger {
    let secrets = secrets.to_vec();
    let mut builder = env_logger::Builder::new();
    builder
        .filter_level(log::LevelFilter::Info)
        .parse_filters(filter)
        .target(env_logger::Target::Stderr)
        .format(move |buf, record| {
            use std::io::Write;
            let ts = buf.timestamp_millis().to_string();
            let line = super::logs::render(format, &ts, record, &secrets);
            buf.write_all(line.as_bytes())
        });
    builder.build()
}

/// Installs the logger with `filter` in force; `file_filter` is `[proxy] log_level` as the
/// file says it. A second call (tests) keeps the first logger.
pub fn install(format: LogFormat, filter: &str, file_filter: Option<&str>, secrets: Vec<String>) {
    let logger = build(format, filter, &secrets);
    let max = logger.filter();
    let switchable = Switchable {
        active: ArcSwap::from_pointee(Active {
            logger,
            filter: filter.to_owned(),
        }),
        format,
        secrets,
        file_filter: Mutex::new(file_filter.map(str::to_owned)),
    };
    if LOGGER.set(switchable).is_err() {
        return;
    }
    if let Some(installed) = LOGGER.get() {
        if log::set_logger(installed).is_ok() {
            log::set_max_level(max);
        }
    }
}

/// The filter in force (`info`, `warn,mcp_proxy::mcp::routing=debug`).
pub fn current() -> String {
    LOGGER.get().map_or_else(
        || DEFAULT_FILTER.to_owned(),
        |l| l.active.load().filter.clone(),
    )
}

/// Puts `filter` in force for every thread; the error says how to write a valid one.
pub fn set(filter: &str) -> Result<(), String> {
    let filter = filter.trim();
    if filter.is_empty() {
        return Err(format!(
            "name a log level, e.g. \"debug\" or \"{DEFAULT_FILTER},mcp_proxy::mcp::routing=debug\""
        ));
    }
    check_filter(filter)?;
    let Some(installed) = LOGGER.get() else {
        return Err("no logger is installed in this process".into());
    };
    let logger = build(installed.format, filter, &installed.secrets);
    let max = logger.filter();
    installed.active.store(Arc::new(Active {
        logger,
        filter: filter.to_owned(),
    }));
    log::set_max_level(max);
    Ok(())
}

/// A reload read `[proxy] log_level` = `file_filter`: when the file changed it since it was
/// last read, it is put in force (the default when the setting was removed) and returned.
pub fn reload_from_file(file_filter: Option<&str>) -> Result<Option<String>, String> {
    let Some(installed) = LOGGER.get() else {
        return Ok(None);
    };
    let mut last = installed
        .file_filter
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if last.as_deref() == file_filter {
        return Ok(None);
    }
    let filter = file_filter.unwrap_or(DEFAULT_FILTER);
    set(filter)?;
    *last = file_filter.map(str::to_owned);
    Ok(Some(filter.to_owned()))
}
