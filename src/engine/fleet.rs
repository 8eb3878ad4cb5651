//! Fleets: many deployments at once, with bounded concurrency and a failure policy
//! ([`deploy_fleet`]); the same steps on many machines that exist ([`run_fleet`]).
//!
//! A fleet's nodes are waited for together: the driver is wrapped so that concurrent waits share
//! one list call per poll. Each node is provisioned as soon as it is ready (no barrier). Memory is
//! bounded by what is in flight: a member's task holds its connection only while it runs.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::{
    deploy_node, destroy_node, run_steps, DeployOptions, Deployment, DeploymentError, Event, Run,
    RunFailure, Target,
};
use crate::deploy::Step;
use crate::driver::{Features, NodeDriver, ProviderConfig, Result as DriverResult};
use crate::life::Stage;
use crate::model::{
    CreateNode, CreateVolume, KeyPair, Node, NodeImage, NodeLocation, NodeSize, StorageVolume,
    VolumeSnapshot,
};
use crate::ssh::{Credentials, OutputSink};

/// How a fleet deploys.
#[derive(Debug, Clone, Default)]
pub struct FleetOptions {
    /// How many members are in flight at once (1 or more); `None` for the rule of [`parallel`].
    pub parallel: Option<usize>,
    /// Once more than this many members failed, start nothing new and cancel those in flight
    /// (nodes that finished stay).
    pub max_failures: Option<usize>,
    /// Any failure destroys the whole fleet, finished nodes included.
    pub all_or_nothing: bool,
    /// Keep a node whose deployment failed (it is destroyed otherwise).
    pub keep_on_failure: bool,
}

/// How many machines that exist are worked on at once unless told otherwise: only connections
/// are at stake (their setup bounded apart, by [`DEFAULT_MAX_STARTUPS`]), and 50 keeps a fleet's
/// memory near 4 MB while a 2-core controller stays busy.
pub const DEFAULT_PARALLEL: usize = 50;

/// How many connections may be being set up (TCP, SSH handshake, login) at once unless told
/// otherwise: sshd's default `MaxStartups 10:30:100` starts dropping new connections beyond 10,
/// and a bastion is one sshd for the whole fleet.
pub const DEFAULT_MAX_STARTUPS: usize = 10;

/// The one rule for how many members are in flight at once: what was asked (`--parallel`);
/// else, when nodes are created on `creating_on`, that provider's
/// [`NodeDriver::default_parallel`] (its API's rate limits are the bound: 10 unless the provider
/// says otherwise); else, for machines that exist, [`DEFAULT_PARALLEL`].
pub fn parallel(asked: Option<usize>, creating_on: Option<&dyn NodeDriver>) -> usize {
    let default = creating_on.map_or(DEFAULT_PARALLEL, |d| d.default_parallel());
    asked.unwrap_or(default).max(1)
}

/// Progress of one member (by its 0-based index in the fleet).
pub type MemberProgress = Arc<dyn Fn(usize, &Event) + Send + Sync>;
/// Where one member's script output goes.
pub type MemberOutput = Arc<dyn Fn(usize) -> Option<OutputSink> + Send + Sync>;

/// What a fleet tells its caller as it goes.
#[derive(Clone, Default)]
pub struct FleetHooks {
    /// Each member's progress events.
    pub progress: Option<MemberProgress>,
    /// Each member's script output.
    pub output: Option<MemberOutput>,
    /// Told when a member is finished, and whether it succeeded.
    pub done: Option<Arc<dyn Fn(usize, bool) + Send + Sync>>,
}

/// What became of a node in the end.
#[derive(Debug, Clone)]
pub enum Fate {
    /// Deployed; it stays.
    Stays,
    /// Never created (failed or cancelled before, or not started).
    NotCreated,
    /// Kept after a failure (`keep_on_failure`).
    Kept,
    /// Destroyed: it failed, was cancelled, or the fleet was undone.
    Destroyed,
    /// It is left, and this says why.
    Left(Arc<LeftBehind>),
}

