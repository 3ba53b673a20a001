//! The face models of finalize, run on a bounded pool: at most `inference.workers` runs at once,
//! at most `inference.queue` waiting (more are refused at once, so callers answer `503` with
//! `Retry-After` instead of queueing forever), each run under a timeout, and a circuit breaker
//! that stops sending work to an engine that keeps failing. Models load once, at start-up.
//!
//! Embeddings are batched dynamically: the crop pairs of concurrent finalizes are gathered (up to
//! `inference.batch_crops` crops, waiting at most `inference.batch_wait`) into one run of the
//! model, which is one run of the pool.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use idyntra_models::manipulation::BlendModel;
use idyntra_models::{FaceChain, LocatedFaces, ModelError};
use image::RgbImage;
use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::Semaphore;

use crate::batch::Batcher;
use crate::config::{CpuEngine, Device, InferenceConfig};

#[cfg(feature = "burn")]
pub mod burn_detector;
#[cfg(feature = "burn")]
pub mod burn_engine;

/// What runs the face detector and the face-embedding model.
#[derive(Debug)]
enum Engine {
    /// The chain's own CenterFace and MobileFaceNet on tract.
    Tract,
    #[cfg(feature = "burn")]
    Burn {
        detector: Box<burn_detector::BurnDetector>,
        embedder: Box<burn_engine::BurnEmbedder>,
    },
}

/// The loaded models: the chain (alignment, and tract's runs of its models) and the models of the
/// configured engine.
#[derive(Debug)]
pub struct Models {
    pub chain: FaceChain,
    engine: Engine,
    /// The manipulation model (features and a logistic regression: no engine of its own).
    pub blend: BlendModel,
}

impl Models {
    /// The faces of `photo`, largest first, with the aligned crop of the largest.
    pub fn locate(&self, photo: &RgbImage) -> Result<LocatedFaces, ModelError> {
        match &self.engine {
            Engine::Tract => self.chain.locate(photo),
            #[cfg(feature = "burn")]
            Engine::Burn { detector, .. } => Ok(FaceChain::located(
                photo,
                detector.detect(photo, self.chain.detection_threshold)?,
            )),
        }
    }

    /// The embeddings of aligned crops, in order: one run of the model on burn (the file's batch
    /// is dynamic), a run per crop on tract (see [`idyntra_models::MobileFaceNetEmbedder`]).
    pub fn embed(&self, crops: &[&RgbImage]) -> Result<Vec<Vec<f32>>, ModelError> {
        match &self.engine {
            Engine::Tract => self.chain.embed(crops),
            #[cfg(feature = "burn")]
            Engine::Burn { embedder, .. } => embedder.embed(crops),
        }
    }

    /// The embeddings of each group's crops (one finalize's), from one batch of all of them.
    fn embed_groups(&self, groups: &[Vec<RgbImage>]) -> Result<Vec<Vec<Vec<f32>>>, ModelError> {
        let crops: Vec<&RgbImage> = groups.iter().flatten().collect();
        let embeddings = self.embed(&crops)?;
        if embeddings.len() != crops.len() {
            return Err(ModelError::new(
                "mobilefacenet",
                format!("{} embeddings for {} crops", embeddings.len(), crops.len()),
            ));
        }
        let mut embeddings = embeddings.into_iter();
        Ok(groups
            .iter()
            .map(|group| embeddings.by_ref().take(group.len()).collect())
            .collect())
    }

    /// The name recorded in results: `tract-cpu`, `burn-flex` or `burn-wgpu`.
    pub fn engine(&self) -> &'static str {
        match &self.engine {
            Engine::Tract => "tract-cpu",
            #[cfg(feature = "burn")]
            Engine::Burn { embedder, .. } => embedder.engine(),
        }
    }
}

/// The engine `config` asks for, if this build has it.
fn engine(config: &InferenceConfig) -> anyhow::Result<Engine> {
    // A build with the `gpu` feature is made for GPU nodes: `auto` uses wgpu there.
    let gpu = matches!(config.device, Device::Gpu)
        || (config.device == Device::Auto && cfg!(feature = "gpu"));
    if gpu {
        #[cfg(feature = "gpu")]
        return burn(burn_engine::BurnDevice::Wgpu);
        #[cfg(not(feature = "gpu"))]
        anyhow::bail!(
            "configuration: inference.device: gpu needs a build with the `gpu` feature; use auto or cpu"
        );
    }
    match config.cpu_engine {
        CpuEngine::Tract => Ok(Engine::Tract),
        #[cfg(feature = "burn")]
        CpuEngine::Burn => burn(burn_engine::BurnDevice::Cpu),
        #[cfg(not(feature = "burn"))]
        CpuEngine::Burn => anyhow::bail!(
            "configuration: inference.cpu_engine: burn needs a build with the `burn` feature; use tract"
        ),
    }
}

