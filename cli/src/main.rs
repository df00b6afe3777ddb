//! `mcpctl`: operate a running mcp-proxy through its admin API.
//!
//! # Layout
//! - `main.rs`: the commands (clap) and how each prints, as a table or `--json`.
//! - [`admin`]: admin API calls and the failures they map to.
//! - [`http`]: a tiny blocking HTTP/1.1 client (no async runtime in a CLI).
//! - [`mcp`]: `call`, the proxy's `/mcp` endpoint as an MCP client.
//! - [`replicas`]: `servers replicas` and per-replica `drain`/`enable`.
//! - [`top`]: the refreshing per-server table.
//! - [`workflows`]: saved workflows (admin API) and running them (`/mcp`).
//! - [`table`]: table rendering.
//! - [`fail`]: messages that say how to fix things, and exit codes.
//!
//! Exit codes: 0 ok, 1 error, 2 usage, 3 proxy unreachable, 4 unauthorized, 5 not found,
//! 6 degraded (`health`: some server is not up).

mod admin;
mod cluster;
mod fail;
mod http;
mod mcp;
mod replicas;
mod table;
mod top;
mod workflows;

use std::io::Write;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};
use serde_json::{json, Map, Value};

use admin::Admin;
use fail::{Code, Failure};
use http::Url;
use table::{cell, ms, Table};

