//! Nova (`/compute/v2.1`): servers (created in `BUILD`, `ACTIVE` once their machine is up, or
//! `ERROR` with a fault; reboot, stop and start reaching the machine), flavors, availability
//! zones, key pairs (generated or imported; `type` only from microversion 2.2), volume
//! attachments; microversions read from `OpenStack-API-Version` and echoed.

use std::collections::BTreeMap;
use std::time::SystemTime;

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use nodeup::driver::NodeDriver;
use nodeup::model::{CreateNode, Node, NodeAuth};
use serde_json::{json, Value};

use super::{answer, fault_body, lock, page, time_text, uuid, Call, Data, Port, Shared};

/// The microversions the fake's Nova speaks.
const MIN_VERSION: (u32, u32) = (2, 1);
const MAX_VERSION: (u32, u32) = (2, 96);

/// The one availability zone.
pub const ZONE: &str = "nova";

/// The message of a build no host could take.
const NO_VALID_HOST: &str = "No valid host was found. There are not enough hosts available.";

/// The flavors: (id, name, vCPUs, RAM in MiB, disk in GB), as OVH names its own.
pub(super) const FLAVORS: [(&str, &str, u32, u64, u64); 4] = [
    ("0d4a8e2c-7b1f-4c2e-9a55-2f1d3c4b5a61", "s1-2", 1, 2000, 10),
    ("1e5b9f3d-8c20-4d3f-8b66-3a2e4d5c6b72", "d2-2", 1, 2048, 25),
    ("2f6ca04e-9d31-4e40-9c77-4b3f5e6d7c83", "b3-8", 2, 8192, 50),
    ("3a7db15f-ae42-4f51-8d88-5c406f7e8d94", "c3-4", 2, 4096, 50),
];

/// A server.
#[derive(Debug, Clone)]
pub(crate) struct Server {
    pub id: String,
    pub name: String,
    pub status: String,
    pub created: SystemTime,
    pub flavor: String,
    pub image: String,
    pub key_name: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub networks: Vec<String>,
    pub fault: Option<Value>,
    pub node: Option<Node>,
    pub volumes: Vec<String>,
}

/// A key pair.
#[derive(Debug, Clone)]
pub(crate) struct Keypair {
    pub name: String,
    pub public_key: String,
    pub fingerprint: String,
    pub kind: String,
    pub created: SystemTime,
}

/// The microversion a request asks for, or the refusal of one out of range.
fn microversion(headers: &HeaderMap) -> Result<(u32, u32), Response> {
    let asked = headers
        .get("openstack-api-version")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().strip_prefix("compute "))
        .or_else(|| {
            headers
                .get("x-openstack-nova-api-version")
                .and_then(|v| v.to_str().ok())
        })
        .map(str::trim);
    let Some(asked) = asked else {
        return Ok(MIN_VERSION);
    };
    if asked == "latest" {
        return Ok(MAX_VERSION);
    }
    let parsed = asked
        .split_once('.')
        .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)));
    match parsed {
        Some(v) if (MIN_VERSION..=MAX_VERSION).contains(&v) => Ok(v),
        _ => Err(fault_body(
            StatusCode::NOT_ACCEPTABLE,
            "computeFault",
            &format!(
                "Version {asked} is not supported by the API. Minimum is {}.{} and maximum is \
                 {}.{}.",
                MIN_VERSION.0, MIN_VERSION.1, MAX_VERSION.0, MAX_VERSION.1
            ),
        )),
    }
}

pub(super) async fn route(fake: &Shared, call: &Call<'_>) -> Response {
    let version = match microversion(call.headers) {
        Ok(v) => v,
        Err(refused) => return refused,
    };
    let mut response = dispatch(fake, call, version).await;
    let text = format!("{}.{}", version.0, version.1);
    let headers = response.headers_mut();
    if let Ok(v) = format!("compute {text}").parse() {
        headers.insert("openstack-api-version", v);
    }
    if let Ok(v) = text.parse() {
        headers.insert("x-openstack-nova-api-version", v);
    }
    if let Ok(v) = "OpenStack-API-Version, X-OpenStack-Nova-API-Version".parse() {
        headers.insert("vary", v);
    }
    response
}

