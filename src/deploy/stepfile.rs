//! Step files (TOML) → a validated plan: where the node comes from, how to log in, the steps.
//!
//! Every error names the file, the line and column, and the key, and says how to fix it; unknown
//! keys are errors; every local file a step names is read (and every key parsed) here, before
//! anything is created. Paths are relative to the step file; `~/` is the user's home.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{CloudInitStep, FileStep, RebootStep, ScriptSource, ScriptStep, SshKeyStep, Step};
use crate::model::Interface;
use crate::ssh::{Hop, HostKeyPolicy};

/// A step file that parsed and checked.
#[derive(Debug, Clone)]
pub struct StepFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// `[node]`: where the node comes from (used by `deploy`).
    pub node: NodeSection,
    /// `[ssh]`: how to log in.
    pub ssh: SshSection,
    /// `[provider]`: the provider's own settings (a project id ...), never credentials.
    pub provider: BTreeMap<String, serde_json::Value>,
    /// The `[[step]]`s, in order, as one multi-step.
    pub steps: Step,
    /// The line each step starts on, in order.
    pub step_lines: Vec<usize>,
}

/// `[node]`.
#[derive(Debug, Clone, Default)]
pub struct NodeSection {
    /// The provider (default `local`).
    pub provider: Option<String>,
    /// The node's name.
    pub name: Option<String>,
    /// The image id.
    pub image: Option<String>,
    /// The size id.
    pub size: Option<String>,
    /// The location id.
    pub location: Option<String>,
    /// How long to wait for the node to run and accept a login.
    pub timeout: Option<Duration>,
    /// How many nodes to make (a fleet); `name` may hold `{index}` or `{index:03}`.
    pub count: Option<usize>,
    /// Provider-specific options, passed as `CreateNode::extra`.
    pub options: BTreeMap<String, serde_json::Value>,
}

/// `[ssh]`.
#[derive(Debug, Clone, Default)]
pub struct SshSection {
    /// The first username to try.
    pub username: Option<String>,
    /// The usernames to try after it.
    pub alternate_usernames: Vec<String>,
    /// Private key files.
    pub keys: Vec<PathBuf>,
    /// The SSH port (default: what the node reports, else 22).
    pub port: Option<u16>,
    /// The deadline of each connection attempt.
    pub timeout: Option<Duration>,
    /// How many connections the steps may use in all.
    pub max_tries: Option<u32>,
    /// The host-key policy.
    pub host_key_policy: Option<HostKeyPolicy>,
    /// The known_hosts file.
    pub known_hosts: Option<PathBuf>,
    /// Which addresses to log in on.
    pub interface: Option<Interface>,
    /// Jump hosts to reach the nodes through, first to last (`jump = ["admin@bastion"]`).
    pub jump: Vec<Hop>,
    /// Log in on IPv4 addresses only (Libcloud's `force_ipv4`; nodeup's default is true too).
    pub force_ipv4: Option<bool>,
    /// A failed step runs the whole list of steps again, up to `max_tries` runs (Libcloud's
    /// `max_tries` behaviour); off by default.
    pub retry_failed_steps: Option<bool>,
}

