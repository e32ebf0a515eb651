#!/usr/bin/env bash
# Vendor onnxruntime-web's WASM-only bundle build into explorer/static/vendor/onnxruntime-web/.
#
#   scripts/update_onnxruntime_web.sh 1.31.1
#
# Takes the package from the npm registry with `npm pack` (nothing else is downloaded), checks the
# tarball against the registry's integrity hash, and writes:
#   ort.wasm.bundle.min.mjs          the ES module, with the Emscripten glue inside (no second .mjs to fetch)
#   ort-wasm-simd-threaded.wasm.gz   the WebAssembly binary, gzip -9: the raw file is ~15 MB and every
#                                    tracked file stays under 10 MB; latent_decoder.js inflates it in the page
#   ort-wasm-simd-threaded.wasm.br   the same binary, brotli (quality 11, window 2^24): the Gradio app sends it
#                                    in place of the .gz, with Content-Encoding: br, to a browser that takes br
#   LICENSE                          MIT, Microsoft (the package ships no license file: see below)
#   README.md                        version, origin, sha256 of every file, how to update
# The output is reproducible: gzip -n leaves out the name and time stamp, and a brotli stream has no such
# fields (the same brotli version writes the same bytes). Needs npm, node, openssl, and Python 3 with the
# `brotli` package (pip install brotli).
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -c "import brotli" 2>/dev/null || {
  echo "the Python package brotli is needed to write the .wasm.br: pip install brotli" >&2
  exit 1
}

VERSION=${1:?usage: scripts/update_onnxruntime_web.sh VERSION (e.g. 1.31.1)}
DEST=explorer/static/vendor/onnxruntime-web
MJS=ort.wasm.bundle.min.mjs
WASM=ort-wasm-simd-threaded.wasm

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

(cd "$WORK" && npm pack --silent "onnxruntime-web@$VERSION" >/dev/null)
TGZ="$WORK/onnxruntime-web-$VERSION.tgz"
# npm pack already verifies the tarball against the registry's integrity; record it for the README.
INTEGRITY=$(npm view "onnxruntime-web@$VERSION" dist.integrity)
TGZ_SHA512="sha512-$(openssl dgst -sha512 -binary "$TGZ" | base64 -w0)"
if [ "$INTEGRITY" != "$TGZ_SHA512" ]; then
  echo "integrity mismatch: registry $INTEGRITY, tarball $TGZ_SHA512" >&2
  exit 1
fi
tar -xzf "$TGZ" -C "$WORK"
PKG="$WORK/package"
for f in "dist/$MJS" "dist/$WASM"; do
  [ -f "$PKG/$f" ] || { echo "onnxruntime-web@$VERSION has no $f" >&2; exit 1; }
done
# The bundle must ask for exactly this wasm name when no wasmBinary is given; a rename upstream would
# otherwise go unnoticed here.
grep -q "$WASM" "$PKG/dist/$MJS" || { echo "$MJS no longer names $WASM" >&2; exit 1; }

rm -rf "$DEST"
mkdir -p "$DEST"
cp "$PKG/dist/$MJS" "$DEST/$MJS"
gzip -9 -n -c "$PKG/dist/$WASM" > "$DEST/$WASM.gz"
BROTLI_VERSION=$(python3 -c "import brotli; print(brotli.__version__)")
python3 - "$PKG/dist/$WASM" "$DEST/$WASM.br" <<'PY'
import sys, brotli
data = open(sys.argv[1], "rb").read()
packed = brotli.compress(data, mode=brotli.MODE_GENERIC, quality=11, lgwin=24)
if brotli.decompress(packed) != data:
    sys.exit("the brotli stream does not decompress to the wasm")
open(sys.argv[2], "wb").write(packed)
PY

# The npm package has no LICENSE or third-party notices file; package.json says "MIT" and the bundle's
# header says "Copyright (c) Microsoft Corporation. Licensed under the MIT License." This is the text of
# the LICENSE file at the root of github.com/microsoft/onnxruntime.
LICENSE_FILES=$(cd "$PKG" && ls | grep -iE '^(licen[cs]e|thirdpartynotices|notice)' || true)
if [ -n "$LICENSE_FILES" ]; then
  for f in $LICENSE_FILES; do cp "$PKG/$f" "$DEST/$f"; done
else
  [ "$(node -p "require('$PKG/package.json').license")" = "MIT" ] || { echo "license is no longer MIT" >&2; exit 1; }
  cat > "$DEST/LICENSE" <<'EOF'