async fn dispatch(fake: &Shared, call: &Call<'_>, version: (u32, u32)) -> Response {
    let parts: Vec<&str> = call.path.trim_matches('/').split('/').collect();
    match (call.method.as_str(), parts.as_slice()) {
        ("GET", ["servers"]) => list_servers(fake, call, false),
        ("GET", ["servers", "detail"]) => list_servers(fake, call, true),
        ("POST", ["servers"]) => create_server(fake, call),
        ("GET", ["servers", id]) => show_server(fake, id),
        ("DELETE", ["servers", id]) => delete_server(fake, id).await,
        ("POST", ["servers", id, "action"]) => action(fake, id, call).await,
        ("GET", ["servers", id, "os-volume_attachments"]) => attachments(fake, id),
        ("POST", ["servers", id, "os-volume_attachments"]) => attach(fake, id, call),
        ("DELETE", ["servers", id, "os-volume_attachments", volume]) => detach(fake, id, volume),
        ("GET", ["flavors"]) => flavors(fake, false),
        ("GET", ["flavors", "detail"]) => flavors(fake, true),
        ("GET", ["flavors", id]) => flavor(fake, id),
        ("GET", ["flavors", id, "os-extra_specs"]) => match FLAVORS.iter().any(|f| f.0 == *id) {
            true => answer(StatusCode::OK, json!({"extra_specs": {}})),
            false => flavor(fake, id),
        },
        ("GET", ["os-availability-zone"] | ["os-availability-zone", "detail"]) => answer(
            StatusCode::OK,
            json!({"availabilityZoneInfo": [{"zoneName": ZONE, "zoneState": {"available": true},
                                             "hosts": null}]}),
        ),
        ("GET", ["os-keypairs"]) => list_keypairs(fake, version),
        ("POST", ["os-keypairs"]) => create_keypair(fake, call, version),
        ("GET", ["os-keypairs", name]) => show_keypair(fake, name),
        ("DELETE", ["os-keypairs", name]) => delete_keypair(fake, name, version),
        _ => super::not_found(),
    }
}

fn link(fake: &Shared, kind: &str, id: &str) -> Value {
    json!([
        {"rel": "self", "href": format!("{}/compute/v2.1/{kind}/{id}", fake.base())},
        {"rel": "bookmark", "href": format!("{}/compute/{kind}/{id}", fake.base())},
    ])
}

/// The addresses of a server by network name: its ports' fixed addresses and the floating IPs
/// on them.
fn addresses(data: &Data, server: &Server) -> Value {
    let mut by_network: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for port in data.ports.iter().filter(|p| p.device_id == server.id) {
        let Some(network) = data.networks.iter().find(|n| n.id == port.network_id) else {
            continue;
        };
        let list = by_network.entry(network.name.clone()).or_default();
        list.push(
            json!({"version": 4, "addr": port.ip, "OS-EXT-IPS:type": "fixed",
                         "OS-EXT-IPS-MAC:mac_addr": port.mac}),
        );
        for ip in data
            .floating_ips
            .iter()
            .filter(|f| f.port_id.as_deref() == Some(&port.id))
        {
            list.push(
                json!({"version": 4, "addr": ip.address, "OS-EXT-IPS:type": "floating",
                             "OS-EXT-IPS-MAC:mac_addr": port.mac}),
            );
        }
    }
    json!(by_network)
}

