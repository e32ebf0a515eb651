// A live slider view: decodes the tab's latent in the browser while its sliders move, with no request to
// the server per frame (explorer/ui_decode.py). Runs as the js_on_load of a gr.HTML; Gradio provides
// `element`, `props`, `trigger` and `watch`.
//   props.value       the recipe: {kind, model, ...} (see ui_decode.recipe), or {model: null, note}
//   props.slider_ids  elem_ids of the sliders this view follows, in the recipe's order
//   props.image_id    elem_id of the server's picture, shown instead of the canvas in server mode
//   props.image_px    the least side of a drawn image (figures.IMAGE_PX): whole nearest-neighbour factor
//   props.module_url, props.runtime_url   latent_decoder.js and the vendored onnxruntime-web folder
// Modes (element.dataset.mode): 'starting', 'browser' (canvas) or 'server' (every slider move sends
// `trigger('server_frame')`, which runs the tab's public endpoint). Why the page as a whole cannot decode
// (no WebAssembly, no runtime) is said once per page, above the tabs; a view says only what is its own
// (this run has no decoder, the decoder failed). For tests and the benchmark:
// element.dataset.frames counts drawn frames, .ms is the last one's time, .first the first one's moment.
const canvas = element.querySelector('.vae-live-canvas');
const noteDiv = element.querySelector('.vae-live-note');
const hideImage = document.createElement('style');   // hides the server's picture in browser mode
document.head.appendChild(hideImage);
let lib = null;          // latent_decoder.js, or null while it loads or when it cannot
let broken = '';         // why this page cannot decode at all (no WebAssembly, the runtime failed)
let decoder = null;      // the current recipe's LatentDecoder
let recipe = null;
let recipeJson = '';     // the recipe being decoded, to skip a resend of the same one
let wanted = 0;          // performance.now() of the oldest slider move not drawn yet, 0 when none
let busy = false;
let frames = 0;

// The page-wide reason, once: the first view to find it puts it above the tabs (or, without them, in itself).
function pageNote(note) {
  if (document.getElementById('vae-live-page-note')) return '';
  const tabs = document.getElementById('tabs');
  if (!tabs) return note;
  const div = Object.assign(document.createElement('div'), {id: 'vae-live-page-note', className: 'vae-live-note'});
  div.textContent = note;
  div.style.margin = '4px 0';
  tabs.parentElement.insertBefore(div, tabs);
  return '';
}

function setMode(mode, note) {
  element.dataset.mode = mode;
  const browser = mode === 'browser';
  canvas.hidden = !browser;
  hideImage.textContent = browser ? `#${props.image_id} { display: none !important; }` : '';
  noteDiv.textContent = note || '';
}

function sliderValue(i) {
  const range = document.querySelector(`#${props.slider_ids[i]} input[type=range]`);
  return range ? Number(range.value) : 0;
}

// The latent for the sliders' current values: the formulas of explorer/latent_ops.py, in float64 like
// NumPy, rounded to float32 at the end like its `.astype(np.float32)`.
function lerpInto(out, a, b, t) {
  for (let i = 0; i < a.length; i++) out[i] = (1 - t) * a[i] + t * b[i];
}

function slerpInto(out, a, b, t) {
  let dot = 0, na = 0, nb = 0;
  for (let i = 0; i < a.length; i++) { na += a[i] * a[i]; nb += b[i] * b[i]; }
  na = Math.sqrt(na); nb = Math.sqrt(nb);
  for (let i = 0; i < a.length; i++) dot += (a[i] / na) * (b[i] / nb);
  const cos = na && nb ? Math.min(1, Math.max(-1, dot)) : 1;
  // (Anti-)parallel or zero vectors have no unique great circle: slerp falls back to lerp.
  if (1 - Math.abs(cos) < 1e-6) return lerpInto(out, a, b, t);
  const omega = Math.acos(cos);
  const so = Math.sin(omega);
  const w0 = Math.sin((1 - t) * omega) / so, w1 = Math.sin(t * omega) / so;
  for (let i = 0; i < a.length; i++) out[i] = w0 * a[i] + w1 * b[i];
}

function latent(r) {
  if (r.kind === 'interpolate') {
    const z = new Float32Array(r.za.length);
    (r.method === 'linear' ? lerpInto : slerpInto)(z, r.za, r.zb, sliderValue(0));
    return z;
  }
  if (r.kind === 'attribute') {
    const s = sliderValue(0);
    return Float32Array.from(r.z, (x, i) => x + s * r.v[i]);
  }
  const z = Float32Array.from(r.z);   // 'dims': slider i sets dimension dims[i]
  r.dims.forEach((d, i) => { z[d] = sliderValue(i); });
  return z;
}

// Draw the latest slider values; moves that arrive during a decode collapse into one more frame.
async function draw() {
  if (busy) return;
  busy = true;
  try {
    while (wanted && decoder && recipe) {
      const since = wanted, d = decoder;
      wanted = 0;
      const image = await d.decode(latent(recipe));
      if (d !== decoder) continue;   // the recipe changed meanwhile
      // The smallest whole factor that reaches the server's picture size (figures.enlarge): same pixels.
      lib.drawImage(canvas, image, Math.max(1, Math.ceil(props.image_px / Math.max(image.width, image.height))));
      element.dataset.ms = (performance.now() - since).toFixed(2);
      if (!frames) element.dataset.first = performance.now().toFixed(1);   // ms since navigation
      element.dataset.frames = String(++frames);
    }
  } catch (e) {
    setMode('server', `Decoded on the server: the browser decoder failed (${e.message}).`);
    decoder = null;
  } finally {
    busy = false;
  }
}

function onSlide(event) {
  if (!props.slider_ids.some((id) => event.target.closest(`#${id}`))) return;
  if (element.dataset.mode === 'browser') {
    if (!wanted) wanted = performance.now();
    draw();
  } else if (recipe) {
    trigger('server_frame');
  }
}

async function onRecipe() {
  const r = props.value;
  const json = JSON.stringify(r);
  if (decoder && json === recipeJson) {
    // The page's load event resends the initial recipe: keep the decoder, but redraw, since the server may
    // have set the sliders meanwhile (the live dimensions start at the point's values).
    if (!wanted) wanted = performance.now();
    draw();
    return;
  }
  recipe = r && r.model !== undefined ? r : null;
  recipeJson = json;
  decoder = null;
  if (!recipe) return;
  if (!recipe.model || broken || !lib) {
    setMode(lib || broken ? 'server' : 'starting', broken ? '' : recipe.note);
    return;
  }
  try {
    const d = await lib.cachedDecoder(recipe.model);
    if (r !== props.value) return;   // a newer recipe is loading
    decoder = d;
    setMode('browser', '');
    wanted = performance.now();
    draw();
  } catch (e) {
    if (r === props.value) setMode('server', `Decoded on the server: ${e.message}.`);
  }
}

async function start() {
  setMode('starting', '');
  try {
    if (typeof WebAssembly !== 'object') throw new Error('this browser has no WebAssembly');
    const module = await import(new URL(props.module_url, document.baseURI).href);
    await module.loadRuntime(new URL(props.runtime_url, document.baseURI).href);
    lib = module;
  } catch (e) {
    broken = `Decoded on the server: ${e.message}.`;
  }
  if (!lib) setMode('server', pageNote(broken));
  await onRecipe();
}

// Delegated from the document: Gradio may re-render a slider's inputs (a label or visibility update).
// Listening in the bubble phase lets the slider take its new value before this reads it.
document.addEventListener('input', onSlide);
watch('value', onRecipe);
start();
