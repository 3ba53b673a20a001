/**
 * The texts of the capture screen, one table per locale. English is complete; another language is a
 * table with the same keys, added here (or passed at run time through `messages`).
 */
import type { MessageKey, Messages } from "./types.js";

const en: Messages = {
  intro_title: "Verify your identity",
  intro_body:
    "We will take a short video of your face and a photo of your identity document. Nothing is sent until you press Submit.",
  flash_warning: "During the check the screen changes colour a few times.",
  start: "Start",
  camera_starting: "Starting the camera…",
  begin_check: "Begin the check",
  looks_good: "Looks good: press Begin the check.",
  no_face: "Put your face in the oval.",
  multiple_faces: "Only one person in the picture, please.",
  face_too_small: "Move closer.",
  face_too_large: "Move back a little.",
  not_centred: "Centre your face in the oval.",
  pose: "Look straight at the camera.",
  too_dark: "More light, please.",
  too_bright: "Too bright: move away from the light.",
  low_contrast: "Find even light on your face.",
  blurry: "Hold still.",
  step_neutral: "Hold still and look at the screen.",
  step_flash: "Keep looking at the screen.",
  step_turn_left: "Slowly turn your head to your left.",
  step_turn_right: "Slowly turn your head to your right.",
  challenge_done: "Done. Now your identity document.",
  document_title: "Your identity document",
  document_body: "Take a photo of the page with your picture, or choose a photo of it.",
  document_camera: "Use the camera",
  document_file: "Choose a photo",
  document_take: "Take the photo",
  document_retake: "Choose another",
  submit: "Submit",
  uploading: "Sending…",
  retrying: "Connection problem, trying again…",
  submitted: "Thank you. Your capture was sent.",
  try_again: "Try again",
  camera_denied:
    "Camera access was denied. Allow the camera for this site in your browser settings, then try again.",
  camera_missing: "No camera was found. Connect a camera, or continue on a phone.",
  camera_busy: "The camera is used by another application. Close it, then try again.",
  camera_unsupported: "This browser cannot use the camera here (a secure https page is needed).",
  document_unreadable: "That file could not be read as a photo. Choose a JPEG, PNG or WebP photo.",
  capture_rejected: "The capture did not pass the checks.",
  challenge_failed: "The check could not confirm a live person. Follow the steps and try again.",
  network_error: "The capture could not be sent. Check your connection and try again.",
  session_expired: "This verification has expired. Start a new one.",
  too_many_attempts: "Too many attempts. Wait a few minutes, or start a new verification.",
  upload_refused: "The capture was refused.",
  engine_failed: "The camera check could not start in this browser.",
};

const tables: Record<string, Messages> = { en };

/** The messages of `locale` (`fr-CA` falls back to `fr`, then to English), with `overrides`. */
export function messagesFor(locale: string | undefined, overrides?: Partial<Messages>): {
  locale: string;
  messages: Messages;
} {
  const wanted = (locale ?? "en").toLowerCase();
  const chosen = tables[wanted] ? wanted : tables[wanted.split("-")[0]] ? wanted.split("-")[0] : "en";
  return { locale: chosen, messages: { ...en, ...tables[chosen], ...overrides } };
}

/** The locales with a table. */
export function locales(): string[] {
  return Object.keys(tables);
}

export function isMessageKey(key: string): key is MessageKey {
  return key in en;
}
