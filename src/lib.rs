//! at-forwarder carries audit events from the files where services write them to the
//! Activity Tracker service that keeps them, without losing any.
//!
//! Services write one event per line — JSON with a `meta` routing object and a CADF
//! `payload` — under `/var/log/at/**/*.log`. at-forwarder replaces the fluentd +
//! `ibmactivitytracker` pipeline and reads the same ConfigMap file, in fluentd's syntax.
//!
//! # Data flow
//!
//! ```text
//!   /var/log/at/**/*.log ──▶ tail ──▶ event ──▶ buffer (disk) ──▶ output ──▶ Activity Tracker
//!        (files)            │ lines   │ parse,    │ chunks per     │ token per      (HTTPS, per
//!                           │ by inode│ validate, │ service,       │ service from   regional
//!                           │         │ normalise │ fsync, retry   │ the Secret     endpoint)
//!                           ▼         ▼           │                │
//!                  positions (sled) ◀── saved only after the chunk holding those lines is fsynced
//!                                 dead letters ◀── lines that can never be sent, with a reason
//! ```
//!
//! Modules, each importing only those above it in this list: [`config`] (fluentd syntax →
//! typed, validated configuration) · [`tail`] (discovery, identity, reader, positions) ·
//! [`event`] (envelope, validation, dead letters) · [`buffer`] (chunks, queue, retry) ·
//! [`output`] (Activity Tracker, secrets) · [`pipeline`] (wiring and lifecycle) · [`cli`]. The
//! stages not linked here arrive with the issues that build them.
//!
//! # Delivery invariants
//!
//! 1. A saved tail position never runs ahead of data that is durable in the buffer: lines
//!    are appended to a chunk, the chunk is fsynced, and only then are their positions saved.
//! 2. A chunk is deleted only after the endpoint accepted it (2xx). Delivery is therefore
//!    at-least-once; duplicates can happen only after a crash, for lines read after the
//!    last position save — after a crash of the machine; after a crash of the process
//!    alone, positions recorded as written ([`tail::ahead`]) and the records found in the
//!    buffer at start-up keep them from being sent twice.
//! 3. Nothing is dropped silently: a line that cannot be delivered is kept on disk (a
//!    dead-letter file or a backed-up chunk) with a reason an operator can see in a log
//!    line and a metric.

// The library has no unsafe code; the binary sets one allocator parameter (src/main.rs).
#![forbid(unsafe_code)]

pub mod buffer;
pub mod cli;
mod cli_run;
mod cli_tools;
pub mod config;
pub mod demo;
pub mod event;
pub mod fsutil;
pub mod metrics;
pub mod ops;
pub mod output;
pub mod pipeline;
pub mod receiver;
pub mod tail;
