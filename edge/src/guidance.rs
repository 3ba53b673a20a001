//! Live feedback for the capture screen, computed in the browser on camera frames by the same code
//! the edge runs on the upload: the quality of a frame, and where the person is in the liveness
//! challenge. Nothing here signs or decides; the edge re-checks every uploaded frame.

use idyntra_models::liveness::{self, ActiveThresholds, challenge_for};
use idyntra_models::{FrameQuality, ModelError};
use idyntra_types::{ChallengeStep, FrameTiming, LivenessChallenge, QualityReport, TurnDirection};
use image::RgbImage;
use serde::Serialize;

/// Largest camera frame side accepted for live feedback.
pub const MAX_FRAME_SIDE: u32 = 4096;

/// Why a frame could not be analysed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("a frame is 1 to {MAX_FRAME_SIDE} pixels a side")]
    Size,
    #[error("an RGBA frame of {width}×{height} has {expected} bytes, not {actual}")]
    Length {
        width: u32,
        height: u32,
        expected: usize,
        actual: usize,
    },
    #[error("{0}")]
    Model(String),
}

impl From<ModelError> for FrameError {
    fn from(error: ModelError) -> Self {
        Self::Model(error.to_string())
    }
}

/// An RGB image from canvas `ImageData` bytes (RGBA, row by row).
pub fn rgb_from_rgba(rgba: &[u8], width: u32, height: u32) -> Result<RgbImage, FrameError> {
    if width == 0 || height == 0 || width > MAX_FRAME_SIDE || height > MAX_FRAME_SIDE {
        return Err(FrameError::Size);
    }
    let expected = width as usize * height as usize * 4;
    if rgba.len() != expected {
        return Err(FrameError::Length {
            width,
            height,
            expected,
            actual: rgba.len(),
        });
    }
    let rgb: Vec<u8> = rgba
        .chunks_exact(4)
        .flat_map(|pixel| [pixel[0], pixel[1], pixel[2]])
        .collect();
    RgbImage::from_raw(width, height, rgb).ok_or(FrameError::Size)
}

/// The quality report of a selfie frame, as the edge would judge the selfie.
pub fn analyze_frame(
    models: &FrameQuality,
    rgba: &[u8],
    width: u32,
    height: u32,
) -> Result<QualityReport, FrameError> {
    Ok(models.assess(&rgb_from_rgba(rgba, width, height)?)?)
}

/// What the capture screen shows after a frame, and the timing to upload it with.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrackedFrame {
    /// Send this with the frame in the `timeline` part.
    pub timing: FrameTiming,
    /// The step to show now (after this frame), or absent when the challenge is over.
    pub next: Option<ChallengeStep>,
    pub faces: usize,
    /// The head's yaw, on neutral and turn steps; absent on flash steps (they are judged on the
    /// face's colour, so the frame's mirror image is not searched) and when there is no face.
    pub yaw_deg: Option<f32>,
    /// 0…1: how far the asked turn has gone (1 when the step needs no turn).
    pub turn_progress: f32,
    /// The last step is over: upload the frames.
    pub done: bool,
}

/// Follows a person through the challenge of a session nonce, frame by frame.
#[derive(Debug, Clone)]
pub struct ChallengeTracker {
    challenge: LivenessChallenge,
    limits: ActiveThresholds,
    started_ms: Option<f64>,
    step: usize,
    step_started_ms: f64,
    frames_in_step: usize,
    neutral_yaws: Vec<f32>,
    last_at_ms: Option<u32>,
}

impl ChallengeTracker {
    pub fn new(nonce: &str) -> Self {
        Self {
            challenge: challenge_for(nonce.as_bytes()),
            limits: ActiveThresholds::default(),
            started_ms: None,
            step: 0,
            step_started_ms: 0.0,
            frames_in_step: 0,
            neutral_yaws: Vec::new(),
            last_at_ms: None,
        }
    }

    pub fn challenge(&self) -> &LivenessChallenge {
        &self.challenge
    }

    fn baseline(&self) -> f32 {
        let mut yaws = self.neutral_yaws.clone();
        yaws.sort_by(f32::total_cmp);
        yaws.get(yaws.len() / 2).copied().unwrap_or(0.0)
    }

