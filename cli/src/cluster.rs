//! `mcpctl cluster`: the fleet this proxy is a member of, through the admin API.

use clap::Subcommand;
use serde_json::Value;

use crate::admin::Admin;
use crate::fail::Failure;
use crate::table::{cell, Table};
use crate::Out;

/// The cluster subcommands.
#[derive(Subcommand, Debug)]
pub enum Cluster {
    /// List the members: name, address, shards, version, health, which one leads.
    Ls,
}

/// Runs `mcpctl cluster ...`.
pub fn run(admin: &Admin, out: &Out, command: Cluster) -> Result<(), Failure> {
    match command {
        Cluster::Ls => {
            let v = admin.get("cluster")?;
            out.print(&v, || {
                let mut t =
                    Table::new(&["NAME", "ADVERTISE", "SHARDS", "VERSION", "HEALTH", "LEADER"]);
                for m in v["members"].as_array().into_iter().flatten() {
                    let leader = if m["leader"].as_bool() == Some(true) {
                        "*"
                    } else {
                        ""
                    };
                    t.row(vec![
                        cell(m.get("name")),
                        cell(m.get("advertise")),
                        cell(m.get("shards")),
                        cell(m.get("version")),
                        cell(m.get("health")),
                        leader.to_owned(),
                    ]);
                }
                let mut text = t.render();
                if let Some(e) = v.get("etcd_error").and_then(Value::as_str) {
                    text.push_str(&format!("etcd: {e}\n"));
                }
                if let Some(e) = v.get("registry_error").and_then(Value::as_str) {
                    text.push_str(&format!("registry: {e}\n"));
                }
                if v["detached"].as_bool() == Some(true) {
                    text.push_str(
                        "this member's lease has lapsed: it is not listed until etcd answers\n",
                    );
                }
                text
            });
            Ok(())
        }
    }
}
