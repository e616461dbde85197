//! The Unix calls that need `unsafe`, each behind a small safe function with
//! its `SAFETY:` argument (as `win32` gathers Windows'): what a child does
//! between fork and exec, the environment block, the user database, a socket
//! peer's uid where there is no `SO_PEERCRED`, and the `sysctl`/`proc_pidinfo`
//! process facts of macOS and FreeBSD. Everything `rustix` offers safely is
//! called through `rustix` where it is used instead.
//!
//! `unsafe_code` is denied everywhere else (`[lints]` in `Cargo.toml`).
#![allow(unsafe_code)]

use std::io;
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::process::Command;

use zeroize::Zeroize;

// ---------------------------------------------------------------- fork to exec

/// Which session and process group a child takes between fork and exec.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Session {
    /// This process's (nothing done).
    #[default]
    Same,
    /// A new session without a controlling terminal.
    New,
    /// A new session whose controlling terminal is stdin (`exec`'s
    /// pseudo-terminal for its command).
    NewOnStdinTerminal,
    /// A process group of its own, made the foreground group of stdin, the
    /// controlling terminal (a command on the sandbox's terminal), so the
    /// terminal's signals (Ctrl-C) go to it alone. Nothing when stdin is a
    /// terminal but not the controlling one.
    ForegroundOnStdinTerminal,
}

/// What a child does between fork and exec: only steps from this list, each
/// an async-signal-safe system call, so asking for them is safe.
#[derive(Clone, Copy, Debug, Default)]
pub struct BeforeExec {
    /// Clears close-on-exec on this descriptor, so the program inherits it.
    /// It must stay open until the command is spawned (else the child's
    /// `fcntl` fails with `EBADF` and so does the spawn).
    pub inherit: Option<RawFd>,
    pub session: Session,
    /// Killed when this process dies (`PR_SET_PDEATHSIG` on Linux and
    /// FreeBSD); the child gives up when its parent is no longer this pid
    /// (this process died before the signal was set).
    pub dies_with: Option<rustix::process::Pid>,
}

impl BeforeExec {
    /// The steps, in the child. Allocates nothing; async-signal-safe calls only.
    fn run(&self) -> io::Result<()> {
        if let Some(fd) = self.inherit {
            // SAFETY: a raw descriptor number handed down from the parent,
            // borrowed for one fcntl; a closed one is EBADF, not undefined behaviour.
            let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
            rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty())?;
        }
        match self.session {
            Session::Same => {}
            Session::New => {
                rustix::process::setsid()?;
            }
            Session::NewOnStdinTerminal => {
                rustix::process::setsid()?;
                rustix::process::ioctl_tiocsctty(rustix::stdio::stdin())?;
            }
            Session::ForegroundOnStdinTerminal => take_foreground()?,
        }
        if let Some(parent) = self.dies_with {
            #[cfg(any(target_os = "linux", target_os = "freebsd"))]
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
            if rustix::process::getppid() != Some(parent) {
                return Err(io::Error::other("the parent went away"));
            }
        }
        Ok(())
    }
}

/// Has `command`'s child take `steps` between fork and exec.
pub fn before_exec(command: &mut Command, steps: BeforeExec) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure only runs `BeforeExec::run`: fcntl, setsid, ioctl,
    // setpgid, tcsetpgrp, signal, prctl/procctl and getppid, all
    // async-signal-safe; it allocates nothing and takes no lock.
    unsafe {
        command.pre_exec(move || steps.run());
    }
}

/// A process group of its own, the foreground group of stdin (the
/// controlling terminal); `SIGTTOU` ignored meanwhile, since a process
/// outside the foreground group changing it would otherwise be stopped.
fn take_foreground() -> io::Result<()> {
    rustix::process::setpgid(None, None)?;
    set_sigttou_ignored(true);
    let set = rustix::termios::tcsetpgrp(rustix::stdio::stdin(), rustix::process::getpgrp());
    set_sigttou_ignored(false);
    match set {
        // stdin is a terminal, but not the controlling one: nothing to hand over.
        Err(rustix::io::Errno::NOTTY) => Ok(()),
        other => Ok(other?),
    }
}

