// The latent map: the run's exported 2-D UMAP drawn with plotly.js (WebGL scatter) inside a gr.HTML
// component. gr.Plot delivers no clicks in Gradio 6, so this draws the plot itself and sends clicks and
// box/lasso selections back to Python as custom events:
//   trigger('point_click',  {row})    row = index into the run's latent table (latents.npz)
//   trigger('point_select', {rows})   rows of a box/lasso selection (empty list = selection cleared)
//
// Runs as the component's `js_on_load`; Gradio provides `element`, `props`, `trigger` and `watch`.
//   props.value   = explorer.figures.map_payload(...): {run, x, y, index, dataset_index, color_kind, color,
//                   legend, color_range, color_by}, or {message} when the run has no map. The per-point
//                   arrays arrive packed (explorer.ui_map.packed: base64, their types under `packed`).
//   props.overlay = {marks: [{x, y, label, color, symbol}], path: [[x, y], ...], selected: {x, y}}: drawn on top
//                   (clicked point, interpolation ends and path, your image, a selection).
//   props.value.sprite = {url, cols, n}: the run's thumbnails as one sprite sheet (point i at row i // cols,
//                   column i % cols). Hovering a point draws its thumbnail from it: no request per hover.
const plotDiv = element.querySelector('.vae-map-plot');
const messageDiv = element.querySelector('.vae-map-message');
const preview = element.querySelector('.vae-map-preview');
let sheet = null;         // {url, cols, n, img, ready} of the shown run
// The clicked point's mark, drawn here at once: the click's answer carries only the point's pictures, and
// the next overlay from the server (which knows the clicked point) replaces it.
let clickedMark = null;
let handlersBound = false;
let cachedValue = null;   // the props.value the point traces below were built from
let cachedTraces = [];    // reused while only the overlay changes, so plotly does not rebuild the GL buffers
let plotlyWaits = 0;

function showMessage(text) {
  messageDiv.textContent = text || '';
  messageDiv.style.display = text ? 'flex' : 'none';
  plotDiv.style.visibility = text ? 'hidden' : 'visible';
}

function hoverTexts(v, labelOf) {
  const n = v.x.length;
  const out = new Array(n);
  const ds = v.dataset_index || null;
  const rows = v.index || null;
  for (let i = 0; i < n; i++) {
    const row = rows ? rows[i] : i;
    let t = 'point ' + row + (ds ? ' · image ' + ds[i] : '');
    if (labelOf) t += '<br>' + labelOf(i);
    out[i] = t;
  }
  return out;
}

// A packed value with its arrays as typed arrays (unpacked once per value: the value object is kept).
let unpackedFrom = null, unpackedValue = null;
function unpack(v) {
  if (!v || !v.packed) return v;
  if (v === unpackedFrom) return unpackedValue;
  const out = Object.assign({}, v);
  for (const [key, type] of Object.entries(v.packed)) {
    const text = atob(v[key]);
    const bytes = new Uint8Array(text.length);
    for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
    out[key] = type === 'int32' ? new Int32Array(bytes.buffer) : new Float32Array(bytes.buffer);
  }
  unpackedFrom = v;
  unpackedValue = out;
  return out;
}

