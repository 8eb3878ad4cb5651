//! Cinder (`/volume/v3/{project}`): volumes (created `creating`, then `available`; `in-use` while
//! a server has them; refused deletion while attached or with snapshots) and snapshots (of a
//! volume in use only with `force`), with Cinder's error bodies.

use std::time::SystemTime;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::{answer, fault_body, lock, page, time_text, uuid, Call, Data, Shared};
use super::{Snapshot, Volume};

/// Cinder's refusal to delete a volume that is not free.
const NOT_DELETABLE: &str = "Invalid volume: Volume status must be available or error or \
    error_restoring or error_extending or error_managing and must not be migrating, attached, \
    belong to a group, have snapshots, awaiting a transfer, or be disassociated from snapshots \
    after volume transfer.";

pub(super) fn route(fake: &Shared, call: &Call<'_>) -> Response {
    let parts: Vec<&str> = call.path.trim_matches('/').split('/').collect();
    let mut data = lock(&fake.data);
    match (call.method.as_str(), parts.as_slice()) {
        ("GET", ["volumes"] | ["volumes", "detail"]) => list_volumes(fake, &data, call),
        ("POST", ["volumes"]) => create_volume(fake, &mut data, call),
        ("GET", ["volumes", id]) => match data.volumes.iter().find(|v| v.id == *id) {
            Some(v) => answer(
                StatusCode::OK,
                json!({"volume": volume_json(fake, v, &v.status)}),
            ),
            None => no_volume(id),
        },
        ("DELETE", ["volumes", id]) => delete_volume(&mut data, id),
        ("GET", ["os-availability-zone"]) => answer(
            StatusCode::OK,
            json!({"availabilityZoneInfo": [{"zoneName": "nova",
                                             "zoneState": {"available": true}}]}),
        ),
        ("GET", ["snapshots"] | ["snapshots", "detail"]) => {
            let list: Vec<Value> = data
                .snapshots
                .iter()
                .map(|s| snapshot_json(s, "available"))
                .collect();
            answer(StatusCode::OK, json!({ "snapshots": list }))
        }
        ("POST", ["snapshots"]) => create_snapshot(&mut data, call),
        ("GET", ["snapshots", id]) => match data.snapshots.iter().find(|s| s.id == *id) {
            Some(s) => answer(
                StatusCode::OK,
                json!({"snapshot": snapshot_json(s, "available")}),
            ),
            None => no_snapshot(id),
        },
        ("DELETE", ["snapshots", id]) => {
            let before = data.snapshots.len();
            data.snapshots.retain(|s| s.id != *id);
            if data.snapshots.len() == before {
                return no_snapshot(id);
            }
            StatusCode::ACCEPTED.into_response()
        }
        _ => super::not_found(),
    }
}

fn volume_json(fake: &Shared, v: &Volume, status: &str) -> Value {
    let attachments: Vec<Value> = v
        .server
        .iter()
        .map(|s| {
            json!({"server_id": s, "attachment_id": uuid(), "volume_id": v.id, "id": v.id,
                   "device": "/dev/vdb", "host_name": null, "attached_at": time_text(v.created)})
        })
        .collect();
    json!({"id": v.id, "name": v.name, "size": v.size, "status": status,
           "attachments": attachments, "availability_zone": "nova", "bootable": "false",
           "created_at": time_text(v.created), "updated_at": time_text(v.created),
           "description": v.description, "volume_type": "__DEFAULT__", "snapshot_id": null,
           "source_volid": null, "metadata": {}, "multiattach": false, "encrypted": false,
           "user_id": fake.account.user_id, "replication_status": null,
           "consistencygroup_id": null,
           "links": [{"rel": "self",
                      "href": format!("{}/volume/v3/{}/volumes/{}", fake.base(),
                                      fake.account.project_id, v.id)}]})
}