fn server_json(fake: &Shared, data: &Data, server: &Server, detail: bool) -> Value {
    let links = link(fake, "servers", &server.id);
    if !detail {
        return json!({"id": server.id, "name": server.name, "links": links});
    }
    let (vm_state, power_state, task_state) = match server.status.as_str() {
        "ACTIVE" => ("active", 1, Value::Null),
        "BUILD" => ("building", 0, json!("spawning")),
        "REBOOT" => ("active", 1, json!("rebooting")),
        "HARD_REBOOT" => ("active", 1, json!("rebooting_hard")),
        "SHUTOFF" => ("stopped", 4, Value::Null),
        _ => ("error", 0, Value::Null),
    };
    let mut body = json!({
        "id": server.id, "name": server.name, "status": server.status,
        "tenant_id": fake.account.project_id, "user_id": fake.account.user_id,
        "metadata": server.metadata, "hostId": format!("{:056x}", server.id.len() as u128 * 7919),
        "image": {"id": server.image, "links": link(fake, "images", &server.image)},
        "flavor": {"id": server.flavor, "links": link(fake, "flavors", &server.flavor)},
        "created": time_text(server.created), "updated": time_text(SystemTime::now()),
        "addresses": addresses(data, server), "accessIPv4": "", "accessIPv6": "",
        "links": links, "OS-DCF:diskConfig": "MANUAL",
        "progress": if server.status == "BUILD" { 0 } else { 100 },
        "OS-EXT-AZ:availability_zone": ZONE, "config_drive": "",
        "key_name": server.key_name,
        "OS-SRV-USG:launched_at": (server.status != "BUILD").then(|| time_text(server.created)),
        "OS-SRV-USG:terminated_at": null,
        "security_groups": [{"name": "default"}],
        "OS-EXT-STS:task_state": task_state, "OS-EXT-STS:vm_state": vm_state,
        "OS-EXT-STS:power_state": power_state,
        "os-extended-volumes:volumes_attached":
            server.volumes.iter().map(|v| json!({"id": v})).collect::<Vec<_>>(),
    });
    if let Some(fault) = &server.fault {
        body["fault"] = fault.clone();
    }
    body
}

/// Nova's `name` filter is a regular expression; the fake knows the anchored, escaped exact
/// match clients send (`^web\-1$`) and plain substrings.
fn name_matches(pattern: &str, name: &str) -> bool {
    let anchored = pattern.starts_with('^') && pattern.ends_with('$') && !pattern.ends_with("\\$");
    let inner = if anchored {
        &pattern[1..pattern.len() - 1]
    } else {
        pattern
    };
    let mut plain = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => plain.extend(chars.next()),
            c => plain.push(c),
        }
    }
    if anchored {
        plain == name
    } else {
        name.contains(&plain)
    }
}

fn list_servers(fake: &Shared, call: &Call<'_>, detail: bool) -> Response {
    let data = lock(&fake.data);
    let chosen: Vec<Server> = data
        .servers
        .iter()
        .filter(|s| call.param("name").is_none_or(|p| name_matches(p, &s.name)))
        .filter(|s| call.param("status").is_none_or(|st| st == s.status))
        .cloned()
        .collect();
    let (taken, next) = match page(&chosen, |s| s.id.as_str(), call) {
        Ok(p) => p,
        Err(refused) => return refused,
    };
    let servers: Vec<Value> = taken
        .iter()
        .map(|s| server_json(fake, &data, s, detail))
        .collect();
    let mut body = json!({ "servers": servers });
    if let Some(query) = next {
        let path = if detail { "servers/detail" } else { "servers" };
        body["servers_links"] = json!([{"rel": "next", "href": format!("{}/compute/v2.1/{path}?{query}", fake.base())}]);
    }
    answer(StatusCode::OK, body)
}

fn no_server(id: &str) -> Response {
    fault_body(
        StatusCode::NOT_FOUND,
        "itemNotFound",
        &format!("Instance {id} could not be found."),
    )
}

fn show_server(fake: &Shared, id: &str) -> Response {
    let data = lock(&fake.data);
    match data.servers.iter().find(|s| s.id == id) {
        Some(server) => answer(
            StatusCode::OK,
            json!({"server": server_json(fake, &data, server, true)}),
        ),
        None => no_server(id),
    }
}

fn bad(message: &str) -> Response {
    fault_body(StatusCode::BAD_REQUEST, "badRequest", message)
}

/// The image and flavor of a new server: both must exist, the image be active.
fn references(s: &Value) -> Result<(&str, &str), Response> {
    let image = s["imageRef"].as_str().unwrap_or_default();
    match super::services::IMAGES.iter().find(|i| i.0 == image) {
        None => return Err(bad("Can not find requested image")),
        Some(i) if i.2 != "active" => return Err(bad(&format!("Image {image} is not active."))),
        Some(_) => {}
    }
    let flavor = s["flavorRef"].as_str().unwrap_or_default();
    if !FLAVORS.iter().any(|f| f.0 == flavor) {
        return Err(bad(&format!("Flavor {flavor} could not be found.")));
    }
    Ok((image, flavor))
}

