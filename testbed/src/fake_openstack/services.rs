//! The version documents of every service, Glance (`/image/v2`: images, listed newest first
//! with `next` links), Neutron (`/network/v2.0`: networks, subnets, ports, floating IPs, with
//! Neutron's attribute filters and `NeutronError` bodies).

use std::time::SystemTime;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::{answer, lock, page, time_text, uuid, Call, FloatingIp, Shared};

/// The images: (id, name, status, created_at, os_distro). "Debian 12" is there twice, as a
/// cloud keeps last month's build beside the new one; "Debian 13" is still being uploaded.
pub(super) const IMAGES: [(&str, &str, &str, &str, &str); 4] = [
    (
        "5b3c1d2e-0a4f-4b6c-8d7e-9f0a1b2c3d01",
        "Debian 12",
        "active",
        "2025-06-10T08:00:00Z",
        "debian",
    ),
    (
        "6c4d2e3f-1b50-4c7d-9e8f-0a1b2c3d4e02",
        "Debian 12",
        "active",
        "2025-11-03T08:00:00Z",
        "debian",
    ),
    (
        "7d5e3f40-2c61-4d8e-af90-1b2c3d4e5f03",
        "Ubuntu 24.04",
        "active",
        "2025-10-01T08:00:00Z",
        "ubuntu",
    ),
    (
        "8e6f4051-3d72-4e9f-b0a1-2c3d4e5f6a04",
        "Debian 13",
        "queued",
        "2026-11-30T08:00:00Z",
        "debian",
    ),
];

/// The version documents, answered without a token as the services do.
pub(super) fn versions(fake: &Shared, service: &str, rest: &str) -> Option<Response> {
    let base = &fake.base();
    let link = |path: &str| json!([{"rel": "self", "href": format!("{base}/{path}")}]);
    let (status, body) = match (service, rest) {
        ("compute", "") => (StatusCode::OK, json!({"versions": [nova_version(fake)]})),
        ("compute", "/v2.1") => (StatusCode::OK, json!({"version": nova_version(fake)})),
        ("image", "") | ("image", "/versions") => (
            StatusCode::MULTIPLE_CHOICES,
            json!({"versions": [
                {"id": "v2.16", "status": "CURRENT", "links": link("image/v2/")},
                {"id": "v2.0", "status": "SUPPORTED", "links": link("image/v2/")},
            ]}),
        ),
        ("network", "") => (
            StatusCode::OK,
            json!({"versions": [{"id": "v2.0", "status": "CURRENT",
                                 "links": link("network/v2.0/")}]}),
        ),
        ("volume", "") | ("volume", "/v3") => (
            if rest.is_empty() {
                StatusCode::MULTIPLE_CHOICES
            } else {
                StatusCode::OK
            },
            json!({"versions": [{"id": "v3.0", "status": "CURRENT", "version": "3.70",
                                 "min_version": "3.0", "updated": "2023-08-31T00:00:00Z",
                                 "links": link("volume/v3/"),
                                 "media-types": [{"base": "application/json",
                                                  "type": "application/vnd.openstack.volume+json;version=3"}]}]}),
        ),
        _ => return None,
    };
    Some(answer(status, body))
}

fn nova_version(fake: &Shared) -> Value {
    json!({"id": "v2.1", "status": "CURRENT", "version": "2.96", "min_version": "2.1",
           "updated": "2013-07-23T11:33:21Z",
           "links": [{"rel": "self", "href": format!("{}/compute/v2.1/", fake.base())}],
           "media-types": [{"base": "application/json",
                            "type": "application/vnd.openstack.compute+json;version=2.1"}]})
}

fn image_json(fake: &Shared, i: &(&str, &str, &str, &str, &str)) -> Value {
    let (id, name, status, created, distro) = *i;
    json!({
        "id": id, "name": name, "status": status, "visibility": "public", "protected": false,
        "os_hidden": false, "tags": [], "created_at": created, "updated_at": created,
        "min_disk": 0, "min_ram": 0, "disk_format": "qcow2", "container_format": "bare",
        "size": if status == "active" { json!(2_147_483_648u64) } else { Value::Null },
        "virtual_size": null, "checksum": null, "os_hash_algo": null, "os_hash_value": null,
        "owner": fake.account.project_id, "os_distro": distro,
        "file": format!("/v2/images/{id}/file"), "self": format!("/v2/images/{id}"),
        "schema": "/v2/schemas/image",
    })
}