fn snapshot_json(s: &Snapshot, status: &str) -> Value {
    json!({"id": s.id, "name": s.name, "volume_id": s.volume_id, "size": s.size,
           "status": status, "description": s.description, "created_at": time_text(s.created),
           "updated_at": time_text(s.created), "metadata": {}})
}

fn bad(message: &str) -> Response {
    fault_body(StatusCode::BAD_REQUEST, "badRequest", message)
}

fn no_volume(id: &str) -> Response {
    fault_body(
        StatusCode::NOT_FOUND,
        "itemNotFound",
        &format!("Volume {id} could not be found."),
    )
}

fn no_snapshot(id: &str) -> Response {
    fault_body(
        StatusCode::NOT_FOUND,
        "itemNotFound",
        &format!("Snapshot {id} could not be found."),
    )
}

fn list_volumes(fake: &Shared, data: &Data, call: &Call<'_>) -> Response {
    let list: Vec<Value> = data
        .volumes
        .iter()
        .map(|v| volume_json(fake, v, &v.status))
        .collect();
    let (taken, next) = match page(&list, |v| v["id"].as_str().unwrap_or_default(), call) {
        Ok(p) => p,
        Err(refused) => return refused,
    };
    let mut body = json!({ "volumes": taken });
    if let Some(query) = next {
        let href = format!(
            "{}/volume/v3/{}/{}?{query}",
            fake.base(),
            fake.account.project_id,
            call.path.trim_matches('/')
        );
        body["volumes_links"] = json!([{"rel": "next", "href": href}]);
    }
    answer(StatusCode::OK, body)
}

/// A volume is `available` at once; the answer to its create says `creating`, as Cinder's does.
fn create_volume(fake: &Shared, data: &mut Data, call: &Call<'_>) -> Response {
    let body = call.body.clone().unwrap_or_default();
    let v = &body["volume"];
    let Some(size) = v["size"].as_u64().filter(|s| *s >= 1) else {
        return bad("Invalid input received: 'size' parameter must be between 1 and 2147483647");
    };
    let volume = Volume {
        id: uuid(),
        name: v["name"].as_str().unwrap_or_default().to_string(),
        size,
        status: "available".into(),
        server: None,
        description: v["description"].as_str().map(String::from),
        created: SystemTime::now(),
    };
    let body = json!({"volume": volume_json(fake, &volume, "creating")});
    data.volumes.push(volume);
    answer(StatusCode::ACCEPTED, body)
}

fn delete_volume(data: &mut Data, id: &str) -> Response {
    let Some(v) = data.volumes.iter().find(|v| v.id == id) else {
        return no_volume(id);
    };
    let has_snapshots = data.snapshots.iter().any(|s| s.volume_id == v.id);
    if v.status != "available" || has_snapshots {
        return bad(NOT_DELETABLE);
    }
    data.volumes.retain(|v| v.id != id);
    StatusCode::ACCEPTED.into_response()
}

fn create_snapshot(data: &mut Data, call: &Call<'_>) -> Response {
    let body = call.body.clone().unwrap_or_default();
    let s = &body["snapshot"];
    let volume_id = s["volume_id"].as_str().unwrap_or_default();
    let Some(volume) = data.volumes.iter().find(|v| v.id == volume_id) else {
        return no_volume(volume_id);
    };
    let forced = s["force"].as_bool().unwrap_or(false);
    if volume.status != "available" && !forced {
        return bad(&format!(
            "Invalid volume: Volume {volume_id} status must be available, but current status \
             is: {}.",
            volume.status
        ));
    }
    let snapshot = Snapshot {
        id: uuid(),
        name: s["name"].as_str().map(String::from),
        volume_id: volume_id.to_string(),
        size: volume.size,
        description: s["description"].as_str().map(String::from),
        created: SystemTime::now(),
    };
    let body = json!({"snapshot": snapshot_json(&snapshot, "creating")});
    data.snapshots.push(snapshot);
    answer(StatusCode::ACCEPTED, body)
}
