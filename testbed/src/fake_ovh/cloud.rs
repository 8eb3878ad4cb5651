//! The fake's Public Cloud API (`/cloud/project/{project}/...`): projects, instances backed by
//! local nodes, flavors, images, regions, SSH keys, volumes and snapshots, prices.

use super::*;

pub(super) struct Instance {
    pub(super) id: String,
    pub(super) name: String,
    pub(super) region: String,
    pub(super) flavor_id: String,
    pub(super) image_id: String,
    pub(super) ssh_key_id: Option<String>,
    pub(super) created: Instant,
    pub(super) created_at: String,
    pub(super) node: Option<nodeup::model::Node>,
    pub(super) stopped: bool,
    /// When DELETE was accepted: the instance is DELETING until `delete_time` has passed.
    pub(super) deleted: Option<Instant>,
}

/// `GET /cloud/project`: the ids of the projects the credentials reach.
pub(super) async fn list_projects(State(fake): State<Shared>) -> Response {
    Json(vec![fake.account.project.clone()]).into_response()
}

/// `GET /cloud/project/{project}`: the project, as OVH describes it.
pub(super) async fn get_project(
    State(fake): State<Shared>,
    Path(project): Path<String>,
) -> Response {
    if project != fake.account.project {
        return missing(&format!("serviceName = {project}"));
    }
    Json(json!({
        "project_id": project, "projectName": "nodeup tests", "description": "nodeup tests",
        "status": "ok", "planCode": "project.2018", "unleash": false, "expiration": null,
        "creationDate": "2024-06-10T10:00:00Z", "orderId": null, "access": "full",
    }))
    .into_response()
}

/// Every project route answers 404 for a project other than the fake's, as OVH does.
pub(super) async fn project_check(
    State(fake): State<Shared>,
    Path(params): Path<BTreeMap<String, String>>,
    request: Request,
    next: Next,
) -> Response {
    match params.get("project") {
        Some(project) if *project == fake.account.project => next.run(request).await,
        Some(project) => missing(&format!("serviceName = {project}")),
        None => missing("serviceName"),
    }
}

use catalog::REGIONS;

/// The flavor with this id, as OVH describes it.
pub(super) fn flavor(id: &str) -> Option<Value> {
    catalog::flavors().into_iter().find(|f| f["id"] == id)
}

/// Items whose `region` is the `region` query parameter, or all without one.
pub(super) fn in_region(items: Vec<Value>, query: &BTreeMap<String, String>) -> Vec<Value> {
    match query.get("region") {
        Some(r) => items
            .into_iter()
            .filter(|i| i["region"] == r.as_str())
            .collect(),
        None => items,
    }
}

impl Instance {
    fn status(&self, build_time: Duration) -> &'static str {
        if self.deleted.is_some() {
            "DELETING"
        } else if self.node.is_none() {
            "ERROR"
        } else if self.stopped {
            "SHUTOFF"
        } else if self.created.elapsed() < build_time {
            "BUILD"
        } else {
            "ACTIVE"
        }
    }
}

/// Forgets instances whose DELETING time has passed.
pub(super) fn settle_deleted(fake: &Fake, data: &mut Data) {
    let delete_time = fake
        .config
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .delete_time;
    data.instances
        .retain(|i| i.deleted.is_none_or(|at| at.elapsed() < delete_time));
}

pub(super) async fn list_instances(
    State(fake): State<Shared>,
    Path(_project): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    let mut data = fake.data.lock().unwrap_or_else(|e| e.into_inner());
    settle_deleted(&fake, &mut data);
    let list: Vec<Value> = data
        .instances
        .iter()
        .filter(|i| query.get("region").is_none_or(|r| *r == i.region))
        .map(|i| instance_json_locked(&fake, &data, i, false))
        .collect();
    Json(list).into_response()
}

