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
//!   /var/log/at/**/*.log ──▶ tail ──▶ event ──▶ buffer ──▶ output ──▶ Activity Tracker
//!        (files)            │ lines   │ parse,    │ chunks per     │ token per      (HTTPS, per
//!                           │ by inode│ validate, │ service, in    │ service from   regional
//!                           │         │ normalise │ memory; disk   │ the Secret     endpoint)
//!                           ▼         ▼           │ when delivery  │
//!                           │         │           │ fails; retry   │
//!                  positions (sled) ◀── saved once the lines before them are delivered or fsynced
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
//! 1. A saved tail position never runs ahead of data that is delivered or durable in the
//!    buffer. Chunks are held in memory (up to `memory_limit_size`) and written to disk
//!    only when they cannot be delivered at once; a file's position is saved once every
//!    chunk holding its lines up to there was accepted by the endpoint or fsynced (with
//!    `memory_limit_size 0`, every chunk is fsynced first). Until then the file itself is
//!    the buffer. One module decides it: `pipeline/checkpoint/` (its doc lists the crash
//!    cases and the duplicates each can cause).
//! 2. A chunk is deleted only after the endpoint accepted it (2xx). Delivery is therefore
//!    at-least-once; duplicates can happen only after a crash, for lines read after the
//!    last position save. What had not been delivered is read again and sent once:
//!    positions recorded as safe (the checkpoint journal), chunks re-sent from disk with
//!    their Idempotency-Key, the records found in the buffer at start-up, and the sent
//!    journal (records delivered are not appended again; a chunk being sent at the crash
//!    is put together again from the lines read again and re-sent under its own id) keep
//!    them from being sent twice to an endpoint that honours Idempotency-Key.
//! 3. Nothing is dropped silently: a line that cannot be delivered is kept on disk (a
//!    dead-letter file or a backed-up chunk) with a reason an operator can see in a log
//!    line and a metric.

// The library has no unsafe code; the binary sets one allocator parameter (src/main.rs).
#![forbid(unsafe_code)]

pub mod buffer;
pub mod cli;
pub mod config;
pub mod demo;
pub mod event;
pub mod fsutil;
pub mod health;
pub mod metrics;
pub mod output;
pub mod pipeline;
pub mod receiver;
pub mod tail;
