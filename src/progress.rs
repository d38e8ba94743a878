//! What a person (or a log) sees while a command works. On a terminal: progress bars for long
//! work (`indicatif`) and plain lines printed above them. Off a terminal (cron, systemd, a pipe):
//! no control codes, and every line stamped with the time (RFC 3339), one per step. Waits and
//! retries (606, 615, 429, backoff) show as a line on a terminal and with `-v` elsewhere;
//! `-q` leaves only errors and warnings.
//!
//! Process-wide, set once by `cmd::run`: the lines come from far apart (the Marketo client's
//! retries, the pull's pages), and a command has one terminal.

use std::fmt;
use std::io::{IsTerminal, Write as _};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How much to print, and where.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Level {
    Quiet,
    Normal,
    Verbose,
}

struct Output {
    level: Level,
    /// Progress lines go to stderr (`--json` keeps stdout for the result).
    to_stderr: bool,
    /// Bars and unstamped lines: the stream the lines go to is a terminal.
    terminal: bool,
    /// Unstamped warnings: stderr is a terminal.
    stderr_terminal: bool,
    bars: MultiProgress,
}

static OUTPUT: OnceLock<Output> = OnceLock::new();

/// Sets how the process reports; later calls change nothing.
pub(crate) fn init(level: Level, to_stderr: bool) {
    let terminal = if to_stderr {
        std::io::stderr().is_terminal()
    } else {
        std::io::stdout().is_terminal()
    };
    let bars = MultiProgress::with_draw_target(if terminal && level > Level::Quiet {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    });
    let _ = OUTPUT.set(Output {
        level,
        to_stderr,
        terminal,
        stderr_terminal: std::io::stderr().is_terminal(),
        bars,
    });
}

fn output() -> &'static Output {
    OUTPUT.get_or_init(|| Output {
        level: Level::Normal,
        to_stderr: false,
        terminal: false,
        stderr_terminal: false,
        bars: MultiProgress::with_draw_target(ProgressDrawTarget::hidden()),
    })
}

/// A step's line, unless `-q`.
pub(crate) fn say(line: &str) {
    print(Level::Normal, line);
}

/// A line only with `-v`.
pub(crate) fn detail(line: &str) {
    print(Level::Verbose, line);
}

/// A wait or a retry: visible on a terminal, and with `-v` elsewhere.
pub(crate) fn wait(line: &str) {
    let out = output();
    print(
        if out.terminal {
            Level::Normal
        } else {
            Level::Verbose
        },
        line,
    );
}

/// A line of a long-running loop's own log (`sync --every`): stamped with the time even on a
/// terminal, printed even with `-q`, and on stderr under `--json`, whose stdout holds one
/// result object per cycle.
pub(crate) fn log(line: &str) {
    let line = format!("{} {}", crate::run::now(), crate::redact::redact(line));
    emit(output(), &line);
}

/// Writes a finished line where progress lines go: stderr under `--json`, else stdout.
fn emit(out: &Output, line: &str) {
    if out.to_stderr {
        errln!("{line}");
    } else {
        outln!("{line}");
    }
}

fn print(level: Level, line: &str) {
    let out = output();
    if out.level < level {
        return;
    }
    let line = stamped(out.terminal, &crate::redact::redact(line));
    if out.terminal && !out.bars.is_hidden() {
        // Above the bars, which are redrawn below it.
        let _ = out.bars.println(&line);
    } else {
        emit(out, &line);
    }
}

/// A warning, a listed problem or the error a command stops with: on stderr whatever `-q`
/// says, with every known secret cut out, and stamped with the time as the step lines are
/// when stderr is not a terminal (a `sync --every` under systemd or cron logs it among them).
pub(crate) fn warn(line: &str) {
    let out = output();
    let line = stamped(out.stderr_terminal, &crate::redact::redact(line));
    if out.stderr_terminal && !out.bars.is_hidden() {
        // The bars are drawn on stderr: above them, as they are redrawn below it.
        let _ = out.bars.println(&line);
    } else {
        errln!("{line}");
    }
}

