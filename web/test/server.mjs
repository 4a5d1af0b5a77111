// A static server acting as the CDN in the browser tests: serves the package (web/), a converted model
// (/model/), with HTTP Range, a request log, and faults the test switches on: drop a connection after N
// bytes of a file (once: the bytes sent, then the connection held until the test calls `hangUp`, so that
// the test decides what the browser has stored when it breaks), stall one after N bytes (the bytes sent,
// then nothing: a download in progress), flip a byte of a file, serve another manifest, refuse every model
// request (the CDN offline).
import http from "node:http";
import fs from "node:fs";
import path from "node:path";

const types = {
  ".js": "text/javascript", ".html": "text/html", ".json": "application/json", ".wasm": "application/wasm", ".css": "text/css",
  ".png": "image/png", ".jpg": "image/jpeg", ".svg": "image/svg+xml",
};

export const noFaults = () => ({ drop: new Map(), stall: new Map(), flip: new Set(), manifest: null, offline: false });

/** Breaks the connections a `drop` fault holds open. */
export function hangUp(state) {
  for (const socket of state.held.splice(0)) socket.destroy();
}

/** Serves `webDir` (`/` is `index` in it) and `modelDir` at /model/; `pkgDir`, where given, at /pkg/ (the
 * engine built with its test hooks). */
export function serve({ webDir, modelDir, index = "test/page.html", pkgDir }) {
  const state = { log: [], faults: noFaults(), held: [] };
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, "http://x");
    state.log.push({ path: url.pathname, range: req.headers.range ?? null });
    if (state.faults.offline && url.pathname.startsWith("/model/")) {
      req.socket.destroy();
      return;
    }
    let file;
    if (url.pathname === "/") file = path.join(webDir, index);
    else if (url.pathname.startsWith("/model/")) file = path.join(modelDir, url.pathname.slice(7));
    else if (pkgDir && url.pathname.startsWith("/pkg/")) file = path.join(pkgDir, url.pathname.slice(5));
    else file = path.join(webDir, url.pathname);
    if (!fs.existsSync(file) || fs.statSync(file).isDirectory()) {
      res.writeHead(404).end();
      return;
    }
    const name = path.basename(file);
    let data = url.pathname === "/model/manifest.json" && state.faults.manifest ? Buffer.from(state.faults.manifest) : fs.readFileSync(file);
    if (state.faults.flip.has(name)) {
      data = Buffer.from(data);
      data[data.length >> 1] ^= 0x40;
    }
    let start = 0;
    let status = 200;
    const headers = { "content-type": types[path.extname(file)] ?? "application/octet-stream", "accept-ranges": "bytes", "cache-control": "no-store" };
    const m = /^bytes=(\d+)-$/.exec(req.headers.range ?? "");
    if (m) {
      start = Number(m[1]);
      status = 206;
      headers["content-range"] = `bytes ${start}-${data.length - 1}/${data.length}`;
    }
    const body = data.subarray(start);
    headers["content-length"] = body.length;
    res.writeHead(status, headers);
    const stall = state.faults.stall.get(name);
    if (stall !== undefined && stall > start && stall < data.length) {
      res.write(body.subarray(0, stall - start));
      return;
    }
    const drop = state.faults.drop.get(name);
    if (drop !== undefined && drop > start && drop < data.length) {
      state.faults.drop.delete(name);
      res.write(body.subarray(0, drop - start));
      state.held.push(req.socket);
      return;
    }
    res.end(body);
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve({ server, state, url: `http://127.0.0.1:${server.address().port}` })));
}
