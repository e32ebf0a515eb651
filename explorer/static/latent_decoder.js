// Decode latents into images in the browser with onnxruntime-web (WASM, one thread), from files the app
// serves itself (static/vendor/onnxruntime-web/, see its README.md). No build step: a plain ES module.
//
//   const ort = await loadRuntime('/path/to/vendor/onnxruntime-web/');
//   const decoder = await LatentDecoder.load('/path/to/decoder.onnx');
//   const image = await decoder.decode(new Float32Array(decoder.latentDim));   // {data, channels, height, width}
//   drawImage(canvas, image, 4);
//
// The model takes `z`, float32 (1, D), and returns `image`, float32 (1, C, H, W) in [0, 1], C = 1 or 3.
// Every failure rejects (or throws) an Error with a one-line message.

const MODULE = 'ort.wasm.bundle.min.mjs';
// The WASM binary, gzipped: the raw file is ~15 MB and every tracked file stays under 10 MB. The Gradio app
// answers this URL with the brotli-compressed twin and `Content-Encoding: br` when the browser takes br
// (explorer/ui_decode.py, BrotliRuntime): DecompressionStream has no brotli, the browser's network stack does.
const WASM_GZ = 'ort-wasm-simd-threaded.wasm.gz';

let runtime = null;   // {baseUrl, promise}: one runtime per page, since ort.env is global to the module

function oneLine(prefix, error) {
  const text = String(error && error.message !== undefined ? error.message : error);
  return new Error(`${prefix}: ${text.replace(/\s+/g, ' ').trim()}`);
}

async function fetchBytes(url) {
  let response;
  try {
    response = await fetch(url);
  } catch (e) {
    throw oneLine(`cannot fetch ${url}`, e);
  }
  if (!response.ok) throw new Error(`cannot fetch ${url}: HTTP ${response.status}`);
  return new Uint8Array(await response.arrayBuffer());
}

async function fetchWasm(url) {
  const bytes = await fetchBytes(url);
  // A server that sends the file with `Content-Encoding: gzip` or `br` (the Gradio app, to browsers that take
  // br) has the browser inflate it already: the body starts with '\0asm', not with gzip's magic bytes.
  const gzipped = bytes[0] === 0x1f && bytes[1] === 0x8b;
  let wasm = bytes;
  if (gzipped) {
    try {
      const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream('gzip'));
      wasm = new Uint8Array(await new Response(stream).arrayBuffer());
    } catch (e) {
      throw oneLine(`cannot inflate ${url}`, e);
    }
  }
  // '\0asm': catches an HTML error page or a truncated file here rather than deep inside the runtime.
  if (wasm[0] !== 0x00 || wasm[1] !== 0x61 || wasm[2] !== 0x73 || wasm[3] !== 0x6d) {
    throw new Error(`${url} is not a WebAssembly module (gzipped or plain)`);
  }
  return wasm;
}

async function startRuntime(baseUrl) {
  // Fetch the binary while the module loads; with wasmBinary set the bundle build fetches nothing else.
  const wasm = fetchWasm(new URL(WASM_GZ, baseUrl).href);
  let ort;
  try {
    ort = await import(new URL(MODULE, baseUrl).href);
  } catch (e) {
    wasm.catch(() => {});   // the import error is the one to report
    throw oneLine(`cannot load ${new URL(MODULE, baseUrl).href}`, e);
  }
  ort.env.wasm.wasmBinary = await wasm;
  // Threads need SharedArrayBuffer, i.e. COOP/COEP headers the app does not send. No proxy worker: a run
  // of a decoder this small takes milliseconds, short enough for the main thread.
  ort.env.wasm.numThreads = 1;
  ort.env.wasm.proxy = false;
  return ort;
}

/** Load onnxruntime-web from the folder `baseUrl` (the vendored files); resolves to the ort module. */
export function loadRuntime(baseUrl) {
  const base = new URL(baseUrl.endsWith('/') ? baseUrl : baseUrl + '/', document.baseURI).href;
  if (runtime && runtime.baseUrl !== base) {
    return Promise.reject(new Error(`onnxruntime-web is already loaded from ${runtime.baseUrl}`));
  }
  if (!runtime) {
    const promise = startRuntime(base);
    runtime = {baseUrl: base, promise};
    promise.catch(() => { if (runtime && runtime.promise === promise) runtime = null; });   // allow a retry
  }
  return runtime.promise;
}

export class LatentDecoder {
  constructor(ort, session, latentDim) {
    this.ort = ort;
    this.session = session;
    this.latentDim = latentDim;     // D, or null when the model leaves it symbolic
    this.queue = Promise.resolve();
  }

