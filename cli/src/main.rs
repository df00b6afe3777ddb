//! `mcpctl`: operate a running mcp-proxy through its admin API.
//!
//! # Layout
//! - `main.rs`: the commands (clap) and how each prints, as a table or `--json`.
//! - [`admin`]: admin API calls and the failures they map to.
//! - [`http`]: a tiny blocking HTTP/1.1 client (no async runtime in a CLI).
//! - [`mcp`]: `call`, the proxy's `/mcp` endpoint as an MCP client.
//! - [`servers`]: `servers` commands: list, show, add, update, remove, drain, enable.
//! - [`replicas`]: `servers replicas` and per-replica `drain`/`enable`.
//! - [`settings`]: `log-level` and `config view`, the proxy's running settings.
//! - [`token`]: which admin token is sent (flag, file, or the one a local proxy left).
//! - [`names`]: shell completion of server and tool names from the running proxy.
//! - [`top`]: the refreshing per-server table.
//! - [`fleet`]: `--all stats|top|sessions`, every member of a fleet asked and merged.
//! - [`workflows`]: saved workflows (admin API) and running them (`/mcp`).
//! - [`table`]: table rendering.
//! - [`fail`]: messages that say how to fix things, and exit codes.
//!
//! Exit codes: 0 ok, 1 error, 2 usage, 3 proxy unreachable, 4 unauthorized, 5 not found,
//! 6 degraded (`health`: some server is not up).

mod admin;
mod cluster;
mod fail;
mod fleet;
mod http;
mod issuers;
mod mcp;
mod names;
mod replicas;
mod search;
mod servers;
mod settings;
mod table;
mod token;
mod top;
mod workflows;

use std::io::Write;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};
use clap_complete::engine::ArgValueCandidates;
use serde_json::{json, Value};

use admin::Admin;
use fail::{Code, Failure};
use http::Url;
use table::{cell, ms, request_cells, strings, Table};

/// The admin address mcpctl talks to when none is given (the proxy's default `admin_listen`).
pub(crate) const DEFAULT_ADMIN_URL: &str = "http://127.0.0.1:8085";

/// Operate a running mcp-proxy: servers, tools, health, stats, routing, calls.
#[derive(Parser, Debug)]
#[command(name = "mcpctl", version, about)]
struct Cli {
    /// Admin base URL (printed by mcp-proxy at start as `mcp-proxy admin: ...`).
    #[arg(
        long,
        env = "MCPCTL_URL",
        default_value = DEFAULT_ADMIN_URL,
        global = true
    )]
    admin_url: String,
    /// Admin token ([proxy] admin_token, or the generated one in the file mcp-proxy names at
    /// start: `mcp-proxy admin token: in FILE`). Without
    /// it or --token-file, the token a proxy on this machine generated is found by the admin
    /// port.
    #[arg(long, env = "MCPCTL_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// A file holding the admin token, such as the proxy's `{state_dir}/admin-token`; used when
    /// no --token is given.
    #[arg(long, env = "MCPCTL_TOKEN_FILE", global = true)]
    token_file: Option<std::path::PathBuf>,
    /// Print JSON for scripts instead of tables (the same as `-o json`).
    #[arg(long, global = true)]
    json: bool,
    /// Output format: `table` (the default), `json`, `yaml`, or `wide` (tables with nothing cut
    /// short).
    #[arg(short = 'o', long = "output", value_enum, global = true)]
    output: Option<Format>,
    /// `stats`, `top` and `sessions` of every member of the fleet (`[cluster]`) the proxy at
    /// --admin-url belongs to, a row per member and the fleet's merged rows; every member is
    /// sent the same admin token.
    #[arg(long, global = true)]
    all: bool,
    #[command(subcommand)]
    command: Command,
}

