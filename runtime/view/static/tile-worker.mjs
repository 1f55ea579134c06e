// A Web Worker that renders pixels of the model with onnxruntime-web (browser-tiles.mjs runs a pool of
// them). One session; one job at a time: rows r0 .. r1 - 1 of a width x height grid over a region,
// for a seed and a truncation, run in chunks of points. A job cancelled while it runs stops at its
// next chunk.
//
// Messages in:  {type: "open", model: ArrayBuffer, vendor: URL, backends: ["webgpu", "wasm"], threads}
//               {type: "render", id, seed: "decimal", psi, region: [x0, y0, x1, y1], width, height,
//                rows: [r0, r1], chunk}
//               {type: "cancel", id}
// Messages out: {type: "ready", backend} | {type: "done", id, rgba, ms} | {type: "cancelled", id}
//               | {type: "error", id, message}
import { latentForSeed } from "./latent.mjs";
import { gridPoints, linspace32, toRGBA } from "./pixels.mjs";

// onnxruntime-web builds: the wasm one runs the CPU kernels only; the webgpu one adds the WebGPU provider
const BUILDS = { wasm: "ort.wasm.min.mjs", webgpu: "ort.webgpu.min.mjs" };
const LATENTS_KEPT = 8;

let ort = null, session = null, styleDim = 0;
let running = null, stop = false;  // the job in progress, and whether it was cancelled
const latents = new Map();
let work = Promise.resolve();  // messages other than "cancel" run one after another

async function open({ model, vendor, backends, threads, style_dim }) {
  styleDim = style_dim;
  const errors = [];
  for (const backend of backends) {
    try {
      ort = await import(vendor + BUILDS[backend]);
      ort.env.wasm.wasmPaths = vendor;
      ort.env.wasm.numThreads = threads;  // more than 1 only where the page is cross-origin isolated
      ort.env.wasm.proxy = false;  // this is already a worker
      session = await ort.InferenceSession.create(new Uint8Array(model), { executionProviders: [backend] });
      return { type: "ready", backend };
    } catch (e) {
      errors.push(`${backend}: ${e.message || e}`);
    }
  }
  throw new Error(`no backend could open the model (${errors.join("; ")})`);
}

function latent(seed) {
  let z = latents.get(seed);
  if (!z) {
    z = latentForSeed(BigInt(seed), styleDim);
    if (latents.size >= LATENTS_KEPT) latents.delete(latents.keys().next().value);
    latents.set(seed, z);
  }
  return z;
}

async function render({ id, seed, psi, region: [x0, y0, x1, y1], width, height, rows: [r0, r1], chunk }) {
  const started = performance.now();
  const xs = linspace32(x0, x1, width), ys = linspace32(y0, y1, height);
  const z = new ort.Tensor("float32", latent(seed), [1, styleDim]);
  const truncation = new ort.Tensor("float32", Float32Array.of(psi), [1]);
  const count = (r1 - r0) * width, rgba = new Uint8ClampedArray(4 * count);
  for (let done = 0; done < count; done += chunk) {
    if (stop) return { type: "cancelled", id };
    const n = Math.min(chunk, count - done);
    const coords = new ort.Tensor("float32", gridPoints(xs, ys, r0 * width + done, n), [1, n, 2]);
    const { rgb } = await session.run({ z, coords, truncation });
    toRGBA(rgb.data, rgba, done);
    rgb.dispose();
  }
  return { type: "done", id, rgba, ms: performance.now() - started };
}

self.onmessage = ({ data }) => {
  if (data.type === "cancel") {
    if (running === data.id) stop = true;
    return;
  }
  work = work.then(async () => {
    running = data.id ?? null;
    stop = false;
    try {
      const reply = data.type === "open" ? await open(data) : await render(data);
      self.postMessage(reply, reply.rgba ? [reply.rgba.buffer] : []);
    } catch (e) {
      self.postMessage({ type: "error", id: data.id, message: String(e.message || e) });
    } finally {
      running = null;
    }
  });
};
