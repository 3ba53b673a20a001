//! Face embeddings (MobileFaceNet, `models/onnx/mobilefacenet.onnx`): the input tensor of aligned
//! crops and the cosine similarity of two embeddings.

use image::RgbImage;

/// Side of an aligned crop.
pub const CROP_SIZE: u32 = 112;
/// Length of an embedding.
pub const DIMENSION: usize = 192;

/// The `[N, 3, 112, 112]` input of `N` crops: RGB scaled as `(x − 127.5) / 128`, channels first.
pub fn input_tensor(crops: &[&RgbImage]) -> Vec<f32> {
    let side = CROP_SIZE as usize;
    let plane = side * side;
    let mut tensor = vec![0.0f32; crops.len() * 3 * plane];
    for (item, crop) in crops.iter().enumerate() {
        for (x, y, pixel) in crop.enumerate_pixels() {
            let at = y as usize * side + x as usize;
            for channel in 0..3 {
                tensor[(item * 3 + channel) * plane + at] =
                    (f32::from(pixel[channel]) - 127.5) / 128.0;
            }
        }
    }
    tensor
}

/// Whether every crop has the model's input size.
pub fn crops_fit(crops: &[&RgbImage]) -> bool {
    crops
        .iter()
        .all(|crop| crop.dimensions() == (CROP_SIZE, CROP_SIZE))
}

/// The `count` embeddings of a `[count × 192]` output, in order; `None` for any other length.
pub fn split(values: &[f32], count: usize) -> Option<Vec<Vec<f32>>> {
    (values.len() == count * DIMENSION).then(|| {
        values
            .chunks_exact(DIMENSION)
            .map(<[f32]>::to_vec)
            .collect()
    })
}

/// Cosine similarity, −1…1 (0 when either vector is zero).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    let denominator = norm(a) * norm(b);
    if denominator == 0.0 {
        0.0
    } else {
        dot / denominator
    }
}

#[cfg(test)]
mod tests {
    use image::Rgb;

    use super::*;

    #[test]
    fn cosine_of_known_vectors() {
        assert!((cosine(&[1.0, 0.0], &[1.0, 0.0]) - 1.0).abs() < 1e-6);
        assert!(cosine(&[1.0, 0.0], &[0.0, 2.0]).abs() < 1e-6);
        assert!((cosine(&[1.0, 1.0], &[-2.0, -2.0]) + 1.0).abs() < 1e-6);
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 0.0]), 0.0);
    }

    #[test]
    fn crops_are_normalised_channels_first() {
        let white = RgbImage::from_pixel(CROP_SIZE, CROP_SIZE, Rgb([255, 255, 255]));
        let black = RgbImage::new(CROP_SIZE, CROP_SIZE);
        let tensor = input_tensor(&[&white, &black]);
        let plane = (CROP_SIZE * CROP_SIZE) as usize;
        assert_eq!(tensor.len(), 2 * 3 * plane);
        assert_eq!(tensor[0], 127.5 / 128.0);
        assert_eq!(tensor[3 * plane], -127.5 / 128.0);
    }

    #[test]
    fn outputs_split_into_one_embedding_per_crop() {
        let values: Vec<f32> = (0..3 * DIMENSION).map(|v| v as f32).collect();
        let embeddings = split(&values, 3).unwrap();
        assert_eq!(embeddings.len(), 3);
        assert_eq!(embeddings[2][0], (2 * DIMENSION) as f32);
        assert!(split(&values, 2).is_none());
    }
}