/// How results are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    /// Tables for people; long descriptions are cut to fit.
    Table,
    /// JSON for scripts.
    Json,
    /// YAML, the API's answer as JSON gives it.
    Yaml,
    /// Tables with nothing cut short.
    Wide,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Upstream servers: list, show, add, update, remove, drain, enable, replicas.
    #[command(subcommand)]
    Servers(servers::Servers),
    /// Tools offered through the proxy.
    #[command(subcommand)]
    Tools(Tools),
    /// Health of the proxy and of each server.
    Health,
    /// Latency quantiles, request and error counts per server.
    Stats,
    /// A live table of per-server rate, p50/p99, errors and health.
    Top {
        /// Print one frame and exit (for scripts and tests).
        #[arg(long)]
        once: bool,
        /// Seconds between refreshes.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
        /// Also show each replica of every HTTP server, indented under it: state, in-flight,
        /// rate, errors, p50/p99 and failed health checks (one more request per server).
        #[arg(long)]
        replicas: bool,
    },
    /// Which server would serve a tool, and why.
    Route {
        /// The exposed tool name (as in `tools ls`).
        #[arg(add = ArgValueCandidates::new(names::tools))]
        tool: String,
    },
    /// Call a tool through the proxy, as an MCP client.
    Call {
        /// The exposed tool name.
        #[arg(add = ArgValueCandidates::new(names::tools))]
        tool: String,
        /// Arguments as a JSON object.
        #[arg(long, default_value = "{}")]
        args: String,
        /// The proxy's MCP endpoint (printed at start as `mcp-proxy ready: ...`).
        #[arg(
            long,
            env = "MCPCTL_MCP_URL",
            default_value = "http://127.0.0.1:8080/mcp"
        )]
        mcp_url: String,
        /// Seconds to wait for each answer.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// Saved workflows: list, show, save from a file, remove, run.
    #[command(subcommand)]
    Workflows(workflows::Workflows),
    /// Sessions per shard.
    Sessions,
    /// The shards and what they hold.
    Shards,
    /// The trusted OAuth issuers ([auth.oauth]): their keys and when they were last fetched.
    Issuers,
    /// The fleet this proxy is a member of (`[cluster]`): members, leader, health.
    #[command(subcommand)]
    Cluster(cluster::Cluster),
    /// Re-read the proxy's configuration file (sessions are kept).
    Reload,
    /// The proxy's version.
    Version,
    /// The log filter in force on every shard, or set a new one (no restart):
    /// `mcpctl log-level debug`, `mcpctl log-level info,mcp_proxy::mcp::routing=debug`.
    LogLevel {
        /// A level (error, warn, info, debug, trace, off) or module=level pairs.
        level: Option<String>,
    },
    /// The proxy's configuration.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Print a shell completion script (static: commands and options). For server and tool
    /// names completed from the running proxy, use `source <(COMPLETE=bash mcpctl)` instead.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand, Debug)]
enum ConfigCmd {
    /// The running configuration as TOML: the file plus the changes made through the admin
    /// API (servers added, updated, removed), secrets redacted.
    View,
}

#[derive(Subcommand, Debug)]
enum Tools {
    /// List every exposed tool.
    Ls,
    /// The tools that fit a need, best first: the proxy's own ranking (proxy__search_tools:
    /// BM25 with a word embedding, so "folder" finds "directory"), over its MCP endpoint.
    Search {
        /// The need, in plain words.
        text: String,
        /// How many tools to show.
        #[arg(short = 'k', long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=50))]
        k: u64,
        /// Say why each tool ranked: shared words, words related in meaning, the score's parts.
        #[arg(long)]
        explain: bool,
        /// The proxy's MCP endpoint (printed at start as `mcp-proxy ready: ...`).
        #[arg(
            long,
            env = "MCPCTL_MCP_URL",
            default_value = "http://127.0.0.1:8080/mcp"
        )]
        mcp_url: String,
    },
}