function pointTraces(v) {
  const n = v.x.length;
  const rows = v.index ? Array.from(v.index) : Array.from({length: n}, (_, i) => i);
  const size = n > 20000 ? 3 : n > 4000 ? 4 : 6;
  const base = {type: 'scattergl', mode: 'markers', hoverinfo: 'text', hoverlabel: {namelength: 0}};
  const colourName = v.color_by && v.color_by !== 'none' ? v.color_by : '';
  if (v.color_kind === 'continuous' && v.color) {
    const text = hoverTexts(v, (i) => colourName + ' = ' + Number(v.color[i]).toPrecision(3));
    return [Object.assign({}, base, {
      x: v.x, y: v.y, customdata: rows, text: text, name: colourName, showlegend: false,
      marker: {size: size, color: v.color, colorscale: 'Viridis', opacity: 0.85,
               cmin: v.color_range ? v.color_range[0] : undefined,
               cmax: v.color_range ? v.color_range[1] : undefined,
               colorbar: {title: {text: colourName, side: 'right'}, thickness: 12, len: 0.75, x: 1.0}},
    })];
  }
  if ((v.color_kind === 'categorical' || v.color_kind === 'binary') && v.color && v.legend) {
    // One trace per class: the legend names the classes and clicking a legend entry hides that class.
    const traces = v.legend.map((entry) => ({x: [], y: [], rows: [], text: [], entry: entry}));
    const byCode = new Map(v.legend.map((entry, k) => [entry.code, k]));
    const text = hoverTexts(v, (i) => {
      const k = byCode.get(v.color[i]);
      return colourName + ' = ' + (k === undefined ? v.color[i] : v.legend[k].label);
    });
    for (let i = 0; i < n; i++) {
      const k = byCode.get(v.color[i]);
      if (k === undefined) continue;
      const t = traces[k];
      t.x.push(v.x[i]); t.y.push(v.y[i]); t.rows.push(rows[i]); t.text.push(text[i]);
    }
    return traces.map((t) => Object.assign({}, base, {
      x: t.x, y: t.y, customdata: t.rows, text: t.text,
      name: colourName + ' ' + t.entry.label + ' (' + t.entry.count + ')',
      marker: {size: size, color: t.entry.color, opacity: 0.85}, showlegend: true,
    }));
  }
  return [Object.assign({}, base, {
    x: v.x, y: v.y, customdata: rows, text: hoverTexts(v, null), name: 'points', showlegend: false,
    marker: {size: size, color: '#4e79a7', opacity: 0.75},
  })];
}

// The page's text colour: dark on the light theme, light on the dark one (projectors, dark-mode laptops).
function ink() {
  return getComputedStyle(element).color || '#111';
}

function overlayTraces(o) {
  const traces = [];
  if (!o) return traces;
  const colour = ink();
  // Overlays keep full colour while a box/lasso selection dims the points.
  const keep = {marker: {opacity: 1}};
  const num = (a) => (a || []).map(Number);
  if (o.selected && o.selected.x && o.selected.x.length) {
    traces.push({type: 'scattergl', mode: 'markers', x: num(o.selected.x), y: num(o.selected.y),
                 hoverinfo: 'skip', showlegend: false, name: 'selected', unselected: keep,
                 marker: {size: 10, color: 'rgba(0,0,0,0)', line: {color: colour, width: 1.5}}});
  }
  if (o.path && o.path.length) {
    traces.push({type: 'scattergl', mode: 'lines+markers', x: o.path.map((p) => Number(p[0])),
                 y: o.path.map((p) => Number(p[1])), hoverinfo: 'skip', showlegend: false, name: 'path',
                 line: {color: colour, width: 2}, marker: {size: 5, color: colour}, unselected: keep});
  }
  let marks = o.marks || [];
  if (clickedMark) {
    marks = marks.filter((m) => m.name !== 'point').concat([Object.assign(
      {name: 'point', label: '', color: '#111111', symbol: 'circle-open', textposition: 'top center'}, clickedMark)]);
  }
  for (const m of marks) {
    const c = m.color === '#111111' ? colour : (m.color || colour);
    traces.push({type: 'scattergl', mode: 'markers+text', x: [Number(m.x)], y: [Number(m.y)], text: [m.label],
                 textposition: m.textposition || 'top center', textfont: {size: 16, color: c},
                 hoverinfo: 'skip', showlegend: false, name: 'mark ' + (m.name || m.label),
                 marker: {size: 16, color: c, symbol: m.symbol || 'circle', line: {color: 'white', width: 2}},
                 unselected: {marker: {opacity: 1}, textfont: {color: c}}});
  }
  return traces;
}

// The sheet is written in the background when a run is first shown: until it is there, its URL answers
// 404 and is asked again a little later.
function loadSheet(v) {
  const s = v && v.sprite;
  if (!s || !s.url) { sheet = null; return; }
  if (sheet && sheet.url === s.url) return;
  const entry = {url: s.url, cols: s.cols, n: s.n, img: new Image(), ready: false, tries: 0};
  sheet = entry;
  entry.img.onload = () => { entry.ready = true; };
  entry.img.onerror = () => {
    if (sheet !== entry || entry.tries++ >= 60) return;
    setTimeout(() => { entry.img.src = s.url + '&try=' + entry.tries; }, 1000);
  };
  entry.img.src = s.url;
}