/// The networks of a new server: those given (each must exist), else the project's only one.
fn networks_of(data: &Data, s: &Value) -> Result<Vec<String>, Response> {
    let Some(list) = s["networks"].as_array() else {
        if data.networks.len() > 1 {
            return Err(fault_body(
                StatusCode::CONFLICT,
                "conflictingRequest",
                "Multiple possible networks found, use a Network ID to be more specific.",
            ));
        }
        return Ok(vec![data.networks[0].id.clone()]);
    };
    let mut ids = Vec::new();
    for n in list {
        let id = n["uuid"].as_str().unwrap_or_default();
        if !data.networks.iter().any(|net| net.id == id) {
            return Err(bad(&format!("Network {id} could not be found.")));
        }
        ids.push(id.to_string());
    }
    Ok(ids)
}

/// The public key of the named key pair, if one is named (it must exist).
fn key_of(data: &Data, key_name: Option<&str>) -> Result<Option<String>, Response> {
    match key_name {
        Some(k) => match data.keypairs.iter().find(|p| p.name == k) {
            Some(pair) => Ok(Some(pair.public_key.clone())),
            None => Err(bad("Invalid key_name provided.")),
        },
        None => Ok(None),
    }
}

/// The security groups (only `default` exists), the zone and the user data's encoding.
fn check_extras(s: &Value) -> Result<(), Response> {
    for group in s["security_groups"].as_array().into_iter().flatten() {
        let g = group["name"].as_str().unwrap_or_default();
        if g != "default" {
            return Err(bad(&format!(
                "Unable to find security_group with name or id '{g}'"
            )));
        }
    }
    if s["availability_zone"].as_str().is_some_and(|z| z != ZONE) {
        return Err(bad("The requested availability zone is not available"));
    }
    if let Some(data) = s["user_data"].as_str() {
        if base64::engine::general_purpose::STANDARD
            .decode(data)
            .is_err()
        {
            return Err(bad("User data needs to be valid base 64."));
        }
    }
    Ok(())
}

/// The metadata: string values, keys and values of 1 to 255 characters.
fn metadata_of(s: &Value) -> Result<BTreeMap<String, String>, Response> {
    let mut metadata = BTreeMap::new();
    for (k, v) in s["metadata"].as_object().into_iter().flatten() {
        let Some(v) = v.as_str() else {
            return Err(bad(&format!(
                "Invalid input for field/attribute metadata. Value: {v}. is not of type 'string'"
            )));
        };
        if k.is_empty() || k.len() > 255 || v.len() > 255 {
            return Err(bad("Invalid input for field/attribute metadata."));
        }
        metadata.insert(k.clone(), v.to_string());
    }
    Ok(metadata)
}

/// The project's quota of servers.
fn check_quota(fake: &Shared, data: &Data) -> Result<(), Response> {
    let Some(max) = lock(&fake.config).max_servers else {
        return Ok(());
    };
    let used = data.servers.len();
    if used < max {
        return Ok(());
    }
    Err(fault_body(
        StatusCode::FORBIDDEN,
        "forbidden",
        &format!(
            "Quota exceeded for instances: Requested 1, but already used {used} of {max} instances"
        ),
    ))
}

/// The checks of `POST /servers`, in Nova's order; the server to make (and its key pair's
/// public key), or the refusal.
fn admit(fake: &Shared, data: &Data, body: &Value) -> Result<(Server, Option<String>), Response> {
    let s = &body["server"];
    let name = s["name"].as_str().unwrap_or_default();
    if name.is_empty() || name.len() > 255 {
        return Err(bad(
            "Invalid input for field/attribute name. Value: None. 'name' is a \
                        required property",
        ));
    }
    let (image, flavor) = references(s)?;
    let networks = networks_of(data, s)?;
    let key_name = s["key_name"].as_str().map(String::from);
    let public_key = key_of(data, key_name.as_deref())?;
    check_extras(s)?;
    let metadata = metadata_of(s)?;
    check_quota(fake, data)?;
    let server = Server {
        id: uuid(),
        name: name.to_string(),
        status: "BUILD".into(),
        created: SystemTime::now(),
        flavor: flavor.to_string(),
        image: image.to_string(),
        key_name,
        metadata,
        networks,
        fault: None,
        node: None,
        volumes: Vec::new(),
    };
    Ok((server, public_key))
}