#[cfg(feature = "burn")]
fn burn(device: burn_engine::BurnDevice) -> anyhow::Result<Engine> {
    Ok(Engine::Burn {
        detector: Box::new(
            burn_detector::BurnDetector::load(device, FaceChain::CANVAS)
                .map_err(|e| anyhow::anyhow!("loading the face detector: {e}"))?,
        ),
        embedder: Box::new(burn_engine::BurnEmbedder::load(device)),
    })
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

/// The answer to one group of crops of a batch.
type GroupEmbeddings = Result<Vec<Vec<f32>>, InferenceError>;

/// Most crops one finalize embeds: a selfie's and a document portrait's.
const CROPS_PER_FINALIZE: usize = 2;

/// The loaded models, the pool that runs them and the batcher of embeddings.
#[derive(Debug)]
pub struct FaceEngine {
    pool: Arc<Pool>,
    /// Started on first use, on the runtime of the caller (loading happens off any runtime).
    embeddings: OnceLock<Batcher<Vec<RgbImage>, GroupEmbeddings>>,
    /// Finalizes per batch: `inference.batch_crops` crops at most.
    batch_groups: usize,
    batch_wait: Duration,
    /// Crops per embedding run (exported as `idyntra_inference_batch_crops`).
    batch_sizes: Histogram,
}

/// The bounded pool that runs the models.
#[derive(Debug)]
struct Pool {
    models: Arc<Models>,
    workers: usize,
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
        let engine = engine(config)?;
        let chain = FaceChain::bundled(FaceChain::CANVAS)
            .map_err(|e| anyhow::anyhow!("loading the face models: {e}"))?;
        let blend = BlendModel::bundled()?;
        Ok(Self::with_models(
            Models {
                chain,
                engine,
                blend,
            },
            config,
        ))
    }

    fn with_models(models: Models, config: &InferenceConfig) -> Self {
        let workers = if config.workers == 0 {
            std::thread::available_parallelism().map_or(1, usize::from)
        } else {
            config.workers
        };
        let pool = Pool {
            models: Arc::new(models),
            workers,
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
        };
        Self {
            pool: Arc::new(pool),
            embeddings: OnceLock::new(),
            batch_groups: (config.batch_crops / CROPS_PER_FINALIZE).max(1),
            batch_wait: config.batch_wait,
            batch_sizes: crate::telemetry::batch_histogram(),
        }
    }

    pub fn engine(&self) -> &'static str {
        self.pool.models.engine()
    }

    pub fn chain(&self) -> &FaceChain {
        &self.pool.models.chain
    }

    /// The manipulation model.
    pub fn blend(&self) -> &BlendModel {
        &self.pool.models.blend
    }

    /// The histogram of crops per embedding run, to register with the metrics.
    pub fn batch_sizes(&self) -> Histogram {
        self.batch_sizes.clone()
    }

    /// Whether the engine takes work (readiness).
    pub fn is_available(&self) -> bool {
        !self.pool.breaker.is_open()
    }

    /// Model runs admitted and not finished: running, or waiting for a worker.
    pub fn in_flight(&self) -> usize {
        self.pool.capacity - self.pool.waiting.available_permits()
    }

    /// Runs `work` on the models in the pool, under the timeout.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Models) -> Result<T, ModelError> + Send + 'static,
    ) -> Result<T, InferenceError> {
        self.pool.run(work).await
    }

    /// The embeddings of one finalize's aligned crops (at most two), computed in one model run
    /// with the crops of other finalizes waiting at the same time. The batch is one run of the
    /// pool: it is refused, times out or fails as a whole.
    pub async fn embed(&self, crops: Vec<RgbImage>) -> GroupEmbeddings {
        if crops.len() > CROPS_PER_FINALIZE {
            return Err(InferenceError::Failed(format!(
                "{} crops in one call; at most {CROPS_PER_FINALIZE}",
                crops.len()
            )));
        }
        let batcher = self.embeddings.get_or_init(|| {
            let pool = self.pool.clone();
            let sizes = self.batch_sizes.clone();
            // As many batches at once as the pool runs models: a free worker takes what waits.
            Batcher::spawn_lingering(
                self.pool.workers,
                self.batch_groups,
                self.batch_wait,
                move |groups: Vec<Vec<RgbImage>>| {
                    let pool = pool.clone();
                    sizes.observe(groups.iter().map(Vec::len).sum::<usize>() as f64);
                    async move {
                        let count = groups.len();
                        match pool.run(move |models| models.embed_groups(&groups)).await {
                            Ok(embeddings) => embeddings.into_iter().map(Ok).collect(),
                            Err(error) => vec![Err(error); count],
                        }
                    }
                },
            )
        });
        batcher
            .call(crops)
            .await
            .unwrap_or_else(|_| Err(InferenceError::Failed("the batch was not run".to_owned())))
    }
}

