import { fileURLToPath } from "node:url";
import { defineConfig } from "vite";

// The browser tests build the page a second time with VITE_VARCO_TEST_HOOKS=1: the engine with its test
// hooks (web/pkg-test) in place of the package's, into dist-test; a release build never has them.
const testHooks = process.env.VITE_VARCO_TEST_HOOKS === "1";

// Static files only: any host or CDN serves dist/ from any path.
export default defineConfig({
  base: "./",
  resolve: testHooks ? { alias: [{ find: /^\.\.\/pkg\/varco_web\.js$/, replacement: fileURLToPath(new URL("../pkg-test/varco_web.js", import.meta.url)) }] } : {},
  // the package's worker is an ES module (it imports the wasm engine's bindings)
  worker: { format: "es" },
  // no inlined assets: the strict Content-Security-Policy allows no data: scripts or wasm
  build: { target: "es2022", assetsInlineLimit: 0, outDir: testHooks ? "dist-test" : "dist" },
  optimizeDeps: { exclude: ["varco-web"] },
});
