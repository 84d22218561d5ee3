//! The stream tungstenite drives: reads come from the socket, writes go to one byte queue that
//! only the loop's flush puts on the socket.
//!
//! Why not let tungstenite write to the socket: its out buffer keeps the capacity of the largest
//! burst it ever held, for the life of the connection. With 10,000 busy connections that is
//! tens of KiB each, hundreds of MB together, spread over memory the caches cannot hold, and it stays
//! after the burst. Here the routed frames are encoded straight into [`Outbox`], which is freed
//! as soon as everything is on the socket, so the allocator hands the same warm block to the
//! next connection, and an idle connection holds no output buffer at all. (Freeing that often is
//! cheap only because `memory.rs` keeps glibc from handing the heap back after every turn.)
//!
//! Tungstenite still writes its own control frames (pong, close) through [`Write`], into the
//! same queue: one queue keeps every frame whole and in order (an ERROR before the close that
//! follows it), which two writers to one socket could not.

use std::cell::Cell;
use std::io::{self, Read, Write};
use std::rc::Rc;

use crate::protocol::ServerFrame;
use crate::tls::Transport;

/// The unsent bytes of all outboxes together, one counter shared by all of them (they live on
/// the loop's one thread). Each outbox adds what it queues and takes away what reaches its
/// socket or is dropped with it, so the total is exact at every moment and costs O(1) to read:
/// it is what the router's [`total_backlog`](crate::router::FrameSink::total_backlog) asks.
#[derive(Clone, Debug, Default)]
pub struct BacklogTotal(Rc<Cell<usize>>);

impl BacklogTotal {
    pub fn get(&self) -> usize {
        self.0.get()
    }

    fn add(&self, bytes: usize) {
        self.0.set(self.0.get() + bytes);
    }

    fn sub(&self, bytes: usize) {
        // Never below zero: every subtraction is of bytes an outbox added before.
        self.0.set(self.0.get().saturating_sub(bytes));
    }
}

/// A connection's socket with its queue of unsent WebSocket bytes.
///
/// Invariant: `total` holds exactly [`Outbox::unsent`] of this outbox (until it is dropped).
pub struct Outbox {
    transport: Transport,
    total: BacklogTotal,
    queue: Vec<u8>,
    /// How much of `queue` is already on the socket.
    sent: usize,
    /// How long the queue grew before its last complete flush (see [`Outbox::expected_len`]).
    last_len: u32,
}

/// An unsent backlog at this size is put on the socket at once rather than at the end of the
/// loop iteration, so a burst to one connection does not grow its queue without need.
const WRITE_EARLY: usize = 64 * 1024;

/// What a queue for routed frames allocates at least.
const FIRST_CAPACITY: usize = 4096;

/// The largest block a queue is given ahead of need. glibc serves bigger requests with `mmap`
/// (its threshold stays at 128 KiB because `memory.rs` sets the trim threshold), which costs a
/// system call and fresh zeroed pages every turn.
const LARGEST_HEAP_BLOCK: usize = 120 * 1024;

/// The first byte of an unfragmented text frame: FIN and opcode 1 (RFC 6455 §5.2).
const FIN_TEXT: u8 = 0x81;

/// The longest header of an unmasked frame: 2 bytes, then a 64-bit length.
const MAX_HEADER: usize = 10;

/// Appends the header of an unmasked text frame of `len` bytes. The length takes 7 bits, or 126
/// and 16 bits, or 127 and 64 bits, big-endian (RFC 6455 §5.2).
fn push_header(queue: &mut Vec<u8>, len: usize) {
    queue.push(FIN_TEXT);
    if len < 126 {
        queue.push(len as u8);
    } else if let Ok(short) = u16::try_from(len) {
        queue.push(126);
        queue.extend_from_slice(&short.to_be_bytes());
    } else {
        queue.push(127);
        queue.extend_from_slice(&(len as u64).to_be_bytes());
    }
}

/// The header was sized from [`ServerFrame::len`] and the text came out another length: that is
/// a bug in `protocol.rs`, but the frame still goes out whole, at the cost of one more copy.
#[cold]
fn rewrite_header(queue: &mut Vec<u8>, frame_start: usize, text_start: usize) {
    debug_assert!(false, "a server frame's length was not what it said");
    let text = queue.split_off(text_start);
    queue.truncate(frame_start);
    push_header(queue, text.len());
    queue.extend_from_slice(&text);
}

impl Outbox {
    pub fn new(transport: Transport, total: BacklogTotal) -> Outbox {
        Outbox {
            transport,
            total,
            queue: Vec::new(),
            sent: 0,
            last_len: 0,
        }
    }

    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    pub fn transport_mut(&mut self) -> &mut Transport {
        &mut self.transport
    }

    /// Bytes queued and not yet on the socket.
    pub fn unsent(&self) -> usize {
        self.queue.len() - self.sent
    }

