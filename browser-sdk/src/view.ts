/**
 * The capture screen: camera stage with its oval guide, guidance (announced to screen readers),
 * errors, and one row of actions per screen. Plain DOM in a shadow root, so it drops into any
 * page; the flow (`verification.ts`) decides what it shows.
 */
import { Announcements } from "./guidance.js";
import { STYLES } from "./styles.js";

export interface Action {
  key: string;
  label: string;
  secondary?: boolean;
  /** A file picker for images instead of a button. */
  file?: boolean;
  disabled?: boolean;
}

export interface Choice {
  key: string;
  file?: File;
}

const SVG = "http://www.w3.org/2000/svg";

function element<K extends keyof HTMLElementTagNameMap>(tag: K, className?: string): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (className) node.className = className;
  return node;
}

export class View {
  readonly root: HTMLElement;
  readonly video: HTMLVideoElement;
  private readonly shadow: ShadowRoot;
  private readonly stage: HTMLElement;
  private readonly oval: SVGSVGElement;
  private readonly turn: HTMLElement;
  private readonly title: HTMLElement;
  private readonly body: HTMLElement;
  private readonly status: HTMLElement;
  private readonly live: HTMLElement;
  private readonly alert: HTMLElement;
  private readonly problems: HTMLUListElement;
  private readonly preview: HTMLImageElement;
  private readonly actions: HTMLElement;
  private readonly announcements = new Announcements();
  private previewUrl: string | null = null;
  private pending: ((choice: Choice) => void) | null = null;

  constructor(host: HTMLElement, label: string) {
    this.shadow = host.shadowRoot ?? host.attachShadow({ mode: "open" });
    this.shadow.replaceChildren();
    // Constructed style sheets are not inline styles: a strict CSP needs no 'unsafe-inline'.
    if ("adoptedStyleSheets" in this.shadow && typeof CSSStyleSheet !== "undefined" && "replaceSync" in CSSStyleSheet.prototype) {
      const sheet = new CSSStyleSheet();
      sheet.replaceSync(STYLES);
      this.shadow.adoptedStyleSheets = [sheet];
    } else {
      const style = element("style");
      style.textContent = STYLES;
      this.shadow.append(style);
    }
    this.root = element("section", "idy");
    this.root.setAttribute("aria-label", label);
    this.title = element("h2");
    this.body = element("p", "note");
    this.stage = element("div", "stage");
    this.stage.hidden = true;
    this.video = element("video");
    this.video.muted = true;
    this.video.playsInline = true;
    this.video.autoplay = true;
    this.video.setAttribute("aria-hidden", "true");
    this.oval = document.createElementNS(SVG, "svg");
    this.oval.setAttribute("class", "oval");
    this.oval.setAttribute("viewBox", "0 0 100 100");
    this.oval.setAttribute("preserveAspectRatio", "none");
    this.oval.setAttribute("aria-hidden", "true");
    const ellipse = document.createElementNS(SVG, "ellipse");
    for (const [name, value] of [["cx", "50"], ["cy", "48"], ["rx", "24"], ["ry", "38"]]) ellipse.setAttribute(name, value);
    this.oval.append(ellipse);
    this.turn = element("div", "turn");
    this.turn.hidden = true;
    this.turn.setAttribute("aria-hidden", "true");
    this.stage.append(this.video, this.oval, this.turn);
    // The visible guidance changes every frame; the live region gets it at a readable pace.
    this.status = element("p", "status");
    this.status.setAttribute("aria-hidden", "true");
    this.live = element("p", "sr-only");
    this.live.setAttribute("role", "status");
    this.live.setAttribute("aria-live", "polite");
    this.alert = element("p", "alert");
    this.alert.setAttribute("role", "alert");
    this.alert.hidden = true;
    this.problems = element("ul", "problems");
    this.problems.hidden = true;
    this.preview = element("img", "preview");
    this.preview.hidden = true;
    this.preview.alt = "";
    this.actions = element("div", "actions");
    this.root.append(this.title, this.body, this.stage, this.status, this.live, this.alert, this.problems, this.preview, this.actions);
    this.shadow.append(this.root);
  }