/// A step file error: `FILE:LINE:COLUMN: message`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}:{line}:{column}: {message}", path.display())]
pub struct StepFileError {
    /// The step file.
    pub path: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What is wrong, naming the key, and how to fix it.
    pub message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    node: Option<RawNode>,
    provider: Option<toml::Table>,
    ssh: Option<RawSsh>,
    #[serde(default)]
    step: Vec<Spanned<RawStep>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    provider: Option<Spanned<String>>,
    name: Option<Spanned<String>>,
    image: Option<Spanned<String>>,
    size: Option<Spanned<String>>,
    location: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    count: Option<Spanned<i64>>,
    options: Option<toml::Table>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSsh {
    username: Option<Spanned<String>>,
    alternate_usernames: Option<Vec<Spanned<String>>>,
    keys: Option<Vec<Spanned<String>>>,
    port: Option<Spanned<u16>>,
    timeout: Option<Spanned<String>>,
    max_tries: Option<Spanned<u32>>,
    host_key_policy: Option<Spanned<String>>,
    known_hosts: Option<Spanned<String>>,
    interface: Option<Spanned<String>>,
    jump: Option<Vec<Spanned<String>>>,
    force_ipv4: Option<bool>,
    retry_failed_steps: Option<bool>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Mode {
    Number(u32),
    Text(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    #[serde(rename = "ssh-key")]
    ssh_key: Option<Spanned<String>>,
    file: Option<Spanned<String>>,
    target: Option<Spanned<String>>,
    mode: Option<Spanned<Mode>>,
    sudo: Option<Spanned<bool>>,
    script: Option<Spanned<String>>,
    inline: Option<Spanned<String>>,
    #[serde(rename = "wait-cloud-init")]
    wait_cloud_init: Option<Spanned<bool>>,
    reboot: Option<Spanned<bool>>,
    args: Option<Spanned<Vec<String>>>,
    env: Option<Spanned<BTreeMap<String, String>>>,
    timeout: Option<Spanned<String>>,
    exit_codes: Option<Spanned<Vec<u32>>>,
    keep: Option<Spanned<bool>>,
    name: Option<Spanned<String>>,
}

fn table_to_json(table: toml::Table) -> BTreeMap<String, serde_json::Value> {
    serde_json::to_value(table)
        .ok()
        .and_then(|v| v.as_object().cloned())
        .map(|m| m.into_iter().collect())
        .unwrap_or_default()
}

/// Parses `90s`, `5m`, `1h`, `500ms` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration: write e.g. 30s, 5m, 1h or 500ms"))?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?}: use ms, s, m or h"
            ))
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}

/// [`parse_duration`] for a time limit or a period, which must be longer than zero (a zero timeout
/// would fail every wait, a zero period would poll without pause).
pub fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    let d = parse_duration(text)?;
    if d.is_zero() {
        return Err(format!(
            "{text:?}: give a duration longer than zero, e.g. 30s or 5m"
        ));
    }
    Ok(d)
}

/// Expands `~/` to the home directory; a relative path is taken relative to `base`.
pub fn resolve_path(base: &Path, path: &str) -> PathBuf {
    if let Some(rest) = path.strip_prefix("~/") {
        if let Some(home) = std::env::var_os("HOME") {
            return PathBuf::from(home).join(rest);
        }
    }
    base.join(path)
}

struct Ctx<'a> {
    path: &'a Path,
    text: &'a str,
    base: PathBuf,
}

impl Ctx<'_> {
    fn error(&self, span: Range<usize>, message: String) -> StepFileError {
        let before = &self.text[..span.start.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        StepFileError {
            path: self.path.to_path_buf(),
            line,
            column,
            message,
        }
    }

    fn duration(&self, value: &Spanned<String>, key: &str) -> Result<Duration, StepFileError> {
        let d = parse_duration(value.get_ref())
            .map_err(|e| self.error(value.span(), format!("`{key}`: {e}")))?;
        if d.is_zero() {
            return Err(self.error(value.span(), format!("`{key}` must be longer than zero")));
        }
        Ok(d)
    }

    fn local_file(&self, value: &Spanned<String>, key: &str) -> Result<PathBuf, StepFileError> {
        let path = resolve_path(&self.base, value.get_ref());
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => {}
            Ok(_) => {
                return Err(self.error(
                    value.span(),
                    format!("`{key}`: {} is not a file", path.display()),
                ))
            }
            Err(e) => {
                return Err(self.error(
                    value.span(),
                    format!(
                        "`{key}`: cannot read {} ({e}); paths are relative to the step file",
                        path.display()
                    ),
                ))
            }
        }
        std::fs::File::open(&path).map_err(|e| {
            self.error(
                value.span(),
                format!("`{key}`: cannot read {} ({e})", path.display()),
            )
        })?;
        Ok(path)
    }
}

