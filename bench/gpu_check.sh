#!/usr/bin/env bash
# Device check for the webgpu backend on a lent GPU machine (H100/H200): the bench
# beside PyTorch CUDA, then a short ISIC training run. That machine has PyTorch CUDA
# as `python3`, but no node and no network, so everything else is carried:
#
#   bash bench/gpu_check.sh pack      # here: fills gpu_pack/ (git-ignored, < 64 MiB)
#   bash bench/gpu_check.sh run       # there: run with carry ["gpu_pack"], timeout 600
#
# pack: node (xz), esbuild bundles of bench/bench.ts and train.ts, node_modules/webgpu
# (dawn.node) and sharp's native parts (one tar.xz), and the Vulkan loader + GLVND debs, which `run`
# unpacks with `dpkg -x`; the NVIDIA driver's Vulkan ICD is on the machine already.
# ISIC data: `pack` copies ISIC_ROOT, else shared/data/isic2018 or ../shared/data/isic2018,
# into the pack (../shared does not travel to the device); `run` trains on that copy.
# To try the script out on a CPU: GPU_CHECK_BACKEND=wasm GPU_CHECK_LIMIT=24 (pairs per split),
# from a copy of bench/ and gpu_pack/ with no node_modules above it, as on the device.
# Everything is bounded to fit the 10-minute device limit (~2 min bench, ~1 min multi-class, ~5 min train).
set -euo pipefail
cd "$(dirname "$0")/.."
PACK=gpu_pack
DEBS="libvulkan1 libglvnd0 libglx0 libegl1 libgl1 libopengl0 libgles2"