impl Pool {
    async fn run<T: Send + 'static>(
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

/// Aligned crops of three fixture photos (img1, img2, img13), for the engines' tests.
#[cfg(test)]
pub(crate) fn fixture_crops() -> Vec<RgbImage> {
    let chain = FaceChain::bundled(FaceChain::CANVAS).unwrap();
    let faces = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures/faces");
    ["img1.jpg", "img2.jpg", "img13.jpg"]
        .iter()
        .map(|name| {
            let photo = image::open(format!("{faces}/{name}")).unwrap().to_rgb8();
            chain.locate(&photo).unwrap().crop.unwrap()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(queue: usize, workers: usize, timeout: Duration) -> InferenceConfig {
        InferenceConfig {
            workers,
            queue,
            batch_crops: 32,
            timeout,
            breaker_failures: 2,
            breaker_cooldown: Duration::from_millis(200),
            ..InferenceConfig::default()
        }
    }

    fn engine(config: &InferenceConfig) -> Arc<FaceEngine> {
        Arc::new(FaceEngine::load(config).unwrap())
    }

    /// A run that holds a worker until the sender is used (or dropped).
    fn occupy(
        engine: &Arc<FaceEngine>,
    ) -> (
        std::sync::mpsc::Sender<()>,
        tokio::task::JoinHandle<Result<(), InferenceError>>,
    ) {
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let engine = engine.clone();
        let run = tokio::spawn(async move {
            engine
                .run(move |_| {
                    let _ = wait.recv();
                    Ok(())
                })
                .await
        });
        (release, run)
    }

    #[tokio::test]
    async fn a_full_queue_refuses_and_failures_open_the_breaker() {
        let engine = engine(&config(1, 1, Duration::from_secs(5)));
        let (release, busy) = occupy(&engine);
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
        let (release, early) = occupy(&engine);
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

    /// The runs and crops a batch-size histogram has recorded.
    fn runs_and_crops(histogram: &Histogram) -> (u64, f64) {
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register("batch", "", histogram.clone());
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let value = |name: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|value| value.trim().parse::<f64>().ok())
                .unwrap_or_else(|| panic!("{name} in {text}"))
        };
        (value("batch_count ") as u64, value("batch_sum "))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_finalizes_share_a_model_run_and_each_gets_its_own_embeddings() {
        let engine = engine(&config(16, 1, Duration::from_secs(60)));
        let crops = fixture_crops();
        // Pairs, and one finalize with a selfie only.
        let mut pairs: Vec<Vec<RgbImage>> = (0..5)
            .map(|i| vec![crops[i % 3].clone(), crops[(i + 1) % 3].clone()])
            .collect();
        pairs.push(vec![crops[2].clone()]);
        let alone: Vec<Vec<Vec<f32>>> = pairs
            .iter()
            .map(|group| {
                let group: Vec<&RgbImage> = group.iter().collect();
                engine.pool.models.embed(&group).unwrap()
            })
            .collect();
        // The only worker is busy: the pairs queue up behind it.
        let (release, busy) = occupy(&engine);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let calls: Vec<_> = pairs
            .into_iter()
            .map(|pair| {
                let engine = engine.clone();
                tokio::spawn(async move { engine.embed(pair).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(100)).await;
        release.send(()).unwrap();
        assert_eq!(busy.await.unwrap(), Ok(()));
        for (call, alone) in calls.into_iter().zip(alone) {
            let together = call.await.unwrap().unwrap();
            assert_eq!(together.len(), alone.len());
            for (a, b) in together.iter().zip(&alone) {
                let agreement = idyntra_models::embedding::cosine(a, b);
                assert!(agreement >= 0.99999, "cosine {agreement}");
            }
        }
        let (runs, crops) = runs_and_crops(&engine.batch_sizes());
        assert_eq!(crops, 11.0);
        // The group the lane took first waits for the worker alone; the others gather behind it.
        assert!(runs <= 2, "{runs} model runs for 6 finalizes");
    }

    #[tokio::test]
    async fn a_failed_batch_fails_each_of_its_finalizes() {
        let dir = tempfile::tempdir().unwrap();
        let fault = dir.path().join("fail-models");
        std::fs::write(&fault, b"").unwrap();
        let engine = engine(&InferenceConfig {
            fault_marker: Some(fault),
            ..config(4, 1, Duration::from_secs(5))
        });
        let blank = RgbImage::new(112, 112);
        let answers = futures::future::join_all(
            (0..3).map(|_| engine.embed(vec![blank.clone(), blank.clone()])),
        )
        .await;
        for answer in answers {
            assert!(
                matches!(answer, Err(InferenceError::Failed(_))),
                "{answer:?}"
            );
        }
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
