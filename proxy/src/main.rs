//! `mcp-proxy`: serve many MCP servers as one.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use mcp_proxy::config::Config;
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
}

fn main() -> anyhow::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .target(env_logger::Target::Stderr)
        .init();
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
    let servers = config.servers.len();
    let running = runtime::start(config).context("mcp-proxy could not start")?;
    log::info!(
        "serving {servers} upstream server(s) on http://{}/mcp",
        running.addr
    );
    // Tests and scripts wait for this exact line on stdout.
    let mut stdout = std::io::stdout();
    writeln!(stdout, "mcp-proxy ready: http://{}/mcp", running.addr)?;
    stdout.flush()?;
    running.join();
    Ok(())
}
