//! Detected faces and non-maximum suppression, shared by every detector.

/// A point in image pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub x: f32,
    pub y: f32,
}

/// An axis-aligned box in image pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BoundingBox {
    pub x1: f32,
    pub y1: f32,
    pub x2: f32,
    pub y2: f32,
}

impl BoundingBox {
    pub fn width(&self) -> f32 {
        (self.x2 - self.x1).max(0.0)
    }

    pub fn height(&self) -> f32 {
        (self.y2 - self.y1).max(0.0)
    }

    pub fn area(&self) -> f32 {
        self.width() * self.height()
    }

    pub fn contains(&self, point: Point) -> bool {
        (self.x1..=self.x2).contains(&point.x) && (self.y1..=self.y2).contains(&point.y)
    }

    /// Intersection over union.
    pub fn iou(&self, other: &BoundingBox) -> f32 {
        let overlap = BoundingBox {
            x1: self.x1.max(other.x1),
            y1: self.y1.max(other.y1),
            x2: self.x2.min(other.x2),
            y2: self.y2.min(other.y2),
        }
        .area();
        let union = self.area() + other.area() - overlap;
        if union <= 0.0 { 0.0 } else { overlap / union }
    }
}

/// A detected face with the five landmarks alignment needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Face {
    pub bbox: BoundingBox,
    /// Detector confidence, 0–1.
    pub score: f32,
    /// Left eye, right eye, nose tip, left and right mouth corners (as seen in the image).
    pub landmarks: [Point; 5],
}

/// Keeps the best-scoring face of every group overlapping by more than `max_iou`, best first.
pub fn non_maximum_suppression(mut faces: Vec<Face>, max_iou: f32) -> Vec<Face> {
    faces.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<Face> = Vec::new();
    for face in faces {
        if kept.iter().all(|k| k.bbox.iou(&face.bbox) <= max_iou) {
            kept.push(face);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn face(x1: f32, y1: f32, side: f32, score: f32) -> Face {
        let centre = Point {
            x: x1 + side / 2.0,
            y: y1 + side / 2.0,
        };
        Face {
            bbox: BoundingBox {
                x1,
                y1,
                x2: x1 + side,
                y2: y1 + side,
            },
            score,
            landmarks: [centre; 5],
        }
    }

    #[test]
    fn iou_of_known_boxes() {
        let a = face(0.0, 0.0, 10.0, 1.0).bbox;
        assert_eq!(a.iou(&a), 1.0);
        assert_eq!(a.iou(&face(20.0, 20.0, 10.0, 1.0).bbox), 0.0);
        let half = face(5.0, 0.0, 10.0, 1.0).bbox; // overlap 50, union 150
        assert!((a.iou(&half) - 1.0 / 3.0).abs() < 1e-6);
    }

    #[test]
    fn suppression_keeps_the_best_of_each_group() {
        let kept = non_maximum_suppression(
            vec![
                face(0.0, 0.0, 10.0, 0.7),
                face(1.0, 1.0, 10.0, 0.9),
                face(50.0, 50.0, 10.0, 0.6),
            ],
            0.3,
        );
        let scores: Vec<f32> = kept.iter().map(|f| f.score).collect();
        assert_eq!(scores, vec![0.9, 0.6]);
    }
}
