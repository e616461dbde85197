//! Running a command on a terminal of its own (a pseudo-terminal), for what a
//! person at a terminal sees: prompts on `/dev/tty`, Ctrl-C, "did you mean".

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A command running with a pseudo-terminal as its controlling terminal and
/// stdin, stdout and stderr.
pub struct Pty {
    master: std::fs::File,
    /// The terminal's side, kept open to look at its settings afterwards.
    pub slave: OwnedFd,
    pub child: Child,
    output: Arc<Mutex<Vec<u8>>>,
}

impl Pty {
    /// Starts `cmd` on a new terminal.
    pub fn spawn(mut cmd: Command) -> Pty {
        use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
        // Not inherited by the command: only its own side of the terminal is.
        #[cfg(any(target_os = "linux", target_os = "freebsd"))]
        let master =
            openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC).expect("openpt");
        #[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
        let master = {
            let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).expect("openpt");
            rustix::io::fcntl_setfd(&master, rustix::io::FdFlags::CLOEXEC).expect("FD_CLOEXEC");
            master
        };
        grantpt(&master).expect("grantpt");
        unlockpt(&master).expect("unlockpt");
        let name = ptsname(&master, Vec::new()).expect("ptsname");
        let slave: OwnedFd = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(name.to_string_lossy().as_ref())
            .expect("open the terminal")
            .into();
        let stdio = |fd: &OwnedFd| Stdio::from(fd.try_clone().expect("dup"));
        cmd.stdin(stdio(&slave))
            .stdout(stdio(&slave))
            .stderr(stdio(&slave));
        let raw = slave.as_raw_fd();
        // SAFETY: setsid and an ioctl between fork and exec.
        // (The test kit's one `unsafe`: the library's `unix::before_exec` is
        // out of its reach, and a test's child needs a controlling terminal.)
        #[allow(unsafe_code)]
        unsafe {
            cmd.pre_exec(move || {
                rustix::process::setsid()?;
                let fd = std::os::fd::BorrowedFd::borrow_raw(raw);
                rustix::process::ioctl_tiocsctty(fd)?;
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn on the terminal");
        let master = std::fs::File::from(master);
        let output = Arc::new(Mutex::new(Vec::new()));
        let reader = master.try_clone().expect("dup the master");
        let sink = output.clone();
        std::thread::spawn(move || {
            let mut reader = reader;
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Pty {
            master,
            slave,
            child,
            output,
        }
    }

    /// What the terminal showed so far.
    pub fn screen(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }

    /// Waits until the screen shows `text`; panics after `limit`.
    pub fn expect(&self, text: &str, limit: Duration) {
        let started = Instant::now();
        while !self.screen().contains(text) {
            assert!(
                started.elapsed() < limit,
                "the terminal never showed {text:?}: {:?}",
                self.screen()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Types `keys`.
    pub fn send(&mut self, keys: &[u8]) {
        self.master.write_all(keys).expect("type");
        self.master.flush().expect("flush");
    }

    /// Waits for the command to end; panics after `limit`.
    pub fn wait(&mut self, limit: Duration) -> std::process::ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                // Let the reader drain what is left.
                std::thread::sleep(Duration::from_millis(50));
                return status;
            }
            if started.elapsed() > limit {
                let _ = self.child.kill();
                panic!("still running after {limit:?}: {:?}", self.screen());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the terminal echoes what is typed (as a shell expects).
    pub fn echoes(&self) -> bool {
        let termios = rustix::termios::tcgetattr(self.slave.as_fd()).expect("tcgetattr");
        termios
            .local_modes
            .contains(rustix::termios::LocalModes::ECHO)
    }
}
