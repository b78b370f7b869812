//! The `at-forwarder` binary: everything lives in the library; see `at_forwarder::cli`.

fn main() -> std::process::ExitCode {
    at_forwarder::cli::main()
}
