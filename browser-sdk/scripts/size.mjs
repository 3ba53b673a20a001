// Sizes of the built package, raw and gzip-compressed (level 9): the JavaScript a page loads
// with the SDK, and the analysis engine it loads on first use.
import { readFileSync, readdirSync } from "node:fs";
import { gzipSync } from "node:zlib";
import { join } from "node:path";

const dist = new URL("../dist/", import.meta.url).pathname;
const measure = (files) =>
  files.reduce(
    (sum, file) => {
      const bytes = readFileSync(join(dist, file));
      return { raw: sum.raw + bytes.length, gzip: sum.gzip + gzipSync(bytes, { level: 9 }).length };
    },
    { raw: 0, gzip: 0 },
  );
const js = readdirSync(dist).filter((name) => name.endsWith(".js"));
const rows = [
  ["SDK JavaScript (" + js.join(", ") + ")", measure(js)],
  ["engine glue (wasm/idyntra_edge.js)", measure(["wasm/idyntra_edge.js"])],
  ["engine (wasm/idyntra_edge_bg.wasm, BlazeFace inside)", measure(["wasm/idyntra_edge_bg.wasm"])],
];
const kb = (n) => (n / 1024).toFixed(1) + " kB";
for (const [name, size] of rows) console.log(`${name}: ${kb(size.raw)} raw, ${kb(size.gzip)} gzip`);
const sdk = rows[0][1].gzip;
if (process.argv.includes("--check") && sdk > 60 * 1024) {
  console.error(`the SDK's JavaScript is ${kb(sdk)} gzip, over the 60 kB budget`);
  process.exit(1);
}
