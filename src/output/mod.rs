//! Outputs: where buffered events go. [`at`] sends to Activity Tracker with per-service
//! tokens from the mounted Secret ([`secrets`]); [`cloud_logs`] to IBM Cloud Logs with IAM
//! tokens ([`iam`]); [`http`] to any HTTP endpoint.

pub mod answer;
pub mod at;
pub mod cloud_logs;
pub mod http;
pub mod iam;
pub mod secrets;
