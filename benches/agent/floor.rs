//! The floor of the warm-path benchmark: a std-only program that does what a
//! credential helper must at the least — read git's request, one round trip on
//! a Unix socket, print two lines. Compiled by the benchmark with `rustc -O`.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

fn main() {
    let mut request = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut request);
    let socket = std::env::var("FLOOR_SOCKET").unwrap_or_default();
    if let Ok(mut s) = UnixStream::connect(&socket) {
        let _ = s.write_all(b"x");
        let mut byte = [0u8; 1];
        let _ = s.read(&mut byte);
    }
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(b"username=floor\npassword=floor-password\n");
}