fn create_server(fake: &Shared, call: &Call<'_>) -> Response {
    let body = call.body.clone().unwrap_or_default();
    let mut data = lock(&fake.data);
    let (server, public_key) = match admit(fake, &data, &body) {
        Ok(admitted) => admitted,
        Err(refused) => return refused,
    };
    let fails = {
        let mut config = lock(&fake.config);
        let fails = config.failing_builds > 0;
        config.failing_builds = config.failing_builds.saturating_sub(1);
        fails
    };
    data.creates += 1;
    let id = server.id.clone();
    data.servers.push(server);
    drop(data);
    tokio::spawn(build(fake.clone(), id.clone(), public_key, fails));
    let admin_pass: String = format!("{:012x}", rand::random::<u64>() >> 16);
    answer(
        StatusCode::ACCEPTED,
        json!({"server": {"id": id, "links": link(fake, "servers", &id),
                          "OS-DCF:diskConfig": "MANUAL", "security_groups": [{"name": "default"}],
                          "adminPass": admin_pass}}),
    )
}

/// Builds a server: its machine, a port on each of its networks, then `ACTIVE` after the build
/// time; or `ERROR` with Nova's fault when the build is to fail.
async fn build(fake: Shared, id: String, public_key: Option<String>, fails: bool) {
    let build_time = lock(&fake.config).build_time;
    if fails {
        tokio::time::sleep(build_time).await;
        if let Some(s) = lock(&fake.data).servers.iter_mut().find(|s| s.id == id) {
            s.status = "ERROR".into();
            s.fault = Some(json!({"code": 500, "created": time_text(SystemTime::now()),
                                  "message": NO_VALID_HOST}));
        }
        return;
    }
    let made = fake
        .driver
        .create_node(&CreateNode {
            name: format!("openstack-{}", &id[..8]),
            image: Some("debian".into()),
            auth: public_key.map(NodeAuth::SshKey),
            ..Default::default()
        })
        .await;
    let node = match made {
        Ok(node) => node,
        Err(e) => {
            eprintln!("fake-openstack: creating server {id}'s machine: {e}");
            if let Some(s) = lock(&fake.data).servers.iter_mut().find(|s| s.id == id) {
                s.status = "ERROR".into();
                s.fault = Some(json!({"code": 500, "message": format!("Build failed: {e}")}));
            }
            return;
        }
    };
    if !plug(&fake, &id, &node) {
        // Deleted while it was being built.
        let _ = fake.driver.destroy_node(&node).await;
        return;
    }
    tokio::time::sleep(build_time).await;
    if let Some(s) = lock(&fake.data).servers.iter_mut().find(|s| s.id == id) {
        if s.status == "BUILD" {
            s.status = "ACTIVE".into();
        }
    }
}

/// Gives the server its machine and a port on each network; false when the server is gone.
fn plug(fake: &Shared, id: &str, node: &Node) -> bool {
    let mut data = lock(&fake.data);
    let Some(at) = data.servers.iter().position(|s| s.id == id) else {
        return false;
    };
    data.servers[at].node = Some(node.clone());
    let real = node
        .public_ips
        .first()
        .map(|ip| ip.to_string())
        .unwrap_or_default();
    for network_id in data.servers[at].networks.clone() {
        let external = data
            .networks
            .iter()
            .any(|n| n.id == network_id && n.external);
        let ip = if external {
            real.clone()
        } else {
            data.next_private += 1;
            format!("10.0.0.{}", data.next_private % 250 + 3)
        };
        let mac = format!(
            "fa:16:3e:{:02x}:{:02x}:{:02x}",
            rand::random::<u8>(),
            rand::random::<u8>(),
            rand::random::<u8>()
        );
        data.ports.push(Port {
            id: uuid(),
            network_id,
            device_id: id.to_string(),
            ip,
            mac,
        });
    }
    true
}

