//! How a fleet's progress is shown. On a terminal, for more than one member: a live view
//! (indicatif) with a bar for the fleet, counts by phase and one line per member in flight; script
//! output is shown only with `--follow`. Otherwise (CI, or one member): plain lines, prefixed by
//! the member when there are several, as before. With `--log-dir`, each member's progress and
//! output also go to a file of its own. At the end, always: a summary table and the counts.

use std::collections::HashMap;
use std::fs::File;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use nodeup::engine::fleet::{Counts, Fate, FleetHooks, MemberOutput, MemberProgress, Outcome};
use nodeup::engine::{error_chain, Cause, Event};
use nodeup::life::{Stage, STAGES};

use super::output::{event_text, line_sink};

/// How many members in flight get a line of their own in the live view.
const MAX_LIVE_LINES: usize = 12;
/// How often the live view is redrawn, per second.
const REDRAW_HZ: u8 = 10;
/// How many lines of a failed step's stderr the summary shows.
const SUMMARY_STDERR_LINES: usize = 3;

struct Live {
    multi: MultiProgress,
    bar: ProgressBar,
    lines: Mutex<HashMap<usize, ProgressBar>>,
}

/// A fleet's display.
pub struct FleetView {
    labels: Vec<String>,
    started: Instant,
    live: Option<Live>,
    follow: bool,
    log_dir: Option<PathBuf>,
    /// Each member's log file once opened; `None` when it could not be (said once).
    logs: Mutex<HashMap<usize, Option<File>>>,
    stages: Mutex<Vec<Stage>>,
    finished: AtomicUsize,
}

/// How many members finish between two returns of freed memory to the system.
const TRIM_EVERY: usize = 100;

/// Gives memory that was freed back to the system. A fleet's connections come and go by the
/// thousand, and glibc keeps what they freed in its arenas: without this, peak memory grows with
/// the number of machines done rather than staying with the number in flight (measured: +9 KB per
/// host over 3,000 hosts, flat with it).
fn release_freed_memory() {
    // SAFETY: malloc_trim only returns free memory at the top of glibc's heaps to the system.
    unsafe {
        libc::malloc_trim(0);
    }
}

