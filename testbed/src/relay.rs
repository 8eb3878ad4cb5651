//! A TCP relay on 127.0.0.1 in front of a node, which injects the faults a WAN and a booting machine
//! show: one-way delay, connections refused for a while, a reset after N bytes, and a peer that
//! accepts and never answers. Faults can be changed while the relay runs; each new connection takes
//! the faults in force when it is accepted.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// The faults a relay injects into new connections.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Faults {
    /// Every chunk is delivered this long after it was read, in each direction (a round trip
    /// costs twice this). Order is kept and throughput is not limited.
    pub delay: Duration,
    /// After this many bytes (both directions together), both sides get a TCP reset.
    pub reset_after: Option<u64>,
    /// Accept the connection and never answer, never connect to the node.
    pub blackhole: bool,
}

/// How many connections are open through one or more relays, and when each was: from its accept
/// to the end of its client's side. Clones share the record: give one gauge to several relays to
/// count connections to all of them.
#[derive(Debug, Clone, Default)]
pub struct Gauge(Arc<Mutex<GaugeRecord>>);

#[derive(Debug, Default)]
struct GaugeRecord {
    open: usize,
    intervals: Vec<(Instant, Option<Instant>)>,
}

impl Gauge {
    /// How many connections are open now.
    pub fn open(&self) -> usize {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).open
    }

    /// The most connections that were open at once, a connection's end counted `grace` early: a
    /// client's close reaches the relay a moment after the client moved on, so a connection that
    /// only overlaps another by less than `grace` was not open at the same time from the client's
    /// side.
    pub fn peak(&self, grace: Duration) -> usize {
        let record = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut events: Vec<(Instant, i32)> = Vec::new();
        for (start, end) in &record.intervals {
            events.push((*start, 1));
            if let Some(end) = end {
                events.push(((*end - grace).max(*start), -1));
            }
        }
        // Ends before starts at the same instant.
        events.sort();
        let (mut now, mut peak) = (0i32, 0i32);
        for (_, change) in events {
            now += change;
            peak = peak.max(now);
        }
        peak as usize
    }

    fn enter(&self) -> GaugeGuard {
        let mut record = self.0.lock().unwrap_or_else(|e| e.into_inner());
        record.open += 1;
        record.intervals.push((Instant::now(), None));
        GaugeGuard(self.clone(), record.intervals.len() - 1)
    }
}

/// One open connection of a gauge; its end is recorded when dropped.
struct GaugeGuard(Gauge, usize);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        let mut record = self.0 .0.lock().unwrap_or_else(|e| e.into_inner());
        record.open -= 1;
        record.intervals[self.1].1 = Some(Instant::now());
    }
}

/// A running relay. Dropping it stops it and closes every connection it holds.
pub struct Relay {
    addr: SocketAddr,
    faults: Arc<Mutex<(Faults, Option<Faults>)>>,
    accepted: Arc<AtomicUsize>,
    gauge: Gauge,
    tasks: JoinSet<()>,
}

impl Relay {
    /// A relay on 127.0.0.1 (a port the kernel picks) to `target`, with no faults.
    pub async fn start(target: SocketAddr) -> io::Result<Relay> {
        Self::start_refusing(target, Duration::ZERO).await
    }

    /// A relay to `target` whose open connections count in `gauge` (shared with other relays).
    pub async fn start_counted(target: SocketAddr, gauge: Gauge) -> io::Result<Relay> {
        Self::start_with(target, Duration::ZERO, gauge).await
    }

    /// A relay that refuses connections (the port is bound but not listening, so connects get
    /// ECONNREFUSED) for `refuse_for`, then relays.
    pub async fn start_refusing(target: SocketAddr, refuse_for: Duration) -> io::Result<Relay> {
        Self::start_with(target, refuse_for, Gauge::default()).await
    }

    async fn start_with(
        target: SocketAddr,
        refuse_for: Duration,
        gauge: Gauge,
    ) -> io::Result<Relay> {
        let socket = TcpSocket::new_v4()?;
        socket.bind("127.0.0.1:0".parse().map_err(io::Error::other)?)?;
        let addr = socket.local_addr()?;
        let faults = Arc::new(Mutex::new((Faults::default(), None)));
        let accepted = Arc::new(AtomicUsize::new(0));
        let mut tasks = JoinSet::new();
        let (faults2, accepted2, gauge2) = (faults.clone(), accepted.clone(), gauge.clone());
        // Listening at once when there is nothing to refuse, so that the first connect succeeds.
        let ready = if refuse_for.is_zero() {
            Ok(socket.listen(128)?)
        } else {
            Err(socket)
        };
        tasks.spawn(async move {
            let listener = match ready {
                Ok(listener) => listener,
                Err(socket) => {
                    tokio::time::sleep(refuse_for).await;
                    match socket.listen(128) {
                        Ok(listener) => listener,
                        Err(_) => return,
                    }
                }
            };
            let mut connections = JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                accepted2.fetch_add(1, Ordering::SeqCst);
                let faults = {
                    let mut f = faults2.lock().unwrap_or_else(|e| e.into_inner());
                    f.1.take().unwrap_or_else(|| f.0.clone())
                };
                let open = gauge2.enter();
                connections.spawn(relay_connection(client, target, faults, open));
                // Forget connections that ended.
                while connections.try_join_next().is_some() {}
            }
        });
        Ok(Relay {
            addr,
            faults,
            accepted,
            gauge,
            tasks,
        })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces the faults for connections accepted from now on.
    pub fn set_faults(&self, faults: Faults) {
        self.faults.lock().unwrap_or_else(|e| e.into_inner()).0 = faults;
    }

