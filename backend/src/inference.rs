//! The face models of finalize, run on a bounded pool: at most `inference.workers` runs at once,
//! at most `inference.queue` waiting (more are refused at once, so callers answer `503` with
//! `Retry-After` instead of queueing forever), each run under a timeout, and a circuit breaker
//! that stops sending work to an engine that keeps failing. Models load once, at start-up.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use idyntra_models::{FaceChain, ModelError};
use image::RgbImage;
use tokio::sync::Semaphore;

use crate::config::{CpuEngine, Device, InferenceConfig};

#[cfg(feature = "burn")]
pub mod burn_engine;

/// What runs the face-embedding model.
#[derive(Debug)]
enum Embedder {
    /// The chain's own MobileFaceNet on tract.
    Tract,
    #[cfg(feature = "burn")]
    Burn(Box<burn_engine::BurnEmbedder>),
}

/// The loaded models: detection and alignment (tract) and the embedder of the configured engine.
#[derive(Debug)]
pub struct Models {
    pub chain: FaceChain,
    embedder: Embedder,
}

impl Models {
    /// The embeddings of two aligned crops.
    pub fn embed_pair(&self, a: &RgbImage, b: &RgbImage) -> Result<[Vec<f32>; 2], ModelError> {
        match &self.embedder {
            Embedder::Tract => {
                let mut embeddings = self.chain.embed(&[a, b])?.into_iter();
                match (embeddings.next(), embeddings.next()) {
                    (Some(first), Some(second)) => Ok([first, second]),
                    _ => Err(ModelError {
                        model: "mobilefacenet",
                        message: "two embeddings expected".to_owned(),
                    }),
                }
            }
            #[cfg(feature = "burn")]
            Embedder::Burn(burn) => burn.embed_pair(a, b),
        }
    }

    /// The name recorded in results: `tract-cpu`, `burn-flex` or `burn-wgpu`.
    pub fn engine(&self) -> &'static str {
        match &self.embedder {
            Embedder::Tract => "tract-cpu",
            #[cfg(feature = "burn")]
            Embedder::Burn(burn) => burn.engine(),
        }
    }
}

/// The embedder `config` asks for, if this build has it.
fn embedder(config: &InferenceConfig) -> anyhow::Result<Embedder> {
    // A build with the `gpu` feature is made for GPU nodes: `auto` uses wgpu there.
    let gpu = matches!(config.device, Device::Gpu)
        || (config.device == Device::Auto && cfg!(feature = "gpu"));
    if gpu {
        #[cfg(feature = "gpu")]
        return Ok(Embedder::Burn(Box::new(burn_engine::BurnEmbedder::load(
            burn_engine::BurnDevice::Wgpu,
        ))));
        #[cfg(not(feature = "gpu"))]
        anyhow::bail!(
            "configuration: inference.device: gpu needs a build with the `gpu` feature; use auto or cpu"
        );
    }
    match config.cpu_engine {
        CpuEngine::Tract => Ok(Embedder::Tract),
        #[cfg(feature = "burn")]
        CpuEngine::Burn => Ok(Embedder::Burn(Box::new(burn_engine::BurnEmbedder::load(
            burn_engine::BurnDevice::Cpu,
        )))),
        #[cfg(not(feature = "burn"))]
        CpuEngine::Burn => anyhow::bail!(
            "configuration: inference.cpu_engine: burn needs a build with the `burn` feature; use tract"
        ),
    }
}

/// Why a run did not produce an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InferenceError {
    #[error("the model queue is full")]
    Overloaded,
    #[error("the model engine is failing; its circuit breaker is open")]
    BreakerOpen { retry_after: Duration },
    #[error("the models took longer than {0:?}")]
    TimedOut(Duration),
    #[error("the models failed: {0}")]
    Failed(String),
}

/// Consecutive failures open the breaker for a cool-down; after it, one run may try (half
/// open): a success closes the breaker, a failure opens it again.
#[derive(Debug)]
struct Breaker {
    threshold: u32,
    cooldown: Duration,
    state: Mutex<BreakerState>,
}

#[derive(Debug, Default)]
struct BreakerState {
    failures: u32,
    open_until: Option<Instant>,
    /// Times the breaker opened: a run admitted before the last opening cannot close it.
    openings: u64,
}

/// What [`Breaker::admit`] let through: the openings counted when the run started.
#[derive(Debug, Clone, Copy)]
struct Admission {
    openings: u64,
}

