//! The Windows calls the agent and `exec` need: who a process runs as (its
//! token's user SID), a security descriptor that admits one user, the process
//! at the other end of a named pipe, and job objects.
//!
//! Every handle is an [`OwnedHandle`] (closed on drop); every buffer the
//! system allocates is freed by the type that holds it.

#![allow(unsafe_code)]

use std::io;
use std::os::windows::io::{AsRawHandle, BorrowedHandle, FromRawHandle, OwnedHandle, RawHandle};

use windows_sys::Win32::Foundation::{
    CloseHandle, HANDLE, HANDLE_FLAG_INHERIT, INVALID_HANDLE_VALUE, LocalFree, SetHandleInformation,
};
use windows_sys::Win32::Security::Authorization::{
    ConvertSidToStringSidW, ConvertStringSecurityDescriptorToSecurityDescriptorW, SDDL_REVISION_1,
};
use windows_sys::Win32::Security::{
    EqualSid, GetTokenInformation, PSECURITY_DESCRIPTOR, SECURITY_ATTRIBUTES, TOKEN_QUERY,
    TOKEN_USER, TokenUser,
};
use windows_sys::Win32::System::Threading::{
    GetCurrentProcess, OpenProcess, OpenProcessToken, PROCESS_QUERY_LIMITED_INFORMATION,
};

/// A user's SID, as a process token names it.
pub struct Sid {
    /// A `TOKEN_USER` and the SID it points into, in word-aligned storage.
    buf: Vec<usize>,
}

impl Sid {
    fn psid(&self) -> *mut core::ffi::c_void {
        // SAFETY: `buf` holds a TOKEN_USER filled by GetTokenInformation (see
        // `token_user`), aligned for it; its SID pointer points into `buf`.
        unsafe { (*self.buf.as_ptr().cast::<TOKEN_USER>()).User.Sid }
    }

    /// The same user as `other`.
    pub fn same_as(&self, other: &Sid) -> bool {
        // SAFETY: both pointers are valid SIDs owned by `self` and `other`.
        unsafe { EqualSid(self.psid(), other.psid()) != 0 }
    }

    /// The SID's string form (`S-1-5-21-…`): no secret, it names a user.
    pub fn to_string_form(&self) -> io::Result<String> {
        let mut wide: *mut u16 = std::ptr::null_mut();
        // SAFETY: the SID is valid; on success `wide` is a NUL-terminated
        // string allocated by the system, read once and freed with LocalFree.
        unsafe {
            if ConvertSidToStringSidW(self.psid(), &mut wide) == 0 {
                return Err(io::Error::last_os_error());
            }
            let mut len = 0;
            while *wide.add(len) != 0 {
                len += 1;
            }
            let text = String::from_utf16_lossy(std::slice::from_raw_parts(wide, len));
            LocalFree(wide.cast());
            Ok(text)
        }
    }
}

impl std::fmt::Debug for Sid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.to_string_form() {
            Ok(text) => f.write_str(&text),
            Err(_) => f.write_str("<SID>"),
        }
    }
}

/// The user of the process `process` (a handle with query access).
fn token_user(process: HANDLE) -> io::Result<Sid> {
    let mut raw: HANDLE = std::ptr::null_mut();
    // SAFETY: `process` is a valid process handle for the duration of the
    // call; on success `raw` is a token handle we own (wrapped right away).
    let token = unsafe {
        if OpenProcessToken(process, TOKEN_QUERY, &mut raw) == 0 {
            return Err(io::Error::last_os_error());
        }
        OwnedHandle::from_raw_handle(raw as RawHandle)
    };
    let mut needed = 0u32;
    // SAFETY: a size query: no buffer, the length is written to `needed`.
    unsafe {
        GetTokenInformation(
            token.as_raw_handle() as HANDLE,
            TokenUser,
            std::ptr::null_mut(),
            0,
            &mut needed,
        );
    }
    if needed == 0 {
        return Err(io::Error::last_os_error());
    }
    let words = (needed as usize).div_ceil(size_of::<usize>());
    let mut buf = vec![0usize; words];
    let len = u32::try_from(words * size_of::<usize>())
        .map_err(|_| io::Error::other("token information too large"))?;
    // SAFETY: `buf` is writable for `len` bytes and aligned for TOKEN_USER.
    let ok = unsafe {
        GetTokenInformation(
            token.as_raw_handle() as HANDLE,
            TokenUser,
            buf.as_mut_ptr().cast(),
            len,
            &mut needed,
        )
    };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Sid { buf })
}

