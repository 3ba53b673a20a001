import { describe, expect, it } from "vitest";
import { InvalidClientToken, readClientToken } from "../src/token.js";

const encode = (value: unknown) => Buffer.from(JSON.stringify(value)).toString("base64url");
const token = (claims: unknown) => `${encode({ alg: "EdDSA", kid: "backend-1" })}.${encode(claims)}.c2ln`;

describe("readClientToken", () => {
  it("reads the session, nonce and options", () => {
    const claims = readClientToken(
      token({ sid: "ses_1", nonce: "n-ü", exp: 10, liveness: "passive", require_document: false }),
    );
    expect(claims).toEqual({ sid: "ses_1", nonce: "n-ü", exp: 10, liveness: "passive", requireDocument: false });
  });

  it("defaults to an active check with a document", () => {
    const claims = readClientToken(token({ sid: "ses_1", nonce: "n", exp: 10 }));
    expect(claims.liveness).toBe("active");
    expect(claims.requireDocument).toBe(true);
  });

  it("refuses what is not a client token", () => {
    expect(() => readClientToken("abc")).toThrow(InvalidClientToken);
    expect(() => readClientToken("a.b.c")).toThrow(InvalidClientToken);
    expect(() => readClientToken(token({ sid: "ses_1" }))).toThrow(/nonce/);
  });
});