/// `SIGTTOU` ignored, or back to its default action. Async-signal-safe.
fn set_sigttou_ignored(ignored: bool) {
    let action = if ignored {
        libc::SIG_IGN
    } else {
        libc::SIG_DFL
    };
    // SAFETY: signal(2) with SIG_IGN or SIG_DFL installs no handler (no code
    // of ours runs on the signal) and is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGTTOU, action);
    }
}

// ---------------------------------------------------------------- environment

/// Takes `name` out of the environment for good: overwrites the value's bytes
/// in the process's environment block with zeros and removes the variable, so
/// neither children nor readers of `/proc/PID/environ` see it. Done only
/// while this process has one thread, which is checked; with more (or when
/// that cannot be told) the environment is left as it is and `false` returned.
pub fn wipe_env_var(name: &str) -> bool {
    if !single_threaded() {
        return false;
    }
    if let Ok(cname) = std::ffi::CString::new(name) {
        // SAFETY: getenv returns a pointer into the environment block, valid
        // until the environment is modified; this process has one thread
        // (checked above: none can start but from this one), and we write
        // only the value's own bytes, up to its NUL.
        unsafe {
            let p = libc::getenv(cname.as_ptr());
            if !p.is_null() {
                let len = libc::strlen(p);
                std::slice::from_raw_parts_mut(p.cast::<u8>(), len).zeroize();
            }
        }
    }
    // SAFETY: this process has one thread (checked above), so nothing else
    // reads or writes the environment meanwhile.
    unsafe { std::env::remove_var(name) };
    true
}

/// Whether this process has exactly one thread (`false` when that cannot be
/// told). Only this thread could start another, so the answer holds until it does.
pub fn single_threaded() -> bool {
    thread_count() == Some(1)
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn thread_count() -> Option<usize> {
    Some(std::fs::read_dir("/proc/self/task").ok()?.count())
}

#[cfg(target_os = "macos")]
fn thread_count() -> Option<usize> {
    let pid = libc::c_int::try_from(rustix::process::getpid().as_raw_nonzero().get()).ok()?;
    let size = size_of::<libc::proc_taskinfo>();
    // SAFETY: `proc_taskinfo` is integers, for which all zero bytes is a valid value.
    let mut info: libc::proc_taskinfo = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is valid for writes of `size` bytes, which is the buffer
    // size passed; the kernel writes at most that.
    let written = unsafe {
        libc::proc_pidinfo(
            pid,
            libc::PROC_PIDTASKINFO,
            0,
            (&raw mut info).cast(),
            libc::c_int::try_from(size).ok()?,
        )
    };
    if usize::try_from(written).ok()? != size {
        return None;
    }
    usize::try_from(info.pti_threadnum).ok()
}

#[cfg(target_os = "freebsd")]
fn thread_count() -> Option<usize> {
    let pid = rustix::process::getpid().as_raw_nonzero().get();
    usize::try_from(kinfo_proc(pid)?.ki_numthreads).ok()
}

#[cfg(not(any(
    target_os = "linux",
    target_os = "android",
    target_os = "macos",
    target_os = "freebsd"
)))]
fn thread_count() -> Option<usize> {
    None
}

// ---------------------------------------------------------------- users, peers

/// The home directory of `uid` in the user database.
pub fn passwd_home(uid: u32) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: getpwuid_r writes only into `pwd` and `buf` (whose length it is
    // given) and sets `result` to null or to `&pwd`; `pw_dir` points into
    // `buf`, which outlives its use here. `passwd` is integers and pointers,
    // for which all zero bytes is a valid value.
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwuid_r(
            uid,
            &mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        );
        if rc != 0 || result.is_null() || pwd.pw_dir.is_null() {
            return None;
        }
        let dir = std::ffi::CStr::from_ptr(pwd.pw_dir);
        let dir = std::ffi::OsStr::from_bytes(dir.to_bytes());
        (!dir.is_empty()).then(|| PathBuf::from(dir))
    }
}

/// The uid of the process at the other end of a Unix socket.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub fn peer_uid(socket: &impl std::os::fd::AsFd) -> io::Result<u32> {
    Ok(rustix::net::sockopt::socket_peercred(socket)?.uid.as_raw())
}

