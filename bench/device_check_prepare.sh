#!/usr/bin/env bash
# Run HERE (a machine with pip and the network), from anywhere: fills the ignored .whl/ folder
# that bench/device_check.sh installs from on a lent GPU machine (no network there).
#
#   .whl/*.whl         Loom's own packages (pure-Python wheels built from this checkout) and the
#                      pure-Python packages the device image lacks, at versions that work with its
#                      python 3.12 / torch 2.11 / transformers 5.x / huggingface_hub 1.3x
#   .whl/tokenizers/   the real CLIP-L and T5 tokenizer files (../shared does not travel)
#
# Keeps one version of each package (two stop the device's install) and checks the folder plus
# the working tree stay under the 64 MiB a device call may carry.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
py="${PYTHON:-python3}"
out=.whl
tokenizers="${LOOM_TOKENIZERS_PATH:-$repo/../shared/data/tokenizers}"

git check-ignore -q "$out/x.whl" || { echo "$out/ is not ignored by git" >&2; exit 1; }
rm -rf "$out"
mkdir -p "$out"

# Loom: core and the plugins the GPU tests and benches load.
loom_packages=(. plugins/sd15 plugins/sdxl plugins/flux plugins/samplers plugins/lora
               plugins/controlnet plugins/clip-vision)
# setuptools keeps build/lib between builds, and a module deleted since would ride along
for package in "${loom_packages[@]}"; do rm -rf "$package/build"; done
"$py" -m pip wheel -q --no-deps --no-build-isolation -w "$out" "${loom_packages[@]}"
for package in "${loom_packages[@]}"; do rm -rf "$package/build"; done

# Missing on the device image (KINDS.md's package list), pure Python, one version each.
#   diffusers: parity reference (needs huggingface-hub>=1.32, safetensors>=0.8: the image has
#              1.33 / 0.8.0); importlib_metadata 8.x needs only zipp (10.x pulls lazy-importer)
#   cattrs (+ the attrs>=25.4 it needs; the image's attrs version is unread): loom-core;
#   torchsde + trampoline: the Brownian-tree reference; k-diffusion: the
#   sampler references (tests read its sampling.py alone, so none of its deps come along)
third_party=(diffusers==0.42.1 importlib_metadata==8.7.0 cattrs==26.2.1 attrs==26.1.0 torchsde==0.2.6
             trampoline==0.1.2 k-diffusion==0.1.1.post1)
"$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d "$out" "${third_party[@]}"

mkdir -p "$out/tokenizers"
for name in clip_l t5xxl; do
    cp -r "$tokenizers/$name" "$out/tokenizers/$name"
done

ls -1 "$out"/*.whl
# What travels: tracked + untracked-not-ignored files, plus the carried folder.
tree_bytes=$(git ls-files -z --cached --others --exclude-standard | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
whl_bytes=$(du -sb "$out" | cut -f1)
total=$((tree_bytes + whl_bytes))
printf 'working tree %.1f MiB + %s %.1f MiB = %.1f MiB (limit 64 MiB)\n' \
    "$(echo "$tree_bytes / 1048576" | bc -l)" "$out" "$(echo "$whl_bytes / 1048576" | bc -l)" \
    "$(echo "$total / 1048576" | bc -l)"
[[ $total -lt $((64 * 1048576)) ]] || { echo "over the 64 MiB a device call carries" >&2; exit 1; }
