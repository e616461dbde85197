//! A global allocator that overwrites every block with zeros when it is freed.
//!
//! `Secret` wipes its own bytes, but copies of a token pass through memory
//! that other code owns and frees: the JSON the agent decodes, the HTTP
//! request's header buffers, TLS records. With this allocator a freed block
//! holds no token; what is still allocated is the code's own business (the
//! agent closes its HTTP connections after each mint, so their buffers are
//! freed too). The binary installs it for every command.
//!
//! `unsafe_code` is allowed here (it is denied everywhere but here, `unix` and
//! `win32`): a global allocator is an `unsafe impl GlobalAlloc` whose methods
//! are `unsafe fn`s over raw pointers, whatever the platform; there is no safe
//! way to write one.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};

use zeroize::Zeroize;

/// The system allocator, zeroing on free (and, through the default `realloc`,
/// on every move).
pub struct ZeroingAlloc;

// SAFETY: every call is forwarded to the system allocator with the same layout;
// `dealloc` only writes within the block it is about to free.
unsafe impl GlobalAlloc for ZeroingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller owns the `layout.size()` bytes at `ptr` until this
        // returns. Volatile writes (zeroize): a plain memset before `free` is a
        // dead store the compiler may remove.
        unsafe {
            std::slice::from_raw_parts_mut(ptr, layout.size()).zeroize();
            System.dealloc(ptr, layout);
        }
    }
}