/// Glance: `GET /images` (filters `name`, `status`, `visibility`; newest first; `limit`,
/// `marker`, `next`) and `GET /images/{id}`.
pub(super) fn glance(fake: &Shared, call: &Call<'_>) -> Response {
    let parts: Vec<&str> = call.path.trim_matches('/').split('/').collect();
    match (call.method.as_str(), parts.as_slice()) {
        ("GET", ["images"]) => {
            let mut chosen: Vec<&(&str, &str, &str, &str, &str)> = IMAGES
                .iter()
                .filter(|i| call.param("name").is_none_or(|n| n == i.1))
                .filter(|i| call.param("status").is_none_or(|s| s == i.2))
                .filter(|_| {
                    call.param("visibility")
                        .is_none_or(|v| v == "public" || v == "all")
                })
                .collect();
            chosen.sort_by(|a, b| b.3.cmp(a.3));
            let (taken, next) = match page(&chosen, |i| i.0, call) {
                Ok(p) => p,
                Err(refused) => return refused,
            };
            let images: Vec<Value> = taken.iter().map(|i| image_json(fake, i)).collect();
            let mut body = json!({"images": images, "first": "/v2/images",
                                  "schema": "/v2/schemas/images"});
            if let Some(query) = next {
                body["next"] = format!("/v2/images?{query}").into();
            }
            answer(StatusCode::OK, body)
        }
        ("GET", ["images", id]) => match IMAGES.iter().find(|i| i.0 == *id) {
            Some(i) => answer(StatusCode::OK, image_json(fake, i)),
            None => (
                StatusCode::NOT_FOUND,
                [("content-type", "text/plain; charset=UTF-8")],
                format!("404 Not Found\n\nNo image found with ID {id}\n\n   "),
            )
                .into_response(),
        },
        _ => super::not_found(),
    }
}

fn neutron_error(status: StatusCode, kind: &str, message: &str) -> Response {
    answer(
        status,
        json!({"NeutronError": {"type": kind, "message": message, "detail": ""}}),
    )
}

/// Keeps the items whose attributes equal every filter of the query (Neutron's filters), or
/// refuses a filter on an attribute the items do not have.
fn filtered(items: Vec<Value>, call: &Call<'_>) -> Result<Vec<Value>, Response> {
    let mut kept = items;
    for (key, wanted) in &call.query {
        if matches!(
            key.as_str(),
            "limit" | "marker" | "fields" | "sort_key" | "sort_dir"
        ) {
            continue;
        }
        let known = kept.first().is_none_or(|i| i.get(key).is_some());
        if !known {
            return Err(neutron_error(
                StatusCode::BAD_REQUEST,
                "HTTPBadRequest",
                &format!("[{key}] is invalid attribute for filtering"),
            ));
        }
        kept.retain(|item| match item.get(key) {
            Some(Value::String(s)) => s == wanted,
            Some(Value::Bool(b)) => wanted.eq_ignore_ascii_case(&b.to_string()),
            Some(Value::Null) => wanted.is_empty() || wanted == "None",
            Some(other) => serde_json::from_str::<Value>(wanted).is_ok_and(|w| w == *other),
            None => false,
        });
    }
    Ok(kept)
}

/// A Neutron list: filtered, paged, with `*_links`.
fn listing(fake: &Shared, call: &Call<'_>, key: &str, items: Vec<Value>) -> Response {
    let items = match filtered(items, call) {
        Ok(items) => items,
        Err(refused) => return refused,
    };
    let (taken, next) = match page(&items, |i| i["id"].as_str().unwrap_or_default(), call) {
        Ok(p) => p,
        Err(refused) => return refused,
    };
    let mut body = json!({ key: taken });
    if let Some(query) = next {
        body[format!("{key}_links")] = json!([{"rel": "next",
            "href": format!("{}/network/v2.0/{key}?{query}", fake.base())}]);
    }
    answer(StatusCode::OK, body)
}

fn network_json(fake: &Shared, n: &super::Network) -> Value {
    let project = &fake.account.project_id;
    json!({"id": n.id, "name": n.name, "status": "ACTIVE", "subnets": [n.subnet_id],
           "admin_state_up": true, "shared": n.external, "router:external": n.external,
           "mtu": 1500, "project_id": project, "tenant_id": project,
           "availability_zones": ["nova"], "description": "", "tags": [],
           "port_security_enabled": true, "revision_number": 1})
}