impl FleetView {
    /// A view of members named `labels`; live when stderr is a terminal and there are several.
    ///
    /// # Errors
    /// The log directory cannot be made.
    pub fn new(
        labels: Vec<String>,
        follow: bool,
        log_dir: Option<PathBuf>,
    ) -> std::io::Result<Arc<FleetView>> {
        if let Some(dir) = &log_dir {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| std::io::Error::other(format!("--log-dir {}: {e}", dir.display())))?;
        }
        let live =
            (labels.len() > 1 && std::io::stderr().is_terminal()).then(|| live(labels.len()));
        let stages = Mutex::new(vec![Stage::Queued; labels.len()]);
        Ok(Arc::new(FleetView {
            labels,
            started: Instant::now(),
            live,
            follow,
            log_dir,
            logs: Mutex::default(),
            stages,
            finished: AtomicUsize::new(0),
        }))
    }

    fn several(&self) -> bool {
        self.labels.len() > 1
    }

    /// The hooks that feed this view; `also` sees every event too.
    pub fn hooks(self: &Arc<Self>, also: Option<nodeup::engine::Progress>) -> FleetHooks {
        let view = self.clone();
        let progress: MemberProgress = Arc::new(move |index, event| {
            if let Some(also) = &also {
                also(event);
            }
            view.event(index, event);
        });
        let view = self.clone();
        let output: MemberOutput = Arc::new(move |index| Some(view.output(index)));
        let view = self.clone();
        FleetHooks {
            progress: Some(progress),
            output: Some(output),
            done: Some(Arc::new(move |index, ok| view.finished(index, ok))),
        }
    }

    fn event(&self, index: usize, event: &Event) {
        self.set_stage(index, event.stage());
        let text = event_text(event);
        let elapsed = self.started.elapsed().as_secs_f64();
        self.log(index, format!("{text} ({elapsed:.1}s)\n").as_bytes());
        let label = &self.labels[index];
        match &self.live {
            Some(live) => {
                let mut lines = live.lines.lock().unwrap_or_else(|e| e.into_inner());
                if !lines.contains_key(&index) && lines.len() < MAX_LIVE_LINES {
                    let line = live.multi.add(ProgressBar::new_spinner());
                    line.set_style(
                        ProgressStyle::with_template("  {spinner} {msg}").expect("valid"),
                    );
                    lines.insert(index, line);
                }
                if let Some(line) = lines.get(&index) {
                    line.set_message(format!("{label}: {text}"));
                    line.tick();
                }
            }
            None if self.several() => eprintln!("[{label}] {text} ({elapsed:.1}s)"),
            None => eprintln!("{text} ({elapsed:.1}s)"),
        }
    }

    fn set_stage(&self, index: usize, stage: Stage) {
        let mut stages = self.stages.lock().unwrap_or_else(|e| e.into_inner());
        stages[index] = stage;
        if let Some(live) = &self.live {
            live.bar.set_message(counts_text(&stages));
        }
    }

    /// Where member `index`'s script output goes: its log file, and the terminal for one member,
    /// with `--follow`, or (prefixed) when the view is not live.
    fn output(self: &Arc<Self>, index: usize) -> nodeup::ssh::OutputSink {
        let view = self.clone();
        let tag = if self.several() {
            format!("[{}] ", self.labels[index])
        } else {
            "  | ".to_string()
        };
        line_sink(Arc::new(move |line: &[u8]| {
            view.log(index, line);
            match &view.live {
                Some(live) if view.follow => {
                    let text = String::from_utf8_lossy(line);
                    live.multi.suspend(|| eprint!("{tag}{text}"));
                }
                Some(_) => {}
                None => {
                    let mut err = std::io::stderr().lock();
                    let _ = err.write_all(tag.as_bytes());
                    let _ = err.write_all(line);
                }
            }
        }))
    }

    fn log(&self, index: usize, bytes: &[u8]) {
        let Some(dir) = &self.log_dir else { return };
        let mut logs = self.logs.lock().unwrap_or_else(|e| e.into_inner());
        let file = logs.entry(index).or_insert_with(|| {
            open_log(dir, &self.labels[index])
                .inspect_err(|e| self.warn(&format!("warning: --log-dir: {e}")))
                .ok()
        });
        if let Some(file) = file {
            let _ = file.write_all(bytes);
        }
    }

    /// Says something on stderr, above the live view when there is one.
    fn warn(&self, text: &str) {
        match &self.live {
            Some(live) => live.multi.suspend(|| eprintln!("{text}")),
            None => eprintln!("{text}"),
        }
    }

    /// Member `index` finished (`ok` or not): its line goes, the bar moves, its log is closed.
    pub fn finished(&self, index: usize, ok: bool) {
        if self.finished.fetch_add(1, Ordering::Relaxed) % TRIM_EVERY == TRIM_EVERY - 1 {
            release_freed_memory();
        }
        self.set_stage(index, if ok { Stage::Done } else { Stage::Failed });
        let result = if ok { "ok" } else { "failed" };
        let elapsed = self.started.elapsed().as_secs_f64();
        self.log(index, format!("{result} ({elapsed:.1}s)\n").as_bytes());
        self.logs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&index);
        if let Some(live) = &self.live {
            let line = live
                .lines
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&index);
            if let Some(line) = line {
                line.finish_and_clear();
                live.multi.remove(&line);
            }
            live.bar.inc(1);
        }
    }

    /// Ends the live view (the summary follows on plain stderr).
    pub fn close(&self) {
        if let Some(live) = &self.live {
            for (_, line) in live.lines.lock().unwrap_or_else(|e| e.into_inner()).drain() {
                line.finish_and_clear();
            }
            live.bar.finish();
        }
    }
}

fn live(total: usize) -> Live {
    let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(REDRAW_HZ));
    let bar = multi.add(ProgressBar::new(total as u64));
    bar.set_style(
        ProgressStyle::with_template("[{elapsed_precise}] {bar:30} {pos}/{len} {msg}")
            .expect("valid template"),
    );
    bar.enable_steady_tick(Duration::from_millis(1000 / u64::from(REDRAW_HZ)));
    Live {
        multi,
        bar,
        lines: Mutex::default(),
    }
}

/// "creating 2 · waiting 1 · done 5 · failed 1": the stages that have members (those queued are
/// what the bar has not reached).
fn counts_text(stages: &[Stage]) -> String {
    STAGES
        .iter()
        .filter(|stage| **stage != Stage::Queued)
        .filter_map(|stage| {
            let n = stages.iter().filter(|s| *s == stage).count();
            (n > 0).then(|| format!("{stage} {n}"))
        })
        .collect::<Vec<_>>()
        .join(" · ")
}