// Hover and click find their point here rather than through plotly's events: plotly throttles hover events
// (tens of ms) and reports a click only after its own hover pass, which together took most of a click's
// time to its pictures.
const PICK_RADIUS_PX = 20;  // plotly's own hover distance
const CLICK_SLOP_PX = 4;    // moved further between button down and up, it is a pan or a selection

// The shown point nearest to a client position, within PICK_RADIUS_PX: {row, x, y} or null. Traces hidden
// from the legend are skipped.
function nearestPoint(clientX, clientY) {
  const fl = plotDiv._fullLayout;
  if (!fl || !fl.xaxis || !plotDiv._fullData) return null;
  const box = plotDiv.getBoundingClientRect();
  const px = clientX - box.left - fl._size.l, py = clientY - box.top - fl._size.t;
  if (px < 0 || py < 0 || px > fl._size.w || py > fl._size.h) return null;
  // Both axes are linear: pixel = origin + scale * value.
  const x0 = fl.xaxis.l2p(0), sx = fl.xaxis.l2p(1) - x0;
  const y0 = fl.yaxis.l2p(0), sy = fl.yaxis.l2p(1) - y0;
  let best = null, bestD2 = PICK_RADIUS_PX * PICK_RADIUS_PX;
  plotDiv._fullData.forEach((full) => {
    const tr = plotDiv.data[full.index];
    if (!tr || !Array.isArray(tr.customdata) || full.visible !== true) return;
    const xs = tr.x, ys = tr.y, rows = tr.customdata;
    for (let i = 0; i < rows.length; i++) {
      const dx = x0 + sx * xs[i] - px, dy = y0 + sy * ys[i] - py;
      const d2 = dx * dx + dy * dy;
      if (d2 < bestD2) { bestD2 = d2; best = {row: rows[i], x: Number(xs[i]), y: Number(ys[i])}; }
    }
  });
  return best;
}

function onLegendOrToolbar(target) {
  return !!(target && target.closest && target.closest('.legend, .modebar'));
}

function showPreview(row, clientX, clientY) {
  const s = sheet;
  if (!s || !s.ready || row < 0 || row >= s.n) { hidePreview(); return; }
  if (preview.dataset.row !== String(row)) {
    const tw = s.img.naturalWidth / s.cols;
    const th = s.img.naturalHeight / Math.ceil(s.n / s.cols);
    const ctx = preview.getContext('2d');
    ctx.imageSmoothingEnabled = false;
    ctx.clearRect(0, 0, preview.width, preview.height);
    ctx.drawImage(s.img, (row % s.cols) * tw, Math.floor(row / s.cols) * th, tw, th,
                  0, 0, preview.width, preview.height);
  }
  // Beside the cursor, on the side away from plotly's own label, kept inside the map.
  const box = preview.parentElement.getBoundingClientRect();
  const x = clientX - box.left, y = clientY - box.top;
  const size = preview.offsetWidth || 96;
  preview.style.left = Math.max(0, x > size + 20 ? x - size - 14 : x + 14) + 'px';
  preview.style.top = Math.max(0, y > size + 20 ? y - size - 14 : y + 14) + 'px';
  preview.style.display = 'block';
  preview.dataset.row = String(row);
}

function hidePreview() {
  preview.style.display = 'none';
  delete preview.dataset.row;
}

function onPointerMove(e) {
  if (e.buttons || onLegendOrToolbar(e.target)) { hidePreview(); return; }  // panning or selecting
  const p = nearestPoint(e.clientX, e.clientY);
  if (p) showPreview(p.row, e.clientX, e.clientY); else hidePreview();
}

let pressed = null;  // where the button went down on the map: {x, y}

function onPointerDown(e) {
  pressed = (e.button === 0 && !onLegendOrToolbar(e.target)) ? {x: e.clientX, y: e.clientY} : null;
}