fn port_json(fake: &Shared, p: &super::Port, subnet: &str) -> Value {
    let project = &fake.account.project_id;
    json!({"id": p.id, "name": "", "network_id": p.network_id, "device_id": p.device_id,
           "device_owner": "compute:nova", "mac_address": p.mac, "status": "ACTIVE",
           "fixed_ips": [{"subnet_id": subnet, "ip_address": p.ip}], "admin_state_up": true,
           "project_id": project, "tenant_id": project, "binding:vnic_type": "normal",
           "security_groups": [], "description": "", "tags": []})
}

fn floating_json(fake: &Shared, data: &super::Data, f: &FloatingIp) -> Value {
    let project = &fake.account.project_id;
    let fixed = f
        .port_id
        .as_ref()
        .and_then(|p| data.ports.iter().find(|port| &port.id == p))
        .map(|p| p.ip.clone());
    json!({"id": f.id, "floating_ip_address": f.address, "floating_network_id": f.network_id,
           "router_id": null, "port_id": f.port_id, "fixed_ip_address": fixed,
           "status": if f.port_id.is_some() { "ACTIVE" } else { "DOWN" },
           "project_id": project, "tenant_id": project, "description": f.description,
           "created_at": time_text(f.created), "updated_at": time_text(f.created),
           "revision_number": 0, "tags": []})
}

/// Neutron: networks, subnets, ports, floating IPs, availability zones.
pub(super) fn neutron(fake: &Shared, call: &Call<'_>) -> Response {
    let parts: Vec<&str> = call.path.trim_matches('/').split('/').collect();
    match (call.method.as_str(), parts.as_slice()) {
        ("POST", ["floatingips"]) => allocate(fake, call),
        ("PUT", ["floatingips", id]) => associate(fake, id, call),
        ("DELETE", ["floatingips", id]) => release(fake, id),
        ("GET", [kind]) => match items(fake, kind) {
            Some(items) => listing(fake, call, kind, items),
            None => super::not_found(),
        },
        ("GET", [kind, id]) => show(fake, kind, id),
        _ => super::not_found(),
    }
}

/// Every item of a kind of resource, as Neutron shows them; `None` for a kind it has not.
fn items(fake: &Shared, kind: &str) -> Option<Vec<Value>> {
    let data = lock(&fake.data);
    let project = &fake.account.project_id;
    let subnet_of = |network: &str| {
        data.networks
            .iter()
            .find(|n| n.id == network)
            .map(|n| n.subnet_id.clone())
            .unwrap_or_default()
    };
    Some(match kind {
        "networks" => data
            .networks
            .iter()
            .map(|n| network_json(fake, n))
            .collect(),
        "subnets" => (data.networks.iter())
            .map(|n| {
                json!({"id": n.subnet_id, "network_id": n.id, "name": format!("{}-subnet", n.name),
                       "cidr": n.cidr, "ip_version": 4, "enable_dhcp": true, "project_id": project})
            })
            .collect(),
        "ports" => (data.ports.iter())
            .map(|p| port_json(fake, p, &subnet_of(&p.network_id)))
            .collect(),
        "floatingips" => (data.floating_ips.iter())
            .map(|f| floating_json(fake, &data, f))
            .collect(),
        "availability_zones" => {
            vec![json!({"id": "nova", "name": "nova", "resource": "network", "state": "available"})]
        }
        _ => return None,
    })
}

/// One item, or Neutron's not-found error for its kind.
fn show(fake: &Shared, kind: &str, id: &str) -> Response {
    let (singular, missing, what) = match kind {
        "networks" => ("network", "NetworkNotFound", "Network"),
        "subnets" => ("subnet", "SubnetNotFound", "Subnet"),
        "ports" => ("port", "PortNotFound", "Port"),
        "floatingips" => return show_floating_ip(fake, id),
        _ => return super::not_found(),
    };
    let found = items(fake, kind)
        .unwrap_or_default()
        .into_iter()
        .find(|i| i["id"] == id);
    match found {
        Some(item) => answer(StatusCode::OK, json!({ singular: item })),
        None => neutron_error(
            StatusCode::NOT_FOUND,
            missing,
            &format!("{what} {id} could not be found."),
        ),
    }
}

