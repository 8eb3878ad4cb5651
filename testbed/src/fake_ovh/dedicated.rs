//! The fake's dedicated servers (`/dedicated/server/{name}/...`): each a local node, reinstalled
//! with your own image through the legacy `bringYourOwnImage` call or the current `reinstall`.

use super::*;

/// A dedicated server of the fake: a local node, and the state of its reinstalls.
pub(super) struct Dedicated {
    pub(super) name: String,
    pub(super) node: nodeup::model::Node,
    /// The legacy BYOI status: (status, message).
    pub(super) legacy: Option<(String, String)>,
    pub(super) tasks: Vec<Value>,
    /// The current install: when it started, and its steps.
    pub(super) install: Option<(Instant, Vec<InstallStep>)>,
    /// Counts install starts and cancels: an install whose number is no longer this one was
    /// cancelled, and stops.
    pub(super) run: u64,
    /// The body of the last reinstall request (either generation).
    pub(super) last_request: Option<Value>,
}

/// One step of an install, as `/install/status` lists it: comment, status, error.
pub(super) type InstallStep = (String, String, Option<String>);

#[derive(Clone)]
pub(super) struct InstallSpec {
    pub(super) url: String,
    pub(super) image_type: String,
    pub(super) checksum: Option<(String, String)>,
    pub(super) headers: Vec<(String, String)>,
    pub(super) hostname: Option<String>,
    pub(super) ssh_key: Option<String>,
    pub(super) user_data: Option<String>,
    /// Config-drive metadata.
    pub(super) metadata: Vec<(String, String)>,
    /// `None` for the legacy call, else the task id.
    pub(super) task: Option<u64>,
    /// This install's number (see `Dedicated::run`).
    pub(super) run: u64,
}

impl FakeOvh {
    /// Adds a dedicated server named `name`: a local node (image `debian`, the fake's own root key
    /// that nobody else has), reinstallable with your own image.
    pub async fn add_dedicated(&self, name: &str) -> std::io::Result<nodeup::model::Node> {
        let throwaway =
            russh::keys::PrivateKey::random(&mut rand::rng(), russh::keys::Algorithm::Ed25519)
                .map_err(std::io::Error::other)?;
        let node = self
            .fake
            .driver
            .create_node(&CreateNode {
                name: format!("ded-{}", random_hex(8)),
                image: Some("debian".into()),
                auth: throwaway
                    .public_key()
                    .to_openssh()
                    .ok()
                    .map(NodeAuth::SshKey),
                ..Default::default()
            })
            .await
            .map_err(std::io::Error::other)?;
        self.fake
            .dedicated
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Dedicated {
                name: name.to_string(),
                node: node.clone(),
                legacy: None,
                tasks: Vec::new(),
                run: 0,
                last_request: None,
                install: None,
            });
        Ok(node)
    }
}

pub(super) fn dedicated_routes() -> Router<Shared> {
    Router::new()
        .route("/", get(get_dedicated))
        .route(
            "/bringYourOwnImage",
            get(byoi_status).post(byoi_start).delete(byoi_clear),
        )
        .route("/reinstall", post(reinstall_start))
        .route("/task/{id}", get(get_task))
        .route("/install/status", get(install_status))
}

pub(super) fn with_server<T>(
    fake: &Fake,
    name: &str,
    f: impl FnOnce(&mut Dedicated) -> T,
) -> Result<T, Response> {
    let mut servers = fake.dedicated.lock().unwrap_or_else(|e| e.into_inner());
    match servers.iter_mut().find(|s| s.name == name) {
        Some(server) => Ok(f(server)),
        None => Err(missing(&format!("serviceName = {name}"))),
    }
}