/// Why a node that should be gone is left.
#[derive(Debug, thiserror::Error)]
pub enum LeftBehind {
    /// Destroying it failed.
    #[error("destroying it failed")]
    DestroyFailed(#[source] crate::driver::ProviderError),
    /// The deployment was cancelled and no at-exit hook was given to destroy it.
    #[error("cancelled, and no at-exit hook destroyed it")]
    NoAtExit,
}

impl Fate {
    /// The word for it, as `--json` prints it: `stays`, `not-created`, `kept`, `destroyed`,
    /// `left`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Fate::Stays => "stays",
            Fate::NotCreated => "not-created",
            Fate::Kept => "kept",
            Fate::Destroyed => "destroyed",
            Fate::Left(_) => "left",
        }
    }

    /// The stage the node's record ends in.
    pub fn stage(&self) -> Stage {
        match self {
            Fate::Stays => Stage::Done,
            Fate::NotCreated | Fate::Destroyed => Stage::Destroyed,
            Fate::Kept => Stage::Kept,
            Fate::Left(_) => Stage::Failed,
        }
    }
}

impl std::fmt::Display for Fate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for Fate {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// How a member of a fleet (a node of `deploy`, a host of `run`) ended: what summaries show and
/// exit codes are computed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Its steps all succeeded (and its node stays).
    Ok,
    /// Its steps succeeded, then its node was destroyed with the fleet (all-or-nothing, or the
    /// fleet was cancelled).
    Undone,
    /// It failed.
    Failed,
    /// It was cancelled while it ran.
    Cancelled,
    /// It never started: the fleet stopped first.
    NotStarted,
}