fn show_floating_ip(fake: &Shared, id: &str) -> Response {
    let data = lock(&fake.data);
    match data.floating_ips.iter().find(|f| f.id == id) {
        Some(f) => answer(
            StatusCode::OK,
            json!({"floatingip": floating_json(fake, &data, f)}),
        ),
        None => no_floating_ip(id),
    }
}

fn release(fake: &Shared, id: &str) -> Response {
    let mut data = lock(&fake.data);
    let before = data.floating_ips.len();
    data.floating_ips.retain(|f| f.id != id);
    if data.floating_ips.len() == before {
        return no_floating_ip(id);
    }
    StatusCode::NO_CONTENT.into_response()
}

fn no_floating_ip(id: &str) -> Response {
    neutron_error(
        StatusCode::NOT_FOUND,
        "FloatingIPNotFound",
        &format!("Floating IP {id} could not be found"),
    )
}

/// The address a floating IP on `port` gets: the machine's own, since that is what reaches it.
fn address_for(data: &super::Data, port: &super::Port) -> Option<String> {
    data.servers
        .iter()
        .find(|s| s.id == port.device_id)?
        .node
        .as_ref()?
        .public_ips
        .first()
        .map(|ip| ip.to_string())
}

/// Checks a port for a floating IP: it exists, and is not on an external network itself.
fn usable_port(data: &super::Data, port_id: &str) -> Result<super::Port, Response> {
    let Some(port) = data.ports.iter().find(|p| p.id == port_id) else {
        return Err(neutron_error(
            StatusCode::NOT_FOUND,
            "PortNotFound",
            &format!("Port {port_id} could not be found."),
        ));
    };
    let external = data
        .networks
        .iter()
        .any(|n| n.id == port.network_id && n.external);
    if external {
        return Err(neutron_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!(
                "Bad floatingip request: Port {port_id} is on an external network: it cannot \
                 have a floating IP."
            ),
        ));
    }
    Ok(port.clone())
}

fn allocate(fake: &Shared, call: &Call<'_>) -> Response {
    let body = call.body.clone().unwrap_or_default();
    let f = &body["floatingip"];
    let network = f["floating_network_id"].as_str().unwrap_or_default();
    let mut data = lock(&fake.data);
    match data.networks.iter().find(|n| n.id == network) {
        None => {
            return neutron_error(
                StatusCode::NOT_FOUND,
                "NetworkNotFound",
                &format!("Network {network} could not be found."),
            )
        }
        Some(n) if !n.external => {
            return neutron_error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!(
                    "Bad floatingip request: Network {network} is not a valid external network."
                ),
            )
        }
        Some(_) => {}
    }
    let port = match f["port_id"].as_str() {
        Some(id) => match usable_port(&data, id) {
            Ok(port) => Some(port),
            Err(refused) => return refused,
        },
        None => None,
    };
    data.next_private += 1;
    let pool = format!("203.0.113.{}", data.next_private % 250 + 3);
    let address = port
        .as_ref()
        .and_then(|p| address_for(&data, p))
        .unwrap_or(pool);
    let ip = FloatingIp {
        id: uuid(),
        address,
        network_id: network.to_string(),
        port_id: port.map(|p| p.id),
        description: f["description"].as_str().unwrap_or_default().to_string(),
        created: SystemTime::now(),
    };
    let body = json!({"floatingip": floating_json(fake, &data, &ip)});
    data.floating_ips.push(ip);
    answer(StatusCode::CREATED, body)
}

fn associate(fake: &Shared, id: &str, call: &Call<'_>) -> Response {
    let body = call.body.clone().unwrap_or_default();
    let port = body["floatingip"]["port_id"].as_str().map(String::from);
    let mut data = lock(&fake.data);
    if let Some(port) = &port {
        if let Err(refused) = usable_port(&data, port) {
            return refused;
        }
    }
    let Some(at) = data.floating_ips.iter().position(|f| f.id == id) else {
        return no_floating_ip(id);
    };
    data.floating_ips[at].port_id = port;
    let ip = data.floating_ips[at].clone();
    answer(
        StatusCode::OK,
        json!({"floatingip": floating_json(fake, &data, &ip)}),
    )
}