  /** The root of the capture screen, for tests and for styling hooks (`data-state`). */
  setState(state: string): void {
    this.root.dataset.state = state;
  }

  setText(title: string, body = ""): void {
    this.title.textContent = title;
    this.title.hidden = title === "";
    this.body.textContent = body;
    this.body.hidden = body === "";
  }

  showStage(visible: boolean): void {
    this.stage.hidden = !visible;
  }

  /** Shows `text` as the guidance; announces it when it changed and the last one is old enough. */
  guide(text: string, urgent = false): void {
    this.status.textContent = text;
    if (this.announcements.due(text, performance.now(), urgent)) this.live.textContent = text;
  }

  showError(message: string | null, problems: string[] = []): void {
    this.alert.hidden = message === null;
    this.alert.textContent = message ?? "";
    this.problems.replaceChildren(
      ...problems.map((text) => {
        const item = element("li");
        item.textContent = text;
        return item;
      }),
    );
    this.problems.hidden = problems.length === 0;
  }

  setOvalGood(good: boolean): void {
    this.oval.classList.toggle("good", good);
  }

  /** Fills the screen with `colour` during the challenge (`null`: leaves the challenge screen). */
  setChallenge(colour: string | null, active: boolean): void {
    this.root.classList.toggle("challenging", active);
    this.root.style.background = active && colour ? colour : "";
  }

  setTurn(direction: "left" | "right" | null, progress = 0): void {
    this.turn.hidden = direction === null;
    if (direction === null) return;
    // The preview is mirrored: the person's left is the screen's left.
    this.turn.className = `turn ${direction}`;
    this.turn.textContent = direction === "left" ? "←" : "→";
    this.turn.style.opacity = String(0.4 + 0.6 * Math.min(1, Math.max(0, progress)));
  }

  showPreview(image: Blob | null): void {
    if (this.previewUrl) URL.revokeObjectURL(this.previewUrl);
    this.previewUrl = image ? URL.createObjectURL(image) : null;
    this.preview.hidden = image === null;
    if (this.previewUrl) this.preview.src = this.previewUrl;
    else this.preview.removeAttribute("src");
  }

  /** Replaces the actions; the promise resolves with the one the person used. */
  choose(actions: Action[]): Promise<Choice> {
    this.actions.replaceChildren();
    const chosen = new Promise<Choice>((resolve) => {
      this.pending = resolve;
    });
    for (const action of actions) {
      if (action.file) {
        const label = element("label", action.secondary ? "secondary" : undefined);
        const input = element("input", "file");
        input.type = "file";
        input.accept = "image/jpeg,image/png,image/webp,image/*";
        input.dataset.action = action.key;
        input.addEventListener("change", () => {
          const file = input.files?.[0];
          if (file) this.resolve({ key: action.key, file });
        });
        label.append(document.createTextNode(action.label), input);
        this.actions.append(label);
      } else {
        const button = element("button", action.secondary ? "secondary" : undefined);
        button.type = "button";
        button.textContent = action.label;
        button.dataset.action = action.key;
        button.disabled = action.disabled ?? false;
        button.addEventListener("click", () => this.resolve({ key: action.key }));
        this.actions.append(button);
      }
    }
    this.focusFirst();
    return chosen;
  }

  /** Enables or disables the action `key`; the first time it is enabled it takes the focus. */
  enable(key: string, enabled: boolean): void {
    const button = this.actions.querySelector<HTMLButtonElement>(`button[data-action="${key}"]`);
    if (button && button.disabled === enabled) {
      button.disabled = !enabled;
      if (enabled && button.dataset.focused !== "1") {
        button.dataset.focused = "1";
        button.focus({ preventScroll: true });
      }
    }
  }

  clearActions(): void {
    this.actions.replaceChildren();
  }

  private focusFirst(): void {
    const first = this.actions.querySelector<HTMLElement>("button:not([disabled]), input");
    first?.focus({ preventScroll: true });
  }

  private resolve(choice: Choice): void {
    const pending = this.pending;
    this.pending = null;
    pending?.(choice);
  }

  destroy(): void {
    this.showPreview(null);
    this.shadow.replaceChildren();
  }
}
