// The package's worker, seeing a small storage quota (small-quota.js is evaluated first).
import "./small-quota.js";
import "../dist/worker.js";
