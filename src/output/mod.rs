//! Outputs: where buffered events go. [`at`] sends to Activity Tracker with per-service
//! tokens from the mounted Secret ([`secrets`]); [`http`] to any HTTP endpoint.

pub mod at;
pub mod http;
pub mod secrets;