/// Reads and checks a step file.
pub fn load(path: &Path) -> Result<StepFile, StepFileError> {
    let text = crate::files::read_to_string(path).map_err(|e| StepFileError {
        path: path.to_path_buf(),
        line: 1,
        column: 1,
        message: format!("cannot read the step file: {}", crate::error_chain(&e)),
    })?;
    parse(path, &text)
}

/// Checks the text of a step file read from `path` (for relative paths and messages).
pub fn parse(path: &Path, text: &str) -> Result<StepFile, StepFileError> {
    let base = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let base = if base.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        base
    };
    let ctx = Ctx { path, text, base };
    let raw: RawFile = toml::from_str(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        let message = e.message().trim().to_string();
        let message = if message.starts_with("unknown field") {
            format!("{message}; unknown keys are errors (a typo?)")
        } else {
            message
        };
        ctx.error(span, message)
    })?;

    let node = node_section(&ctx, raw.node)?;
    let ssh = ssh_section(&ctx, raw.ssh)?;

    let mut steps = Vec::new();
    let mut step_lines = Vec::new();
    for (i, raw_step) in raw.step.iter().enumerate() {
        let line = ctx.error(raw_step.span(), String::new()).line;
        steps.push(step(&ctx, i + 1, raw_step)?);
        step_lines.push(line);
    }
    if steps.is_empty() {
        return Err(ctx.error(
            text.len()..text.len(),
            "no steps: add at least one [[step]] (ssh-key, file, script or inline)".into(),
        ));
    }
    let provider = raw.provider.map(table_to_json).unwrap_or_default();
    Ok(StepFile {
        path: path.to_path_buf(),
        node,
        ssh,
        provider,
        steps: Step::Multi(steps),
        step_lines,
    })
}

/// `[node]`, checked.
fn node_section(ctx: &Ctx<'_>, node: Option<RawNode>) -> Result<NodeSection, StepFileError> {
    Ok(match node {
        None => NodeSection::default(),
        Some(n) => {
            let options = n.options.map(table_to_json).unwrap_or_default();
            NodeSection {
                provider: n.provider.map(Spanned::into_inner),
                name: n.name.map(Spanned::into_inner),
                image: n.image.map(Spanned::into_inner),
                size: n.size.map(Spanned::into_inner),
                location: n.location.map(Spanned::into_inner),
                timeout: n
                    .timeout
                    .as_ref()
                    .map(|t| ctx.duration(t, "node.timeout"))
                    .transpose()?,
                count: n
                    .count
                    .as_ref()
                    .map(|c| match usize::try_from(*c.get_ref()) {
                        Ok(n) if n > 0 => Ok(n),
                        _ => Err(ctx.error(c.span(), "`node.count`: give 1 or more".into())),
                    })
                    .transpose()?,
                options,
            }
        }
    })
}

/// `[ssh]`, checked: key files readable, the policy and interface known, `max_tries` at least 1.
fn ssh_section(ctx: &Ctx<'_>, ssh: Option<RawSsh>) -> Result<SshSection, StepFileError> {
    Ok(match ssh {
        None => SshSection::default(),
        Some(s) => {
            let mut keys = Vec::new();
            for key in s.keys.unwrap_or_default() {
                keys.push(ctx.local_file(&key, "ssh.keys")?);
            }
            let host_key_policy = s
                .host_key_policy
                .as_ref()
                .map(|p| {
                    p.get_ref()
                        .parse::<HostKeyPolicy>()
                        .map_err(|e| ctx.error(p.span(), format!("`ssh.host_key_policy`: {e}")))
                })
                .transpose()?;
            let interface = s
                .interface
                .as_ref()
                .map(|i| match i.get_ref().as_str() {
                    "public" => Ok(Interface::Public),
                    "private" => Ok(Interface::Private),
                    other => Err(ctx.error(
                        i.span(),
                        format!("`ssh.interface`: {other:?} is neither \"public\" nor \"private\""),
                    )),
                })
                .transpose()?;
            let mut jump = Vec::new();
            for hop in s.jump.unwrap_or_default() {
                let parsed = hop
                    .get_ref()
                    .parse::<Hop>()
                    .map_err(|e| ctx.error(hop.span(), format!("`ssh.jump`: {e}")))?;
                jump.push(parsed);
            }
            if let Some(tries) = &s.max_tries {
                if *tries.get_ref() == 0 {
                    return Err(
                        ctx.error(tries.span(), "`ssh.max_tries` must be at least 1".into())
                    );
                }
            }
            SshSection {
                username: s.username.map(Spanned::into_inner),
                alternate_usernames: s
                    .alternate_usernames
                    .unwrap_or_default()
                    .into_iter()
                    .map(Spanned::into_inner)
                    .collect(),
                keys,
                port: s.port.map(Spanned::into_inner),
                timeout: s
                    .timeout
                    .as_ref()
                    .map(|t| ctx.duration(t, "ssh.timeout"))
                    .transpose()?,
                max_tries: s.max_tries.map(Spanned::into_inner),
                host_key_policy,
                known_hosts: s.known_hosts.map(|k| resolve_path(&ctx.base, k.get_ref())),
                interface,
                jump,
                force_ipv4: s.force_ipv4,
                retry_failed_steps: s.retry_failed_steps,
            }
        }
    })
}

