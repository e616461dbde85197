//! One module per command: what it does with the layers below, what it prints,
//! how it fails. `main` dispatches here.

pub mod configure;
pub mod doctor;
pub mod helper;
pub mod login;
pub mod scoped;
pub mod status;
