/** The capture screen's styles, scoped to its shadow root. */
export const STYLES = `
:host { display: block; }
.idy { font: 16px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #111; max-width: 520px;
  margin: 0 auto; padding: 16px; box-sizing: border-box; text-align: center; }
.idy * { box-sizing: border-box; }
.idy h2 { font-size: 1.25rem; margin: 0 0 8px; }
.idy p { margin: 8px 0; }
.stage { position: relative; width: 100%; aspect-ratio: 4 / 3; background: #000; border-radius: 12px; overflow: hidden; }
.stage[hidden] { display: none; }
.stage video { width: 100%; height: 100%; object-fit: cover; transform: scaleX(-1); }
.oval { position: absolute; inset: 0; width: 100%; height: 100%; pointer-events: none; }
.oval ellipse { fill: none; stroke: #fff; stroke-width: 3; stroke-dasharray: 8 6; }
.oval.good ellipse { stroke: #22c55e; stroke-dasharray: none; }
.turn { position: absolute; top: 50%; font-size: 3rem; color: #fff; text-shadow: 0 0 6px #000; transform: translateY(-50%); }
.turn.left { left: 8%; } .turn.right { right: 8%; }
.turn[hidden] { display: none; }
.status { min-height: 2.9em; font-weight: 600; }
.alert { color: #b91c1c; background: #fef2f2; border: 1px solid #fecaca; border-radius: 8px; padding: 8px 12px; }
.alert[hidden], .problems[hidden] { display: none; }
.problems { text-align: left; color: #7f1d1d; margin: 4px 0 8px; padding-left: 20px; }
.note { color: #444; font-size: 0.9rem; }
.actions { display: flex; flex-wrap: wrap; gap: 8px; justify-content: center; margin-top: 12px; }
.actions button, .actions label { font: inherit; padding: 10px 18px; border-radius: 8px; border: 2px solid #1d4ed8;
  background: #1d4ed8; color: #fff; cursor: pointer; min-height: 44px; }
.actions .secondary { background: #fff; color: #1d4ed8; }
.actions button[disabled] { opacity: 0.5; cursor: not-allowed; }
.actions button:focus-visible, .actions label:focus-within { outline: 3px solid #f59e0b; outline-offset: 2px; }
.actions [hidden] { display: none; }
.file { position: absolute; width: 1px; height: 1px; opacity: 0; overflow: hidden; }
.preview { max-width: 100%; max-height: 240px; border-radius: 8px; margin-top: 8px; }
.preview[hidden] { display: none; }
.idy.challenging { position: fixed; inset: 0; max-width: none; z-index: 2147483000; display: flex; flex-direction: column;
  align-items: center; justify-content: center; background: #fff; }
.idy.challenging .stage { max-width: min(520px, 70vh); }
.idy.challenging .status { background: rgba(255, 255, 255, 0.92); border-radius: 8px; padding: 6px 12px; }
.sr-only { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; }
@media (prefers-reduced-motion: no-preference) {
  .oval ellipse { transition: stroke 200ms ease; }
  .oval:not(.good) ellipse { animation: idy-dash 2s linear infinite; }
  @keyframes idy-dash { to { stroke-dashoffset: -28; } }
}
@media (max-width: 480px) {
  .idy { padding: 8px; }
  .stage { aspect-ratio: 3 / 4; }
  .actions button, .actions label { flex: 1 1 100%; }
}
`;