/// Operate a running mcp-proxy: servers, tools, health, stats, routing, calls.
#[derive(Parser, Debug)]
#[command(name = "mcpctl", version, about)]
struct Cli {
    /// Admin base URL (printed by mcp-proxy at start as `mcp-proxy admin: ...`).
    #[arg(
        long,
        env = "MCPCTL_URL",
        default_value = "http://127.0.0.1:8085",
        global = true
    )]
    admin_url: String,
    /// Admin token (printed as `mcp-proxy admin token: ...`, or [proxy] admin_token).
    #[arg(long, env = "MCPCTL_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// A file holding the admin token, such as the proxy's `{state_dir}/admin-token`; used when
    /// no --token is given.
    #[arg(long, env = "MCPCTL_TOKEN_FILE", global = true)]
    token_file: Option<std::path::PathBuf>,
    /// Print JSON for scripts instead of tables (the same as `-o json`).
    #[arg(long, global = true)]
    json: bool,
    /// Output format: `table` (the default), `json`, or `wide` (tables with nothing cut short).
    #[arg(short = 'o', long = "output", value_enum, global = true)]
    output: Option<Format>,
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
    /// Tables with nothing cut short.
    Wide,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Upstream servers: list, show, add, update, remove, drain, enable, replicas.
    #[command(subcommand)]
    Servers(Servers),
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
        tool: String,
    },
    /// Call a tool through the proxy, as an MCP client.
    Call {
        /// The exposed tool name.
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
    /// The fleet this proxy is a member of (`[cluster]`): members, leader, health.
    #[command(subcommand)]
    Cluster(cluster::Cluster),
    /// Re-read the proxy's configuration file (sessions are kept).
    Reload,
    /// The proxy's version.
    Version,
    /// Print a shell completion script.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand, Debug)]
enum Servers {
    /// List servers.
    Ls,
    /// Show one server with its tools.
    Show {
        /// Server name.
        name: String,
    },
    /// Add a server (HTTP with --url, stdio with --command, or any fields with --spec).
    Add(AddArgs),
    /// Change the fields given of a server's description (same flags as add); the others
    /// stay. With --replace, the flags are the whole new description.
    Update {
        #[command(flatten)]
        fields: AddArgs,
        /// Replace the whole description instead of changing the fields given.
        #[arg(long)]
        replace: bool,
    },
    /// Remove a server: its tools go at once, calls in flight finish.
    Rm {
        /// Server name.
        name: String,
    },
    /// Hide a server's tools (no new calls) without removing it; with --replica, take one
    /// replica out of balancing (its bound sessions finish there).
    Drain {
        /// Server name.
        name: String,
        /// Drain only this replica (index as in `servers replicas NAME`).
        #[arg(long)]
        replica: Option<usize>,
    },
    /// Offer a drained server's tools again; with --replica, let one replica take new work.
    Enable {
        /// Server name.
        name: String,
        /// Enable only this replica (index as in `servers replicas NAME`).
        #[arg(long)]
        replica: Option<usize>,
    },
    /// A server's replicas: state, health, load, latency and errors (summed over shards).
    Replicas {
        /// Server name.
        name: String,
        /// Show only this replica.
        index: Option<usize>,
    },
}

#[derive(clap::Args, Debug)]
struct AddArgs {
    /// Server name (letters, digits, `-`, `_`).
    name: String,
    /// Streamable HTTP endpoint, e.g. http://127.0.0.1:3001/mcp.
    #[arg(long)]
    url: Option<String>,
    /// Program to run as a stdio server.
    #[arg(long)]
    command: Option<String>,
    /// Argument of --command (repeat for several).
    #[arg(long = "arg", allow_hyphen_values = true)]
    args: Vec<String>,
    /// Exposed-name prefix (default: the name; "" for none).
    #[arg(long)]
    prefix: Option<String>,
    /// Request timeout, e.g. 30s.
    #[arg(long)]
    timeout: Option<String>,
    /// HTTP header sent upstream, NAME=VALUE (repeatable).
    #[arg(long = "header")]
    headers: Vec<String>,
    /// Environment variable of --command, NAME=VALUE (repeatable).
    #[arg(long = "env")]
    env: Vec<String>,
    /// Any `[[servers]]` fields as a JSON object; flags above override them.
    #[arg(long)]
    spec: Option<String>,
}

#[derive(Subcommand, Debug)]
enum Tools {
    /// List every exposed tool.
    Ls,
    /// Tools whose name or description contains TEXT (case-insensitive).
    Search {
        /// Text to look for.
        text: String,
    },
}

fn main() {
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

/// The token in `path` (surrounding whitespace removed), when a file is named.
fn token_from_file(path: Option<&std::path::Path>) -> Result<Option<String>, Failure> {
    let Some(path) = path else {
        return Ok(None);
    };
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text.trim().to_string()).filter(|t| !t.is_empty())),
        Err(e) => Err(Failure {
            code: Code::Usage,
            message: format!("cannot read the admin token file {}: {e}", path.display()),
        }),
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    if let Command::Completions { shell } = cli.command {
        let mut cmd = Cli::command();
        clap_complete::generate(shell, &mut cmd, "mcpctl", &mut std::io::stdout());
        return Ok(());
    }
    let admin = Admin {
        url: Url::parse(&cli.admin_url)?,
        token: match cli.token.clone().filter(|t| !t.is_empty()) {
            Some(token) => Some(token),
            None => token_from_file(cli.token_file.as_deref())?,
        },
    };
    let out = Out {
        json: cli.json || cli.output == Some(Format::Json),
        wide: cli.output == Some(Format::Wide),
    };
    match cli.command {
        Command::Servers(s) => servers(&admin, &out, s),
        Command::Workflows(w) => workflows::run(&admin, &out, w),
        Command::Cluster(c) => cluster::run(&admin, &out, c),
        Command::Tools(Tools::Ls) => tools(&admin, &out, None),
        Command::Tools(Tools::Search { text }) => tools(&admin, &out, Some(&text)),
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
                    let (q, own) = (&s["request"], &s["overhead"]);
                    t.row(vec![
                        name.clone(),
                        cell(s.get("requests")),
                        cell(s.get("errors")),
                        ms(q.get("p50")),
                        ms(q.get("p90")),
                        ms(q.get("p99")),
                        ms(q.get("max")),
                        cell(own.get("p50")),
                        cell(own.get("p99")),
                    ]);
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
        Command::Shards => {
            let v = admin.get("shards")?;
            out.print(&v, || {
                let mut t = Table::new(&["SHARD", "SESSIONS", "REQUESTS", "OWNS"]);
                for s in v["shards"].as_array().into_iter().flatten() {
                    let owns: Vec<&str> = s["owns"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .collect();
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
                    let names: Vec<&str> = c[k]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .collect();
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
        Command::Completions { .. } => Ok(()),
    }
}

/// Where output goes: a table for people, or JSON for scripts.
struct Out {
    json: bool,
    /// Tables keep long cells whole.
    wide: bool,
}

impl Out {
    fn print(&self, value: &Value, table: impl FnOnce() -> String) {
        let text = if self.json {
            format!("{value}\n")
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

fn servers(admin: &Admin, out: &Out, cmd: Servers) -> Result<(), Failure> {
    let server_row = |s: &Value| {
        vec![
            cell(s.get("name")),
            cell(s.get("status")),
            cell(s.get("state")),
            cell(s.get("transport")),
            s.get("url")
                .or(s.get("command"))
                .map_or("-".into(), |v| cell(Some(v))),
            cell(s.get("tools")),
            cell(s.get("origin")),
        ]
    };
    let header = [
        "NAME",
        "STATUS",
        "STATE",
        "TRANSPORT",
        "TARGET",
        "TOOLS",
        "ORIGIN",
    ];
    let one = |v: &Value, verb: &str| {
        out.print(v, || {
            let mut t = Table::new(&header);
            t.row(server_row(v));
            format!("{verb}\n{}", t.render())
        })
    };
    match cmd {
        Servers::Ls => {
            let v = admin.get("servers")?;
            out.print(&v, || {
                let mut t = Table::new(&header);
                for s in v["servers"].as_array().into_iter().flatten() {
                    t.row(server_row(s));
                }
                t.render()
            });
        }
        Servers::Show { name } => {
            let v = admin.get(&format!("servers/{}", encode(&name)))?;
            out.print(&v, || {
                let mut t = Table::new(&header);
                t.row(server_row(&v));
                let mut text = t.render();
                if let Some(e) = v.get("error").and_then(Value::as_str) {
                    text.push_str(&format!("error: {e}\n"));
                }
                let mut tools = Table::new(&["TOOL", "ORIGINAL"]);
                for tool in v["tool_list"].as_array().into_iter().flatten() {
                    tools.row(vec![cell(tool.get("name")), cell(tool.get("original"))]);
                }
                text.push('\n');
                text.push_str(&tools.render());
                text
            });
        }
        Servers::Add(a) => {
            let spec = spec_of(&a)?;
            let v = admin.call("POST", "servers", Some(&spec))?;
            one(&v, &format!("added {}", a.name));
        }
        Servers::Update { fields, replace } => {
            let path = format!("servers/{}", encode(&fields.name));
            let v = if replace {
                admin.call("PUT", &path, Some(&spec_of(&fields)?))?
            } else {
                let changes = fields_of(&fields)?;
                if changes.as_object().is_some_and(|m| m.len() <= 1) {
                    return Err(Failure::usage(format!(
                        "nothing to change: name a field of {}, e.g. --timeout 60s",
                        fields.name
                    )));
                }
                admin.call("PATCH", &path, Some(&changes))?
            };
            one(&v, &format!("updated {}", fields.name));
        }
        Servers::Rm { name } => {
            let v = admin.call("DELETE", &format!("servers/{}", encode(&name)), None)?;
            one(&v, &format!("removed {name}"));
        }
        Servers::Drain {
            name,
            replica: Some(r),
        } => {
            let (v, text) = replicas::set_drain(admin, &encode(&name), r, true)?;
            out.print(&v, || text);
        }
        Servers::Enable {
            name,
            replica: Some(r),
        } => {
            let (v, text) = replicas::set_drain(admin, &encode(&name), r, false)?;
            out.print(&v, || text);
        }
        Servers::Replicas { name, index } => {
            let (v, text) = replicas::show(admin, &encode(&name), index)?;
            out.print(&v, || text);
        }
        Servers::Drain {
            name,
            replica: None,
        } => {
            let v = admin.call("POST", &format!("servers/{}/drain", encode(&name)), None)?;
            one(&v, &format!("draining {name}"));
        }
        Servers::Enable {
            name,
            replica: None,
        } => {
            let v = admin.call("POST", &format!("servers/{}/enable", encode(&name)), None)?;
            one(&v, &format!("enabled {name}"));
        }
    }
    Ok(())
}

/// The JSON description of `add`/`update --replace` from the flags: it must name a target.
fn spec_of(a: &AddArgs) -> Result<Value, Failure> {
    let spec = fields_of(a)?;
    if spec.get("url").is_none() && spec.get("command").is_none() && spec.get("replicas").is_none()
    {
        return Err(Failure::usage(format!(
            "server {} needs --url http://host:port/mcp or --command PROGRAM",
            a.name
        )));
    }
    Ok(spec)
}

/// The fields the flags (and --spec) give, with the name.
fn fields_of(a: &AddArgs) -> Result<Value, Failure> {
    let mut spec: Map<String, Value> = match &a.spec {
        Some(text) => match serde_json::from_str(text) {
            Ok(Value::Object(m)) => m,
            Ok(_) => return Err(Failure::usage("--spec must be a JSON object")),
            Err(e) => return Err(Failure::usage(format!("--spec is not JSON: {e}"))),
        },
        None => Map::new(),
    };
    spec.insert("name".into(), a.name.clone().into());
    let mut set = |k: &str, v: &Option<String>| {
        if let Some(v) = v {
            spec.insert(k.into(), v.clone().into());
        }
    };
    set("url", &a.url);
    set("command", &a.command);
    set("prefix", &a.prefix);
    set("timeout", &a.timeout);
    if !a.args.is_empty() {
        spec.insert("args".into(), a.args.clone().into());
    }
    for (key, flag, list) in [("headers", "header", &a.headers), ("env", "env", &a.env)] {
        if list.is_empty() {
            continue;
        }
        let mut m = Map::new();
        for kv in list {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| Failure::usage(format!("--{flag} {kv}: write NAME=VALUE")))?;
            m.insert(k.to_owned(), v.into());
        }
        spec.insert(key.into(), Value::Object(m));
    }
    Ok(Value::Object(spec))
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
    answer["not_applied_until_restart"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

fn tools(admin: &Admin, out: &Out, search: Option<&str>) -> Result<(), Failure> {
    let path = match search {
        Some(q) => format!("tools?q={}", encode(q)),
        None => "tools".to_owned(),
    };
    let v = admin.get(&path)?;
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
        let Command::Servers(Servers::Add(a)) = cli.command else {
            panic!("not add");
        };
        let spec = spec_of(&a).expect("spec");
        assert_eq!(
            spec,
            json!({"name": "x", "url": "http://h:1/mcp", "headers": {"A": "b"}})
        );
        let cli = Cli::try_parse_from(["mcpctl", "servers", "add", "y"]).expect("parses");
        let Command::Servers(Servers::Add(a)) = cli.command else {
            panic!("not add");
        };
        assert_eq!(spec_of(&a).expect_err("no target").code, Code::Usage);
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
