// The static explorer page (written by `python -m explorer site`): a latent map on a 2-D canvas and tools that
// decode latents in this browser with the run's decoder.onnx (latent_decoder.js, onnxruntime-web WASM). No
// framework, no server code: every file comes from the same folder. The run folder layout is in explorer/site.py.
import {loadRuntime, LatentDecoder, drawImage} from './latent_decoder.js';

const RUNTIME = 'vendor/onnxruntime-web/';
const VIEW_PX = 160;        // decoded images get the largest integer upscaling that stays within this size
const SAMPLE_PX = 96;
const HOVER_PX = 96;
const N_SAMPLES = 8;
const SLIDER_RANGE = 4;     // per-dimension sliders span ±4, as in the app
const PARALLEL_EPS = 1e-6;  // below this cosine distance slerp falls back to lerp (explorer/latent_ops.py)
const PALETTE = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f',
                 '#bcbd22', '#17becf'];
const RAMP = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];   // viridis stops

const $ = (id) => document.getElementById(id);
const loaded = new Map();   // run folder -> promise of the loaded run (kept: switching back is instant)
let run = null;             // the run on screen
let switching = 0;          // bumps on every run switch: a slower earlier load never overwrites a later one
const pick = {a: 0, b: 1};  // rows of A and B in the run's table
const map = {x: null, y: null, colours: null};
let dimsZ = null;           // the latent the per-dimension sliders edit
let samplesSeed = 1;

// The page's state, for tests and the console.
window.site = {get run() { return run; }, pick, map};

// ---- errors and status ----------------------------------------------------------------------------------
function status(text, isError = false) {
  $('status').textContent = text;
  $('status').classList.toggle('error', isError);
}

function fail(error) {
  const message = String(error && error.message !== undefined ? error.message : error);
  status(message, true);
  console.error(message);
}

// ---- loading ------------------------------------------------------------------------------------------
async function fetchOk(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`cannot fetch ${url}: HTTP ${response.status}`);
  return response;
}

async function floats(url, rows, cols) {
  const buffer = await (await fetchOk(url)).arrayBuffer();
  if (buffer.byteLength !== rows * cols * 4) {
    throw new Error(`${url} holds ${buffer.byteLength} bytes, not ${rows}×${cols} float32`);
  }
  // The files are little-endian, and so is a Float32Array on every platform browsers run on.
  return new Float32Array(buffer);
}

function loadImage(url) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error(`cannot load ${url}`));
    img.src = url;
  });
}

function loadRun(entry) {
  if (!loaded.has(entry.folder)) {
    const base = entry.folder;
    const promise = (async () => {
      const info = await (await fetchOk(base + 'index.json')).json();
      const {n_points: n, latent_dim: d, files} = info;
      const [mu, xy, values, sheet, decoder] = await Promise.all([
        floats(base + files.mu, n, d), floats(base + files.xy, n, 2),
        floats(base + files.labels, n, info.labels.names.length),
        files.thumbs ? loadImage(base + files.thumbs) : null,
        loadRuntime(RUNTIME).then(() => LatentDecoder.load(base + files.decoder))]);
      // values: the labels (N, K); sheet: the thumbnails' sprite sheet, laid out as `sprite` says
      return {...info, folder: base, mu, xy, values, sheet, decoder};
    })();
    loaded.set(entry.folder, promise);
    promise.catch(() => loaded.delete(entry.folder));   // a later attempt may succeed
  }
  return loaded.get(entry.folder);
}

const latent = (i) => run.mu.slice(i * run.latent_dim, (i + 1) * run.latent_dim);

// ---- decoded views ----------------------------------------------------------------------------------------
// A canvas showing a decoded latent. While a decode runs, a newer request replaces any waiting one, so a
// dragged slider never queues stale frames: the latest latent is decoded next. `canvas.dataset.key` names
// the request drawn last (the tests wait on it).
class View {
  constructor(canvas, px = VIEW_PX) {
    this.canvas = canvas;
    this.px = px;
    this.next = null;
    this.busy = false;
  }

