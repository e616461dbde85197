//! Running a command on someone's behalf (`exec`, and `exec`'s process 1 inside
//! its sandbox): the signals a person or a job runner sends us are passed on,
//! the command's exit status becomes ours, and we outlive it to clean up.

use std::time::Duration;

use rustix::process::{Pid, Signal, WaitOptions, WaitStatus};
use tokio::signal::unix::{SignalKind, signal};

/// Catches the signals that are passed on, and SIGCHLD. Create it before the
/// command starts (inside a tokio runtime), so no signal is lost.
pub struct Forwarding {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    quit: tokio::signal::unix::Signal,
    usr1: tokio::signal::unix::Signal,
    usr2: tokio::signal::unix::Signal,
    child: tokio::signal::unix::Signal,
}

impl Forwarding {
    pub fn install() -> std::io::Result<Forwarding> {
        Ok(Forwarding {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
            quit: signal(SignalKind::quit())?,
            usr1: signal(SignalKind::user_defined1())?,
            usr2: signal(SignalKind::user_defined2())?,
            child: signal(SignalKind::child())?,
        })
    }

    /// Waits until `child` ends and returns its exit code (128 + N when signal
    /// N ended it). SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 are
    /// passed to `target()` (the child itself when it says `None`). With
    /// `reap_all` (process 1 of a pid namespace) every other child that ends is
    /// reaped too.
    pub async fn wait(
        &mut self,
        child: Pid,
        target: impl Fn() -> Option<Pid>,
        reap_all: bool,
    ) -> std::io::Result<i32> {
        // SIGCHLD can race the spawn; a slow tick catches what a signal missed.
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            if let Some(status) = reap(child, reap_all)? {
                return Ok(exit_code(status));
            }
            let forward = tokio::select! {
                _ = self.child.recv() => None,
                _ = tick.tick() => None,
                _ = self.int.recv() => Some(Signal::INT),
                _ = self.term.recv() => Some(Signal::TERM),
                _ = self.hup.recv() => Some(Signal::HUP),
                _ = self.quit.recv() => Some(Signal::QUIT),
                _ = self.usr1.recv() => Some(Signal::USR1),
                _ = self.usr2.recv() => Some(Signal::USR2),
            };
            if let Some(sig) = forward {
                let to = target().unwrap_or(child);
                tracing::debug!(signal = ?sig, pid = to.as_raw_nonzero().get(), "passing a signal on");
                let _ = rustix::process::kill_process(to, sig);
            }
        }
    }
}

/// Reaps what has ended; returns `child`'s status once it has.
fn reap(child: Pid, reap_all: bool) -> std::io::Result<Option<WaitStatus>> {
    loop {
        // Any child (`wait`), whatever its process group (the command may
        // have one of its own), or only `child`.
        let options = WaitOptions::NOHANG | WaitOptions::UNTRACED;
        let waited = if reap_all {
            rustix::process::wait(options)
        } else {
            rustix::process::waitpid(Some(child), options)
        };
        match waited {
            // Stopped (Ctrl-Z on a terminal of its own, where no shell of the
            // user's can resume it): continued, or the user would be stuck.
            Ok(Some((pid, status))) if pid == child && status.stopped() => {
                let _ = rustix::process::kill_process(child, Signal::CONT);
            }
            Ok(Some((pid, status))) if pid == child => return Ok(Some(status)),
            // Another child (an orphan we inherited as process 1): reaped (or
            // stopped), go on.
            Ok(Some(_)) => continue,
            Ok(None) => return Ok(None),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// The shell's convention: the exit status, or 128 + the signal that ended it.
pub fn exit_code(status: WaitStatus) -> i32 {
    match (status.exit_status(), status.terminating_signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128_i32.saturating_add(signal),
        (None, None) => 1,
    }
}

/// An exit code as the process's own.
pub fn as_exit_code(code: i32) -> std::process::ExitCode {
    std::process::ExitCode::from(u8::try_from(code).unwrap_or(1))
}
