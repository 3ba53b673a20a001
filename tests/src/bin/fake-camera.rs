//! A camera video for Chromium's fake capture device (`--use-file-for-fake-video-capture`): the
//! liveness challenge of one session answered with real photos, as a Y4M file.
//!
//! ```text
//! fake-camera --nonce <session nonce> --answer live|still --frontal A.jpg --turned B.jpg --out cam.y4m [--fps 13]
//! ```
//!
//! The video: a still lead-in (the person looking at the camera under white light), then the
//! challenge — for each colour step the face lit by that colour for as many frames as the SDK's
//! tracker spends on it at this frame rate, then the head turned as asked (`turned` is the person
//! turned to their right; its mirror image is the left turn) — then the frontal face again. It
//! loops. `still` is the frontal photo throughout (a printed photo held up: no turn, no
//! reflection). Each frame carries its index as a row of black and white blocks in its bottom
//! left corner, so a test can start the challenge when the video reaches it; the JSON printed on
//! stdout says where.

use std::io::{BufWriter, Write};
use std::path::PathBuf;

use idyntra_models::FrameQuality;
use idyntra_models::liveness::challenge_for;
use idyntra_models::liveness_samples::lit;
use idyntra_types::{ChallengeStep, TurnDirection};
use image::imageops::{self, FilterType};
use image::{Rgb, RgbImage};

const WIDTH: u32 = 640;
const HEIGHT: u32 = 480;
/// 13 frames a second puts no step length (350…500 and 800 ms) near a whole number of frames,
/// so the tracker's count of frames per step does not hang on timer jitter.
const DEFAULT_FPS: u32 = 13;
/// Frames before the challenge, and after it.
const LEAD_IN: u32 = 39;
const LEAD_OUT: u32 = 26;
/// Frames of each turn: the tracker moves on as soon as it sees one, so the first is short.
const TURN_FRAMES: [u32; 2] = [8, 12];
/// The tracker's least frames per step (`ActiveThresholds::min_frames_per_step` + 1).
const MIN_STEP_FRAMES: u32 = 3;
/// The index marker: this many bits, blocks this many pixels a side.
const MARKER_BITS: u32 = 12;
const MARKER_BLOCK: u32 = 8;

struct Options {
    nonce: String,
    still: bool,
    frontal: PathBuf,
    turned: PathBuf,
    out: PathBuf,
    fps: u32,
}

fn options() -> Result<Options, String> {
    let mut args = std::env::args().skip(1);
    let (mut nonce, mut answer, mut frontal, mut turned, mut out) = (None, None, None, None, None);
    let mut fps = DEFAULT_FPS;
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--nonce" => nonce = Some(value),
            "--answer" => answer = Some(value),
            "--frontal" => frontal = Some(PathBuf::from(value)),
            "--turned" => turned = Some(PathBuf::from(value)),
            "--out" => out = Some(PathBuf::from(value)),
            "--fps" => {
                fps = value
                    .parse()
                    .ok()
                    .filter(|fps| (1..=60).contains(fps))
                    .ok_or("--fps must be 1 to 60")?;
            }
            other => return Err(format!("unknown option {other}")),
        }
    }
    let still = match answer.as_deref() {
        Some("live") => false,
        Some("still") => true,
        _ => return Err("--answer must be live or still".to_owned()),
    };
    Ok(Options {
        nonce: nonce.ok_or("--nonce is required")?,
        still,
        frontal: frontal.ok_or("--frontal is required")?,
        turned: turned.ok_or("--turned is required")?,
        out: out.ok_or("--out is required")?,
        fps,
    })
}

/// Share of the frame's width the face takes: a person at arm's length from a laptop.
const FACE_SHARE: f32 = 0.32;

/// `photo` cropped around its largest face (`FACE_SHARE` of the width, centred) and scaled to
/// the frame.
fn framed(photo: &RgbImage, models: &FrameQuality) -> Result<RgbImage, String> {
    let faces = models.faces(photo).map_err(|e| e.to_string())?;
    let face = faces.first().ok_or("no face in the photo")?;
    let (pw, ph) = (photo.width() as f32, photo.height() as f32);
    let mut width = face.bbox.width() / FACE_SHARE;
    let mut height = width * HEIGHT as f32 / WIDTH as f32;
    let fit = f32::min(1.0, f32::min(pw / width, ph / height));
    (width, height) = (width * fit, height * fit);
    let (cx, cy) = (
        face.bbox.x1 + face.bbox.width() / 2.0,
        face.bbox.y1 + face.bbox.height() / 2.0,
    );
    let x = (cx - width / 2.0).clamp(0.0, pw - width);
    let y = (cy - height / 2.0).clamp(0.0, ph - height);
    let crop =
        imageops::crop_imm(photo, x as u32, y as u32, width as u32, height as u32).to_image();
    Ok(imageops::resize(&crop, WIDTH, HEIGHT, FilterType::Triangle))
}

/// Frames the tracker spends on a timed step of `ms` at `fps`: it moves on at the first frame
/// at least `ms` after the step's first, once the step has its least frames.
fn timed_frames(ms: u32, fps: u32) -> u32 {
    (ms * fps).div_ceil(1000).max(MIN_STEP_FRAMES - 1) + 1
}

