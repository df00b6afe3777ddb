//! The configuration as an operator meets it: defaults, and refusals that name the line, the
//! problem and the fix.

use std::path::Path;
use std::time::Duration;

use super::logging::LogFormat;
use super::servers::suggest_name;
use super::*;
use crate::protocol::names::is_valid_server_name;

/// Parses `text` as `config.toml`, expecting an error; returns its line and message.
fn error(text: &str) -> (Option<usize>, String) {
    match Config::from_toml_str(text, "config.toml") {
        Ok(c) => panic!("expected an error, got {c:?}"),
        Err(e) => (e.line(), e.to_string()),
    }
}

/// Asserts `text` fails at `line` with a message containing `fragment`.
fn assert_error(text: &str, line: usize, fragment: &str) {
    let (l, msg) = error(text);
    assert_eq!(l, Some(line), "wrong line in: {msg}");
    assert!(msg.contains(fragment), "{msg:?} lacks {fragment:?}");
    assert!(
        msg.starts_with(&format!("config.toml:{line}:")),
        "no location: {msg}"
    );
}

#[test]
fn empty_file_gives_defaults() {
    let c = Config::from_toml_str("", "config.toml").expect("valid");
    assert_eq!(c, Config::default());
    assert_eq!(c.proxy.listen, "127.0.0.1:8080".parse().expect("addr"));
    assert_eq!(c.proxy.max_body_bytes, 4_194_304);
    assert_eq!(c.proxy.max_header_bytes, 16_384);
    assert_eq!(c.proxy.header_read_timeout, Duration::from_secs(10));
    assert_eq!(c.proxy.idle_timeout, Duration::from_secs(60));
    assert_eq!(c.proxy.session_idle_timeout, Duration::from_secs(1800));
    assert_eq!(c.proxy.page_size, 100);
    assert!(c.servers.is_empty());
}

#[test]
fn example_config_is_valid() {
    let text = include_str!("../../../docs/example-config.toml");
    let c = Config::from_toml_str(text, "example-config.toml").expect("valid");
    assert_eq!(c.servers.len(), 4);
    let search = &c.servers[3];
    assert!(matches!(&search.transport, Transport::Http { replicas, .. }
        if replicas.len() == 3 && replicas[1].weight == 2 && replicas[2].drain));
    assert_eq!(search.balance.failover_threshold, 3);
    let memory = &c.servers[2];
    assert_eq!(memory.prefix, "mem");
    assert!(
        matches!(&memory.transport, Transport::Stdio(cmd) if cmd.command == "npx" && cmd.args.len() == 2)
    );
    let s = &c.servers[0];
    assert_eq!(s.name, "everything");
    assert_eq!(s.http_url().map(|u| u.port), Some(3001));
    assert_eq!(s.timeout, Duration::from_secs(60));
    assert_eq!(s.connect_timeout, Duration::from_secs(5));
    let r = &c.servers[1];
    assert!(r.http_url().is_some_and(|u| u.tls && u.port == 443));
    assert_eq!(r.timeout, Duration::from_secs(120));
    assert_eq!(
        r.headers(),
        &[("Authorization".to_owned(), "Bearer change-me".to_owned())]
    );
}

#[test]
fn server_defaults_and_integer_durations() {
    let c = Config::from_toml_str(
        "[proxy]\nidle_timeout = 5\n[[servers]]\nname = \"a\"\nurl = \"http://h/\"\n",
        "config.toml",
    )
    .expect("valid");
    assert_eq!(c.proxy.idle_timeout, Duration::from_secs(5));
    assert_eq!(c.servers[0].timeout, Duration::from_secs(60));
    assert_eq!(c.servers[0].connect_timeout, Duration::from_secs(5));
    assert!(c.servers[0].headers().is_empty());
}

#[test]
fn bad_durations_are_located() {
    assert_error(
        "[proxy]\nlisten = \"127.0.0.1:1\"\nidle_timeout = \"10x\"\n",
        3,
        "invalid duration \"10x\"",
    );
    assert_error("[proxy]\nidle_timeout = -3\n", 2, "negative");
    assert_error("[proxy]\nidle_timeout = 0\n", 2, "zero");
    assert_error("[proxy]\nidle_timeout = true\n", 2, "duration");
}

#[test]
fn unknown_field_names_table() {
    let (line, msg) = error("# comment\n\n[proxy]\nlsiten = \"127.0.0.1:1\"\n");
    assert_eq!(line, Some(4));
    assert!(
        msg.starts_with("config.toml:4:1: unknown field `lsiten` in [proxy]"),
        "{msg}"
    );
    assert!(msg.contains("listen"), "{msg}");
    assert_error(
        "[[servers]]\nname = \"a\"\nurl = \"http://h\"\nheader = {}\n",
        4,
        "unknown field `header` in [[servers]]",
    );
    assert_error("[proxi]\n", 1, "unknown table `proxi`");
}

