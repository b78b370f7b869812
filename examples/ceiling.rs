//! The loopback ceiling of the end-to-end benchmark: a trivial client that posts the
//! generated events, pre-built into batches of 1,000, to the receiver on 127.0.0.1 over a
//! few keep-alive connections, and reports events/s. No tailing, checking or buffering:
//! what at-forwarder's throughput is compared with.
//!
//!   cargo run --release --example ceiling -- URL TOKEN PROJECT FILE... [--connections N]

use std::sync::Arc;
use std::time::Instant;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut connections = 2;
    if let Some(i) = args.iter().position(|a| a == "--connections") {
        connections = args.get(i + 1).and_then(|n| n.parse().ok()).unwrap_or(2);
        args.drain(i..=i + 1);
    }
    let [url, token, project, files @ ..] = &args[..] else {
        anyhow::bail!("usage: ceiling URL TOKEN PROJECT FILE... [--connections N]");
    };
    let mut batches: Vec<Vec<u8>> = Vec::new();
    let (mut events, mut bytes) = (0usize, 0usize);
    for file in files {
        let text = std::fs::read(file)?;
        for chunk in text
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .chunks(1000)
        {
            let mut body = Vec::with_capacity(chunk.iter().map(|l| l.len() + 1).sum::<usize>() + 2);
            body.push(b'[');
            for (i, line) in chunk.iter().enumerate() {
                if i > 0 {
                    body.push(b',');
                }
                body.extend_from_slice(line);
                bytes += line.len();
            }
            body.push(b']');
            events += chunk.len();
            batches.push(body);
        }
    }
    let batches = Arc::new(batches);
    let client = reqwest::Client::builder().build()?;
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (client, batches, next) = (client.clone(), Arc::clone(&batches), Arc::clone(&next));
        let (url, token, project) = (url.clone(), token.clone(), project.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(body) = batches.get(i) else { break };
                let r = client
                    .post(format!("{url}/v3/events"))
                    .header("X-Auth-Token", format!("bearer {token}"))
                    .header("X-Auth-Project-Id", &project)
                    .header("Content-Type", "application/json")
                    .header("Idempotency-Key", format!("ceiling-{i}"))
                    .body(body.clone())
                    .send()
                    .await;
                if !r.is_ok_and(|r| r.status().is_success()) {
                    eprintln!("batch {i} failed");
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "ceiling: {events} events ({:.0} bytes avg) in {secs:.2} s: {:.0} events/s, {:.1} MB/s",
        bytes as f64 / events.max(1) as f64,
        events as f64 / secs,
        bytes as f64 / secs / 1e6
    );
    Ok(())
}
