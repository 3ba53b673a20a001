//! Running the models with tract: each model is parsed, given its concrete input shape, optimised
//! and made runnable once, then shared; a run only fills the input and reads the outputs.

use std::io::Cursor;
use std::sync::Arc;

use image::RgbImage;
use tract_onnx::prelude::*;

use crate::blazeface;
use crate::centerface::{self, OutputMaps};
use crate::channel_prelu;
use crate::dense_pools;
use crate::embedding;
use crate::face::Face;
use crate::face::Point;
use crate::pad;

/// Why a model could not be loaded or run.
#[derive(Debug, thiserror::Error)]
#[error("model {model}: {message}")]
pub struct ModelError {
    pub model: &'static str,
    pub message: String,
}

impl ModelError {
    pub fn new(model: &'static str, error: impl std::fmt::Display) -> Self {
        Self {
            model,
            message: format!("{error:#}"),
        }
    }
}

/// Parses `onnx`, rewrites its strided max pools ([`dense_pools`]) and its element-wise PReLUs
/// ([`channel_prelu`]) into tract's faster forms, fixes its input to `shape`, optimises it and
/// makes it runnable.
fn plan(
    onnx: &[u8],
    model: &'static str,
    shape: &[usize],
) -> Result<Arc<TypedRunnableModel>, ModelError> {
    let mut proto = tract_onnx::onnx()
        .proto_model_for_read(&mut Cursor::new(onnx))
        .map_err(|e| ModelError::new(model, e))?;
    // tract has SIMD for the stride-1 pool on these two only; in wasm the dense pool is a scalar
    // loop over four times the windows, so the graph is planned as it is.
    if cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) {
        dense_pools::rewrite(&mut proto);
    }
    channel_prelu::rewrite(&mut proto);
    plan_proto(&proto, model, shape)
}

fn plan_proto(
    proto: &tract_onnx::pb::ModelProto,
    model: &'static str,
    shape: &[usize],
) -> Result<Arc<TypedRunnableModel>, ModelError> {
    let error = |e: TractError| ModelError::new(model, e);
    channel_prelu::onnx()
        .model_for_proto_model(proto)
        .map_err(error)?
        .with_input_fact(0, f32::fact(shape).into())
        .map_err(error)?
        .into_optimized()
        .map_err(error)?
        .into_runnable()
        .map_err(error)
}

/// Runs `plan` on one input tensor of `shape` and returns every output, flattened — the same
/// numbers every engine must give for the same ONNX file (the engine-parity tests compare them).
fn run_raw(
    plan: &Arc<TypedRunnableModel>,
    model: &'static str,
    shape: &[usize],
    input: &[f32],
) -> Result<Vec<Vec<f32>>, ModelError> {
    let error = |e: TractError| ModelError::new(model, e);
    let input = Tensor::from_shape(shape, input).map_err(error)?;
    let outputs = plan.run(tvec!(input.into())).map_err(error)?;
    outputs
        .iter()
        .map(|output| {
            Ok(output
                .to_plain_array_view::<f32>()
                .map_err(error)?
                .iter()
                .copied()
                .collect())
        })
        .collect()
}

/// CenterFace on tract, for one square canvas size.
#[derive(Debug, Clone)]
pub struct CenterFaceDetector {
    plan: Arc<TypedRunnableModel>,
    canvas: usize,
}

impl CenterFaceDetector {
    const NAME: &'static str = "centerface";

    /// Loads the ONNX bytes for a `canvas`×`canvas` input (`canvas` a multiple of 32).
    pub fn load(onnx: &[u8], canvas: usize) -> Result<Self, ModelError> {
        if canvas == 0 || !canvas.is_multiple_of(32) {
            return Err(ModelError::new(
                Self::NAME,
                "the canvas must be a multiple of 32",
            ));
        }
        let plan = plan(onnx, Self::NAME, &[1, 3, canvas, canvas])?;
        Ok(Self { plan, canvas })
    }

