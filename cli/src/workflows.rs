//! `mcpctl workflows`: saved workflows through the admin API, and running one through the
//! proxy's `/mcp` endpoint (`proxy__orchestrate_workflow`), as an MCP client.

use std::time::Duration;

use clap::Subcommand;
use serde_json::{json, Value};

use crate::admin::Admin;
use crate::fail::{Code, Failure};
use crate::http::Url;
use crate::table::{cell, Table};
use crate::{mcp, Out};

/// The saved-workflow subcommands.
#[derive(Subcommand, Debug)]
pub enum Workflows {
    /// List saved workflows.
    Ls,
    /// Print one saved workflow.
    Show {
        /// Workflow name.
        name: String,
    },
    /// Save (or replace) a workflow from a JSON file ({"steps":[...]}); `-` reads stdin.
    Put {
        /// Workflow name.
        name: String,
        /// The workflow's JSON.
        #[arg(long)]
        file: String,
    },
    /// Remove a saved workflow.
    Rm {
        /// Workflow name.
        name: String,
    },
    /// Run a saved workflow through the proxy and print its report.
    Run {
        /// Workflow name.
        name: String,
        /// Values for {{inputs.NAME}}, as a JSON object.
        #[arg(long, default_value = "{}")]
        inputs: String,
        /// The proxy's MCP endpoint (printed at start as `mcp-proxy ready: ...`).
        #[arg(
            long,
            env = "MCPCTL_MCP_URL",
            default_value = "http://127.0.0.1:8080/mcp"
        )]
        mcp_url: String,
        /// Seconds to wait for the run's answer.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
}

fn path(name: &str) -> String {
    // Names are letters, digits, '_', '-', '.': nothing to escape; anything else the proxy
    // refuses with a message, so it is passed through percent-encoded rather than mangled.
    let mut out = String::from("workflows/");
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Runs one `workflows` subcommand.
pub fn run(admin: &Admin, out: &Out, cmd: Workflows) -> Result<(), Failure> {
    match cmd {
        Workflows::Ls => {
            let v = admin.get("workflows")?;
            out.print(&v, || {
                let mut t = Table::new(&["NAME", "STEPS", "DESCRIPTION"]);
                for w in v["workflows"].as_array().into_iter().flatten() {
                    t.row(vec![
                        cell(w.get("name")),
                        cell(w.get("steps")),
                        cell(w.get("description")),
                    ]);
                }
                t.render()
            });
        }
        Workflows::Show { name } => {
            let v = admin.get(&path(&name))?;
            out.print(&v, || {
                format!(
                    "{}\n",
                    serde_json::to_string_pretty(&v["workflow"]).unwrap_or_default()
                )
            });
        }
        Workflows::Put { name, file } => {
            let text = if file == "-" {
                std::io::read_to_string(std::io::stdin())
            } else {
                std::fs::read_to_string(&file)
            }
            .map_err(|e| Failure::usage(format!("cannot read {file}: {e}")))?;
            let workflow: Value = serde_json::from_str(&text).map_err(|e| {
                Failure::usage(format!(
                    "{file} is not JSON ({e}); a workflow is {{\"steps\":[{{\"id\":\"a\",\"tool\":\"server__tool\",\"arguments\":{{}}}}]}}"
                ))
            })?;
            let v = admin.call("PUT", &path(&name), Some(&workflow))?;
            out.print(&v, || {
                let verb = if v["created"] == true {
                    "saved"
                } else {
                    "replaced"
                };
                format!("{verb} workflow {name}\n")
            });
        }
        Workflows::Rm { name } => {
            let v = admin.call("DELETE", &path(&name), None)?;
            out.print(&v, || format!("removed workflow {name}\n"));
        }
        Workflows::Run {
            name,
            inputs,
            mcp_url,
            timeout,
        } => {
            let inputs: Value = serde_json::from_str(&inputs).map_err(|e| {
                Failure::usage(format!(
                    "--inputs is not JSON ({e}); write e.g. --inputs '{{\"topic\":\"x\"}}'"
                ))
            })?;
            if !inputs.is_object() {
                return Err(Failure::usage(
                    "--inputs must be a JSON object, e.g. '{\"topic\":\"x\"}'",
                ));
            }
            let url = Url::parse(&mcp_url)?;
            let result = mcp::call_tool(
                &url,
                "proxy__orchestrate_workflow",
                json!({"name": name, "inputs": inputs}),
                Duration::from_secs(timeout),
            )
            .map_err(|mut f| {
                // An unknown workflow is a name not found, like an unknown server or tool.
                if f.message.contains("no saved workflow") {
                    f.code = Code::NotFound;
                    f.message.push_str("; `mcpctl workflows ls` lists them");
                }
                f
            })?;
            let report = result
                .get("structuredContent")
                .cloned()
                .unwrap_or_else(|| result.clone());
            out.print(&report, || {
                let mut t = Table::new(&["STEP", "TOOL", "STATUS", "MS", "ERROR"]);
                for s in report["steps"].as_array().into_iter().flatten() {
                    t.row(vec![
                        cell(s.get("id")),
                        cell(s.get("tool")),
                        cell(s.get("status")),
                        cell(s.get("duration_ms")),
                        cell(s.get("error")),
                    ]);
                }
                format!(
                    "run {} of {name}: {}\n{}",
                    cell(report.get("run_id")),
                    cell(report.get("status")),
                    t.render()
                )
            });
            if result["isError"] == true {
                return Err(Failure::error(format!(
                    "workflow {name} failed: {}",
                    cell(report.get("status"))
                )));
            }
        }
    }
    Ok(())
}