pub(super) async fn get_dedicated(
    State(fake): State<Shared>,
    Path(name): Path<String>,
) -> Response {
    match with_server(&fake, &name, |s| {
        json!({"name": s.name, "ip": s.node.public_ips[0].to_string(), "reverse": format!("{}.ip.fake-ovh.net", s.name),
               "state": "ok", "powerState": "poweron", "bootId": 1, "datacenter": "gra3", "os": "debian12_64",
               "rescueMail": null, "monitoring": true, "serverId": 123456})
    }) {
        Ok(v) => Json(v).into_response(),
        Err(r) => r,
    }
}

pub(super) async fn byoi_status(State(fake): State<Shared>, Path(name): Path<String>) -> Response {
    match with_server(&fake, &name, |s| s.legacy.clone()) {
        Ok(Some((status, message))) => Json(
            json!({"status": status, "message": message, "checksum": null, "servername": name}),
        )
        .into_response(),
        Ok(None) => missing("bringYourOwnImage"),
        Err(r) => r,
    }
}

/// Erases the deployment status and stops an install under way; the server stays down (rescue).
pub(super) async fn byoi_clear(State(fake): State<Shared>, Path(name): Path<String>) -> Response {
    match with_server(&fake, &name, |s| {
        s.legacy = None;
        s.run += 1;
    }) {
        Ok(()) => Json(Value::Null).into_response(),
        Err(r) => r,
    }
}

pub(super) fn text(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_string)
}

pub(super) async fn byoi_start(
    State(fake): State<Shared>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return bad_request("Invalid JSON");
    };
    let (Some(url), Some(kind)) = (text(&request, "URL"), text(&request, "type")) else {
        return bad_request("Missing parameter: URL and type are required");
    };
    if !["qcow2", "raw", "ova"].contains(&kind.as_str()) {
        return bad_request("Bad format image, expected : qcow2, raw.");
    }
    let checksum = match (text(&request, "checkSum"), text(&request, "checkSumType")) {
        (Some(sum), Some(t)) if ["sha1", "sha256", "md5", "sha512"].contains(&t.as_str()) => {
            Some((t, sum))
        }
        (Some(_), Some(_)) => {
            return bad_request("Bad checkSumType, expected : sha1, sha256, md5.")
        }
        (None, None) => None,
        _ => return bad_request("Please provide checkSum AND checkSumType or none of them"),
    };
    let drive = request.get("configdrive").cloned().unwrap_or(Value::Null);
    // A config drive that is not enabled sets nothing.
    let drive = if drive["enable"] == false {
        Value::Null
    } else {
        drive
    };
    let spec = InstallSpec {
        url,
        image_type: kind,
        checksum,
        headers: request["httpHeader"]
            .as_array()
            .map(|hs| {
                hs.iter()
                    .filter_map(|h| Some((text(h, "key")?, text(h, "value")?)))
                    .collect()
            })
            .unwrap_or_default(),
        hostname: text(&drive, "hostname"),
        ssh_key: text(&drive, "sshKey"),
        user_data: text(&drive, "userData"),
        metadata: drive["userMetadatas"]
            .as_array()
            .map(|ms| {
                ms.iter()
                    .filter_map(|m| Some((text(m, "key")?, text(m, "value")?)))
                    .collect()
            })
            .unwrap_or_default(),
        task: None,
        run: 0,
    };
    let run = match with_server(&fake, &name, |s| {
        if s.legacy.as_ref().is_some_and(|(st, _)| st == "doing") {
            return Err(bad_request("A deployment is already in progress"));
        }
        s.legacy = Some(("doing".into(), "Downloading image".into()));
        s.last_request = Some(request.clone());
        s.run += 1;
        Ok(s.run)
    }) {
        Ok(Ok(run)) => run,
        Ok(Err(r)) | Err(r) => return r,
    };
    let spec = InstallSpec { run, ..spec };
    tokio::spawn(run_install(fake.clone(), name, spec));
    Json(Value::Null).into_response()
}

