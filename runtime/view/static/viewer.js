// cips view and cips web: Leaflet over the model's plane. A map coordinate is a point of the paper's
// frame (lat = y', down; lng = x', right), so [-1, 1]^2 is the trained image, shown by zoom 0 in one
// tile. The page reads its settings from api/info (`cips view`: the server renders the tiles) or from
// the file the body's data-info names (`cips web`: renderer "browser", tiles rendered on this machine
// by browser-tiles.mjs).
"use strict";

const $ = (id) => document.getElementById(id);

// Frame point (x', y') -> pixel (128 (x' + 1), 128 (y' + 1)) at zoom 0: tile (0, 0) of zoom 0 is the
// frame, and tile (x, y) of zoom z covers 2 / 2^z frame units from -1 + x 2 / 2^z (the server's scheme).
const FrameCRS = L.extend({}, L.CRS.Simple, { transformation: new L.Transformation(128, 128, 128, 128) });
const FRAME = L.latLngBounds([-1, -1], [1, 1]);

function readHash() {
  const h = new URLSearchParams(location.hash.slice(1));
  const num = (k) => (h.has(k) && isFinite(parseFloat(h.get(k))) ? parseFloat(h.get(k)) : null);
  return {
    seed: num("seed"), psi: num("psi"), x: num("x"), y: num("y"), z: num("z"),
    // browser rendering only: force a backend (wasm, webgpu), workers, threads per worker
    backend: h.get("backend"), workers: num("workers"), threads: num("threads"),
  };
}

async function browserRenderer(info, state) {
  const tiles = await import("./browser-tiles.mjs");
  const vendor = new URL(info.vendor, location.href).href;
  $("renderer").textContent = `loading ${info.model} (${(info.model_bytes / 1e6).toFixed(1)} MB)...`;
  const response = await fetch(info.model_url);
  if (!response.ok) throw new Error(`${info.model_url}: HTTP ${response.status}`);
  const model = await response.arrayBuffer();
  let last = null;
  const show = () => {
    $("renderer").textContent = `rendered here: ${pool.description}` + (last === null ? "" : `, last tile ${last.toFixed(0)} ms`);
  };
  const pool = new tiles.Pool(info, vendor, (ms) => { last = ms; show(); });
  await pool.start(model, state);
  document.body.dataset.backend = pool.backend;
  show();
  return { tiles, pool };
}

