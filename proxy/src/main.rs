//! `mcp-proxy`: serve many MCP servers as one.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;

use anyhow::Context;
use clap::Parser;
use mcp_proxy::config::logging::{self, LogFormat};
use mcp_proxy::config::{address, Config};
use mcp_proxy::metrics::logs;
use mcp_proxy::runtime::{self, GeneratedToken, Mode};
use mcp_proxy::upstream::stdio::child;

/// A thread-per-core MCP gateway: many upstream MCP servers served as one.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Configuration: TOML, or a Claude Desktop / Claude Code / Cursor `mcpServers` JSON file
    /// (without it: no upstreams, listening on 127.0.0.1:8080).
    #[arg(long, short = 'c', env = "MCP_PROXY_CONFIG")]
    config: Option<PathBuf>,
    /// Listen address, overriding the configuration (port 0 picks a free port).
    #[arg(long, value_parser = |s: &str| address::parse(s, "--listen"))]
    listen: Option<SocketAddr>,
    /// Number of shards (one executor pinned per core), overriding the configuration; 0 = every core.
    #[arg(long)]
    shards: Option<usize>,
    /// Serve one client over stdin/stdout instead of HTTP (for desktop clients); logs go to stderr.
    #[arg(long)]
    stdio: bool,
    /// Admin endpoints address (/metrics, /stats, /healthz), overriding the configuration.
    #[arg(long, value_parser = |s: &str| address::parse(s, "--admin-listen"))]
    admin_listen: Option<SocketAddr>,
    /// Share the listen and admin ports with a proxy already running on them instead of
    /// refusing to start: for a zero-downtime restart, start the new proxy with --takeover, wait
    /// for its ready line, then stop the old one (SIGTERM).
    #[arg(long, conflicts_with = "stdio")]
    takeover: bool,
    /// Log format: text, json or logfmt, overriding the configuration.
    #[arg(long)]
    log_format: Option<LogFormat>,
    /// Log filter such as `debug` or `warn,mcp_proxy::mcp::routing=debug`, overriding RUST_LOG and
    /// the configuration.
    #[arg(long)]
    log_level: Option<String>,
    /// Run as a member of a fleet whose registry and membership live in this etcd (comma-separated
    /// endpoints), overriding `[cluster] etcd`; the other `[cluster]` settings keep their
    /// defaults unless the file sets them. Needs a session key.
    #[arg(long, env = "MCP_PROXY_CLUSTER_ETCD", value_name = "URL", value_delimiter = ',',
          value_parser = |s: &str| mcp_proxy::config::cluster::check_endpoint(s).map(|()| s.to_owned()))]
    cluster_etcd: Vec<String>,
    /// Validate this configuration file, print `OK` or the located error, and exit (0 or 1)
    /// without starting anything.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["stdio", "takeover"])]
    check_config: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some(child::SUPERVISOR_ARG) {
        std::process::exit(child::run_supervisor(&argv[2..]));
    }
    let args = Args::parse();
    if let Some(path) = &args.check_config {
        match Config::load(path, &mcp_proxy::tls::RustlsFiles) {
            Ok(_) => {
                println!("{}: OK", path.display());
                return Ok(());
            }
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(1);
            }
        }
    }
    let mut config = match &args.config {
        Some(path) => Config::load(path, &mcp_proxy::tls::RustlsFiles)?,
        None => Config::default(),
    };
    // Before the overrides below, so a reload compares file with file.
    mcp_proxy::config::restart::remember_started(&config);
    if let Some(listen) = args.listen {
        config.proxy.listen = listen;
    }
    if let Some(shards) = args.shards {
        config.proxy.shards = shards;
    }
    if let Some(admin) = args.admin_listen {
        config.proxy.admin_listen = Some(admin);
    }
    if !args.cluster_etcd.is_empty() {
        match &mut config.cluster {
            Some(cluster) => cluster.etcd = args.cluster_etcd.clone(),
            None => {
                config.cluster = Some(mcp_proxy::config::cluster::ClusterConfig::on(
                    args.cluster_etcd.clone(),
                ))
            }
        }
    }
    config.proxy.config_path = args.config.clone();
    if config.proxy.admin_token.is_none() {
        config.proxy.admin_token = std::env::var("MCP_PROXY_ADMIN_TOKEN")
            .ok()
            .filter(|t| !t.is_empty());
        if let Some(token) = &config.proxy.admin_token {
            mcp_proxy::config::admin_token::check(token, "MCP_PROXY_ADMIN_TOKEN")
                .map_err(anyhow::Error::msg)?;
        }
    }
    if config.proxy.session_key.is_none() {
        config.proxy.session_key = std::env::var("MCP_PROXY_SESSION_KEY")
            .ok()
            .filter(|k| !k.is_empty());
        // Checked here as the file's value is when parsed: a key no shard can use would leave
        // each shard sealing with its own random key, so ids would not open on another shard.
        if let Some(key) = &config.proxy.session_key {
            mcp_proxy::config::session_key::key_bytes(key)
                .map_err(|e| anyhow::anyhow!("MCP_PROXY_SESSION_KEY: {e}"))?;
        }
    }
    hide_own_secrets();
    if let Some(level) = &args.log_level {
        logging::check_filter(level).map_err(anyhow::Error::msg)?;
    }
    logs::init(
        args.log_format.unwrap_or(config.proxy.log_format),
        args.log_level
            .as_deref()
            .or(config.proxy.log_level.as_deref()),
        args.log_level.is_some(),
        config.proxy.log_level.as_deref(),
        logs::secrets_of(&config),
    );
    // Every thread started from here on inherits the blocked signals; one thread takes them.
    let signals = block_termination_signals();
    let servers = config.servers.len();
    if args.stdio && config.auth.enabled {
        // The one client is the process that started us, over a pipe: there is no credential
        // to check, so the policies would silently not apply. Say so rather than pretend.
        log::warn!(
            "[auth] is enabled but --stdio serves only the process that started it: no \
             credential is checked and no client policy or limit applies (docs/auth.md)"
        );
    }
    let mode = if args.stdio {
        Mode::Stdio
    } else {
        Mode::Http {
            takeover: args.takeover,
        }
    };
    // The signal thread runs from before start-up, so SIGTERM and SIGINT stop a start that is
    // slow or stuck (a discovery round waiting on upstreams) as well as a running proxy.
    let control = runtime::Control::default();
    let (stop, reload) = (control.stop.clone(), control.reload.clone());
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || loop {
            let signal = wait_for(&signals);
            if signal == libc::SIGHUP {
                log::info!("SIGHUP received: reloading the configuration");
                reload.store(true, Ordering::Release);
                continue;
            }
            log::info!("signal {signal} received: shutting down");
            stop.store(true, Ordering::Release);
            return;
        })
        .context("cannot start the signal thread")?;
    let running = match runtime::start(config, mode, control) {
        Ok(running) => running,
        Err(runtime::StartError::Interrupted) => {
            // Shards still starting end with the process; stdio children get SIGTERM from
            // their parent-death signal.
            log::info!("stopped during start-up");
            return Ok(());
        }
        Err(e) => return Err(anyhow::Error::new(e).context("mcp-proxy could not start")),
    };
    if args.stdio {
        log::info!("serving {servers} upstream server(s) on stdin/stdout");
    } else {
        let scheme = if mcp_proxy::tls::listener_enabled() {
            "https"
        } else {
            "http"
        };
        log::info!(
            "serving {servers} upstream server(s) on {scheme}://{}/mcp",
            running.addr
        );
        // Tests and scripts wait for this exact line on stdout.
        let mut stdout = std::io::stdout();
        writeln!(stdout, "mcp-proxy ready: {scheme}://{}/mcp", running.addr)?;
        if let Some(admin) = running.admin {
            writeln!(stdout, "mcp-proxy admin: http://{admin}")?;
            match &running.generated_token {
                GeneratedToken::NotMade => {}
                GeneratedToken::In(file) => {
                    writeln!(stdout, "mcp-proxy admin token: in {}", file.display())?
                }
                GeneratedToken::Nowhere => writeln!(
                    stdout,
                    "mcp-proxy admin token: generated but written nowhere (see the warning \
                     above); set [proxy] admin_token or MCP_PROXY_ADMIN_TOKEN to use the admin API"
                )?,
            }
        }
        stdout.flush()?;
    }
    running.join();
    log::info!("stopped");
    Ok(())
}