fn main() {
    // `COMPLETE=bash mcpctl ...`: answer the shell's completion request and exit.
    clap_complete::CompleteEnv::with_factory(Cli::command).complete();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            std::process::exit(if e.use_stderr() {
                Code::Usage as i32
            } else {
                0
            });
        }
    };
    if let Err(f) = run(cli) {
        eprintln!("mcpctl: {}", f.message);
        std::process::exit(f.code as i32);
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    if let Command::Completions { shell } = cli.command {
        let mut cmd = Cli::command();
        clap_complete::generate(shell, &mut cmd, "mcpctl", &mut std::io::stdout());
        return Ok(());
    }
    let url = Url::parse(&cli.admin_url)?;
    let admin = Admin {
        token: token::resolve(cli.token.as_deref(), cli.token_file.as_deref(), &url)?,
        url,
    };
    let out = Out {
        json: cli.json || cli.output == Some(Format::Json),
        yaml: cli.output == Some(Format::Yaml),
        wide: cli.output == Some(Format::Wide),
    };
    if cli.all {
        return fleet_wide(&admin, &out, cli.command);
    }
    match cli.command {
        Command::Servers(s) => servers::run(&admin, &out, s),
        Command::Workflows(w) => workflows::run(&admin, &out, w),
        Command::Cluster(c) => cluster::run(&admin, &out, c),
        Command::Tools(Tools::Ls) => tools(&admin, &out),
        Command::Tools(Tools::Search {
            text,
            k,
            explain,
            mcp_url,
        }) => search::tools(&Url::parse(&mcp_url)?, &out, &text, k, explain),
        Command::Health => {
            let v = admin.get("health")?;
            out.print(&v, || {
                let mut t = Table::new(&["SERVER", "STATUS", "STATE", "ERROR"]);
                for (name, s) in v["servers"].as_object().into_iter().flatten() {
                    t.row(vec![
                        name.clone(),
                        cell(s.get("status")),
                        cell(s.get("state")),
                        cell(s.get("error")),
                    ]);
                }
                format!(
                    "proxy: {} ({} shards)\n{}",
                    cell(v.get("status")),
                    cell(v.get("shards")),
                    t.render()
                )
            });
            // Scripts and health checks read the exit status: degraded is not ok.
            if v["status"] != "ok" {
                let down: Vec<&str> = v["servers"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(_, s)| s["status"] != "up" && s["state"] != "draining")
                    .map(|(name, _)| name.as_str())
                    .collect();
                return Err(Failure {
                    code: Code::Degraded,
                    message: format!(
                        "the proxy is {}: not up: {}",
                        cell(v.get("status")),
                        down.join(", ")
                    ),
                });
            }
            Ok(())
        }
        Command::Stats => {
            let v = admin.get("stats")?;
            out.print(&v, || {
                // OWN: the proxy's own time on a request, without the upstream's (microseconds).
                let mut t = Table::new(&[
                    "SERVER",
                    "REQUESTS",
                    "ERRORS",
                    "P50 MS",
                    "P90 MS",
                    "P99 MS",
                    "MAX MS",
                    "OWN P50 US",
                    "OWN P99 US",
                ]);
                for (name, s) in v["servers"].as_object().into_iter().flatten() {
                    let own = &s["overhead"];
                    let mut row = vec![name.clone()];
                    row.extend(request_cells(s));
                    row.extend([cell(own.get("p50")), cell(own.get("p99"))]);
                    t.row(row);
                }
                let e = &v["end_to_end"];
                let own = &v["proxy"];
                format!(
                    "end to end: {} messages, p50 {} ms, p99 {} ms\n\
                     answered by the proxy itself: {} requests, {} errors\n{}",
                    cell(e.get("count")),
                    ms(e.get("p50")),
                    ms(e.get("p99")),
                    cell(own.get("requests")),
                    cell(own.get("errors")),
                    t.render()
                )
            });
            Ok(())
        }
        Command::Top {
            once,
            interval,
            replicas,
        } => {
            if !(interval > 0.0 && interval.is_finite()) {
                return Err(Failure::usage(
                    "--interval must be a positive number of seconds",
                ));
            }
            top::run(
                &admin,
                Duration::from_secs_f64(interval),
                once,
                replicas,
                out.json,
            )
        }
        Command::Route { tool } => {
            let v = admin.get(&format!("route?tool={}", encode(&tool)))?;
            out.print(&v, || {
                format!(
                    "{} -> server {} (index {}), tool \"{}\" over {}{}\nwhy: {}\n",
                    cell(v.get("tool")),
                    cell(v.get("server")),
                    cell(v.get("index")),
                    cell(v.get("original")),
                    cell(v.get("transport")),
                    v.get("replica")
                        .and_then(Value::as_str)
                        .map(|r| format!(" at {r}"))
                        .unwrap_or_default(),
                    cell(v.get("why"))
                )
            });
            Ok(())
        }
        Command::Call {
            tool,
            args,
            mcp_url,
            timeout,
        } => {
            let arguments: Value = serde_json::from_str(&args).map_err(|e| {
                Failure::usage(format!(
                    "--args is not JSON ({e}); write e.g. --args '{{\"message\":\"hi\"}}'"
                ))
            })?;
            if !arguments.is_object() {
                return Err(Failure::usage(
                    "--args must be a JSON object, e.g. '{\"message\":\"hi\"}'",
                ));
            }
            let url = Url::parse(&mcp_url)?;
            let result = match mcp::call_tool(&url, &tool, arguments, Duration::from_secs(timeout))
            {
                Err(mut f) if f.code == Code::NotFound => {
                    f.message.push_str(&admin.similar_tools(&tool));
                    return Err(f);
                }
                other => other?,
            };
            out.print(&result, || {
                let mut text = String::new();
                for c in result["content"].as_array().into_iter().flatten() {
                    match c.get("text").and_then(Value::as_str) {
                        Some(t) => text.push_str(t),
                        None => text.push_str(&c.to_string()),
                    }
                    text.push('\n');
                }
                text
            });
            if result["isError"] == true {
                return Err(Failure::error(format!("{tool} reported an error")));
            }
            Ok(())
        }
        Command::Sessions => {
            let v = admin.get("sessions")?;
            out.print(&v, || {
                let mut t = Table::new(&["SHARD", "SESSIONS"]);
                for (i, n) in v["per_shard"].as_array().into_iter().flatten().enumerate() {
                    t.row(vec![i.to_string(), n.to_string()]);
                }
                format!("{}total: {}\n", t.render(), cell(v.get("total")))
            });
            Ok(())
        }
        Command::Issuers => {
            let v = admin.get("auth/issuers")?;
            out.print(&v, || issuers::table(&v));
            Ok(())
        }
        Command::Shards => {
            let v = admin.get("shards")?;
            out.print(&v, || {
                let mut t = Table::new(&["SHARD", "SESSIONS", "REQUESTS", "OWNS"]);
                for s in v["shards"].as_array().into_iter().flatten() {
                    let owns = strings(&s["owns"]);
                    t.row(vec![
                        cell(s.get("shard")),
                        cell(s.get("sessions")),
                        cell(s.get("requests")),
                        owns.join(", "),
                    ]);
                }
                t.render()
            });
            Ok(())
        }
        Command::Reload => {
            let v = admin.call("POST", "reload", None)?;
            out.print(&v, || {
                let c = &v["changes"];
                let list = |k: &str| {
                    let names = strings(&c[k]);
                    if names.is_empty() {
                        "-".to_owned()
                    } else {
                        names.join(", ")
                    }
                };
                let applied = |k: &str| {
                    if v[k].as_bool() == Some(true) {
                        "applied"
                    } else {
                        "unchanged"
                    }
                };
                let mut text = format!(
                    "reloaded: added {}, updated {}, removed {}; [auth] {}; [limits] {}; \
                     [proxy] limits {}\n",
                    list("added"),
                    list("updated"),
                    list("removed"),
                    applied("auth"),
                    applied("limits"),
                    applied("proxy_limits")
                );
                if let Some(level) = v["log_level"].as_str() {
                    text.push_str(&format!("log level now {level}\n"));
                }
                // A warning, not a failure: what did apply stays applied, and the exit is 0.
                let waiting = restart_only(&v);
                if !waiting.is_empty() {
                    text.push_str(&format!(
                        "not applied until restart: {}\n",
                        waiting.join(", ")
                    ));
                }
                text
            });
            Ok(())
        }
        Command::Version => {
            let v = admin.get("version")?;
            let v = json!({"mcpctl": env!("CARGO_PKG_VERSION"), "proxy": v["version"]});
            out.print(&v, || {
                format!(
                    "mcpctl {}\nmcp-proxy {}\n",
                    cell(v.get("mcpctl")),
                    cell(v.get("proxy"))
                )
            });
            Ok(())
        }
        Command::LogLevel { level } => {
            let (v, text) = settings::log_level(&admin, level.as_deref())?;
            out.print(&v, || text);
            Ok(())
        }
        Command::Config(ConfigCmd::View) => {
            let (v, text) = settings::config_view(&admin)?;
            out.print(&v, || text);
            Ok(())
        }
        Command::Completions { .. } => Ok(()),
    }
}

