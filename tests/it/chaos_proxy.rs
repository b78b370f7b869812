//! A fault-injecting HTTP/1.1 proxy for the chaos suite: sits between at-forwarder and the
//! receiver on 127.0.0.1 and, as told, passes requests through, refuses connections
//! (down), answers 500 or 429 with `Retry-After`, answers after 2 s, or closes connections
//! mid-request — before forwarding, or after the receiver took the batch (the answer lost).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What the proxy does to each request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Fault {
    Pass = 0,
    /// Not listening: connections are refused, open ones closed.
    Down = 1,
    Status500 = 2,
    /// 429 with `Retry-After: 1`.
    TooMany = 3,
    /// Forwarded after 2 s.
    Slow = 4,
    /// Connection closed mid-request: every other one after the receiver took it.
    Cut = 5,
}

impl Fault {
    fn from_u8(v: u8) -> Fault {
        [
            Fault::Pass,
            Fault::Down,
            Fault::Status500,
            Fault::TooMany,
            Fault::Slow,
            Fault::Cut,
        ][usize::from(v)]
    }
}

pub(crate) struct Proxy {
    pub(crate) port: u16,
    fault: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
    /// Requests answered with a fault, all kinds together.
    pub(crate) faulted: Arc<AtomicU64>,
}

impl Proxy {
    pub(crate) fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let proxy = Proxy {
            port,
            fault: Arc::default(),
            stop: Arc::default(),
            faulted: Arc::default(),
        };
        let (fault, stop, faulted) = (
            Arc::clone(&proxy.fault),
            Arc::clone(&proxy.stop),
            Arc::clone(&proxy.faulted),
        );
        std::thread::spawn(move || accept_loop(listener, upstream, &fault, &stop, &faulted));
        proxy
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub(crate) fn set(&self, fault: Fault) {
        self.fault.store(fault as u8, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    fault: &Arc<AtomicU8>,
    stop: &AtomicBool,
    faulted: &Arc<AtomicU64>,
) {
    let addr = listener.local_addr().unwrap();
    let mut listener = Some(listener);
    while !stop.load(Ordering::SeqCst) {
        let down = Fault::from_u8(fault.load(Ordering::SeqCst)) == Fault::Down;
        if down {
            // Dropping the listener makes connecting fail with "connection refused".
            listener = None;
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        let l = match &listener {
            Some(l) => l,
            None => match TcpListener::bind(addr) {
                Ok(l) => {
                    l.set_nonblocking(true).unwrap();
                    listener.insert(l)
                }
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
            },
        };
        l.set_nonblocking(true).unwrap();
        match l.accept() {
            Ok((client, _)) => {
                let (fault, faulted) = (Arc::clone(fault), Arc::clone(faulted));
                std::thread::spawn(move || {
                    let _ = serve(client, upstream, &fault, &faulted);
                });
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// One client connection: request by request (keep-alive), each to one upstream
/// connection kept for the client's.
fn serve(
    mut client: TcpStream,
    upstream: SocketAddr,
    fault: &AtomicU8,
    faulted: &AtomicU64,
) -> io::Result<()> {
    client.set_nonblocking(false)?;
    client.set_read_timeout(Some(Duration::from_millis(200)))?;
    client.set_nodelay(true)?;
    let mut from_client = Vec::new();
    let mut server: Option<(TcpStream, Vec<u8>)> = None;
    let mut cuts = 0u64;
    loop {
        let request = loop {
            if Fault::from_u8(fault.load(Ordering::SeqCst)) == Fault::Down {
                return Ok(());
            }
            match read_message(&mut client, &mut from_client) {
                Ok(Some(m)) => break m,
                Ok(None) => return Ok(()),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(e),
            }
        };
        let now = Fault::from_u8(fault.load(Ordering::SeqCst));
        if now != Fault::Pass {
            faulted.fetch_add(1, Ordering::Relaxed);
        }
        match now {
            Fault::Down => return Ok(()),
            Fault::Status500 => {
                client.write_all(
                    b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 6\r\n\r\nchaos!",
                )?;
                continue;
            }
            Fault::TooMany => {
                client.write_all(b"HTTP/1.1 429 Too Many Requests\r\nretry-after: 1\r\ncontent-length: 0\r\n\r\n")?;
                continue;
            }
            Fault::Slow => std::thread::sleep(Duration::from_secs(2)),
            Fault::Cut => {
                cuts += 1;
                if cuts % 2 == 1 {
                    // Half the request reached us; nothing reaches the receiver.
                    return Ok(());
                }
            }
            Fault::Pass => {}
        }
        if server.is_none() {
            let s = TcpStream::connect(upstream)?;
            s.set_nodelay(true)?;
            server = Some((s, Vec::new()));
        }
        let (up, from_server) = server.as_mut().expect("connected above");
        up.write_all(&request)?;
        let Some(response) = read_message(up, from_server)? else {
            return Ok(());
        };
        if now == Fault::Cut {
            // The receiver took the batch; the answer is lost with the connection.
            return Ok(());
        }
        client.write_all(&response)?;
    }
}

/// Reads one HTTP/1.1 message (head and a `Content-Length` body) from `stream`, keeping
/// bytes past it in `buf`. `None` at end of stream.
fn read_message(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<Option<Vec<u8>>> {
    loop {
        if let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
            let body_len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            let total = head_end + 4 + body_len;
            if buf.len() >= total {
                let rest = buf.split_off(total);
                return Ok(Some(std::mem::replace(buf, rest)));
            }
        }
        let mut chunk = [0u8; 64 * 1024];
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}
