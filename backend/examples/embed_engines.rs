//! Latency of one face-embedding call (a batch of two aligned crops) on every engine this build
//! has: `cargo run --release -p idyntra-backend [--features burn|gpu] --example embed_engines
//! [RUNS] [LARGEST_BATCH]`. The same input on each; prints p50 and mean milliseconds, and the
//! embeddings' agreement with tract's. Then, for burn's engines, the throughput of dynamic batches
//! of 2 crops up to LARGEST_BATCH (default 64, doubling; 64 at most on the CPU), and the latency
//! of the face detector (CenterFace on the 320×320 canvas) on each engine.

use std::time::Instant;

use idyntra_models::{FaceChain, embedding};

/// An engine's name and one embedding call.
type Engine<'a> = (&'static str, Box<dyn Fn() -> [Vec<f32>; 2] + 'a>);

fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(50);
    // A GPU is measured past the service's default batch of 128 crops, to show where it saturates.
    #[cfg_attr(not(feature = "burn"), allow(unused_variables))]
    let largest_batch: usize = std::env::args()
        .nth(2)
        .and_then(|n| n.parse().ok())
        .unwrap_or(64);
    let chain = FaceChain::bundled(FaceChain::CANVAS).expect("bundled models");
    let faces = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures/faces");
    let crop = |name: &str| {
        let photo = image::open(format!("{faces}/{name}"))
            .expect("fixture photo")
            .to_rgb8();
        chain
            .locate(&photo)
            .expect("detection")
            .crop
            .expect("a face")
    };
    let crops = (crop("img1.jpg"), crop("img2.jpg"));
    let (a, b) = (&crops.0, &crops.1);
    let reference = chain.embed(&[a, b]).expect("tract");

    #[cfg_attr(not(feature = "burn"), allow(unused_mut))]
    let mut engines: Vec<Engine> = vec![(
        "tract (CPU)",
        Box::new(|| {
            let mut e = chain.embed(&[a, b]).expect("tract").into_iter();
            [e.next().unwrap_or_default(), e.next().unwrap_or_default()]
        }),
    )];
    #[cfg(feature = "burn")]
    {
        use idyntra_backend::inference::burn_engine::{BurnDevice, BurnEmbedder};
        let flex = BurnEmbedder::load(BurnDevice::Cpu);
        engines.push((
            "burn flex (CPU)",
            Box::new(move || pair(flex.embed(&[a, b]).expect("burn flex"))),
        ));
        #[cfg(feature = "gpu")]
        {
            let wgpu = BurnEmbedder::load(BurnDevice::Wgpu);
            engines.push((
                "burn wgpu",
                Box::new(move || pair(wgpu.embed(&[a, b]).expect("burn wgpu"))),
            ));
        }
    }
    #[cfg(feature = "burn")]
    let batched = {
        use idyntra_backend::inference::burn_engine::{BurnDevice, BurnEmbedder};
        #[cfg_attr(not(feature = "gpu"), allow(unused_mut))]
        // The CPU gains nothing from batches past 64 crops, and such runs take seconds each.
        let mut batched = vec![(
            "burn flex (CPU)",
            BurnEmbedder::load(BurnDevice::Cpu),
            largest_batch.min(64),
        )];
        #[cfg(feature = "gpu")]
        batched.push((
            "burn wgpu",
            BurnEmbedder::load(BurnDevice::Wgpu),
            largest_batch,
        ));
        batched
    };
    println!("| engine | runs | p50 ms | mean ms | cosine to tract |");
    println!("|---|---|---|---|---|");
    for (name, run) in &engines {
        // The first calls compile kernels or warm caches; they are not counted.
        for _ in 0..3 {
            run();
        }
        let mut times = Vec::with_capacity(runs);
        let mut last = None;
        for _ in 0..runs {
            let at = Instant::now();
            last = Some(run());
            times.push(at.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        let embeddings = last.expect("at least one run");
        let agreement = embedding::cosine(&embeddings[0], &reference[0])
            .min(embedding::cosine(&embeddings[1], &reference[1]));
        println!(
            "| {name} | {runs} | {:.2} | {:.2} | {agreement:.6} |",
            times[runs / 2],
            times.iter().sum::<f64>() / runs as f64
        );
    }
    #[cfg(feature = "burn")]
    {
        println!();
        println!("| engine | crops per call | runs | p50 ms per call | crops per second |");
        println!("|---|---|---|---|---|");
        for (name, engine, largest) in &batched {
            let sizes = std::iter::successors(Some(2usize), |size| Some(size * 2));
            for size in sizes.take_while(|size| size <= largest) {
                let batch: Vec<&image::RgbImage> = [a, b].into_iter().cycle().take(size).collect();
                for _ in 0..3 {
                    engine.embed(&batch).expect("burn");
                }
                let mut times: Vec<f64> = (0..runs)
                    .map(|_| {
                        let at = Instant::now();
                        engine.embed(&batch).expect("burn");
                        at.elapsed().as_secs_f64() * 1000.0
                    })
                    .collect();
                times.sort_by(f64::total_cmp);
                let mean = times.iter().sum::<f64>() / runs as f64;
                println!(
                    "| {name} | {size} | {runs} | {:.2} | {:.0} |",
                    times[runs / 2],
                    size as f64 * 1000.0 / mean
                );
            }
        }
        use idyntra_backend::inference::burn_detector::BurnDetector;
        use idyntra_backend::inference::burn_engine::BurnDevice;
        use idyntra_models::{CenterFaceDetector, bundled, centerface};
        let photo = image::open(format!("{faces}/img1.jpg"))
            .expect("fixture photo")
            .to_rgb8();
        let canvas = FaceChain::CANVAS;
        let (input, _) = centerface::input_tensor(&photo, canvas);
        println!();
        println!("| CenterFace {canvas}×{canvas}, one photo | runs | p50 ms |");
        println!("|---|---|---|");
        let tract = CenterFaceDetector::load(bundled::CENTERFACE.onnx, canvas).expect("tract");
        let ms = median_ms(runs, || {
            tract.raw_outputs(&input).expect("tract");
        });
        println!("| tract (CPU) | {runs} | {ms:.2} |");
        #[cfg_attr(not(feature = "gpu"), allow(unused_mut))]
        let mut devices = vec![("burn flex (CPU)", BurnDevice::Cpu)];
        #[cfg(feature = "gpu")]
        devices.push(("burn wgpu", BurnDevice::Wgpu));
        for (name, device) in devices {
            let burn = BurnDetector::load(device, canvas).expect("burn");
            let ms = median_ms(runs, || {
                burn.raw_outputs(input.clone()).expect("burn");
            });
            println!("| {name} | {runs} | {ms:.2} |");
        }
    }
}

/// Milliseconds of `run`, median of `runs` after three warm-up runs.
#[cfg(feature = "burn")]
fn median_ms(runs: usize, mut run: impl FnMut()) -> f64 {
    for _ in 0..3 {
        run();
    }
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let at = Instant::now();
            run();
            at.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[runs / 2]
}

/// The two embeddings of a pair's run.
#[cfg(feature = "burn")]
fn pair(embeddings: Vec<Vec<f32>>) -> [Vec<f32>; 2] {
    let mut embeddings = embeddings.into_iter();
    [
        embeddings.next().unwrap_or_default(),
        embeddings.next().unwrap_or_default(),
    ]
}