pack() {
  rm -rf "$PACK" && mkdir -p "$PACK/debs" "$PACK/node_modules/@img"
  xz -T0 -6 -c "$(command -v node)" > "$PACK/node.xz"
  # webgpu stays external (an ES module that loads dawn.node beside it); sharp too (native).
  # Datasets and models are found by file name at run time (loaders/registry.ts,
  # models/registry.ts), which a bundle cannot do: each bundle's entry imports every
  # loader and model file first, listed from the folders.
  registered() {
    for f in loaders/*.ts; do case "$f" in loaders/registry.ts|loaders/files.ts|loaders/fixtures.ts) ;; *) echo "import './${f%.ts}';";; esac; done
    for f in models/*.ts; do case "$f" in models/registry.ts|models/model_checks.ts) ;; *) echo "import './${f%.ts}';";; esac; done
  }
  { registered; echo "import './train';"; } > train_bundle_entry.ts
  { registered; echo "import './bench/bench';"; } > bench_bundle_entry.ts
  for entry in bench_bundle_entry.ts train_bundle_entry.ts; do
    npx esbuild "$entry" --bundle --platform=node --target=node20 --format=cjs \
      --external:webgpu --external:sharp --external:@tensorflow/tfjs-node --external:@tensorflow/tfjs-node-gpu --external:nsfwjs \
      --banner:js='globalThis.__semsegBundle = true;' \
      --outfile="$PACK/$(basename "$entry" .ts | sed 's/_bundle_entry//').js" --log-level=warning
  done
  rm -f train_bundle_entry.ts bench_bundle_entry.ts
  mkdir -p "$PACK/node_modules/webgpu/dist"
  cp node_modules/webgpu/{index.js,package.json} "$PACK/node_modules/webgpu/"
  cp -r node_modules/webgpu/dist/linux-x64 "$PACK/node_modules/webgpu/dist/"
  cp -r node_modules/sharp node_modules/detect-libc node_modules/semver "$PACK/node_modules/" 2>/dev/null || true
  # Read at run time by path, so not in the bundles: Chart.js for the training report.
  mkdir -p "$PACK/node_modules/chart.js/dist"
  cp node_modules/chart.js/package.json "$PACK/node_modules/chart.js/"
  cp node_modules/chart.js/dist/chart.cjs node_modules/chart.js/dist/chart.umd.js "$PACK/node_modules/chart.js/dist/"
  cp -r node_modules/@img/sharp-linux-x64 node_modules/@img/sharp-libvips-linux-x64 node_modules/@img/colour "$PACK/node_modules/@img/" 2>/dev/null || true
  (cd "$PACK/debs" && apt-get download $DEBS >/dev/null)
  # Worker threads of the data pipeline and the wasm fallback load files beside the bundle.
  cp -r node_modules/@tensorflow/tfjs-backend-wasm/dist/*.wasm "$PACK/" 2>/dev/null || true
  cp -r configs "$PACK/"
  # The 64 MiB carry limit: dawn.node (21 MB), libvips (17 MB) and the bundles (12 MB)
  # travel xz-compressed; the ISIC data (16 MB) does not compress.
  tar -cJf "$PACK/node_modules.tar.xz" -C "$PACK" node_modules && rm -rf "$PACK/node_modules"
  xz -T0 -6 "$PACK/bench.js" "$PACK/train.js"
  local ISIC=${ISIC_ROOT:-$(ls -d shared/data/isic2018 ../shared/data/isic2018 2>/dev/null | head -1 || true)}
  if [ -n "$ISIC" ]; then cp -r "$ISIC" "$PACK/isic2018"; else echo "note: no ISIC data found (set ISIC_ROOT): run will skip training"; fi
  echo "$(du -sb "$PACK" | cut -f1) bytes in $PACK (limit 67108864 with the repository)"
}

run() {
  local T0=$SECONDS
  [ -d "$PACK" ] || { echo "error: $PACK/ missing: run 'bash bench/gpu_check.sh pack' here and carry it"; exit 1; }
  local WORK; WORK=$(mktemp -d)
  xz -dc "$PACK/node.xz" > "$WORK/node" && chmod +x "$WORK/node"
  for d in "$PACK"/debs/*.deb; do dpkg -x "$d" "$WORK/root"; done
  export LD_LIBRARY_PATH="$WORK/root/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
  export __GLX_VENDOR_LIBRARY_NAME=nvidia XDG_RUNTIME_DIR="$WORK"
  tar -xJf "$PACK/node_modules.tar.xz" -C "$WORK"
  xz -dkf "$PACK/bench.js.xz" "$PACK/train.js.xz"
  export NODE_PATH="$WORK/node_modules"
  local NODE="$WORK/node"
  "$NODE" --version; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader || true
  ls /usr/share/vulkan/icd.d /etc/vulkan/icd.d 2>/dev/null || echo "note: no Vulkan ICD json found"

  local BE=${GPU_CHECK_BACKEND:-webgpu}
  local TORCH; TORCH=$(ls shared/bench/torch_unet_cuda.py ../shared/bench/torch_unet_cuda.py 2>/dev/null | head -1 || true)
  echo "== bench: $BE (on webgpu: dW via matmul, then via forward) beside PyTorch CUDA, 128/16/16"
  for dw in matmul forward; do
    TFJS_SEMSEG_WEBGPU_DW=$dw timeout 150 "$NODE" "$PACK/bench.js" --backend "$BE" --size 128 --batch 16 --base 16 --depth 4 \
      --steps 10 --json --no-data --profile || echo "bench ($dw) failed: rc $?"
  done
  [ -n "$TORCH" ] && timeout 90 python3 "$TORCH" --size 128 --batch 16 --base 16 --depth 4 --json || echo "torch bench skipped/failed"
  echo "== bench: batch 64 (moonshot)"
  timeout 90 "$NODE" "$PACK/bench.js" --backend "$BE" --size 128 --batch 64 --base 16 --depth 4 --steps 5 --json --no-data || true
  [ -n "$TORCH" ] && timeout 60 python3 "$TORCH" --size 128 --batch 64 --base 16 --depth 4 --json || true

  # Softmax models meet kernels a binary one never does (the one-hot cast, sums over leading axes).
  echo "== train multi-class (generated, 4 classes, ce+dice with class weights as configs/camvid.yaml) on $BE"
  (cd "$PACK" && timeout 120 "$NODE" train.js --config configs/demo.yaml --backend "$BE" --set name=demo_mc \
     --set data.root="$WORK/synthetic_mc" --set data.num_classes=4 --set data.synthetic.kind=multiclass \
     --set training.loss.name=ce+dice --set "training.loss.class_weights=[0.5,1,2,1.5]" --set training.epochs=1 \
     --set checkpoint.best_metric=val.mIoU --set checkpoint.ckpt_root="$WORK/ckpt" --set results.root="$WORK/results" 2>&1) \
    | grep -vE 'ETA [1-9]' | tail -15 || echo "multi-class train stopped: rc $?"

  local ROOT=${ISIC_ROOT:-$(ls -d "$PACK/isic2018" 2>/dev/null || true)}
  [ -n "$ROOT" ] && ROOT=$(cd "$ROOT" && pwd) # train runs from inside $PACK
  local LEFT=$(( 570 - (SECONDS - T0) ))
  if [ -z "$ROOT" ]; then echo "train skipped: no ISIC data (set ISIC_ROOT)"; exit 0; fi
  echo "== train configs/isic_unet.yaml on $BE, $ROOT, ${LEFT}s left (per-epoch time and val metrics below)"
  (cd "$PACK" && timeout "$LEFT" "$NODE" train.js --config configs/isic_unet.yaml --backend "$BE" \
     --set data.root="$ROOT" --set data.limit="${GPU_CHECK_LIMIT:-0}" --set training.epochs=3 --set training.workers=1 \
     --set checkpoint.ckpt_root="$WORK/ckpt" --set results.root="$WORK/results" 2>&1) \
    | grep -vE 'ETA [1-9]' | tail -80 || echo "train stopped: rc $?"
}

case "${1:-}" in
  pack) pack ;;
  run) run ;;
  *) echo "usage: bash bench/gpu_check.sh pack|run"; exit 2 ;;
esac
