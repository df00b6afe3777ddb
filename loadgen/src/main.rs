//! `mcp-loadgen`: load for MCP servers and gateways (`run`), a fault-injecting MCP server
//! (`upstream`), and idle sessions by the thousand (`sessions`).

use std::io::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use mcp_loadgen::client::Target;
use mcp_loadgen::era::Era;
use mcp_loadgen::mix::Mix;
use mcp_loadgen::run::{self, RunConfig};
use mcp_loadgen::upstream::faults::{self, ErrorKind, Faults, Latency};
use mcp_loadgen::upstream::{self, AnswerMode, UpstreamConfig};
use mcp_loadgen::{duration, sessions};

/// Load generator and fault-injecting upstream for MCP gateways.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Send MCP requests over Streamable HTTP and report throughput, latency and errors.
    Run(RunArgs),
    /// Serve a fast MCP server at /mcp with injected latency, errors, stalls and crashes.
    Upstream(UpstreamArgs),
    /// Open N MCP sessions and leave them idle (to measure a server's memory per session).
    Sessions(SessionsArgs),
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// MCP endpoint, e.g. http://127.0.0.1:8080/mcp; repeat it for a fleet: connections
    /// (and reconnections) go round-robin over the URLs, as through an L4 balancer.
    #[arg(long, required = true)]
    url: Vec<String>,
    /// Open the sessions here instead (e.g. on one member of a fleet, while the load goes to
    /// the others through `--url`).
    #[arg(long)]
    open_url: Option<String>,
    /// MCP sessions to open; requests go round-robin over them (not with --protocol 2026-07-28).
    #[arg(long, default_value_t = 1)]
    sessions: usize,
    /// With --protocol 2026-07-28: send as N clients (clientInfo mcp-loadgen-0 ...), requests
    /// round-robin over them. The proxy serves each client's requests on one shard, so one
    /// client loads one core; several spread over all.
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// Protocol era: 2025-11-25 opens sessions (initialize, Mcp-Session-Id,
    /// notifications/initialized); 2026-07-28 opens none, and every request carries the
    /// version and the client's capabilities and identity in `_meta`, with the
    /// MCP-Protocol-Version, Mcp-Method and Mcp-Name headers.
    #[arg(long, value_enum, default_value_t = ProtocolArg::Stateful)]
    protocol: ProtocolArg,
    /// TCP connections (default: the concurrency).
    #[arg(long)]
    connections: Option<usize>,
    /// Requests in flight at most (closed loop: the load itself).
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Measured time.
    #[arg(long, default_value = "10s", value_parser = duration::parse)]
    duration: Duration,
    /// Time sending load before measuring.
    #[arg(long, default_value = "2s", value_parser = duration::parse)]
    warmup: Duration,
    /// Open loop at this many requests per second (omit for closed loop).
    #[arg(long)]
    rate: Option<f64>,
    /// Request mix: `tools/call:NAME[:ARGS]` or `METHOD[:PARAMS]`, each `=WEIGHT`, comma-separated.
    #[arg(long, default_value = r#"tools/call:echo:{"message":"hello"}"#)]
    mix: String,
    /// Print the report as JSON on stdout (the progress lines stay on stderr).
    #[arg(long)]
    json: bool,
    /// Executor threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Longest wait for one answer.
    #[arg(long, default_value = "10s", value_parser = duration::parse)]
    timeout: Duration,
    /// No progress line on stderr.
    #[arg(long)]
    quiet: bool,
    /// Also report the measured window slice by slice (e.g. 100ms), with the CPU time the host
    /// took from this machine in each slice and the latency over the slices where it took none.
    #[arg(long, value_parser = duration::parse)]
    timeline: Option<Duration>,
    /// Exit with status 1 when more than this fraction of measured requests failed
    /// (0.01 = 1%; 1 never fails the run). The report is printed either way.
    #[arg(long, default_value_t = 0.01)]
    max_error_rate: f64,
    /// Send the mix without first checking its tools against the server's `tools/list`.
    #[arg(long)]
    skip_tool_check: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ProtocolArg {
    /// Stateful: a session per `--sessions`.
    #[value(name = "2025-11-25")]
    Stateful,
    /// Stateless: no handshake, no session.
    #[value(name = "2026-07-28")]
    Stateless,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ModeArg {
    /// application/json answers.
    Json,
    /// text/event-stream answers.
    Sse,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ErrorKindArg {
    /// HTTP 200 carrying JSON-RPC error -32603.
    Rpc,
    /// HTTP 500 carrying JSON-RPC error -32603.
    Http,
}

#[derive(clap::Args, Debug)]
struct UpstreamArgs {
    /// Listen address (port 0 picks a free port; the ready line says which).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// How requests are answered.
    #[arg(long, value_enum, default_value_t = ModeArg::Json)]
    mode: ModeArg,
    /// No sessions: no Mcp-Session-Id is issued or checked.
    #[arg(long)]
    stateless: bool,
    /// Fixed delay before every answer (except initialize).
    #[arg(long, default_value = "0ms", value_parser = duration::parse, conflicts_with = "latency_dist")]
    latency: Duration,
    /// Delay drawn from percentile points, e.g. 'p50=1ms,p99=20ms'.
    #[arg(long)]
    latency_dist: Option<String>,
    /// Fraction of requests (except initialize) answered with an error.
    #[arg(long, default_value_t = 0.0)]
    error_rate: f64,
    /// How injected errors are answered.
    #[arg(long, value_enum, default_value_t = ErrorKindArg::Rpc)]
    error_kind: ErrorKindArg,
    /// Fraction of requests (except initialize) never answered.
    #[arg(long, default_value_t = 0.0)]
    stall_rate: f64,
    /// Fraction of POSTs (initialize and notifications included) answered with a bare HTTP
    /// error (`--http-error-status`, text body, no JSON-RPC), as a failing load balancer in
    /// front of the server would.
    #[arg(long, default_value_t = 0.0)]
    http_error_rate: f64,
    /// Status of `--http-error-rate` answers (503 carries `Retry-After: 1` unless
    /// `--retry-after` says otherwise).
    #[arg(long, default_value_t = faults::DEFAULT_HTTP_ERROR_STATUS,
          value_parser = clap::value_parser!(u16).range(400..=599))]
    http_error_status: u16,
    /// Serve the first N POSTs of the process normally (sessions open, calls answered), then
    /// apply `--http-error-rate`: a replica that starts failing under clients already on it.
    #[arg(long, default_value_t = 0, value_name = "N")]
    http_error_after: u64,
    /// `Retry-After` value of every `--http-error-rate` answer, whatever its status: seconds
    /// (`45`), an HTTP-date, or any other text to see how a client takes a malformed one.
    #[arg(long, value_name = "VALUE")]
    retry_after: Option<String>,
    /// Exit (status 3) right after writing this many responses.
    #[arg(long)]
    crash_after: Option<u64>,
    /// Executor threads, all on the same port.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// A name for this upstream: `whoami` answers it and the server name in initialize ends
    /// with it, so replicas can be told apart.
    #[arg(long)]
    id: Option<String>,
    /// Print one line per request (method and tool name) and per notification (method and
    /// requestId, for cancellations) read, to stderr.
    #[arg(long)]
    log_requests: bool,
    /// Exit (status 3) on reading a tools/call of one of these tools, before answering it.
    #[arg(long, value_delimiter = ',')]
    crash_on: Vec<String>,
}