impl Outcome {
    /// The word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Undone => "undone",
            Outcome::Failed => "failed",
            Outcome::Cancelled => "cancelled",
            Outcome::NotStarted => "not started",
        }
    }

    /// A host of `run`: ok, failed, or cancelled (`None`).
    pub fn of_run(outcome: &RunOutcome) -> Outcome {
        match outcome {
            Some(Ok(_)) => Outcome::Ok,
            Some(Err(_)) => Outcome::Failed,
            None => Outcome::Cancelled,
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How many members ended how.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    /// All of them.
    pub total: usize,
    /// Ok.
    pub ok: usize,
    /// Failed, or undone with the fleet.
    pub failed: usize,
    /// Cancelled while they ran, or never started.
    pub not_run: usize,
}

impl Counts {
    /// The counts of `outcomes`.
    pub fn of(outcomes: impl IntoIterator<Item = Outcome>) -> Counts {
        let mut counts = Counts::default();
        for outcome in outcomes {
            counts.total += 1;
            match outcome {
                Outcome::Ok => counts.ok += 1,
                Outcome::Failed | Outcome::Undone => counts.failed += 1,
                Outcome::Cancelled | Outcome::NotStarted => counts.not_run += 1,
            }
        }
        counts
    }

    /// Whether every member is ok.
    pub fn all_ok(&self) -> bool {
        self.ok == self.total
    }
}

impl Counts {
    /// What went wrong, said of `noun`s (`nodes`, `hosts`): "1 of 5 nodes failed", "1 of 5 nodes
    /// failed, 3 not run", "5 of 5 hosts not run"; `None` when every one is ok.
    pub fn failure(&self, noun: &str) -> Option<String> {
        let total = self.total;
        match (self.failed, self.not_run) {
            (0, 0) => None,
            (failed, 0) => Some(format!("{failed} of {total} {noun} failed")),
            (0, not_run) => Some(format!("{not_run} of {total} {noun} not run (cancelled)")),
            (failed, not_run) => Some(format!(
                "{failed} of {total} {noun} failed, {not_run} not run"
            )),
        }
    }
}

/// One member's result.
#[derive(Debug)]
pub enum MemberResult {
    /// Deployed.
    Deployed(Deployment),
    /// Failed or cancelled.
    Failed(DeploymentError),
    /// Not started: the fleet stopped first (too many failures, or cancelled).
    NotStarted,
}

/// One member of a deployed fleet.
#[derive(Debug)]
pub struct FleetMember {
    /// Its 0-based index.
    pub index: usize,
    /// The node's name.
    pub name: String,
    /// What its deployment did.
    pub result: MemberResult,
    /// What became of the node.
    pub fate: Fate,
    /// How long it took.
    pub elapsed: Duration,
}

impl FleetMember {
    /// How it ended.
    pub fn outcome(&self) -> Outcome {
        match (&self.result, &self.fate) {
            (MemberResult::Deployed(_), Fate::Stays) => Outcome::Ok,
            (MemberResult::Deployed(_), _) => Outcome::Undone,
            (MemberResult::Failed(e), _) if matches!(e.cause, super::Cause::Cancelled) => {
                Outcome::Cancelled
            }
            (MemberResult::Failed(_), _) => Outcome::Failed,
            (MemberResult::NotStarted, _) => Outcome::NotStarted,
        }
    }
}

/// Deploys one node per request with `options` (each its own deployment: progress, output and
/// journal entry), at most `fleet.parallel` at once, and applies the failure policy. Cancelling
/// `options.cancel` cancels the whole fleet and destroys every node it made; the members are
/// returned in request order.
pub async fn deploy_fleet(
    driver: Arc<dyn NodeDriver>,
    requests: Vec<CreateNode>,
    steps: &Step,
    options: &DeployOptions,
    fleet: &FleetOptions,
    hooks: &FleetHooks,
) -> Vec<FleetMember> {
    let shared: Arc<dyn NodeDriver> = Arc::new(SharedListing::new(driver.clone(), options));
    let stop = options.cancel.child_token();
    let permits = Arc::new(Semaphore::new(parallel(
        fleet.parallel,
        Some(driver.as_ref()),
    )));
    let failures = Arc::new(AtomicUsize::new(0));
    let steps = Arc::new(steps.clone());
    let mut tasks = tokio::task::JoinSet::new();
    let mut members = Vec::new();
    for (index, request) in requests.into_iter().enumerate() {
        // In order: a slot is taken before the member's task is made.
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let member = Member {
            index,
            driver: shared.clone(),
            options: member_options(options, &stop, hooks, index),
            done: hooks.done.clone(),
            fleet: fleet.clone(),
            stop: stop.clone(),
            failures: failures.clone(),
        };
        let steps = steps.clone();
        tasks.spawn(async move {
            let _permit = permit;
            member.deploy(request, &steps).await
        });
        while let Some(Ok(member)) = tasks.try_join_next() {
            members.push(member);
        }
    }
    while let Some(joined) = tasks.join_next().await {
        if let Ok(member) = joined {
            members.push(member);
        }
    }
    members.sort_by_key(|m| m.index);
    let failed = failures.load(Ordering::SeqCst);
    if options.cancel.is_cancelled() || (fleet.all_or_nothing && failed > 0) {
        undo(driver.as_ref(), &mut members, options).await;
    }
    members
}

/// One member's options: the fleet's, with the fleet's stop token and the member's own hooks.
fn member_options(
    options: &DeployOptions,
    stop: &tokio_util::sync::CancellationToken,
    hooks: &FleetHooks,
    index: usize,
) -> DeployOptions {
    let mut member = options.clone();
    member.cancel = stop.clone();
    if let Some(progress) = hooks.progress.clone() {
        member.progress = Some(Arc::new(move |event: &Event| progress(index, event)));
    }
    if let Some(output) = &hooks.output {
        member.output = output(index);
    }
    member
}

/// A member's deployment and what it needs of the fleet.
struct Member {
    index: usize,
    driver: Arc<dyn NodeDriver>,
    options: DeployOptions,
    fleet: FleetOptions,
    stop: tokio_util::sync::CancellationToken,
    failures: Arc<AtomicUsize>,
    done: Option<Arc<dyn Fn(usize, bool) + Send + Sync>>,
}

impl Member {
    async fn deploy(self, request: CreateNode, steps: &Step) -> FleetMember {
        let started = Instant::now();
        let name = request.name.clone();
        if self.stop.is_cancelled() {
            return FleetMember {
                index: self.index,
                name,
                result: MemberResult::NotStarted,
                fate: Fate::NotCreated,
                elapsed: Duration::ZERO,
            };
        }
        let outcome = deploy_node(self.driver.clone(), &request, steps, &self.options).await;
        let (result, fate) = match outcome {
            Ok(done) => (MemberResult::Deployed(done), Fate::Stays),
            Err(error) => {
                let fate = self.settle(&error).await;
                let failed = self.failures.fetch_add(1, Ordering::SeqCst) + 1;
                let too_many = self.fleet.max_failures.is_some_and(|k| failed > k);
                if too_many || self.fleet.all_or_nothing {
                    self.stop.cancel();
                }
                (MemberResult::Failed(error), fate)
            }
        };
        if let Some(done) = &self.done {
            done(self.index, matches!(result, MemberResult::Deployed(_)));
        }
        FleetMember {
            index: self.index,
            name,
            result,
            fate,
            elapsed: started.elapsed(),
        }
    }

    /// A failed member's node: destroyed (unless kept), or destroyed already by the cancel.
    async fn settle(&self, error: &DeploymentError) -> Fate {
        let Some(node) = &error.node else {
            return Fate::NotCreated;
        };
        if matches!(error.cause, super::Cause::Cancelled) {
            // The at-exit hook ran; the journal says whether it succeeded.
            return if self.options.at_exit.is_some() {
                Fate::Destroyed
            } else {
                Fate::Left(Arc::new(LeftBehind::NoAtExit))
            };
        }
        if self.fleet.keep_on_failure {
            if let Some(entry) = &error.journal {
                entry.finish(Stage::Kept).await;
            }
            return Fate::Kept;
        }
        destroy(
            self.driver.as_ref(),
            node,
            &self.options,
            error.journal.as_ref(),
        )
        .await
    }
}

async fn destroy(
    driver: &dyn NodeDriver,
    node: &Node,
    options: &DeployOptions,
    entry: Option<&crate::journal::NodeEntry>,
) -> Fate {
    match destroy_node(driver, node, &options.known_hosts).await {
        Ok(()) => {
            if let Some(entry) = entry {
                entry.finish(Stage::Destroyed).await;
            }
            Fate::Destroyed
        }
        Err(e) => Fate::Left(Arc::new(LeftBehind::DestroyFailed(e))),
    }
}

/// Destroys the nodes of a fleet that was cancelled or must be all or nothing.
async fn undo(driver: &dyn NodeDriver, members: &mut [FleetMember], options: &DeployOptions) {
    for member in members.iter_mut() {
        if let MemberResult::Deployed(done) = &member.result {
            member.fate = destroy(driver, &done.node, options, done.journal.as_ref()).await;
        }
    }
}

/// A driver whose list calls are shared: concurrent waits of a fleet make one list call per
/// poll period between them, rather than one each. Everything a deployment calls is passed on.
struct SharedListing {
    driver: Arc<dyn NodeDriver>,
    max_age: Duration,
    last: tokio::sync::Mutex<std::collections::HashMap<Option<String>, Listing>>,
    /// When the latest create returned: a listing asked for before it may lack that node.
    created: std::sync::Mutex<Option<Instant>>,
}

/// A list call's answer and when the call was made.
type Listing = (Instant, Vec<Node>);

impl SharedListing {
    fn new(driver: Arc<dyn NodeDriver>, options: &DeployOptions) -> Self {
        SharedListing {
            driver,
            max_age: options.poll_period / 2,
            last: tokio::sync::Mutex::default(),
            created: std::sync::Mutex::default(),
        }
    }

    /// The nodes (of `location`), from a list call made less than half a poll period ago and
    /// after the latest create returned, when there was one; callers that arrive while a call
    /// is in flight wait for it.
    async fn list(&self, location: Option<&str>) -> DriverResult<Vec<Node>> {
        let mut last = self.last.lock().await;
        let key = location.map(str::to_string);
        let created = *self.created.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, nodes)) = last.get(&key) {
            let after_creates = created.is_none_or(|c| *at > c);
            if after_creates && at.elapsed() < self.max_age {
                return Ok(nodes.clone());
            }
        }
        let asked = Instant::now();
        let nodes = match location {
            Some(l) => self.driver.list_nodes_in(l).await?,
            None => self.driver.list_nodes().await?,
        };
        last.insert(key, (asked, nodes.clone()));
        Ok(nodes)
    }
}

