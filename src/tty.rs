//! The terminal: a secret typed or pasted without echo.
//!
//! The line is read byte by byte with echo and signals off, so Ctrl-C is a
//! key like any other: it ends the prompt, the terminal is put back as it was
//! (on every path, by a guard), and the caller decides what to do. Nothing is
//! echoed, ever.

use std::io::{self, Read, Write};

use zeroize::Zeroizing;

/// What a prompt got.
pub enum Answer {
    /// A line (without its newline).
    Line(Zeroizing<String>),
    /// Ctrl-C: the person gave up.
    Interrupted,
    /// Ctrl-D on an empty line, or the end of input.
    Closed,
}

/// Shows `prompt` on `tty` and reads a line from it without echo.
#[cfg(unix)]
pub fn read_hidden(tty: &mut std::fs::File, prompt: &str) -> io::Result<Answer> {
    use rustix::termios::{LocalModes, OptionalActions, SpecialCodeIndex, tcgetattr, tcsetattr};

    /// Puts the terminal back as it was, however the prompt ends.
    struct Restore<'a>(&'a std::fs::File, rustix::termios::Termios);
    impl Drop for Restore<'_> {
        fn drop(&mut self) {
            let _ = tcsetattr(self.0, OptionalActions::Now, &self.1);
        }
    }

    let original = tcgetattr(&*tty)?;
    let mut quiet = original.clone();
    quiet.local_modes -= LocalModes::ECHO | LocalModes::ICANON | LocalModes::ISIG;
    quiet.special_codes[SpecialCodeIndex::VMIN] = 1;
    quiet.special_codes[SpecialCodeIndex::VTIME] = 0;
    write!(tty, "{prompt}")?;
    tty.flush()?;
    let restore = Restore(tty, original);
    tcsetattr(restore.0, OptionalActions::Now, &quiet)?;
    let mut line = Zeroizing::new(String::new());
    let mut byte = [0u8; 1];
    let mut pending = Zeroizing::new(Vec::new());
    let answer = loop {
        let n = (&*restore.0).read(&mut byte)?;
        match (n, byte[0]) {
            (0, _) => break Answer::Closed,
            (_, b'\r' | b'\n') => break Answer::Line(line),
            (_, 0x03) => break Answer::Interrupted,
            (_, 0x04) if line.is_empty() => break Answer::Closed,
            // Backspace, delete: one character back.
            (_, 0x7f | 0x08) => {
                line.pop();
            }
            // Ctrl-U: start again.
            (_, 0x15) => line.clear(),
            (_, b) if b < 0x20 => {}
            (_, b) => {
                pending.push(b);
                if let Ok(text) = std::str::from_utf8(&pending) {
                    line.push_str(text);
                    pending.clear();
                } else if pending.len() >= 4 {
                    pending.clear();
                }
            }
        }
    };
    drop(restore);
    writeln!(tty)?;
    Ok(answer)
}

/// The controlling terminal, for reading and writing, if there is one.
#[cfg(unix)]
pub fn controlling() -> Option<std::fs::File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .ok()
}