  /** Start a session for the ONNX model at `modelUrl`; call loadRuntime first. */
  static async load(modelUrl) {
    if (!runtime) throw new Error('LatentDecoder.load: call loadRuntime(baseUrl) first');
    // The model downloads while the runtime starts: neither waits for the other.
    const download = fetchBytes(modelUrl);
    download.catch(() => {});   // reported below, after the runtime's own error if it fails first
    const ort = await runtime.promise;
    const bytes = await download;
    let session;
    try {
      session = await ort.InferenceSession.create(bytes, {executionProviders: ['wasm']});
    } catch (e) {
      throw oneLine(`cannot load the model ${modelUrl}`, e);
    }
    if (!session.inputNames.includes('z') || !session.outputNames.includes('image')) {
      throw new Error(`${modelUrl} must take 'z' and return 'image'; it takes ${session.inputNames.join(', ')}` +
                      ` and returns ${session.outputNames.join(', ')}`);
    }
    const meta = (session.inputMetadata || []).find((m) => m.name === 'z');
    const dim = meta && meta.shape ? meta.shape[1] : null;
    return new LatentDecoder(ort, session, typeof dim === 'number' ? dim : null);
  }

  /** Decode one latent: Float32Array of length D -> {data: Float32Array (C*H*W), channels, height, width}. */
  decode(z) {
    // One run at a time: the WASM session does not take overlapping runs, and callers (a slider being
    // dragged) fire faster than it answers.
    const result = this.queue.then(() => this.#run(z));
    this.queue = result.catch(() => {});
    return result;
  }

  async #run(z) {
    if (!(z instanceof Float32Array)) throw new Error('decode: z must be a Float32Array');
    if (this.latentDim !== null && z.length !== this.latentDim) {
      throw new Error(`decode: z has ${z.length} values, the model takes ${this.latentDim}`);
    }
    let output;
    try {
      output = (await this.session.run({z: new this.ort.Tensor('float32', z, [1, z.length])})).image;
    } catch (e) {
      throw oneLine('decode', e);
    }
    const [, channels, height, width] = output.dims;
    return {data: output.data, channels, height, width};
  }

  async dispose() {
    await this.queue;
    await this.session.release();
  }
}

const decoders = new Map();   // model URL -> Promise<LatentDecoder>, shared by every caller on the page

/** LatentDecoder.load(modelUrl), once per URL; a failed load is forgotten so that it can be retried. */
export function cachedDecoder(modelUrl) {
  if (!decoders.has(modelUrl)) {
    const promise = LatentDecoder.load(modelUrl);
    decoders.set(modelUrl, promise);
    promise.catch(() => { if (decoders.get(modelUrl) === promise) decoders.delete(modelUrl); });
  }
  return decoders.get(modelUrl);
}

// Reused across frames: a frame allocates nothing, so a drag does not feed the garbage collector.
let scratch = null;   // {canvas, ctx, pixels}: the native-size picture drawImage scales from

/** Draw a decoded image on `canvas`, scaled up `scale` times by nearest neighbour (crisp pixels). */
export function drawImage(canvas, image, scale = 1) {
  const {data, channels, height, width} = image;
  if (!Number.isInteger(scale) || scale < 1) {
    throw new Error(`drawImage: scale must be a positive integer, not ${scale}`);
  }
  if (channels !== 1 && channels !== 3) throw new Error(`drawImage: ${channels} channels (1 or 3 are drawn)`);
  if (!scratch || scratch.pixels.width !== width || scratch.pixels.height !== height) {
    const c = typeof OffscreenCanvas === 'function' ? new OffscreenCanvas(width, height)
                                                    : Object.assign(document.createElement('canvas'), {width, height});
    scratch = {canvas: c, ctx: c.getContext('2d'), pixels: new ImageData(width, height)};
  }
  const rgba = scratch.pixels.data;   // Uint8ClampedArray: assignment rounds and clamps to 0..255
  const plane = width * height;
  const green = channels === 3 ? plane : 0;
  const blue = channels === 3 ? 2 * plane : 0;
  for (let i = 0, j = 0; i < plane; i++, j += 4) {
    rgba[j] = data[i] * 255;
    rgba[j + 1] = data[green + i] * 255;
    rgba[j + 2] = data[blue + i] * 255;
    rgba[j + 3] = 255;
  }
  // putImageData ignores scaling, so put at native size on the scratch canvas and let drawImage scale it.
  scratch.ctx.putImageData(scratch.pixels, 0, 0);
  // Resizing clears a canvas and resets its context, so only when the size changes.
  if (canvas.width !== width * scale || canvas.height !== height * scale) {
    canvas.width = width * scale;
    canvas.height = height * scale;
  }
  const ctx = canvas.getContext('2d');
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(scratch.canvas, 0, 0, width * scale, height * scale);
}