/// The uid of the process at the other end of a Unix socket.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub fn peer_uid(socket: &impl std::os::fd::AsFd) -> io::Result<u32> {
    use std::os::fd::AsRawFd;
    let (mut uid, mut gid) = (0, 0);
    // SAFETY: getpeereid writes two integers through valid pointers.
    let rc = unsafe { libc::getpeereid(socket.as_fd().as_raw_fd(), &mut uid, &mut gid) };
    if rc == 0 {
        Ok(uid)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// No debugger may attach to this process (macOS `PT_DENY_ATTACH`).
#[cfg(target_os = "macos")]
pub fn deny_debugger() {
    // SAFETY: PT_DENY_ATTACH takes no pointer arguments and only affects this process.
    unsafe {
        libc::ptrace(libc::PT_DENY_ATTACH, 0, std::ptr::null_mut(), 0);
    }
}

// ---------------------------------------------------------------- process facts (BSD)

/// `sysctl` into a byte buffer; the number of bytes the kernel wrote.
#[cfg(any(target_os = "macos", target_os = "freebsd"))]
pub fn sysctl_bytes(mib: &mut [libc::c_int], buf: &mut [u8]) -> Option<usize> {
    let namelen = libc::c_uint::try_from(mib.len()).ok()?;
    let mut len: libc::size_t = buf.len();
    // SAFETY: `mib` is valid for `namelen` ints; the kernel writes at most
    // `len` bytes, which is `buf`'s length, and sets `len` to what it wrote;
    // nothing is set (new value null, length 0).
    let rc = unsafe {
        libc::sysctl(
            mib.as_mut_ptr(),
            namelen,
            buf.as_mut_ptr().cast(),
            &mut len,
            std::ptr::null_mut(),
            0,
        )
    };
    (rc == 0).then_some(len.min(buf.len()))
}

/// `proc_pidinfo(PROC_PIDT_SHORTBSDINFO)` of `pid`, when it is that process's
/// (the libc crate has no `kinfo_proc` for macOS; this struct it declares and tests).
#[cfg(target_os = "macos")]
pub fn bsd_short_info(pid: libc::c_int) -> Option<libc::proc_bsdshortinfo> {
    let size = size_of::<libc::proc_bsdshortinfo>();
    // SAFETY: `proc_bsdshortinfo` is integers and integer arrays, for which
    // all zero bytes is a valid value.
    let mut info: libc::proc_bsdshortinfo = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is valid for writes of `size` bytes, which is the
    // buffer size passed; the kernel writes at most that.
    let written = unsafe {
        libc::proc_pidinfo(
            pid,
            libc::PROC_PIDT_SHORTBSDINFO,
            0,
            (&raw mut info).cast(),
            libc::c_int::try_from(size).ok()?,
        )
    };
    (usize::try_from(written).ok()? == size && i64::from(info.pbsi_pid) == i64::from(pid))
        .then_some(info)
}

/// `sysctl kern.proc.pid.PID` (`kinfo_proc`), when it is that process's.
#[cfg(target_os = "freebsd")]
pub fn kinfo_proc(pid: libc::c_int) -> Option<libc::kinfo_proc> {
    let mut mib = [libc::CTL_KERN, libc::KERN_PROC, libc::KERN_PROC_PID, pid];
    let size = size_of::<libc::kinfo_proc>();
    let mut len: libc::size_t = size;
    // SAFETY: `kinfo_proc` is integers, arrays and raw pointers, for which
    // all zero bytes is a valid value.
    let mut info: libc::kinfo_proc = unsafe { std::mem::zeroed() };
    // SAFETY: `mib` is valid for its 4 ints; `info` is valid for writes of
    // `len` bytes (its size) and the kernel writes at most that; nothing
    // is set.
    let rc = unsafe {
        libc::sysctl(
            mib.as_mut_ptr(),
            4,
            (&raw mut info).cast(),
            &mut len,
            std::ptr::null(),
            0,
        )
    };
    (rc == 0 && len == size && info.ki_pid == pid).then_some(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With a second thread the environment is left alone.
    #[test]
    fn with_two_threads_the_environment_is_left_alone() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let other = std::thread::spawn(move || rx.recv());
        assert_eq!(thread_count().map(|n| n >= 2), Some(true));
        assert!(!single_threaded());
        assert!(!wipe_env_var("GITHOSTED_UNIX_TEST_NEVER_SET"));
        drop(tx);
        let _ = other.join();
    }

    #[test]
    fn the_home_of_root_is_in_the_user_database() {
        assert!(passwd_home(0).is_some());
    }
}