/// Every method is passed on to the driver; only the two list calls are shared.
#[async_trait::async_trait]
impl NodeDriver for SharedListing {
    fn name(&self) -> &str {
        self.driver.name()
    }

    fn features(&self) -> Features {
        self.driver.features()
    }

    fn default_parallel(&self) -> usize {
        self.driver.default_parallel()
    }

    fn settings(&self) -> ProviderConfig {
        self.driver.settings()
    }

    async fn list_nodes(&self) -> DriverResult<Vec<Node>> {
        self.list(None).await
    }

    async fn list_nodes_in(&self, location: &str) -> DriverResult<Vec<Node>> {
        self.list(Some(location)).await
    }

    async fn get_node(&self, id: &str) -> DriverResult<Node> {
        self.driver.get_node(id).await
    }

    async fn create_node(&self, request: &CreateNode) -> DriverResult<Node> {
        let node = self.driver.create_node(request).await;
        *self.created.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        node
    }

    async fn destroy_node(&self, node: &Node) -> DriverResult<()> {
        self.driver.destroy_node(node).await
    }

    async fn reboot_node(&self, node: &Node) -> DriverResult<()> {
        self.driver.reboot_node(node).await
    }

    async fn stop_node(&self, node: &Node) -> DriverResult<()> {
        self.driver.stop_node(node).await
    }