#[derive(clap::Args, Debug)]
struct SessionsArgs {
    /// MCP endpoint.
    #[arg(long)]
    url: String,
    /// Sessions to open.
    #[arg(long, default_value_t = 1000)]
    count: usize,
    /// Connections to open them over.
    #[arg(long, default_value_t = 8)]
    connections: usize,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Run(a) => run_cmd(a),
        Command::Upstream(a) => upstream_cmd(a),
        Command::Sessions(a) => sessions_cmd(a),
    }
}

fn run_cmd(a: RunArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        (0.0..=1.0).contains(&a.max_error_rate),
        "--max-error-rate must be between 0 and 1"
    );
    let targets = a
        .url
        .iter()
        .map(|u| Target::parse(u))
        .collect::<Result<Vec<_>, _>>()?;
    let open_target = a.open_url.as_deref().map(Target::parse).transpose()?;
    let era = match a.protocol {
        ProtocolArg::Stateful => Era::Stateful,
        ProtocolArg::Stateless => Era::Stateless,
    };
    let mix = Mix::parse(&a.mix, era, a.clients).context("--mix")?;
    let cfg = RunConfig {
        url: a.url.join(","),
        target: targets[0].clone(),
        targets,
        open_target,
        sessions: a.sessions,
        clients: a.clients,
        connections: a.connections.unwrap_or(a.concurrency),
        concurrency: a.concurrency,
        duration: a.duration,
        warmup: a.warmup,
        rate: a.rate,
        mix,
        mix_text: a.mix,
        threads: a.threads,
        timeout: a.timeout,
        progress: !a.quiet,
        timeline: a.timeline,
        check_tools: !a.skip_tool_check,
        era,
    };
    let report = run::run(cfg)?;
    let mut out = std::io::stdout();
    if a.json {
        writeln!(out, "{}", report.to_json())?;
    } else {
        write!(out, "{}", report.to_table())?;
    }
    out.flush()?;
    if report.requests > 0 {
        let rate = report.errors as f64 / report.requests as f64;
        if rate > a.max_error_rate {
            let first = report
                .error_samples
                .iter()
                .next()
                .map(|(k, said)| format!("; first kind {k}: {said}"))
                .unwrap_or_default();
            eprintln!(
                "mcp-loadgen: {:.2}% of requests failed ({} of {}), above --max-error-rate {}{first}",
                rate * 100.0,
                report.errors,
                report.requests,
                a.max_error_rate
            );
            std::process::exit(1);
        }
    }
    Ok(())
}