/// `--all`: the command asked of every member of the fleet.
fn fleet_wide(admin: &Admin, out: &Out, command: Command) -> Result<(), Failure> {
    let positive = |interval: f64| {
        if interval > 0.0 && interval.is_finite() {
            Ok(Duration::from_secs_f64(interval))
        } else {
            Err(Failure::usage(
                "--interval must be a positive number of seconds",
            ))
        }
    };
    match command {
        Command::Stats => fleet::stats(&fleet::members(admin)?, out),
        Command::Sessions => fleet::sessions(&fleet::members(admin)?, out),
        Command::Top {
            once,
            interval,
            replicas: false,
        } => {
            let interval = positive(interval)?;
            fleet::top(&fleet::members(admin)?, interval, once, out.json);
        }
        Command::Top { replicas: true, .. } => {
            return Err(Failure::usage(
                "--replicas is per member: run `mcpctl top --replicas` against one member's \
                 --admin-url",
            ))
        }
        _ => {
            return Err(Failure::usage(
                "--all applies to stats, top and sessions; drop it for other commands",
            ))
        }
    }
    Ok(())
}

/// Where output goes: a table for people, or JSON for scripts.
pub(crate) struct Out {
    json: bool,
    /// YAML instead of JSON, for people reading a whole answer.
    yaml: bool,
    /// Tables keep long cells whole.
    wide: bool,
}