  show(z, key) {
    this.next = {r: run, z, key};
    if (!this.busy) this.pump();
  }

  async pump() {
    this.busy = true;
    while (this.next) {
      const {r, z, key} = this.next;
      this.next = null;
      try {
        const image = await r.decoder.decode(z);
        if (r !== run) continue;   // the run changed while this decoded
        drawImage(this.canvas, image, Math.max(1, Math.floor(this.px / image.width)));
        this.canvas.dataset.key = key;
      } catch (e) {
        fail(e);
      }
    }
    this.busy = false;
  }
}

const views = {a: new View($('img-a')), b: new View($('img-b')), t: new View($('interp')),
               attr: new View($('attr-out')), dims: new View($('dims-out')), samples: []};

// ---- latent math (mirrors explorer/latent_ops.py; float64 arithmetic, float32 result) ------------------------
function lerp(a, b, t) {
  const out = new Float32Array(a.length);
  for (let i = 0; i < a.length; i++) out[i] = (1 - t) * a[i] + t * b[i];
  return out;
}

// Spherical interpolation: near-parallel or zero vectors have no unique great circle, so they fall back to lerp.
function slerp(a, b, t) {
  let dot = 0, na = 0, nb = 0;
  for (let i = 0; i < a.length; i++) { dot += a[i] * b[i]; na += a[i] * a[i]; nb += b[i] * b[i]; }
  na = Math.sqrt(na); nb = Math.sqrt(nb);
  const cos = na && nb ? Math.min(1, Math.max(-1, dot / (na * nb))) : 1;
  if (1 - Math.abs(cos) < PARALLEL_EPS) return lerp(a, b, t);
  const omega = Math.acos(cos), so = Math.sin(omega);
  const w0 = Math.sin((1 - t) * omega) / so, w1 = Math.sin(t * omega) / so;
  const out = new Float32Array(a.length);
  for (let i = 0; i < a.length; i++) out[i] = w0 * a[i] + w1 * b[i];
  return out;
}

// A seeded N(0, 1) stream (mulberry32 + Box-Muller): the same button press gives the same samples.
function gaussians(seed, n) {
  let s = seed >>> 0;
  const uniform = () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let x = Math.imul(s ^ (s >>> 15), 1 | s);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return (((x ^ (x >>> 14)) >>> 0) + 1) / 4294967297;   // in (0, 1): the log below stays finite
  };
  const out = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    const r = Math.sqrt(-2 * Math.log(uniform())), phi = 2 * Math.PI * uniform();
    out[i] = r * Math.cos(phi);
    if (i + 1 < n) out[i + 1] = r * Math.sin(phi);
  }
  return out;
}

// ---- the map ----------------------------------------------------------------------------------------------
function layoutMap() {
  const canvas = $('map'), pad = 14, n = run.n_points;
  let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
  for (let i = 0; i < n; i++) {
    const x = run.xy[2 * i], y = run.xy[2 * i + 1];
    x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y);
  }
  // One scale for both axes (distances on a UMAP are not meant to be stretched), centred, y pointing up.
  const s = Math.min((canvas.width - 2 * pad) / (x1 - x0 || 1), (canvas.height - 2 * pad) / (y1 - y0 || 1));
  const cx = (x0 + x1) / 2, cy = (y0 + y1) / 2;
  map.x = new Float32Array(n);
  map.y = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    map.x[i] = canvas.width / 2 + (run.xy[2 * i] - cx) * s;
    map.y[i] = canvas.height / 2 - (run.xy[2 * i + 1] - cy) * s;
  }
}

function rampColour(u) {
  const f = Math.min(1, Math.max(0, u)) * (RAMP.length - 1), k = Math.min(RAMP.length - 2, Math.floor(f));
  const c = RAMP[k].map((v, j) => Math.round(v + (RAMP[k + 1][j] - v) * (f - k)));
  return `rgb(${c.join(',')})`;
}

const shown = (v) => (Number.isInteger(v) ? String(v) : v.toPrecision(3));

