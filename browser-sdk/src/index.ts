/**
 * @idyntra/browser-sdk — guided camera capture for Idyntra identity verification.
 *
 * ```js
 * import { Idyntra } from "@idyntra/browser-sdk";
 * const v = await Idyntra.create({ clientToken, edgeUrl, apiUrl, locale: "en" });
 * v.mount(document.querySelector("#verify"));
 * v.on("quality", (q) => console.log(q.message));
 * const submission = await v.start(); // then your server calls POST /v1/sessions/{id}/finalize
 * ```
 */
import type { CreateOptions } from "./types.js";
import { Verification } from "./verification.js";

export const Idyntra = {
  /** A verification for the session of `options.clientToken`; starts loading the analysis engine. */
  create(options: CreateOptions): Promise<Verification> {
    return Verification.create(options);
  },
};

export { Verification, VerificationError, readDocument } from "./verification.js";
export { locales, messagesFor } from "./locales.js";
export { readClientToken, InvalidClientToken } from "./token.js";
export type * from "./types.js";