/// `instance_json` while the data lock is held.
pub(super) fn instance_json_locked(fake: &Fake, data: &Data, i: &Instance, detail: bool) -> Value {
    let (build, address_delay) = {
        let c = fake.config.lock().unwrap_or_else(|e| e.into_inner());
        (c.build_time, c.address_delay)
    };
    let status = i.status(build);
    let addresses: Vec<Value> = match &i.node {
        Some(node) if status == "ACTIVE" && i.created.elapsed() >= build + address_delay => node
            .public_ips
            .iter()
            .map(|ip| json!({"ip": ip.to_string(), "type": "public", "version": 4, "networkId": "", "gatewayIp": null}))
            .collect(),
        _ => vec![],
    };
    let mut value = json!({
        "id": i.id, "name": i.name, "status": status, "region": i.region,
        "created": i.created_at, "ipAddresses": addresses, "monthlyBilling": null,
        "planCode": "b2-7.consumption", "operationIds": [],
    });
    if detail {
        value["flavor"] = flavor(&i.flavor_id).unwrap_or(Value::Null);
        value["image"] = json!(data.images.iter().find(|img| img.id == i.image_id));
        value["sshKey"] = json!(i
            .ssh_key_id
            .as_ref()
            .and_then(|id| data.keys.iter().find(|k| &k.id == id)));
    } else {
        value["flavorId"] = json!(i.flavor_id);
        value["imageId"] = json!(i.image_id);
        value["sshKeyId"] = json!(i.ssh_key_id);
    }
    value
}

pub(super) async fn get_instance(
    State(fake): State<Shared>,
    Path((_project, id)): Path<(String, String)>,
) -> Response {
    let mut data = fake.data.lock().unwrap_or_else(|e| e.into_inner());
    settle_deleted(&fake, &mut data);
    match data.instances.iter().find(|i| i.id == id) {
        Some(i) => Json(instance_json_locked(&fake, &data, i, true)).into_response(),
        None => missing(&format!("instanceId = {id}")),
    }
}

/// What a valid `POST /instance` asks for.
struct NewInstance {
    name: String,
    region: String,
    flavor_id: String,
    image_id: String,
    ssh_key_id: Option<String>,
    /// The public key of `ssh_key_id`.
    public_key: Option<String>,
}