/// Prefixes an error's message with the step it is in.
fn in_step(number: usize) -> impl Fn(StepFileError) -> StepFileError {
    move |e| StepFileError {
        message: format!("step {number}: {}", e.message),
        ..e
    }
}

/// One `[[step]]`: which kind it is (exactly one), which keys apply to that kind, then the kind's
/// own checks.
fn step(ctx: &Ctx<'_>, number: usize, raw: &Spanned<RawStep>) -> Result<Step, StepFileError> {
    let s = raw.get_ref();
    let err =
        |span: Range<usize>, message: String| ctx.error(span, format!("step {number}: {message}"));
    let kinds: Vec<(&str, Range<usize>)> = [
        ("ssh-key", s.ssh_key.as_ref().map(Spanned::span)),
        ("file", s.file.as_ref().map(Spanned::span)),
        ("script", s.script.as_ref().map(Spanned::span)),
        ("inline", s.inline.as_ref().map(Spanned::span)),
        (
            "wait-cloud-init",
            s.wait_cloud_init.as_ref().map(Spanned::span),
        ),
        ("reboot", s.reboot.as_ref().map(Spanned::span)),
    ]
    .into_iter()
    .filter_map(|(k, span)| span.map(|sp| (k, sp)))
    .collect();
    let kind = match kinds.as_slice() {
        [(kind, _)] => *kind,
        [] => {
            return Err(err(
                raw.span(),
                "says neither what to do: give one of `ssh-key`, `file`, `script`, `inline`, \
                 `wait-cloud-init` or `reboot`"
                    .into(),
            ))
        }
        [_, (second, span), ..] => {
            return Err(err(
                span.clone(),
                format!(
                    "`{second}` with `{}`: a step does one thing; split it into two [[step]]s",
                    kinds[0].0
                ),
            ))
        }
    };
    // Keys that only some kinds take.
    let only = |key: &str, span: Option<Range<usize>>, kinds: &[&str]| match span {
        Some(span) if !kinds.contains(&kind) => Err(err(
            span,
            format!(
                "`{key}` does not apply to a {kind} step (it goes with {})",
                kinds.join(" or ")
            ),
        )),
        _ => Ok(()),
    };
    only("target", s.target.as_ref().map(Spanned::span), &["file"])?;
    only("mode", s.mode.as_ref().map(Spanned::span), &["file"])?;
    only(
        "sudo",
        s.sudo.as_ref().map(Spanned::span),
        &["file", "script", "inline"],
    )?;
    only(
        "timeout",
        s.timeout.as_ref().map(Spanned::span),
        &["script", "inline", "wait-cloud-init", "reboot"],
    )?;
    for (key, span) in [
        ("args", s.args.as_ref().map(Spanned::span)),
        ("env", s.env.as_ref().map(Spanned::span)),
        ("exit_codes", s.exit_codes.as_ref().map(Spanned::span)),
        ("keep", s.keep.as_ref().map(Spanned::span)),
        ("name", s.name.as_ref().map(Spanned::span)),
    ] {
        only(key, span, &["script", "inline"])?;
    }
    let sudo = s.sudo.as_ref().is_some_and(|b| *b.get_ref());

    match kind {
        "ssh-key" => ssh_key_step(ctx, number, raw),
        "file" => file_step(ctx, number, raw, sudo),
        "wait-cloud-init" | "reboot" => waiting_step(ctx, number, raw, kind),
        _ => script_step(ctx, number, raw, sudo),
    }
}