async fn delete_server(fake: &Shared, id: &str) -> Response {
    let node = {
        let mut data = lock(&fake.data);
        let Some(at) = data.servers.iter().position(|s| s.id == id) else {
            return no_server(id);
        };
        let server = data.servers.remove(at);
        let ports: Vec<String> = data
            .ports
            .iter()
            .filter(|p| p.device_id == id)
            .map(|p| p.id.clone())
            .collect();
        data.ports.retain(|p| p.device_id != id);
        for ip in data.floating_ips.iter_mut() {
            if ip.port_id.as_ref().is_some_and(|p| ports.contains(p)) {
                ip.port_id = None;
            }
        }
        for volume in data
            .volumes
            .iter_mut()
            .filter(|v| v.server.as_deref() == Some(id))
        {
            volume.server = None;
            volume.status = "available".into();
        }
        server.node
    };
    if let Some(node) = node {
        if let Err(e) = fake.driver.destroy_node(&node).await {
            eprintln!("fake-openstack: destroying server {id}'s machine: {e}");
        }
    }
    StatusCode::NO_CONTENT.into_response()
}

fn conflict(id: &str, action: &str, status: &str) -> Response {
    let vm_state = match status {
        "SHUTOFF" => "stopped",
        "BUILD" => "building",
        "ERROR" => "error",
        _ => "active",
    };
    fault_body(
        StatusCode::CONFLICT,
        "conflictingRequest",
        &format!("Cannot '{action}' instance {id} while it is in vm_state {vm_state}"),
    )
}

/// `POST /servers/{id}/action`: reboot (soft or hard), os-stop, os-start.
async fn action(fake: &Shared, id: &str, call: &Call<'_>) -> Response {
    let body = call.body.clone().unwrap_or_default();
    let Some((name, argument)) = body.as_object().and_then(|o| o.iter().next()) else {
        return bad("Malformed request body");
    };
    let (allowed, during, after): (&[&str], &str, &str) = match name.as_str() {
        "reboot" => match argument["type"].as_str() {
            Some("SOFT") => (&["ACTIVE"], "REBOOT", "ACTIVE"),
            Some("HARD") => (&["ACTIVE", "SHUTOFF", "ERROR"], "HARD_REBOOT", "ACTIVE"),
            _ => return bad("Invalid input for field/attribute type. Value must be SOFT or HARD"),
        },
        "os-stop" => (&["ACTIVE", "ERROR"], "ACTIVE", "SHUTOFF"),
        "os-start" => (&["SHUTOFF"], "SHUTOFF", "ACTIVE"),
        other => return bad(&format!("There is no such action: {other}")),
    };
    let node = {
        let mut data = lock(&fake.data);
        let Some(server) = data.servers.iter_mut().find(|s| s.id == id) else {
            return no_server(id);
        };
        if !allowed.contains(&server.status.as_str()) {
            return conflict(id, name, &server.status);
        }
        server.status = during.into();
        server.node.clone()
    };
    if let Some(node) = node {
        let done = match name.as_str() {
            "os-stop" => fake.driver.stop_node(&node).await,
            "os-start" => fake.driver.start_node(&node).await,
            _ => fake.driver.reboot_node(&node).await,
        };
        if let Err(e) = done {
            eprintln!("fake-openstack: {name} server {id}: {e}");
        }
    }
    if let Some(server) = lock(&fake.data).servers.iter_mut().find(|s| s.id == id) {
        server.status = after.into();
    }
    StatusCode::ACCEPTED.into_response()
}

fn attachment_json(server: &str, volume: &str, at: usize) -> Value {
    json!({"id": volume, "serverId": server, "volumeId": volume,
           "device": format!("/dev/vd{}", (b'b' + at as u8) as char)})
}

fn attachments(fake: &Shared, id: &str) -> Response {
    let data = lock(&fake.data);
    let Some(server) = data.servers.iter().find(|s| s.id == id) else {
        return no_server(id);
    };
    let list: Vec<Value> = server
        .volumes
        .iter()
        .enumerate()
        .map(|(at, v)| attachment_json(id, v, at))
        .collect();
    answer(StatusCode::OK, json!({ "volumeAttachments": list }))
}

