import { defineConfig } from "vite";

// Static files only: any host or CDN serves dist/ from any path.
export default defineConfig({
  base: "./",
  // the package's worker is an ES module (it imports the wasm engine's bindings)
  worker: { format: "es" },
  // no inlined assets: the strict Content-Security-Policy allows no data: scripts or wasm
  build: { target: "es2022", assetsInlineLimit: 0 },
  optimizeDeps: { exclude: ["varco-web"] },
});
