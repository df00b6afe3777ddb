//! The settings a reload cannot apply, and which of them an edited file changed.
//!
//! A reload (SIGHUP, admin API) applies `[[servers]]`, `[auth]`, `[limits]`, the
//! per-connection HTTP limits of `[proxy]` (`max_body_bytes`, `max_header_bytes`,
//! `header_read_timeout`, `idle_timeout`: see `crate::endpoint::limits`), `[proxy] log_level`
//! (see `crate::metrics::log_filter`) and a new certificate; every
//! other `[proxy]` setting and switching `[tls]` on or off wait for a restart: they are bound
//! into listeners, executors and each shard's `Arc<Config>` at start. So does switching
//! `[auth]` on or off: the running mode is kept whole (see `crate::auth::reload`). So that an
//! operator who edits them and reloads is told so, a reload compares them between the file as
//! the proxy started from it and the file as it is now.
//!
//! Both sides are the *file*, never the running configuration: command-line overrides
//! (`--listen`, `--shards`, `--admin-listen`, `--log-*`), environment variables and values
//! settled at start (port 0, a generated token or session key) would otherwise read as edits.
//! The baseline is the file at start, not at the last reload, because nothing a reload reads
//! here is applied: until a restart, every reload keeps naming a setting still waiting for it.

use std::sync::OnceLock;

use super::auth::AuthConfig;
use super::{Config, ProxyConfig};

/// The restart-only part of the file the proxy started from (before any override).
static AS_STARTED: OnceLock<Config> = OnceLock::new();

/// Records `config`, as read from the file and before any override, as the baseline of later
/// reloads; only the first call counts.
pub fn remember_started(config: &Config) {
    let _ = AS_STARTED.set(restart_only(config));
}

/// The settings the file now changes that wait for a restart, compared with the file the proxy
/// started from; empty when no baseline was recorded (then nothing is known to differ).
pub fn pending(now: &Config) -> Vec<&'static str> {
    AS_STARTED
        .get()
        .map(|started| changed(started, now))
        .unwrap_or_default()
}

/// What of `config` only a restart applies: `[proxy]` and whether `[tls]` and `[auth]` are on.
fn restart_only(config: &Config) -> Config {
    Config {
        proxy: config.proxy.clone(),
        tls: config.tls.clone(),
        cluster: config.cluster.clone(),
        auth: AuthConfig {
            enabled: config.auth.enabled,
            ..AuthConfig::default()
        },
        ..Config::default()
    }
}