fn attach(fake: &Shared, id: &str, call: &Call<'_>) -> Response {
    let volume = call
        .body
        .as_ref()
        .and_then(|b| b["volumeAttachment"]["volumeId"].as_str())
        .unwrap_or_default()
        .to_string();
    let mut data = lock(&fake.data);
    let Some(v) = data.volumes.iter_mut().find(|v| v.id == volume) else {
        return fault_body(
            StatusCode::NOT_FOUND,
            "itemNotFound",
            &format!("Volume {volume} could not be found."),
        );
    };
    if v.status != "available" {
        return bad(&format!(
            "Invalid volume: volume {volume} status must be available, but current status is: {}",
            v.status
        ));
    }
    v.status = "in-use".into();
    v.server = Some(id.to_string());
    let Some(server) = data.servers.iter_mut().find(|s| s.id == id) else {
        return no_server(id);
    };
    server.volumes.push(volume.clone());
    let at = server.volumes.len() - 1;
    answer(
        StatusCode::OK,
        json!({"volumeAttachment": attachment_json(id, &volume, at)}),
    )
}

fn detach(fake: &Shared, id: &str, volume: &str) -> Response {
    let mut data = lock(&fake.data);
    let Some(server) = data.servers.iter_mut().find(|s| s.id == id) else {
        return no_server(id);
    };
    if !server.volumes.iter().any(|v| v == volume) {
        return fault_body(
            StatusCode::NOT_FOUND,
            "itemNotFound",
            &format!("volume_id not found: {volume}"),
        );
    }
    server.volumes.retain(|v| v != volume);
    if let Some(v) = data.volumes.iter_mut().find(|v| v.id == volume) {
        v.status = "available".into();
        v.server = None;
    }
    StatusCode::ACCEPTED.into_response()
}

fn flavor_json(fake: &Shared, f: &(&str, &str, u32, u64, u64), detail: bool) -> Value {
    let (id, name, vcpus, ram, disk) = *f;
    let mut body = json!({"id": id, "name": name, "links": link(fake, "flavors", id)});
    if detail {
        for (key, value) in [
            ("vcpus", json!(vcpus)),
            ("ram", json!(ram)),
            ("disk", json!(disk)),
            ("swap", json!("")),
            ("OS-FLV-EXT-DATA:ephemeral", json!(0)),
            ("OS-FLV-DISABLED:disabled", json!(false)),
            ("os-flavor-access:is_public", json!(true)),
            ("rxtx_factor", json!(1.0)),
        ] {
            body[key] = value;
        }
    }
    body
}

fn flavors(fake: &Shared, detail: bool) -> Response {
    let list: Vec<Value> = FLAVORS
        .iter()
        .map(|f| flavor_json(fake, f, detail))
        .collect();
    answer(StatusCode::OK, json!({ "flavors": list }))
}

fn flavor(fake: &Shared, id: &str) -> Response {
    match FLAVORS.iter().find(|f| f.0 == id) {
        Some(f) => answer(
            StatusCode::OK,
            json!({"flavor": flavor_json(fake, f, true)}),
        ),
        None => fault_body(
            StatusCode::NOT_FOUND,
            "itemNotFound",
            &format!("Flavor {id} could not be found."),
        ),
    }
}

fn keypair_json(pair: &Keypair, version: (u32, u32)) -> Value {
    let mut body = json!({"name": pair.name, "public_key": pair.public_key,
                          "fingerprint": pair.fingerprint});
    if version >= (2, 2) {
        body["type"] = pair.kind.clone().into();
    }
    body
}

fn list_keypairs(fake: &Shared, version: (u32, u32)) -> Response {
    let data = lock(&fake.data);
    let list: Vec<Value> = data
        .keypairs
        .iter()
        .map(|k| json!({"keypair": keypair_json(k, version)}))
        .collect();
    answer(StatusCode::OK, json!({ "keypairs": list }))
}

fn no_keypair(name: &str) -> Response {
    fault_body(
        StatusCode::NOT_FOUND,
        "itemNotFound",
        &format!("Keypair {name} not found for user"),
    )
}