fn upstream_cmd(a: UpstreamArgs) -> anyhow::Result<()> {
    for (name, rate) in [
        ("--error-rate", a.error_rate),
        ("--stall-rate", a.stall_rate),
        ("--http-error-rate", a.http_error_rate),
    ] {
        anyhow::ensure!(
            (0.0..=1.0).contains(&rate),
            "{name} must be between 0 and 1"
        );
    }
    if let Some(value) = &a.retry_after {
        // Written into the response head as given: a control character would split it.
        anyhow::ensure!(
            value
                .bytes()
                .all(|b| b == b'\t' || (b' '..=b'~').contains(&b)),
            "--retry-after must be printable ASCII (e.g. 45 or 'Wed, 21 Oct 2026 07:28:00 GMT')"
        );
    }
    let latency = match &a.latency_dist {
        Some(d) => Latency::parse_dist(d)?,
        None => Latency::Fixed(a.latency),
    };
    let config = UpstreamConfig {
        listen: a.listen,
        mode: match a.mode {
            ModeArg::Json => AnswerMode::Json,
            ModeArg::Sse => AnswerMode::Sse,
        },
        stateless: a.stateless,
        faults: Faults {
            latency,
            error_rate: a.error_rate,
            error_kind: match a.error_kind {
                ErrorKindArg::Rpc => ErrorKind::Rpc,
                ErrorKindArg::Http => ErrorKind::Http,
            },
            stall_rate: a.stall_rate,
            http_error_rate: a.http_error_rate,
            http_error_status: a.http_error_status,
            http_error_after: a.http_error_after,
            retry_after: a.retry_after,
        },
        crash_after: a.crash_after,
        threads: a.threads,
        id: a.id,
        log_requests: a.log_requests,
        crash_on: a.crash_on,
    };
    let running = upstream::start(config)?;
    // Tests and scripts wait for this exact line on stdout.
    let mut out = std::io::stdout();
    writeln!(out, "mcp-loadgen upstream ready: {}", running.url())?;
    out.flush()?;
    running.join();
    Ok(())
}

fn sessions_cmd(a: SessionsArgs) -> anyhow::Result<()> {
    let target = Target::parse(&a.url)?;
    let opened = sessions::open(target, a.count, a.connections)?;
    println!(
        "opened {} session(s) in {:.2}s",
        opened.sessions,
        opened.elapsed.as_secs_f64()
    );
    Ok(())
}
