//! One integration-test binary (ripgrep style): each module covers one area, through the
//! public library API or the real `at-forwarder` binary.

mod daemon;
mod http_server;
mod support;

mod buffer_cases;
mod buffer_e2e;
mod buffer_model;
mod buffer_props;
mod chaos;
mod chaos_proxy;
mod chaos_world;
mod cli;
mod cli_events;
mod config_errors;
mod config_features;
mod config_props;
mod config_seed;
mod demo;
mod events_e2e;
mod events_golden;
mod events_props;
mod hostile;
mod operate;
mod ops;
mod output_at;
mod output_cloud_logs;
mod output_copy;
mod output_e2e;
mod output_http;
mod receiver;
mod rotation;
mod run_stdout;
mod tail_cases;
mod tail_follow;
mod tail_model;