impl Breaker {
    fn admit(&self) -> Result<Admission, InferenceError> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match state.open_until {
            Some(until) if Instant::now() < until => Err(InferenceError::BreakerOpen {
                retry_after: until - Instant::now(),
            }),
            Some(_) => {
                // Half open: this run is the trial; others wait for its outcome.
                state.open_until = Some(Instant::now() + self.cooldown);
                Ok(Admission {
                    openings: state.openings,
                })
            }
            None => Ok(Admission {
                openings: state.openings,
            }),
        }
    }

    fn record(&self, admission: Admission, ok: bool) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if ok {
            // A success of a run that started before the breaker last opened says nothing of
            // the engine since: only the trial (or a run of the closed breaker) closes it.
            if state.open_until.is_some() && admission.openings != state.openings {
                return;
            }
            state.failures = 0;
            state.open_until = None;
        } else {
            state.failures += 1;
            if state.failures >= self.threshold {
                state.open_until = Some(Instant::now() + self.cooldown);
                state.openings += 1;
            }
        }
    }

    fn is_open(&self) -> bool {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.open_until.is_some_and(|until| Instant::now() < until)
    }
}

/// The loaded models and the pool that runs them.
#[derive(Debug)]
pub struct FaceEngine {
    models: Arc<Models>,
    waiting: Arc<Semaphore>,
    running: Arc<Semaphore>,
    timeout: Duration,
    breaker: Breaker,
    /// Runs admitted at most: the workers and the queue.
    capacity: usize,
    /// `inference.fault_marker`: runs fail while it exists (fault drills).
    fault_marker: Option<PathBuf>,
}

impl FaceEngine {
    /// Loads the bundled models for `config.device`.
    pub fn load(config: &InferenceConfig) -> anyhow::Result<Self> {
        let embedder = embedder(config)?;
        let chain = FaceChain::bundled(FaceChain::CANVAS)
            .map_err(|e| anyhow::anyhow!("loading the face models: {e}"))?;
        Ok(Self::with_models(Models { chain, embedder }, config))
    }

    fn with_models(models: Models, config: &InferenceConfig) -> Self {
        let workers = if config.workers == 0 {
            std::thread::available_parallelism().map_or(1, usize::from)
        } else {
            config.workers
        };
        Self {
            models: Arc::new(models),
            waiting: Arc::new(Semaphore::new(config.queue + workers)),
            running: Arc::new(Semaphore::new(workers)),
            timeout: config.timeout,
            capacity: config.queue + workers,
            fault_marker: config.fault_marker.clone(),
            breaker: Breaker {
                threshold: config.breaker_failures,
                cooldown: config.breaker_cooldown,
                state: Mutex::new(BreakerState::default()),
            },
        }
    }

