//! Grouping concurrent calls into batches: one database statement and one commit for many
//! session inserts (group commit), one query for many session reads, one Redis script call for
//! many requests' rate limits, one model run for many face embeddings.
//!
//! A batch is whatever is waiting when a lane becomes free, up to a maximum: an idle server runs
//! each call at once, alone, so grouping adds no delay; a busy one pays one round trip (and one
//! commit) for many calls instead of one each, which is what limits a database or Redis under
//! many concurrent requests. A batcher may also linger: wait up to a set time after the first
//! call for more, which pays where one run of many items costs little more than one of a single
//! item (a model on a GPU).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, mpsc, oneshot};

/// The batching stopped (the server is shutting down, or a batch panicked).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the batch was not run")]
pub struct NotRun;

struct Pending<I, O> {
    item: I,
    reply: oneshot::Sender<O>,
}

/// Runs calls of `I` in batches on `lanes` concurrent lanes; each call gets its own `O`.
pub struct Batcher<I, O> {
    sender: mpsc::Sender<Pending<I, O>>,
}

impl<I, O> Clone for Batcher<I, O> {
    fn clone(&self) -> Self {
        Self {
            sender: self.sender.clone(),
        }
    }
}

impl<I, O> std::fmt::Debug for Batcher<I, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher").finish_non_exhaustive()
    }
}

