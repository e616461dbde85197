//! `exec`'s terminal: when `exec` runs on a terminal, the command gets a
//! pseudo-terminal of its own as its controlling terminal, and `exec` relays
//! between it and the user's terminal (which stays out of the command's reach:
//! no other terminal, no `TIOCSTI` into the user's shell).
//!
//! While the command runs the user's terminal is raw (every key, Ctrl-C too,
//! goes to the command's terminal, whose line discipline turns Ctrl-C into
//! SIGINT for the command); it is put back as it was however `exec` ends (a
//! guard). The window size is passed on at start and on every SIGWINCH.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use rustix::termios::{OptionalActions, Termios, isatty, tcgetattr, tcsetattr};

/// Whether `exec` should give the command a terminal: its stdin is one.
pub fn wanted() -> bool {
    isatty(rustix::stdio::stdin())
}

/// A pseudo-terminal for the command: `master` stays with `exec`, `slave`
/// becomes the command's stdin (and stdout, stderr where those are terminals).
pub struct Terminal {
    pub master: OwnedFd,
    pub slave: OwnedFd,
}

impl Terminal {
    /// A new pseudo-terminal with the settings and window size of `user`.
    pub fn like(user: BorrowedFd<'_>) -> io::Result<Terminal> {
        use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
        let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY)?;
        rustix::io::fcntl_setfd(&master, rustix::io::FdFlags::CLOEXEC)?;
        grantpt(&master)?;
        unlockpt(&master)?;
        let name = ptsname(&master, Vec::new())?;
        let slave = rustix::fs::open(
            name.as_c_str(),
            rustix::fs::OFlags::RDWR | rustix::fs::OFlags::NOCTTY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )?;
        if let Ok(settings) = tcgetattr(user) {
            let _ = tcsetattr(&slave, OptionalActions::Now, &settings);
        }
        copy_window_size(user, master.as_fd());
        Ok(Terminal { master, slave })
    }
}

/// Passes the window size of `from` on to `to` (the kernel then sends
/// SIGWINCH to the command's foreground process group).
pub fn copy_window_size(from: BorrowedFd<'_>, to: BorrowedFd<'_>) {
    if let Ok(size) = rustix::termios::tcgetwinsize(from) {
        let _ = rustix::termios::tcsetwinsize(to, size);
    }
}

/// The user's terminal in raw mode; put back as it was when dropped.
pub struct RawMode {
    fd: OwnedFd,
    saved: Termios,
}

impl RawMode {
    pub fn enter(fd: BorrowedFd<'_>) -> io::Result<RawMode> {
        let fd = fd.try_clone_to_owned()?;
        let saved = tcgetattr(&fd)?;
        let mut raw = saved.clone();
        raw.make_raw();
        tcsetattr(&fd, OptionalActions::Drain, &raw)?;
        Ok(RawMode { fd, saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = tcsetattr(&self.fd, OptionalActions::Now, &self.saved);
    }
}

/// The two copying threads between the user's terminal and the command's.
pub struct Relay {
    output_done: std::sync::mpsc::Receiver<()>,
}

impl Relay {
    /// Copies `input` (the user's keys) to `master` and `master` (what the
    /// command shows) to `output`, each in a thread of its own.
    pub fn start(master: &OwnedFd, input: OwnedFd, output: OwnedFd) -> io::Result<Relay> {
        let mut to_command = std::fs::File::from(master.try_clone()?);
        let mut from_command = std::fs::File::from(master.try_clone()?);
        let mut keys = std::fs::File::from(input);
        let mut screen = std::fs::File::from(output);
        // The user's keys: this thread may stay blocked in read until exec exits.
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                match keys.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if to_command.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
        });
        let (done, output_done) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                match from_command.read(&mut buf) {
                    // EIO: every holder of the command's side has closed it.
                    Ok(0) => break,
                    Ok(n) => {
                        if screen.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        let _ = screen.flush();
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            let _ = done.send(());
        });
        Ok(Relay { output_done })
    }

    /// Once the command has ended: waits (briefly: something it left behind
    /// may hold its terminal open) until what it wrote is shown.
    pub fn finish(self) {
        let _ = self.output_done.recv_timeout(Duration::from_secs(2));
    }
}

/// Whether stdin is a terminal and this process has a controlling terminal
/// (inside the sandbox: the one `exec` made, whose session leader is out of
/// sight, so its session id cannot be compared).
pub fn stdin_is_controlling_terminal() -> bool {
    isatty(rustix::stdio::stdin())
        && rustix::fs::open(
            "/dev/tty",
            rustix::fs::OFlags::RDWR | rustix::fs::OFlags::NOCTTY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_terminal_gets_the_users_window_size_and_raw_mode_is_undone() {
        // The "user's" terminal is itself a pseudo-terminal here.
        let user =
            rustix::pty::openpt(rustix::pty::OpenptFlags::RDWR | rustix::pty::OpenptFlags::NOCTTY)
                .unwrap();
        rustix::pty::grantpt(&user).unwrap();
        rustix::pty::unlockpt(&user).unwrap();
        let name = rustix::pty::ptsname(&user, Vec::new()).unwrap();
        let user_side = rustix::fs::open(
            name.as_c_str(),
            rustix::fs::OFlags::RDWR | rustix::fs::OFlags::NOCTTY,
            rustix::fs::Mode::empty(),
        )
        .unwrap();
        let size = rustix::termios::Winsize {
            ws_row: 31,
            ws_col: 97,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        rustix::termios::tcsetwinsize(&user_side, size).unwrap();
        let term = Terminal::like(user_side.as_fd()).unwrap();
        let got = rustix::termios::tcgetwinsize(&term.slave).unwrap();
        assert_eq!((got.ws_row, got.ws_col), (31, 97));
        let before = tcgetattr(&user_side).unwrap();
        {
            let _raw = RawMode::enter(user_side.as_fd()).unwrap();
            let now = tcgetattr(&user_side).unwrap();
            assert!(
                !now.local_modes
                    .contains(rustix::termios::LocalModes::ICANON)
            );
            assert!(!now.local_modes.contains(rustix::termios::LocalModes::ISIG));
        }
        let after = tcgetattr(&user_side).unwrap();
        assert_eq!(before.local_modes, after.local_modes);
        assert!(
            after
                .local_modes
                .contains(rustix::termios::LocalModes::ECHO)
        );
    }
}
