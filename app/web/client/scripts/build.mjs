// Builds src/ into an output directory (default dist/) with tsc, strict:
// index.js (one self-contained ES module: the schema is types only, so its
// import is erased) and index.d.ts, which refers to the generated
// ../generated/schema.d.ts (shipped as it is, not copied into dist/).
//
//   node scripts/build.mjs [outDir]
import { execFileSync } from "node:child_process";
import { rmSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const out = resolve(root, process.argv[2] ?? "dist");
const tsc = createRequire(import.meta.url).resolve("typescript/bin/tsc");

rmSync(out, { recursive: true, force: true });
execFileSync(process.execPath, [tsc, "-p", join(root, "tsconfig.json"), "--outDir", out], { stdio: "inherit" });