    /// The four output maps (heat map, scale, offset, landmarks) for a `[1, 3, canvas, canvas]`
    /// input.
    pub fn raw_outputs(&self, input: &[f32]) -> Result<Vec<Vec<f32>>, ModelError> {
        let shape = [1, 3, self.canvas, self.canvas];
        let maps = run_raw(&self.plan, Self::NAME, &shape, input)?;
        if maps.len() != 4 {
            return Err(ModelError::new(Self::NAME, "expected four outputs"));
        }
        Ok(maps)
    }

    /// Faces in `photo` scoring above `threshold`, best first, in photo pixels.
    pub fn detect(&self, photo: &RgbImage, threshold: f32) -> Result<Vec<Face>, ModelError> {
        let (input, placement) = centerface::input_tensor(photo, self.canvas);
        let maps = self.raw_outputs(&input)?;
        Ok(centerface::decode_faces(
            OutputMaps {
                heatmap: &maps[0],
                scale: &maps[1],
                offset: &maps[2],
                landmarks: &maps[3],
            },
            placement,
            threshold,
        ))
    }
}

/// BlazeFace short range on tract: the fast detector for live frames.
#[derive(Debug, Clone)]
pub struct BlazeFaceDetector {
    plan: Arc<TypedRunnableModel>,
    anchors: Arc<Vec<Point>>,
}

impl BlazeFaceDetector {
    const NAME: &'static str = "blazeface_short_range";

    pub fn load(onnx: &[u8]) -> Result<Self, ModelError> {
        let side = blazeface::INPUT;
        Ok(Self {
            plan: plan(onnx, Self::NAME, &[1, 3, side, side])?,
            anchors: Arc::new(blazeface::anchors()),
        })
    }

    /// The regressors `[896 × 16]` and the logits `[896]` for a `[1, 3, 128, 128]` input.
    pub fn raw_outputs(&self, input: &[f32]) -> Result<[Vec<f32>; 2], ModelError> {
        let side = blazeface::INPUT;
        let outputs = run_raw(&self.plan, Self::NAME, &[1, 3, side, side], input)?;
        let mut regressors = None;
        let mut logits = None;
        // Told apart by size: `[1, 896, 16]` regressors, `[1, 896, 1]` logits.
        for values in outputs {
            match values.len() {
                n if n == blazeface::ANCHORS * blazeface::VALUES => regressors = Some(values),
                n if n == blazeface::ANCHORS => logits = Some(values),
                _ => {}
            }
        }
        match (regressors, logits) {
            (Some(regressors), Some(logits)) => Ok([regressors, logits]),
            _ => Err(ModelError::new(Self::NAME, "unexpected outputs")),
        }
    }

    /// Faces in `frame` scoring above `threshold`, best first, in frame pixels.
    pub fn detect(&self, frame: &RgbImage, threshold: f32) -> Result<Vec<Face>, ModelError> {
        let (input, scale) = blazeface::input_tensor(frame);
        let [regressors, logits] = self.raw_outputs(&input)?;
        Ok(blazeface::decode_faces(
            &regressors,
            &logits,
            &self.anchors,
            scale,
            threshold,
        ))
    }
}

/// MobileFaceNet on tract: one embedding per aligned 112×112 crop, one crop per run. With two
/// crops per run, tract 0.23 multiplied the per-channel slopes of the file's element-wise PReLUs
/// through its generic broadcasting, which made a run of two take 3.4× as long as two runs of one
/// (measured before [`channel_prelu`] replaced them).
#[derive(Debug, Clone)]
pub struct MobileFaceNetEmbedder {
    plan: Arc<TypedRunnableModel>,
}

impl MobileFaceNetEmbedder {
    const NAME: &'static str = "mobilefacenet";
    const SHAPE: [usize; 4] = [
        1,
        3,
        embedding::CROP_SIZE as usize,
        embedding::CROP_SIZE as usize,
    ];

