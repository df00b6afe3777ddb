//! `GET /api/v1/cluster`: the fleet as this member sees it (members, the leader, each one's
//! health, this member's standing with etcd, what it ran of the leader's tasks).

use serde_json::json;

use super::api::{answer as json_answer, error};
use super::Response;

/// The answer to `GET /api/v1/cluster`.
pub fn answer() -> Response {
    let Some(cluster) = crate::cluster::get() else {
        return error(
            404,
            "not_clustered",
            "this proxy runs alone: add a [cluster] table naming etcd (or pass --cluster-etcd URL) \
             to run it as a member of a fleet; see docs/architecture.md, \"A fleet on etcd\"",
        );
    };
    let view = cluster.view();
    json_answer(
        200,
        json!({
            "name": cluster.identity.name,
            "advertise": cluster.identity.advertise,
            "prefix": cluster.config.prefix,
            "etcd": cluster.config.etcd,
            "etcd_error": view.etcd_error,
            "registry_error": view.registry_error,
            "detached": view.detached,
            "leader": view.leader,
            "is_leader": view.is_leader,
            "members": view.members,
            "leader_tasks": cluster.leader_tasks(),
        }),
    )
}
