//! The active liveness challenge on the wire: what the browser shows, and what it reports about the
//! frames it captured while showing it.

use serde::{Deserialize, Serialize};

/// A head turn, from the person's point of view: turning to their left shows their right cheek
/// and, in an unmirrored camera frame, moves the nose towards the frame's right edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum TurnDirection {
    Left,
    Right,
}

/// One step of a challenge, shown in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ChallengeStep {
    /// Look straight at the camera while the screen shows `colour` (the reference for flashes).
    Neutral { colour: [u8; 3], ms: u32 },
    /// Turn the head, then come back; the step ends when the turn is seen or after `max_ms`.
    Turn {
        direction: TurnDirection,
        max_ms: u32,
    },
    /// Fill the screen with `colour` for `ms` milliseconds.
    Flash { colour: [u8; 3], ms: u32 },
}

/// A challenge, derived from the session nonce so it cannot be prepared in advance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LivenessChallenge {
    pub version: u32,
    pub steps: Vec<ChallengeStep>,
}

/// What the browser reports about one captured frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FrameTiming {
    /// Milliseconds since the challenge started.
    pub at_ms: u32,
    /// Index of the step on screen when the frame was taken.
    pub step: usize,
}
