//! A TCP relay on 127.0.0.1 in front of a node, which injects the faults a WAN and a booting machine
//! show: one-way delay, connections refused for a while, a reset after N bytes, and a peer that
//! accepts and never answers. Faults can be changed while the relay runs; each new connection takes
//! the faults in force when it is accepted.
//!
//! With a delay, the relay also emulates the TCP handshake's round trip (it reaches the node three
//! one-way delays after the accept, so that no byte arrives earlier than over a real link), and
//! counts each connection's request/answer turns ([`Relay::turns`]): how many times the client
//! waited for its server.

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
    /// costs twice this), and the node is reached only after a TCP handshake's round trip. Order
    /// is kept and throughput is not limited.
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
    turns: Turns,
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
        let turns = Turns::default();
        let mut tasks = JoinSet::new();
        let (faults2, accepted2, gauge2) = (faults.clone(), accepted.clone(), gauge.clone());
        let turns2 = turns.clone();
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
                let counter = turns2.connection(faults.delay);
                connections.spawn(relay_connection(client, target, faults, open, counter));
                // Forget connections that ended.
                while connections.try_join_next().is_some() {}
            }
        });
        Ok(Relay {
            addr,
            faults,
            accepted,
            gauge,
            turns,
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

    /// The round trips each connection accepted so far has waited for, in order of accept: one
    /// for the TCP handshake, and one for each request/answer turn (the client sent, got an
    /// answer, and only then sent again, after a pause of at least the one-way delay). Counted
    /// only for connections with a delay; the pause tells a client that waits from one that
    /// merely writes on while answers come in.
    pub fn turns(&self) -> Vec<u32> {
        self.turns.counts()
    }
}

/// The turns of each connection of one relay.
#[derive(Debug, Clone, Default)]
struct Turns(Arc<Mutex<Vec<u32>>>);

impl Turns {
    fn connection(&self, delay: Duration) -> Option<TurnCounter> {
        if delay.is_zero() {
            return None;
        }
        let mut counts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        // The TCP handshake.
        counts.push(1);
        Some(TurnCounter {
            turns: self.clone(),
            index: counts.len() - 1,
            pause: delay,
            state: Arc::new(Mutex::new(TurnState::default())),
        })
    }

    fn counts(&self) -> Vec<u32> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Counts one connection's turns, from both directions.
#[derive(Debug, Clone)]
struct TurnCounter {
    turns: Turns,
    index: usize,
    /// The least pause between two sends that counts as waiting.
    pause: Duration,
    state: Arc<Mutex<TurnState>>,
}

#[derive(Debug, Default)]
struct TurnState {
    /// When the client last sent.
    sent: Option<Instant>,
    /// Whether an answer reached the client since.
    answered: bool,
}

impl TurnCounter {
    /// The client sent a chunk (read by the relay now); whether it ended a wait.
    fn sent(&self) -> bool {
        let now = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let waited = state
            .sent
            .is_some_and(|last| state.answered && now.duration_since(last) >= self.pause);
        if waited {
            let mut counts = self.turns.0.lock().unwrap_or_else(|e| e.into_inner());
            counts[self.index] += 1;
        }
        state.sent = Some(now);
        state.answered = false;
        waited
    }

    /// A chunk from the server reached the client.
    fn answered(&self) {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .answered = true;
    }
}

/// Whether to print each chunk of a counted connection, with the turns it ends: set
/// `NODEUP_RELAY_TRACE` to see which request waited for which answer.
fn tracing_turns() -> bool {
    static TRACE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("NODEUP_RELAY_TRACE").is_some())
}

/// Which way a chunk goes, and what the turn counter hears of it.
#[derive(Clone, Copy)]
enum Way {
    /// Client to node.
    Up,
    /// Node to client.
    Down,
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
    counter: Option<TurnCounter>,
) {
    if faults.blackhole {
        // Hold the connection open, silent, until the relay is dropped.
        let _client = client;
        std::future::pending::<()>().await;
        return;
    }
    // The SYN, SYN-ACK, ACK of a real link: the client could send a round trip after it began,
    // the node accepts a round trip and a half after, and what either side sends first arrives no
    // earlier than it would there.
    let accepted = Instant::now();
    let mut first_due = None;
    if !faults.delay.is_zero() {
        let handshake = accepted + faults.delay * 3;
        if tokio::time::timeout_at(handshake, client.readable())
            .await
            .is_ok()
        {
            first_due = Some(Instant::now().max(accepted + faults.delay * 2) + faults.delay);
        }
        tokio::time::sleep_until(handshake).await;
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
        let up_counter = counter.clone().map(|c| (c, Way::Up));
        let up = async {
            let (delay, kill) = (faults.delay, &kill_tx);
            let from = (client_read, first_due);
            direction(from, server_write, delay, up_budget, kill, up_counter).await;
            drop(open);
        };
        let down_counter = counter.map(|c| (c, Way::Down));
        let down = direction(
            (server_read, None),
            client_write,
            faults.delay,
            budget,
            &kill_tx,
            down_counter,
        );
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
/// The counter hears of each chunk the client sent, and of each answer delivered to it. The first
/// chunk is delivered at `first_due` when given (what the client sent during the handshake).
async fn direction(
    from: (impl AsyncRead + Unpin, Option<Instant>),
    writer: impl AsyncWrite + Unpin,
    delay: Duration,
    budget: Arc<Mutex<Option<u64>>>,
    kill: &watch::Sender<bool>,
    counter: Option<(TurnCounter, Way)>,
) {
    let (up, down) = match counter {
        Some((c, Way::Up)) => (Some(c), None),
        Some((c, Way::Down)) => (None, Some(c)),
        None => (None, None),
    };
    let (tx, rx) = mpsc::unbounded_channel::<Chunk>();
    let stamping = Stamping {
        delay,
        first_due: from.1,
        budget,
        counter: up,
    };
    tokio::join!(
        read_chunks(from.0, stamping, tx, kill.subscribe()),
        write_chunks(writer, rx, kill, down)
    );
}

/// How the reading side stamps chunks: their delay, the first one's due time, the byte budget
/// before a reset, and the turn counter that hears of the client's sends.
struct Stamping {
    delay: Duration,
    first_due: Option<Instant>,
    budget: Arc<Mutex<Option<u64>>>,
    counter: Option<TurnCounter>,
}

impl Stamping {
    /// Cuts `data` to what the budget allows; whether the budget is spent (a reset follows).
    fn spend(&self, data: &mut Vec<u8>) -> bool {
        let mut budget = self.budget.lock().unwrap_or_else(|e| e.into_inner());
        let Some(left) = budget.as_mut() else {
            return false;
        };
        let spent = data.len() as u64 >= *left;
        data.truncate((*left).min(data.len() as u64) as usize);
        *left = left.saturating_sub(data.len() as u64);
        spent
    }
}

/// Reads chunks and sends them, stamped with their delivery time, to the writing side.
async fn read_chunks(
    mut reader: impl AsyncRead + Unpin,
    mut stamping: Stamping,
    tx: mpsc::UnboundedSender<Chunk>,
    mut kill: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = tokio::select! {
            read = reader.read(&mut buf) => match read {
                Ok(0) => { let _ = tx.send(Chunk::Eof(Instant::now() + stamping.delay)); return; }
                Ok(n) => n,
                Err(_) => { let _ = tx.send(Chunk::Reset(Instant::now() + stamping.delay)); return; }
            },
            _ = kill.wait_for(|k| *k) => return,
        };
        if let Some(counter) = &stamping.counter {
            let waited = counter.sent();
            if tracing_turns() {
                let turn = if waited { " (a turn)" } else { "" };
                eprintln!("relay: {:?} up {n}{turn}", Instant::now());
            }
        }
        let mut data = buf[..n].to_vec();
        let reset = stamping.spend(&mut data);
        let at = stamping
            .first_due
            .take()
            .unwrap_or(Instant::now() + stamping.delay);
        let _ = tx.send(Chunk::Data(at, data));
        if reset {
            let _ = tx.send(Chunk::Reset(at));
            return;
        }
    }
}

/// Delivers each chunk at its time; a failed write or a reset ends every direction.
async fn write_chunks(
    mut writer: impl AsyncWrite + Unpin,
    mut rx: mpsc::UnboundedReceiver<Chunk>,
    kill: &watch::Sender<bool>,
    counter: Option<TurnCounter>,
) {
    let mut killed = kill.subscribe();
    loop {
        let chunk = tokio::select! {
            chunk = rx.recv() => chunk,
            _ = killed.wait_for(|k| *k) => return,
        };
        match chunk {
            Some(Chunk::Data(at, data)) => {
                tokio::time::sleep_until(at).await;
                if writer.write_all(&data).await.is_err() {
                    let _ = kill.send(true);
                    return;
                }
                if let Some(counter) = &counter {
                    counter.answered();
                    if tracing_turns() {
                        eprintln!("relay: {:?} down {}", Instant::now(), data.len());
                    }
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
}
