//! Keeping secrets out of places other processes can read: core dumps,
//! `/proc/PID/mem` and `/proc/PID/environ`.
//!
//! Every command may hold a workspace token (from `GITHOSTED_TOKEN` or the
//! keychain), so `main` calls [`process`] first thing, before anything is read:
//! no core file is ever written, and on Linux the process is non-dumpable (other
//! processes of the same user cannot ptrace it or read its memory or
//! environment). [`take_env_var`] then takes the token out of the environment
//! block itself, so children never inherit it and `/proc/PID/environ` never shows it.

use zeroize::Zeroizing;

use crate::secret::Secret;

/// No core dumps (the limit is lowered for good, so children inherit it) and,
/// on Linux, not dumpable: no ptrace, no `/proc/PID/mem` or `environ` for other
/// processes of the user. Failures are ignored: there is nothing better to do.
pub fn process() {
    #[cfg(unix)]
    {
        use rustix::process::{Resource, Rlimit, setrlimit};
        let none = Rlimit {
            current: Some(0),
            maximum: Some(0),
        };
        let _ = setrlimit(Resource::Core, none);
    }
    #[cfg(target_os = "linux")]
    {
        let _ =
            rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable);
    }
    #[cfg(target_os = "freebsd")]
    {
        let _ = rustix::process::set_dumpable_behavior(
            None,
            rustix::process::DumpableBehavior::NotDumpable,
        );
    }
}

/// Takes `name` out of the environment: returns its value (trimmed; `None` when
/// unset or blank), overwrites the bytes in the process's environment block
/// with zeros, and removes the variable, so neither children nor readers of
/// `/proc/PID/environ` see it. On Unix that is done only while the process
/// has one thread (call it first thing in `main`; later the variable stays).
pub fn take_env_var(name: &str) -> Option<Secret> {
    let raw = std::env::var_os(name)?;
    let value = Zeroizing::new(raw.into_string().unwrap_or_default());
    #[cfg(unix)]
    crate::unix::wipe_env_var(name);
    #[cfg(windows)]
    crate::win32::remove_env_var(name);
    let trimmed = value.trim();
    (!trimmed.is_empty()).then(|| Secret::new(trimmed.to_owned()))
}