impl<I: Send + 'static, O: Send + 'static> Batcher<I, O> {
    /// Starts the lanes (on the current Tokio runtime). `run` gets up to `max_batch` items and
    /// must answer one output per item, in order; an item it leaves unanswered gets [`NotRun`].
    pub fn spawn<F, Fut>(lanes: usize, max_batch: usize, run: F) -> Self
    where
        F: Fn(Vec<I>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<O>> + Send + 'static,
    {
        Self::spawn_lingering(lanes, max_batch, Duration::ZERO, run)
    }

    /// Like [`Batcher::spawn`], but a lane that gets fewer than `max_batch` items waits up to
    /// `linger` from its first item for more before it runs them.
    pub fn spawn_lingering<F, Fut>(lanes: usize, max_batch: usize, linger: Duration, run: F) -> Self
    where
        F: Fn(Vec<I>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<O>> + Send + 'static,
    {
        let max_batch = max_batch.max(1);
        let lanes = lanes.max(1);
        // Bounded, so a stalled database pushes back on callers instead of growing a queue.
        let (sender, receiver) = mpsc::channel(max_batch * lanes * 4);
        let receiver = Arc::new(Mutex::new(receiver));
        let run = Arc::new(run);
        for _ in 0..lanes {
            let receiver = receiver.clone();
            let run = run.clone();
            tokio::spawn(async move {
                let mut taken = Vec::with_capacity(max_batch);
                loop {
                    // One lane waits for work at a time; it lets go as soon as it has some (or,
                    // lingering, once the batch is full or its time is up).
                    let mut queue = receiver.lock().await;
                    if queue.recv_many(&mut taken, max_batch).await == 0 {
                        return;
                    }
                    let deadline = tokio::time::Instant::now() + linger;
                    while taken.len() < max_batch && !linger.is_zero() {
                        let room = max_batch - taken.len();
                        match tokio::time::timeout_at(deadline, queue.recv_many(&mut taken, room))
                            .await
                        {
                            Ok(count) if count > 0 => {}
                            // Closed, or the time is up: run what there is.
                            _ => break,
                        }
                    }
                    drop(queue);
                    let (items, replies): (Vec<I>, Vec<oneshot::Sender<O>>) = taken
                        .drain(..)
                        .map(|pending: Pending<I, O>| (pending.item, pending.reply))
                        .unzip();
                    // Its own task: a panicking batch fails its callers, not the lane.
                    let Ok(outputs) = tokio::spawn(run(items)).await else {
                        continue;
                    };
                    for (reply, output) in replies.into_iter().zip(outputs) {
                        // The caller may have gone (a timed-out request): nothing to tell.
                        let _ = reply.send(output);
                    }
                }
            });
        }
        Self { sender }
    }

    /// Queues `item` for the next batch and waits for its output.
    pub async fn call(&self, item: I) -> Result<O, NotRun> {
        let (reply, answer) = oneshot::channel();
        self.sender
            .send(Pending { item, reply })
            .await
            .map_err(|_| NotRun)?;
        answer.await.map_err(|_| NotRun)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    /// Calls `0..count` from tasks of their own, all at once; the answers in call order.
    async fn call_at_once(batcher: &Batcher<u32, u32>, count: u32) -> Vec<Result<u32, NotRun>> {
        let calls: Vec<_> = (0..count)
            .map(|n| {
                let batcher = batcher.clone();
                tokio::spawn(async move { batcher.call(n).await })
            })
            .collect();
        let mut answers = Vec::new();
        for call in calls {
            answers.push(call.await.unwrap());
        }
        answers
    }

    #[tokio::test]
    async fn an_idle_batcher_runs_a_call_alone() {
        let batcher = Batcher::spawn(1, 8, |items: Vec<u32>| async move {
            vec![items.len(); items.len()]
        });
        assert_eq!(batcher.call(7).await, Ok(1));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn calls_waiting_behind_a_batch_run_together_and_get_their_own_answers() {
        let batches = Arc::new(AtomicUsize::new(0));
        let counted = batches.clone();
        let batcher = Batcher::spawn(1, 64, move |items: Vec<u32>| {
            let counted = counted.clone();
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
                // Slow enough that the other calls queue behind the first batch.
                tokio::time::sleep(Duration::from_millis(50)).await;
                items.into_iter().map(|n| n * 10).collect::<Vec<_>>()
            }
        });
        for (n, answer) in call_at_once(&batcher, 40).await.into_iter().enumerate() {
            assert_eq!(answer, Ok(n as u32 * 10));
        }
        // The first call alone, the 39 others in one or two batches: far fewer than 40.
        let runs = batches.load(Ordering::SeqCst);
        assert!(runs <= 3, "{runs} batches for 40 calls");
    }

    #[tokio::test]
    async fn batches_never_exceed_the_maximum() {
        let largest = Arc::new(AtomicUsize::new(0));
        let seen = largest.clone();
        let batcher = Batcher::spawn(1, 4, move |items: Vec<u32>| {
            seen.fetch_max(items.len(), Ordering::SeqCst);
            async move { items }
        });
        for (n, answer) in call_at_once(&batcher, 20).await.into_iter().enumerate() {
            assert_eq!(answer, Ok(n as u32));
        }
        let largest = largest.load(Ordering::SeqCst);
        assert!((1..=4).contains(&largest), "largest batch {largest}");
    }

    #[tokio::test]
    async fn a_lingering_batcher_gathers_calls_that_arrive_within_its_wait() {
        let sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = sizes.clone();
        let batcher =
            Batcher::spawn_lingering(1, 4, Duration::from_millis(300), move |items: Vec<u32>| {
                seen.lock().unwrap().push(items.len());
                async move { items }
            });
        // Three calls 20 ms apart: one batch, run when the wait is over.
        let mut calls = Vec::new();
        for n in 0..3 {
            let batcher = batcher.clone();
            calls.push(tokio::spawn(async move { batcher.call(n).await }));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for (n, call) in calls.into_iter().enumerate() {
            assert_eq!(call.await.unwrap(), Ok(n as u32));
        }
        assert_eq!(*sizes.lock().unwrap(), vec![3]);
        // Four calls at once fill a batch, which runs without waiting out the linger.
        sizes.lock().unwrap().clear();
        let started = std::time::Instant::now();
        let batcher_full = batcher.clone();
        let answers = call_at_once(&batcher_full, 4).await;
        assert!(answers.iter().all(Result::is_ok));
        assert!(
            started.elapsed() < Duration::from_millis(250),
            "a full batch waited"
        );
        assert_eq!(*sizes.lock().unwrap(), vec![4]);
    }

    #[tokio::test]
    async fn a_panicking_or_short_batch_fails_its_callers_and_the_lane_goes_on() {
        let batcher = Batcher::spawn(1, 8, |items: Vec<u32>| async move {
            assert!(items[0] != 13, "a batch that panics");
            // Answers nothing for 5.
            items.into_iter().filter(|n| *n != 5).collect::<Vec<_>>()
        });
        assert_eq!(batcher.call(13).await, Err(NotRun));
        assert_eq!(batcher.call(5).await, Err(NotRun));
        assert_eq!(batcher.call(6).await, Ok(6));
    }
}