function onPointerUp(e) {
  const down = pressed;
  pressed = null;
  if (!down || Math.hypot(e.clientX - down.x, e.clientY - down.y) > CLICK_SLOP_PX) return;
  const p = nearestPoint(down.x, down.y);
  if (!p) return;
  trigger('point_click', {row: p.row});
  clickedMark = {x: p.x, y: p.y};
  // Redrawing thousands of WebGL points takes the main thread for tens of ms: do it when the page is idle,
  // so that the answer's pictures are shown first.
  if (window.requestIdleCallback) requestIdleCallback(render, {timeout: 400}); else setTimeout(render, 150);
}

function bindHandlers() {
  if (handlersBound) return;
  handlersBound = true;
  plotDiv.addEventListener('pointermove', onPointerMove, {capture: true});
  plotDiv.addEventListener('pointerleave', hidePreview);
  plotDiv.addEventListener('pointerdown', onPointerDown, {capture: true});
  // While plotly drags, the button comes up over its drag cover outside the map: listen on the window.
  window.addEventListener('pointerup', onPointerUp, {capture: true});
  plotDiv.on('plotly_selected', (ev) => {
    if (!ev) return;  // plotly sends undefined while a new selection starts
    const rows = [];
    for (const p of (ev.points || [])) {
      if (typeof p.customdata === 'number') rows.push(p.customdata);
    }
    trigger('point_select', {rows: rows});
  });
  plotDiv.on('plotly_deselect', () => trigger('point_select', {rows: []}));
}

// plotly.js (props.plotly_url, served by the app) is loaded once the page is idle: evaluating it takes the
// main thread for a second on a slow machine, and the page's first clicks and live views come first.
function loadPlotly() {
  if (typeof Plotly !== 'undefined' || document.querySelector('script[data-vae-plotly]')) return;
  const script = document.createElement('script');
  script.src = new URL(props.plotly_url, document.baseURI).href;
  script.dataset.vaePlotly = '1';
  script.onerror = () => showMessage('The map needs plotly.js, which did not load.');
  document.head.appendChild(script);
}

function render() {
  if (typeof Plotly === 'undefined') {
    if (plotlyWaits++ < 600) setTimeout(render, 100);
    else showMessage('The map needs plotly.js, which did not load.');
    return;
  }
  const v = unpack(props.value);
  loadSheet(v);
  if (!v || !v.x || !v.x.length) {
    cachedValue = null;
    hidePreview();
    showMessage((v && v.message) || 'This run has no map.');
    return;
  }
  showMessage('');
  if (v !== cachedValue) {
    cachedTraces = pointTraces(v);
    cachedValue = v;
  }
  const layout = {
    margin: {l: 4, r: 4, t: 4, b: 4}, dragmode: 'pan', hovermode: 'closest', clickmode: 'event',
    xaxis: {visible: false}, yaxis: {visible: false},
    legend: {orientation: 'h', x: 0, y: 0, xanchor: 'left', yanchor: 'bottom', bgcolor: 'rgba(0,0,0,0)',
             font: {size: 13}},
    paper_bgcolor: 'rgba(0,0,0,0)', plot_bgcolor: 'rgba(0,0,0,0)', font: {size: 13, color: ink()},
    // Keep zoom/pan while colours or overlays change; reset when another run is shown.
    uirevision: v.run || 'map',
  };
  // No button may send the map anywhere: plotly 7's "Share chart..." (sendChartToCloud) uploads it to
  // Plotly Cloud, so it is switched off and removed like the older sendDataToCloud.
  const config = {responsive: true, displaylogo: false, scrollZoom: false, doubleClick: 'reset',
                  showSendToCloud: false, showEditInChartStudio: false,
                  modeBarButtonsToRemove: ['toImage', 'sendDataToCloud', 'sendChartToCloud', 'autoScale2d',
                                           'toggleSpikelines', 'hoverClosestCartesian', 'hoverCompareCartesian',
                                           'resetViews']};
  Plotly.react(plotDiv, cachedTraces.concat(overlayTraces(props.overlay)), layout, config).then(bindHandlers);
}

// Gradio's start-up has idle moments of its own (waiting for its files): a second first, then the next idle one.
setTimeout(() => {
  if (window.requestIdleCallback) requestIdleCallback(loadPlotly, {timeout: 1000}); else loadPlotly();
}, 1000);
watch('value', () => { clickedMark = null; render(); });
watch('overlay', () => { clickedMark = null; render(); });
render();