/// An `ssh-key` step: the key itself, or a file holding it (named in errors).
fn ssh_key_step(
    ctx: &Ctx<'_>,
    number: usize,
    raw: &Spanned<RawStep>,
) -> Result<Step, StepFileError> {
    let s = raw.get_ref();
    let err =
        |span: Range<usize>, message: String| ctx.error(span, format!("step {number}: {message}"));
    let value = s.ssh_key.as_ref().map(Spanned::get_ref);
    let span = s.ssh_key.as_ref().map(Spanned::span).unwrap_or_default();
    let value = value.map(String::as_str).unwrap_or_default();
    let mut from_file = None;
    let key = if value.starts_with("ssh-") || value.starts_with("ecdsa-") {
        value.to_string()
    } else {
        let path = ctx
            .local_file(
                s.ssh_key
                    .as_ref()
                    .ok_or_else(|| err(span.clone(), "no key".into()))?,
                "ssh-key",
            )
            .map_err(in_step(number))?;
        let text = crate::files::read_to_string(&path).map_err(|e| {
            err(
                span.clone(),
                format!("`ssh-key`: cannot read {}", crate::error_chain(&e)),
            )
        })?;
        from_file = Some(path);
        text
    };
    let step = SshKeyStep::new(&key);
    step.validate().map_err(|e| {
        let source = from_file
            .as_ref()
            .map(|p| format!(" {}", p.display()))
            .unwrap_or_default();
        err(span, format!("`ssh-key`{source}: {e}"))
    })?;
    Ok(Step::SshKey(step))
}

/// A `wait-cloud-init` or `reboot` step: `true`, and an optional timeout.
fn waiting_step(
    ctx: &Ctx<'_>,
    number: usize,
    raw: &Spanned<RawStep>,
    kind: &str,
) -> Result<Step, StepFileError> {
    let s = raw.get_ref();
    let err =
        |span: Range<usize>, message: String| ctx.error(span, format!("step {number}: {message}"));
    let flag = if kind == "reboot" {
        &s.reboot
    } else {
        &s.wait_cloud_init
    };
    if let Some(flag) = flag.as_ref().filter(|f| !*f.get_ref()) {
        return Err(err(
            flag.span(),
            format!("`{kind} = false` does nothing: remove the step, or set it to true"),
        ));
    }
    let timeout = match &s.timeout {
        Some(t) => Some(parse_duration(t.get_ref()).map_err(|e| err(t.span(), e))?),
        None => None,
    };
    let span = s.timeout.as_ref().map_or(raw.span(), Spanned::span);
    if kind == "reboot" {
        let step = RebootStep { timeout };
        step.validate().map_err(|e| err(span, e))?;
        Ok(Step::Reboot(step))
    } else {
        let step = CloudInitStep { timeout };
        step.validate().map_err(|e| err(span, e))?;
        Ok(Step::WaitCloudInit(step))
    }
}