/// The user this process runs as.
pub fn current_user() -> io::Result<Sid> {
    // SAFETY: GetCurrentProcess returns a pseudo-handle that needs no closing.
    token_user(unsafe { GetCurrentProcess() })
}

/// The user the process `pid` runs as.
pub fn process_user(pid: u32) -> io::Result<Sid> {
    // SAFETY: OpenProcess takes no pointers; a non-null result is a handle we
    // own, wrapped right away.
    let process = unsafe {
        let raw = OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid);
        if raw.is_null() {
            return Err(io::Error::last_os_error());
        }
        OwnedHandle::from_raw_handle(raw as RawHandle)
    };
    token_user(process.as_raw_handle() as HANDLE)
}

/// The process id of the server at the other end of a pipe client handle.
pub fn pipe_server_pid(pipe: BorrowedHandle<'_>) -> io::Result<u32> {
    let mut pid = 0u32;
    // SAFETY: `pipe` is a valid handle; the pid is written to a local.
    let ok = unsafe {
        windows_sys::Win32::System::Pipes::GetNamedPipeServerProcessId(
            pipe.as_raw_handle() as HANDLE,
            &mut pid,
        )
    };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(pid)
}

/// The process id of the client at the other end of a pipe server handle.
pub fn pipe_client_pid(pipe: BorrowedHandle<'_>) -> io::Result<u32> {
    let mut pid = 0u32;
    // SAFETY: `pipe` is a valid handle; the pid is written to a local.
    let ok = unsafe {
        windows_sys::Win32::System::Pipes::GetNamedPipeClientProcessId(
            pipe.as_raw_handle() as HANDLE,
            &mut pid,
        )
    };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(pid)
}

/// A self-relative security descriptor, freed on drop.
pub struct SecurityDescriptor {
    ptr: PSECURITY_DESCRIPTOR,
}

impl SecurityDescriptor {
    /// Full access for `user` alone: a protected DACL (nothing inherited)
    /// with one entry, `D:P(A;;GA;;;<SID>)`.
    pub fn only(user: &Sid) -> io::Result<SecurityDescriptor> {
        let sddl = format!("D:P(A;;GA;;;{})", user.to_string_form()?);
        let wide: Vec<u16> = sddl.encode_utf16().chain(Some(0)).collect();
        let mut ptr: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
        // SAFETY: `wide` is NUL-terminated; on success `ptr` is allocated by
        // the system and freed in Drop.
        let ok = unsafe {
            ConvertStringSecurityDescriptorToSecurityDescriptorW(
                wide.as_ptr(),
                SDDL_REVISION_1,
                &mut ptr,
                std::ptr::null_mut(),
            )
        };
        if ok == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(SecurityDescriptor { ptr })
    }

    /// A named pipe server instance `name` with `options`, guarded by this
    /// descriptor.
    pub fn create_pipe(
        &self,
        options: &tokio::net::windows::named_pipe::ServerOptions,
        name: &str,
    ) -> io::Result<tokio::net::windows::named_pipe::NamedPipeServer> {
        let mut attributes = self.attributes();
        // SAFETY: `attributes` is a valid SECURITY_ATTRIBUTES whose descriptor
        // lives as long as `self`, which outlives the call.
        unsafe { options.create_with_security_attributes_raw(name, (&raw mut attributes).cast()) }
    }