/// Checks a `POST /instance` body as OVH does: every field there, the region, flavor, image and
/// key known, the key in the region.
fn check_new_instance(fake: &Fake, body: &Bytes) -> Result<NewInstance, Response> {
    let Ok(request) = serde_json::from_slice::<Value>(body) else {
        return Err(bad_request("Invalid JSON"));
    };
    let field = |name: &str| {
        request
            .get(name)
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let (Some(name), Some(flavor_id), Some(region), Some(image_id)) = (
        field("name"),
        field("flavorId"),
        field("region"),
        field("imageId"),
    ) else {
        return Err(bad_request(
            "Missing parameter: name, flavorId, region and imageId are required",
        ));
    };
    if !REGIONS.contains(&region.as_str()) {
        return Err(bad_request(&format!(
            "Region {region} does not exist or is not enabled"
        )));
    }
    if flavor(&flavor_id).is_none_or(|f| f["region"] != region.as_str()) {
        return Err(bad_request(&format!("Flavor {flavor_id} does not exist")));
    }
    let data = fake.data.lock().unwrap_or_else(|e| e.into_inner());
    if !data
        .images
        .iter()
        .any(|i| i.id == image_id && i.region == region)
    {
        return Err(bad_request(&format!("Image {image_id} does not exist")));
    }
    let ssh_key_id = field("sshKeyId");
    let public_key = match &ssh_key_id {
        Some(id) => match data.keys.iter().find(|k| &k.id == id) {
            Some(key) if !key.regions.contains(&region) => {
                return Err(bad_request(&format!(
                    "SSH key {id} is not available in region {region}"
                )))
            }
            Some(key) => Some(key.public_key.clone()),
            None => return Err(bad_request(&format!("SSH key {id} does not exist"))),
        },
        None => None,
    };
    Ok(NewInstance {
        name,
        region,
        flavor_id,
        image_id,
        ssh_key_id,
        public_key,
    })
}

/// The instance's machine: a local node whose image refuses root as OVH's images do; `None`
/// (the instance in ERROR) when it cannot be had on port 22.
async fn machine_for(
    fake: &Fake,
    id: &str,
    public_key: Option<String>,
) -> Option<nodeup::model::Node> {
    let node = fake
        .driver
        .create_node(&CreateNode {
            name: format!("ovh-{}", &id[..8]),
            image: Some("cloud-debian".into()),
            auth: public_key.map(NodeAuth::SshKey),
            ..Default::default()
        })
        .await;
    match node {
        Ok(node) if node.ssh_port() == 22 => Some(node),
        Ok(node) => {
            let _ = fake.driver.destroy_node(&node).await;
            None
        }
        Err(e) => {
            eprintln!("fake-ovh: creating the instance's local node: {e}");
            None
        }
    }
}

pub(super) async fn create_instance(
    State(fake): State<Shared>,
    Path(_project): Path<String>,
    body: Bytes,
) -> Response {
    let new = match check_new_instance(&fake, &body) {
        Ok(new) => new,
        Err(refused) => return refused,
    };
    let id = format!(
        "{}-{}-{}-{}-{}",
        random_hex(8),
        random_hex(4),
        random_hex(4),
        random_hex(4),
        random_hex(12)
    );
    let node = machine_for(&fake, &id, new.public_key).await;
    let instance = Instance {
        id,
        name: new.name,
        region: new.region,
        flavor_id: new.flavor_id,
        image_id: new.image_id,
        ssh_key_id: new.ssh_key_id,
        created: Instant::now(),
        created_at: humantime_now(),
        node,
        stopped: false,
        deleted: None,
    };
    let mut data = fake.data.lock().unwrap_or_else(|e| e.into_inner());
    let value = instance_json_locked(&fake, &data, &instance, true);
    data.instances.push(instance);
    Json(value).into_response()
}

pub(super) fn humantime_now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

pub(super) async fn delete_instance(
    State(fake): State<Shared>,
    Path((_project, id)): Path<(String, String)>,
) -> Response {
    // Accepted at once; the instance is listed as DELETING for a while, and a second DELETE
    // finds nothing to delete.
    let node = {
        let mut data = fake.data.lock().unwrap_or_else(|e| e.into_inner());
        settle_deleted(&fake, &mut data);
        let Some(instance) = data
            .instances
            .iter_mut()
            .find(|i| i.id == id && i.deleted.is_none())
        else {
            return missing(&format!("instanceId = {id}"));
        };
        instance.deleted = Some(Instant::now());
        instance.node.take()
    };
    if let Some(node) = node {
        if let Err(e) = fake.driver.destroy_node(&node).await {
            eprintln!("fake-ovh: destroying the instance's local node: {e}");
        }
    }
    Json(Value::Null).into_response()
}

pub(super) async fn instance_action(
    State(fake): State<Shared>,
    Path((_project, id, action)): Path<(String, String, String)>,
    body: Bytes,
) -> Response {
    let node = {
        let data = fake.data.lock().unwrap_or_else(|e| e.into_inner());
        match data.instances.iter().find(|i| i.id == id) {
            Some(i) => i.node.clone(),
            None => return missing(&format!("instanceId = {id}")),
        }
    };
    let reboot_type = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["type"].as_str().map(str::to_string));
    if action == "reboot" && !matches!(reboot_type.as_deref(), Some("soft" | "hard")) {
        return bad_request("Invalid parameter type: expected soft or hard");
    }
    let result = match (action.as_str(), &node) {
        ("reboot", Some(node)) => fake.driver.reboot_node(node).await,
        ("stop", Some(node)) => fake.driver.stop_node(node).await,
        ("start", Some(node)) => fake.driver.start_node(node).await,
        ("snapshot", _) => {
            let name = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v["snapshotName"].as_str().map(str::to_string));
            let Some(name) = name else {
                return bad_request("Missing parameter snapshotName");
            };
            let mut data = fake.data.lock().unwrap_or_else(|e| e.into_inner());
            let region = data
                .instances
                .iter()
                .find(|i| i.id == id)
                .map(|i| i.region.clone())
                .unwrap_or_default();
            let description = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v["description"].as_str().map(str::to_string));
            data.images.push(Image {
                id: random_hex(32),
                name,
                region,
                kind: "linux".into(),
                visibility: "private".into(),
                status: "active".into(),
                user: "debian".into(),
                min_disk: 0,
                min_ram: 0,
                size: 0.0,
                creation_date: Some(humantime_now()),
                description,
            });
            Ok(())
        }
        (_, None) => return bad_request("The instance is in error"),
        _ => return missing(&format!("action = {action}")),
    };
    if let Err(e) = result {
        return ovh_error(StatusCode::INTERNAL_SERVER_ERROR, None, &e.to_string());
    }
    let mut data = fake.data.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(i) = data.instances.iter_mut().find(|i| i.id == id) {
        match action.as_str() {
            "stop" => i.stopped = true,
            "start" => i.stopped = false,
            _ => {}
        }
    }
    Json(Value::Null).into_response()
}

