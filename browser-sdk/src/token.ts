/**
 * Reads the claims the capture needs from the client token. The browser cannot verify the
 * signature (it holds no key) and does not need to: the edge and the backend do.
 */

export interface ClientTokenClaims {
  sid: string;
  nonce: string;
  liveness: "active" | "passive";
  requireDocument: boolean;
  /** Unix seconds. */
  exp: number;
}

export class InvalidClientToken extends Error {}

function base64UrlDecode(text: string): string {
  const base64 = text.replace(/-/g, "+").replace(/_/g, "/");
  const padded = base64 + "=".repeat((4 - (base64.length % 4)) % 4);
  const binary = atob(padded);
  const bytes = Uint8Array.from(binary, (c) => c.charCodeAt(0));
  return new TextDecoder().decode(bytes);
}

export function readClientToken(token: string): ClientTokenClaims {
  const parts = token.split(".");
  if (parts.length !== 3) throw new InvalidClientToken("the client token is not a JWT");
  let claims: Record<string, unknown>;
  try {
    claims = JSON.parse(base64UrlDecode(parts[1]));
  } catch {
    throw new InvalidClientToken("the client token's claims are not readable");
  }
  const { sid, nonce, exp } = claims;
  if (typeof sid !== "string" || typeof nonce !== "string" || typeof exp !== "number") {
    throw new InvalidClientToken("the client token lacks sid, nonce or exp");
  }
  return {
    sid,
    nonce,
    exp,
    liveness: claims.liveness === "passive" ? "passive" : "active",
    requireDocument: claims.require_document !== false,
  };
}