// Colours of the points for label j (or one colour for -1), and the legend that explains them.
function colourBy(j) {
  const n = run.n_points, k = run.labels.names.length, legend = $('legend');
  legend.replaceChildren();
  map.colours = new Array(n).fill('#4a6fa5');
  if (j < 0) return;
  const values = Array.from({length: n}, (_, i) => run.values[i * k + j]);
  const distinct = [...new Set(values)].sort((p, q) => p - q);
  const swatch = (colour, text) => {
    const item = document.createElement('span');
    const box = document.createElement('i');
    box.style.background = colour;
    item.append(box, text);
    legend.append(item);
  };
  if (run.labels.kinds[j] !== 'continuous' && distinct.length <= 24) {
    const colourOf = new Map(distinct.map((v, r) => [v, PALETTE[r % PALETTE.length]]));
    for (let i = 0; i < n; i++) map.colours[i] = colourOf.get(values[i]);
    for (const v of distinct) swatch(colourOf.get(v), shown(v));
  } else {
    const lo = distinct[0], hi = distinct[distinct.length - 1];
    for (let i = 0; i < n; i++) map.colours[i] = rampColour((values[i] - lo) / (hi - lo || 1));
    swatch(rampColour(0), shown(lo));
    swatch(rampColour(1), shown(hi));
  }
}

function drawMap() {
  const canvas = $('map'), ctx = canvas.getContext('2d');
  ctx.fillStyle = '#fff';
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  for (let i = 0; i < run.n_points; i++) {
    ctx.fillStyle = map.colours[i];
    ctx.fillRect(map.x[i] - 1.5, map.y[i] - 1.5, 3, 3);
  }
  for (const [name, i] of [['A', pick.a], ['B', pick.b]]) {
    ctx.beginPath();
    ctx.arc(map.x[i], map.y[i], 7, 0, 2 * Math.PI);
    ctx.lineWidth = 2.5;
    ctx.strokeStyle = '#000';
    ctx.stroke();
    ctx.font = 'bold 13px sans-serif';
    ctx.fillStyle = '#000';
    ctx.fillText(name, map.x[i] + 9, map.y[i] - 7);
  }
}

// The point nearest to (x, y) in canvas pixels, or -1 when none is within `radius`.
function nearest(x, y, radius = 8) {
  let best = -1, bestD = radius * radius;
  for (let i = 0; i < run.n_points; i++) {
    const d = (map.x[i] - x) ** 2 + (map.y[i] - y) ** 2;
    if (d <= bestD) { best = i; bestD = d; }
  }
  return best;
}

function canvasPoint(event) {
  const canvas = $('map'), box = canvas.getBoundingClientRect();
  return [(event.clientX - box.left) * canvas.width / box.width, (event.clientY - box.top) * canvas.height / box.height];
}

function showHover(event) {
  const hover = $('hover');
  const i = run && run.sheet ? nearest(...canvasPoint(event)) : -1;
  if (i < 0) { hover.hidden = true; return; }
  const {cols, width, height} = run.sprite;
  const scale = Math.max(1, Math.floor(HOVER_PX / width));
  hover.width = width * scale;
  hover.height = height * scale;
  const ctx = hover.getContext('2d');
  ctx.imageSmoothingEnabled = false;   // crisp pixels, as the decoded images
  ctx.drawImage(run.sheet, (i % cols) * width, Math.floor(i / cols) * height, width, height,
                0, 0, hover.width, hover.height);
  const [x, y] = canvasPoint(event);
  hover.style.left = `${Math.min(x + 12, $('map').width - hover.width)}px`;
  hover.style.top = `${Math.max(0, y - hover.height - 12)}px`;
  hover.title = `point ${i}`;
  hover.hidden = false;
}

function pickPoint(event) {
  const i = run ? nearest(...canvasPoint(event)) : -1;
  if (i < 0) return;
  if (event.shiftKey) pick.b = i; else pick.a = i;
  drawMap();
  updatePicks();
}