    async fn start_node(&self, node: &Node) -> DriverResult<()> {
        self.driver.start_node(node).await
    }

    async fn list_images(
        &self,
        location: Option<&str>,
        size: Option<&str>,
    ) -> DriverResult<Vec<NodeImage>> {
        self.driver.list_images(location, size).await
    }

    async fn list_sizes(&self, location: Option<&str>) -> DriverResult<Vec<NodeSize>> {
        self.driver.list_sizes(location).await
    }

    async fn get_size(&self, id: &str) -> DriverResult<NodeSize> {
        self.driver.get_size(id).await
    }

    async fn list_locations(&self) -> DriverResult<Vec<NodeLocation>> {
        self.driver.list_locations().await
    }

    async fn get_image(&self, id: &str) -> DriverResult<NodeImage> {
        self.driver.get_image(id).await
    }

    async fn create_image(
        &self,
        node: &Node,
        name: &str,
        description: Option<&str>,
    ) -> DriverResult<NodeImage> {
        self.driver.create_image(node, name, description).await
    }

    async fn copy_image(
        &self,
        image: &NodeImage,
        location: &str,
        name: &str,
    ) -> DriverResult<NodeImage> {
        self.driver.copy_image(image, location, name).await
    }

    async fn delete_image(&self, image: &NodeImage) -> DriverResult<()> {
        self.driver.delete_image(image).await
    }

    async fn list_key_pairs(&self, location: Option<&str>) -> DriverResult<Vec<KeyPair>> {
        self.driver.list_key_pairs(location).await
    }

    async fn get_key_pair(&self, name: &str) -> DriverResult<KeyPair> {
        self.driver.get_key_pair(name).await
    }

    async fn create_key_pair(&self, name: &str, location: Option<&str>) -> DriverResult<KeyPair> {
        self.driver.create_key_pair(name, location).await
    }

    async fn import_key_pair_from_string(
        &self,
        name: &str,
        public_key: &str,
        location: Option<&str>,
    ) -> DriverResult<KeyPair> {
        (self.driver)
            .import_key_pair_from_string(name, public_key, location)
            .await
    }

    async fn import_key_pair_from_file(
        &self,
        name: &str,
        path: &std::path::Path,
        location: Option<&str>,
    ) -> DriverResult<KeyPair> {
        (self.driver)
            .import_key_pair_from_file(name, path, location)
            .await
    }

    async fn delete_key_pair(&self, key_pair: &KeyPair) -> DriverResult<()> {
        self.driver.delete_key_pair(key_pair).await
    }

    async fn create_volume(&self, request: &CreateVolume) -> DriverResult<StorageVolume> {
        self.driver.create_volume(request).await
    }

    async fn list_volumes(&self) -> DriverResult<Vec<StorageVolume>> {
        self.driver.list_volumes().await
    }

    async fn get_volume(&self, id: &str) -> DriverResult<StorageVolume> {
        self.driver.get_volume(id).await
    }

    async fn attach_volume(&self, node: &Node, volume: &StorageVolume) -> DriverResult<()> {
        self.driver.attach_volume(node, volume).await
    }

    async fn detach_volume(&self, volume: &StorageVolume, node: Option<&Node>) -> DriverResult<()> {
        self.driver.detach_volume(volume, node).await
    }

    async fn destroy_volume(&self, volume: &StorageVolume) -> DriverResult<()> {
        self.driver.destroy_volume(volume).await
    }

    async fn create_volume_snapshot(
        &self,
        volume: &StorageVolume,
        name: Option<&str>,
        description: Option<&str>,
    ) -> DriverResult<VolumeSnapshot> {
        (self.driver)
            .create_volume_snapshot(volume, name, description)
            .await
    }