    pub fn load(onnx: &[u8]) -> Result<Self, ModelError> {
        Ok(Self {
            plan: plan(onnx, Self::NAME, &Self::SHAPE)?,
        })
    }

    /// The `[N × 192]` embeddings for an `[N, 3, 112, 112]` input, a run per crop.
    pub fn raw_outputs(&self, input: &[f32]) -> Result<Vec<f32>, ModelError> {
        let crop_len: usize = Self::SHAPE.iter().product();
        if input.is_empty() || !input.len().is_multiple_of(crop_len) {
            return Err(ModelError::new(
                Self::NAME,
                "the input must hold whole 3×112×112 crops",
            ));
        }
        let mut embeddings = Vec::with_capacity(input.len() / crop_len * embedding::DIMENSION);
        for crop in input.chunks_exact(crop_len) {
            let outputs = run_raw(&self.plan, Self::NAME, &Self::SHAPE, crop)?;
            match outputs.first() {
                Some(embedding) if embedding.len() == embedding::DIMENSION => {
                    embeddings.extend_from_slice(embedding)
                }
                _ => return Err(ModelError::new(Self::NAME, "unexpected output size")),
            }
        }
        Ok(embeddings)
    }

    /// One embedding per aligned crop, in order.
    pub fn embed(&self, crops: &[&RgbImage]) -> Result<Vec<Vec<f32>>, ModelError> {
        if !embedding::crops_fit(crops) {
            return Err(ModelError::new(Self::NAME, "crops must be 112×112"));
        }
        if crops.is_empty() {
            return Ok(Vec::new());
        }
        let outputs = self.raw_outputs(&embedding::input_tensor(crops))?;
        embedding::split(&outputs, crops.len())
            .ok_or_else(|| ModelError::new(Self::NAME, "unexpected output size"))
    }
}

/// The passive presentation-attack model on tract: one face crop per run.
#[derive(Debug, Clone)]
pub struct AntiSpoofingModel {
    plan: Arc<TypedRunnableModel>,
}

impl AntiSpoofingModel {
    const NAME: &'static str = "antispoofing";
    const SHAPE: [usize; 4] = [1, pad::INPUT, pad::INPUT, 3];

    pub fn load(onnx: &[u8]) -> Result<Self, ModelError> {
        Ok(Self {
            plan: plan(onnx, Self::NAME, &Self::SHAPE)?,
        })
    }

    /// The leaf classifications and the mask of the reached leaf, `[8]` each, for a
    /// `[1, 256, 256, 3]` input.
    pub fn raw_outputs(&self, input: &[f32]) -> Result<[Vec<f32>; 2], ModelError> {
        let outputs = run_raw(&self.plan, Self::NAME, &Self::SHAPE, input)?;
        match <[Vec<f32>; 2]>::try_from(outputs) {
            Ok([classes, mask]) if classes.len() == pad::LEAVES && mask.len() == pad::LEAVES => {
                Ok([classes, mask])
            }
            _ => Err(ModelError::new(Self::NAME, "unexpected outputs")),
        }
    }

    /// The score of `face` in `photo` (below [`pad::DTN_THRESHOLD`] reads as live); `None` when
    /// the face has no area inside the photo.
    pub fn score(&self, photo: &RgbImage, face: &Face) -> Result<Option<f32>, ModelError> {
        let Some(input) = pad::input_tensor(photo, face) else {
            return Ok(None);
        };
        let [classes, mask] = self.raw_outputs(&input)?;
        Ok(Some(pad::leaf_score(&classes, &mask)))
    }
}

#[cfg(test)]
mod tests {
    use image::Rgb;

    use super::*;
    use crate::decode::{DecodeLimits, decode};

