//! Log lines gathered in memory and written out in batches by a thread of their own.
//!
//! A request must not wait on a `write` to the log, so lines are written by another thread. Handing
//! that thread one line at a time still cost a wake-up and a `write` per line: at 20 000 requests a
//! second on a busy machine the log thread took up to an eighth of the server's CPU (see
//! docs/PERFORMANCE.md). Here a line is appended to a shared buffer; the first line into an empty
//! buffer wakes the writer thread, which lets the burst gather for [`LINGER`] and writes all of it
//! at once. A line reaches the output within `LINGER` (plus the write itself) and an idle server's
//! thread sleeps. No line is dropped: while the output cannot keep up and the buffer holds its
//! limit, logging waits.

use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// How long the writer thread lets lines gather after the first one wakes it.
const LINGER: Duration = Duration::from_millis(2);

/// Bytes the buffer holds before loggers wait for the writer thread.
const MAX_PENDING: usize = 4 << 20;

#[derive(Debug, Default)]
struct Pending {
    bytes: Vec<u8>,
    closed: bool,
}

#[derive(Debug)]
struct Shared {
    pending: Mutex<Pending>,
    max_pending: usize,
    /// The writer thread waits here for a first line, or for the close.
    filled: Condvar,
    /// Loggers wait here while the buffer is full.
    drained: Condvar,
}

impl Shared {
    /// The buffer holds plain bytes, usable even after a panic elsewhere poisoned the lock.
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Where log lines go (a `MakeWriter` for tracing); cheap to clone.
#[derive(Debug, Clone)]
pub struct BatchedWriter {
    shared: Arc<Shared>,
}

/// Writes out what is still buffered and stops the writer thread when dropped. Lines logged
/// after that are not written.
#[must_use = "lines are written until the guard is dropped"]
#[derive(Debug)]
pub struct WriterGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// Starts a writer thread named `name` that writes the lines to `out`.
pub fn spawn<W: Write + Send + 'static>(name: &str, out: W) -> (BatchedWriter, WriterGuard) {
    spawn_bounded(name, out, MAX_PENDING)
}

fn spawn_bounded<W: Write + Send + 'static>(
    name: &str,
    out: W,
    max_pending: usize,
) -> (BatchedWriter, WriterGuard) {
    let shared = Arc::new(Shared {
        pending: Mutex::new(Pending::default()),
        max_pending,
        filled: Condvar::new(),
        drained: Condvar::new(),
    });
    let thread = {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || write_batches(&shared, out))
            // Without a thread to write them there would be no logs at all.
            .expect("the log writer thread starts")
    };
    (
        BatchedWriter {
            shared: shared.clone(),
        },
        WriterGuard {
            shared,
            thread: Some(thread),
        },
    )
}

/// The writer thread: waits for a first line, lets the burst gather, writes it; until closed.
fn write_batches<W: Write>(shared: &Shared, mut out: W) {
    let mut batch = Vec::new();
    loop {
        let mut pending = shared.lock();
        while pending.bytes.is_empty() && !pending.closed {
            pending = shared
                .filled
                .wait(pending)
                .unwrap_or_else(PoisonError::into_inner);
        }
        if !pending.closed {
            drop(pending);
            std::thread::sleep(LINGER);
            pending = shared.lock();
        }
        let closed = pending.closed;
        std::mem::swap(&mut batch, &mut pending.bytes);
        drop(pending);
        shared.drained.notify_all();
        // A failed write to the log has nowhere to be reported; the next batch tries again.
        let _ = out.write_all(&batch).and_then(|()| out.flush());
        batch.clear();
        if closed {
            return;
        }
    }
}

impl Write for &BatchedWriter {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        let shared = &self.shared;
        let mut pending = shared.lock();
        while pending.bytes.len() >= shared.max_pending && !pending.closed {
            pending = shared
                .drained
                .wait(pending)
                .unwrap_or_else(PoisonError::into_inner);
        }
        let wake = pending.bytes.is_empty();
        pending.bytes.extend_from_slice(line);
        drop(pending);
        // Only the first line of a batch wakes the thread; the rest ride along.
        if wake {
            shared.filled.notify_one();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BatchedWriter {
    type Writer = &'a BatchedWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self
    }
}

impl Drop for WriterGuard {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.filled.notify_one();
        self.shared.drained.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Instant;

    use super::*;

    /// An output the test can read while the writer thread holds it.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    fn log(writer: &BatchedWriter, line: &str) {
        writer.make_writer().write_all(line.as_bytes()).unwrap();
    }

    #[test]
    fn a_lone_line_is_written_without_waiting_for_more() {
        let out = Captured::default();
        let (writer, _guard) = spawn("test-log", out.clone());
        log(&writer, "one line\n");
        let deadline = Instant::now() + Duration::from_secs(10);
        while out.text().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(out.text(), "one line\n");
    }

    #[test]
    fn lines_from_many_threads_arrive_whole_and_in_each_threads_order() {
        let out = Captured::default();
        let (writer, guard) = spawn("test-log", out.clone());
        let threads: Vec<_> = (0..4)
            .map(|thread| {
                let writer = writer.clone();
                std::thread::spawn(move || {
                    for n in 0..2000 {
                        log(
                            &writer,
                            &format!("thread {thread} line {n} {}\n", "x".repeat(n % 50)),
                        );
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        drop(guard);
        let text = out.text();
        let mut next = [0usize; 4];
        for line in text.lines() {
            let words: Vec<&str> = line.split(' ').collect();
            let thread: usize = words[1].parse().unwrap();
            let n: usize = words[3].parse().unwrap();
            assert_eq!(n, next[thread], "{line}");
            assert_eq!(words[4], "x".repeat(n % 50));
            next[thread] += 1;
        }
        assert_eq!(next, [2000; 4]);
    }

    /// An output that takes each write only when the test says so.
    struct Gated(mpsc::Receiver<()>, Captured);

    impl Write for Gated {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.recv().ok();
            self.1.write(bytes)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_full_buffer_makes_logging_wait_and_loses_nothing() {
        let (open, gate) = mpsc::channel();
        let out = Captured::default();
        let (writer, guard) = spawn_bounded("test-log", Gated(gate, out.clone()), 16);
        let logger = {
            let writer = writer.clone();
            std::thread::spawn(move || {
                for n in 0..20 {
                    log(&writer, &format!("line {n:02} of twenty\n"));
                }
            })
        };
        // The first batch is stuck in the gated write and the buffer fills: the logger waits.
        std::thread::sleep(Duration::from_millis(100));
        assert!(!logger.is_finished());
        for _ in 0..40 {
            open.send(()).unwrap();
        }
        logger.join().unwrap();
        drop(guard);
        let expected: String = (0..20)
            .map(|n| format!("line {n:02} of twenty\n"))
            .collect();
        assert_eq!(out.text(), expected);
    }
}