fn show_keypair(fake: &Shared, name: &str) -> Response {
    let data = lock(&fake.data);
    match data.keypairs.iter().find(|k| k.name == name) {
        Some(pair) => {
            let mut body = keypair_json(pair, (2, 2));
            body["user_id"] = fake.account.user_id.clone().into();
            body["created_at"] = time_text(pair.created).into();
            body["deleted"] = false.into();
            body["id"] = 1.into();
            answer(StatusCode::OK, json!({ "keypair": body }))
        }
        None => no_keypair(name),
    }
}

/// An OpenSSH public key's MD5 fingerprint, as Nova reports it (`aa:bb:...`).
fn fingerprint(public: &str) -> Option<String> {
    let key = russh::keys::PublicKey::from_openssh(public).ok()?;
    let blob = key.to_bytes().ok()?;
    let digest = <md5::Md5 as md5::Digest>::digest(&blob);
    Some(
        digest
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":"),
    )
}

fn create_keypair(fake: &Shared, call: &Call<'_>, version: (u32, u32)) -> Response {
    let body = call.body.clone().unwrap_or_default();
    let k = &body["keypair"];
    if k.get("type").is_some() && version < (2, 2) {
        return bad(
            "Invalid input for field/attribute keypair. Value: (request). Additional \
                    properties are not allowed ('type' was unexpected)",
        );
    }
    let name = k["name"].as_str().unwrap_or_default().to_string();
    if name.is_empty() || name.len() > 255 {
        return bad(
            "Keypair data is invalid: Keypair name must be string and between 1 and 255 \
                    characters long",
        );
    }
    let mut private_key = None;
    let public_key = match k["public_key"].as_str() {
        Some(public) => public.trim().to_string(),
        None => {
            let made =
                russh::keys::PrivateKey::random(&mut rand::rng(), russh::keys::Algorithm::Ed25519);
            let Ok(made) = made else {
                return bad("Keypair data is invalid: could not generate a key");
            };
            private_key = made
                .to_openssh(russh::keys::ssh_key::LineEnding::LF)
                .ok()
                .map(|p| p.to_string());
            made.public_key().to_openssh().unwrap_or_default()
        }
    };
    let Some(fingerprint) = fingerprint(&public_key) else {
        return bad("Keypair data is invalid: failed to generate fingerprint");
    };
    let mut data = lock(&fake.data);
    if data.keypairs.iter().any(|p| p.name == name) {
        return fault_body(
            StatusCode::CONFLICT,
            "conflictingRequest",
            &format!("Key pair '{name}' already exists."),
        );
    }
    let pair = Keypair {
        name,
        public_key,
        fingerprint,
        kind: k["type"].as_str().unwrap_or("ssh").to_string(),
        created: SystemTime::now(),
    };
    let mut body = keypair_json(&pair, version);
    body["user_id"] = fake.account.user_id.clone().into();
    if let Some(private) = private_key {
        body["private_key"] = private.into();
    }
    data.keypairs.push(pair);
    let status = if version >= (2, 2) {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    answer(status, json!({ "keypair": body }))
}

fn delete_keypair(fake: &Shared, name: &str, version: (u32, u32)) -> Response {
    let mut data = lock(&fake.data);
    let before = data.keypairs.len();
    data.keypairs.retain(|k| k.name != name);
    if data.keypairs.len() == before {
        return no_keypair(name);
    }
    if version >= (2, 2) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        StatusCode::ACCEPTED.into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_filters_match_as_nova_s_regular_expressions_would() {
        assert!(name_matches("^web\\-1$", "web-1"));
        assert!(!name_matches("^web\\-1$", "web-10"));
        assert!(name_matches("web", "my-web-1"));
    }

    #[test]
    fn microversions_out_of_range_are_refused() {
        let mut headers = HeaderMap::new();
        assert_eq!(microversion(&headers).unwrap(), (2, 1));
        headers.insert("openstack-api-version", "compute 2.2".parse().unwrap());
        assert_eq!(microversion(&headers).unwrap(), (2, 2));
        headers.insert("openstack-api-version", "compute 3.0".parse().unwrap());
        assert_eq!(
            microversion(&headers).unwrap_err().status(),
            StatusCode::NOT_ACCEPTABLE
        );
    }
}