/// A `file` step: a local file that exists, a target path on the node, a mode.
fn file_step(
    ctx: &Ctx<'_>,
    number: usize,
    raw: &Spanned<RawStep>,
    sudo: bool,
) -> Result<Step, StepFileError> {
    let s = raw.get_ref();
    let err =
        |span: Range<usize>, message: String| ctx.error(span, format!("step {number}: {message}"));
    let file = s
        .file
        .as_ref()
        .ok_or_else(|| err(raw.span(), "no file".into()))?;
    let source = ctx.local_file(file, "file").map_err(in_step(number))?;
    let Some(target) = &s.target else {
        return Err(err(
            file.span(),
            "`file` needs a `target`: the path on the node, e.g. target = \"/etc/motd\"".into(),
        ));
    };
    if target.get_ref().trim().is_empty() || target.get_ref().ends_with('/') {
        return Err(err(
            target.span(),
            "`target` must be a file path on the node, e.g. \"/etc/motd\"".into(),
        ));
    }
    if target.get_ref().chars().any(char::is_control) {
        return Err(err(
            target.span(),
            "`target` holds a newline or another control character, which no path should: \
             remove it"
                .into(),
        ));
    }
    let mode =
        match &s.mode {
            None => None,
            Some(m) => {
                let written = ctx.text.get(m.span()).unwrap_or_default().trim();
                let parsed = match m.get_ref() {
                    // TOML's own octal (0o644) is the number meant.
                    Mode::Number(n) if written.starts_with("0o") => Some(*n),
                    // A bare number is read as chmod reads it: its digits are octal (644 is 0o644).
                    Mode::Number(n) if !written.starts_with("0x") && !written.starts_with("0b") => {
                        u32::from_str_radix(&n.to_string(), 8).ok()
                    }
                    Mode::Number(_) => None,
                    Mode::Text(t) => u32::from_str_radix(t.trim_start_matches("0o"), 8).ok(),
                };
                match parsed {
                    Some(mode) if mode <= 0o7777 => Some(mode),
                    _ => return Err(err(
                        m.span(),
                        "`mode` must be octal permission bits, as chmod takes them: write 644, \
                         \"0644\" or 0o644"
                            .into(),
                    )),
                }
            }
        };
    Ok(Step::File(FileStep {
        source,
        target: target.get_ref().clone(),
        mode,
        sudo,
    }))
}