    /// Faults for the next connection accepted only; later ones get the standing faults again.
    pub fn set_faults_once(&self, faults: Faults) {
        self.faults.lock().unwrap_or_else(|e| e.into_inner()).1 = Some(faults);
    }

    /// How many connections the relay has accepted.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// The gauge of its open connections.
    pub fn gauge(&self) -> &Gauge {
        &self.gauge
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.tasks.abort_all();
    }
}

/// Relays one connection; `open` counts it in the gauge until the client's side ends (it closed,
/// or was reset), which is when the client sees it closed.
async fn relay_connection(
    mut client: TcpStream,
    target: SocketAddr,
    faults: Faults,
    open: GaugeGuard,
) {
    if faults.blackhole {
        // Hold the connection open, silent, until the relay is dropped.
        let _client = client;
        std::future::pending::<()>().await;
        return;
    }
    let Ok(mut server) = TcpStream::connect(target).await else {
        let _ = client.set_zero_linger();
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let budget = Arc::new(Mutex::new(faults.reset_after));
    let (kill_tx, kill_rx) = watch::channel(false);
    {
        // Borrowed halves: unlike owned ones they send no FIN when dropped, so a reset stays a reset.
        let (client_read, client_write) = client.split();
        let (server_read, server_write) = server.split();
        let up_budget = budget.clone();
        let up = async {
            direction(client_read, server_write, faults.delay, up_budget, &kill_tx).await;
            drop(open);
        };
        let down = direction(server_read, client_write, faults.delay, budget, &kill_tx);
        tokio::join!(up, down);
    }
    if *kill_rx.borrow() {
        // Closing with a zero linger sends a reset instead of a FIN.
        let _ = client.set_zero_linger();
        let _ = server.set_zero_linger();
    }
}

enum Chunk {
    Data(Instant, Vec<u8>),
    Eof(Instant),
    Reset(Instant),
}

/// Copies one direction: a reader that stamps each chunk with its delivery time, and a writer that
/// delivers it then. A reset (the byte budget spent, or a failed write) ends every direction.
async fn direction(
    mut reader: impl AsyncRead + Unpin,
    mut writer: impl AsyncWrite + Unpin,
    delay: Duration,
    budget: Arc<Mutex<Option<u64>>>,
    kill: &watch::Sender<bool>,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Chunk>();
    let mut reader_kill = kill.subscribe();
    let read_side = async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let n = tokio::select! {
                read = reader.read(&mut buf) => match read {
                    Ok(0) => { let _ = tx.send(Chunk::Eof(Instant::now() + delay)); return; }
                    Ok(n) => n,
                    Err(_) => { let _ = tx.send(Chunk::Reset(Instant::now() + delay)); return; }
                },
                _ = reader_kill.wait_for(|k| *k) => return,
            };
            let mut data = buf[..n].to_vec();
            let mut reset = false;
            if let Some(left) = budget.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
                if n as u64 >= *left {
                    data.truncate(*left as usize);
                    reset = true;
                }
                *left = left.saturating_sub(data.len() as u64);
            }
            let at = Instant::now() + delay;
            let _ = tx.send(Chunk::Data(at, data));
            if reset {
                let _ = tx.send(Chunk::Reset(at));
                return;
            }
        }
    };
    let mut writer_kill = kill.subscribe();
    let write_side = async move {
        loop {
            let chunk = tokio::select! {
                chunk = rx.recv() => chunk,
                _ = writer_kill.wait_for(|k| *k) => return,
            };
            match chunk {
                Some(Chunk::Data(at, data)) => {
                    tokio::time::sleep_until(at).await;
                    if writer.write_all(&data).await.is_err() {
                        let _ = kill.send(true);
                        return;
                    }
                }
                Some(Chunk::Eof(at)) => {
                    tokio::time::sleep_until(at).await;
                    let _ = writer.shutdown().await;
                    return;
                }
                Some(Chunk::Reset(at)) => {
                    tokio::time::sleep_until(at).await;
                    let _ = kill.send(true);
                    return;
                }
                None => return,
            }
        }
    };
    tokio::join!(read_side, write_side);
}