impl Out {
    pub(crate) fn print(&self, value: &Value, table: impl FnOnce() -> String) {
        let text = if self.json {
            format!("{value}\n")
        } else if self.yaml {
            serde_yaml_ng::to_string(value)
                .unwrap_or_else(|e| format!("# not YAML: {e}\n{value}\n"))
        } else {
            table()
        };
        let mut stdout = std::io::stdout();
        // A closed pipe (`mcpctl ... | head`) is not an error worth a message.
        let _ = stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.flush());
    }
}

/// Percent-encodes a path segment or query value.
pub(crate) fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The settings a reload answer names as waiting for a restart (none from an older proxy).
fn restart_only(answer: &Value) -> Vec<&str> {
    strings(&answer["not_applied_until_restart"])
}

fn tools(admin: &Admin, out: &Out) -> Result<(), Failure> {
    let v = admin.get("tools")?;
    out.print(&v, || {
        let mut t = Table::new(&["TOOL", "SERVER", "DESCRIPTION"]);
        for tool in v["items"].as_array().into_iter().flatten() {
            let mut d = cell(tool.get("description")).replace('\n', " ");
            if !out.wide && d.chars().count() > 60 {
                d = d.chars().take(57).collect::<String>() + "...";
            }
            t.row(vec![cell(tool.get("name")), cell(tool.get("server")), d]);
        }
        t.render()
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn specs_come_from_flags() {
        let cli = Cli::try_parse_from([
            "mcpctl",
            "servers",
            "add",
            "x",
            "--url",
            "http://h:1/mcp",
            "--header",
            "A=b",
        ])
        .expect("parses");
        let Command::Servers(servers::Servers::Add(a)) = cli.command else {
            panic!("not add");
        };
        let spec = servers::spec_of(&a).expect("spec");
        assert_eq!(
            spec,
            json!({"name": "x", "url": "http://h:1/mcp", "headers": {"A": "b"}})
        );
        let cli = Cli::try_parse_from(["mcpctl", "servers", "add", "y"]).expect("parses");
        let Command::Servers(servers::Servers::Add(a)) = cli.command else {
            panic!("not add");
        };
        assert_eq!(
            servers::spec_of(&a).expect_err("no target").code,
            Code::Usage
        );
    }

    #[test]
    fn a_reload_answer_names_what_waits_for_a_restart() {
        let answer = json!({"reloaded": true, "not_applied_until_restart": ["[proxy] listen", "[tls] (on/off)"]});
        assert_eq!(restart_only(&answer), ["[proxy] listen", "[tls] (on/off)"]);
        assert!(restart_only(&json!({"reloaded": true})).is_empty());
    }

    #[test]
    fn encoding_keeps_names() {
        assert_eq!(encode("alpha__echo"), "alpha__echo");
        assert_eq!(encode("a b/c"), "a%20b%2Fc");
    }
}