// ---- the tools ----------------------------------------------------------------------------------------
function describe(i) {
  const names = run.labels.names, k = names.length;
  const parts = names.map((name, j) => `${name} ${shown(run.values[i * k + j])}`);
  return `point ${i}` + (parts.length ? ` (${parts.join(', ')})` : '');
}

function updatePicks() {
  views.a.show(latent(pick.a), `${run.folder}|${pick.a}`);
  views.b.show(latent(pick.b), `${run.folder}|${pick.b}`);
  $('cap-a').textContent = `A: ${describe(pick.a)}`;
  $('cap-b').textContent = `B: ${describe(pick.b)}`;
  updateInterpolation();
  updateAttribute();
  resetDims();
}

function updateInterpolation() {
  const t = $('t').value, method = document.querySelector('input[name=method]:checked').value;
  const z = (method === 'slerp' ? slerp : lerp)(latent(pick.a), latent(pick.b), parseFloat(t));
  $('cap-t').textContent = `${method} t = ${Number(t).toFixed(2)}`;
  views.t.show(z, `${run.folder}|${pick.a}|${pick.b}|${method}|${t}`);
}

function updateAttribute() {
  const name = $('attr').value, entry = run.attributes[name];
  if (!entry) return;
  $('corrected').disabled = !entry.corrected;
  const part = $('corrected').checked && entry.corrected ? entry.corrected : entry;
  const strength = parseFloat($('strength').value), za = latent(pick.a), v = part.vector;
  const z = new Float32Array(za.length);
  for (let i = 0; i < za.length; i++) z[i] = za[i] + strength * v[i];
  $('strength-value').textContent = strength.toFixed(2);
  const auc = typeof part.auc === 'number' ? `, AUC ${part.auc.toFixed(2)}` : '';
  const balance = part === entry.corrected ? `, balanced against ${part.confounder ?? 'nothing'}` : '';
  $('cap-attr').textContent = `A ${strength < 0 ? '−' : '+'} ${Math.abs(strength).toFixed(2)} · ${name}${auc}${balance}`;
  views.attr.show(z, `${run.folder}|${pick.a}|${name}|${part === entry ? 'plain' : 'corrected'}|${$('strength').value}`);
}

function resetDims() {
  dimsZ = latent(pick.a);
  for (const slider of $('dims').querySelectorAll('input')) {
    slider.value = dimsZ[Number(slider.dataset.dim)];
    slider.nextElementSibling.textContent = Number(slider.value).toFixed(2);
  }
  if (run.live_dims.length) views.dims.show(dimsZ, `${run.folder}|${pick.a}|reset`);
}

function setupDims() {
  const box = $('dims');
  box.replaceChildren();
  const kl = run.kl_per_dim, informative = kl && kl.some((v) => v > 0);
  $('dims-panel').hidden = false;
  if (!run.live_dims.length) {
    $('dims-note').textContent = 'A VQ-VAE latent is a grid of code vectors: no per-dimension sliders.';
    $('dims-out').hidden = $('dims-reset').hidden = true;
    return;
  }
  $('dims-out').hidden = $('dims-reset').hidden = false;
  $('dims-note').textContent = informative ? 'Largest mean KL(q(z|x) ‖ N(0, 1)) first.'
                                           : 'No KL per dimension for this model: dimensions in their order.';
  for (const d of run.live_dims) {
    const label = document.createElement('label');
    const slider = Object.assign(document.createElement('input'),
                                 {type: 'range', min: -SLIDER_RANGE, max: SLIDER_RANGE, step: 0.05});
    slider.dataset.dim = d;
    const value = document.createElement('output');
    label.append(`dim ${d}` + (informative ? ` (KL ${kl[d].toFixed(2)})` : ''), slider, value);
    slider.addEventListener('input', () => {
      dimsZ[d] = parseFloat(slider.value);
      value.textContent = dimsZ[d].toFixed(2);
      views.dims.show(Float32Array.from(dimsZ), `${run.folder}|${pick.a}|${d}|${slider.value}`);
    });
    box.append(label);
  }
}