fn mark(frame: &mut RgbImage, index: u32) {
    for bit in 0..MARKER_BITS {
        let value = if index >> bit & 1 == 1 { 255 } else { 0 };
        for y in HEIGHT - 2 * MARKER_BLOCK..HEIGHT - MARKER_BLOCK {
            for x in bit * MARKER_BLOCK..(bit + 1) * MARKER_BLOCK {
                frame.put_pixel(x, y, Rgb([value; 3]));
            }
        }
    }
}

/// One Y4M frame: BT.601 limited-range 4:2:0.
fn write_frame(out: &mut impl Write, frame: &RgbImage) -> std::io::Result<()> {
    let (w, h) = frame.dimensions();
    let pixel = |x: u32, y: u32| frame.get_pixel(x, y).0.map(f32::from);
    let mut y_plane = Vec::with_capacity((w * h) as usize);
    for y in 0..h {
        for x in 0..w {
            let [r, g, b] = pixel(x, y);
            y_plane.push((16.0 + 0.257 * r + 0.504 * g + 0.098 * b).round() as u8);
        }
    }
    let (mut u_plane, mut v_plane) = (Vec::new(), Vec::new());
    for y in (0..h).step_by(2) {
        for x in (0..w).step_by(2) {
            let mut sum = [0.0f32; 3];
            for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                let p = pixel(x + dx, y + dy);
                (0..3).for_each(|c| sum[c] += p[c] / 4.0);
            }
            let [r, g, b] = sum;
            u_plane.push(
                (128.0 - 0.148 * r - 0.291 * g + 0.439 * b)
                    .round()
                    .clamp(0.0, 255.0) as u8,
            );
            v_plane.push(
                (128.0 + 0.439 * r - 0.368 * g - 0.071 * b)
                    .round()
                    .clamp(0.0, 255.0) as u8,
            );
        }
    }
    out.write_all(b"FRAME\n")?;
    out.write_all(&y_plane)?;
    out.write_all(&u_plane)?;
    out.write_all(&v_plane)
}

fn run() -> Result<(), String> {
    let options = options()?;
    let models = FrameQuality::bundled().map_err(|e| e.to_string())?;
    let open = |path: &PathBuf| {
        let photo = image::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        framed(&photo.to_rgb8(), &models).map_err(|e| format!("{}: {e}", path.display()))
    };
    let frontal = open(&options.frontal)?;
    let turned_right = open(&options.turned)?;
    let white = [255, 255, 255];
    let quality = models
        .assess(&lit(&frontal, white, 0))
        .map_err(|e| e.to_string())?;
    if !quality.failures.is_empty() {
        return Err(format!(
            "the frontal photo would not pass the live quality check: {:?}",
            quality.failures
        ));
    }

    let mut frames: Vec<RgbImage> = Vec::new();
    let mut push =
        |image: RgbImage, count: u32| (0..count).for_each(|_| frames.push(image.clone()));
    // Screen light differs from frame to frame only by sensor noise: `lit` adds some per seed.
    let lead_in = lit(&frontal, white, 1);
    push(lead_in.clone(), LEAD_IN);
    let challenge = challenge_for(options.nonce.as_bytes());
    let mut turns = TURN_FRAMES.iter();
    for step in &challenge.steps {
        match step {
            ChallengeStep::Neutral { colour, ms } | ChallengeStep::Flash { colour, ms } => {
                let image = if options.still {
                    frontal.clone()
                } else {
                    lit(&frontal, *colour, *ms)
                };
                push(image, timed_frames(*ms, options.fps));
            }
            ChallengeStep::Turn { direction, .. } => {
                let image = match (options.still, direction) {
                    (true, _) => frontal.clone(),
                    (false, TurnDirection::Right) => turned_right.clone(),
                    (false, TurnDirection::Left) => imageops::flip_horizontal(&turned_right),
                };
                push(image, *turns.next().unwrap_or(&TURN_FRAMES[1]));
            }
        }
    }
    push(
        if options.still {
            frontal.clone()
        } else {
            lead_in
        },
        LEAD_OUT,
    );
    let count = frames.len() as u32;
    if count >= 1 << MARKER_BITS {
        return Err(format!(
            "{count} frames do not fit the {MARKER_BITS}-bit marker"
        ));
    }

    let file = std::fs::File::create(&options.out)
        .map_err(|e| format!("{}: {e}", options.out.display()))?;
    let mut out = BufWriter::new(file);
    let io = |e: std::io::Error| e.to_string();
    let fps = options.fps;
    writeln!(out, "YUV4MPEG2 W{WIDTH} H{HEIGHT} F{fps}:1 Ip A1:1 C420").map_err(io)?;
    for (index, mut frame) in frames.into_iter().enumerate() {
        mark(&mut frame, index as u32);
        write_frame(&mut out, &frame).map_err(io)?;
    }
    out.flush().map_err(io)?;
    println!(
        "{}",
        serde_json::json!({
            "fps": fps,
            "frames": count,
            "challenge_start": LEAD_IN,
            "marker": {"bits": MARKER_BITS, "block": MARKER_BLOCK, "y": HEIGHT - 2 * MARKER_BLOCK + MARKER_BLOCK / 2},
            "selfie_quality": quality.score,
        })
    );
    Ok(())
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("fake-camera: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}