pub(super) async fn list_flavors(Query(query): Query<BTreeMap<String, String>>) -> Response {
    Json(in_region(catalog::flavors(), &query)).into_response()
}

pub(super) async fn list_images(
    State(fake): State<Shared>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    let data = fake.data.lock().unwrap_or_else(|e| e.into_inner());
    let images: Vec<&Image> = data
        .images
        .iter()
        .filter(|i| query.get("region").is_none_or(|r| *r == i.region))
        .collect();
    Json(images).into_response()
}

/// `GET /cloud/subsidiaryPrice?ovhSubsidiary=&flavorId=`: hourly prices of instances.
pub(super) async fn subsidiary_price(Query(query): Query<BTreeMap<String, String>>) -> Response {
    if !query.contains_key("ovhSubsidiary") {
        return bad_request("Missing parameter ovhSubsidiary");
    }
    let mut prices = catalog::prices();
    if let (Some(flavor), Some(list)) = (query.get("flavorId"), prices["instances"].as_array_mut())
    {
        list.retain(|p| p["flavorId"] == flavor.as_str());
    }
    Json(prices).into_response()
}

pub(super) async fn delete_image(
    State(fake): State<Shared>,
    Path((_project, id)): Path<(String, String)>,
) -> Response {
    // Only snapshots (private images) can be deleted.
    delete_item(&fake, state::images, &id, |image| {
        (image.visibility != "private").then(|| missing(&format!("snapshotId = {id}")))
    })
}

pub(super) async fn list_regions() -> Response {
    Json(REGIONS).into_response()
}

pub(super) async fn list_keys(
    State(fake): State<Shared>,
    Path(_project): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    let data = fake.data.lock().unwrap_or_else(|e| e.into_inner());
    let keys: Vec<&SshKey> = data
        .keys
        .iter()
        .filter(|k| query.get("region").is_none_or(|r| k.regions.contains(r)))
        .collect();
    Json(keys).into_response()
}

pub(super) async fn create_key(
    State(fake): State<Shared>,
    Path(_project): Path<String>,
    body: Bytes,
) -> Response {
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return bad_request("Invalid JSON");
    };
    let (Some(name), Some(public_key)) = (request["name"].as_str(), request["publicKey"].as_str())
    else {
        return bad_request("Missing parameter: name and publicKey are required");
    };
    let Ok(parsed) = fingerprint(public_key) else {
        return bad_request("Invalid public key");
    };
    let mut data = fake.data.lock().unwrap_or_else(|e| e.into_inner());
    if data.keys.iter().any(|k| k.name == name) {
        return (
            StatusCode::CONFLICT,
            Json(json!({"class": "Client::Conflict", "message": format!("SSH key {name} already exists")})),
        )
            .into_response();
    }
    let regions: Vec<String> = match request["region"].as_str() {
        Some(r) => vec![r.to_string()],
        None => REGIONS.iter().map(|r| r.to_string()).collect(),
    };
    let key = SshKey {
        id: random_hex(24),
        name: name.into(),
        public_key: public_key.into(),
        regions,
        fingerprint: parsed,
    };
    data.keys.push(key.clone());
    Json(key).into_response()
}