/// The variables that carry the proxy's own secrets.
const SECRET_VARIABLES: [&str; 2] = ["MCP_PROXY_ADMIN_TOKEN", "MCP_PROXY_SESSION_KEY"];

/// Keeps the secrets read from the environment out of other processes' reach, once read.
///
/// Children never inherit them (`config::stdio_env`), but a child runs as the proxy's user, and
/// `/proc/PID/environ` shows any process of that user (root's children: any process) the
/// environment block the kernel wrote at exec, whatever `unsetenv` did since. So each value is
/// overwritten where it lies before it is removed. The process is also made non-dumpable (as
/// ssh-agent does), so another process of the same user cannot read its memory through
/// `/proc/PID/mem` or attach a debugger, and no core file holds the keys.
fn hide_own_secrets() {
    for name in SECRET_VARIABLES {
        let prefix = format!("{name}=");
        // SAFETY: no other thread exists yet (nothing reads the environment concurrently); each
        // entry of `environ` is a NUL-terminated string the process owns, and only bytes before
        // its terminator are written.
        unsafe {
            let mut entry = libc::environ;
            while !entry.is_null() && !(*entry).is_null() {
                let text = *entry as *mut u8;
                let len = libc::strlen(*entry);
                let bytes = std::slice::from_raw_parts_mut(text, len);
                if bytes.starts_with(prefix.as_bytes()) {
                    bytes[prefix.len()..].fill(b'x');
                }
                entry = entry.add(1);
            }
        }
        std::env::remove_var(name);
    }
    // SAFETY: prctl with an integer option and argument; it changes only this process's flag.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
}

/// Blocks SIGTERM, SIGINT and SIGHUP in this thread (and so in every thread it starts).
fn block_termination_signals() -> libc::sigset_t {
    // SAFETY: plain libc signal-set calls on a local, zero-initialised set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGHUP);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// Waits for one of the blocked signals.
fn wait_for(set: &libc::sigset_t) -> i32 {
    let mut signal = 0;
    // SAFETY: sigwait only reads the set and writes the signal number.
    unsafe {
        libc::sigwait(set, &mut signal);
    }
    signal
}