MIT License

Copyright (c) Microsoft Corporation

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
EOF
fi

# The wasm binary holds third-party code (ONNX, Eigen, protobuf, ...). The npm package carries no notices
# for it; the Python wheel of the same onnxruntime release does, built from the same source tree.
(cd "$WORK" && python3 -m pip download -q --no-deps --only-binary :all: --python-version 3.11 \
  --platform manylinux_2_28_x86_64 "onnxruntime==$VERSION" -d wheel)
python3 - "$WORK"/wheel/*.whl "$DEST/ThirdPartyNotices.txt" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as wheel:
    open(sys.argv[2], "wb").write(wheel.read("onnxruntime/ThirdPartyNotices.txt"))
PY

sha() { sha256sum "$1" | cut -d' ' -f1; }
size() { stat -c %s "$1"; }
{
  cat <<EOF
# onnxruntime-web $VERSION (WASM-only bundle build)

The browser runtime that \`explorer/static/latent_decoder.js\` decodes latents with. Served by the app itself:
the page never reaches a CDN.

Source: the npm package \`onnxruntime-web@$VERSION\` (\`npm pack onnxruntime-web@$VERSION\`,
integrity \`$INTEGRITY\`), files from its \`dist/\`. Written by \`scripts/update_onnxruntime_web.sh $VERSION\`;
do not edit by hand.

| file | bytes | sha256 | from |
|---|---|---|---|
| \`$MJS\` | $(size "$DEST/$MJS") | \`$(sha "$DEST/$MJS")\` | \`dist/$MJS\`, unchanged |
| \`$WASM.gz\` | $(size "$DEST/$WASM.gz") | \`$(sha "$DEST/$WASM.gz")\` | \`dist/$WASM\` ($(size "$PKG/dist/$WASM") bytes, sha256 \`$(sha "$PKG/dist/$WASM")\`), \`gzip -9 -n\` |
| \`$WASM.br\` | $(size "$DEST/$WASM.br") | \`$(sha "$DEST/$WASM.br")\` | the same \`dist/$WASM\`, \`brotli.compress(wasm, quality=11, lgwin=24)\` (Python \`brotli\` $BROTLI_VERSION) |
EOF
  for f in $(cd "$DEST" && ls | grep -vE "^($MJS|$WASM.gz|$WASM.br|README.md)$"); do
    case "$f" in
      ThirdPartyNotices.txt) from="\`onnxruntime/ThirdPartyNotices.txt\` of the \`onnxruntime==$VERSION\` wheel (PyPI)" ;;
      *) from=$([ -f "$PKG/$f" ] && echo "\`$f\`, unchanged" || echo 'the MIT text of github.com/microsoft/onnxruntime (the npm package ships no license file)') ;;
    esac
    echo "| \`$f\` | $(size "$DEST/$f") | \`$(sha "$DEST/$f")\` | $from |"
  done
  cat <<EOF

Why these two: \`ort.wasm.bundle.min.mjs\` is the WASM-only build with the Emscripten glue inside, so it
fetches no second module. Left to itself it fetches \`$WASM\` next to its own URL (~15 MB, over the 10 MB a
tracked file may have); \`latent_decoder.js\` instead fetches the \`.gz\`, inflates it with
\`DecompressionStream('gzip')\` and hands the bytes over as \`ort.env.wasm.wasmBinary\`, after which the
runtime fetches nothing. It runs single-threaded (\`numThreads = 1\`, no COOP/COEP headers needed).

Why the \`.br\` too: brotli makes the binary about 37 % smaller than gzip -9, but \`DecompressionStream\`
has no brotli in Chromium, so the page cannot inflate it itself. The Gradio app therefore answers the
\`.gz\` URL with the \`.br\` bytes and \`Content-Encoding: br\` when the browser's \`Accept-Encoding\` names
br (\`explorer/ui_decode.py\`, \`BrotliRuntime\`): the browser inflates them and the page sees the raw
binary. Other clients, and the static site (\`python -m explorer site\`, whose hosts send no
Content-Encoding for it), get the \`.gz\`.

Update: \`scripts/update_onnxruntime_web.sh NEW_VERSION\`, then run \`tests/test_browser_decoder.py\` and
\`tests/test_decoder_serving.py\`, and commit
this folder. The script fails if the package no longer has these files, if the bundle stops naming
\`$WASM\`, or if the license is no longer MIT.
EOF
} > "$DEST/README.md"

ls -l "$DEST"