#[test]
fn syntax_and_type_errors_are_located() {
    assert_error("[proxy]\nshards = \n", 2, "");
    assert_error("[proxy]\nshards = \"two\"\n", 2, "");
    assert_error(
        "[proxy]\n\nlisten = \"localhost\"\n",
        3,
        "config.toml:3:10: listen \"localhost\" has no port; write an IP address and a port",
    );
    assert_error(
        "[[servers]]\nname = \"a\"\n",
        2,
        "server \"a\" has neither url nor command",
    );
}

#[test]
fn bad_server_names() {
    assert_error(
        "[[servers]]\nurl = \"http://h\"\n\n\n\n\nname = \"a b\"\n",
        7,
        "config.toml:7:8: server name \"a b\" may only contain letters, digits, '-' and '_'; \
         rename it, e.g. \"a-b\"",
    );
    assert_error(
        "[[servers]]\nname = \"a__b\"\nurl = \"http://h\"\n",
        2,
        "separates server and tool names; rename it, e.g. \"a_b\"",
    );
    assert_error(
        "[[servers]]\nname = \"\"\nurl = \"http://h\"\n",
        2,
        "empty; rename it, e.g. \"server\"",
    );
    let long = "x".repeat(33);
    assert_error(
        &format!("[[servers]]\nname = \"{long}\"\nurl = \"http://h\"\n"),
        2,
        "longer than 32",
    );
}

#[test]
fn the_proxy_namespace_is_reserved() {
    assert_error(
        "[[servers]]\nname = \"proxy\"\nurl = \"http://h\"\n",
        2,
        "server name \"proxy\" is reserved for the proxy's own tools",
    );
    assert_error(
        "[[servers]]\nname = \"p\"\nprefix = \"Proxy\"\nurl = \"http://h\"\n",
        3,
        "prefix \"Proxy\" is reserved",
    );
}

#[test]
fn orchestration_settings() {
    let c = Config::from_toml_str(
        "[proxy]\nstate_dir = \"/var/lib/p\"\ntool_exposure = \"search\"\n\
         [[servers]]\nname = \"a\"\nurl = \"http://h\"\ntags = [\"math\", \"demo\"]\n",
        "config.toml",
    )
    .expect("valid");
    assert_eq!(c.proxy.tool_exposure, ToolExposure::Search);
    assert_eq!(c.proxy.state_dir.as_deref(), Some(Path::new("/var/lib/p")));
    assert_eq!(c.servers[0].tags, vec!["math", "demo"]);
    assert_eq!(Config::default().proxy.tool_exposure, ToolExposure::All);
    let (_, msg) = error("[proxy]\ntool_exposure = \"some\"\n");
    assert!(msg.contains("unknown variant"), "{msg}");
}

#[test]
fn duplicate_server_names() {
    let text = "[proxy]\n\n[[servers]]\nname = \"everything\"\nurl = \"http://a\"\n\n\
                [[servers]]\nname = \"other\"\nurl = \"http://b\"\n\n\
                [[servers]]\nname = \"everything\"\nurl = \"http://c\"\n";
    assert_error(
        text,
        12,
        "config.toml:12:8: duplicate server name \"everything\" (first defined at line 4); \
         give each [[servers]] entry a unique name",
    );
}

#[test]
fn bad_urls_are_located() {
    assert_error(
        "[[servers]]\nname = \"a\"\nurl = \"ftp://h/x\"\n",
        3,
        "config.toml:3:7: url \"ftp://h/x\" has unsupported scheme \"ftp\"",
    );
    assert_error(
        "[[servers]]\nname = \"a\"\nurl = \"http:///x\"\n",
        3,
        "has no host",
    );
}

#[test]
fn bad_headers_are_located() {
    assert_error(
        "[[servers]]\nname = \"a\"\nurl = \"http://h\"\nheaders = { Host = \"x\" }\n",
        4,
        "set by the proxy itself",
    );
    assert_error(
        "[[servers]]\nname = \"a\"\nurl = \"http://h\"\nheaders = { \"a b\" = \"x\" }\n",
        4,
        "not a valid HTTP header name",
    );
    assert_error(
        "[[servers]]\nname = \"a\"\nurl = \"http://h\"\n[servers.headers]\nX-A = \"x\\ny\"\n",
        5,
        "control character",
    );
    assert_error(
        "[[servers]]\nname = \"a\"\nurl = \"http://h\"\n[servers.headers]\nX-A = \"1\"\nx-a = \"2\"\n",
        6,
        "header \"x-a\" repeats \"X-A\"",
    );
}

