//! The local pieces: `demo` (its outputs and summary), `receiver` and `generate`.

use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use super::{run, runtime};

/// `demo --outputs`: whether IBM Cloud Logs is one of them (`at` always is).
pub(super) fn outputs_of(outputs: &[String]) -> Result<bool, ExitCode> {
    let mut cloud_logs = false;
    for o in outputs {
        match o.as_str() {
            "at" => {}
            "cloud-logs" => cloud_logs = true,
            other => {
                eprintln!("error: unknown demo output '{other}': use at or at,cloud-logs");
                return Err(ExitCode::from(2));
            }
        }
    }
    Ok(cloud_logs)
}

pub(super) fn demo(opts: crate::demo::DemoOptions) -> ExitCode {
    let result = runtime().and_then(|rt| rt.block_on(crate::demo::run(opts)));
    match result {
        Ok(s) => {
            println!("\nSummary: {} events written, {} received, {} lost, {} received twice, {} file rotations.", s.written, s.received, s.lost(), s.duplicates, s.rotations);
            if let Some((received, tokens)) = s.cloud_logs {
                println!(
                    "IBM Cloud Logs: {received} received, {} lost; {tokens} IAM tokens issued.",
                    s.written.saturating_sub(received)
                );
            }
            if s.lost() == 0 && s.cloud_logs.is_none_or(|(r, _)| r >= s.written) {
                println!("Every event written was delivered.");
                ExitCode::SUCCESS
            } else {
                println!("Events were lost.");
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

pub(super) fn receiver(opts: crate::receiver::ReceiverOptions) -> ExitCode {
    let result = runtime().and_then(|rt| {
        rt.block_on(async {
            let shutdown = CancellationToken::new();
            let signals = run::listen_for_signals(shutdown.clone())?;
            let (receiver, task) = crate::receiver::start(opts, shutdown).await?;
            println!("receiver listening on http://{}", receiver.addr);
            let _ = task.await;
            signals.abort();
            Ok(())
        })
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

pub(super) fn generate(opts: &crate::demo::generate::GenerateOptions) -> ExitCode {
    let stop = std::sync::atomic::AtomicBool::new(false);
    match crate::demo::generate::generate(opts, &stop, &std::sync::atomic::AtomicU64::new(0)) {
        Ok(g) => {
            println!(
                "{} events written, {} rotations, under {}",
                g.written,
                g.rotations,
                opts.dir.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {}: {e}", opts.dir.display());
            ExitCode::FAILURE
        }
    }
}
