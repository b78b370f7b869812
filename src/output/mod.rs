//! Outputs: where buffered events go. [`at`] sends to Activity Tracker with per-service
//! tokens from the mounted Secret ([`secrets`]).

pub mod at;
pub mod secrets;