async function main() {
  const info = await (await fetch(document.body.dataset.info || "api/info")).json();
  const state = readHash();
  const local = info.renderer === "browser" ? await browserRenderer(info, state) : null;
  $("model").textContent = local ? info.model : `${info.model}, ${info.provider.replace("ExecutionProvider", "")}`;
  $("psi").min = info.psi_range[0];
  $("psi").max = info.psi_range[1];

  const map = L.map("map", {
    crs: FrameCRS, minZoom: info.min_zoom, maxZoom: info.max_zoom, zoomControl: false,
    attributionControl: false, zoomSnap: 1,
  });
  L.control.zoom({ position: "bottomright" }).addTo(map);
  const outline = L.rectangle(FRAME, { color: "#3388ff", weight: 1.5, dashArray: "6 4", fill: false, interactive: false });

  // a rendered pyramid (cips view --zarr): its tiles are read, so seed and truncation do not apply
  const pyramid = info.pyramid;
  const HOME = pyramid ? L.latLngBounds([pyramid.region[1], pyramid.region[0]], [pyramid.region[3], pyramid.region[2]])
    : FRAME;
  if (pyramid) {
    document.body.dataset.source = "pyramid";
    for (const id of ["seed", "psi"]) $(id).closest("label").hidden = true;
  }
  // seeds beyond 2^53 exist on the server but not as exact JavaScript numbers
  const seed = () => Math.min(Number.MAX_SAFE_INTEGER, Math.max(0, Math.floor(Number($("seed").value) || 0)));
  const psi = () => Number($("psi").value);
  if (state.seed !== null) $("seed").value = state.seed;
  $("seed").value = seed();  // normalised: an integer from 0
  if (state.psi !== null) $("psi").value = state.psi;
  $("psi-value").textContent = psi();

  const tileUrl = () => `tiles/${seed()}/{z}/{x}/{y}.png?psi=${psi()}&m=${info.model_id}`;
  const options = {  // the layer's own zoom range too: Leaflet's default (0 to 18) would leave the rest blank
    tileSize: info.tile_size, noWrap: true, keepBuffer: 1, updateWhenZooming: false,
    minZoom: info.min_zoom, maxZoom: info.max_zoom, minNativeZoom: info.min_zoom, maxNativeZoom: info.max_zoom,
  };
  const layer = local ? local.tiles.browserLayer(local.pool, () => ({ seed: seed(), psi: psi() }), options)
    : L.tileLayer(tileUrl(), options);
  // Leaflet cancels the request of a tile that leaves the view (it resets the image's src), and
  // the server then drops it unrendered; browser-rendered tiles are cancelled in their pool. These
  // flags let tests and people see the loading state.
  let failed = 0;
  layer.on("loading", () => { document.body.dataset.tiles = "loading"; failed = 0; showStatus(); });
  layer.on("load", () => { document.body.dataset.tiles = "loaded"; showStatus(); });
  layer.on("tileerror", () => { failed += 1; showStatus(); });
  layer.addTo(map);
  outline.addTo(map);

  if (state.x !== null && state.y !== null && state.z !== null) {
    map.setView([state.y, state.x], state.z);
  } else {
    map.fitBounds(HOME);
  }

  function showStatus(message) {
    const c = map.getCenter(), z = map.getZoom();
    // a pixel is 2^-(7 + z) frame units: enough decimals to tell neighbouring pixels apart
    const f = (v) => v.toFixed(Math.max(2, Math.min(12, Math.ceil((z + 7) * 0.302))));
    const scale = (info.tile_size * 2 ** z) / info.train_size;  // screen pixels per trained pixel
    const size = pyramid ? `pyramid's ${pyramid.width} x ${pyramid.height}` : `trained ${info.train_size}`;
    const text = message || `zoom ${z} (${scale >= 1 ? scale : scale.toPrecision(2)}x the ${size} ` +
      `px), centre (${f(c.lng)}, ${f(c.lat)})` +
      (document.body.dataset.tiles === "loading" ? ", rendering..." : "") +
      (failed ? `, ${failed} tiles failed` : "");
    $("status").textContent = text;
    $("status").className = message && message.startsWith("error") ? "error" : "";
  }

  function saveHash() {
    const c = map.getCenter();
    const kept = ["backend", "workers", "threads"].filter((k) => state[k] !== null).map((k) => `&${k}=${state[k]}`);
    const h = `seed=${seed()}&psi=${psi()}&x=${c.lng}&y=${c.lat}&z=${map.getZoom()}${kept.join("")}`;  // every digit: deep zooms
    history.replaceState(null, "", "#" + h);
    showStatus();
  }

  function redraw() {
    $("seed").value = seed();
    if (local) layer.redraw(); else layer.setUrl(tileUrl());
    saveHash();
  }

  map.on("moveend", saveHash);
  $("seed").addEventListener("change", redraw);
  $("prev").addEventListener("click", () => { $("seed").value = Math.max(0, seed() - 1); redraw(); });
  $("next").addEventListener("click", () => { $("seed").value = seed() + 1; redraw(); });
  $("random").addEventListener("click", () => { $("seed").value = Math.floor(Math.random() * 1e6); redraw(); });
  $("psi").addEventListener("input", () => { $("psi-value").textContent = psi(); });
  $("psi").addEventListener("change", redraw);
  $("outline").addEventListener("change", () => (
    $("outline").checked ? outline.addTo(map) : outline.remove()));
  $("home").addEventListener("click", () => map.fitBounds(HOME));
  const render = local ? (q) => renderHere(local, info, q) : renderOnServer;
  $("save").addEventListener("click", () => saveView(map, seed(), psi(), render, showStatus));

  window.cipsView = { map, layer, pool: local && local.pool };  // for the browser tests and the console
  saveHash();
}

async function renderOnServer(q) {
  const r = await fetch(`api/view.png?${new URLSearchParams(q)}`);
  if (!r.ok) throw new Error(await r.text());
  return { blob: await r.blob(), command: r.headers.get("X-Cips-Command") || "" };
}

async function renderHere({ tiles, pool }, info, q) {
  if (Math.max(q.width, q.height) > info.max_save_side) {  // the limit the server has too
    throw new Error(`a saved view is at most ${info.max_save_side} pixels a side, not ${q.width} x ${q.height}`);
  }
  const { blob, region } = await tiles.renderView(pool, q.seed, q.psi, [q.x0, q.y0, q.x1, q.y1], q.width, q.height);
  // String(number) is the shortest text that reads back as the same double, as Python's repr is
  const command = `cips render --model ${info.model} --seed ${q.seed} --truncation ${q.psi} ` +
    `--region ${region.join(" ")} --width ${q.width} --height ${q.height}`;
  return { blob, command };
}

async function saveView(map, seed, psi, render, showStatus) {
  // The saved image spans exactly what the map shows; its pixels are cell centres, like the tiles'.
  const b = map.getBounds(), size = map.getSize(), choice = Number($("save-size").value);
  const width = choice <= 4 ? Math.round(size.x * choice) : choice;
  const height = Math.max(1, Math.round(width * size.y / size.x));
  const q = { seed, psi, x0: b.getWest(), y0: b.getSouth(), x1: b.getEast(), y1: b.getNorth(), width, height };
  showStatus(`rendering ${width} x ${height}...`);
  $("save").disabled = true;
  try {
    const { blob, command } = await render(q);
    const url = URL.createObjectURL(blob);
    const a = document.createElement("a");
    a.href = url;
    a.download = `cips-seed${seed}-view-${width}x${height}.png`;
    a.click();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
    $("command").textContent = command;
    showStatus(`saved ${a.download}`);
  } catch (e) {
    showStatus(`error: ${e.message}`);
  } finally {
    $("save").disabled = false;
  }
}

main().catch((e) => { $("status").textContent = `error: ${e.message}`; $("status").className = "error"; });