pub(super) async fn reinstall_start(
    State(fake): State<Shared>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return bad_request("Invalid JSON");
    };
    let os = text(&request, "operatingSystem").unwrap_or_default();
    if !["byoi_64", "byolinux_64"].contains(&os.as_str()) {
        return bad_request(&format!(
            "Operating system {os} is not available for this server"
        ));
    }
    let c = request
        .get("customizations")
        .cloned()
        .unwrap_or(Value::Null);
    let (Some(url), Some(kind)) = (text(&c, "imageURL"), text(&c, "imageType")) else {
        return bad_request(
            "Missing parameter: customizations.imageURL and customizations.imageType are required",
        );
    };
    if !["qcow2", "raw"].contains(&kind.as_str()) {
        return bad_request(&format!("Invalid imageType {kind}: expected qcow2 or raw"));
    }
    let checksum = match (text(&c, "imageCheckSum"), text(&c, "imageCheckSumType")) {
        (Some(sum), Some(t)) => Some((t, sum)),
        (None, None) => None,
        _ => return bad_request("Please provide checkSum AND checkSumType or none of them"),
    };
    let headers = c["httpHeaders"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    let task_id = 4_000_000 + rand::rng().random_range(0..999_999u64);
    let task = json!({"taskId": task_id, "function": "reinstallServer", "status": "init",
                      "comment": "Start reinstallation", "startDate": humantime_now(), "doneDate": null});
    let run = match with_server(&fake, &name, |s| {
        s.tasks.push(task.clone());
        s.install = Some((
            Instant::now(),
            vec![("Downloading image".into(), "doing".into(), None)],
        ));
        s.last_request = Some(request.clone());
        s.run += 1;
        s.run
    }) {
        Ok(run) => run,
        Err(r) => return r,
    };
    let spec = InstallSpec {
        url,
        image_type: kind,
        checksum,
        headers,
        hostname: text(&c, "hostname"),
        ssh_key: text(&c, "sshKey"),
        user_data: text(&c, "configDriveUserData"),
        metadata: c["configDriveMetadata"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default(),
        task: Some(task_id),
        run,
    };
    tokio::spawn(run_install(fake.clone(), name, spec));
    Json(task).into_response()
}

pub(super) async fn get_task(
    State(fake): State<Shared>,
    Path((name, id)): Path<(String, u64)>,
) -> Response {
    match with_server(&fake, &name, |s| {
        s.tasks.iter().find(|t| t["taskId"] == id).cloned()
    }) {
        Ok(Some(t)) => Json(t).into_response(),
        Ok(None) => missing(&format!("taskId = {id}")),
        Err(r) => r,
    }
}

pub(super) async fn install_status(
    State(fake): State<Shared>,
    Path(name): Path<String>,
) -> Response {
    match with_server(&fake, &name, |s| s.install.clone()) {
        Ok(Some((started, steps))) => Json(json!({
            "elapsedTime": started.elapsed().as_secs(),
            "progress": steps.iter().map(|(c, st, e)| json!({"comment": c, "status": st, "error": e})).collect::<Vec<_>>(),
        }))
        .into_response(),
        Ok(None) => ovh_error(StatusCode::NOT_FOUND, None, "Server is not being installed or reinstalled at the moment"),
        Err(r) => r,
    }
}

pub(super) fn digest(kind: &str, data: &[u8]) -> String {
    use sha2::Digest;
    let bytes: Vec<u8> = match kind {
        "md5" => md5::Md5::digest(data).to_vec(),
        "sha1" => sha1::Sha1::digest(data).to_vec(),
        "sha512" => sha2::Sha512::digest(data).to_vec(),
        _ => sha2::Sha256::digest(data).to_vec(),
    };
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Records an install's progress as the API generation of `spec` shows it: the legacy status, or
/// the task and `/install/status` steps. A cancelled install records nothing more.
fn record_progress(
    s: &mut Dedicated,
    spec: &InstallSpec,
    status: &str,
    comment: &str,
    error: Option<String>,
) {
    if s.run != spec.run {
        return;
    }
    let message = error.clone().unwrap_or(comment.to_string());
    if spec.task.is_none() {
        s.legacy = Some((status.to_string(), message));
        return;
    }
    let task_status = if status == "error" {
        "customerError"
    } else {
        status
    };
    if let Some(t) = s
        .tasks
        .iter_mut()
        .find(|t| Some(t["taskId"].as_u64().unwrap_or(0)) == spec.task)
    {
        t["status"] = json!(task_status);
        t["comment"] = json!(message);
        if status == "done" {
            t["doneDate"] = json!(humantime_now());
        }
    }
    if status == "done" {
        s.install = None;
    } else if let Some((_, steps)) = &mut s.install {
        for step in steps.iter_mut().filter(|step| step.1 == "doing") {
            step.1 = "done".into();
        }
        let state = if status == "error" { "error" } else { "doing" };
        steps.push((comment.to_string(), state.into(), error));
    }
}

/// Downloads the image as a server would: `Err` with OVH's message when it cannot.
async fn download(spec: &InstallSpec) -> Result<Bytes, String> {
    let failed = || {
        if spec.task.is_none() {
            format!("Could not download image located : {}", spec.url)
        } else {
            format!("Could not download image: {}", spec.url)
        }
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|_| failed())?;
    let mut request = client.get(&spec.url);
    for (k, v) in &spec.headers {
        request = request.header(k, v);
    }
    match request.send().await {
        Ok(r) if r.status().is_success() => r.bytes().await.map_err(|_| failed()),
        _ => Err(failed()),
    }
}

/// Checks the image's format (by its magic bytes) and checksum: `Err` with OVH's message.
fn check_image(spec: &InstallSpec, image: &[u8]) -> Result<(), String> {
    let actual = if image.starts_with(b"QFI\xfb") {
        "qcow2"
    } else if image.get(257..262) == Some(b"ustar") {
        "ova"
    } else {
        "raw"
    };
    if actual != spec.image_type {
        return Err(format!(
            "image provided format is {actual} which does not match expected {} format",
            spec.image_type
        ));
    }
    if let Some((kind, want)) = &spec.checksum {
        let got = digest(kind, image);
        if &got != want {
            let sep = if spec.task.is_none() { " : " } else { ": " };
            return Err(format!(
                "Bad {kind} for downloaded file, got{sep}{got} while expecting {want}."
            ));
        }
    }
    Ok(())
}

/// Downloads, checks, then (SSH down for the install time) reinstalls the server's node.
pub(super) async fn run_install(fake: Shared, name: String, spec: InstallSpec) {
    let set = |status: &str, comment: &str, error: Option<String>| {
        let _ = with_server(&fake, &name, |s| {
            record_progress(s, &spec, status, comment, error)
        });
    };
    set("doing", "Downloading image", None);
    let image = match download(&spec).await {
        Ok(image) => image,
        Err(message) => return set("error", "Downloading image", Some(message)),
    };
    if let Err(message) = check_image(&spec, &image) {
        return set("error", "Checking image", Some(message));
    }
    set("doing", "Installing image", None);
    let Ok(node) = with_server(&fake, &name, |s| s.node.clone()) else {
        return;
    };
    let _ = fake.driver.stop_node(&node).await;
    let install_time = fake
        .config
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .install_time;
    tokio::time::sleep(install_time).await;
    if with_server(&fake, &name, |s| s.run != spec.run).unwrap_or(true) {
        // Cancelled: the server stays in rescue, its disk as the cancel left it.
        let _ = fake.driver.start_node(&node).await;
        return;
    }
    let result = fake
        .driver
        .reinstall(
            &node,
            &nodeup::providers::local::Reinstall {
                hostname: spec.hostname.clone(),
                root_key: spec.ssh_key.clone(),
                user_data: spec.user_data.clone().map(String::into_bytes),
                metadata: spec.metadata.clone(),
            },
        )
        .await;
    match result {
        Ok(_) => set("done", "Image deployed", None),
        Err(e) => set(
            "error",
            "Installing image",
            Some(format!("Can't write {} on disk. ({e})", spec.image_type)),
        ),
    }
}