    fn fixture(name: &str) -> RgbImage {
        let path = format!(
            "{}/../../shared/fixtures/faces/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        let bytes = std::fs::read(&path).expect("the shared face fixtures are beside the checkout");
        decode(&bytes, &DecodeLimits::default()).unwrap().image
    }

    fn detector() -> CenterFaceDetector {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/onnx/centerface.onnx");
        CenterFaceDetector::load(&std::fs::read(path).unwrap(), 320).unwrap()
    }

    #[test]
    fn finds_the_one_face_with_plausible_landmarks() {
        let detector = detector();
        for name in [
            "img1.jpg",
            "img10.jpg",
            "img13.jpg",
            "img20.jpg",
            "img38.jpg",
        ] {
            let photo = fixture(name);
            let faces = detector.detect(&photo, 0.5).unwrap();
            assert_eq!(faces.len(), 1, "{name}: {faces:?}");
            let face = &faces[0];
            let [left_eye, right_eye, nose, mouth_left, mouth_right] = face.landmarks;
            assert!(face.bbox.width() > 50.0, "{name}: {face:?}");
            for point in face.landmarks {
                assert!(
                    face.bbox.contains(point),
                    "{name}: {point:?} outside {:?}",
                    face.bbox
                );
            }
            // An upright face: eyes above the nose above the mouth, left left of right.
            assert!(
                left_eye.x < right_eye.x && mouth_left.x < mouth_right.x,
                "{name}"
            );
            assert!(left_eye.y.max(right_eye.y) < nose.y, "{name}");
            assert!(nose.y < mouth_left.y.min(mouth_right.y), "{name}");
        }
    }

    #[test]
    fn blazeface_with_dense_pools_gives_the_files_numbers() {
        let onnx = crate::bundled::BLAZEFACE_SHORT_RANGE.onnx;
        let original = tract_onnx::onnx()
            .proto_model_for_read(&mut Cursor::new(onnx))
            .unwrap();
        let mut rewritten = original.clone();
        assert_eq!(dense_pools::rewrite(&mut rewritten), 3);
        let shape = [1, 3, blazeface::INPUT, blazeface::INPUT];
        let as_shipped = plan_proto(&original, "blazeface", &shape).unwrap();
        let with_dense_pools = plan_proto(&rewritten, "blazeface", &shape).unwrap();
        for name in ["img1.jpg", "img20.jpg"] {
            let (input, _) = blazeface::input_tensor(&fixture(name));
            let expected = run_raw(&as_shipped, "blazeface", &shape, &input).unwrap();
            let got = run_raw(&with_dense_pools, "blazeface", &shape, &input).unwrap();
            assert_eq!(got, expected, "{name}");
        }
    }

    #[test]
    fn mobilefacenet_with_one_prelu_operator_gives_the_files_numbers() {
        let original = tract_onnx::onnx()
            .proto_model_for_read(&mut Cursor::new(crate::bundled::MOBILEFACENET.onnx))
            .unwrap();
        let mut rewritten = original.clone();
        assert_eq!(channel_prelu::rewrite(&mut rewritten), 33);
        let shape = [1, 3, 112, 112];
        let as_shipped = plan_proto(&original, "mobilefacenet", &shape).unwrap();
        let with_prelus = plan_proto(&rewritten, "mobilefacenet", &shape).unwrap();
        let detector = detector();
        for name in ["img1.jpg", "img38.jpg"] {
            let crop = aligned(&detector, name);
            let input = embedding::input_tensor(&[&crop]);
            let expected = run_raw(&as_shipped, "mobilefacenet", &shape, &input).unwrap();
            let got = run_raw(&with_prelus, "mobilefacenet", &shape, &input).unwrap();
            assert_eq!(got, expected, "{name}");
        }
    }

    #[test]
    fn the_embedder_refuses_a_partial_crop_and_embeds_crops_alone_as_together() {
        let embedder = MobileFaceNetEmbedder::load(crate::bundled::MOBILEFACENET.onnx).unwrap();
        let crop_len = 3 * 112 * 112;
        for len in [0, crop_len - 1, crop_len + 5] {
            assert!(embedder.raw_outputs(&vec![0.1; len]).is_err(), "{len}");
        }
        assert!(embedder.embed(&[]).unwrap().is_empty());
        let small = RgbImage::new(100, 112);
        assert!(embedder.embed(&[&small]).is_err());
        let detector = detector();
        let (a, b) = (
            aligned(&detector, "img1.jpg"),
            aligned(&detector, "img13.jpg"),
        );
        let together = embedder.embed(&[&a, &b]).unwrap();
        assert_eq!(together.len(), 2);
        assert_eq!(together[0].len(), embedding::DIMENSION);
        assert_eq!(together[0], embedder.embed(&[&a]).unwrap()[0]);
        assert_eq!(together[1], embedder.embed(&[&b]).unwrap()[0]);
    }

    #[test]
    fn an_empty_picture_has_no_face() {
        let blank = RgbImage::from_pixel(400, 300, Rgb([128, 128, 128]));
        assert!(detector().detect(&blank, 0.5).unwrap().is_empty());
    }

    /// Detects the face of a fixture photo and aligns it to the ArcFace template.
    fn aligned(detector: &CenterFaceDetector, name: &str) -> RgbImage {
        let photo = fixture(name);
        let faces = detector.detect(&photo, 0.5).unwrap();
        crate::align::align(&photo, &faces[0].landmarks, &crate::align::ARCFACE_112, 112).unwrap()
    }

    #[test]
    fn the_same_person_scores_above_different_people() {
        let detector = detector();
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/onnx/mobilefacenet.onnx");
        let embedder = MobileFaceNetEmbedder::load(&std::fs::read(path).unwrap()).unwrap();
        let score = |a: &str, b: &str| {
            let pair = embedder
                .embed(&[&aligned(&detector, a), &aligned(&detector, b)])
                .unwrap();
            embedding::cosine(&pair[0], &pair[1])
        };
        // person01: img1, img10; person03: img13, img14; person07: img38, img39.
        let same = [
            score("img1.jpg", "img10.jpg"),
            score("img13.jpg", "img14.jpg"),
            score("img38.jpg", "img39.jpg"),
        ];
        let different = [
            score("img1.jpg", "img13.jpg"),
            score("img10.jpg", "img38.jpg"),
            score("img14.jpg", "img39.jpg"),
        ];
        let lowest_same = same.iter().copied().fold(f32::INFINITY, f32::min);
        let highest_different = different.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        assert!(
            lowest_same > highest_different,
            "same {same:?}, different {different:?}"
        );
        // Two crops of the same photo are one face.
        assert!(score("img1.jpg", "img1.jpg") > 0.99);
    }

    #[test]
    fn the_anti_spoofing_model_reaches_one_leaf_and_scores_its_classification() {
        let model = AntiSpoofingModel::load(crate::bundled::ANTISPOOFING.onnx).unwrap();
        let photo = fixture("img1.jpg");
        let face = detector().detect(&photo, 0.5).unwrap().remove(0);
        let input = pad::input_tensor(&photo, &face).unwrap();
        let [classes, mask] = model.raw_outputs(&input).unwrap();
        assert_eq!(mask.iter().filter(|&&m| m == 1.0).count(), 1, "{mask:?}");
        assert_eq!(mask.iter().filter(|&&m| m == 0.0).count(), pad::LEAVES - 1);
        let score = model.score(&photo, &face).unwrap().unwrap();
        assert_eq!(score, pad::leaf_score(&classes, &mask));
        assert!(score.is_finite() && score >= 0.0, "{score}");
        // A face entirely outside the photo has nothing to score.
        let mut outside = face.clone();
        outside.bbox.x1 += 10_000.0;
        outside.bbox.x2 += 10_000.0;
        assert_eq!(model.score(&photo, &outside).unwrap(), None);
    }

    #[test]
    fn the_canvas_must_be_a_multiple_of_32() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/onnx/centerface.onnx");
        assert!(CenterFaceDetector::load(&std::fs::read(path).unwrap(), 100).is_err());
    }
}