/// A key's fingerprint, or an error when it is not a public key line.
pub(super) fn fingerprint(line: &str) -> Result<String, ()> {
    russh::keys::PublicKey::from_openssh(line.trim())
        .map(|k| k.fingerprint(russh::keys::HashAlg::Sha256).to_string())
        .map_err(|_| ())
}

pub(super) async fn create_volume(
    State(fake): State<Shared>,
    Path(_project): Path<String>,
    body: Bytes,
) -> Response {
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return bad_request("Invalid JSON");
    };
    let (Some(region), Some(size)) = (request["region"].as_str(), request["size"].as_u64()) else {
        return bad_request("Missing parameter: region and size are required");
    };
    let kind = request["type"].as_str().unwrap_or("classic");
    if ![
        "classic",
        "high-speed",
        "high-speed-gen2",
        "classic-multiattach",
    ]
    .contains(&kind)
    {
        return bad_request(&format!("Invalid volume type {kind}"));
    }
    if !REGIONS.contains(&region) {
        return bad_request(&format!("Region {region} does not exist or is not enabled"));
    }
    let id = format!("{}-{}", random_hex(8), random_hex(12));
    let snapshot = request["snapshotId"].as_str().map(str::to_string);
    if let Some(snapshot) = &snapshot {
        let data = fake.data.lock().unwrap_or_else(|e| e.into_inner());
        if !data.snapshots.iter().any(|s| &s.id == snapshot) {
            return missing(&format!("snapshotId = {snapshot}"));
        }
    }
    let text = |key: &str| request[key].as_str().map(str::to_string);
    let volume = Volume {
        id: id.clone(),
        name: text("name"),
        description: text("description"),
        region: region.into(),
        size,
        status: "creating".into(),
        kind: kind.into(),
        attached_to: vec![],
        bootable: false,
        creation_date: humantime_now(),
        snapshot_id: snapshot,
    };
    let ready = Instant::now()
        + fake
            .config
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .volume_create_time;
    let mut data = fake.data.lock().unwrap_or_else(|e| e.into_inner());
    data.volumes.push(volume.clone());
    data.volume_ready.insert(id, ready);
    Json(volume).into_response()
}

pub(super) async fn delete_volume(
    State(fake): State<Shared>,
    Path((_project, id)): Path<(String, String)>,
) -> Response {
    delete_item(&fake, volumes, &id, |volume| {
        (!volume.attached_to.is_empty()).then(|| bad_request("Volume is attached; detach it first"))
    })
}