/// `line` as printed: as it is on a terminal; elsewhere each of its lines stamped with the
/// time, blank lines left blank.
fn stamped(terminal: bool, line: &str) -> String {
    if terminal {
        return line.to_string();
    }
    let stamp = crate::run::now();
    line.split('\n')
        .map(|l| {
            if l.is_empty() {
                String::new()
            } else {
                format!("{stamp} {l}")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Set once stdout or stderr failed a write: nothing more is written to it.
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);
static STDERR_CLOSED: AtomicBool = AtomicBool::new(false);

/// Writes one line to stdout (`outln!`). When the reader has gone (`| head`, a log pipe whose
/// reader died) the write fails, with EPIPE since Rust ignores SIGPIPE: the rest of the output
/// is then dropped, and the command goes on to finish its work (a pull keeps staging, a push
/// keeps recording what Marketo acknowledged), its exit code saying how that went.
/// `println!` would panic there, midway through whatever the command was doing. Another
/// failure (a full disk under a redirected stdout) is said once on stderr.
pub(crate) fn write_stdout(line: fmt::Arguments<'_>) {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut out = std::io::stdout().lock();
    if let Err(err) = writeln!(out, "{line}").and_then(|()| out.flush()) {
        stdout_failed(&err);
    }
}

/// Leaves stdout alone from now on, saying why once unless its reader went away.
fn stdout_failed(err: &std::io::Error) {
    STDOUT_CLOSED.store(true, Ordering::Relaxed);
    if err.kind() != std::io::ErrorKind::BrokenPipe {
        write_stderr(format_args!(
            "warning: writing to stdout failed ({err}); the rest of the output is dropped"
        ));
    }
}

/// Writes `value` to stdout as pretty JSON and a newline, as it is serialized, so that a long
/// document (`plan --json` listing every skipped record) is never held whole in memory. A
/// failure to write is handled as `write_stdout` does; a failure of the value itself (a query
/// read while serializing) is returned, after what was already written.
pub(crate) fn write_stdout_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return Ok(());
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let written = serde_json::to_writer_pretty(&mut out, value)
        .map_err(|err| {
            if err.is_io() {
                std::io::Error::from(err)
            } else {
                std::io::Error::other(err)
            }
        })
        .and_then(|()| writeln!(out))
        .and_then(|()| out.flush());
    let Err(err) = written else {
        return Ok(());
    };
    if err
        .get_ref()
        .is_some_and(|inner| inner.is::<serde_json::Error>())
    {
        return Err(anyhow::Error::new(err).context("writing the JSON document"));
    }
    stdout_failed(&err);
    Ok(())
}

/// Writes one line to stderr (`errln!`); once that fails, stderr is left alone.
pub(crate) fn write_stderr(line: fmt::Arguments<'_>) {
    if STDERR_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut err = std::io::stderr().lock();
    if writeln!(err, "{line}").is_err() {
        STDERR_CLOSED.store(true, Ordering::Relaxed);
    }
}

/// A bar over `total` items (records sent of total, with calls and ETA); hidden off a
/// terminal, where the step lines say the same.
pub(crate) fn bar(prefix: &str, total: u64) -> ProgressBar {
    let bar = output().bars.add(ProgressBar::new(total));
    bar.set_style(
        ProgressStyle::with_template("{prefix:>14} [{bar:30}] {pos}/{len} {msg} (ETA {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(prefix.to_string());
    bar
}

/// A spinner for work of unknown length (a pull's entity set: records and pages so far).
pub(crate) fn spinner(prefix: &str) -> ProgressBar {
    let bar = output().bars.add(ProgressBar::new_spinner());
    bar.set_style(
        ProgressStyle::with_template("{prefix:>16} {spinner} {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.set_prefix(prefix.to_string());
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// A spinner for one long piece of work that names the stage it is at (a full evaluation of the
/// export rows: the view it evaluates), cleared when dropped, on an error too, so that the
/// error is not printed below a spinner left behind. Hidden off a terminal, like the others.
pub(crate) struct Stages(ProgressBar);

impl Stages {
    pub(crate) fn at(&self, stage: &str) {
        self.0.set_message(stage.to_string());
    }
}

impl Drop for Stages {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

/// A spinner of `Stages` for `prefix`.
pub(crate) fn stages(prefix: &str) -> Stages {
    Stages(spinner(prefix))
}