/// The restart-only settings that differ between `before` and `after`, named as an operator
/// writes them (`[proxy] listen`), in the order of [`ProxyConfig`]'s fields, then `[tls]`,
/// then `[auth]`.
pub fn changed(before: &Config, after: &Config) -> Vec<&'static str> {
    // Destructured, not read field by field, so that a new [proxy] setting does not compile
    // until it is listed here (or marked as not read from the file).
    let ProxyConfig {
        listen,
        shards,
        allowed_origins,
        // Applied by a reload to new connections (`crate::endpoint::limits::apply_connection`).
        max_body_bytes: _,
        max_header_bytes: _,
        header_read_timeout: _,
        idle_timeout: _,
        session_idle_timeout,
        page_size,
        state_dir,
        tool_exposure,
        allow_fleet_changes,
        idle_poll,
        session_key,
        session_max_age,
        admin_listen,
        admin_allowed_hosts,
        log_format,
        // Applied by a reload when the file changes it (`crate::metrics::log_filter`).
        log_level: _,
        admin_token,
        config_path: _, // set by the binary, not read from the file
    } = &before.proxy;
    let a = &after.proxy;
    let fields = [
        ("[proxy] listen", *listen != a.listen),
        ("[proxy] shards", *shards != a.shards),
        (
            "[proxy] allowed_origins",
            *allowed_origins != a.allowed_origins,
        ),
        (
            "[proxy] session_idle_timeout",
            *session_idle_timeout != a.session_idle_timeout,
        ),
        ("[proxy] page_size", *page_size != a.page_size),
        ("[proxy] state_dir", *state_dir != a.state_dir),
        ("[proxy] tool_exposure", *tool_exposure != a.tool_exposure),
        (
            "[proxy] allow_fleet_changes",
            *allow_fleet_changes != a.allow_fleet_changes,
        ),
        ("[proxy] idle_poll", *idle_poll != a.idle_poll),
        ("[proxy] session_key", *session_key != a.session_key),
        (
            "[proxy] session_max_age",
            *session_max_age != a.session_max_age,
        ),
        ("[proxy] admin_listen", *admin_listen != a.admin_listen),
        (
            "[proxy] admin_allowed_hosts",
            *admin_allowed_hosts != a.admin_allowed_hosts,
        ),
        ("[proxy] log_format", *log_format != a.log_format),
        ("[proxy] admin_token", *admin_token != a.admin_token),
        // The certificate and its settings follow a reload; only the scheme does not.
        (
            "[tls] (on/off)",
            before.tls.is_some() != after.tls.is_some(),
        ),
        // Likewise [auth]'s clients, keys and policies follow a reload; only the mode does not.
        ("[auth] (on/off)", before.auth.enabled != after.auth.enabled),
        // Membership and the shared registry are set up once, at start.
        ("[cluster]", before.cluster != after.cluster),
    ];
    fields
        .into_iter()
        .filter_map(|(name, differs)| differs.then_some(name))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Config {
        Config::from_toml_str(text, "test.toml").expect("valid configuration")
    }

    const SERVERS: &str = "[[servers]]\nname = \"alpha\"\nurl = \"http://127.0.0.1:3001/mcp\"\n";

    #[test]
    fn an_unchanged_file_changes_nothing_even_when_written_differently() {
        let before = parse(&format!(
            "[proxy]\nshards = 0\nlisten = \"127.0.0.1:8080\"\n\n{SERVERS}"
        ));
        // Defaults left out, a duration spelled otherwise: the same settings.
        let after = parse(&format!(
            "[proxy]\nsession_idle_timeout = \"30m\"\n\n{SERVERS}"
        ));
        assert_eq!(
            before.proxy.session_idle_timeout,
            after.proxy.session_idle_timeout
        );
        assert_eq!(changed(&before, &after), Vec::<&str>::new());
    }

    #[test]
    fn what_a_reload_applies_is_not_listed() {
        let before = parse(SERVERS);
        let after = parse(
            "[proxy]\nmax_body_bytes = 1024\nmax_header_bytes = 4096\n\
             header_read_timeout = \"7s\"\nidle_timeout = \"6s\"\n\n\
             [limits]\nmax_connections = 9\n\n[auth]\nenabled = false\n\n\
             [[servers]]\nname = \"beta\"\nurl = \"http://127.0.0.1:3002/mcp\"\n",
        );
        assert_ne!(before.proxy.max_body_bytes, after.proxy.max_body_bytes);
        assert_eq!(changed(&before, &after), Vec::<&str>::new());
    }

    #[test]
    fn each_changed_restart_only_proxy_setting_is_named_once_in_field_order() {
        let before = parse(SERVERS);
        let after = parse(&format!(
            "[proxy]\n\
             admin_token = \"0123456789abcdef0123456789abcdef\"\n\
             log_level = \"debug\"\n\
             log_format = \"json\"\n\
             admin_listen = \"off\"\n\
             admin_allowed_hosts = [\"scrape.internal:9090\"]\n\
             session_max_age = \"1h\"\n\
             session_key = \"{key}\"\n\
             idle_poll = \"1ms\"\n\
             allow_fleet_changes = true\n\
             tool_exposure = \"search\"\n\
             state_dir = \"/tmp/nowhere\"\n\
             page_size = 7\n\
             session_idle_timeout = \"5s\"\n\
             idle_timeout = \"6s\"\n\
             header_read_timeout = \"7s\"\n\
             max_header_bytes = 4096\n\
             max_body_bytes = 1024\n\
             allowed_origins = [\"https://app.example.com\"]\n\
             shards = 3\n\
             listen = \"127.0.0.1:9999\"\n\n{SERVERS}",
            key = "ab".repeat(32)
        ));
        let expected = [
            "[proxy] listen",
            "[proxy] shards",
            "[proxy] allowed_origins",
            // max_body_bytes, max_header_bytes, header_read_timeout and idle_timeout are edited
            // above too, but a reload applies them.
            "[proxy] session_idle_timeout",
            "[proxy] page_size",
            "[proxy] state_dir",
            "[proxy] tool_exposure",
            "[proxy] allow_fleet_changes",
            "[proxy] idle_poll",
            "[proxy] session_key",
            "[proxy] session_max_age",
            "[proxy] admin_listen",
            "[proxy] admin_allowed_hosts",
            "[proxy] log_format",
            // log_level is edited above too, but a reload applies it.
            "[proxy] admin_token",
        ];
        // The order is the struct's, not the file's, so answers stay comparable between reloads.
        assert_eq!(changed(&before, &after), expected);
        // And the same list the other way round: a setting taken out of the file is a change too.
        assert_eq!(changed(&after, &before), expected);
    }

    #[test]
    fn only_switching_tls_on_or_off_waits_for_a_restart() {
        let plain = Config::default();
        let on = Config {
            tls: Some(crate::config::tls::ListenerTls {
                cert_file: "a.pem".into(),
                key_file: "a.key".into(),
                client_ca_file: None,
                min_version: Default::default(),
            }),
            ..Config::default()
        };
        assert_eq!(changed(&plain, &on), ["[tls] (on/off)"]);
        assert_eq!(changed(&on, &plain), ["[tls] (on/off)"]);
        let mut renewed = on.clone();
        if let Some(tls) = renewed.tls.as_mut() {
            tls.cert_file = "b.pem".into();
        }
        assert_eq!(changed(&on, &renewed), Vec::<&str>::new());
    }

    #[test]
    fn only_switching_auth_on_or_off_waits_for_a_restart() {
        let off = Config::default();
        let on = Config {
            auth: AuthConfig {
                enabled: true,
                issuers: vec!["https://a.example".into()],
                ..AuthConfig::default()
            },
            ..Config::default()
        };
        assert_eq!(changed(&off, &on), ["[auth] (on/off)"]);
        assert_eq!(changed(&on, &off), ["[auth] (on/off)"]);
        // Staying on with other settings (clients, keys, issuers...) is applied by the reload.
        let mut edited = on.clone();
        edited.auth.issuers = vec!["https://b.example".into()];
        assert_eq!(changed(&on, &edited), Vec::<&str>::new());
        // The baseline keeps the mode only: a later edit of what stays on compares equal.
        assert_eq!(changed(&restart_only(&on), &edited), Vec::<&str>::new());
        assert!(restart_only(&on).auth.issuers.is_empty());
    }

    #[test]
    fn the_baseline_keeps_only_what_a_restart_applies() {
        let mut config = parse(&format!("[proxy]\nshards = 3\n\n{SERVERS}"));
        config.proxy.config_path = Some("/etc/mcp-proxy.toml".into());
        let kept = restart_only(&config);
        assert!(kept.servers.is_empty());
        assert_eq!(kept.proxy.shards, 3);
        // The path the binary sets is not a setting of the file.
        let mut moved = config.clone();
        moved.proxy.config_path = Some("/elsewhere.toml".into());
        assert_eq!(changed(&kept, &moved), Vec::<&str>::new());
    }
}