/// A `script` or `inline` step, with its arguments, environment and limits.
fn script_step(
    ctx: &Ctx<'_>,
    number: usize,
    raw: &Spanned<RawStep>,
    sudo: bool,
) -> Result<Step, StepFileError> {
    let s = raw.get_ref();
    let err =
        |span: Range<usize>, message: String| ctx.error(span, format!("step {number}: {message}"));
    let source = match (&s.script, &s.inline) {
        (Some(script), _) => {
            ScriptSource::File(ctx.local_file(script, "script").map_err(in_step(number))?)
        }
        (None, Some(inline)) => {
            if inline.get_ref().trim().is_empty() {
                return Err(err(inline.span(), "`inline` is empty".into()));
            }
            ScriptSource::Inline(inline.get_ref().clone())
        }
        (None, None) => return Err(err(raw.span(), "no script".into())),
    };
    let mut step = ScriptStep {
        source,
        args: s
            .args
            .as_ref()
            .map(|a| a.get_ref().clone())
            .unwrap_or_default(),
        env: s
            .env
            .as_ref()
            .map(|e| e.get_ref().clone().into_iter().collect())
            .unwrap_or_default(),
        sudo,
        timeout: s
            .timeout
            .as_ref()
            .map(|t| ctx.duration(t, "timeout"))
            .transpose()
            .map_err(in_step(number))?,
        exit_codes: vec![0],
        keep: s.keep.as_ref().is_some_and(|k| *k.get_ref()),
        name: s.name.as_ref().map(|n| n.get_ref().clone()),
    };
    if let Some(codes) = &s.exit_codes {
        step.exit_codes = codes.get_ref().clone();
    }
    let span = s
        .env
        .as_ref()
        .map(Spanned::span)
        .or(s.exit_codes.as_ref().map(Spanned::span))
        .or(s.name.as_ref().map(Spanned::span))
        .unwrap_or(raw.span());
    step.validate().map_err(|e| err(span, e))?;
    Ok(Step::Script(step))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        dir
    }

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl test";

    #[test]
    fn the_example_parses() {
        let dir = dir_with(&[
            ("keys/deployer.pub", KEY),
            ("files/motd", "hi\n"),
            ("scripts/bootstrap.sh", "#!/bin/sh\n"),
        ]);
        let text = r#"
[node]
provider = "local"
name = "web-1"
image = "cloud-debian"
size = "small"
location = "local"

[ssh]
username = "root"
alternate_usernames = ["debian"]
timeout = "10s"

[[step]]
ssh-key = "keys/deployer.pub"

[[step]]
file = "files/motd"
target = "/etc/motd"
mode = "0644"
sudo = true

[[step]]
script = "scripts/bootstrap.sh"
args = ["--role", "web"]
env = { APP_ENV = "production" }
sudo = true
timeout = "5m"
exit_codes = [0]
"#;
        let file = parse(&dir.path().join("deploy.toml"), text).unwrap();
        assert_eq!(file.node.name.as_deref(), Some("web-1"));
        assert_eq!(file.ssh.alternate_usernames, ["debian"]);
        assert_eq!(file.ssh.timeout, Some(Duration::from_secs(10)));
        assert_eq!(file.step_lines, [14, 17, 23]);
        let steps = file.steps.flatten();
        assert_eq!(steps.len(), 3);
        match steps[1] {
            Step::File(f) => {
                assert_eq!(f.mode, Some(0o644));
                assert!(f.sudo);
                assert_eq!(f.source, dir.path().join("files/motd"));
            }
            other => panic!("{other:?}"),
        }
        match steps[2] {
            Step::Script(s) => {
                assert_eq!(s.args, ["--role", "web"]);
                assert_eq!(s.env, [("APP_ENV".to_string(), "production".to_string())]);
                assert_eq!(s.timeout, Some(Duration::from_secs(300)));
            }
            other => panic!("{other:?}"),
        }
    }

    fn error_of(text: &str, files: &[(&str, &str)]) -> String {
        let dir = dir_with(files);
        parse(Path::new("site.toml"), text)
            .err()
            .map(|e| e.to_string())
            .or_else(|| {
                parse(&dir.path().join("site.toml"), text).err().map(|e| {
                    e.to_string()
                        .replace(&dir.path().display().to_string(), "DIR")
                })
            })
            .unwrap_or_default()
    }

    #[test]
    fn errors_name_file_line_column_and_key() {
        let e = error_of("[[step]]\ninline = \"true\"\ncolour = \"blue\"\n", &[]);
        assert!(
            e.starts_with("site.toml:3:1: unknown field `colour`"),
            "{e}"
        );
        let e = error_of("[ssh]\ntimeout = \"ten\"\n[[step]]\ninline = \"x\"\n", &[]);
        assert!(
            e.starts_with("site.toml:2:11: `ssh.timeout`: \"ten\" is not a duration"),
            "{e}"
        );
        let e = error_of(
            "[[step]]\ninline = \"x\"\n\n[[step]]\nfile = \"missing.txt\"\ntarget = \"/x\"\n",
            &[],
        );
        assert!(
            e.starts_with("site.toml:5:8: step 2: `file`: cannot read"),
            "{e}"
        );
        assert!(e.contains("missing.txt"), "{e}");
        let e = error_of("[[step]]\ninline = \"x\"\ntarget = \"/etc/x\"\n", &[]);
        assert!(
            e.contains("3:10: step 1: `target` does not apply to a inline step"),
            "{e}"
        );
        let e = error_of("[[step]]\ninline = \"x\"\nscript = \"y\"\n", &[]);
        assert!(e.contains("a step does one thing"), "{e}");
        let e = error_of("[[step]]\nsudo = true\n", &[]);
        assert!(e.contains("step 1: says neither what to do"), "{e}");
        let e = error_of("[node]\nname = \"x\"\n", &[]);
        assert!(e.contains("no steps"), "{e}");
        let e = error_of(
            "[[step]]\ninline = \"x\"\nenv = { \"BAD NAME\" = \"1\" }\n",
            &[],
        );
        assert!(e.contains("3:7: step 1: environment variable name"), "{e}");
        let e = error_of("[[step]\n", &[]);
        assert!(e.starts_with("site.toml:1:"), "{e}");
    }

    #[test]
    fn wait_cloud_init_takes_a_timeout_and_nothing_else() {
        let dir = dir_with(&[]);
        let path = dir.path().join("s.toml");
        let parsed = parse(
            &path,
            "[[step]]\nwait-cloud-init = true\ntimeout = \"2m\"\n",
        )
        .unwrap();
        let steps = parsed.steps.flatten();
        let Step::WaitCloudInit(step) = steps[0] else {
            panic!("{steps:?}");
        };
        assert_eq!(step.timeout, Some(Duration::from_secs(120)));
        let e = error_of("[[step]]\nwait-cloud-init = false\n", &[]);
        assert!(
            e.contains("2:19: step 1: `wait-cloud-init = false` does nothing"),
            "{e}"
        );
        let e = error_of("[[step]]\nwait-cloud-init = true\nargs = [\"x\"]\n", &[]);
        assert!(
            e.contains("`args` does not apply to a wait-cloud-init step"),
            "{e}"
        );
        let e = error_of("[[step]]\nwait-cloud-init = true\ninline = \"x\"\n", &[]);
        assert!(e.contains("a step does one thing"), "{e}");
        let parsed = parse(&path, "[[step]]\nreboot = true\ntimeout = \"0s\"\n");
        let e = parsed.unwrap_err().to_string();
        assert!(e.contains("the timeout must be longer than zero"), "{e}");
        let parsed = parse(&path, "[[step]]\nreboot = true\n").unwrap();
        assert!(matches!(parsed.steps.flatten()[0], Step::Reboot(_)));
    }

    #[test]
    fn a_bare_mode_is_octal_as_chmod_reads_it_and_a_target_has_no_newline() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), "x").unwrap();
        let path = dir.path().join("s.toml");
        let mode_of = |mode: &str| {
            let text = format!("[[step]]\nfile = \"f\"\ntarget = \"/f\"\nmode = {mode}\n");
            parse(&path, &text).map(|p| match p.steps.flatten()[0] {
                Step::File(f) => f.mode,
                _ => None,
            })
        };
        assert_eq!(mode_of("644").unwrap(), Some(0o644));
        assert_eq!(mode_of("0o644").unwrap(), Some(0o644));
        assert_eq!(mode_of("\"0644\"").unwrap(), Some(0o644));
        assert_eq!(mode_of("4755").unwrap(), Some(0o4755));
        let e = mode_of("648").unwrap_err().to_string();
        assert!(e.contains("as chmod takes them"), "{e}");
        assert!(mode_of("0x1a4").is_err());
        let text = "[[step]]\nfile = \"f\"\ntarget = \"/etc/x\\ny\"\n";
        let e = parse(&path, text).unwrap_err().to_string();
        assert!(e.contains("newline"), "{e}");
    }

    #[test]
    fn modes_and_keys() {
        let dir = dir_with(&[("f", "x"), ("bad.pub", "not a key")]);
        let path = dir.path().join("s.toml");
        let parsed = parse(
            &path,
            "[[step]]\nfile = \"f\"\ntarget = \"/f\"\nmode = 0o600\n",
        )
        .unwrap();
        assert!(matches!(parsed.steps.flatten()[0], Step::File(f) if f.mode == Some(0o600)));
        let e = parse(
            &path,
            "[[step]]\nfile = \"f\"\ntarget = \"/f\"\nmode = \"0999\"\n",
        )
        .unwrap_err();
        assert_eq!((e.line, e.column), (4, 8));
        let e = parse(&path, "[[step]]\nssh-key = \"bad.pub\"\n").unwrap_err();
        assert!(e.message.contains("does not parse"), "{e}");
        let literal = format!("[[step]]\nssh-key = \"{KEY}\"\n");
        parse(&path, &literal).unwrap();
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("5 parsecs").is_err());
    }
}