    /// Queues `frame` as one unmasked text frame, the form every server-to-client frame takes,
    /// writing its text straight into the queue (the one copy of a forwarded payload). A backlog
    /// that reaches [`WRITE_EARLY`] is put on the socket at once.
    pub fn push_frame(&mut self, frame: &ServerFrame<'_>) {
        let len = frame.len();
        self.make_room(len + MAX_HEADER);
        let frame_start = self.queue.len();
        push_header(&mut self.queue, len);
        let text_start = self.queue.len();
        frame.write(&mut self.queue);
        let written = self.queue.len() - text_start;
        if written != len {
            rewrite_header(&mut self.queue, frame_start, text_start);
        }
        self.total.add(self.queue.len() - frame_start);
        if self.unsent() >= WRITE_EARLY {
            // WouldBlock leaves the rest for the flush; a failure surfaces there too.
            let _ = self.write_queue();
        }
    }

    /// Makes room for `bytes` more. Growing a queue copies every byte already in it, and the
    /// payload is meant to be copied once: so a queue below the length this connection's turns
    /// are expected to reach goes straight to that length (or to what is needed, if more).
    fn make_room(&mut self, bytes: usize) {
        let needed = self.queue.len() + bytes;
        if needed <= self.queue.capacity() {
            return;
        }
        let expected = self.expected_len();
        if self.queue.capacity() < expected {
            self.queue
                .reserve_exact(expected.max(needed) - self.queue.len());
        } else {
            self.queue.reserve(bytes);
        }
    }

    /// Twice what the queue held at its last complete flush, so a turn busier than the last one
    /// rarely outgrows it: starting at exactly the last length, a busy connection would
    /// reallocate (and copy its queue) every few dozen messages. Blocks are freed at every complete
    /// flush, so what a connection holds between turns stays what it has not sent.
    fn expected_len(&self) -> usize {
        (self.last_len as usize)
            .saturating_mul(2)
            .clamp(FIRST_CAPACITY, LARGEST_HEAP_BLOCK)
    }

    /// Puts the queue on the socket. `Ok(())` when all of it (and any TLS records) went out;
    /// `WouldBlock` when the socket is full.
    pub fn flush_to_socket(&mut self) -> io::Result<()> {
        self.write_queue()?;
        self.transport.flush()
    }

    fn write_queue(&mut self) -> io::Result<()> {
        while self.sent < self.queue.len() {
            let rest = self.queue.get(self.sent..).unwrap_or_default();
            match self.transport.write(rest) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.sent += n;
                    self.total.sub(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.compact();
                    return Err(e);
                }
            }
        }
        // Everything is out: give the memory back rather than keep the largest burst's capacity.
        self.last_len = u32::try_from(self.queue.len()).unwrap_or(u32::MAX);
        self.queue = Vec::new();
        self.sent = 0;
        Ok(())
    }

    /// Drops the sent front of the queue once it is most of it, so a slow reader's queue does not
    /// keep bytes it no longer needs, at one move per halving.
    fn compact(&mut self) {
        if self.sent > self.queue.len() / 2 {
            self.queue.drain(..self.sent);
            self.sent = 0;
        }
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        self.total.sub(self.unsent());
    }
}

impl Read for Outbox {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.transport.read(buf)
    }
}

/// Tungstenite's control frames join the queue; they reach the socket at the next flush.
impl Write for Outbox {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // No room ahead of need: a ping or pong to an idle connection stays a few bytes.
        self.queue.extend_from_slice(buf);
        self.total.add(buf.len());
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::time::Duration;

    use tungstenite::protocol::frame::Frame;
    use tungstenite::protocol::frame::coding::{Data, OpCode};

    /// An outbox on one end of a loopback connection, and the other end, blocking.
    fn pair() -> (Outbox, std::net::TcpStream) {
        pair_counted_in(&BacklogTotal::default())
    }

    /// Like [`pair`], with the outbox counting its backlog in `total`.
    fn pair_counted_in(total: &BacklogTotal) -> (Outbox, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        let server = mio::net::TcpStream::from_std(server);
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        (Outbox::new(Transport::plain(server), total.clone()), client)
    }

    fn encoded_by_tungstenite(text: &str) -> Vec<u8> {
        let frame = Frame::message(text.as_bytes().to_vec(), OpCode::Data(Data::Text), true);
        let mut bytes = Vec::new();
        frame.format(&mut bytes).unwrap();
        bytes
    }

    #[test]
    fn frames_are_encoded_as_tungstenite_encodes_them() {
        for len in [0, 1, 125, 126, 127, 65_535, 65_536, 70_000] {
            let (mut outbox, mut client) = pair();
            let text = "x".repeat(len);
            outbox.push_frame(&ServerFrame::Encoded(&text));
            outbox.flush_to_socket().unwrap();
            let expected = encoded_by_tungstenite(&text);
            let mut received = vec![0; expected.len()];
            client.read_exact(&mut received).unwrap();
            assert!(received == expected, "length {len}");
        }
    }

