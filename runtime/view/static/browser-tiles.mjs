// Tiles rendered in the visitor's browser: a pool of Web Workers (tile-worker.mjs), each with its own
// onnxruntime-web session of the model, and a Leaflet layer whose tiles are canvases the pool fills.
// A tile that leaves the view is cancelled: dropped from the queue, or stopped at its worker's next
// chunk. Tiles are independent, so on the CPU the pool runs one single-threaded session per core:
// all cores work without the cross-origin isolation that wasm threads need (a plain static server
// cannot send those headers).
import { cellCentres, tileRegion } from "./pixels.mjs";

const MAX_WORKERS = 4;  // wasm sessions at most (each holds the model and its activations)
const SAVE_ROWS = 32;  // rows per job of a saved view, spread over the workers

class Job {
  constructor(spec) {
    this.spec = spec;
    this.cancelled = false;
    this.worker = null;
    this.promise = new Promise((resolve, reject) => { this.resolve = resolve; this.reject = reject; });
  }
}

export class Pool {
  /** Workers opened on one backend; onTile(ms) hears of each finished job. */
  constructor(info, vendor, onTile) {
    this.info = info;
    this.vendor = vendor;
    this.onTile = onTile;
    this.queue = [];
    this.idle = [];
    this.workers = [];
    this.nextId = 1;
    this.backend = null;
    this.threads = 1;
    this.chunk = info.chunk;
    // jobs finished; stopped at a chunk after their cancel; cancelled before a worker took them
    this.stats = { rendered: 0, stopped: 0, dropped: 0 };
  }

  async _open(model, backends) {
    const worker = new Worker(new URL("./tile-worker.mjs", import.meta.url), { type: "module" });
    const ready = await new Promise((resolve, reject) => {
      worker.onmessage = ({ data }) => (data.type === "ready" ? resolve(data) : reject(new Error(data.message)));
      worker.onerror = (e) => reject(new Error(e.message || "the tile worker did not start"));
      worker.postMessage({ type: "open", model, vendor: this.vendor, backends, threads: this.threads,
                           style_dim: this.info.style_dim });
    });
    worker.onmessage = ({ data }) => this._reply(worker, data);
    worker.onerror = (e) => worker.job && this._reply(worker, { type: "error", message: e.message || "the worker failed" });
    this.workers.push(worker);
    this.idle.push(worker);
    return ready.backend;
  }

  /** Open the first worker on the first backend that works, then the others on that backend. */
  async start(model, { backend, workers, threads } = {}) {
    let backends = backend ? [backend] : ["wasm"];
    if (!backend && this.info.backends.includes("webgpu") && navigator.gpu) {
      try {
        if (await navigator.gpu.requestAdapter()) backends = ["webgpu", "wasm"];
      } catch { /* no adapter: wasm */ }
    }
    this.threads = crossOriginIsolated ? Math.max(1, Math.floor(threads || 1)) : 1;
    this.backend = await this._open(model, backends);
    const cores = navigator.hardwareConcurrency || 2;
    const count = this.backend === "webgpu" ? 1 : Math.max(1, Math.floor(workers || Math.min(MAX_WORKERS, cores)));
    await Promise.all(Array.from({ length: count - 1 }, () => this._open(model, [this.backend])));
    return this;
  }

  get description() {
    const threads = this.threads > 1 ? ` x ${this.threads} threads` : "";
    return `${this.backend}, ${this.workers.length} worker${this.workers.length > 1 ? "s" : ""}${threads}`;
  }

  /** Render rows [r0, r1) of a width x height grid over region; a Job whose promise gives
   * {rgba, ms} or rejects (not when cancelled: a cancelled job's promise never settles). */
  render(spec) {
    const job = new Job(spec);
    this.queue.push(job);
    this._dispatch();
    return job;
  }

  cancel(job) {
    if (job.cancelled) return;
    job.cancelled = true;
    if (job.worker) {
      job.worker.postMessage({ type: "cancel", id: job.id });
    } else {
      this.queue.splice(this.queue.indexOf(job), 1);
      this.stats.dropped += 1;
    }
  }

  _dispatch() {
    while (this.idle.length && this.queue.length) {
      const job = this.queue.shift(), worker = this.idle.shift();
      job.id = this.nextId++;
      job.worker = worker;
      worker.job = job;
      worker.postMessage({ type: "render", id: job.id, chunk: this.chunk, ...job.spec });
    }
  }

  _reply(worker, data) {
    const job = worker.job;
    worker.job = null;
    this.idle.push(worker);
    if (data.type === "cancelled") this.stats.stopped += 1;
    if (data.type === "done") this.stats.rendered += 1;
    if (data.type === "done" && !job.cancelled) {
      this.onTile(data.ms);
      job.resolve(data);
    } else if (data.type === "error") {
      job.reject(new Error(data.message));
    }
    this._dispatch();
  }
}

/** A Leaflet layer of size x size canvas tiles that `pool` renders for params() = {seed, psi}. */
export function browserLayer(pool, params, options) {
  const Layer = L.GridLayer.extend({
    createTile(coords, done) {
      const size = this.getTileSize().x, tile = document.createElement("canvas");
      tile.width = tile.height = size;
      tile.dataset.tile = `${coords.z}/${coords.x}/${coords.y}`;
      const { seed, psi } = params();
      const job = pool.render({ seed: String(seed), psi, region: tileRegion(coords.z, coords.x, coords.y, size),
                                width: size, height: size, rows: [0, size] });
      tile.cipsJob = job;
      job.promise.then(({ rgba }) => {
        tile.getContext("2d").putImageData(new ImageData(rgba, size, size), 0, 0);
        done(null, tile);
      }, (e) => done(e, tile));
      return tile;
    },
  });
  const layer = new Layer(options);
  layer.on("tileunload", (e) => e.tile.cipsJob && pool.cancel(e.tile.cipsJob));
  return layer;
}

/** The view `edges` (x0, y0, x1, y1) at width x height as `cips render --region` renders it, in
 * bands of rows over the whole pool: {blob (PNG), region}. */
export async function renderView(pool, seed, psi, edges, width, height) {
  const region = cellCentres(edges, height, width);
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  const context = canvas.getContext("2d"), bands = [];
  for (let r0 = 0; r0 < height; r0 += SAVE_ROWS) {
    const r1 = Math.min(height, r0 + SAVE_ROWS);
    const job = pool.render({ seed: String(seed), psi, region, width, height, rows: [r0, r1] });
    bands.push(job.promise.then(({ rgba }) => context.putImageData(new ImageData(rgba, width, r1 - r0), 0, r0)));
  }
  await Promise.all(bands);
  const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
  return { blob, region };
}
