//! One module per command: what it does with the layers below, what it prints,
//! how it fails. The core (`src/bin/git-credential-githosted-core.rs`) dispatches here.

pub mod configure;
pub mod doctor;
pub mod helper;
pub mod login;
pub mod scoped;
pub mod status;