    #[test]
    fn a_backlog_of_64_kib_goes_to_the_socket_early() {
        let total = BacklogTotal::default();
        let (mut outbox, _client) = pair_counted_in(&total);
        // 1,000 bytes of text make a 1,004-byte frame: the 66th brings the backlog to 64 KiB.
        let text = "x".repeat(1000);
        for n in 1..66 {
            outbox.push_frame(&ServerFrame::Encoded(&text));
            assert_eq!(outbox.unsent(), n * 1004, "frame {n} went early");
        }
        outbox.push_frame(&ServerFrame::Encoded(&text));
        assert!(outbox.unsent() < 66 * 1004, "nothing reached the socket");
        assert_eq!(total.get(), outbox.unsent());
    }

    #[test]
    fn a_turn_up_to_twice_the_last_one_never_grows_the_queue() {
        // Growing would copy every queued byte again.
        let (mut outbox, _client) = pair();
        let text = "x".repeat(1000);
        let frame = ServerFrame::Encoded(&text);
        for _ in 0..20 {
            outbox.push_frame(&frame);
        }
        outbox.flush_to_socket().unwrap();
        let last_turn = 20 * 1004;
        assert_eq!(outbox.queue.capacity(), 0);
        // The next turn starts with a pong (tungstenite's write), then routed frames.
        outbox.write_all(b"\x8a\x00").unwrap();
        outbox.push_frame(&frame);
        let block = (outbox.queue.as_ptr(), outbox.queue.capacity());
        assert!(block.1 >= 2 * last_turn, "{} bytes of room", block.1);
        while outbox.unsent() + 1004 <= 2 * last_turn {
            outbox.push_frame(&frame);
        }
        assert_eq!((outbox.queue.as_ptr(), outbox.queue.capacity()), block);
    }

    #[test]
    fn a_pong_to_an_idle_connection_takes_a_few_bytes() {
        let (mut outbox, _client) = pair();
        outbox.write_all(b"\x8a\x00").unwrap();
        assert!(outbox.queue.capacity() < 64, "{}", outbox.queue.capacity());
    }

    #[test]
    fn a_full_socket_keeps_the_rest_in_order_and_an_empty_queue_holds_no_memory() {
        let (mut outbox, mut client) = pair();
        let mut expected = Vec::new();
        let mut n = 0u32;
        // Frames of varied sizes, with tungstenite-style writes between them, until the socket
        // refuses more.
        while outbox.unsent() == 0 || outbox.flush_to_socket().is_ok() {
            let text = format!("{n:0width$}", width = 100 + (n as usize * 37) % 3000);
            outbox.push_frame(&ServerFrame::Encoded(&text));
            expected.extend(encoded_by_tungstenite(&text));
            outbox.write_all(b"\x8a\x00").unwrap();
            expected.extend(b"\x8a\x00");
            n += 1;
            assert!(n < 100_000, "the socket never filled");
        }
        assert!(outbox.unsent() > 0);
        let reader = std::thread::spawn(move || {
            let mut received = vec![0; expected.len()];
            client.read_exact(&mut received).unwrap();
            received == expected
        });
        loop {
            match outbox.flush_to_socket() {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert!(reader.join().unwrap(), "bytes lost, doubled or reordered");
        assert_eq!(outbox.unsent(), 0);
        assert_eq!(outbox.queue.capacity(), 0);
    }

    #[test]
    fn the_shared_total_is_the_sum_of_every_outbox_unsent_through_pushes_flushes_and_drops() {
        let total = BacklogTotal::default();
        let (mut first, _first_client) = pair_counted_in(&total);
        let (mut second, _second_client) = pair_counted_in(&total);
        first.push_frame(&ServerFrame::Encoded("hello"));
        second.push_frame(&ServerFrame::Encoded(&"x".repeat(300)));
        second.write_all(b"\x8a\x00").unwrap();
        assert_eq!(total.get(), first.unsent() + second.unsent());
        assert_eq!(total.get(), (2 + 5) + (4 + 300 + 2));
        // Until the socket refuses more, then after a partial flush.
        let text = "y".repeat(8000);
        while second.flush_to_socket().is_ok() {
            second.push_frame(&ServerFrame::Encoded(&text));
        }
        assert_eq!(total.get(), first.unsent() + second.unsent());
        assert!(second.unsent() > 0);
        first.flush_to_socket().unwrap();
        assert_eq!(total.get(), second.unsent());
        drop(second);
        assert_eq!(total.get(), 0, "a dropped outbox takes its backlog with it");
    }
}
