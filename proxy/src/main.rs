//! `mcp-proxy`: serve many MCP servers as one.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use mcp_proxy::config::Config;
use mcp_proxy::metrics::logs::{self, LogFormat};
use mcp_proxy::runtime;

/// A thread-per-core MCP gateway: many upstream MCP servers served as one.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// TOML configuration file (without it: no upstreams, listening on 127.0.0.1:8080).
    #[arg(long, short = 'c', env = "MCP_PROXY_CONFIG")]
    config: Option<PathBuf>,
    /// Listen address, overriding the configuration (port 0 picks a free port).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Number of shards (one executor pinned per core), overriding the configuration; 0 = every core.
    #[arg(long)]
    shards: Option<usize>,
    /// Admin endpoints address (/metrics, /stats, /healthz), overriding the configuration.
    #[arg(long)]
    admin_listen: Option<SocketAddr>,
    /// Log format: text, json or logfmt, overriding the configuration.
    #[arg(long)]
    log_format: Option<LogFormat>,
    /// Log filter such as `debug` or `warn,mcp_proxy::routing=debug`, overriding RUST_LOG and
    /// the configuration.
    #[arg(long)]
    log_level: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if let Some(listen) = args.listen {
        config.proxy.listen = listen;
    }
    if let Some(shards) = args.shards {
        config.proxy.shards = shards;
    }
    if let Some(admin) = args.admin_listen {
        config.proxy.admin_listen = Some(admin);
    }
    if let Some(level) = &args.log_level {
        logs::check_filter(level).map_err(anyhow::Error::msg)?;
    }
    logs::init(
        args.log_format.unwrap_or(config.proxy.log_format),
        args.log_level
            .as_deref()
            .or(config.proxy.log_level.as_deref()),
        args.log_level.is_some(),
        logs::secrets_of(&config),
    );
    let servers = config.servers.len();
    let running = runtime::start(config).context("mcp-proxy could not start")?;
    log::info!(
        "serving {servers} upstream server(s) on http://{}/mcp",
        running.addr
    );
    // Tests and scripts wait for this exact line on stdout.
    let mut stdout = std::io::stdout();
    writeln!(stdout, "mcp-proxy ready: http://{}/mcp", running.addr)?;
    if let Some(admin) = running.admin {
        writeln!(stdout, "mcp-proxy admin: http://{admin}")?;
    }
    stdout.flush()?;
    running.join();
    Ok(())
}
