//! The browser host: wasm-bindgen exports the browser SDK calls for live feedback on camera
//! frames. A browser holds no secret, so nothing here signs; the edge re-checks every upload.
//!
//! ```js
//! import init, { analyzeFrame, Challenge } from "./idyntra_edge.js";
//! await init();
//! const quality = analyzeFrame(imageData.data, imageData.width, imageData.height);
//! const challenge = new Challenge(nonce);           // the nonce from the client token
//! const tracked = challenge.track(imageData.data, w, h, performance.now());
//! // tracked.timing goes into the `timeline` part; tracked.next is the step to show.
//! ```

use std::cell::OnceCell;

use idyntra_models::FrameQuality;
use serde::Serialize;
use wasm_bindgen::prelude::*;

use crate::guidance::{self, ChallengeTracker};

thread_local! {
    /// BlazeFace, loaded on first use and kept for the page's life.
    static MODELS: OnceCell<Result<FrameQuality, String>> = const { OnceCell::new() };
}

fn with_models<T>(
    use_models: impl FnOnce(&FrameQuality) -> Result<T, JsError>,
) -> Result<T, JsError> {
    MODELS.with(|cell| {
        match cell.get_or_init(|| FrameQuality::bundled().map_err(|e| e.to_string())) {
            Ok(models) => use_models(models),
            Err(message) => Err(JsError::new(message)),
        }
    })
}

fn to_js<T: Serialize>(value: &T) -> Result<JsValue, JsError> {
    let text = serde_json::to_string(value).map_err(|e| JsError::new(&e.to_string()))?;
    js_sys::JSON::parse(&text).map_err(|_| JsError::new("the result is not valid JSON"))
}

/// The quality report of a selfie frame (`ImageData` bytes, RGBA): score, components,
/// measurements and failure codes, as the edge would judge it.
#[wasm_bindgen(js_name = analyzeFrame)]
pub fn analyze_frame(rgba: &[u8], width: u32, height: u32) -> Result<JsValue, JsError> {
    with_models(|models| {
        let report = guidance::analyze_frame(models, rgba, width, height)
            .map_err(|e| JsError::new(&e.to_string()))?;
        to_js(&report)
    })
}

/// The liveness challenge of a session, followed frame by frame.
#[wasm_bindgen]
#[derive(Debug)]
pub struct Challenge {
    tracker: ChallengeTracker,
}

#[wasm_bindgen]
impl Challenge {
    /// The challenge of the session whose client token carries `nonce`.
    #[wasm_bindgen(constructor)]
    pub fn new(nonce: &str) -> Challenge {
        Challenge {
            tracker: ChallengeTracker::new(nonce),
        }
    }

    /// The steps: `[{"neutral": {colour, ms}}, {"flash": …}, {"turn": {direction, max_ms}}, …]`.
    pub fn steps(&self) -> Result<JsValue, JsError> {
        to_js(&self.tracker.challenge().steps)
    }

    /// Observes a frame taken at `now_ms`: `{timing, next, faces, yaw_deg, turn_progress, done}`.
    pub fn track(
        &mut self,
        rgba: &[u8],
        width: u32,
        height: u32,
        now_ms: f64,
    ) -> Result<JsValue, JsError> {
        with_models(|models| {
            let tracked = self
                .tracker
                .track(models, rgba, width, height, now_ms)
                .map_err(|e| JsError::new(&e.to_string()))?;
            to_js(&tracked)
        })
    }
}