    async fn list_snapshots(&self) -> DriverResult<Vec<VolumeSnapshot>> {
        self.driver.list_snapshots().await
    }

    async fn list_volume_snapshots(
        &self,
        volume: &StorageVolume,
    ) -> DriverResult<Vec<VolumeSnapshot>> {
        self.driver.list_volume_snapshots(volume).await
    }

    async fn get_snapshot(&self, id: &str) -> DriverResult<VolumeSnapshot> {
        self.driver.get_snapshot(id).await
    }

    async fn destroy_volume_snapshot(&self, snapshot: &VolumeSnapshot) -> DriverResult<()> {
        self.driver.destroy_volume_snapshot(snapshot).await
    }
}

/// What one target of [`run_fleet`] did: `None` when it was cancelled.
pub type RunOutcome = Option<Result<Run, RunFailure>>;

/// One machine of [`run_fleet`]: how it is named, where and how to log in.
#[derive(Debug, Clone)]
pub struct RunMember {
    /// Its name, as the journal and the output show it (the host as given).
    pub label: String,
    /// Where and as whom to log in.
    pub target: Target,
    /// What to log in with (hosts of an inventory may each have a key of their own).
    pub creds: Arc<Credentials>,
}

/// Runs `steps` on every member, at most `parallel` at once (by the rule of [`parallel`]), and hands each outcome to
/// `on_result` with the member's index and how long it took, as soon as it is known. A member's task (and its journal
/// entry, when `options.journal` is bound to a run) is made only when a slot is free, so memory
/// follows what is in flight, not the length of the inventory.
pub async fn run_fleet(
    members: impl IntoIterator<Item = RunMember>,
    steps: &Step,
    options: &DeployOptions,
    parallel: Option<usize>,
    hooks: &FleetHooks,
    mut on_result: impl FnMut(usize, RunOutcome, Duration),
) {
    let permits = Arc::new(Semaphore::new(self::parallel(parallel, None)));
    let steps = Arc::new(steps.clone());
    let mut tasks = tokio::task::JoinSet::new();
    for (index, member) in members.into_iter().enumerate() {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let options = member_options(options, &options.cancel, hooks, index);
        let (steps, done) = (steps.clone(), hooks.done.clone());
        tasks.spawn(async move {
            let _permit = permit;
            let started = Instant::now();
            let outcome = run_member(member, &steps, &options).await;
            if let Some(done) = done {
                done(index, matches!(outcome, Some(Ok(_))));
            }
            (index, outcome, started.elapsed())
        });
        while let Some(Ok((index, result, elapsed))) = tasks.try_join_next() {
            on_result(index, result, elapsed);
        }
    }
    while let Some(joined) = tasks.join_next().await {
        if let Ok((index, result, elapsed)) = joined {
            on_result(index, result, elapsed);
        }
    }
}

/// One member of `run_fleet`: recorded in the journal, its steps run, its end recorded.
async fn run_member(mut member: RunMember, steps: &Step, options: &DeployOptions) -> RunOutcome {
    if let Some(journal) = options.journal.as_ref().filter(|j| j.run_id().is_some()) {
        let intent = crate::journal::NodeIntent {
            name: member.label.clone(),
            address: Some(member.target.addr.ip().to_string()),
            steps: steps.flatten().len(),
            ..Default::default()
        };
        match journal.begin_node(&intent, "run").await {
            Ok(entry) => member.target.journal = Some(entry),
            Err(e) => tracing::warn!(
                "journal: recording host {}: {}",
                member.label,
                crate::error_chain(&e)
            ),
        }
    }
    // The steps see the cancellation themselves: a script running is ended on the node and its
    // directory removed before the outcome comes back.
    let result = match run_steps(&member.target, steps, &member.creds, options).await {
        Err(f) if matches!(f.cause, super::Cause::Cancelled) => None,
        other => Some(other),
    };
    if let Some(entry) = &member.target.journal {
        match &result {
            Some(Ok(_)) => entry.finish(Stage::Done).await,
            Some(Err(f)) => entry.failed(&super::connect::error_chain(&f.cause)).await,
            None => entry.finish(Stage::Cancelled).await,
        }
    }
    result
}