    pub fn engine(&self) -> &'static str {
        self.models.engine()
    }

    pub fn chain(&self) -> &FaceChain {
        &self.models.chain
    }

    /// Whether the engine takes work (readiness).
    pub fn is_available(&self) -> bool {
        !self.breaker.is_open()
    }

    /// Model runs admitted and not finished: running, or waiting for a worker.
    pub fn in_flight(&self) -> usize {
        self.capacity - self.waiting.available_permits()
    }

    /// Runs `work` on the models in the pool, under the timeout.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Models) -> Result<T, ModelError> + Send + 'static,
    ) -> Result<T, InferenceError> {
        let _waiting = self
            .waiting
            .clone()
            .try_acquire_owned()
            .map_err(|_| InferenceError::Overloaded)?;
        let admission = self.breaker.admit()?;
        if self.fault_marker.as_deref().is_some_and(Path::exists) {
            self.breaker.record(admission, false);
            return Err(InferenceError::Failed(
                "injected fault (inference.fault_marker exists)".to_owned(),
            ));
        }
        let started = Instant::now();
        let outcome = tokio::time::timeout(self.timeout, async {
            let running = self
                .running
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| InferenceError::Failed("the pool is closed".to_owned()))?;
            let models = self.models.clone();
            // The permit moves into the blocking task: a run that outlives its timeout still
            // holds its worker, so timed-out runs cannot pile up beyond the pool.
            tokio::task::spawn_blocking(move || {
                let _running = running;
                work(&models)
            })
            .await
            .map_err(|e| InferenceError::Failed(format!("the model task stopped: {e}")))?
            .map_err(|e| InferenceError::Failed(e.to_string()))
        })
        .await
        .unwrap_or(Err(InferenceError::TimedOut(self.timeout)));
        self.breaker.record(admission, outcome.is_ok());
        tracing::debug!(
            ms = started.elapsed().as_millis() as u64,
            ok = outcome.is_ok(),
            "inference"
        );
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(queue: usize, workers: usize, timeout: Duration) -> InferenceConfig {
        InferenceConfig {
            workers,
            queue,
            timeout,
            breaker_failures: 2,
            breaker_cooldown: Duration::from_millis(200),
            ..InferenceConfig::default()
        }
    }

    fn engine(config: &InferenceConfig) -> Arc<FaceEngine> {
        Arc::new(FaceEngine::load(config).unwrap())
    }

    #[tokio::test]
    async fn a_full_queue_refuses_and_failures_open_the_breaker() {
        let engine = engine(&config(1, 1, Duration::from_secs(5)));
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let busy = {
            let engine = engine.clone();
            tokio::spawn(async move {
                engine
                    .run(move |_| {
                        let _ = wait.recv();
                        Ok(())
                    })
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let queued = {
            let engine = engine.clone();
            tokio::spawn(async move { engine.run(|_| Ok(())).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        // One running, one waiting: the queue of one is full.
        assert_eq!(
            engine.run(|_| Ok(())).await,
            Err(InferenceError::Overloaded)
        );
        release.send(()).unwrap();
        assert_eq!(busy.await.unwrap(), Ok(()));
        assert_eq!(queued.await.unwrap(), Ok(()));

        let fail = || {
            engine.run(|_| {
                Err::<(), _>(ModelError {
                    model: "test",
                    message: "broken".to_owned(),
                })
            })
        };
        assert!(matches!(fail().await, Err(InferenceError::Failed(_))));
        assert!(matches!(fail().await, Err(InferenceError::Failed(_))));
        assert!(!engine.is_available());
        assert!(matches!(
            engine.run(|_| Ok(())).await,
            Err(InferenceError::BreakerOpen { .. })
        ));
        tokio::time::sleep(Duration::from_millis(250)).await;
        // Half open: a success closes it.
        assert_eq!(engine.run(|_| Ok(())).await, Ok(()));
        assert!(engine.is_available());
    }

    #[tokio::test]
    async fn runs_fail_while_the_fault_marker_exists_and_the_breaker_closes_after() {
        let dir = tempfile::tempdir().unwrap();
        let fault = dir.path().join("fail-models");
        let engine = engine(&InferenceConfig {
            fault_marker: Some(fault.clone()),
            ..config(4, 1, Duration::from_secs(5))
        });
        assert_eq!(engine.run(|_| Ok(1)).await, Ok(1));
        std::fs::write(&fault, b"").unwrap();
        assert!(matches!(
            engine.run(|_| Ok(1)).await,
            Err(InferenceError::Failed(_))
        ));
        assert!(matches!(
            engine.run(|_| Ok(1)).await,
            Err(InferenceError::Failed(_))
        ));
        assert!(!engine.is_available());
        std::fs::remove_file(&fault).unwrap();
        assert!(matches!(
            engine.run(|_| Ok(1)).await,
            Err(InferenceError::BreakerOpen { .. })
        ));
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(engine.run(|_| Ok(1)).await, Ok(1));
        assert!(engine.is_available());
    }

    #[tokio::test]
    async fn a_run_started_before_the_breaker_opened_does_not_close_it() {
        let engine = engine(&config(4, 2, Duration::from_secs(5)));
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let early = {
            let engine = engine.clone();
            tokio::spawn(async move {
                engine
                    .run(move |_| {
                        let _ = wait.recv();
                        Ok(())
                    })
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        for _ in 0..2 {
            let failed = engine
                .run(|_| {
                    Err::<(), _>(ModelError {
                        model: "test",
                        message: "broken".to_owned(),
                    })
                })
                .await;
            assert!(matches!(failed, Err(InferenceError::Failed(_))));
        }
        assert!(!engine.is_available());
        release.send(()).unwrap();
        assert_eq!(early.await.unwrap(), Ok(()));
        assert!(!engine.is_available(), "a stale success closed the breaker");
    }

    #[tokio::test]
    async fn a_slow_run_times_out() {
        let engine = engine(&config(4, 1, Duration::from_millis(50)));
        let outcome = engine
            .run(|_| {
                std::thread::sleep(Duration::from_millis(300));
                Ok(())
            })
            .await;
        assert_eq!(
            outcome,
            Err(InferenceError::TimedOut(Duration::from_millis(50)))
        );
    }
}