pub(super) async fn volume_action(
    State(fake): State<Shared>,
    Path((_project, id, action)): Path<(String, String, String)>,
    body: Bytes,
) -> Response {
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut data = fake.data.lock().unwrap_or_else(|e| e.into_inner());
    settle_volumes(&mut data);
    let instances: Vec<(String, String)> = data
        .instances
        .iter()
        .filter(|i| i.deleted.is_none())
        .map(|i| (i.id.clone(), i.region.clone()))
        .collect();
    let Some(volume) = data.volumes.iter_mut().find(|v| v.id == id) else {
        return missing(&format!("volumeId = {id}"));
    };
    match action.as_str() {
        "attach" | "detach" => {
            let Some(instance) = request["instanceId"].as_str() else {
                return bad_request("Missing parameter instanceId");
            };
            let Some((_, region)) = instances.iter().find(|(i, _)| i == instance) else {
                return missing(&format!("instanceId = {instance}"));
            };
            // A multi-attach volume (type classic-multiattach ...) may be in use by several.
            let shared = volume.kind.contains("multiattach");
            if action == "attach" && volume.status != "available" && !shared {
                return bad_request(&format!(
                    "Volume {id} is not available (status {:?})",
                    volume.status
                ));
            }
            if action == "attach" && volume.region != *region {
                return bad_request(&format!(
                    "Volume {id} is in region {:?} and instance {instance} in region {region}",
                    volume.region
                ));
            }
            if action == "attach" {
                if !volume.attached_to.iter().any(|i| i == instance) {
                    volume.attached_to.push(instance.to_string());
                }
                volume.status = "in-use".into();
            } else {
                if !volume.attached_to.iter().any(|i| i == instance) {
                    return bad_request(&format!(
                        "Volume {id} is not attached to instance {instance}"
                    ));
                }
                volume.attached_to.retain(|i| i != instance);
                if volume.attached_to.is_empty() {
                    volume.status = "available".into();
                }
            }
            Json(volume.clone()).into_response()
        }
        "snapshot" => {
            let snapshot = Snapshot {
                id: format!("{}-{}", random_hex(8), random_hex(12)),
                volume_id: id.clone(),
                status: "available".into(),
                region: volume.region.clone(),
                name: request["name"].as_str().unwrap_or("").into(),
                description: request["description"].as_str().unwrap_or("").into(),
                size: volume.size,
                creation_date: humantime_now(),
            };
            data.snapshots.push(snapshot.clone());
            Json(snapshot).into_response()
        }
        _ => missing(&format!("action = {action}")),
    }
}

/// The routes under `/cloud/project/{project}`; every one answers 404 for another project.
pub(super) fn project_routes(fake: &Shared) -> Router<Shared> {
    type One = Path<(String, String)>;
    Router::new()
        .route("/instance", get(list_instances).post(create_instance))
        .route("/instance/{id}", get(get_instance).delete(delete_instance))
        .route("/instance/{id}/{action}", post(instance_action))
        .route("/flavor", get(list_flavors))
        .route(
            "/flavor/{id}",
            get(|Path((_, id)): One| async move {
                match flavor(&id) {
                    Some(f) => Json(f).into_response(),
                    None => missing(&format!("flavorId = {id}")),
                }
            }),
        )
        .route("/image", get(list_images))
        .route(
            "/image/{id}",
            get(|State(f): State<Shared>, Path((_, id)): One| async move {
                get_item(&f, state::images, &id)
            }),
        )
        .route("/snapshot/{id}", axum::routing::delete(delete_image))
        .route("/region", get(list_regions))
        .route("/sshkey", get(list_keys).post(create_key))
        .route(
            "/sshkey/{id}",
            get(|State(f): State<Shared>, Path((_, id)): One| async move {
                get_item(&f, keys, &id)
            })
            .delete(
                |State(f): State<Shared>, Path((_, id)): One| async move {
                    delete_item(&f, keys, &id, |_| None)
                },
            ),
        )
        .route(
            "/volume",
            get(|State(f): State<Shared>| async move { list_items(&f, volumes) })
                .post(create_volume),
        )
        .route(
            "/volume/snapshot",
            get(|State(f): State<Shared>| async move { list_items(&f, snapshots) }),
        )
        .route(
            "/volume/snapshot/{id}",
            get(|State(f): State<Shared>, Path((_, id)): One| async move {
                get_item(&f, snapshots, &id)
            })
            .delete(
                |State(f): State<Shared>, Path((_, id)): One| async move {
                    delete_item(&f, snapshots, &id, |_| None)
                },
            ),
        )
        .route(
            "/volume/{id}",
            get(|State(f): State<Shared>, Path((_, id)): One| async move {
                get_item(&f, volumes, &id)
            })
            .delete(delete_volume),
        )
        .route("/volume/{id}/{action}", post(volume_action))
        .route_layer(middleware::from_fn_with_state(fake.clone(), project_check))
}