    /// Attributes that apply this descriptor (not inheritable); valid while
    /// `self` lives.
    pub fn attributes(&self) -> SECURITY_ATTRIBUTES {
        SECURITY_ATTRIBUTES {
            nLength: size_of::<SECURITY_ATTRIBUTES>() as u32,
            lpSecurityDescriptor: self.ptr,
            bInheritHandle: 0,
        }
    }
}

impl Drop for SecurityDescriptor {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from ConvertStringSecurityDescriptorToSecurityDescriptorW
        // and is freed once.
        unsafe {
            LocalFree(self.ptr);
        }
    }
}

/// Makes this process's standard handles non-inheritable, so a detached
/// child started with handle inheritance (every `std::process::Command`)
/// does not keep git's pipes open. Children that inherit stdio still get it:
/// the standard library passes them duplicates.
pub fn uninherit_std_handles() {
    use windows_sys::Win32::System::Console::{
        GetStdHandle, STD_ERROR_HANDLE, STD_INPUT_HANDLE, STD_OUTPUT_HANDLE,
    };
    for which in [STD_INPUT_HANDLE, STD_OUTPUT_HANDLE, STD_ERROR_HANDLE] {
        // SAFETY: GetStdHandle takes no pointers; SetHandleInformation only
        // changes a flag of a handle this process holds (or fails harmlessly).
        unsafe {
            let handle = GetStdHandle(which);
            if !handle.is_null() && handle != INVALID_HANDLE_VALUE {
                SetHandleInformation(handle, HANDLE_FLAG_INHERIT, 0);
            }
        }
    }
}

/// Points stdout at `NUL` and closes the handle it had (the spawning
/// helper's pipe), so that pipe ends here.
pub fn stdout_to_null() {
    use windows_sys::Win32::System::Console::{GetStdHandle, STD_OUTPUT_HANDLE, SetStdHandle};
    let Ok(null) = std::fs::OpenOptions::new().write(true).open("NUL") else {
        return;
    };
    let null = OwnedHandle::from(null);
    // SAFETY: the old handle is this process's stdout, closed once after
    // stdout points elsewhere (std looks the handle up on every write); the
    // NUL handle is handed over to the process's standard handles for good.
    unsafe {
        let old = GetStdHandle(STD_OUTPUT_HANDLE);
        if SetStdHandle(STD_OUTPUT_HANDLE, null.as_raw_handle() as HANDLE) != 0 {
            std::mem::forget(null);
            if !old.is_null() && old != INVALID_HANDLE_VALUE {
                CloseHandle(old);
            }
        }
    }
}

/// A job object whose processes are killed when its last handle closes: when
/// this value is dropped, or when the process holding it ends, however.
pub struct Job {
    handle: OwnedHandle,
}

impl Job {
    /// A new, unnamed job with `JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE`.
    pub fn kill_on_close() -> io::Result<Job> {
        use windows_sys::Win32::System::JobObjects::{
            CreateJobObjectW, JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE,
            JOBOBJECT_EXTENDED_LIMIT_INFORMATION, JobObjectExtendedLimitInformation,
            SetInformationJobObject,
        };
        // SAFETY: no attributes, no name; a non-null result is a handle we
        // own, wrapped right away.
        let handle = unsafe {
            let raw = CreateJobObjectW(std::ptr::null(), std::ptr::null());
            if raw.is_null() {
                return Err(io::Error::last_os_error());
            }
            OwnedHandle::from_raw_handle(raw as RawHandle)
        };
        let mut limits = JOBOBJECT_EXTENDED_LIMIT_INFORMATION::default();
        limits.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE;
        // SAFETY: `limits` is a valid JOBOBJECT_EXTENDED_LIMIT_INFORMATION of
        // the size passed, read during the call only.
        let ok = unsafe {
            SetInformationJobObject(
                handle.as_raw_handle() as HANDLE,
                JobObjectExtendedLimitInformation,
                (&raw const limits).cast(),
                size_of::<JOBOBJECT_EXTENDED_LIMIT_INFORMATION>() as u32,
            )
        };
        if ok == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Job { handle })
    }

    /// Puts a process (started suspended) in the job, then lets it run: it
    /// cannot start anything outside the job first.
    pub fn adopt_suspended(&self, process: RawHandle, pid: u32) -> io::Result<()> {
        use windows_sys::Win32::System::JobObjects::AssignProcessToJobObject;
        // SAFETY: both handles are valid for the duration of the call (the
        // caller holds the child's handle).
        let ok = unsafe {
            AssignProcessToJobObject(self.handle.as_raw_handle() as HANDLE, process as HANDLE)
        };
        if ok == 0 {
            return Err(io::Error::last_os_error());
        }
        resume_threads(pid)
    }
}