/// A member's log file in `dir` (0600: script output may hold secrets), named after it.
fn open_log(dir: &Path, label: &str) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let name: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.@".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let path = dir.join(format!("{name}.log"));
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        // A link planted in the directory would send the output (secrets, maybe) elsewhere.
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .map_err(|e| {
            let why = if e.raw_os_error() == Some(libc::ELOOP) {
                "is a symbolic link, which is never followed: this log is not written (remove the \
                 link)"
                    .to_string()
            } else {
                e.to_string()
            };
            std::io::Error::other(format!("{}: {why}", path.display()))
        })
}

/// One line of the summary table.
#[derive(Debug, Clone)]
pub struct SummaryRow {
    /// The node or host.
    pub name: String,
    /// Its address.
    pub address: String,
    /// The user nodeup logged in as.
    pub user: String,
    /// How it ended.
    pub outcome: Outcome,
    /// What became of its node (`deploy`).
    pub fate: Option<Fate>,
    /// How long it took.
    pub time: Duration,
    /// The step that failed, as "N kind".
    pub failed_step: String,
    /// The last lines of the failed step's stderr (or the error).
    pub stderr_tail: Vec<String>,
}

impl SummaryRow {
    /// The result column: the outcome, and what became of the node when that is not obvious.
    pub fn result(&self) -> String {
        match (&self.outcome, &self.fate) {
            (Outcome::Ok | Outcome::NotStarted, _) | (_, None) => self.outcome.to_string(),
            (outcome, Some(fate)) => format!("{outcome} ({fate})"),
        }
    }

    /// The last lines of `text`.
    pub fn tail(text: &str) -> Vec<String> {
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        lines[lines.len().saturating_sub(SUMMARY_STDERR_LINES)..]
            .iter()
            .map(|l| l.to_string())
            .collect()
    }
}

/// What the summary says of a failure: the error's first line, then the last lines of the failed
/// step's stderr.
pub fn failure_lines(cause: &Cause) -> Vec<String> {
    let text = error_chain(cause);
    let head = text.split("; stderr: ").next().unwrap_or("");
    let mut lines: Vec<String> = head.lines().take(1).map(str::to_string).collect();
    if let Cause::Step(e) = cause {
        if let Some((_, _, stderr)) = e.output() {
            lines.extend(SummaryRow::tail(&stderr.text()));
        }
    }
    lines
}

/// Prints the summary table and the counts on stderr.
pub fn print_summary(rows: &[SummaryRow], noun: &str) {
    let width = |f: fn(&SummaryRow) -> &str, title: &str| {
        rows.iter()
            .map(|r| f(r).chars().count())
            .chain([title.len()])
            .max()
            .unwrap_or(0)
    };
    let results: Vec<String> = rows.iter().map(SummaryRow::result).collect();
    let wr = results
        .iter()
        .map(|r| r.chars().count())
        .chain(["RESULT".len()])
        .max()
        .unwrap_or(0);
    let (wn, wa, wu) = (
        width(|r| &r.name, "NODE"),
        width(|r| &r.address, "ADDRESS"),
        width(|r| &r.user, "USER"),
    );
    eprintln!(
        "{:<wn$}  {:<wa$}  {:<wu$}  {:<wr$}  {:>7}  FAILED STEP",
        "NODE", "ADDRESS", "USER", "RESULT", "TIME"
    );
    let not_started = rows
        .iter()
        .filter(|r| r.outcome == Outcome::NotStarted)
        .count();
    for (r, result) in rows.iter().zip(&results) {
        if r.outcome == Outcome::NotStarted {
            continue;
        }
        eprintln!(
            "{:<wn$}  {:<wa$}  {:<wu$}  {:<wr$}  {:>6.1}s  {}",
            r.name,
            r.address,
            r.user,
            result,
            r.time.as_secs_f64(),
            r.failed_step
        );
        for line in &r.stderr_tail {
            eprintln!("    | {line}");
        }
    }
    if not_started > 0 {
        eprintln!("({not_started} {noun} not started: the fleet stopped first)");
    }
    let counts = Counts::of(rows.iter().map(|r| r.outcome));
    let counted = match counts.total {
        1 => noun.trim_end_matches('s'),
        _ => noun,
    };
    eprintln!(
        "{} {counted}: {} ok, {} failed, {} not run",
        counts.total, counts.ok, counts.failed, counts.not_run
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_name_only_the_stages_that_have_members() {
        let stages = [Stage::Creating, Stage::Done, Stage::Done, Stage::Queued];
        assert_eq!(counts_text(&stages), "creating 1 · done 2");
        assert_eq!(SummaryRow::tail("a\nb\n\nc\nd\n"), ["b", "c", "d"]);
    }
}