#[test]
fn origins() {
    let c = Config::from_toml_str(
        "[proxy]\nallowed_origins = [\"https://App.example.com\"]\n",
        "config.toml",
    )
    .expect("valid");
    let p = &c.proxy;
    assert!(p.origin_allowed("https://app.example.com"));
    assert!(!p.origin_allowed("https://app.example.com.evil.net"));
    assert!(!p.origin_allowed("http://app.example.com"));
    assert!(p.origin_allowed("http://localhost:6274"));
    assert!(p.origin_allowed("https://127.0.0.1"));
    assert!(p.origin_allowed("http://[::1]:3000"));
    assert!(!p.origin_allowed("http://localhost.evil.net"));
    assert!(!p.origin_allowed("http://localhost:"));
    assert!(!p.origin_allowed("http://localhost:80/x"));
    assert!(!p.origin_allowed("null"));
    assert_error(
        "[proxy]\nallowed_origins = [\n  \"https://a.example.com/\",\n]\n",
        3,
        "no trailing '/'",
    );
}

#[test]
fn positions_count_characters() {
    let text = "a\néé=x\n";
    assert_eq!(position(text, 0), Position { line: 1, column: 1 });
    assert_eq!(position(text, 2), Position { line: 2, column: 1 });
    assert_eq!(position(text, 6), Position { line: 2, column: 3 });
    assert_eq!(position(text, 999), Position { line: 3, column: 1 });
}

#[test]
fn name_suggestions_are_valid() {
    for name in ["a b", "a__b", "", "ü", &"x".repeat(40), "a___b!"] {
        assert!(is_valid_server_name(&suggest_name(name)), "{name:?}");
    }
}

#[test]
fn load_reports_missing_file() {
    let err =
        Config::load(Path::new("/nonexistent/mcp-proxy.toml"), &tls::FilesNotRead).unwrap_err();
    assert!(matches!(err, ConfigError::Io { .. }));
    assert!(err.to_string().contains("/nonexistent/mcp-proxy.toml"));
}

#[test]
fn observability_settings() {
    let c = Config::from_toml_str("", "c.toml").expect("valid");
    assert_eq!(
        c.proxy.admin_listen,
        Some("127.0.0.1:8085".parse().expect("addr"))
    );
    assert_eq!(c.proxy.log_format, LogFormat::Text);
    let c = Config::from_toml_str(
        "[proxy]\nadmin_listen = \"off\"\nlog_format = \"json\"\nlog_level = \"warn,mcp_proxy=debug\"\n",
        "c.toml",
    )
    .expect("valid");
    assert_eq!(c.proxy.admin_listen, None);
    assert_eq!(c.proxy.log_format, LogFormat::Json);
    assert_eq!(c.proxy.log_level.as_deref(), Some("warn,mcp_proxy=debug"));
    assert_error(
        "[proxy]\nadmin_listen = \"9090\"\n",
        2,
        "admin_listen \"9090\"",
    );
    assert_error("[proxy]\n\nlog_format = \"xml\"\n", 3, "\"logfmt\"");
    assert_error("[proxy]\nlog_level = \"loud\"\n", 2, "invalid log level");
}

#[test]
fn era_takes_three_spellings_and_stdio_stays_stateful() {
    let servers = |era: &str| {
        Config::from_toml_str(
            &format!("[[servers]]\nname = \"a\"\nurl = \"http://h/\"\nera = \"{era}\"\n"),
            "config.toml",
        )
        .map(|c| c.servers[0].era)
    };
    assert_eq!(servers("auto").ok(), Some(UpstreamEra::Auto));
    assert_eq!(servers("2025-11-25").ok(), Some(UpstreamEra::Stateful));
    assert_eq!(servers("2026-07-28").ok(), Some(UpstreamEra::Stateless));
    let default = Config::from_toml_str(
        "[[servers]]\nname = \"a\"\nurl = \"http://h/\"\n",
        "config.toml",
    )
    .expect("valid");
    assert_eq!(default.servers[0].era, UpstreamEra::Auto);
    assert_error(
        "[[servers]]\nname = \"a\"\nurl = \"http://h/\"\nera = \"2025-06-18\"\n",
        4,
        r#"write one of "auto", "2025-11-25", "2026-07-28""#,
    );
    assert_error(
        "[[servers]]\nname = \"t\"\ncommand = \"true\"\nera = \"2026-07-28\"\n",
        4,
        "stateful era only",
    );
}