/// Resumes every thread of the process `pid` (one, for a process created
/// suspended).
fn resume_threads(pid: u32) -> io::Result<()> {
    use windows_sys::Win32::System::Diagnostics::ToolHelp::{
        CreateToolhelp32Snapshot, TH32CS_SNAPTHREAD, THREADENTRY32, Thread32First, Thread32Next,
    };
    use windows_sys::Win32::System::Threading::{OpenThread, ResumeThread, THREAD_SUSPEND_RESUME};
    // SAFETY: takes no pointers; a valid result is a handle we own.
    let snapshot = unsafe {
        let raw = CreateToolhelp32Snapshot(TH32CS_SNAPTHREAD, 0);
        if raw == INVALID_HANDLE_VALUE {
            return Err(io::Error::last_os_error());
        }
        OwnedHandle::from_raw_handle(raw as RawHandle)
    };
    let mut entry = THREADENTRY32 {
        dwSize: size_of::<THREADENTRY32>() as u32,
        ..THREADENTRY32::default()
    };
    let mut resumed = 0;
    // SAFETY: `entry` is a THREADENTRY32 with dwSize set, written by the calls.
    let mut more = unsafe { Thread32First(snapshot.as_raw_handle() as HANDLE, &mut entry) } != 0;
    while more {
        if entry.th32OwnerProcessID == pid {
            // SAFETY: OpenThread takes no pointers; a non-null result is
            // resumed and closed right here.
            unsafe {
                let thread = OpenThread(THREAD_SUSPEND_RESUME, 0, entry.th32ThreadID);
                if !thread.is_null() {
                    if ResumeThread(thread) != u32::MAX {
                        resumed += 1;
                    }
                    CloseHandle(thread);
                }
            }
        }
        // SAFETY: as for Thread32First.
        more = unsafe { Thread32Next(snapshot.as_raw_handle() as HANDLE, &mut entry) } != 0;
    }
    if resumed == 0 {
        return Err(io::Error::other("could not resume the command's thread"));
    }
    Ok(())
}

/// Takes `name` out of this process's environment.
pub fn remove_env_var(name: &str) {
    // SAFETY: on Windows the environment is guarded by a lock: std documents
    // `remove_var` as always safe there, whatever the threads.
    unsafe { std::env::remove_var(name) };
}

#[cfg(test)]
mod tests {
    use std::os::windows::process::CommandExt;
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn the_current_user_is_itself_and_has_a_string_form() {
        let me = current_user().unwrap();
        let again = process_user(std::process::id()).unwrap();
        assert!(me.same_as(&again));
        assert!(me.to_string_form().unwrap().starts_with("S-1-"));
        SecurityDescriptor::only(&me).unwrap();
    }

    #[test]
    fn a_job_kills_its_process_when_closed() {
        use windows_sys::Win32::System::Threading::CREATE_SUSPENDED;
        let job = Job::kill_on_close().unwrap();
        let mut child = std::process::Command::new("cmd")
            .args(["/c", "ping -n 60 127.0.0.1 >NUL"])
            .creation_flags(CREATE_SUSPENDED)
            .spawn()
            .unwrap();
        job.adopt_suspended(child.as_raw_handle(), child.id())
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        assert!(child.try_wait().unwrap().is_none(), "it runs");
        drop(job);
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "the job's process survived it");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
