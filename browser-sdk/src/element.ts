/**
 * `<idyntra-verify client-token="…" edge-url="…" api-url="…" locale="en">`: the SDK as a drop-in
 * element. It re-dispatches the SDK's events as DOM events named `idyntra-<event>` (`detail` is
 * the payload) and starts the flow when connected.
 */
import { Idyntra, type Verification } from "./index.js";
import type { EventName } from "./types.js";

const EVENTS: EventName[] = ["ready", "quality", "challenge", "captured", "submitted", "error"];

export class IdyntraVerifyElement extends HTMLElement {
  static readonly observedAttributes = ["client-token"];
  private verification: Verification | null = null;
  private starting = false;

  /** The running verification, once the element is connected. */
  get current(): Verification | null {
    return this.verification;
  }

  connectedCallback(): void {
    void this.begin();
  }

  disconnectedCallback(): void {
    this.verification?.destroy();
    this.verification = null;
  }

  /** A new client token (a new session) restarts the capture; the first one is connect's. */
  attributeChangedCallback(_name: string, previous: string | null, value: string | null): void {
    if (this.verification !== null && previous !== value) {
      this.disconnectedCallback();
      void this.begin();
    }
  }

  private async begin(): Promise<void> {
    const clientToken = this.getAttribute("client-token");
    if (!clientToken || this.verification !== null || this.starting) return;
    this.starting = true;
    let verification: Verification;
    try {
      verification = await Idyntra.create({
        clientToken,
        edgeUrl: this.getAttribute("edge-url") ?? location.origin,
        apiUrl: this.getAttribute("api-url") ?? location.origin,
        locale: this.getAttribute("locale") ?? document.documentElement.lang ?? undefined,
      });
    } finally {
      this.starting = false;
    }
    if (!this.isConnected) return verification.destroy();
    this.verification = verification;
    for (const name of EVENTS) {
      verification.on(name, (detail) =>
        this.dispatchEvent(new CustomEvent(`idyntra-${name}`, { detail, bubbles: true, composed: true })),
      );
    }
    verification.mount(this);
    verification.start().catch(() => undefined); // failures arrive as `idyntra-error` events
  }
}

if (typeof customElements !== "undefined" && !customElements.get("idyntra-verify")) {
  customElements.define("idyntra-verify", IdyntraVerifyElement);
}