    /// Observes the frame taken at `now_ms` (the page's clock, e.g. `performance.now()`).
    pub fn track(
        &mut self,
        models: &FrameQuality,
        rgba: &[u8],
        width: u32,
        height: u32,
        now_ms: f64,
    ) -> Result<TrackedFrame, FrameError> {
        let frame = rgb_from_rgba(rgba, width, height)?;
        let started = *self.started_ms.get_or_insert(now_ms);
        if self.frames_in_step == 0 {
            self.step_started_ms = now_ms;
        }
        let step = self.step.min(self.challenge.steps.len().saturating_sub(1));
        // The verifier wants strictly increasing times: a repeated or backward clock reading (or
        // NaN) becomes one millisecond after the previous frame.
        let elapsed_ms = (now_ms - started).clamp(0.0, f64::from(u32::MAX - 1)) as u32;
        let at_ms = match self.last_at_ms {
            Some(last) => elapsed_ms.max(last.saturating_add(1)),
            None => elapsed_ms,
        };
        self.last_at_ms = Some(at_ms);
        let timing = FrameTiming { at_ms, step };
        let reads_yaw = liveness::step_reads_yaw(&self.challenge, step);
        let faces = models.faces(&frame)?;
        let observation = models.observe_faces(&frame, &faces, timing, reads_yaw)?;
        self.frames_in_step += 1;
        let elapsed = now_ms - self.step_started_ms;
        // A step needs its frames after the first, which may still show the previous screen.
        let enough_frames = self.frames_in_step > self.limits.min_frames_per_step;
        let mut turn_progress = 1.0;
        let finished = match self.challenge.steps.get(step) {
            Some(ChallengeStep::Neutral { ms, .. }) => {
                self.neutral_yaws.extend(observation.yaw_deg);
                enough_frames && elapsed >= f64::from(*ms)
            }
            Some(ChallengeStep::Flash { ms, .. }) => enough_frames && elapsed >= f64::from(*ms),
            Some(ChallengeStep::Turn { direction, max_ms }) => {
                let sign = match direction {
                    TurnDirection::Left => 1.0,
                    TurnDirection::Right => -1.0,
                };
                let turned = observation
                    .yaw_deg
                    .map_or(0.0, |yaw| (yaw - self.baseline()) * sign);
                turn_progress = (turned / self.limits.min_turn_deg).clamp(0.0, 1.0);
                enough_frames && (turn_progress >= 1.0 || elapsed >= f64::from(*max_ms))
            }
            None => true,
        };
        if finished && self.step < self.challenge.steps.len() {
            self.step += 1;
            self.frames_in_step = 0;
        }
        let done = self.step >= self.challenge.steps.len();
        Ok(TrackedFrame {
            timing,
            next: self.challenge.steps.get(self.step).cloned(),
            faces: observation.faces,
            yaw_deg: observation.yaw_deg,
            turn_progress,
            done,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rgba(image: &RgbImage) -> Vec<u8> {
        image
            .pixels()
            .flat_map(|p| [p.0[0], p.0[1], p.0[2], 255])
            .collect()
    }

    #[test]
    fn frames_of_the_wrong_size_are_refused() {
        assert_eq!(rgb_from_rgba(&[], 0, 10), Err(FrameError::Size));
        assert_eq!(rgb_from_rgba(&[0; 16], 5000, 1), Err(FrameError::Size));
        assert!(matches!(
            rgb_from_rgba(&[0; 15], 2, 2),
            Err(FrameError::Length { expected: 16, .. })
        ));
        let rgb = rgb_from_rgba(&[1, 2, 3, 255, 4, 5, 6, 0], 2, 1).unwrap();
        assert_eq!(rgb.as_raw(), &vec![1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn a_still_face_is_led_through_the_timed_steps_and_waits_at_a_turn() {
        let models = FrameQuality::bundled().unwrap();
        let mut tracker = ChallengeTracker::new("nonce");
        let steps = tracker.challenge().steps.clone();
        // A grey frame has no face; timing alone moves the neutral and flash steps on.
        let grey = RgbImage::from_pixel(64, 48, image::Rgb([120, 120, 120]));
        let frame = rgba(&grey);
        let mut now = 1000.0;
        let mut seen = Vec::new();
        for _ in 0..60 {
            let tracked = tracker.track(&models, &frame, 64, 48, now).unwrap();
            seen.push(tracked.timing.step);
            now += 120.0;
            if matches!(tracked.next, Some(ChallengeStep::Turn { .. })) {
                break;
            }
        }
        let first_turn = steps
            .iter()
            .position(|s| matches!(s, ChallengeStep::Turn { .. }))
            .unwrap();
        assert_eq!(*seen.last().unwrap(), first_turn - 1);
        assert!(seen.windows(2).all(|w| w[0] <= w[1]));
        // No face turns: the step ends only when its time is up.
        let tracked = tracker.track(&models, &frame, 64, 48, now).unwrap();
        assert_eq!(tracked.turn_progress, 0.0);
        assert_eq!(tracked.timing.step, first_turn);
        let late = tracker
            .track(&models, &frame, 64, 48, now + 5000.0)
            .unwrap();
        // Time is up, but the step still needs its frames.
        assert_eq!(late.next, steps.get(first_turn).cloned());
        let last = tracker
            .track(&models, &frame, 64, 48, now + 5000.0)
            .unwrap();
        assert_eq!(last.timing.step, first_turn);
        // The same clock reading twice still gives increasing times.
        assert_eq!(last.timing.at_ms, late.timing.at_ms + 1);
        assert_eq!(last.next, steps.get(first_turn + 1).cloned());
    }
}