function setupAttributes() {
  const names = Object.keys(run.attributes);
  $('attr').replaceChildren(...names.map((name) => new Option(name, name)));
  $('attr-note').textContent = names.length ? '' : 'No attribute vectors for this run (attributes.json).';
  $('attr-out').hidden = !names.length;
  for (const el of $('attr-panel').querySelectorAll('.controls')) el.hidden = !names.length;
}

function setupSamples() {
  const offered = run.samples !== null;
  $('sample').disabled = !offered;
  $('samples-note').textContent = run.samples === 'ae'
    ? 'An autoencoder has no prior: N(0, I) draws land where it was never trained. Expect poor samples.'
    : offered ? 'z ~ N(0, I), decoded here.' : `Samples: ${run.samples_note}.`;
  $('samples-note').classList.toggle('warn', run.samples === 'ae');
  $('samples').replaceChildren();
  views.samples = [];
}

function drawSamples() {
  if (!views.samples.length) {
    for (let i = 0; i < N_SAMPLES; i++) {
      const canvas = Object.assign(document.createElement('canvas'), {className: 'pixelated'});
      $('samples').append(canvas);
      views.samples.push(new View(canvas, SAMPLE_PX));
    }
  }
  const seed = samplesSeed++;
  views.samples.forEach((view, i) => view.show(gaussians(seed * 1000 + i, run.latent_dim), `${run.folder}|${seed}|${i}`));
}

function setupCard() {
  $('card').replaceChildren(...run.card.map(([label, value]) => {
    const row = document.createElement('tr');
    for (const text of [label, value]) row.append(Object.assign(document.createElement('td'), {textContent: text}));
    return row;
  }));
  const capped = run.n_points < run.n_exported;
  $('points-note').textContent = `${run.n_points.toLocaleString('en')} points` +
    (capped ? ` (the first of ${run.n_exported.toLocaleString('en')} exported: a static page carries a limited number)` : '');
}

// ---- switching runs -----------------------------------------------------------------------------------------
async function switchRun(entry) {
  const token = ++switching;
  status(`loading ${entry.name}…`);
  try {
    const r = await loadRun(entry);
    if (token !== switching) return;
    run = r;
    pick.a = 0;
    pick.b = Math.min(1, r.n_points - 1);
    const names = r.labels.names;
    $('color-by').replaceChildren(new Option('(none)', '-1'), ...names.map((name, j) => new Option(name, j)));
    $('color-by').value = names.length ? '0' : '-1';
    layoutMap();
    colourBy(Number($('color-by').value));
    drawMap();
    setupCard();
    setupAttributes();
    setupDims();
    setupSamples();
    updatePicks();
    document.body.dataset.run = r.folder;
    status(`${r.name}: decoding in this browser`);
  } catch (e) {
    if (token === switching) fail(e);
  }
}

async function start() {
  const listing = await (await fetchOk('runs.json')).json();
  document.title = $('title').textContent = listing.title;
  $('run').replaceChildren(...listing.runs.map((entry, i) => new Option(entry.name, String(i))));
  $('run').addEventListener('change', () => switchRun(listing.runs[Number($('run').value)]));
  $('color-by').addEventListener('change', () => { colourBy(Number($('color-by').value)); drawMap(); });
  $('map').addEventListener('mousemove', showHover);
  $('map').addEventListener('mouseleave', () => { $('hover').hidden = true; });
  $('map').addEventListener('click', pickPoint);
  $('t').addEventListener('input', updateInterpolation);
  for (const radio of document.querySelectorAll('input[name=method]')) radio.addEventListener('change', updateInterpolation);
  for (const id of ['attr', 'corrected']) $(id).addEventListener('change', updateAttribute);
  $('strength').addEventListener('input', updateAttribute);
  $('dims-reset').addEventListener('click', resetDims);
  $('sample').addEventListener('click', drawSamples);
  if (listing.runs.length) await switchRun(listing.runs[0]);
}

start().catch(fail);
