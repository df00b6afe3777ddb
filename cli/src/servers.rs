//! `mcpctl servers ...`: list, show, add, update, remove, drain, enable, replicas.

use clap::Subcommand;
use clap_complete::engine::ArgValueCandidates;
use serde_json::{Map, Value};

use crate::admin::Admin;
use crate::fail::Failure;
use crate::table::{cell, Table};
use crate::{encode, names, replicas, Out};

#[derive(Subcommand, Debug)]
pub(crate) enum Servers {
    /// List servers.
    Ls,
    /// Show one server with its tools.
    Show {
        /// Server name.
        #[arg(add = ArgValueCandidates::new(names::servers))]
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
        #[arg(add = ArgValueCandidates::new(names::servers))]
        name: String,
    },
    /// Hide a server's tools (no new calls) without removing it; with --replica, take one
    /// replica out of balancing (its bound sessions finish there).
    Drain {
        /// Server name.
        #[arg(add = ArgValueCandidates::new(names::servers))]
        name: String,
        /// Drain only this replica (index as in `servers replicas NAME`).
        #[arg(long)]
        replica: Option<usize>,
    },
    /// Offer a drained server's tools again; with --replica, let one replica take new work.
    Enable {
        /// Server name.
        #[arg(add = ArgValueCandidates::new(names::servers))]
        name: String,
        /// Enable only this replica (index as in `servers replicas NAME`).
        #[arg(long)]
        replica: Option<usize>,
    },
    /// A server's replicas: state, health, load, latency and errors (summed over shards).
    Replicas {
        /// Server name.
        #[arg(add = ArgValueCandidates::new(names::servers))]
        name: String,
        /// Show only this replica.
        index: Option<usize>,
    },
}

#[derive(clap::Args, Debug)]
pub(crate) struct AddArgs {
    /// Server name (letters, digits, `-`, `_`).
    pub(crate) name: String,
    /// Streamable HTTP endpoint, e.g. http://127.0.0.1:3001/mcp.
    #[arg(long)]
    pub(crate) url: Option<String>,
    /// Program to run as a stdio server.
    #[arg(long)]
    pub(crate) command: Option<String>,
    /// Argument of --command (repeat for several).
    #[arg(long = "arg", allow_hyphen_values = true)]
    pub(crate) args: Vec<String>,
    /// Exposed-name prefix (default: the name; "" for none).
    #[arg(long)]
    pub(crate) prefix: Option<String>,
    /// Request timeout, e.g. 30s.
    #[arg(long)]
    pub(crate) timeout: Option<String>,
    /// Protocol era spoken to the server: auto (per client session), 2025-11-25 or 2026-07-28.
    #[arg(long)]
    pub(crate) era: Option<String>,
    /// HTTP header sent upstream, NAME=VALUE (repeatable).
    #[arg(long = "header")]
    pub(crate) headers: Vec<String>,
    /// Environment variable of --command, NAME=VALUE (repeatable).
    #[arg(long = "env")]
    pub(crate) env: Vec<String>,
    /// Any `[[servers]]` fields as a JSON object; flags above override them.
    #[arg(long)]
    pub(crate) spec: Option<String>,
}

pub(crate) fn run(admin: &Admin, out: &Out, cmd: Servers) -> Result<(), Failure> {
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
                if let Some(era) = v.get("era").and_then(Value::as_str) {
                    text.push_str(&format!("era: {era}\n"));
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
pub(crate) fn spec_of(a: &AddArgs) -> Result<Value, Failure> {
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
    set("era", &a.era);
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
